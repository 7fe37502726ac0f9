//! `convoy-sandbox`: a whole local fleet on one machine. For now a hub with the certificates it
//! needs and one agent per sandbox cluster, all over real mTLS on loopback, plus a CLI config so
//! `convoy --config DIR/convoy.yaml …` works at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use convoy_agent::link::{Backoff, HubLink, LinkConfig};
use convoy_hub::cli::{ConfigFile, Context};
use convoy_hub::state::Hub;
use convoy_shared::identity::{Identity, Role};
use convoy_shared::pki::{self, CertDir, CertificateAuthority, LeafRequest};
use convoy_shared::tls::{self, HubAddress, TlsMaterial};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The clusters every sandbox has.
pub const SANDBOX_CLUSTERS: [&str; 2] = ["dev-1", "prod-eu"];

/// Errors that stop the sandbox from starting.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {address}: {source}; pass another --listen")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How to lay out and run the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub dir: PathBuf,
    pub listen: String,
}

/// A running sandbox: where things are, and the hub's state for the status table.
pub struct Sandbox {
    pub hub_address: String,
    pub cli_config: PathBuf,
    pub hub: Arc<Hub>,
    tasks: JoinSet<()>,
}

impl Sandbox {
    /// Issues (or reuses) certificates in `DIR/certs`, starts the hub and the agents, writes
    /// `DIR/convoy.yaml`, and returns once everything is listening.
    pub async fn start(config: &SandboxConfig, shutdown: CancellationToken) -> Result<Self, SandboxError> {
        let certs = CertDir::new(config.dir.join("certs"));
        let ca = if certs.ca_key().exists() {
            CertificateAuthority::load(&certs)?
        } else {
            pki::init_ca(&certs, &["localhost".into(), "127.0.0.1".into()], pki::DEFAULT_LEAF_DAYS)?
        };
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|source| SandboxError::Listen { address: config.listen.clone(), source })?;
        let local =
            listener.local_addr().map_err(|source| SandboxError::Listen { address: config.listen.clone(), source })?;
        let hub_address = format!("localhost:{}", local.port());

        let mut tasks = JoinSet::new();
        let hub = Hub::in_memory();
        let material = TlsMaterial::from_files(&certs.ca_cert(), &certs.hub_cert(), &certs.hub_key())?;
        let server_tls = tls::server_config(&material)?;
        let (hub_state, token) = (hub.clone(), shutdown.clone());
        tasks.spawn(
            async move {
                if let Err(e) = convoy_hub::server::serve(listener, server_tls, hub_state, token).await {
                    tracing::error!(error = %e, "hub stopped");
                }
            }
            .instrument(tracing::info_span!("hub")),
        );

        for name in SANDBOX_CLUSTERS {
            let identity = Identity::Cluster(name.to_string());
            let issued = ca.issue(&LeafRequest::new(identity.clone(), pki::DEFAULT_LEAF_DAYS))?;
            certs.write_leaf(&identity, &issued)?;
            let link = LinkConfig {
                hub: HubAddress::parse(&hub_address, None)?,
                tls: tls::client_config(ca.cert_pem(), Some((&issued.cert_pem, &issued.key_pem)))?,
                cluster_name: name.to_string(),
                heartbeat: Duration::from_secs(5),
                backoff: Backoff::default(),
                connect_timeout: Duration::from_secs(5),
            };
            let (link, _handle) = HubLink::new(link, None);
            tasks.spawn(link.run(shutdown.clone()).instrument(tracing::info_span!("agent", cluster = name)));
        }

        let cli_config = write_cli_config(&config.dir, &certs, &hub_address)?;
        Ok(Sandbox { hub_address, cli_config, hub, tasks })
    }

    /// Waits for the hub and every agent to stop (after the shutdown token is cancelled).
    pub async fn drain(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

fn write_cli_config(dir: &Path, certs: &CertDir, hub_address: &str) -> Result<PathBuf, SandboxError> {
    let admin = Identity::User { name: "admin".into(), role: Role::Admin };
    let (cert, key) = certs.leaf_paths(&admin);
    let file = ConfigFile {
        current_context: Some("sandbox".into()),
        contexts: vec![Context {
            name: "sandbox".into(),
            hub: Some(hub_address.to_string()),
            ca: Some(certs.ca_cert()),
            cert: Some(cert),
            key: Some(key),
            server_name: None,
        }],
    };
    let path = dir.join("convoy.yaml");
    let text = serde_saphyr::to_string(&file).expect("a config file always serializes");
    std::fs::write(&path, text).map_err(|source| SandboxError::Write { path: path.clone(), source })?;
    Ok(path)
}
