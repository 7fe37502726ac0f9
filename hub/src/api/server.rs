//! The hub's gRPC endpoint: a TLS 1.3 accept loop of our own (so every refused handshake is one
//! clear log line and every connection carries its verified identity), feeding tonic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use convoy_render::helm::fetch::ChartFetcher;
use convoy_shared::identity::Identity;
use convoy_shared::proto::fleet_service_server::FleetServiceServer;
use convoy_shared::proto::registration_service_server::RegistrationServiceServer;
use futures::FutureExt;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;
use tracing::Instrument;

use crate::api::agent_service::AgentLinks;
use crate::api::auth::{self, PeerInfo};
use crate::api::fleet_service::FleetApi;
use crate::api::registration::RegistrationApi;
use crate::state::hub::{Hub, Publisher};

/// Verified connections waiting for tonic to take them.
const ACCEPTED_QUEUE: usize = 256;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the HTTP listener failed: {0}")]
    Http(#[source] std::io::Error),
    #[error(transparent)]
    Replica(#[from] crate::replication::ReplicationError),
}

/// Everything `convoy-hub serve` runs besides the gRPC listener.
pub struct HubConfig {
    pub tls: Arc<ServerConfig>,
    /// The Git source; `None` serves agents and the CLI with no assignments.
    pub source: Option<crate::source::sync::SourceConfig>,
    /// Set when this hub is one of several replicas on PostgreSQL: it runs `source` only while
    /// it leads, and serves the leader's assignments otherwise.
    pub replication: Option<crate::replication::Replication>,
    pub webhook_secret: Option<String>,
    /// Bounds on TLS handshakes in progress.
    pub handshakes: HandshakeLimits,
}

/// Bounds on TLS handshakes in progress, so that clients which connect and then stall (a partial
/// ClientHello, or nothing at all) can never stop the hub accepting: the accept loop never
/// waits for a handshake slot; a connection over a bound sheds the *oldest* handshake in
/// progress (of its source address, or overall), since a real client finishes in milliseconds
/// and the one stalled longest is the likeliest attacker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// How long a client may take to finish the handshake.
    pub timeout: Duration,
    /// Handshakes in progress at once.
    pub max_total: usize,
    /// Handshakes in progress from one IP address (many agents behind one NAT share one).
    pub max_per_source: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits { timeout: Duration::from_secs(10), max_total: 1024, max_per_source: 128 }
    }
}

/// Runs the whole hub: gRPC on `grpc`, webhook and health on `http`, and the source loop,
/// until `shutdown`; then waits for each to drain.
pub async fn run(
    config: HubConfig,
    grpc: TcpListener,
    http: Option<TcpListener>,
    (hub, publisher): (Arc<Hub>, Publisher),
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let mut tasks = tokio::task::JoinSet::new();
    let charts = config.source.as_ref().and_then(|source| source.charts.clone());
    if let Some(replication) = config.replication {
        tasks.spawn(
            crate::replication::run(replication, config.source, publisher, shutdown.clone())
                .instrument(tracing::info_span!("replica"))
                .map(|result| result.map_err(ServeError::Replica)),
        );
    } else if let Some(source) = config.source {
        tasks.spawn(
            crate::source::sync::run(source, publisher, shutdown.clone())
                .instrument(tracing::info_span!("source"))
                .map(|()| Ok(())),
        );
    }
    if let Some(http) = http {
        let router = crate::api::http::router(hub.clone(), config.webhook_secret);
        let token = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(http, router)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .map_err(ServeError::Http)
        });
    }
    tasks.spawn(serve(grpc, config.tls, config.handshakes, hub.clone(), charts, shutdown.clone()));
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Err(e)) = joined {
            tracing::error!(error = %e, "hub component stopped");
            shutdown.cancel();
            result = Err(e);
        }
    }
    // Every component has stopped, so nothing records any more: write what is queued (reports
    // and history acknowledged just before the signal) before the process exits.
    hub.flush_store().await;
    tracing::info!("store flushed");
    result
}

/// Serves AgentService, FleetService and RegistrationService on `listener` until `shutdown` is cancelled, then
/// closes agent streams and drains connections. `charts` fetches remote charts for promotion
/// previews, as the source loop does for syncs.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    limits: HandshakeLimits,
    hub: Arc<Hub>,
    charts: Option<Arc<ChartFetcher>>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (conns_tx, conns_rx) = mpsc::channel::<TlsConn>(ACCEPTED_QUEUE);
    // Every task the endpoint starts (accept loop, handshakes, agent sessions) is tracked, so
    // `serve` returns only once they have all ended.
    let tasks = TaskTracker::new();
    // The accept loop owns `conns_tx`; when it stops, tonic sees the incoming stream end.
    tasks.spawn(
        accept_loop(listener, TlsAcceptor::from(tls), limits, conns_tx, tasks.clone(), shutdown.clone())
            .instrument(tracing::info_span!("accept")),
    );
    let incoming = ReceiverStream::new(conns_rx);
    let incoming = tokio_stream::StreamExt::map(incoming, Ok::<_, io::Error>);
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(InterceptedService::new(
            AgentLinks::new(hub.clone(), tasks.clone(), shutdown.clone()).into_server(),
            auth::agent_interceptor,
        ))
        .add_service(FleetServiceServer::with_interceptor(
            FleetApi::new(hub.clone(), charts, shutdown.clone()),
            auth::fleet_interceptor,
        ))
        // No interceptor: Register is authorized by its token, Renew checks the certificate.
        .add_service(RegistrationServiceServer::new(RegistrationApi::new(hub.registry().clone())))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await;
    // Cancelled, not aborted: the accept loop and handshakes see `shutdown` and end, sessions
    // close their streams; wait for all of them.
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    result.map_err(ServeError::from)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: HandshakeLimits,
    conns: mpsc::Sender<TlsConn>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let handshakes = Arc::new(Handshakes::new(limits));
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
        // Never waits: over a bound, the oldest handshake in progress makes way.
        let mut slot = handshakes.admit(addr.ip());
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        let token = shutdown.clone();
        tasks.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let handshake = tokio::time::timeout(limits.timeout, acceptor.accept(tcp).into_fallible());
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
                    let conn = TlsConn { inner: stream, info: PeerInfo { addr, identity, not_before_unix } };
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

/// The TLS handshakes in progress, oldest first, and how many each source address has.
struct Handshakes {
    limits: HandshakeLimits,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    next_id: u64,
    /// By admission order: the first entry is the oldest handshake in progress.
    /// The sender tells the handshake why it must make way.
    by_age: BTreeMap<u64, (IpAddr, oneshot::Sender<&'static str>)>,
    /// Handshakes in progress per source address, by admission order.
    by_source: HashMap<IpAddr, BTreeSet<u64>>,
}

/// One handshake in progress; dropping it (handshake over, or task gone) frees its place.
struct HandshakeSlot {
    handshakes: Arc<Handshakes>,
    id: u64,
    source: IpAddr,
    /// Answers when the handshake must make way, with the reason.
    shed: oneshot::Receiver<&'static str>,
}

impl Handshakes {
    fn new(limits: HandshakeLimits) -> Self {
        Handshakes { limits, pending: Mutex::new(Pending::default()) }
    }

    /// Admits a new handshake from `source`, shedding the oldest of that source when it is
    /// over its bound, then the oldest overall when the total is.
    fn admit(self: &Arc<Self>, source: IpAddr) -> HandshakeSlot {
        let mut pending = self.pending.lock().expect("handshakes lock");
        let id = pending.next_id;
        pending.next_id += 1;
        let (tell, shed) = oneshot::channel();
        pending.by_age.insert(id, (source, tell));
        let of_source = pending.by_source.entry(source).or_default();
        of_source.insert(id);
        let oldest_of_source = (of_source.len() > self.limits.max_per_source.max(1)).then(|| of_source.pop_first());
        if let Some(Some(oldest)) = oldest_of_source {
            pending.remove(oldest, "too many handshakes in progress from this address");
        }
        if pending.by_age.len() > self.limits.max_total.max(1)
            && let Some((&oldest, _)) = pending.by_age.first_key_value()
        {
            pending.remove(oldest, "too many handshakes in progress");
        }
        HandshakeSlot { handshakes: self.clone(), id, source, shed }
    }
}

impl Pending {
    /// Forgets handshake `id` and tells it to stop with `reason`.
    fn remove(&mut self, id: u64, reason: &'static str) {
        if let Some((source, tell)) = self.by_age.remove(&id) {
            self.forget_source(source, id);
            let _ = tell.send(reason);
        }
    }

    fn forget_source(&mut self, source: IpAddr, id: u64) {
        if let Some(ids) = self.by_source.get_mut(&source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&source);
            }
        }
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut pending = self.handshakes.pending.lock().expect("handshakes lock");
        pending.by_age.remove(&self.id);
        pending.forget_source(self.source, self.id);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::registry::RegistryConfig;
    use crate::store::{self, MemoryStore, Redeemed, Registration, Store, StoreEvent, TokenRecord};
    use convoy_shared::model::report::Report;
    use convoy_shared::pki::{self, CertDir};
    use convoy_shared::proto::HistoryEntry;
    use convoy_shared::tls::TlsMaterial;

    /// A store whose writes take a while, so the writer still has work queued when the server
    /// stops.
    #[derive(Debug, Default)]
    struct SlowStore(MemoryStore);

    impl Store for SlowStore {
        fn write(&self, events: &[StoreEvent]) -> store::Result<()> {
            std::thread::sleep(Duration::from_millis(100));
            self.0.write(events)
        }
        fn last_reports(&self) -> store::Result<Vec<(String, convoy_shared::proto::Report)>> {
            self.0.last_reports()
        }
        fn history(&self, cluster: &str, limit: usize) -> store::Result<Vec<HistoryEntry>> {
            self.0.history(cluster, limit)
        }
        fn put_token(&self, hash: &str, token: &TokenRecord) -> store::Result<()> {
            self.0.put_token(hash, token)
        }
        fn redeem_token(&self, hash: &str, now: i64) -> store::Result<Redeemed> {
            self.0.redeem_token(hash, now)
        }
        fn put_registration(&self, registration: &Registration) -> store::Result<()> {
            self.0.put_registration(registration)
        }
        fn registrations(&self) -> store::Result<Vec<Registration>> {
            self.0.registrations()
        }
        fn put_revocation(&self, cluster: &str, at: i64) -> store::Result<()> {
            self.0.put_revocation(cluster, at)
        }
        fn revocations(&self) -> store::Result<Vec<(String, i64)>> {
            self.0.revocations()
        }
        fn rollouts(&self) -> store::Result<Vec<(String, String)>> {
            self.0.rollouts()
        }
        fn pins(&self) -> store::Result<Vec<(String, String)>> {
            self.0.pins()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_returns_only_once_every_recorded_report_is_in_the_store() {
        convoy_shared::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let certs = CertDir::new(dir.path());
        pki::init_ca(&certs, &["localhost".into()], 1).unwrap();
        let material = TlsMaterial::from_files(&certs.ca_cert(), &certs.hub_cert(), &certs.hub_key()).unwrap();
        let config = HubConfig {
            tls: convoy_shared::tls::server_config(&material).unwrap(),
            source: None,
            replication: None,
            webhook_secret: None,
            handshakes: HandshakeLimits::default(),
        };
        let store = Arc::new(SlowStore::default());
        let (hub, publisher) = Hub::new(store.clone(), RegistryConfig::default()).unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(run(config, grpc, None, (hub.clone(), publisher), shutdown.clone()));

        let (session, _) = hub.connections().open("eu-1", "127.0.0.1:1".parse().unwrap());
        for i in 0..5 {
            let report =
                Report { revision: format!("r{i}"), digest: format!("d{i}"), applied: true, ..Default::default() };
            hub.record_report("eu-1", session, &report);
            // Spread over several writer batches: the last ones wait behind slow writes.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        shutdown.cancel();
        server.await.unwrap().unwrap();
        let applied: Vec<String> = store.history("eu-1", 10).unwrap().into_iter().map(|e| e.revision).collect();
        assert_eq!(applied, ["r4", "r3", "r2", "r1", "r0"], "history acknowledged before shutdown is written");
        let last = store.last_reports().unwrap();
        assert_eq!(last.iter().find(|(c, _)| c == "eu-1").map(|(_, r)| r.revision.as_str()), Some("r4"));
    }
}
