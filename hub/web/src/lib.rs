//! The web dashboard, served two ways: by `convoy ui` on loopback, acting with the CLI
//! config's own certificate, and by the hub (`--ui-listen`) to browsers signed in through the
//! hub's OpenID provider. Either way every answer comes from the fleet API as the user, so the
//! browser sees exactly what that user may see and do. A [`Backend`] says who a request acts
//! for; the assets are embedded ([`assets`]); the JSON and event-stream API is in `API.md`.
//!
//! Decisions:
//! - Every request passes [`guard::Guard`] (Host; Origin for writes), then the backend's
//!   [`Backend::session`]: assets and the backend's own `/auth/*` routes need no session,
//!   everything else does; a write also needs the session's CSRF token.
//! - Every response carries a Content-Security-Policy without inline scripts, `nosniff`,
//!   `no-referrer` and frame denial; API answers and pages are `no-store` (they hold fleet
//!   data), assets are revalidated by ETag.
//! - Answers are gzip-compressed when the browser accepts it, except the event stream.
//! - A hub error keeps its meaning: not found is 404, permission denied 403, a bad request
//!   400, the hub unreachable 503; the body says what the hub said.

mod api;
mod assets;

pub use api::error;
pub mod fleet;
pub mod guard;
pub mod oidc;
pub mod promotion;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use convoy_shared::proto::fleet_service_client::FleetServiceClient;
use serde::Serialize;
use tonic::codegen::StdError;
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

/// The Content-Security-Policy of every answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// How the dashboard reaches the fleet API: a gRPC channel to the hub, or the hub's own service
/// in process.
pub type Transport =
    BoxCloneSyncService<http::Request<tonic::body::Body>, http::Response<tonic::body::Body>, TransportError>;

/// Why the fleet API could not be reached (a concrete type: the client's bounds need one).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TransportError(#[from] pub StdError);

/// A fleet API client over any [`Transport`].
pub type Client = FleetServiceClient<Transport>;

/// A client over a gRPC channel to the hub.
pub fn channel_client(channel: tonic::transport::Channel) -> Client {
    FleetServiceClient::new(BoxCloneSyncService::new(channel.map_err(|e| TransportError(e.into()))))
}

/// One request's view of the hub: a client acting as the user, and the CSRF token their
/// writes must carry.
#[derive(Clone)]
pub struct Session {
    pub client: Client,
    pub csrf_token: String,
}

/// Who a request acts for.
pub trait Backend: Send + Sync + 'static {
    /// The session `request` belongs to, or why it has none.
    fn session(&self, request: &http::request::Parts) -> Result<Session, NoSession>;

    /// Where the page's sign-out button posts, when the backend signs people in.
    fn sign_out(&self) -> Option<&'static str> {
        None
    }
}

/// Why a request has no session: a page goes to `sign_in` (and comes back after), an API call
/// answers 401 with the reason and where to sign in.
#[derive(Debug, Clone)]
pub struct NoSession {
    pub why: String,
    /// The backend's sign-in path; it takes `?next=PATH`.
    pub sign_in: &'static str,
}

impl NoSession {
    fn answer(self, path: &str, query: Option<&str>) -> Response {
        if path.starts_with("/api/") {
            let body = serde_json::json!({ "error": self.why, "login": self.sign_in });
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
        let next = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let mut to = reqwest::Url::parse("https://dashboard.invalid/").expect("a static URL");
        to.query_pairs_mut().append_pair("next", &next);
        let location = format!("{}?{}", self.sign_in, to.query().unwrap_or_default());
        (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
    }
}

/// Why [`admit`] turned a request away.
enum Turned {
    Refused(guard::Refusal),
    NoSession(NoSession),
}

/// Who the dashboard acts as and what the page may offer them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub user: String,
    pub role: String,
    /// May try to pause, resume, approve, abort, roll back and release (the hub's access
    /// policy has the last word).
    pub can_act: bool,
    /// Why not, when it may not.
    pub why_not: String,
    pub csrf_token: String,
    pub hub: String,
    pub version: &'static str,
    /// Where to post to sign out (empty: the dashboard does not sign people in).
    pub sign_out: String,
}

impl Me {
    /// What `whoami` answered, for the page: buttons are enabled where some rule allows a
    /// rollout action or a rollback; the hub still decides each one (and says why not) for the
    /// environment and app it is about.
    pub fn new(who: convoy_shared::proto::WhoAmIResponse, csrf_token: String, hub: &str, sign_out: &str) -> Me {
        let can_act = who.may.iter().any(|l| l.starts_with("rollout:") || l.starts_with("rollback:"));
        let why_not = match (can_act, who.certificate_role.as_str()) {
            (true, _) => String::new(),
            (false, "admin" | "viewer") => format!(
                "{} certificates may not pause, resume, approve, abort, roll back or release: ask an admin",
                who.certificate_role
            ),
            (false, _) => "your roles allow no rollout actions or rollbacks (spec.access in convoy.yaml): ask a platform admin for one".into(),
        };
        Me {
            user: who.user,
            role: who.certificate_role,
            can_act,
            why_not,
            csrf_token,
            hub: hub.to_string(),
            version: convoy_shared::VERSION,
            sign_out: sign_out.to_string(),
        }
    }
}

/// What every handler shares.
pub struct Ui {
    backend: Box<dyn Backend>,
    guard: guard::Guard,
    /// The hub's address, for the page's title.
    hub: String,
}

impl Ui {
    /// A dashboard for `hub` whose requests `backend` authenticates, answering at `guard`'s
    /// origin.
    pub fn new(backend: impl Backend, guard: guard::Guard, hub: &str) -> Ui {
        Ui { backend: Box::new(backend), guard, hub: hub.to_string() }
    }

    /// The address pages are served from.
    pub fn url(&self) -> &str {
        self.guard.origin()
    }
}

/// The dashboard's routes: pages, assets and the API, with `auth` (the backend's sign-in and
/// sign-out under `/auth/`, served without a session).
pub fn router(ui: Arc<Ui>, auth: Router) -> Router {
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
        .with_state(ui.clone())
        .merge(auth)
        .fallback(api::not_found)
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
        .layer(middleware::from_fn_with_state(ui, guarded))
}

/// Paths served without a session: the embedded assets and the backend's sign-in.
fn sessionless(path: &str) -> bool {
    path.starts_with("/assets/") || path.starts_with("/auth/")
}

/// Refuses what [`guard::Guard`] refuses, finds the request's [`Session`] and sets the security
/// headers of every answer.
async fn guarded(State(ui): State<Arc<Ui>>, request: Request, next: Next) -> Response {
    let (path, query) = (request.uri().path().to_string(), request.uri().query().map(str::to_string));
    let api = path.starts_with("/api/");
    let mut response = match admit(&ui, request) {
        Ok(request) => next.run(request).await,
        Err(Turned::Refused(refusal)) => api::error(StatusCode::FORBIDDEN, refusal.to_string()),
        Err(Turned::NoSession(none)) => none.answer(&path, query.as_deref()),
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

/// The request with its session, or why not.
fn admit(ui: &Ui, request: Request) -> Result<Request, Turned> {
    let refused = Turned::Refused;
    let (mut parts, body) = request.into_parts();
    let h = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    // HTTP/2 names the host in the request's authority, HTTP/1.1 in `Host`.
    let authority = parts.uri.authority().map(|a| a.as_str());
    ui.guard.host(h(header::HOST.as_str()).or(authority)).map_err(refused)?;
    let write = !matches!(parts.method, http::Method::GET | http::Method::HEAD);
    if write {
        ui.guard.origin_of(h(header::ORIGIN.as_str())).map_err(refused)?;
    }
    if !sessionless(parts.uri.path()) {
        let session = ui.backend.session(&parts).map_err(Turned::NoSession)?;
        if write {
            guard::csrf(h(guard::CSRF_HEADER), &session.csrf_token).map_err(refused)?;
        }
        parts.extensions.insert(session);
    }
    Ok(Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_shared::proto::WhoAmIResponse;

    fn me(role: &str, may: &[&str]) -> Me {
        let who = WhoAmIResponse {
            user: "u".into(),
            certificate_role: role.into(),
            may: may.iter().map(|l| l.to_string()).collect(),
            ..Default::default()
        };
        Me::new(who, "token".into(), "hub:7443", "")
    }

    #[test]
    fn the_buttons_follow_what_the_policy_lets_the_user_do() {
        let scoped = ["view: apps web in environments dev", "rollout: apps web in environments dev"];
        assert!(me("member", &scoped).can_act);
        let viewing = ["view: every app in every environment"];
        let member = me("member", &viewing);
        assert!(!member.can_act && member.why_not.contains("spec.access"), "{}", member.why_not);
        let viewer = me("viewer", &viewing);
        assert!(!viewer.can_act && viewer.why_not.starts_with("viewer certificates may not"), "{}", viewer.why_not);
        assert!(
            me("admin", &["admin: every app in every environment", "rollback: every app in every environment"]).can_act
        );
    }

    #[test]
    fn a_page_without_a_session_goes_to_sign_in_and_an_api_call_is_told_to() {
        let none = || NoSession { why: "sign in first".into(), sign_in: "/auth/login" };
        let page = none().answer("/clusters/dev-1", Some("tab=drift"));
        assert_eq!(page.status(), StatusCode::SEE_OTHER);
        assert_eq!(page.headers()[header::LOCATION], "/auth/login?next=%2Fclusters%2Fdev-1%3Ftab%3Ddrift");
        let api = none().answer("/api/clusters", None);
        assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    }
}
