//! Convoy agent: dials out to the hub and reconciles its cluster to its assignment.
#![forbid(unsafe_code)]

pub mod applier;
pub mod bootstrap;
pub mod cache;
pub mod discovery;
pub mod drift;
pub mod fields;
pub mod health;
pub mod inventory;
pub mod link;
pub mod metrics;
pub mod order;
pub mod prune;
pub mod reconciler;
pub mod report_queue;
pub mod testing;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::link::{HubLink, LinkConfig, LinkHandle};
use crate::reconciler::{ReconcileError, Reconciler, ReconcilerConfig};
use crate::report_queue::ReportQueue;

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
    let reconciler = Reconciler::new(config, client);
    let held = reconciler.cached_assignment().await.map(Arc::new);
    if let Some(a) = &held {
        tracing::info!(revision = %a.revision, digest = %a.digest, "enforcing the cached assignment");
    }
    let (link, handle): (HubLink, LinkHandle) = HubLink::with_queue(link, held, ReportQueue::default());
    let link_task =
        tokio::spawn(link.run(shutdown.clone()).instrument(tracing::info_span!("link", cluster = %cluster)));
    let metrics_task = metrics.map(|listener| {
        let (handle, passes, token) = (handle.clone(), reconciler.pass_metrics(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(listener, handle, passes, token).await {
                tracing::error!(error = %e, "the metrics endpoint stopped");
            }
        })
    });
    let result = reconciler
        .run(handle.assignment.clone(), handle.reports.clone(), shutdown.clone())
        .instrument(tracing::info_span!("reconciler", cluster = %cluster))
        .await;
    shutdown.cancel();
    let _ = link_task.await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    result
}
