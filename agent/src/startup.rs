//! Start-up: the agent's settings, read once from its flags, and the steps from them to the
//! configurations [`crate::run`] takes: credentials (pre-issued files, else the Secret or the
//! bootstrap token), the Kubernetes client, the link and reconciler configurations.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use convoy_shared::identity::{Identity, IdentityError};
use convoy_shared::pki::PkiError;
use convoy_shared::tls::{self, HubAddress, TlsError, TlsMaterial};
use kube::config::KubeconfigError;
use tokio_util::sync::CancellationToken;

use crate::bootstrap::{self, AgentCertificate, BootstrapConfig, BootstrapError};
use crate::link::LinkConfig;
use crate::reconciler::ReconcilerConfig;
use crate::sops::AgeKeys;
use convoy_shared::backoff::Backoff;

/// Errors of the start-up steps; each names the file, certificate or kubeconfig at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("the agent certificate file holds no certificate")]
    NoCertificate,
    #[error("the agent certificate is for {0:?}, not a cluster; pass --cluster or issue a cluster certificate")]
    NotACluster(Identity),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    // kube's message already carries its causes; a chain would repeat them.
    #[error("no in-cluster config and no usable ~/.kube/config; pass --kubeconfig ({0})")]
    NoKubeconfig(kube::Error),
    #[error("reading kubeconfig {}", path.display())]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("kubeconfig {}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Sops(#[from] crate::sops::SopsError),
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The agent's settings, as its flags give them.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Hub address HOST:PORT.
    pub hub: String,
    /// Name the hub's certificate must carry, when it differs from HOST.
    pub server_name: Option<String>,
    /// A pre-issued certificate and its key; without them the agent bootstraps.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// Single-use bootstrap token, when one was given.
    pub bootstrap_token: Option<String>,
    /// Secret (in `namespace`) where a bootstrapped agent keeps its key and certificate.
    pub credentials_secret: String,
    /// The hub's CA certificate.
    pub ca: PathBuf,
    /// This cluster's name; empty: the name in the certificate.
    pub cluster: String,
    /// Kubeconfig to use; none: in-cluster config, else ~/.kube/config.
    pub kubeconfig: Option<PathBuf>,
    /// The agent's own namespace.
    pub namespace: String,
    /// Where the last assignment and the inventory are cached.
    pub cache_dir: PathBuf,
    /// API requests in flight while applying or pruning.
    pub concurrency: usize,
    pub heartbeat: Duration,
    /// Longest wait between reconnect attempts.
    pub backoff_max: Duration,
    /// Address to serve Prometheus `/metrics` on.
    pub metrics_listen: Option<String>,
    /// The age key file SOPS-encrypted objects are decrypted with.
    pub sops_age_key_file: Option<PathBuf>,
}

/// Where the agent's certificate comes from, read before the runtime starts.
pub struct CredentialSource {
    /// The pre-issued certificate, key and CA, when given.
    pub pre_issued: Option<TlsMaterial>,
    /// What bootstrapping needs (the CA and hub address are checked even with a certificate).
    pub bootstrap: BootstrapConfig,
    /// The age identities for SOPS (none without --sops-age-key-file).
    pub sops: AgeKeys,
}

/// The hub link's and the reconciler's configurations.
pub type Configs = (LinkConfig, ReconcilerConfig);

impl AgentConfig {
    /// Reads the pre-issued certificate files, if given, and what bootstrapping needs.
    pub fn credentials(&self) -> Result<CredentialSource> {
        let pre_issued = match &self.cert_and_key {
            Some((cert, key)) => Some(TlsMaterial::from_files(&self.ca, cert, key)?),
            None => None,
        };
        let ca_pem = convoy_shared::pki::read(&self.ca)?;
        tls::parse_certs(&ca_pem, &format!("the hub CA {}", self.ca.display()))?;
        let bootstrap = BootstrapConfig {
            hub: self.hub_address()?,
            ca_pem,
            token: self.bootstrap_token.clone().filter(|t| !t.trim().is_empty()),
            secret: self.credentials_secret.clone(),
            namespace: self.namespace.clone(),
            connect_timeout: Duration::from_secs(10),
        };
        let sops = match &self.sops_age_key_file {
            Some(path) => AgeKeys::load(path)?,
            None => AgeKeys::default(),
        };
        Ok(CredentialSource { pre_issued, bootstrap, sops })
    }

    /// A client from the kubeconfig, else from the in-cluster config or ~/.kube/config.
    pub async fn kube_client(&self) -> Result<kube::Client> {
        let Some(path) = &self.kubeconfig else {
            return kube::Client::try_default().await.map_err(ConfigError::NoKubeconfig);
        };
        let kc = kube::config::Kubeconfig::read_from(path)
            .map_err(|source| ConfigError::ReadKubeconfig { path: path.clone(), source })?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|source| ConfigError::Kubeconfig { path: path.clone(), source })?;
        kube::Client::try_from(config).map_err(ConfigError::Client)
    }

    /// Link and reconciler configurations with a pre-issued certificate.
    pub fn pre_issued(&self, material: &TlsMaterial) -> Result<Configs> {
        let cert_cluster = cluster_from_certificate(&material.cert_pem)?;
        let tls = tls::client_config(&material.ca_pem, Some((&material.cert_pem, &material.key_pem)))?;
        self.configs(tls, cert_cluster)
    }

    /// Gets credentials from the Secret or the bootstrap token, and keeps renewing them until
    /// `shutdown`.
    pub async fn bootstrapped(
        &self,
        bootstrap: &BootstrapConfig,
        client: &kube::Client,
        shutdown: &CancellationToken,
    ) -> Result<Configs> {
        let credentials = bootstrap::obtain(bootstrap, client).await?;
        let cluster = credentials.cluster.clone();
        let certificate = AgentCertificate::new(credentials)?;
        let tls = certificate.client_config(&bootstrap.ca_pem)?;
        tokio::spawn(bootstrap::renew_loop(bootstrap.clone(), client.clone(), certificate, shutdown.clone()));
        self.configs(tls, cluster)
    }

    fn hub_address(&self) -> Result<HubAddress> {
        Ok(HubAddress::parse(&self.hub, self.server_name.as_deref())?.spread())
    }

    fn configs(&self, tls: Arc<rustls::ClientConfig>, cert_cluster: String) -> Result<Configs> {
        let cluster = if self.cluster.is_empty() { cert_cluster } else { self.cluster.clone() };
        let link = LinkConfig {
            hub: self.hub_address()?,
            tls,
            cluster_name: cluster.clone(),
            heartbeat: self.heartbeat,
            backoff: Backoff { max: self.backoff_max, ..Backoff::default() },
            connect_timeout: Duration::from_secs(10),
            capabilities: Default::default(),
        };
        let mut reconciler = ReconcilerConfig::new(&cluster, &self.cache_dir);
        reconciler.namespace = self.namespace.clone();
        reconciler.concurrency = self.concurrency;
        Ok((link, reconciler))
    }
}

/// The cluster a pre-issued agent certificate names.
fn cluster_from_certificate(cert_pem: &str) -> Result<String> {
    let certs = tls::parse_certs(cert_pem, "agent certificate")?;
    let first = certs.first().ok_or(ConfigError::NoCertificate)?;
    match Identity::from_certificate_der(first)? {
        Identity::Cluster(name) => Ok(name),
        other => Err(ConfigError::NotACluster(other)),
    }
}

/// `error` and its causes, `: `-separated.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cause = e.source();
    }
    out
}
