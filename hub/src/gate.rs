//! The hub's own metric-gate queries (`rollout.analysis.from: hub`): for each environment whose
//! rollout's gate queries a central Prometheus-compatible endpoint, every interval, each check
//! once; the results go where the releaser reads them ([`Hub::gate_measured`]), as the agents'
//! come in their reports.
//!
//! Decisions: queries run whether or not a rollout soaks (a soak judges only what was measured
//! after it began), one after another, 10 s at most each.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use convoy_model::analysis::{AnalysisSpec, QueryFrom};
use tokio_util::sync::CancellationToken;

use crate::state::hub::Hub;

/// How often the loop looks for queries that are due.
const TICK: Duration = Duration::from_secs(1);

/// Runs until `shutdown`.
pub async fn run(hub: Arc<Hub>, shutdown: CancellationToken) {
    convoy_shared::install_crypto_provider();
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client: gates with `from: hub` are not measured");
            return;
        }
    };
    let mut last_run: HashMap<String, Instant> = HashMap::new();
    loop {
        let due: Vec<(String, AnalysisSpec)> = {
            let view = hub.view();
            let environments = view.fleet.iter().flat_map(|f| f.environments.iter());
            environments
                .filter_map(|env| {
                    let rollout = env.rollout.as_ref()?;
                    let analysis = rollout.analysis.as_ref().filter(|a| a.from == QueryFrom::Hub)?;
                    let due = last_run.get(&env.name).is_none_or(|at| at.elapsed() >= rollout.analysis_interval());
                    due.then(|| (env.name.clone(), analysis.clone()))
                })
                .collect()
        };
        for (environment, analysis) in due {
            last_run.insert(environment.clone(), Instant::now());
            for check in &analysis.checks {
                let address = &analysis.prometheus.address;
                let m = convoy_shared::prometheus::measure(&http, address, &check.name, &check.query).await;
                hub.gate_measured(&environment, m);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}
