//! Convoy hub: resolves one Git repository into per-cluster assignments and serves agents and the CLI.
//!
//! The hub is a pipeline of stages, one folder each, data flowing one way (see `ARCHITECTURE.md`):
//! [`source`] (fetch → snapshot → fleet model) → [`plan`] (render per cluster → assignments) →
//! [`release`] (what each cluster runs now) → [`state`] (the published view: one writer, many
//! readers) → [`api`] (gRPC services and HTTP routes); [`store`] keeps what is not in Git, beside
//! them. [`replication`] runs the sync loop on the replica that leads. [`run`] starts them all,
//! as `convoy-hub serve`, the sandbox and the scenarios do.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod api;
pub mod gate;
pub mod notify;
pub mod plan;
pub mod release;
pub mod replication;
pub mod source;
pub mod state;
pub mod store;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::sync::Arc;

use futures::FutureExt;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::admission::HandshakeLimits;
use crate::state::hub::{Hub, Publisher};

/// Errors that stop the hub.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the gRPC server failed: {0}")]
    Transport(#[source] tonic::transport::Error),
    #[error("the HTTP listener failed: {0}")]
    Http(#[source] std::io::Error),
    #[error(transparent)]
    Replica(#[from] replication::ReplicationError),
}

/// Everything `convoy-hub serve` runs besides the gRPC listener.
pub struct HubConfig {
    pub tls: Arc<ServerConfig>,
    /// The Git source; `None` serves agents and the CLI with no assignments.
    pub source: Option<source::SourceConfig>,
    /// Set when this hub is one of several replicas on PostgreSQL: it runs `source` only while
    /// it leads, and serves the leader's assignments otherwise.
    pub replication: Option<replication::Replication>,
    pub webhook_secret: Option<String>,
    /// Bounds on TLS handshakes in progress.
    pub handshakes: HandshakeLimits,
    /// Single sign-on through this OpenID provider (`convoy login`); `None`: off.
    pub sign_in: Option<api::oidc::OidcConfig>,
    /// The web dashboard for browsers signed in through that provider; `None`: off.
    pub dashboard: Option<api::dashboard::DashboardConfig>,
    /// Notifications and commit statuses (`spec.notifications`, `spec.commitStatus`).
    pub notify: notify::outbox::NotifyConfig,
}

/// Runs the whole hub: gRPC on `grpc`, webhook and health on `http`, and the sync loop,
/// until `shutdown`; then waits for each to drain.
pub async fn run(
    config: HubConfig,
    grpc: TcpListener,
    http: Option<TcpListener>,
    (hub, publisher): (Arc<Hub>, Publisher),
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let mut tasks = tokio::task::JoinSet::new();
    let endpoint = api::server::Endpoint {
        tls: config.tls,
        limits: config.handshakes,
        charts: config.source.as_ref().and_then(|source| source.charts.clone()),
        sign_in: config.sign_in,
        dashboard: config.dashboard,
    };
    if let Some(replication) = config.replication {
        tasks.spawn(
            replication::run(replication, config.source, publisher, shutdown.clone())
                .instrument(tracing::info_span!("replica"))
                .map(|result| result.map_err(ServeError::Replica)),
        );
    } else if let Some(source) = config.source {
        tasks.spawn(
            sync::run(source, publisher, shutdown.clone()).instrument(tracing::info_span!("source")).map(|()| Ok(())),
        );
    }
    if let Some(http) = http {
        let router = api::http::router(hub.clone(), config.webhook_secret);
        let token = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(http, router)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .map_err(ServeError::Http)
        });
    }
    tasks.spawn(gate::run(hub.clone(), shutdown.clone()).instrument(tracing::info_span!("gate")).map(|()| Ok(())));
    tasks.spawn(
        notify::outbox::run(hub.clone(), config.notify, shutdown.clone())
            .instrument(tracing::info_span!("notify"))
            .map(|()| Ok(())),
    );
    tasks.spawn(
        api::server::serve(grpc, endpoint, hub.clone(), shutdown.clone())
            .map(|served| served.map_err(ServeError::Transport)),
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::registry::RegistryConfig;
    use crate::store::memory::MemoryStore;
    use crate::store::{self, Redeemed, Registration, Store, StoreEvent, TokenRecord};
    use convoy_shared::model::report::Report;
    use convoy_shared::pki::{self, CertDir};
    use convoy_shared::proto::HistoryEntry;
    use convoy_shared::tls::TlsMaterial;
    use std::time::Duration;

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
        fn append_audit(&self, record: &convoy_shared::proto::AuditRecord) -> store::Result<()> {
            self.0.append_audit(record)
        }
        fn access_policy(&self) -> store::Result<Option<(String, String)>> {
            self.0.access_policy()
        }
        fn audit(
            &self,
            since_ms: i64,
            user: &str,
            limit: usize,
        ) -> store::Result<Vec<convoy_shared::proto::AuditRecord>> {
            self.0.audit(since_ms, user, limit)
        }
        fn outbox_push(&self, entries: &[store::OutboxEntry]) -> store::Result<()> {
            self.0.outbox_push(entries)
        }
        fn outbox_pending(&self, receiver: Option<&str>, limit: usize) -> store::Result<Vec<store::OutboxEntry>> {
            self.0.outbox_pending(receiver, limit)
        }
        fn outbox_settle(&self, entry: &store::OutboxEntry) -> store::Result<()> {
            self.0.outbox_settle(entry)
        }
        fn outbox_recent(&self, limit: usize) -> store::Result<Vec<store::OutboxEntry>> {
            self.0.outbox_recent(limit)
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
            sign_in: None,
            dashboard: None,
            handshakes: HandshakeLimits::default(),
            notify: notify::outbox::NotifyConfig {
                secrets_dir: dir.path().join("secrets"),
                dashboard_url: String::new(),
            },
        };
        let store = Arc::new(SlowStore::default());
        let (hub, publisher) = Hub::new(store.clone(), RegistryConfig::default()).unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(run(config, grpc, None, (hub.clone(), publisher), shutdown.clone()));

        let (session, _) = hub.connections().open("eu-1", "127.0.0.1:1".parse().unwrap(), 0);
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
