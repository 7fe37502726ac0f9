//! The dashboard's JSON and event-stream API (`API.md`): each handler asks the fleet API as the
//! request's user (its [`Session`]) and answers what the page shows, no more.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use convoy_shared::proto::*;
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Me, Session, Ui, fleet, promotion};

/// The API's answer to an error: its status and `{"error": message}`.
pub fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A hub call that failed, as the page should see it.
pub struct Failure(tonic::Status);

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        Failure(s)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        use tonic::Code;
        let status = match self.0.code() {
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::PermissionDenied | Code::Unauthenticated => StatusCode::FORBIDDEN,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange | Code::AlreadyExists => {
                StatusCode::BAD_REQUEST
            }
            Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        error(status, convoy_shared::link_error::explain(&self.0))
    }
}

type Answer<T> = Result<Json<T>, Failure>;

pub async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page or API: the dashboard starts at /".into())
}

pub async fn me(State(ui): State<Arc<Ui>>, Extension(session): Extension<Session>) -> Answer<Me> {
    let who = session.client.clone().who_am_i(WhoAmIRequest {}).await?.into_inner();
    Ok(Json(Me::new(who, session.csrf_token, &ui.hub, ui.backend.sign_out().unwrap_or_default())))
}

#[derive(Serialize)]
pub struct Envs {
    environments: Vec<EnvironmentInfo>,
    errors: Vec<String>,
    rollouts: Vec<RolloutInfo>,
}

pub async fn envs(Extension(session): Extension<Session>) -> Answer<Envs> {
    let (mut a, mut b) = (session.client.clone(), session.client.clone());
    let (envs, rollouts) = tokio::try_join!(a.envs(EnvsRequest {}), b.rollout_status(RolloutStatusRequest::default()))?;
    let EnvsResponse { environments, errors } = envs.into_inner();
    Ok(Json(Envs { environments, errors, rollouts: rollouts.into_inner().rollouts }))
}

pub async fn clusters(
    Extension(session): Extension<Session>,
    Query(query): Query<fleet::Query>,
) -> Answer<fleet::Page> {
    let (mut a, mut b) = (session.client.clone(), session.client.clone());
    let (list, envs) = tokio::try_join!(a.list_clusters(ListClustersRequest {}), b.envs(EnvsRequest {}))?;
    let order: Vec<String> = envs.into_inner().environments.into_iter().map(|e| e.name).collect();
    Ok(Json(query.page(list.into_inner().clusters, &order)))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    cluster: fleet::Row,
    apps: Vec<AppHealth>,
    errors: Vec<String>,
    drifts: Vec<Drift>,
    history: Vec<HistoryEntry>,
    certificate: Certificate,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    /// When the agent's certificate expires (0: unknown, e.g. never connected to this hub).
    not_after_unix_ms: i64,
}

pub async fn cluster(Extension(session): Extension<Session>, Path(name): Path<String>) -> Answer<Cluster> {
    let (mut a, mut b, mut c) = (session.client.clone(), session.client.clone(), session.client.clone());
    let (status, drift, history) = tokio::try_join!(
        a.status(StatusRequest { cluster: name.clone() }),
        b.drift(DriftRequest { cluster: name.clone() }),
        c.history(HistoryRequest { cluster: name.clone(), limit: 50 }),
    )?;
    let status = status.into_inner().clusters.pop();
    let Some(ClusterStatus { cluster: Some(info), apps, errors }) = status else {
        return Err(tonic::Status::not_found(format!("unknown cluster '{name}'")).into());
    };
    let drifts = drift.into_inner().clusters.into_iter().flat_map(|d| d.drifts).collect();
    let certificate = Certificate { not_after_unix_ms: info.cert_not_after_unix_ms };
    let state = fleet::state(&info);
    Ok(Json(Cluster {
        cluster: fleet::Row { cluster: info, state },
        apps,
        errors,
        drifts,
        history: history.into_inner().entries,
        certificate,
    }))
}

#[derive(Serialize)]
pub struct App {
    app: String,
    clusters: Vec<AppPlacement>,
}

pub async fn app(Extension(session): Extension<Session>, Path(name): Path<String>) -> Answer<App> {
    let reply = session.client.clone().app(AppRequest { name, cluster: String::new() }).await?.into_inner();
    Ok(Json(App { app: reply.name, clusters: reply.clusters }))
}

#[derive(Deserialize)]
pub struct ClusterQuery {
    cluster: String,
}

#[derive(Serialize)]
pub struct AppObjects {
    app: String,
    cluster: String,
    /// The commit the cluster's assignment comes from.
    revision: String,
    objects: Vec<RenderedObject>,
}

pub async fn app_objects(
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Query(q): Query<ClusterQuery>,
) -> Answer<AppObjects> {
    let reply = session.client.clone().app(AppRequest { name, cluster: q.cluster }).await?.into_inner();
    let revision = reply.clusters.iter().find(|c| c.cluster == reply.cluster).map(|c| c.revision.clone());
    Ok(Json(AppObjects {
        app: reply.name,
        cluster: reply.cluster,
        revision: revision.unwrap_or_default(),
        objects: reply.objects,
    }))
}

#[derive(Deserialize)]
pub struct PairQuery {
    from: String,
    to: String,
}

#[derive(Serialize)]
pub struct Verdict {
    ok: bool,
    message: String,
}

#[derive(Serialize)]
pub struct Promotion {
    verdict: Verdict,
    command: String,
    diff: DiffResponse,
}

pub async fn promotion(Extension(session): Extension<Session>, Query(q): Query<PairQuery>) -> Answer<Promotion> {
    let (mut a, mut b) = (session.client.clone(), session.client.clone());
    let request = DiffRequest { from_env: q.from.clone(), to_env: q.to.clone() };
    let (envs, diff) = tokio::try_join!(a.envs(EnvsRequest {}), b.diff(request))?;
    let verdict = match promotion::gate(&envs.into_inner(), &q.from, &q.to, false) {
        Ok(p) => Verdict { ok: true, message: p.message },
        Err(refusal) => Verdict { ok: false, message: refusal.to_string() },
    };
    Ok(Json(Promotion { verdict, command: format!("convoy promote {} {}", q.from, q.to), diff: diff.into_inner() }))
}

pub async fn rollouts(Extension(session): Extension<Session>) -> Answer<RolloutStatusResponse> {
    Ok(Json(session.client.clone().rollout_status(RolloutStatusRequest::default()).await?.into_inner()))
}

#[derive(Deserialize)]
pub struct ActionBody {
    environment: String,
    action: String,
    #[serde(default)]
    app: String,
    #[serde(default)]
    reason: String,
}

pub async fn rollout_action(
    Extension(session): Extension<Session>,
    Json(body): Json<ActionBody>,
) -> Answer<RolloutActionResponse> {
    let request =
        RolloutActionRequest { environment: body.environment, action: body.action, app: body.app, reason: body.reason };
    Ok(Json(session.client.clone().rollout_action(request).await?.into_inner()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackBody {
    environment: String,
    #[serde(default)]
    to_revision: String,
    #[serde(default)]
    release: bool,
}

pub async fn rollback(
    Extension(session): Extension<Session>,
    Json(body): Json<RollbackBody>,
) -> Answer<RollbackResponse> {
    let request =
        RollbackRequest { environment: body.environment, to_revision: body.to_revision, release: body.release };
    Ok(Json(session.client.clone().rollback(request).await?.into_inner()))
}

/// The hub's event stream, one `fleet` event per hub event; a hub error ends it (the browser's
/// EventSource reconnects by itself).
pub async fn events(
    Extension(session): Extension<Session>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Failure> {
    let stream = session.client.clone().watch(WatchRequest {}).await?.into_inner();
    let events = stream.take_while(|e| std::future::ready(e.is_ok())).filter_map(|e| async move {
        let event = e.ok()?;
        let data = serde_json::to_string(&event).unwrap_or_else(|_| Value::Null.to_string());
        Some(Ok(Event::default().event("fleet").data(data)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keep-alive")))
}
