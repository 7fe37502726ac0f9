//! A real smart-HTTP Git server for tests: git's own `git http-backend` (CGI) behind a small
//! TLS server with basic auth, serving every bare repository under one directory as
//! `https://localhost:PORT/<name>.git`. It records every request line and whether it carried
//! credentials, so a test can check what the hub sent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest request body the server takes (a push of a test repository).
const MAX_BODY: usize = 512 << 20;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct GitRequest {
    pub method: String,
    pub uri: String,
    /// The Authorization header, if any (tests check it never leaks into logs).
    pub authorization: Option<String>,
    pub status: u16,
}

#[derive(Clone)]
struct ServerState {
    root: PathBuf,
    username: String,
    password: Arc<Mutex<String>>,
    requests: Arc<Mutex<Vec<GitRequest>>>,
}

/// A running smart-HTTP Git server; stops when dropped.
pub struct GitHttpServer {
    pub address: SocketAddr,
    /// Directory holding the bare repositories it serves.
    pub root: PathBuf,
    state: ServerState,
    cancel: CancellationToken,
}

impl GitHttpServer {
    /// Serves the bare repositories under `root` over TLS with `cert_pem`/`key_pem` (from the
    /// harness's CA), asking for basic auth `username`/`password` on every request.
    pub async fn start(root: &Path, cert_pem: &str, key_pem: &str, username: &str, password: &str) -> Self {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>().expect("server cert PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("server key PEM");
        let tls = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).expect("TLS");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the Git server");
        let address = listener.local_addr().expect("address");
        let state = ServerState {
            root: root.to_path_buf(),
            username: username.to_string(),
            password: Arc::new(Mutex::new(password.to_string())),
            requests: Arc::default(),
        };
        let router = axum::Router::new().fallback(handle).with_state(state.clone());
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                };
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate gives up here.
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let svc = hyper_util::service::TowerToHyperService::new(router);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        GitHttpServer { address, root: root.to_path_buf(), state, cancel }
    }

    /// `https://localhost:PORT/<name>` (the certificate names localhost).
    pub fn url(&self, name: &str) -> String {
        format!("https://localhost:{}/{name}", self.address.port())
    }

    /// Changes the password the server accepts (a rotated token).
    pub fn set_password(&self, password: &str) {
        *self.state.password.lock().expect("password lock") = password.to_string();
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<GitRequest> {
        self.state.requests.lock().expect("requests lock").clone()
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn handle(State(state): State<ServerState>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let authorization = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let response = if !authorized(&state, authorization.as_deref()) {
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("WWW-Authenticate", "Basic realm=\"git\"")
            .body(Body::from("authentication required\n"))
            .expect("response")
    } else {
        match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(body) => run_backend(&state.root, &parts.method, &parts.uri, &parts.headers, body).await,
            Err(e) => plain(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}\n")),
        }
    };
    state.requests.lock().expect("requests lock").push(GitRequest {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        authorization,
        status: response.status().as_u16(),
    });
    response
}

fn authorized(state: &ServerState, header: Option<&str>) -> bool {
    let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else { return false };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let expected = format!("{}:{}", state.username, state.password.lock().expect("password lock"));
    decoded == expected.as_bytes()
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    Response::builder().status(status).body(Body::from(text)).expect("response")
}

/// Runs `git http-backend` for one request (RFC 3875 CGI) and turns its output into a response.
async fn run_backend(root: &Path, method: &Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response<Body> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", "convoy")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot run git http-backend: {e}\n")),
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = match child.wait_with_output().await {
        Ok(output) => output,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("git http-backend failed: {e}\n")),
    };
    let _ = writer.await;
    cgi_response(&output.stdout)
}

/// Splits CGI output into headers (a `Status:` header sets the status) and body.
fn cgi_response(output: &[u8]) -> Response<Body> {
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2)));
    let Some((end, body_start)) = split else {
        return plain(StatusCode::BAD_GATEWAY, "git http-backend wrote no headers\n".into());
    };
    let mut response = Response::builder().status(StatusCode::OK);
    for line in String::from_utf8_lossy(&output[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(500);
            response = response.status(code);
        } else {
            response = response.header(name.trim(), value);
        }
    }
    response.body(Body::from(output[body_start..].to_vec())).expect("response")
}
