//! Bootstrap: how an agent given only the hub address, the hub CA and a single-use token gets
//! its own certificate. The key is generated here and never leaves the cluster; key and
//! certificate live in a Kubernetes Secret (type `kubernetes.io/tls`: `tls.crt`, `tls.key`,
//! `ca.crt`) in the agent's namespace, so a restarted agent reads the Secret and never needs the
//! token again. The certificate is renewed over mTLS (`RegistrationService.Renew`) at two thirds
//! of its remaining lifetime; the link picks the new one up on its next connection.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use convoy_shared::clock::unix_secs;
use convoy_shared::enrollment::{self, Validity};
use convoy_shared::identity::Identity;
use convoy_shared::proto::registration_service_client::RegistrationServiceClient;
use convoy_shared::proto::{CertificateResponse, RegisterRequest, RenewRequest};
use convoy_shared::tls::{self, HubAddress, TlsError};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use tokio_util::sync::CancellationToken;

/// Field manager of the credentials Secret.
const FIELD_MANAGER: &str = "convoy-agent";
/// Shortest and longest wait before retrying a failed renewal.
use convoy_shared::backoff::Backoff;

const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Bootstrap errors; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "no credentials: Secret {namespace}/{secret} holds no usable certificate and no bootstrap token was given; \
         set CONVOY_BOOTSTRAP_TOKEN (`convoy token create --cluster NAME`) or CONVOY_CERT and CONVOY_KEY"
    )]
    NoCredentials { namespace: String, secret: String },
    #[error("the hub refused to register this agent: {}", .0.message())]
    Refused(#[source] tonic::Status),
    #[error("cannot reach the hub: {0}")]
    Connect(#[from] TlsError),
    #[error("the certificate is unusable: {0}")]
    Certificate(String),
    #[error("Secret {namespace}/{secret}: {source}; the agent needs get, create and patch on Secrets in its namespace")]
    Secret {
        namespace: String,
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Enrollment(#[from] enrollment::EnrollmentError),
}

pub type Result<T, E = BootstrapError> = std::result::Result<T, E>;

/// Where the hub is and where this agent keeps its credentials.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    pub hub: HubAddress,
    /// The hub's CA certificate, PEM.
    pub ca_pem: String,
    /// Single-use bootstrap token; used only when the Secret holds no valid certificate.
    pub token: Option<String>,
    /// Name of the Secret holding key and certificate.
    pub secret: String,
    /// The agent's namespace (where the Secret lives).
    pub namespace: String,
    pub connect_timeout: Duration,
}

/// An agent certificate with its key.
#[derive(Clone)]
pub struct Credentials {
    pub cluster: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub validity: Validity,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("cluster", &self.cluster)
            .field("validity", &self.validity)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads PEM certificate and key; `what` names their origin in errors.
    pub fn from_pem(cert_pem: String, key_pem: String, what: &str) -> Result<Self> {
        let der = tls::parse_certs(&cert_pem, what)?.remove(0);
        let cluster = match Identity::from_certificate_der(&der) {
            Ok(Identity::Cluster(name)) => name,
            Ok(other) => return Err(BootstrapError::Certificate(format!("{what} is for {other}, not a cluster"))),
            Err(e) => return Err(BootstrapError::Certificate(format!("{what}: {e}"))),
        };
        let validity =
            enrollment::validity_der(&der).map_err(|e| BootstrapError::Certificate(format!("{what}: {e}")))?;
        tls::parse_key(&key_pem, what)?;
        Ok(Credentials { cluster, cert_pem, key_pem, validity })
    }

    fn certified_key(&self) -> Result<Arc<CertifiedKey>> {
        let certs = tls::parse_certs(&self.cert_pem, "the agent certificate")?;
        let key = tls::parse_key(&self.key_pem, "the agent key")?;
        let signing = tls::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| BootstrapError::Certificate(format!("the agent key cannot sign: {e}")))?;
        Ok(Arc::new(CertifiedKey::new(certs, signing)))
    }
}

/// The agent's client certificate, replaceable while connections use it: the TLS client asks
/// it for the current certificate on every handshake.
#[derive(Debug)]
pub struct AgentCertificate {
    current: RwLock<(Credentials, Arc<CertifiedKey>)>,
}

impl AgentCertificate {
    /// Holds `credentials`.
    pub fn new(credentials: Credentials) -> Result<Arc<Self>> {
        let key = credentials.certified_key()?;
        Ok(Arc::new(AgentCertificate { current: RwLock::new((credentials, key)) }))
    }

    /// The credentials in use.
    pub fn credentials(&self) -> Credentials {
        self.current.read().expect("certificate lock").0.clone()
    }

    /// Swaps in renewed credentials.
    pub fn replace(&self, credentials: Credentials) -> Result<()> {
        let key = credentials.certified_key()?;
        *self.current.write().expect("certificate lock") = (credentials, key);
        Ok(())
    }

    /// A TLS client configuration trusting `ca_pem` and presenting this certificate.
    pub fn client_config(self: &Arc<Self>, ca_pem: &str) -> Result<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        for cert in tls::parse_certs(ca_pem, "the hub CA certificate")? {
            roots.add(cert).map_err(|e| BootstrapError::Certificate(format!("the hub CA certificate: {e}")))?;
        }
        let mut config = ClientConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| BootstrapError::Certificate(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesClientCert for AgentCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").1.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The agent's credentials: from the Secret when it holds an unexpired certificate, else by
/// registering with the token (and then written to the Secret).
pub async fn obtain(config: &BootstrapConfig, client: &kube::Client) -> Result<Credentials> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);
    let secret_err =
        |source| BootstrapError::Secret { namespace: config.namespace.clone(), secret: config.secret.clone(), source };
    if let Some(secret) = secrets.get_opt(&config.secret).await.map_err(secret_err)? {
        match from_secret(&secret, &config.secret) {
            Ok(creds) if creds.validity.not_after > unix_secs() => {
                tracing::info!(cluster = %creds.cluster, secret = %config.secret, "using the certificate from the credentials Secret");
                return Ok(creds);
            }
            Ok(creds) => tracing::warn!(cluster = %creds.cluster, "the certificate in the credentials Secret expired"),
            Err(e) => tracing::warn!(error = %e, "the credentials Secret holds no usable certificate"),
        }
    }
    let token = config.token.as_deref().map(str::trim).filter(|t| !t.is_empty()).ok_or_else(|| {
        BootstrapError::NoCredentials { namespace: config.namespace.clone(), secret: config.secret.clone() }
    })?;
    let creds = register(config, token).await?;
    store(config, client, &creds).await?;
    tracing::info!(cluster = %creds.cluster, secret = %config.secret, "registered with the hub; credentials stored");
    Ok(creds)
}

fn from_secret(secret: &Secret, name: &str) -> Result<Credentials> {
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or_else(|| BootstrapError::Certificate(format!("Secret {name} has no {key}")))
    };
    Credentials::from_pem(field("tls.crt")?, field("tls.key")?, &format!("Secret {name}"))
}

async fn register(config: &BootstrapConfig, token: &str) -> Result<Credentials> {
    let tls = tls::client_config(&config.ca_pem, None)?;
    let channel = tls::connect(&config.hub, tls, config.connect_timeout).await?;
    let csr = enrollment::generate_csr("convoy-agent")?;
    let request = RegisterRequest { bootstrap_token: token.to_string(), csr_pem: csr.cert_pem };
    let reply = RegistrationServiceClient::new(channel).register(request).await.map_err(BootstrapError::Refused)?;
    accept(reply.into_inner(), csr.key_pem)
}

fn accept(reply: CertificateResponse, key_pem: String) -> Result<Credentials> {
    let creds = Credentials::from_pem(reply.cert_pem, key_pem, "the certificate the hub signed")?;
    if creds.cluster != reply.cluster {
        return Err(BootstrapError::Certificate(format!(
            "the hub answered for cluster '{}' with a certificate for '{}'",
            reply.cluster, creds.cluster
        )));
    }
    Ok(creds)
}

/// Writes `creds` to the credentials Secret (server-side apply; creates it if missing).
pub async fn store(config: &BootstrapConfig, client: &kube::Client, creds: &Credentials) -> Result<()> {
    let data = BTreeMap::from([
        ("tls.crt".to_string(), ByteString(creds.cert_pem.clone().into_bytes())),
        ("tls.key".to_string(), ByteString(creds.key_pem.clone().into_bytes())),
        ("ca.crt".to_string(), ByteString(config.ca_pem.clone().into_bytes())),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(config.secret.clone()),
            namespace: Some(config.namespace.clone()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".to_string(), FIELD_MANAGER.to_string()),
                ("convoy.dev/cluster".to_string(), creds.cluster.clone()),
            ])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);
    secrets.patch(&config.secret, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret)).await.map_err(
        |source| BootstrapError::Secret { namespace: config.namespace.clone(), secret: config.secret.clone(), source },
    )?;
    Ok(())
}

/// Renews `cert` over mTLS, stores the result in the Secret and swaps it in.
pub async fn renew_once(config: &BootstrapConfig, client: &kube::Client, cert: &Arc<AgentCertificate>) -> Result<()> {
    let tls = cert.client_config(&config.ca_pem)?;
    let channel = tls::connect(&config.hub, tls, config.connect_timeout).await?;
    let csr = enrollment::generate_csr(&cert.credentials().cluster)?;
    let reply = RegistrationServiceClient::new(channel)
        .renew(RenewRequest { csr_pem: csr.cert_pem })
        .await
        .map_err(BootstrapError::Refused)?;
    let creds = accept(reply.into_inner(), csr.key_pem)?;
    store(config, client, &creds).await?;
    tracing::info!(cluster = %creds.cluster, not_after_unix = creds.validity.not_after, "certificate renewed");
    cert.replace(creds)
}

/// Renews `cert` at two thirds of its remaining lifetime, again and again, until `shutdown`.
/// A failed renewal is retried with growing pauses while the certificate is still valid.
pub async fn renew_loop(
    config: BootstrapConfig,
    client: kube::Client,
    cert: Arc<AgentCertificate>,
    shutdown: CancellationToken,
) {
    let mut from = unix_secs();
    let retry = Backoff::new(RETRY_MIN, RETRY_MAX);
    let mut failures = 0;
    loop {
        let due = cert.credentials().validity.renew_at(from);
        let wait = Duration::from_secs((due - unix_secs()).max(0) as u64);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match renew_once(&config, &client, &cert).await {
            Ok(()) => {
                from = unix_secs();
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                let wait = retry.ceiling(failures);
                tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "certificate renewal failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
