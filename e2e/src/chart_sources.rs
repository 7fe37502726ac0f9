//! Where remote charts come from in tests, as real servers over real sockets: a static chart
//! repository (python's `http.server` over a directory holding `index.yaml` and `.tgz` files),
//! Debian's `docker-registry` as an OCI registry (anonymous, or with htpasswd basic auth), and a
//! small token-gated registry for the Bearer token flow. Helm's own client (PyPI
//! helm-python-sdk, through `e2e/helm_chart.py`) packages, indexes and pushes the charts.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::harness::{Process, free_port};

/// The Python that has helm-python-sdk: `$CONVOY_PYTHON`, else e2e/.venv's (e2e/peers.sh
/// installs it).
pub fn python() -> PathBuf {
    std::env::var_os("CONVOY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// Runs `e2e/helm_chart.py COMMAND PATH` with `request` on stdin and returns its JSON answer.
pub fn helm_sdk(command: &str, path: &Path, request: Value) -> Value {
    let mut child = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("helm_chart.py"))
        .arg(command)
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs (run e2e/test.sh to install helm-python-sdk into e2e/.venv)");
    child.stdin.take().expect("stdin").write_all(request.to_string().as_bytes()).expect("write the request");
    let out = child.wait_with_output().expect("helm_chart.py runs");
    assert!(out.status.success(), "helm_chart.py {command}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("helm_chart.py answers JSON")
}

/// Like [`helm_sdk`], insisting on `"ok": true`.
pub fn helm_sdk_ok(command: &str, path: &Path, request: Value) -> Value {
    let out = helm_sdk(command, path, request);
    assert_eq!(out["ok"], true, "helm_chart.py {command} {}: {out}", path.display());
    out
}

/// A chart packaged by Helm.
#[derive(Debug, Clone)]
pub struct Packaged {
    pub archive: PathBuf,
    /// `sha256:<hex>`, as Helm computes it.
    pub digest: String,
}

/// `helm package CHART_DIR --destination DEST`.
pub fn package(chart: &Path, destination: &Path) -> Packaged {
    let out = helm_sdk_ok("package", chart, json!({"destination": destination}));
    Packaged {
        archive: PathBuf::from(out["archive"].as_str().expect("archive path")),
        digest: out["digest"].as_str().expect("digest").to_string(),
    }
}

/// A static HTTP chart repository: python's `http.server` serving `dir`. Stops when dropped.
pub struct StaticChartRepo {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    process: Process,
}

impl StaticChartRepo {
    /// Serves `dir` (write `index.yaml` with `helm_sdk("index", dir, …)`).
    pub fn start(dir: &Path) -> Self {
        let mut command = Command::new(python());
        command.args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"]).arg(dir);
        let process = Process::spawn(command);
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let line = process.wait_for_line("Serving HTTP on");
        let port =
            line.split(" port ").nth(1).and_then(|r| r.split_whitespace().next()).expect("the port it serves on");
        StaticChartRepo { url: format!("http://127.0.0.1:{port}"), process }
    }

    /// Serves `dir` over TLS with `cert`/`key` (PEM files), at `https://localhost:PORT`.
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> Self {
        let mut command = Command::new(python());
        command.args(["-u", "-c", HTTPS_SERVER]).arg(dir).arg(cert).arg(key);
        let process = Process::spawn(command);
        let line = process.wait_for_line("Serving HTTPS on");
        let port = line.rsplit(' ').next().expect("the port it serves on");
        StaticChartRepo { url: format!("https://localhost:{port}"), process }
    }

    /// Stops serving (the repository goes down).
    pub fn stop(mut self) {
        self.process.terminate();
    }
}

/// python's static file server behind TLS (`http.server` has no TLS flag before 3.14).
const HTTPS_SERVER: &str = r#"
import functools, http.server, ssl, sys
root, cert, key = sys.argv[1:4]
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=root))
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(cert, key)
server.socket = tls.wrap_socket(server.socket, server_side=True)
print("Serving HTTPS on", server.server_address[1])
server.serve_forever()
"#;

/// Debian's `docker-registry` (distribution v2) on a loopback port, storage in a temporary
/// directory. Stops when dropped.
pub struct OciRegistry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl OciRegistry {
    /// An anonymous registry, or one asking for basic auth `user`/`password` (htpasswd,
    /// bcrypt, as distribution requires).
    pub fn start(auth: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("registry dir");
        let host = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "version: 0.1\nlog: {{level: info}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: \
             {host}}}\n",
            dir.path().join("storage").display()
        );
        if let Some((user, password)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd runs (e2e/peers.sh installs apache2-utils)");
            assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
            config += &format!("auth: {{htpasswd: {{realm: convoy-test, path: {}}}}}\n", htpasswd.display());
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write the registry config");
        let mut command = Command::new("docker-registry");
        command.arg("serve").arg(&config_path);
        let process = Process::spawn(command);
        process.wait_for_line("listening on");
        OciRegistry { host, _process: process, _dir: dir }
    }

    /// `oci://HOST/charts/NAME`.
    pub fn reference(&self, name: &str) -> String {
        format!("oci://{}/charts/{name}", self.host)
    }

    /// `helm push ARCHIVE oci://HOST/charts` (logged in with `auth` first).
    pub fn push(&self, archive: &Path, auth: Option<(&str, &str)>) {
        let (username, password) = auth.unwrap_or_default();
        helm_sdk_ok(
            "push",
            archive,
            json!({"remote": format!("oci://{}/charts", self.host), "username": username, "password": password}),
        );
    }
}

/// What the token-gated registry saw.
#[derive(Debug, Default, Clone)]
pub struct GateLog {
    /// Query strings of the token requests that were granted.
    pub token_queries: Vec<String>,
    /// Registry requests that carried the granted bearer token.
    pub bearer_requests: usize,
}

#[derive(Clone)]
struct Gate {
    realm: String,
    scope: String,
    basic: String,
    token: String,
    manifest: Arc<Vec<u8>>,
    layer_digest: String,
    layer: Arc<Vec<u8>>,
    log: Arc<Mutex<GateLog>>,
}

/// A registry that serves one chart (`charts/NAME:VERSION`) only with a bearer token, which its
/// token service (`/token`) grants for basic credentials: the flow of Docker Hub, GHCR, Harbor
/// and distribution's token auth. Stops when dropped.
pub struct TokenGatedRegistry {
    pub host: String,
    pub log: Arc<Mutex<GateLog>>,
    cancel: CancellationToken,
}

impl TokenGatedRegistry {
    /// Serves `archive` (digest `digest`) as `charts/name:version` for `user`/`password`.
    pub async fn start(name: &str, version: &str, archive: &[u8], digest: &str, user: &str, password: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the gate");
        let address: SocketAddr = listener.local_addr().expect("gate address");
        let manifest = json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": format!("sha256:{}", "0".repeat(64)), "size": 2},
            "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": digest, "size": archive.len()}],
        });
        let log = Arc::new(Mutex::new(GateLog::default()));
        let gate = Gate {
            realm: format!("http://{address}/token"),
            scope: format!("repository:charts/{name}:pull"),
            basic: format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))),
            token: "granted-token".into(),
            manifest: Arc::new(manifest.to_string().into_bytes()),
            layer_digest: digest.to_string(),
            layer: Arc::new(archive.to_vec()),
            log: log.clone(),
        };
        let repository = format!("/v2/charts/{name}");
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token))
            .route(&format!("{repository}/manifests/{version}"), axum::routing::get(manifest_route))
            .route(&format!("{repository}/blobs/{{digest}}"), axum::routing::get(blob))
            .with_state(gate);
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await.expect("serve the gate")
        });
        TokenGatedRegistry { host: address.to_string(), log, cancel }
    }
}

impl Drop for TokenGatedRegistry {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn token(State(gate): State<Gate>, headers: HeaderMap, Query(query): Query<Vec<(String, String)>>) -> Response {
    if headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()) != Some(gate.basic.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    gate.log.lock().expect("gate log").token_queries.push(query);
    axum::Json(json!({"token": gate.token})).into_response()
}

/// 401 with the Bearer challenge unless the request carries the granted token.
fn challenge(gate: &Gate, headers: &HeaderMap) -> Option<Response> {
    let bearer = format!("Bearer {}", gate.token);
    if headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()) == Some(bearer.as_str()) {
        gate.log.lock().expect("gate log").bearer_requests += 1;
        return None;
    }
    let value = format!("Bearer realm=\"{}\",service=\"convoy-gate\",scope=\"{}\"", gate.realm, gate.scope);
    Some((StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, value)]).into_response())
}

async fn manifest_route(State(gate): State<Gate>, headers: HeaderMap) -> Response {
    if let Some(denied) = challenge(&gate, &headers) {
        return denied;
    }
    ([(header::CONTENT_TYPE, "application/vnd.oci.image.manifest.v1+json")], gate.manifest.to_vec()).into_response()
}

async fn blob(
    State(gate): State<Gate>,
    headers: HeaderMap,
    axum::extract::Path(digest): axum::extract::Path<String>,
) -> Response {
    if let Some(denied) = challenge(&gate, &headers) {
        return denied;
    }
    if digest != gate.layer_digest {
        return StatusCode::NOT_FOUND.into_response();
    }
    gate.layer.to_vec().into_response()
}
