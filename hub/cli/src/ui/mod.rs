//! `convoy ui`: the web dashboard, served on loopback and speaking to the hub with the CLI
//! config's own certificate, so the browser sees exactly what that user may see and do and no
//! new credential exists. The assets are embedded ([`assets`]); the JSON and event-stream API
//! is in `API.md` beside this file. [`router`] takes any [`FleetServiceClient`], so the hub can
//! later serve the same assets and API behind single sign-on.
//!
//! Decisions:
//! - Only loopback listen addresses: the server acts with the user's certificate.
//! - Every request passes [`guard::Guard`] (Host; Origin and CSRF token for writes).
//! - Every response carries a Content-Security-Policy without inline scripts, `nosniff`,
//!   `no-referrer` and frame denial; API answers and pages are `no-store` (they hold fleet
//!   data), assets are revalidated by ETag.
//! - Answers are gzip-compressed when the browser accepts it, except the event stream.
//! - A hub error keeps its meaning: not found is 404, permission denied 403, a bad request
//!   400, the hub unreachable 503; the body says what the hub said.

mod api;
mod assets;
pub mod fleet;
pub mod guard;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use convoy_shared::identity::{Identity, Role};
use convoy_shared::proto::fleet_service_client::FleetServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::CliError;

/// The Content-Security-Policy of every answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Who the dashboard acts as, from the certificate of the CLI config.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub user: String,
    pub role: &'static str,
    /// May try to pause, resume, approve, abort, roll back and release (the hub's access
    /// policy has the last word).
    pub can_act: bool,
    /// Why not, when it may not.
    pub why_not: String,
    pub csrf_token: String,
    pub hub: String,
    pub version: &'static str,
}

/// What every handler shares.
pub struct Ui {
    client: FleetServiceClient<Channel>,
    guard: guard::Guard,
    me: Me,
}

impl Ui {
    /// A dashboard for `identity` (the CLI certificate's) talking to `hub` through `client`,
    /// answering on `listen`. `may` is what the hub's access policy lets the user do (`convoy
    /// whoami`'s lines; `None` from a hub that predates policies, where the role decides).
    pub fn new(
        client: FleetServiceClient<Channel>,
        identity: &Identity,
        may: Option<&[String]>,
        hub: &str,
        listen: SocketAddr,
    ) -> Ui {
        let guard = guard::Guard::new(listen);
        let (user, role) = match identity {
            Identity::User { name, role } => (name.clone(), *role),
            other => (other.to_string(), Role::Viewer),
        };
        // Buttons are enabled where some rule allows a rollout action or a rollback; the hub
        // still decides each one (and says why not) for the environment and app it is about.
        let can_act = match may {
            Some(lines) => lines.iter().any(|l| l.starts_with("rollout:") || l.starts_with("rollback:")),
            None => role == Role::Admin,
        };
        let why_not = match (can_act, role) {
            (true, _) => String::new(),
            (false, Role::Member) => "your roles allow no rollout actions or rollbacks (spec.access in convoy.yaml): ask a platform admin for one".into(),
            (false, role) => format!(
                "{} certificates may not pause, resume, approve, abort, roll back or release: ask an admin",
                role.as_str()
            ),
        };
        let me = Me {
            user,
            role: role.as_str(),
            can_act,
            why_not,
            csrf_token: guard.token().to_string(),
            hub: hub.to_string(),
            version: convoy_shared::VERSION,
        };
        Ui { client, guard, me }
    }

    /// The address pages are served from.
    pub fn url(&self) -> String {
        self.guard.origin()
    }
}

/// The dashboard's routes: pages, assets and the API.
pub fn router(ui: Arc<Ui>) -> Router {
    let pages = ["/", "/clusters/{name}", "/apps/{name}", "/promotion", "/rollouts"];
    let mut router = Router::new();
    for page in pages {
        router = router.route(page, get(assets::index));
    }
    router
        .route("/assets/{file}", get(assets::asset))
        .route("/api/me", get(api::me))
        .route("/api/envs", get(api::envs))
        .route("/api/clusters", get(api::clusters))
        .route("/api/clusters/{name}", get(api::cluster))
        .route("/api/apps/{name}", get(api::app))
        .route("/api/apps/{name}/objects", get(api::app_objects))
        .route("/api/promotion", get(api::promotion))
        .route("/api/rollouts", get(api::rollouts))
        .route("/api/rollouts/action", post(api::rollout_action))
        .route("/api/rollback", post(api::rollback))
        .route("/api/events", get(api::events))
        .fallback(api::not_found)
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
        .layer(middleware::from_fn_with_state(ui.clone(), guarded))
        .with_state(ui)
}

/// Refuses what [`guard::Guard`] refuses and sets the security headers of every answer.
async fn guarded(State(ui): State<Arc<Ui>>, request: Request, next: Next) -> Response {
    let checked = {
        let h = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        ui.guard.check(request.method(), h(header::HOST.as_str()), h(header::ORIGIN.as_str()), h(guard::CSRF_HEADER))
    };
    let api = request.uri().path().starts_with("/api/");
    let mut response = match checked {
        Ok(()) => next.run(request).await,
        Err(refusal) => api::error(StatusCode::FORBIDDEN, refusal.to_string()),
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    if api || !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Why `convoy ui` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error(
        "--listen {0} is not a loopback address: the dashboard acts with your certificate, so it serves this machine only (use 127.0.0.1:PORT)"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source} (another program may hold the port: pick another with --listen)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the CLI certificate {path}: {message}")]
    Certificate { path: String, message: String },
}

/// The identity in the PEM certificate at `path`.
pub fn identity_of(path: &std::path::Path) -> Result<Identity, CliError> {
    let bad = |message: String| UiError::Certificate { path: path.display().to_string(), message };
    let pem = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let certs = convoy_shared::tls::parse_certs(&pem, "the CLI certificate")?;
    let leaf = certs.first().ok_or_else(|| bad("holds no certificate".into()))?;
    Identity::from_certificate_der(leaf).map_err(|e| bad(e.to_string()).into())
}

/// Binds `listen` (loopback only).
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, CliError> {
    if !listen.ip().is_loopback() {
        return Err(UiError::NotLoopback(listen).into());
    }
    tokio::net::TcpListener::bind(listen).await.map_err(|source| UiError::Listen { addr: listen, source }.into())
}

/// Serves `ui` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, ui: Arc<Ui>) -> std::io::Result<()> {
    axum::serve(listener, router(ui)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(role: Role, may: Option<&[String]>) -> Me {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let identity = Identity::User { name: "u".into(), role };
        Ui::new(FleetServiceClient::new(channel), &identity, may, "hub:7443", "127.0.0.1:8080".parse().unwrap()).me
    }

    #[tokio::test]
    async fn the_buttons_follow_what_the_policy_lets_the_user_do() {
        let scoped = ["view: apps web in environments dev".to_string(), "rollout: apps web in environments dev".into()];
        assert!(me(Role::Member, Some(&scoped)).can_act);
        let viewing = ["view: every app in every environment".to_string()];
        let member = me(Role::Member, Some(&viewing));
        assert!(!member.can_act && member.why_not.contains("spec.access"), "{}", member.why_not);
        let viewer = me(Role::Viewer, Some(&viewing));
        assert!(!viewer.can_act && viewer.why_not.starts_with("viewer certificates may not"), "{}", viewer.why_not);
        assert!(me(Role::Admin, None).can_act, "a hub without policies: the role decides");
        assert!(!me(Role::Viewer, None).can_act);
    }
}
