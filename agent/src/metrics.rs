//! The agent's Prometheus metrics at `/metrics`: whether the hub link is up, the offline report
//! queue, what the latest report says (objects by health, apply errors, drift), and how long
//! reconcile passes take. Report values are read from the link and the report queue at scrape
//! time, so they are never stale.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use convoy_shared::model::report::Health;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::link::{LinkHandle, LinkState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabel {
    health: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// What the reconciler records about its passes (apply, then prune when allowed).
#[derive(Clone, Debug)]
pub struct PassMetrics {
    duration: Histogram,
    passes: Family<OutcomeLabel, Counter>,
}

impl Default for PassMetrics {
    fn default() -> Self {
        // 1 ms … ~65 s.
        PassMetrics { duration: Histogram::new(exponential_buckets(0.001, 2.0, 17)), passes: Family::default() }
    }
}

impl PassMetrics {
    /// Records one pass: how long it took and whether it left apply or prune errors.
    pub fn observe(&self, elapsed: Duration, clean: bool) {
        self.duration.observe(elapsed.as_secs_f64());
        let outcome = if clean { "clean" } else { "errors" };
        self.passes.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

#[derive(Clone)]
struct Sources {
    link: LinkHandle,
    passes: PassMetrics,
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    link: LinkHandle,
    passes: PassMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = Router::new().route("/metrics", get(scrape)).with_state(Sources { link, passes });
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

async fn scrape(State(sources): State<Sources>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(CONTENT_TYPE, content_type)], render(&sources.link, &sources.passes))
}

/// The metrics text for the link's current state and the passes so far.
pub fn render(link: &LinkHandle, passes: &PassMetrics) -> String {
    let mut registry = Registry::with_prefix("convoy_agent");
    registry.register(
        "pass_duration_seconds",
        "Duration of reconcile passes (apply, then prune when allowed)",
        passes.duration.clone(),
    );
    registry.register("passes", "Reconcile passes by outcome (clean, or errors left to retry)", passes.passes.clone());
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let g: Gauge = Gauge::default();
        g.set(value);
        registry.register(name, help, g);
    };
    let connected = matches!(*link.state.borrow(), LinkState::Connected);
    gauge(&mut registry, "hub_connected", "1 while the stream to the hub is up", i64::from(connected));
    gauge(&mut registry, "report_queue_depth", "Reports waiting for the hub", link.reports.len() as i64);
    let summarized: Counter = Counter::default();
    summarized.inc_by(link.reports.summarized_total());
    registry.register("reports_summarized", "Reports folded into later ones while offline", summarized);

    let last = link.reports.last().unwrap_or_default();
    let objects = Family::<HealthLabel, Gauge>::default();
    for health in [Health::Healthy, Health::Progressing, Health::Degraded, Health::Missing, Health::Unknown] {
        let count = last.apps.iter().flat_map(|a| &a.objects).filter(|o| o.health == health).count();
        objects.get_or_create(&HealthLabel { health: health.as_str() }).set(count as i64);
    }
    registry.register("objects", "Managed objects by health, from the latest report", objects);
    let apply_errors = last.apps.iter().flat_map(|a| &a.objects).filter(|o| o.apply_error.is_some()).count();
    gauge(&mut registry, "apply_errors", "Objects whose last apply failed", apply_errors as i64);
    gauge(&mut registry, "drifts", "Objects drifted from what the agent applied", last.drifts.len() as i64);
    gauge(
        &mut registry,
        "assignment_applied",
        "1 when every object of the assignment applied",
        i64::from(last.applied),
    );
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}
