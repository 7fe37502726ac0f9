//! kubesim: a multi-cluster Kubernetes API simulator speaking the real HTTP API, so the
//! unmodified `kube` client and the real kubectl work against it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kubesim::SimFleet;
//! let fleet = SimFleet::start(&["eu-1", "us-1"]).await?;
//! let eu = fleet.cluster("eu-1").expect("started");
//! let client = eu.client().await?;             // a kube::Client for this cluster
//! let _path = eu.kubeconfig_path();            // for `kubectl --kubeconfig`
//! let _obj = eu.get("apps/v1", "Deployment", Some("web"), "api");
//! eu.faults().set_latency(std::time::Duration::from_millis(50));
//! # drop(client); Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod apply;
pub mod cluster;
pub mod defaults;
pub mod faults;
pub mod fields;
pub mod kubectl;
pub mod patch;
pub mod poll;
pub mod protobuf;
pub mod realkube;
pub mod resources;
pub mod scenario;
pub mod selector;
pub mod server;
pub mod status;
pub mod status_error;
pub mod table;
pub mod tls;
pub mod watch;

pub use cluster::{ClusterState, SimConfig, WriteOptions};
pub use faults::{ErrorKind, Faults, OutageMode};
pub use poll::eventually;
pub use status_error::ApiError;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Errors from starting or using a simulated fleet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Certificates or TLS configuration.
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// Binding the cluster's listener.
    #[error("binding a listener for simulated cluster {cluster}: {source}")]
    Bind {
        /// Cluster name.
        cluster: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the kubeconfig.
    #[error("writing kubeconfig {path}: {source}")]
    WriteKubeconfig {
        /// File path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Building a kube client from the kubeconfig.
    #[error("building a kube client for simulated cluster {cluster}: {message}")]
    Client {
        /// Cluster name.
        cluster: String,
        /// Cause.
        message: String,
    },
    /// The API operation failed as the API server would fail it.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The kind is not served by the cluster.
    #[error("{kind} ({api_version}) is not served by simulated cluster {cluster}")]
    UnknownKind {
        /// Cluster name.
        cluster: String,
        /// apiVersion asked for.
        api_version: String,
        /// Kind asked for.
        kind: String,
    },
    /// A cluster name that cannot be a file name or kubeconfig entry.
    #[error("invalid cluster name {0:?}: use lowercase letters, digits and '-'")]
    BadName(String),
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Options of [`SimFleet::start_with`].
#[derive(Debug, Clone, Default)]
pub struct FleetOptions {
    /// Where kubeconfigs are written (`NAME.kubeconfig`); a temporary directory if None.
    pub dir: Option<PathBuf>,
    /// Tunables applied to every cluster.
    pub config: SimConfig,
}

/// One simulated cluster of a [`SimFleet`].
pub struct SimCluster {
    name: String,
    addr: SocketAddr,
    kubeconfig: String,
    kubeconfig_path: PathBuf,
    state: Arc<ClusterState>,
}

impl SimCluster {
    /// The cluster name (also its kubeconfig context name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The kubeconfig text (CA data and bearer token embedded).
    pub fn kubeconfig(&self) -> &str {
        &self.kubeconfig
    }

    /// Where the kubeconfig was written.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    fn client_error(&self, e: &dyn std::fmt::Display) -> Error {
        Error::Client { cluster: self.name.clone(), message: e.to_string() }
    }

    /// The `kube::Config` read from this cluster's kubeconfig, to adjust before building a
    /// client (e.g. `default_retry = false` to see injected 429/503 errors directly).
    pub async fn config(&self) -> Result<kube::Config> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig).map_err(|e| self.client_error(&e))?;
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| self.client_error(&e))
    }

    /// A `kube::Client` for this cluster, built from its kubeconfig like any real one.
    pub async fn client(&self) -> Result<kube::Client> {
        let cfg = self.config().await?;
        kube::Client::try_from(cfg).map_err(|e| self.client_error(&e))
    }

    /// The state behind the API, for direct inspection.
    pub fn state(&self) -> &Arc<ClusterState> {
        &self.state
    }

    /// Fault injection for this cluster.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    fn resource(&self, api_version: &str, kind: &str) -> Result<Arc<resources::ResourceType>> {
        self.state.resolve_kind(api_version, kind).ok_or_else(|| Error::UnknownKind {
            cluster: self.name.clone(),
            api_version: api_version.into(),
            kind: kind.into(),
        })
    }

    /// Reads one object directly (no HTTP), e.g. `get("apps/v1", "Deployment", Some("ns"), "x")`.
    pub fn get(&self, api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let rt = self.resource(api_version, kind).ok()?;
        self.state.get(&rt, ns, name).ok()
    }

    /// Every object of a kind, optionally in one namespace.
    pub fn list(&self, api_version: &str, kind: &str, ns: Option<&str>) -> Vec<Value> {
        let Ok(rt) = self.resource(api_version, kind) else {
            return Vec::new();
        };
        self.state
            .list(&rt, ns, &Default::default())
            .ok()
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Every stored object of every kind.
    pub fn list_all(&self) -> Vec<Value> {
        self.state.list_all()
    }

    /// Server-side applies `obj` as `manager` directly (no HTTP), e.g. to seed a cluster.
    pub fn apply(&self, manager: &str, obj: &Value, force: bool) -> Result<Value> {
        let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
        let rt = self.resource(s("/apiVersion"), s("/kind"))?;
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
        let ns = match (rt.namespaced, ns) {
            (true, None) => Some("default"),
            (true, n) => n,
            (false, _) => None,
        };
        let opts = WriteOptions { manager: manager.into(), dry_run: false, force };
        Ok(self.state.patch(&rt, ns, s("/metadata/name"), cluster::PatchType::Apply, obj.clone(), "", &opts)?)
    }

    /// Deletes one object directly (no HTTP), as a foreground delete would.
    pub fn delete(&self, api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Result<Value> {
        let rt = self.resource(api_version, kind)?;
        Ok(self.state.delete(&rt, ns, name, false, false)?)
    }

    /// The built-in HPA-like controller: sets `spec.replicas` of a Deployment through the scale
    /// subresource as `kube-controller-manager` (an Update), so that manager owns the field the
    /// way a real HorizontalPodAutoscaler does. Returns the resulting Scale.
    pub fn autoscale(&self, ns: &str, deployment: &str, replicas: i64) -> Result<Value> {
        let rt = self.resource("apps/v1", "Deployment")?;
        let opts = WriteOptions { manager: "kube-controller-manager".into(), ..Default::default() };
        Ok(self.state.set_scale(&rt, Some(ns), deployment, replicas, &opts)?)
    }

    /// Changes how long workloads take to become ready on this cluster.
    pub fn set_ready_delay(&self, d: std::time::Duration) {
        self.state.set_ready_delay(d);
    }
}

/// Many simulated clusters in one process, each on its own HTTPS listener with its own CA.
pub struct SimFleet {
    clusters: Vec<SimCluster>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    /// Holds the temporary kubeconfig directory; dropped (deleted) with the fleet.
    _tmp: Option<tempfile::TempDir>,
}

impl SimFleet {
    /// Starts clusters with default options; kubeconfigs go to a temporary directory.
    pub async fn start(names: &[&str]) -> Result<SimFleet> {
        Self::start_with(names, FleetOptions::default()).await
    }

    /// Starts clusters on `127.0.0.1:0` listeners.
    pub async fn start_with(names: &[&str], opts: FleetOptions) -> Result<SimFleet> {
        let (dir, tmp) = match opts.dir {
            Some(d) => (d, None),
            None => {
                let t = tempfile::tempdir()
                    .map_err(|source| Error::WriteKubeconfig { path: std::env::temp_dir(), source })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut clusters = Vec::new();
        for name in names {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
                return Err(Error::BadName(name.to_string()));
            }
            let pki = tls::cluster_pki(name)?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|source| Error::Bind { cluster: name.to_string(), source })?;
            let addr = listener.local_addr().map_err(|source| Error::Bind { cluster: name.to_string(), source })?;
            let state = ClusterState::new(name, opts.config.clone());
            let kubeconfig = tls::kubeconfig(name, &format!("https://{addr}"), &pki.ca_pem, &pki.token);
            let path = dir.join(format!("{name}.kubeconfig"));
            std::fs::write(&path, &kubeconfig)
                .map_err(|source| Error::WriteKubeconfig { path: path.clone(), source })?;
            let app = Arc::new(server::App {
                state: state.clone(),
                token: pki.token.clone(),
                server_addr: addr.to_string(),
                cancel: cancel.clone(),
            });
            let span = tracing::info_span!("kubesim", cluster = %name);
            tasks.spawn(
                server::serve(listener, pki.server_config.clone(), app, cancel.clone()).instrument(span.clone()),
            );
            tasks.spawn(cluster::run_status(state.clone(), cancel.clone()).instrument(span));
            clusters.push(SimCluster { name: name.to_string(), addr, kubeconfig, kubeconfig_path: path, state });
        }
        Ok(SimFleet { clusters, cancel, tasks, _tmp: tmp })
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&SimCluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Every cluster, in start order.
    pub fn clusters(&self) -> &[SimCluster] {
        &self.clusters
    }

    /// Stops every listener, watch and simulator, and waits for them.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
