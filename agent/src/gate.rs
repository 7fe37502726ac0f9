//! Metric gates inside the cluster: runs the assignment's gate queries against this cluster's
//! Prometheus every interval and keeps each result in the live index, whose change makes the
//! reconciler report it. The hub judges the results (`rollout.analysis`).
//!
//! Decisions:
//! - No queries in the assignment: nothing runs, and earlier measurements are forgotten.
//! - A query that fails (Prometheus unreachable, an error answer, no sample) is a measurement
//!   without a value that says why: inconclusive, never success.
//! - Queries run one after another with a 10 s timeout each.

use std::sync::Arc;
use std::time::Duration;

use convoy_shared::model::{Assignment, GateQueries};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::drift::Live;

/// Runs the gate queries of the assignment in `assignments` until `shutdown`.
pub async fn run(mut assignments: watch::Receiver<Option<Arc<Assignment>>>, live: Live, shutdown: CancellationToken) {
    // Built at the first query: most clusters never gate, and a client with its root
    // certificates costs megabytes of an agent's memory.
    let mut http: Option<reqwest::Client> = None;
    loop {
        let queries: Option<GateQueries> =
            assignments.borrow_and_update().as_ref().and_then(|a| a.gate_queries.clone());
        let names: Vec<String> = queries.iter().flat_map(|q| q.checks.iter().map(|(name, _)| name.clone())).collect();
        live.update(|ix| ix.retain_checks(&names));
        let wait = match &queries {
            Some(q) => {
                let http = match &mut http {
                    Some(http) => http,
                    None => match client() {
                        Ok(client) => http.insert(client),
                        Err(e) => {
                            tracing::error!(error = %e, "no HTTP client: metric gates are not measured");
                            return;
                        }
                    },
                };
                for (check, query) in &q.checks {
                    let m = convoy_shared::prometheus::measure(http, &q.address, check, query).await;
                    if m.value.is_none() {
                        tracing::debug!(check, error = %m.error, "gate query inconclusive");
                    }
                    live.update(|ix| ix.measured(m));
                }
                Duration::from_millis(q.interval_ms.max(1000))
            }
            None => Duration::MAX,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = assignments.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait.min(Duration::from_secs(86_400))) => {}
        }
    }
}

/// The client gate queries go through.
fn client() -> reqwest::Result<reqwest::Client> {
    convoy_shared::install_crypto_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build()
}
