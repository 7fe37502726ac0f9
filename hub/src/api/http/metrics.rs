//! `GET /metrics`: the hub's Prometheus metrics
//! ([`HubMetrics`](crate::state::metrics::HubMetrics)) in the OpenMetrics text format, with the
//! gauges that are counted on demand (clusters, agents connected, drifts, store queue) brought
//! up to date first.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::state::hub::Hub;

/// The `/metrics` route.
pub fn routes(hub: Arc<Hub>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(hub)
}

async fn metrics(State(hub): State<Arc<Hub>>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let clusters = hub.cluster_infos();
    hub.metrics().clusters_known.set(clusters.len() as i64);
    hub.metrics().clusters_orphaned.set(clusters.iter().filter(|c| c.orphaned).count() as i64);
    hub.metrics().agents_connected.set(clusters.iter().filter(|c| c.connected).count() as i64);
    hub.metrics().drifts.set(clusters.iter().map(|c| i64::from(c.drift_count)).sum());
    hub.metrics().store_queue_depth.set(hub.store_queued() as i64);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], hub.metrics().encode())
}
