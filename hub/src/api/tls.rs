//! The hub's TLS 1.3 accept loop, shared by the gRPC endpoint and the dashboard: every refused
//! handshake is one clear log line, admission follows [`crate::api::admission`], and every
//! connection carries its peer's verified identity.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use convoy_shared::identity::Identity;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::api::admission::{HandshakeLimits, Handshakes};
use crate::api::auth::PeerInfo;

/// Verified connections waiting for tonic to take them.
pub(crate) const ACCEPTED_QUEUE: usize = 256;

/// Verified TLS connections for an HTTP server (the dashboard): the same accept loop, limits
/// and shedding as the gRPC endpoint's.
pub struct TlsIncoming {
    conns: mpsc::Receiver<TlsConn>,
    local: std::net::SocketAddr,
}

impl TlsIncoming {
    /// Accepts on `listener` with `tls` until `shutdown`; `tasks` tracks the handshakes.
    pub fn new(
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        limits: HandshakeLimits,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> io::Result<TlsIncoming> {
        let local = listener.local_addr()?;
        let (tx, conns) = mpsc::channel(ACCEPTED_QUEUE);
        tasks.spawn(
            accept_loop(listener, TlsAcceptor::from(tls), limits, tx, tasks.clone(), shutdown.clone())
                .instrument(tracing::info_span!("accept-dashboard")),
        );
        Ok(TlsIncoming { conns, local })
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsConn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (TlsConn, std::net::SocketAddr) {
        match self.conns.recv().await {
            Some(conn) => {
                let addr = conn.info.addr;
                (conn, addr)
            }
            // The accept loop stopped (shutting down): the server's graceful shutdown ends it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        Ok(self.local)
    }
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: HandshakeLimits,
    conns: mpsc::Sender<TlsConn>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let handshakes = Handshakes::new(limits);
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
        // Never waits: admission (waiting for a place over a bound) is the connection's task's.
        let handshakes = handshakes.clone();
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        let token = shutdown.clone();
        tasks.spawn(async move {
            let deadline = tokio::time::Instant::now() + limits.timeout;
            let admitted = tokio::select! {
                _ = token.cancelled() => return,
                admitted = tokio::time::timeout_at(deadline, handshakes.admit(addr.ip())) => admitted,
            };
            let mut slot = match admitted {
                Ok(Ok(slot)) => slot,
                Ok(Err(refusal)) => {
                    tracing::warn!(peer = %addr, reason = %refusal, "refused TLS connection");
                    return;
                }
                Err(_) => {
                    tracing::warn!(peer = %addr, timeout = ?limits.timeout, "refused TLS connection: no handshake place within the timeout");
                    return;
                }
            };
            let _ = tcp.set_nodelay(true);
            let handshake = tokio::time::timeout_at(deadline, acceptor.accept(tcp).into_fallible());
            let finished = tokio::select! {
                _ = token.cancelled() => return,
                Ok(reason) = &mut slot.shed => {
                    tracing::warn!(peer = %addr, reason, "refused TLS connection: handshake shed");
                    return;
                }
                finished = handshake => finished,
            };
            drop(slot);
            match finished {
                Ok(Ok(stream)) => {
                    let leaf = stream.get_ref().1.peer_certificates().and_then(|certs| certs.first());
                    let validity = leaf.and_then(|cert| convoy_shared::enrollment::validity_der(cert).ok());
                    let groups = leaf.map(|cert| convoy_shared::identity::groups_from_certificate_der(cert)).unwrap_or_default();
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
                    let conn = TlsConn { inner: stream, info: PeerInfo { addr, identity, validity, groups } };
                    // Stopping (or a closed channel) drops the connection.
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = conns.send(conn) => {}
                    }
                }
                Ok(Err((e, tcp))) => {
                    tracing::warn!(peer = %addr, reason = %refusal_reason(&e), "refused TLS connection");
                    linger(tcp).await;
                }
                Err(_) => {
                    tracing::warn!(peer = %addr, timeout = ?limits.timeout, "refused TLS connection: handshake timed out")
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
