//! Convoy agent: dials out to the hub and reconciles its cluster to its assignment.
#![forbid(unsafe_code)]

pub mod api_error;
pub mod applier;
pub mod bootstrap;
pub mod cache;
pub mod discovery;
pub mod drift;
pub mod fields;
pub mod gate;
pub mod generated;
pub mod health;
pub mod ignore;
pub mod inventory;
pub mod link;
pub mod metrics;
pub mod order;
pub mod prune;
pub mod reconciler;
pub mod report_queue;
pub mod sops;
pub mod startup;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use crate::discovery::ServerCapabilities;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::link::{HubLink, LinkConfig, LinkHandle};
use crate::metrics::PassMetrics;
use crate::reconciler::{ReconcileError, Reconciler, ReconcilerConfig};
use crate::report_queue::ReportQueue;
use crate::startup::{AgentConfig, ConfigError, CredentialSource, with_causes};

/// Why the agent stopped short; [`StartError::exit_code`] says how the process should end.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(ConfigError),
    /// No credentials could be had from the Secret or the bootstrap token.
    #[error(transparent)]
    Credentials(ConfigError),
    #[error("bootstrapping needs the Kubernetes API for its credentials Secret")]
    NoKubeApi(#[source] ConfigError),
    /// There was no Kubernetes API: the agent ran the hub link alone until shutdown (said in
    /// the log when it began).
    #[error("no Kubernetes API: ran the hub link only")]
    LinkOnly(#[source] ConfigError),
    // The io error is part of the message, not a cause to print again.
    #[error("cannot serve metrics on {address}: {error}; pass another --metrics-listen")]
    Metrics { address: String, error: std::io::Error },
    #[error("{0}")]
    Reconcile(ReconcileError),
}

impl StartError {
    /// 64 for configuration mistakes (as sysexits' EX_USAGE), 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_) | StartError::Metrics { .. } => 64,
            _ => 1,
        }
    }
}

/// Starts the agent `config` describes with the `credentials` read from it and runs it until
/// `shutdown`: gets the Kubernetes client and the link's certificate, binds the metrics
/// listener, then [`run`]s.
pub async fn start(
    config: AgentConfig,
    credentials: CredentialSource,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let sops = credentials.sops.clone();
    if !sops.is_empty() {
        tracing::info!(recipients = ?sops.recipients(), "SOPS: decrypting with these age identities");
    }
    let (link, mut reconciler, client) = match (credentials.pre_issued, config.kube_client().await) {
        (Some(material), client) => {
            let (link, reconciler) = config.pre_issued(&material).map_err(StartError::Config)?;
            (link, reconciler, client)
        }
        (None, Ok(client)) => {
            let (link, reconciler) = config
                .bootstrapped(&credentials.bootstrap, &client, &shutdown)
                .await
                .map_err(StartError::Credentials)?;
            (link, reconciler, Ok(client))
        }
        (None, Err(e)) => return Err(StartError::NoKubeApi(e)),
    };
    let client = match client {
        Ok(client) => client,
        Err(e) => return Err(link_only(link, e, shutdown).await),
    };
    let metrics = match &config.metrics_listen {
        None => None,
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|error| StartError::Metrics { address: address.clone(), error })?,
        ),
    };
    reconciler.sops = sops;
    run(reconciler, link, client, metrics, shutdown).await.map_err(StartError::Reconcile)
}

/// Without a Kubernetes API the agent still shows up at the hub, which is where an operator
/// will look, and says loudly that it reconciles nothing; the link runs until `shutdown`.
async fn link_only(link: LinkConfig, error: ConfigError, shutdown: CancellationToken) -> StartError {
    tracing::error!(error = with_causes(&error), "no Kubernetes API: running the hub link only; nothing is reconciled");
    let (link, _handle) = HubLink::new(link, None);
    link.run(shutdown).await;
    StartError::LinkOnly(error)
}

/// Runs the hub link and the reconciler side by side until `shutdown`, then drains both. The
/// cached assignment (if any) is enforced at once, without waiting for the hub. With a
/// `metrics` listener, `/metrics` is served there too.
pub async fn run(
    config: ReconcilerConfig,
    link: LinkConfig,
    client: kube::Client,
    metrics: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), ReconcileError> {
    let cluster = config.cluster.clone();
    let link = LinkConfig { capabilities: ServerCapabilities::of(&client).await, ..link };
    let reconciler = Reconciler::new(config, client);
    let held = reconciler.cached_assignment().await.map(Arc::new);
    if let Some(a) = &held {
        tracing::info!(revision = %a.revision, digest = %a.digest, "enforcing the cached assignment");
    }
    let (link, handle): (HubLink, LinkHandle) = HubLink::with_queue(link, held, ReportQueue::default());
    let link_task =
        tokio::spawn(link.run(shutdown.clone()).instrument(tracing::info_span!("link", cluster = %cluster)));
    let metrics_task =
        metrics.map(|listener| spawn_metrics(listener, handle.clone(), reconciler.pass_metrics(), shutdown.clone()));
    let gate_task = tokio::spawn(
        gate::run(handle.assignment.clone(), reconciler.live(), shutdown.clone())
            .instrument(tracing::info_span!("gate", cluster = %cluster)),
    );
    let result = reconciler
        .run(handle.assignment.clone(), handle.reports.clone(), shutdown.clone())
        .instrument(tracing::info_span!("reconciler", cluster = %cluster))
        .await;
    shutdown.cancel();
    let _ = link_task.await;
    let _ = gate_task.await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    result
}

/// Serves `/metrics` on `listener` until `shutdown`.
fn spawn_metrics(
    listener: tokio::net::TcpListener,
    link: LinkHandle,
    passes: PassMetrics,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = metrics::serve(listener, link, passes, shutdown).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    })
}
