//! `GET /healthz`: answers `ok` while the hub's HTTP listener runs (a liveness probe).

use axum::Router;
use axum::routing::get;

/// The `/healthz` route.
pub fn routes() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" }))
}
