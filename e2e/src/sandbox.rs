//! `convoy-sandbox`: a whole local fleet on one machine. A hub with its embedded store reading an
//! example fleet repository; simulated clusters (kubesim) dev-1, stage-1, prod-eu, prod-us (and
//! more on request), each reconciled by its own agent over real mTLS on loopback; and a CLI
//! config, so `convoy --config DIR/convoy.yaml …` works at once.
//!
//! Layout of DIR: `repo/` (a working clone; push to its `origin` and the hub picks it up),
//! `repo.git/` (that origin), `convoy.yaml` (CLI config), `kube/<cluster>.kubeconfig`,
//! `certs/`, `hub/` (the hub's mirror and store), `agents/<cluster>/` (agent caches).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use convoy_agent::link::{Backoff, LinkConfig};
use convoy_agent::reconciler::ReconcilerConfig;
use convoy_cli::{ConfigFile, Context};
use convoy_hub::registry::RegistryConfig;
use convoy_hub::server::HubConfig;
use convoy_hub::source::SourceConfig;
use convoy_hub::state::Hub;
use convoy_hub::store::RedbStore;
use convoy_shared::identity::{Identity, Role};
use convoy_shared::pki::{self, CertDir, CertificateAuthority, LeafRequest};
use convoy_shared::tls::{self, HubAddress, TlsMaterial};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::fleet_repo::{FleetRepo, example_fleet};
use kubesim::{FleetOptions, SimFleet};

/// The clusters every sandbox has.
pub const SANDBOX_CLUSTERS: [&str; 4] = ["dev-1", "stage-1", "prod-eu", "prod-us"];

/// Errors that stop the sandbox from starting.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Store(#[from] convoy_hub::store::StoreError),
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
    #[error("the simulated clusters did not start: {0}")]
    Kubesim(String),
}

/// How to lay out and run the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub dir: PathBuf,
    pub listen: String,
    /// Clusters beyond the four standard ones.
    pub extra_clusters: usize,
    /// How often the hub fetches the repository.
    pub poll: Duration,
}

/// A running sandbox: where things are, and the hub's state for the status table.
pub struct Sandbox {
    pub hub_address: String,
    pub http_address: String,
    pub cli_config: PathBuf,
    pub repo: PathBuf,
    pub hub: Arc<Hub>,
    pub clusters: Vec<String>,
    /// Each agent's `/metrics` address (HOST:PORT), in `clusters` order.
    pub agent_metrics: Vec<String>,
    /// Owned so the simulated clusters live as long as the sandbox.
    _kube: SimFleet,
    tasks: JoinSet<()>,
}

impl Sandbox {
    /// Lays out DIR (reusing certificates and the repository when present), starts the
    /// clusters, the hub and the agents, and returns once everything listens.
    pub async fn start(config: &SandboxConfig, shutdown: CancellationToken) -> Result<Self, SandboxError> {
        let certs = CertDir::new(config.dir.join("certs"));
        let ca = if certs.ca_key().exists() {
            CertificateAuthority::load(&certs)?
        } else {
            pki::init_ca(&certs, &["localhost".into(), "127.0.0.1".into()], pki::DEFAULT_LEAF_DAYS)?
        };
        let clusters: Vec<String> = SANDBOX_CLUSTERS
            .iter()
            .map(|c| c.to_string())
            .chain((1..=config.extra_clusters).map(|i| format!("extra-{i}")))
            .collect();
        let origin = prepare_repository(&config.dir, config.extra_clusters);

        let names: Vec<&str> = clusters.iter().map(String::as_str).collect();
        let kube_dir = config.dir.join("kube");
        std::fs::create_dir_all(&kube_dir).map_err(|source| SandboxError::Write { path: kube_dir.clone(), source })?;
        let options = FleetOptions { dir: Some(kube_dir), ..Default::default() };
        let kube = SimFleet::start_with(&names, options).await.map_err(|e| SandboxError::Kubesim(e.to_string()))?;

        let listen_err = |address: &str| {
            let address = address.to_string();
            move |source| SandboxError::Listen { address, source }
        };
        let grpc = tokio::net::TcpListener::bind(&config.listen).await.map_err(listen_err(&config.listen))?;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(listen_err("127.0.0.1:0"))?;
        let hub_address = format!("localhost:{}", grpc.local_addr().map_err(listen_err(&config.listen))?.port());
        let http_address = http.local_addr().map_err(listen_err("127.0.0.1:0"))?.to_string();

        let mut tasks = JoinSet::new();
        let (hub, publisher) =
            Hub::new(Arc::new(RedbStore::open(&config.dir.join("hub"))?), RegistryConfig::default())?;
        let material = TlsMaterial::from_files(&certs.ca_cert(), &certs.hub_cert(), &certs.hub_key())?;
        let hub_config = HubConfig {
            tls: tls::server_config(&material)?,
            source: Some(SourceConfig {
                url: format!("file://{}", origin.display()),
                mirror: config.dir.join("hub").join("mirror.git"),
                fleet_branch: "main".into(),
                interval: config.poll,
            }),
            webhook_secret: None,
        };
        let (hub_state, token) = ((hub.clone(), publisher), shutdown.clone());
        tasks.spawn(
            async move {
                if let Err(e) = convoy_hub::server::run(hub_config, grpc, Some(http), hub_state, token).await {
                    tracing::error!(error = %e, "hub stopped");
                }
            }
            .instrument(tracing::info_span!("hub")),
        );

        let mut agent_metrics = Vec::new();
        for name in &clusters {
            let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(listen_err("127.0.0.1:0"))?;
            agent_metrics.push(metrics.local_addr().map_err(listen_err("127.0.0.1:0"))?.to_string());
            let identity = Identity::Cluster(name.clone());
            let issued = ca.issue(&LeafRequest::new(identity.clone(), pki::DEFAULT_LEAF_DAYS))?;
            certs.write_leaf(&identity, &issued)?;
            let link = LinkConfig {
                hub: HubAddress::parse(&hub_address, None)?,
                tls: tls::client_config(ca.cert_pem(), Some((&issued.cert_pem, &issued.key_pem)))?,
                cluster_name: name.clone(),
                heartbeat: Duration::from_secs(5),
                backoff: Backoff { initial: Duration::from_millis(200), max: Duration::from_secs(5) },
                connect_timeout: Duration::from_secs(5),
            };
            let reconciler = ReconcilerConfig::new(name, config.dir.join("agents").join(name));
            let client = kube
                .cluster(name)
                .expect("every sandbox cluster is simulated")
                .client()
                .await
                .map_err(|e| SandboxError::Kubesim(e.to_string()))?;
            let token = shutdown.clone();
            tasks.spawn(
                async move {
                    if let Err(e) = convoy_agent::run(reconciler, link, client, Some(metrics), token).await {
                        tracing::error!(error = %e, "agent stopped");
                    }
                }
                .instrument(tracing::info_span!("agent", cluster = %name)),
            );
        }

        let cli_config = write_cli_config(&config.dir, &certs, &hub_address)?;
        Ok(Sandbox {
            hub_address,
            http_address,
            cli_config,
            repo: config.dir.join("repo"),
            hub,
            clusters,
            agent_metrics,
            _kube: kube,
            tasks,
        })
    }

    /// Waits for the hub and every agent to stop (after the shutdown token is cancelled).
    pub async fn drain(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Creates DIR/repo (the example fleet, branches main, stage and dev) pushed to its origin
/// DIR/repo.git, unless it exists. Returns the origin's path.
fn prepare_repository(dir: &Path, extra: usize) -> PathBuf {
    let origin = dir.join("repo.git");
    if origin.join("HEAD").exists() {
        return origin;
    }
    let work = FleetRepo::init(&dir.join("repo"));
    example_fleet(&work, extra);
    let bare = FleetRepo { dir: dir.to_path_buf() };
    bare.git(&["init", "-q", "--bare", "-b", "main", "repo.git"]);
    work.git(&["remote", "add", "origin", &origin.display().to_string()]);
    work.git(&["push", "-q", "-u", "origin", "main", "stage", "dev"]);
    origin
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
