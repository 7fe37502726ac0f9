//! TLS for the agent link and the fleet API: rustls configurations (TLS 1.3 only, ring only),
//! PEM parsing, and a gRPC channel that dials the hub over our own mutual-TLS connector.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// Errors building TLS configurations or dialing the hub.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} holds no PEM certificate")]
    NoCertificate { what: String },
    #[error("{what} is not valid PEM: {source}")]
    Pem {
        what: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what}: {source}")]
    Rustls {
        what: String,
        #[source]
        source: rustls::Error,
    },
    #[error("the CA certificate cannot verify clients: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("'{address}' is not a hub address (want HOST:PORT, or several separated by commas): {reason}")]
    Address { address: String, reason: String },
    #[error("{}", crate::link_error::explain(source.as_ref()))]
    Connect {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T, E = TlsError> = std::result::Result<T, E>;

/// The crypto provider every Convoy TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every certificate in a PEM text; `what` names its origin in errors.
pub fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what: what.to_string(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what: what.to_string() });
    }
    Ok(certs)
}

/// Parses a PEM private key; `what` names its origin in errors (never the key itself).
pub fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|source| TlsError::Pem { what: what.to_string(), source })
}

fn roots(ca_pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem, "the CA certificate")? {
        roots.add(cert).map_err(|source| TlsError::Rustls { what: "the CA certificate".into(), source })?;
    }
    Ok(roots)
}

/// PEM material for one end of a TLS connection.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Reads CA, certificate and key files.
    pub fn from_files(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self, crate::pki::PkiError> {
        Ok(TlsMaterial {
            ca_pem: crate::pki::read(ca)?,
            cert_pem: crate::pki::read(cert)?,
            key_pem: crate::pki::read(key)?,
        })
    }
}

/// The hub's server configuration: TLS 1.3, HTTP/2, client certificates verified against the
/// CA. A connection without a client certificate is let through the handshake so that
/// `RegistrationService.Register` (authorized by a bootstrap token) can work; every other call
/// refuses it. Certificates from another CA, or expired ones, fail the handshake.
pub fn server_config(material: &TlsMaterial) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&material.ca_pem)?), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls { what: "TLS 1.3".into(), source })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            parse_certs(&material.cert_pem, "the hub certificate")?,
            parse_key(&material.key_pem, "the hub key")?,
        )
        .map_err(|source| TlsError::Rustls { what: "the hub certificate and key".into(), source })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A server configuration for browsers (the hub's dashboard): TLS 1.2 and 1.3, HTTP/2 and
/// HTTP/1.1, no client certificates.
pub fn web_server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { what: "TLS 1.2 and 1.3".into(), source })?
        .with_no_client_auth()
        .with_single_cert(parse_certs(cert_pem, "the dashboard certificate")?, parse_key(key_pem, "the dashboard key")?)
        .map_err(|source| TlsError::Rustls { what: "the dashboard certificate and key".into(), source })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts only `ca_pem` and presents `client` (cert, key) if given.
pub fn client_config(ca_pem: &str, client: Option<(&str, &str)>) -> Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls { what: "TLS 1.3".into(), source })?
        .with_root_certificates(roots(ca_pem)?);
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(parse_certs(cert, "the client certificate")?, parse_key(key, "the client key")?)
            .map_err(|source| TlsError::Rustls { what: "the client certificate and key".into(), source })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration (TLS 1.2 and 1.3, for Git and chart servers) trusting `anchors`, the
/// certificates a user gave (`--git-ca`, `--chart-ca`): a server certificate that chains to one
/// of them, as usual, or one that *is* one of them. The second is what `openssl req -x509` makes
/// (a self-signed certificate marked CA:TRUE), which webpki refuses as an end entity
/// (`CaUsedAsEndEntity`) while git, curl and Go accept it; it is still checked for the server's
/// name and its validity period. Nothing looser: any other certificate fails as before.
pub fn client_config_trusting(anchors: Vec<CertificateDer<'static>>) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in &anchors {
        roots.add(cert.clone()).map_err(|source| TlsError::Rustls { what: "a CA certificate".into(), source })?;
    }
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().map_err(
            |e| TlsError::Rustls { what: "the CA certificates".into(), source: rustls::Error::General(e.to_string()) },
        )?;
    let verifier = Arc::new(AnchorsAsServers { inner, anchors });
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { what: "TLS versions".into(), source })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// See [`client_config_trusting`].
#[derive(Debug)]
struct AnchorsAsServers {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    anchors: Vec<CertificateDer<'static>>,
}

impl rustls::client::danger::ServerCertVerifier for AnchorsAsServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let refused = match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(verified) => return Ok(verified),
            Err(e) => e,
        };
        if !self.anchors.iter().any(|a| a.as_ref() == end_entity.as_ref()) {
            return Err(refused);
        }
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        let at = x509_parser::time::ASN1Time::from_timestamp(now.as_secs() as i64)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        if !cert.validity().is_valid_at(at) {
            return Err(rustls::Error::InvalidCertificate(if at < cert.validity().not_before {
                rustls::CertificateError::NotValidYet
            } else {
                rustls::CertificateError::Expired
            }));
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Where the hub is and the name its certificate must carry: one address, or several replicas
/// of one hub (`a:7443,b:7443`), tried in turn. A name that resolves to several addresses is
/// tried address by address as well.
#[derive(Debug, Clone)]
pub struct HubAddress {
    /// The address(es) as given, for messages.
    pub address: String,
    /// Name checked against the first hub's certificate SANs (defaults to its HOST).
    pub server_name: ServerName<'static>,
    /// Every replica: `HOST:PORT` to dial and the name its certificate must carry.
    pub replicas: Vec<(String, ServerName<'static>)>,
    /// The replica dialed first: the last one that answered (shared by clones).
    preferred: Arc<AtomicUsize>,
}

impl HubAddress {
    /// A copy that remembers its own preferred replica, as a separate agent process does (a
    /// clone shares it: an agent's reconnects all start where the last one succeeded).
    pub fn detached(&self) -> HubAddress {
        let preferred = Arc::new(AtomicUsize::new(self.preferred.load(Ordering::Relaxed)));
        HubAddress { preferred, ..self.clone() }
    }

    /// Parses `HOST:PORT[,HOST:PORT…]`, with an optional server name override for all of them.
    pub fn parse(address: &str, server_name: Option<&str>) -> Result<Self> {
        let replicas = address
            .split(',')
            .map(str::trim)
            .filter(|one| !one.is_empty())
            .map(|one| {
                let bad = |reason: &str| TlsError::Address { address: one.to_string(), reason: reason.to_string() };
                let (host, port) = one.rsplit_once(':').ok_or_else(|| bad("no port"))?;
                port.parse::<u16>().map_err(|_| bad("the port is not a number"))?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = server_name.unwrap_or(host).to_string();
                let name = ServerName::try_from(name).map_err(|_| bad("the host is not a valid server name"))?;
                Ok((one.to_string(), name))
            })
            .collect::<Result<Vec<_>>>()?;
        let Some((_, first)) = replicas.first() else {
            return Err(TlsError::Address { address: address.to_string(), reason: "no address".into() });
        };
        let server_name = first.clone();
        Ok(HubAddress { address: address.to_string(), server_name, replicas, preferred: Arc::default() })
    }

    /// Starts at a random replica, so a fleet of agents spreads over them (a CLI keeps their
    /// order).
    pub fn spread(self) -> Self {
        self.preferred.store(rand::random_range(0..self.replicas.len()), Ordering::Relaxed);
        self
    }

    /// Opens TCP and TLS to the preferred replica, else to the next that answers.
    async fn dial(
        &self,
        tls: &TlsConnector,
        timeout: Duration,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut failure = None;
        for i in 0..self.replicas.len() {
            let index = (start + i) % self.replicas.len();
            let (address, server_name) = &self.replicas[index];
            let dialed = async {
                let tcp = tokio::time::timeout(timeout, TcpStream::connect(address))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TCP connect timed out"))??;
                tcp.set_nodelay(true)?;
                tls.connect(server_name.clone(), tcp).await
            };
            match dialed.await {
                Ok(stream) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(stream);
                }
                Err(e) => {
                    tracing::debug!(hub = %address, error = %e, "hub replica did not answer; trying the next");
                    failure = Some(std::io::Error::new(e.kind(), format!("{address}: {e}")));
                }
            }
        }
        Err(failure.unwrap_or_else(|| std::io::Error::other("no hub address")))
    }
}

/// Dials the hub over mutual TLS and returns a gRPC channel. HTTP/2 keep-alives detect a hub
/// that vanished without closing the connection.
pub async fn connect(hub: &HubAddress, tls: Arc<ClientConfig>, timeout: Duration) -> Result<Channel> {
    // The URI only names the first replica: the connector below dials whichever answers.
    let endpoint = Endpoint::from_shared(format!("http://{}", hub.replicas[0].0))
        .map_err(|e| TlsError::Address { address: hub.address.clone(), reason: e.to_string() })?
        .connect_timeout(timeout)
        .timeout(Duration::from_secs(30))
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let hub = hub.clone();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let connector = TlsConnector::from(tls.clone());
        let hub = hub.clone();
        async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(hub.dial(&connector, timeout).await?)) }
    });
    endpoint.connect_with_connector(connector).await.map_err(|e| TlsError::Connect { source: Box::new(e) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_address_may_name_several_replicas() {
        let one = HubAddress::parse("hub.example:7443", None).unwrap();
        assert_eq!(one.replicas.len(), 1);
        assert_eq!(one.server_name.to_str(), "hub.example");
        let many = HubAddress::parse("a.example:7443, b.example:7443,", Some("hub")).unwrap();
        let names: Vec<_> = many.replicas.iter().map(|(a, n)| (a.as_str(), n.to_str().to_string())).collect();
        assert_eq!(names, [("a.example:7443", "hub".to_string()), ("b.example:7443", "hub".to_string())]);
        let bad = HubAddress::parse("a.example:7443,b.example", None).unwrap_err().to_string();
        assert!(bad.contains("'b.example'") && bad.contains("no port"), "{bad}");
        assert!(HubAddress::parse(" , ", None).is_err());
    }

    #[tokio::test]
    async fn dialing_moves_past_a_replica_that_does_not_answer() {
        crate::install_crypto_provider();
        // A port nothing listens on (bound, then closed) and a listener that takes TCP.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let hub = HubAddress::parse(&format!("{dead},{live_addr}"), Some("localhost")).unwrap();
        let accepted = tokio::spawn(async move { live.accept().await.map(|(_, peer)| peer) });
        let config = client_config(&test_ca_pem(), None).unwrap();
        // The handshake fails (the listener speaks no TLS), but only after the live replica took
        // the connection: the dead one was skipped.
        let _ = hub.dial(&TlsConnector::from(config), Duration::from_secs(5)).await;
        accepted.await.unwrap().unwrap();
        assert_eq!(hub.preferred.load(Ordering::Relaxed), 0, "a replica that never answered is not preferred");
    }

    fn test_ca_pem() -> String {
        crate::pki::CertificateAuthority::generate("test-ca", 1).unwrap().0.cert_pem().to_string()
    }
}
