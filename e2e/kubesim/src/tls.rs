//! Per-cluster PKI and client configuration: a CA, a serving certificate for 127.0.0.1 and
//! localhost, a bearer token, and the kubeconfig that kubectl and kube accept.

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// Errors from building certificates or TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Certificate generation failed.
    #[error("generating the kubesim certificate for cluster {cluster}: {source}")]
    Cert {
        /// Cluster name.
        cluster: String,
        /// Cause.
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the configuration.
    #[error("building the TLS server config for cluster {cluster}: {source}")]
    Rustls {
        /// Cluster name.
        cluster: String,
        /// Cause.
        #[source]
        source: rustls::Error,
    },
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The credentials of one simulated cluster.
pub struct ClusterPki {
    /// CA certificate (PEM) clients trust.
    pub ca_pem: String,
    /// Bearer token clients present.
    pub token: String,
    /// rustls server configuration (ring provider, HTTP/1.1).
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Creates a CA, a serving certificate and a token for `cluster`.
pub fn cluster_pki(cluster: &str) -> Result<ClusterPki> {
    let cert_err = |source| Error::Cert { cluster: cluster.to_string(), source };
    let ca_key = KeyPair::generate().map_err(cert_err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, format!("kubesim-ca-{cluster}"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).map_err(cert_err)?;
    let issuer = Issuer::new(ca, ca_key);

    let srv_key = KeyPair::generate().map_err(cert_err)?;
    let mut srv = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "kubernetes.default.svc".to_string(),
    ])
    .map_err(cert_err)?;
    srv.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    let srv_cert = srv.signed_by(&srv_key, &issuer).map_err(cert_err)?;

    let chain = vec![CertificateDer::from(srv_cert.der().to_vec()), CertificateDer::from(ca_cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(srv_key.serialize_der()));
    let rustls_err = |source| Error::Rustls { cluster: cluster.to_string(), source };
    // An explicit ring provider: library users need not install a process-wide default.
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(rustls_err)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    Ok(ClusterPki { ca_pem: ca_cert.pem(), token, server_config: Arc::new(cfg) })
}

/// A kubeconfig with one cluster, user and context, all named after the cluster.
pub fn kubeconfig(cluster: &str, server: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: {cluster}-admin\n  user:\n    token: {token}\n\
         contexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    user: {cluster}-admin\n    \
         namespace: default\ncurrent-context: {cluster}\npreferences: {{}}\n"
    )
}
