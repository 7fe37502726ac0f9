//! The hub's gRPC endpoint: a TLS 1.3 accept loop of our own (so every refused handshake is one
//! clear log line and every connection carries its verified identity), feeding tonic.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use convoy_shared::identity::Identity;
use convoy_shared::proto::fleet_service_server::FleetServiceServer;
use convoy_shared::proto::registration_service_server::RegistrationServiceServer;
use futures::FutureExt;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tracing::Instrument;

use crate::agent_service::AgentLinks;
use crate::auth::{self, PeerInfo};
use crate::fleet_service::FleetApi;
use crate::registration::RegistrationApi;
use crate::state::Hub;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more wait in the listen backlog.
const MAX_HANDSHAKES: usize = 256;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the HTTP listener failed: {0}")]
    Http(#[source] std::io::Error),
}

/// Everything `convoy-hub serve` runs besides the gRPC listener.
pub struct HubConfig {
    pub tls: Arc<ServerConfig>,
    /// The Git source; `None` serves agents and the CLI with no assignments.
    pub source: Option<crate::source::SourceConfig>,
    pub webhook_secret: Option<String>,
}

/// Runs the whole hub: gRPC on `grpc`, webhook and health on `http`, and the source loop,
/// until `shutdown`; then waits for each to drain.
pub async fn run(
    config: HubConfig,
    grpc: TcpListener,
    http: Option<TcpListener>,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(source) = config.source {
        tasks.spawn(
            crate::source::run(source, hub.clone(), shutdown.clone())
                .instrument(tracing::info_span!("source"))
                .map(|()| Ok(())),
        );
    }
    if let Some(http) = http {
        let router = crate::webhook::router(hub.clone(), config.webhook_secret);
        let token = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(http, router)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .map_err(ServeError::Http)
        });
    }
    tasks.spawn(serve(grpc, config.tls, hub, shutdown.clone()));
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Err(e)) = joined {
            tracing::error!(error = %e, "hub component stopped");
            shutdown.cancel();
            result = Err(e);
        }
    }
    result
}

/// Serves AgentService, FleetService and RegistrationService on `listener` until `shutdown` is cancelled, then
/// closes agent streams and drains connections.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (conns_tx, conns_rx) = mpsc::channel::<TlsConn>(MAX_HANDSHAKES);
    // The accept loop owns `conns_tx`; when it stops, tonic sees the incoming stream end.
    let accept = tokio::spawn(
        accept_loop(listener, TlsAcceptor::from(tls), conns_tx, shutdown.clone())
            .instrument(tracing::info_span!("accept")),
    );
    let incoming = ReceiverStream::new(conns_rx);
    let incoming = tokio_stream::StreamExt::map(incoming, Ok::<_, io::Error>);
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(InterceptedService::new(
            AgentLinks::new(hub.clone(), shutdown.clone()).into_server(),
            auth::agent_interceptor,
        ))
        .add_service(FleetServiceServer::with_interceptor(
            FleetApi::new(hub.clone(), shutdown.clone()),
            auth::fleet_interceptor,
        ))
        // No interceptor: Register is authorized by its token, Renew checks the certificate.
        .add_service(RegistrationServiceServer::new(RegistrationApi::new(hub)))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await;
    accept.abort();
    result.map_err(ServeError::from)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<TlsConn>,
    shutdown: CancellationToken,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (tcp, addr) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp).into_fallible()).await {
                Ok(Ok(stream)) => {
                    let leaf = stream.get_ref().1.peer_certificates().and_then(|certs| certs.first());
                    let not_before_unix =
                        leaf.and_then(|cert| convoy_shared::enrollment::validity_der(cert).ok()).map(|v| v.not_before);
                    let identity = leaf.map(|cert| Identity::from_certificate_der(cert));
                    let identity = match identity {
                        None => None,
                        Some(Ok(id)) => Some(id),
                        Some(Err(e)) => {
                            tracing::warn!(peer = %addr, error = %e, "refused TLS connection: certificate names no identity");
                            return;
                        }
                    };
                    tracing::debug!(peer = %addr, identity = ?identity, "TLS connection accepted");
                    let _ =
                        conns.send(TlsConn { inner: stream, info: PeerInfo { addr, identity, not_before_unix } }).await;
                }
                Ok(Err((e, tcp))) => {
                    tracing::warn!(peer = %addr, reason = %refusal_reason(&e), "refused TLS connection");
                    linger(tcp).await;
                }
                Err(_) => {
                    tracing::warn!(peer = %addr, "refused TLS connection: handshake timed out")
                }
            }
        });
    }
}

/// Closes a refused connection gently: our alert is already written, so half-close and read
/// what the client still sends. Dropping the socket with unread data would make the kernel
/// send a reset, and the client could lose the alert that tells it why it was refused.
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// Words for why a handshake failed, for the one log line a refusal gets.
fn refusal_reason(err: &io::Error) -> String {
    use rustls::{CertificateError, Error as E};
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<E>()) else {
        return err.to_string();
    };
    match tls {
        E::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "client certificate expired".into()
        }
        E::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "client certificate issued by another CA".into()
        }
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            format!("not a TLS client (plaintext gRPC or another protocol?): {tls}")
        }
        other => other.to_string(),
    }
}

/// A verified TLS connection with what we know of its peer.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
