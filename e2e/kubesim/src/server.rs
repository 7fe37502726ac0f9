//! The HTTPS front of one simulated cluster: TLS accept loop, bearer-token auth, fault
//! injection, and routing of Kubernetes API paths to discovery, CRUD, patch and watch.

use super::cluster::{ClusterState, ListOptions, PatchType, WriteOptions, manager_from_user_agent};
use super::faults::{ErrorKind, Verdict};
use super::resources::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::status_error::{ApiError, Result};
use super::{protobuf, table, watch};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// What every request handler of one cluster shares.
pub struct App {
    /// The cluster behind this listener.
    pub state: Arc<ClusterState>,
    /// The bearer token clients must present.
    pub token: String,
    /// `host:port` advertised in `/api`.
    pub server_addr: String,
    /// Ends watch streams on shutdown.
    pub cancel: CancellationToken,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (code, json_body(&self.to_status())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

fn json_body(v: &Value) -> impl IntoResponse + use<> {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], v.to_string())
}

fn ok_json(code: StatusCode, v: &Value) -> Response {
    (code, json_body(v)).into_response()
}

/// Serves one cluster on an already-bound listener until `cancel` fires. In a Refuse-mode
/// outage the listener is closed and re-bound on the same address afterwards.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, app: Arc<App>, cancel: CancellationToken) {
    let router = axum::Router::new().fallback(handle).with_state(app.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let addr = listener.local_addr().ok();
    let mut listener = Some(listener);
    let mut outages = app.state.faults.listener_epoch();
    // Connections are dropped on Refuse outages and on shutdown.
    let conn_cancel = CancellationToken::new();
    let mut conn_cancel_epoch = conn_cancel.child_token();
    loop {
        if let Some(until) = app.state.faults.refusing_until() {
            listener = None;
            conn_cancel_epoch.cancel();
            conn_cancel_epoch = conn_cancel.child_token();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = outages.changed() => {}
            }
            continue;
        }
        if listener.is_none() {
            let Some(a) = addr else { return };
            match TcpListener::bind(a).await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::warn!(cluster = %app.state.name, error = %e, "re-binding after outage");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let l = listener.as_ref().expect("bound above");
        let (tcp, _) = tokio::select! {
            _ = cancel.cancelled() => { conn_cancel.cancel(); return; }
            _ = outages.changed() => continue,
            r = l.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let conn_token = conn_cancel_epoch.clone();
        let cluster = app.state.name.clone();
        tokio::spawn(
            async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(router);
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = conn_token.cancelled() => {}
                }
            }
            .instrument(tracing::debug_span!("kubesim_conn", cluster = %cluster)),
        );
    }
}

/// A parsed API path.
#[derive(Debug, PartialEq)]
enum Route {
    Version,
    Health,
    ApiRoot,
    ApisRoot,
    Group(String),
    GroupVersion(String, String),
    OpenApiV2,
    OpenApiV3Index,
    OpenApiV3(String, String),
    Resource { group: String, version: String, ns: Option<String>, plural: String, name: Option<String>, sub: String },
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    match segs.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "livez" | "readyz"] => return Some(Route::Health),
        ["api"] => return Some(Route::ApiRoot),
        ["apis"] => return Some(Route::ApisRoot),
        ["apis", g] => return Some(Route::Group(g.to_string())),
        ["api", v] => return Some(Route::GroupVersion(String::new(), v.to_string())),
        ["apis", g, v] => return Some(Route::GroupVersion(g.to_string(), v.to_string())),
        ["openapi", "v2"] => return Some(Route::OpenApiV2),
        ["openapi", "v3"] => return Some(Route::OpenApiV3Index),
        ["openapi", "v3", "api", v] => return Some(Route::OpenApiV3(String::new(), v.to_string())),
        ["openapi", "v3", "apis", g, v] => {
            return Some(Route::OpenApiV3(g.to_string(), v.to_string()));
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), s(rest)),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), s(rest)),
        _ => return None,
    };
    let r = |ns: Option<&String>, plural: &String, name: Option<&String>, sub: Option<&String>| {
        Some(Route::Resource {
            group: group.clone(),
            version: version.clone(),
            ns: ns.cloned(),
            plural: plural.clone(),
            name: name.cloned(),
            sub: sub.cloned().unwrap_or_default(),
        })
    };
    match rest.as_slice() {
        [ns_kw, ns, plural] if ns_kw == "namespaces" && plural != "status" && plural != "finalize" => {
            r(Some(ns), plural, None, None)
        }
        [ns_kw, ns, plural, name] if ns_kw == "namespaces" => r(Some(ns), plural, Some(name), None),
        [ns_kw, ns, plural, name, sub] if ns_kw == "namespaces" => r(Some(ns), plural, Some(name), Some(sub)),
        [plural] => r(None, plural, None, None),
        [plural, name] => r(None, plural, Some(name), None),
        [plural, name, sub] => r(None, plural, Some(name), Some(sub)),
        _ => None,
    }
}

async fn handle(State(app): State<Arc<App>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == app.token);
    if !authorized {
        return ApiError::new(401, "Unauthorized", "Unauthorized").into_response();
    }
    // Admin requests bypass fault injection, so faults can always be cleared.
    if uri.path().starts_with("/kubesim/") {
        return admin(&app, &method, uri.path(), &body).unwrap_or_else(|e| e.into_response());
    }
    // A Refuse-mode outage drops every connection (the accept loop cancels them). A request that
    // raced its start on a kept-alive connection waits here to be dropped with its connection,
    // as a server that went away would, rather than answering 503.
    if app.state.faults.refusing_until().is_some() {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    match app.state.faults.verdict() {
        Verdict::Unavailable => {
            return ApiError::new(503, "ServiceUnavailable", "the server is currently unable to handle the request")
                .into_response();
        }
        Verdict::Fail(latency, kind) => {
            tokio::time::sleep(latency).await;
            return match kind {
                ErrorKind::Internal => {
                    ApiError::new(500, "InternalError", "Internal error occurred: injected fault").into_response()
                }
                ErrorKind::TooManyRequests => {
                    let mut e = ApiError::new(429, "TooManyRequests", "Too many requests, please try again later.");
                    e.details = Some(Box::new(json!({"retryAfterSeconds": 1})));
                    e.retry_after = Some(1);
                    e.into_response()
                }
            };
        }
        Verdict::Serve(latency) => {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
        }
    }
    match dispatch(&app, &method, &uri, &headers, &body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn accept(headers: &HeaderMap) -> String {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

fn dispatch(app: &Arc<App>, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Result<Response> {
    let Some(route) = route(uri.path()) else {
        return Err(ApiError::path_not_found());
    };
    let types = app.state.types();
    // Below a group nobody serves, kube-apiserver has no API handler at all: its mux answers.
    let unserved_group = match &route {
        Route::Group(g) | Route::GroupVersion(g, _) | Route::Resource { group: g, .. } => {
            !g.is_empty() && !types.iter().any(|t| &t.group == g)
        }
        _ => false,
    };
    if unserved_group {
        return Ok(page_not_found());
    }
    let accept = accept(headers);
    let aggregated = accept.contains("as=APIGroupDiscoveryList");
    match route {
        Route::Version => Ok(ok_json(
            StatusCode::OK,
            &json!({"major": "1", "minor": "36", "emulationMajor": "1", "emulationMinor": "36",
                "minCompatibilityMajor": "1", "minCompatibilityMinor": "35",
                "gitVersion": "v1.36.0-kubesim", "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0",
                "compiler": "gc", "platform": "linux/amd64"}),
        )),
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::ApiRoot | Route::ApisRoot if aggregated => {
            let doc = resources::aggregated(&types, route == Route::ApiRoot);
            let mut r = (StatusCode::OK, doc.to_string()).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(resources::AGGREGATED_CONTENT_TYPE));
            Ok(r)
        }
        Route::ApiRoot => Ok(ok_json(StatusCode::OK, &resources::api_versions(&app.server_addr))),
        Route::ApisRoot => Ok(ok_json(StatusCode::OK, &resources::api_group_list(&types))),
        Route::Group(g) => {
            let list = resources::api_group_list(&types);
            let group = list["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|x| x["name"] == g.as_str()))
                .cloned()
                .ok_or_else(ApiError::path_not_found)?;
            let mut doc = group;
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            Ok(ok_json(StatusCode::OK, &doc))
        }
        Route::GroupVersion(g, v) => resources::api_resource_list(&types, &g, &v)
            .map(|d| ok_json(StatusCode::OK, &d))
            .ok_or_else(ApiError::path_not_found),
        Route::OpenApiV2 => Err(ApiError::path_not_found()),
        Route::OpenApiV3Index => Ok(ok_json(StatusCode::OK, &resources::openapi_v3_index(&types))),
        Route::OpenApiV3(g, v) => resources::openapi_v3_group_version(&types, &g, &v)
            .map(|d| ok_json(StatusCode::OK, &d))
            .ok_or_else(ApiError::path_not_found),
        Route::Resource { group, version, ns, plural, name, sub } => {
            let rt = types
                .iter()
                .find(|t| t.group == group && t.version == version && t.plural == plural)
                .cloned()
                .ok_or_else(ApiError::path_not_found)?;
            let query: HashMap<String, String> = Query::try_from_uri(uri).map(|Query(q)| q).unwrap_or_default();
            let request = ResourceRequest { rt, ns, name, sub, query, headers, body, accept: &accept };
            resource(app, method, request)
        }
    }
}

/// The plain-text 404 of Go's HTTP mux, for paths no API handler claims.
fn page_not_found() -> Response {
    let content_type = HeaderValue::from_static("text/plain; charset=utf-8");
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, content_type)], "404 page not found\n").into_response()
}

/// The admin endpoints (same listener and token as the API):
/// `POST /kubesim/faults` with `{"latencyMs", "errorRate", "errorKind": "500"|"429",
/// "outageMs", "outageMode": "unavailable"|"refuse", "dropWatches", "clear"}` and
/// `POST /kubesim/autoscale` with `{"namespace", "name", "replicas"}`.
fn admin(app: &Arc<App>, method: &Method, path: &str, body: &Bytes) -> Result<Response> {
    if method != Method::POST {
        return Err(ApiError::method_not_allowed("kubesim admin endpoints take POST"));
    }
    let b = parse_body(body)?;
    let faults = &app.state.faults;
    match path {
        "/kubesim/faults" => {
            if b.get("clear") == Some(&json!(true)) {
                faults.clear();
            }
            if let Some(ms) = b.get("latencyMs").and_then(Value::as_u64) {
                faults.set_latency(Duration::from_millis(ms));
            }
            if let Some(rate) = b.get("errorRate").and_then(Value::as_f64) {
                let kind = match b.get("errorKind").and_then(Value::as_str) {
                    Some("429") => ErrorKind::TooManyRequests,
                    _ => ErrorKind::Internal,
                };
                faults.set_error_rate(rate, kind);
            }
            if let Some(ms) = b.get("outageMs").and_then(Value::as_u64) {
                let mode = match b.get("outageMode").and_then(Value::as_str) {
                    Some("refuse") => super::faults::OutageMode::Refuse,
                    _ => super::faults::OutageMode::Unavailable,
                };
                faults.outage(Duration::from_millis(ms), mode);
            }
            if b.get("dropWatches") == Some(&json!(true)) {
                faults.drop_watches();
            }
            Ok(ok_json(StatusCode::OK, &json!({"status": "ok"})))
        }
        "/kubesim/autoscale" => {
            let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("");
            let replicas = b
                .get("replicas")
                .and_then(Value::as_i64)
                .ok_or_else(|| ApiError::bad_request("replicas is required"))?;
            let rt = app.state.resolve("apps", "v1", "deployments").ok_or_else(ApiError::path_not_found)?;
            let opts = WriteOptions { manager: "kube-controller-manager".into(), ..Default::default() };
            let scale = app.state.set_scale(&rt, Some(s("namespace")), s("name"), replicas, &opts)?;
            Ok(ok_json(StatusCode::OK, &scale))
        }
        _ => Err(ApiError::path_not_found()),
    }
}

fn parse_body(body: &Bytes) -> Result<Value> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is neither JSON nor YAML text"))?;
    serde_saphyr::from_str::<Value>(text).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

/// A Kubernetes protobuf body as the JSON object a JSON client would have sent.
fn protobuf_body(body: &Bytes) -> Result<Value> {
    protobuf::decode(body).map_err(|e| {
        let reason = if e.http_code() == 415 { "UnsupportedMediaType" } else { "BadRequest" };
        ApiError::new(e.http_code(), reason, e.to_string())
    })
}

fn list_options(q: &HashMap<String, String>) -> Result<ListOptions> {
    Ok(ListOptions {
        labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        fields: FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        limit: q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0),
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

/// A request on a resource path: the route's parts with their resource type resolved, and the
/// query, headers and body the handlers read.
struct ResourceRequest<'a> {
    rt: Arc<ResourceType>,
    ns: Option<String>,
    name: Option<String>,
    /// "", "status" or "scale".
    sub: String,
    query: HashMap<String, String>,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    /// The Accept header ("" when absent).
    accept: &'a str,
}

impl ResourceRequest<'_> {
    fn ns(&self) -> Option<&str> {
        self.ns.as_deref()
    }

    /// Is the subresource one this type serves, and is the namespace one it lives in?
    fn check_path(&self) -> Result<()> {
        let rt = &self.rt;
        if self.ns.is_some() && !rt.namespaced {
            return Err(ApiError::path_not_found());
        }
        if !matches!(self.sub.as_str(), "" | "status" | "scale") || (self.sub == "scale" && !rt.has_scale) {
            return Err(ApiError::path_not_found());
        }
        if self.sub == "status" && !rt.has_status {
            return Err(ApiError::path_not_found());
        }
        Ok(())
    }

    /// `Some(includeObject)` when the client asked for a Table.
    fn table_include(&self) -> Option<String> {
        self.accept
            .contains("as=Table")
            .then(|| self.query.get("includeObject").cloned().unwrap_or_else(|| "Metadata".into()))
    }

    /// Field manager (from `fieldManager`, else the user agent), `dryRun` and `force`.
    fn write_options(&self) -> WriteOptions {
        let user_agent = self.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        WriteOptions {
            manager: self.query.get("fieldManager").cloned().unwrap_or_else(|| manager_from_user_agent(user_agent)),
            dry_run: self.query.get("dryRun").is_some_and(|v| v == "All"),
            force: truthy(&self.query, "force"),
        }
    }

    fn content_type(&self) -> &str {
        self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json")
    }

    fn protobuf(&self) -> bool {
        self.content_type().starts_with(protobuf::MEDIA_TYPE) && !self.body.is_empty()
    }

    /// Refuses bodies kubesim cannot read (CBOR, protobuf of another media type).
    fn check_media_type(&self) -> Result<()> {
        let content_type = self.content_type();
        if content_type.contains("cbor") || (content_type.contains("protobuf") && !self.protobuf()) {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - kubesim accepts JSON, YAML \
                     and Kubernetes protobuf bodies only (got {content_type})"
                ),
            ));
        }
        Ok(())
    }

    /// A create, update or delete body; patches are JSON or YAML by their media type.
    fn request_body(&self) -> Result<Value> {
        if self.protobuf() { protobuf_body(self.body) } else { parse_body(self.body) }
    }
}

fn ok(v: &Value) -> Response {
    ok_json(StatusCode::OK, v)
}

fn created(v: &Value) -> Response {
    ok_json(StatusCode::CREATED, v)
}

/// Serves a request on a resource path by its method.
fn resource(app: &Arc<App>, method: &Method, req: ResourceRequest<'_>) -> Result<Response> {
    req.check_path()?;
    let opts = req.write_options();
    req.check_media_type()?;
    match (method.clone(), req.name.as_deref()) {
        (Method::GET, None) => list_or_watch(app, &req),
        (Method::GET, Some(name)) => get(app, &req, name),
        (Method::POST, None) => Ok(created(&app.state.create(&req.rt, req.ns(), req.request_body()?, &opts)?)),
        (Method::PUT, Some(name)) => put(app, &req, name, &opts),
        (Method::PATCH, Some(name)) => patch(app, &req, name, &opts),
        (Method::DELETE, name) => delete(app, &req, name, &opts),
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
}

/// GET on a collection: a watch stream with `watch=true`, else a list (or its Table).
fn list_or_watch(app: &Arc<App>, req: &ResourceRequest<'_>) -> Result<Response> {
    let state = &app.state;
    let q = &req.query;
    let lo = list_options(q)?;
    if truthy(q, "watch") {
        let params = watch::WatchParams {
            resource_version: q.get("resourceVersion").cloned().unwrap_or_default(),
            bookmarks: truthy(q, "allowWatchBookmarks"),
            timeout: q.get("timeoutSeconds").and_then(|t| t.parse().ok()).map(Duration::from_secs),
            send_initial_events: truthy(q, "sendInitialEvents"),
            table: req.table_include(),
        };
        let body = watch::start(state.clone(), req.rt.clone(), req.ns.clone(), lo, params, app.cancel.clone())?;
        let mut r = Response::new(body);
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(r);
    }
    if let Some(asked) = q.get("resourceVersion").and_then(|rv| rv.parse::<u64>().ok()) {
        let current = state.resource_version();
        if asked > current {
            return Err(ApiError::resource_version_too_large(asked, current));
        }
    }
    let mut list = state.list(&req.rt, req.ns(), &lo)?;
    match req.table_include() {
        Some(inc) => {
            let items = list["items"].as_array().cloned().unwrap_or_default();
            Ok(ok(&table::table(&req.rt, &items, list["metadata"].clone(), &inc)))
        }
        None => {
            // As kube-apiserver does: the items of a built-in kind's list carry no apiVersion
            // and kind (a custom resource's do); clients fill them in from the list.
            if req.rt.schema == crate::fields::Schema::Builtin {
                for item in list["items"].as_array_mut().into_iter().flatten() {
                    if let Some(item) = item.as_object_mut() {
                        item.remove("apiVersion");
                        item.remove("kind");
                    }
                }
            }
            Ok(ok(&list))
        }
    }
}

/// GET on one object (or its scale), or its Table.
fn get(app: &Arc<App>, req: &ResourceRequest<'_>, name: &str) -> Result<Response> {
    let (state, rt, ns) = (&app.state, &req.rt, req.ns());
    if req.sub == "scale" {
        return Ok(ok(&state.get_scale(rt, ns, name)?));
    }
    let o = state.get(rt, ns, name)?;
    match req.table_include() {
        Some(inc) => Ok(ok(&table::table(
            rt,
            std::slice::from_ref(&o),
            json!({"resourceVersion": o["metadata"]["resourceVersion"]}),
            &inc,
        ))),
        None => Ok(ok(&o)),
    }
}

/// PUT: replace an object, its status or its scale.
fn put(app: &Arc<App>, req: &ResourceRequest<'_>, name: &str, opts: &WriteOptions) -> Result<Response> {
    let (state, rt, ns) = (&app.state, &req.rt, req.ns());
    let b = req.request_body()?;
    if req.sub == "scale" {
        let replicas = b
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| ApiError::bad_request("spec.replicas is required"))?;
        return Ok(ok(&state.set_scale(rt, ns, name, replicas, opts)?));
    }
    Ok(ok(&state.update(rt, ns, name, b, &req.sub, opts)?))
}

/// The patch flavour named by a PATCH request's media type.
fn patch_type(content_type: &str) -> Result<PatchType> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    match ct {
        "application/apply-patch+yaml" => Ok(PatchType::Apply),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other})"
            ),
        )),
    }
}

/// PATCH an object (201 when a server-side apply created it), its status or its scale.
fn patch(app: &Arc<App>, req: &ResourceRequest<'_>, name: &str, opts: &WriteOptions) -> Result<Response> {
    let (state, rt, ns) = (&app.state, &req.rt, req.ns());
    let kind = patch_type(req.content_type())?;
    let b = parse_body(req.body)?;
    if req.sub == "scale" {
        let mut scale = state.get_scale(rt, ns, name)?;
        match kind {
            PatchType::Json => {
                super::patch::json_patch(&mut scale, &b).map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?
            }
            _ => super::patch::merge_patch(&mut scale, &b),
        }
        let replicas = scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        return Ok(ok(&state.set_scale(rt, ns, name, replicas, opts)?));
    }
    let existed = state.get(rt, ns, name).is_ok();
    let out = state.patch(rt, ns, name, kind, b, &req.sub, opts)?;
    if kind == PatchType::Apply && !existed { Ok(created(&out)) } else { Ok(ok(&out)) }
}

/// DELETE one object, or the collection (by the list's selectors); `Orphan` keeps dependents.
fn delete(app: &Arc<App>, req: &ResourceRequest<'_>, name: Option<&str>, opts: &WriteOptions) -> Result<Response> {
    let (state, rt, ns, q) = (&app.state, &req.rt, req.ns(), &req.query);
    let b = req.request_body()?;
    let policy = q
        .get("propagationPolicy")
        .cloned()
        .or_else(|| b.get("propagationPolicy").and_then(Value::as_str).map(str::to_string));
    let orphan = policy.as_deref() == Some("Orphan") || b.get("orphanDependents") == Some(&json!(true));
    let dry_run =
        opts.dry_run || b.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == "All"));
    match name {
        Some(name) => Ok(ok(&state.delete(rt, ns, name, dry_run, orphan)?)),
        None => Ok(ok(&state.delete_collection(rt, ns, &list_options(q)?, dry_run)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/api/v1"), Some(Route::GroupVersion("".into(), "v1".into())));
        for (path, group, ns, plural, name, sub) in [
            ("/api/v1/namespaces/default/configmaps/x", "", Some("default"), "configmaps", "x", ""),
            ("/api/v1/namespaces/web", "", None, "namespaces", "web", ""),
            ("/api/v1/namespaces/web/status", "", None, "namespaces", "web", "status"),
            ("/apis/apps/v1/namespaces/a/deployments/b/scale", "apps", Some("a"), "deployments", "b", "scale"),
        ] {
            let want = Route::Resource {
                group: group.into(),
                version: "v1".into(),
                ns: ns.map(Into::into),
                plural: plural.into(),
                name: Some(name.into()),
                sub: sub.into(),
            };
            assert_eq!(route(path), Some(want), "{path}");
        }
    }
}
