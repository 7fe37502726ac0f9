//! The hub's gRPC endpoint: our own TLS accept loop ([`crate::api::tls`]) feeding tonic with
//! the agent, fleet and registration services (and the dashboard beside them).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use convoy_render::helm::fetch::ChartFetcher;
use convoy_shared::proto::fleet_service_server::FleetServiceServer;
use convoy_shared::proto::registration_service_server::RegistrationServiceServer;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;
use tracing::Instrument;

use crate::api::admission::HandshakeLimits;
use crate::api::agent_service::AgentLinks;
use crate::api::auth;
use crate::api::fleet_service::{FleetApi, FleetServer};
use crate::api::registration::RegistrationApi;
use crate::api::tls::{ACCEPTED_QUEUE, TlsConn, accept_loop};
use crate::state::hub::Hub;

/// How the endpoint serves.
pub struct Endpoint {
    pub tls: Arc<ServerConfig>,
    pub limits: HandshakeLimits,
    /// Fetches remote charts for promotion previews, as the sync loop does for syncs.
    pub charts: Option<Arc<ChartFetcher>>,
    /// Single sign-on for `convoy login`.
    pub sign_in: Option<crate::api::oidc::OidcConfig>,
    /// The web dashboard, over the same fleet API.
    pub dashboard: Option<crate::api::dashboard::DashboardConfig>,
}

/// Serves AgentService, FleetService and RegistrationService (and the dashboard, when
/// configured) on `listener` until `shutdown` is cancelled, then closes agent streams and
/// drains connections.
pub async fn serve(
    listener: TcpListener,
    endpoint: Endpoint,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let Endpoint { tls, limits, charts, sign_in, dashboard } = endpoint;
    let (conns_tx, conns_rx) = mpsc::channel::<TlsConn>(ACCEPTED_QUEUE);
    // Every task the endpoint starts (accept loop, handshakes, agent sessions) is tracked, so
    // `serve` returns only once they have all ended.
    let tasks = TaskTracker::new();
    // The accept loop owns `conns_tx`; when it stops, tonic sees the incoming stream end.
    tasks.spawn(
        accept_loop(listener, TlsAcceptor::from(tls), limits, conns_tx, tasks.clone(), shutdown.clone())
            .instrument(tracing::info_span!("accept")),
    );
    let fleet: FleetServer = InterceptedService::new(
        FleetServiceServer::new(FleetApi::new(hub.clone(), charts, shutdown.clone())),
        auth::fleet_interceptor,
    );
    if let Some(config) = dashboard {
        let served =
            crate::api::dashboard::serve(config, hub.clone(), fleet.clone(), limits, tasks.clone(), shutdown.clone());
        tasks.spawn(
            async move {
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "the dashboard stopped");
                }
            }
            .instrument(tracing::info_span!("dashboard")),
        );
    }
    let incoming = ReceiverStream::new(conns_rx);
    let incoming = tokio_stream::StreamExt::map(incoming, Ok::<_, io::Error>);
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(InterceptedService::new(
            AgentLinks::new(hub.clone(), tasks.clone(), shutdown.clone()).into_server(),
            auth::agent_interceptor,
        ))
        .add_service(fleet)
        // No interceptor: Register is authorized by its token, Renew checks the certificate.
        .add_service(RegistrationServiceServer::new(RegistrationApi::new(
            hub.clone(),
            sign_in.map(|c| Arc::new(crate::api::oidc::OidcVerifier::new(c))),
        )))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await;
    // Cancelled, not aborted: the accept loop and handshakes see `shutdown` and end, sessions
    // close their streams; wait for all of them.
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    result
}
