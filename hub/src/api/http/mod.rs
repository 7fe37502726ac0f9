//! The hub's plain-HTTP listener: one module per route — [`webhook`] (a push makes the sync
//! loop fetch at once), [`health`] (`/healthz`) and [`metrics`] (`/metrics`, Prometheus).
//!
//! Decisions: which pushes are accepted (signed with the configured secret, never replayed;
//! without a secret, none).

pub mod health;
pub mod metrics;
pub mod webhook;

use std::sync::Arc;

use axum::Router;

use crate::state::hub::Hub;

/// The router for the HTTP listener: every route above. `secret` checks webhook signatures;
/// without one the webhook refuses every call.
pub fn router(hub: Arc<Hub>, secret: Option<String>) -> Router {
    Router::new().merge(webhook::routes(hub.clone(), secret)).merge(health::routes()).merge(metrics::routes(hub))
}
