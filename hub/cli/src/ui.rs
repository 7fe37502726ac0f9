//! `convoy ui`: the web dashboard ([`convoy_web`]) on loopback, acting with the CLI config's own
//! certificate, so the browser sees exactly what that user may see and do and no new
//! credential exists.
//!
//! Decisions:
//! - Only loopback listen addresses: the server acts with the user's certificate.
//! - One session for every request: the certificate's, with a CSRF token random per process.

use std::net::SocketAddr;
use std::sync::Arc;

use convoy_shared::identity::Identity;
use convoy_web::{Backend, NoSession, Session, Ui};

use crate::CliError;

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

/// Every request acts with the CLI certificate.
struct Certificate(Session);

impl Backend for Certificate {
    fn session(&self, _: &http::request::Parts) -> Result<Session, NoSession> {
        Ok(self.0.clone())
    }
}

/// The dashboard of `convoy ui`: `channel` reaches `hub` with the user's certificate; pages are
/// served on `listen`.
pub fn dashboard(channel: tonic::transport::Channel, hub: &str, listen: SocketAddr) -> Arc<Ui> {
    let session = Session { client: convoy_web::channel_client(channel), csrf_token: convoy_web::oidc::random() };
    Arc::new(Ui::new(Certificate(session), convoy_web::guard::Guard::local(listen), hub))
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
    axum::serve(listener, convoy_web::router(ui, axum::Router::new())).await
}
