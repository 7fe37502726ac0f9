//! The web dashboard served by the hub (`convoy-hub serve --ui-listen`): browsers sign in
//! through the hub's OpenID provider into a session, and every request then calls the hub's own
//! fleet API in process as that person (a member certificate's identity with the token's
//! groups), so the access policy, revocation and the audit apply exactly as to `convoy login`'s
//! certificate. The pages and API are [`convoy_web`]'s, the same as `convoy ui`'s.
//!
//! Decisions:
//! - The session is the cookie `__Host-convoy-session` (HttpOnly, Secure, SameSite=Strict,
//!   Path=/): the user, groups, start and end, signed with HMAC-SHA256 under a key derived from
//!   the hub's serving key. Nothing is stored, so every replica with the same key honours it and
//!   a hub restart signs no one out. It lasts as long as a sign-in certificate (12 h).
//! - `convoy users revoke` ends the sessions started before it, as it refuses certificates
//!   issued before it; the browser then signs in again (the provider decides whether the person
//!   still may). Signing out ends the session in this browser, not at the provider.
//! - The sign-in's state, nonce and PKCE verifier wait 10 minutes in a second signed cookie,
//!   `__Host-convoy-login`, SameSite=Lax so that the provider's redirect back carries it.
//! - The callback answers a page that moves on by itself (a meta refresh): browsers do not send
//!   a Strict cookie on a redirect chain that began on the provider's site.
//! - Where to go after signing in must be a path of the dashboard, else `/`.
//! - Every sign-in, accepted or refused, and every sign-out is audited; a sign-in that cannot be
//!   audited is refused, as `convoy login`'s is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use convoy_shared::identity::{Identity, Role};
use convoy_shared::proto::AuditRecord;
use convoy_shared::proto::fleet_service_client::FleetServiceClient;
use convoy_web::oidc::{ClientId, Provider};
use convoy_web::{Backend, NoSession, Session, TransportError};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

use crate::api::admission::HandshakeLimits;
use crate::api::auth::PeerInfo;
use crate::api::oidc::{Nonce, OidcConfig, OidcVerifier};
use crate::api::registration::SIGN_IN_HOURS;
use crate::api::tls::TlsIncoming;
use crate::state::hub::Hub;

const SESSION_COOKIE: &str = "__Host-convoy-session";
const LOGIN_COOKIE: &str = "__Host-convoy-login";
/// How long a person may take at the provider.
const LOGIN_WAIT: Duration = Duration::from_secs(600);
const LOGIN_PATH: &str = "/auth/login";
const SIGNED_OUT_PATH: &str = "/auth/signed-out";

/// How the hub serves the dashboard.
pub struct DashboardConfig {
    pub listener: tokio::net::TcpListener,
    /// TLS without client certificates (browsers present none).
    pub tls: Arc<rustls::ServerConfig>,
    /// Where browsers reach it (`--ui-url`; default `https://` and the listen address).
    pub url: reqwest::Url,
    /// The provider, and the client id registered for the dashboard (its tokens' audience).
    pub oidc: OidcConfig,
    /// That client's secret, for a confidential client.
    pub client_secret: Option<String>,
    /// Signs sessions; derive it with [`session_key`].
    pub session_key: [u8; 32],
}

/// The key sessions are signed with: every replica with the same serving key derives the same.
pub fn session_key(hub_key_pem: &str) -> [u8; 32] {
    Sha256::new().chain_update(b"convoy dashboard sessions v1\0").chain_update(hub_key_pem.as_bytes()).finalize().into()
}

/// A browser's address, from its connection.
#[derive(Debug, Clone, Copy)]
struct Browser(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsIncoming>> for Browser {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsIncoming>) -> Browser {
        Browser(*stream.remote_addr())
    }
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Signed {
    user: String,
    groups: Vec<String>,
    /// Unix seconds.
    since: i64,
    until: i64,
}

/// A sign-in waiting for the provider's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
    until: i64,
}

/// Signs and opens cookie values: `base64url(JSON).base64url(HMAC(purpose.payload))`.
struct Signer([u8; 32]);

impl Signer {
    fn sign<T: Serialize>(&self, purpose: &str, value: &T) -> String {
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("serializable"));
        format!("{payload}.{}", self.mac(purpose, &payload))
    }

    fn mac(&self, purpose: &str, payload: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The value `sign` wrote for `purpose`, if its signature holds.
    fn open<T: for<'de> Deserialize<'de>>(&self, purpose: &str, signed: &str) -> Option<T> {
        let (payload, mac) = signed.split_once('.')?;
        if !convoy_shared::constant_time_eq(self.mac(purpose, payload).as_bytes(), mac.as_bytes()) {
            return None;
        }
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

/// What the hub's dashboard shares between requests.
pub struct Dashboard {
    hub: Arc<Hub>,
    fleet: crate::api::fleet_service::FleetServer,
    verifier: OidcVerifier,
    client: ClientId,
    http: reqwest::Client,
    provider: tokio::sync::OnceCell<Provider>,
    signer: Signer,
    redirect_uri: String,
}

impl Dashboard {
    /// The fleet API as `who`, calling from `addr`.
    fn client(&self, who: &Signed, addr: SocketAddr) -> convoy_web::Client {
        let peer = PeerInfo {
            addr,
            identity: Some(Identity::User { name: who.user.clone(), role: Role::Member }),
            validity: Some(convoy_shared::enrollment::Validity { not_before: who.since, not_after: who.until }),
            groups: who.groups.clone(),
        };
        let fleet = self.fleet.clone();
        let transport = tower::service_fn(move |mut request: http::Request<tonic::body::Body>| {
            request.extensions_mut().insert(peer.clone());
            fleet.clone().oneshot(request)
        });
        let transport = transport.map_response(|r| r.map(tonic::body::Body::new)).map_err(|e| TransportError(e.into()));
        FleetServiceClient::new(BoxCloneSyncService::new(transport))
    }

    async fn provider(&self) -> Result<&Provider, String> {
        let issuer = &self.verifier.config().issuer;
        self.provider.get_or_try_init(|| Provider::discover(&self.http, issuer)).await.map_err(|e| e.to_string())
    }

    async fn audit(&self, who: Option<&Signed>, source: SocketAddr, verb: &str, result: String) -> bool {
        let record = AuditRecord {
            at_unix_ms: convoy_shared::clock::unix_ms(),
            user: who.map(|w| w.user.clone()).unwrap_or_default(),
            groups: who.map(|w| w.groups.clone()).unwrap_or_default(),
            verb: verb.into(),
            target: format!("the dashboard, through {}", self.verifier.config().issuer),
            result,
            source: source.to_string(),
            action: if verb == "sign-in" { "DashboardSignIn" } else { "DashboardSignOut" }.into(),
            ..Default::default()
        };
        match self.hub.access().record(record).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, verb, "a dashboard sign-in or sign-out could not be audited");
                false
            }
        }
    }
}

/// The dashboard's backend: the session cookie names the person.
struct Sessions(Arc<Dashboard>);

impl Backend for Sessions {
    fn session(&self, request: &http::request::Parts) -> Result<Session, NoSession> {
        let dashboard = &self.0;
        let signed: Option<Signed> =
            cookie(&request.headers, SESSION_COOKIE).and_then(|v| dashboard.signer.open("session", v));
        let now = convoy_shared::clock::unix_secs();
        let refusal = match &signed {
            None => "sign in first".to_string(),
            Some(s) if s.until <= now => "your session ended: sign in again".to_string(),
            Some(s) => match dashboard.hub.registry().refuses_user(&s.user, s.since) {
                Some(_) => format!("user '{}' was revoked after this session began: sign in again", s.user),
                None => String::new(),
            },
        };
        let Some(signed) = signed.filter(|_| refusal.is_empty()) else {
            return Err(NoSession { why: refusal, sign_in: LOGIN_PATH });
        };
        let addr = request.extensions.get::<ConnectInfo<Browser>>().map_or(([0, 0, 0, 0], 0).into(), |c| c.0.0);
        let csrf_token = dashboard.signer.mac("csrf", cookie(&request.headers, SESSION_COOKIE).unwrap_or_default());
        Ok(Session { client: dashboard.client(&signed, addr), csrf_token })
    }

    fn sign_out(&self) -> Option<&'static str> {
        Some("/auth/logout")
    }
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

fn set_cookie(name: &str, value: &str, max_age: Duration, same_site: &str) -> HeaderValue {
    let cookie =
        format!("{name}={value}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite={same_site}", max_age.as_secs());
    HeaderValue::from_str(&cookie).expect("cookie values are base64 and dots")
}

/// A path of this dashboard to go to after signing in, else `/`.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && !p.starts_with("/auth/") => {
            p.to_string()
        }
        _ => "/".into(),
    }
}

/// A small page (no script: the CSP allows none inline).
fn page(status: StatusCode, title: &str, body: &str, refresh_to: Option<&str>) -> Response {
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let refresh = refresh_to
        .map_or(String::new(), |to| format!("<meta http-equiv=\"refresh\" content=\"0;url={}\">", escape(to)));
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Convoy: {}</title>{refresh}\
         <link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body><main class=\"auth\"><h1>{}</h1><p>{}</p></main></body></html>",
        escape(title),
        escape(title),
        body
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login(State(d): State<Arc<Dashboard>>, Query(q): Query<LoginQuery>) -> Response {
    let provider = match d.provider().await {
        Ok(provider) => provider,
        Err(e) => {
            tracing::warn!(error = %e, "dashboard sign-in: the provider is unreachable");
            let body =
                "The identity provider cannot be reached; try again in a moment. <a href=\"/auth/login\">Sign in</a>";
            return page(StatusCode::BAD_GATEWAY, "Sign-in unavailable", body, None);
        }
    };
    let sign_in = match provider.authorize(&d.client, &d.redirect_uri) {
        Ok(sign_in) => sign_in,
        Err(e) => return page(StatusCode::BAD_GATEWAY, "Sign-in unavailable", &e.to_string(), None),
    };
    let pending = Pending {
        state: sign_in.state,
        nonce: sign_in.nonce,
        verifier: sign_in.verifier,
        next: local_path(q.next.as_deref()),
        until: convoy_shared::clock::unix_secs() + LOGIN_WAIT.as_secs() as i64,
    };
    let cookie = set_cookie(LOGIN_COOKIE, &d.signer.sign("login", &pending), LOGIN_WAIT, "Lax");
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, sign_in.url.to_string())]).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

async fn callback(
    State(d): State<Arc<Dashboard>>,
    ConnectInfo(Browser(addr)): ConnectInfo<Browser>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let again = "<a href=\"/auth/login\">Sign in again</a>.";
    let pending: Option<Pending> = cookie(&headers, LOGIN_COOKIE).and_then(|v| d.signer.open("login", v));
    let Some(pending) = pending.filter(|p| p.until > convoy_shared::clock::unix_secs()) else {
        let body = format!("This sign-in was not started here, or took longer than 10 minutes. {again}");
        return page(StatusCode::BAD_REQUEST, "Sign-in refused", &body, None);
    };
    let checked = async {
        let code = Provider::code(&params, &pending.state).map_err(|e| e.to_string())?;
        let provider = d.provider().await?;
        let id_token = provider
            .exchange(&d.http, &d.client, &code, &d.redirect_uri, &pending.verifier)
            .await
            .map_err(|e| e.to_string())?;
        d.verifier.verify(&id_token, Nonce::Required(&pending.nonce)).await.map_err(|e| e.to_string())
    };
    let who = match checked.await {
        Ok(who) => who,
        Err(e) => {
            tracing::warn!(peer = %addr, error = %e, "dashboard sign-in refused");
            d.audit(None, addr, "sign-in", format!("denied: {e}")).await;
            let escaped = e.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            return page(StatusCode::FORBIDDEN, "Sign-in refused", &format!("{escaped}. {again}"), None);
        }
    };
    let mut now = convoy_shared::clock::unix_secs();
    if d.hub.registry().refuses_user(&who.user, now).is_some() {
        // Revoked earlier in this very second: a session must begin after the revocation.
        tokio::time::sleep(Duration::from_millis(1000 - (convoy_shared::clock::unix_ms() % 1000) as u64)).await;
        now += 1;
    }
    let lifetime = Duration::from_secs(SIGN_IN_HOURS * 3600);
    let signed = Signed { user: who.user, groups: who.groups, since: now, until: now + lifetime.as_secs() as i64 };
    if !d.audit(Some(&signed), addr, "sign-in", format!("done: a dashboard session until unix {}", signed.until)).await
    {
        let body = "The audit log cannot be written, so no one may sign in now; try again later.";
        return page(StatusCode::SERVICE_UNAVAILABLE, "Sign-in unavailable", body, None);
    }
    tracing::info!(user = signed.user, groups = ?signed.groups, peer = %addr, "signed in to the dashboard");
    let mut response = page(
        StatusCode::OK,
        "Signed in",
        &format!("Signed in. <a href=\"{}\">Continue</a>.", pending.next.replace('"', "%22")),
        Some(&pending.next),
    );
    let headers = response.headers_mut();
    headers
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &d.signer.sign("session", &signed), lifetime, "Strict"));
    headers.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", Duration::ZERO, "Lax"));
    response
}

async fn logout(
    State(d): State<Arc<Dashboard>>,
    ConnectInfo(Browser(addr)): ConnectInfo<Browser>,
    headers: HeaderMap,
) -> Response {
    let signed: Option<Signed> = cookie(&headers, SESSION_COOKIE).and_then(|v| d.signer.open("session", v));
    if let Some(signed) = &signed {
        d.audit(Some(signed), addr, "sign-out", "done".into()).await;
    }
    let mut response = axum::Json(serde_json::json!({ "next": SIGNED_OUT_PATH })).into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", Duration::ZERO, "Strict"));
    response
}

async fn signed_out() -> Response {
    let body = "You are signed out of the Convoy dashboard (the identity provider may still know you). <a href=\"/auth/login\">Sign in again</a>.";
    page(StatusCode::OK, "Signed out", body, None)
}

/// Serves the dashboard until `shutdown`, calling `fleet` as each signed-in person; its TLS
/// handshakes are bounded by `limits` and tracked by `tasks`, as the gRPC endpoint's.
pub async fn serve(
    config: DashboardConfig,
    hub: Arc<Hub>,
    fleet: crate::api::fleet_service::FleetServer,
    limits: HandshakeLimits,
    tasks: tokio_util::task::TaskTracker,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let incoming = TlsIncoming::new(config.listener, config.tls, limits, &tasks, &shutdown)?;
    let url = config.url.as_str().trim_end_matches('/').to_string();
    let client = ClientId { id: config.oidc.client_id.clone(), secret: config.client_secret };
    let dashboard = Arc::new(Dashboard {
        hub,
        fleet,
        verifier: OidcVerifier::new(config.oidc),
        client,
        http: convoy_web::oidc::http_client(),
        provider: tokio::sync::OnceCell::new(),
        signer: Signer(config.session_key),
        redirect_uri: format!("{url}/auth/callback"),
    });
    let auth = Router::new()
        .route(LOGIN_PATH, get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route(SIGNED_OUT_PATH, get(signed_out))
        .with_state(dashboard.clone());
    let guard = convoy_web::guard::Guard::public(&config.url);
    let ui = Arc::new(convoy_web::Ui::new(Sessions(dashboard), guard, &url));
    tracing::info!(url, "dashboard listening");
    let app = convoy_web::router(ui, auth).into_make_service_with_connect_info::<Browser>();
    axum::serve(incoming, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_the_dashboard_are_where_a_sign_in_returns() {
        assert_eq!(local_path(Some("/clusters/dev-1?x=1")), "/clusters/dev-1?x=1");
        for foreign in ["https://evil.example/", "//evil.example/", "/\\evil.example", "/auth/login", "rollouts", ""] {
            assert_eq!(local_path(Some(foreign)), "/", "{foreign}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn a_signed_value_opens_only_unchanged_and_for_its_purpose() {
        let signer = Signer([7; 32]);
        let who = Signed { user: "wendy@example.com".into(), groups: vec!["web-team".into()], since: 1, until: 2 };
        let cookie = signer.sign("session", &who);
        assert_eq!(signer.open::<Signed>("session", &cookie), Some(who.clone()));
        assert_eq!(signer.open::<Signed>("login", &cookie), None, "a login cookie is not a session");
        assert_eq!(Signer([8; 32]).open::<Signed>("session", &cookie), None, "another hub key");
        let (payload, mac) = cookie.split_once('.').unwrap();
        let admin = Signed { groups: vec!["platform-team".into()], ..who };
        let forged = signer.sign("session", &admin);
        let swapped = format!("{}.{mac}", forged.split_once('.').unwrap().0);
        assert_eq!(signer.open::<Signed>("session", &swapped), None, "a changed payload");
        assert_eq!(signer.open::<Signed>("session", payload), None, "no signature");
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; __Host-convoy-session-x=2"));
        headers.append(header::COOKIE, HeaderValue::from_static("__Host-convoy-session=3"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("3"));
        assert_eq!(cookie(&headers, "a"), Some("1"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), None);
        let set = set_cookie(SESSION_COOKIE, "v.s", Duration::from_secs(60), "Strict");
        assert_eq!(set, "__Host-convoy-session=v.s; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Strict");
    }
}
