//! AgentService: one task per agent stream. The cluster is the one named by the client
//! certificate; the stream answers the Hello, records heartbeats and reports, and closes when
//! the hub shuts down or the same cluster opens a newer stream.

use convoy_render::helm::Capabilities;
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use convoy_shared::model::report::Report;
use convoy_shared::model::{AppAssignment, Assignment, pack_objects};
use convoy_shared::proto::agent_message::Kind as AgentKind;
use convoy_shared::proto::agent_service_server::{AgentService, AgentServiceServer};
use convoy_shared::proto::hub_message::Kind as HubKind;
use convoy_shared::proto::{self as proto, AgentMessage, AppContent, Hello, HubMessage, Unchanged};
use convoy_shared::telemetry;
use futures::{Stream, StreamExt as _};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::api::auth;
use crate::state::hub::Hub;

/// How long an agent has to send its Hello after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages queued towards one agent before the session waits for it to read.
const OUTBOUND_QUEUE: usize = 8;
/// Parts smaller than this go to the agent as they are: compressing them saves a few KiB at the
/// cost of work on both ends, paid by every cluster at once when a commit reaches the fleet.
const COMPRESS_FROM_BYTES: usize = 4 << 10;
/// Objects of one app are sent in `AppContent` parts of about this many bytes (a part holds at
/// least one object, and the planner refuses objects over [`crate::plan::planner::MAX_OBJECT_BYTES`]),
/// far below [`MAX_MESSAGE_BYTES`] whatever the size of the assignment. Small: each agent's
/// stream keeps an encode buffer as large as the largest message it carried (see
/// `convoy_shared::codec`), so 10,000 agents that each once received a 1 MiB part would keep
/// 10 to 20 GiB; 64 KiB parts bound it at 64 to 128 KiB per agent, and the many parts of a
/// large app cost little (each compressed when the agent takes zstd).
const CONTENT_PART_BYTES: usize = 64 << 10;
/// Largest message either side of the agent link accepts. Parts keep hub messages small; a
/// report on tens of thousands of objects can be several MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The AgentService implementation.
pub struct AgentLinks {
    hub: Arc<Hub>,
    /// Session tasks are spawned here, so the server waits for them before the store's flush.
    sessions: TaskTracker,
    shutdown: CancellationToken,
}

impl AgentLinks {
    pub fn new(hub: Arc<Hub>, sessions: TaskTracker, shutdown: CancellationToken) -> Self {
        AgentLinks { hub, sessions, shutdown }
    }

    /// The gRPC service: zstd both ways when the agent accepts it (assignments are JSON and
    /// compress well), and deliberate message limits (see [`MAX_MESSAGE_BYTES`]). Convoy's own
    /// agents ask for no gRPC compression: they take app contents compressed one by one
    /// (`Hello.content_zstd`, see [`Session::send_content`]).
    pub fn into_server(self) -> AgentServiceServer<Self> {
        AgentServiceServer::new(self)
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

type HubStream = Pin<Box<dyn Stream<Item = Result<HubMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentLinks {
    type ConnectStream = HubStream;

    async fn connect(&self, req: Request<Streaming<AgentMessage>>) -> Result<Response<HubStream>, Status> {
        let (cluster, peer) = auth::require_registered_cluster(&req, self.hub.registry())?;
        let validity = req.extensions().get::<auth::PeerInfo>().and_then(|p| p.validity);
        let not_before = validity.map_or(i64::MIN, |v| v.not_before);
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
        let (session, replaced) =
            self.hub.connections().open(&cluster, peer, validity.map_or(0, |v| v.not_after * 1000));
        // A revocation that landed between the check above and `open` found no stream to close.
        if self.hub.registry().refuses(&cluster, not_before).is_some() {
            replaced.cancel();
            self.hub.connections().close(&cluster, session);
            return Err(Status::permission_denied(format!("cluster '{cluster}' was revoked")));
        }
        tracing::info!(cluster, %peer, "agent stream opened");
        self.hub.event(&cluster, "connected", format!("from {peer}"));
        let span = tracing::info_span!("agent", cluster = %cluster, session);
        let task = Session { hub: self.hub.clone(), cluster, session, tx };
        self.sessions.spawn(task.run(inbound, self.shutdown.clone(), replaced).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(|message| *message))))
    }
}

/// One agent stream. Owns the sender half of the outbound queue; dropping it ends the response
/// stream, which tells the agent the hub closed the session.
struct Session {
    hub: Arc<Hub>,
    cluster: String,
    session: u64,
    tx: mpsc::Sender<Outbound>,
}

/// A message queued towards the agent, boxed: the queue allocates its slots up front, a block
/// of 32 per stream, and a `HubMessage` or `Status` is a few hundred bytes.
type Outbound = Box<Result<HubMessage, Status>>;

impl Session {
    async fn run(self, mut inbound: Streaming<AgentMessage>, shutdown: CancellationToken, replaced: CancellationToken) {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => Ok("hub shutting down"),
            _ = replaced.cancelled() => Ok("closed by the hub (a newer stream replaced it, or the cluster was revoked)"),
            result = self.serve(&mut inbound) => result,
        };
        self.hub.connections().close(&self.cluster, self.session);
        match outcome {
            Ok(reason) => {
                tracing::info!(reason, "agent stream closed");
                self.hub.event(&self.cluster, "disconnected", reason.to_string());
            }
            Err(status) => {
                tracing::warn!(error = %status.message(), "agent stream ended with an error");
                let _ = self.tx.try_send(Box::new(Err(status)));
            }
        }
    }

    async fn serve(&self, inbound: &mut Streaming<AgentMessage>) -> Result<&'static str, Status> {
        let mut assignments = self.hub.subscribe_assignment(&self.cluster);
        let mut held = HeldApps::default();
        // The first Hello is answered in a boxed future and dropped before the loop, as is every
        // send: a session's task holds only the loop's state for as long as the agent stays
        // connected (its future: 2,840 bytes with them inline, 1,648 so).
        let mut sent = Box::pin(async {
            let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
                .await
                .map_err(|_| Status::deadline_exceeded("no Hello within 30 s of opening the stream"))??;
            let Some(AgentMessage { kind: Some(AgentKind::Hello(hello)) }) = first else {
                return Err(Status::invalid_argument("the first message on an agent stream must be a Hello"));
            };
            self.hello(&hello, &mut held, &mut assignments).await
        })
        .await?;
        loop {
            tokio::select! {
                changed = assignments.changed() => {
                    if changed.is_err() {
                        return Ok("assignment table closed");
                    }
                    let current = assignments.borrow_and_update().clone();
                    if let Some(assignment) = current
                        && assignment.digest != sent
                    {
                        sent = assignment.digest.clone();
                        Box::pin(self.send_assignment(&assignment, &mut held)).await?;
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(AgentMessage { kind: Some(kind) })) => match kind {
                        AgentKind::Heartbeat(_) => self.hub.connections().touch(&self.cluster, self.session),
                        AgentKind::Report(report) => {
                            self.hub.record_report(&self.cluster, self.session, &Report::from(&report))
                        }
                        AgentKind::Hello(hello) => sent = Box::pin(self.hello(&hello, &mut held, &mut assignments)).await?,
                        AgentKind::Problem(problem) => {
                            if !problem.message.is_empty() {
                                tracing::warn!(problem = %problem.message, "agent could not take what the hub sent");
                            }
                            self.hub.connections().problem(&self.cluster, self.session, problem.message);
                        }
                    },
                    Ok(Some(AgentMessage { kind: None })) => self.hub.connections().touch(&self.cluster, self.session),
                    Ok(None) => return Ok("agent closed the stream"),
                    Err(status) => {
                        tracing::info!(error = %status, "agent stream broke");
                        return Ok("stream broke");
                    }
                },
            }
        }
    }

    /// Answers a Hello: the current assignment, or Unchanged when the agent already holds it
    /// (or when the hub has none yet: the agent keeps enforcing what it has). Returns the digest
    /// the agent now holds.
    async fn hello(
        &self,
        hello: &Hello,
        held: &mut HeldApps,
        assignments: &mut watch::Receiver<Option<Arc<Assignment>>>,
    ) -> Result<String, Status> {
        if !hello.cluster_name.is_empty() && hello.cluster_name != self.cluster {
            tracing::warn!(
                claimed = %hello.cluster_name,
                "agent claims another cluster name in its Hello; ignored, the certificate decides"
            );
        }
        self.hub.connections().hello(&self.cluster, self.session, hello);
        if !hello.kube_version.is_empty() {
            let capabilities =
                Capabilities { kube_version: hello.kube_version.clone(), api_versions: hello.api_versions.clone() };
            self.hub.set_capabilities(&self.cluster, capabilities);
        }
        *held = HeldApps {
            by_digest: hello.apps_by_digest,
            content_zstd: hello.content_zstd,
            digests: HeldDigests::Listed(hello.held_app_digests.iter().cloned().collect()),
        };
        let current = assignments.borrow_and_update().clone();
        match current {
            Some(assignment) if assignment.digest != hello.held_digest => {
                self.send_assignment(&assignment, held).await?;
                Ok(assignment.digest.clone())
            }
            _ => {
                let reply =
                    HubMessage { kind: Some(HubKind::Unchanged(Unchanged { digest: hello.held_digest.clone() })) };
                self.tx.send(Box::new(Ok(reply))).await.map_err(|_| Status::cancelled("agent went away"))?;
                Ok(hello.held_digest.clone())
            }
        }
    }

    /// Sends `assignment`: to an agent that takes apps by digest, the objects of the apps it
    /// does not hold in `AppContent` parts, then the assignment naming every app by digest; to
    /// any other agent, the whole assignment in one message.
    async fn send_assignment(&self, assignment: &Arc<Assignment>, held: &mut HeldApps) -> Result<(), Status> {
        let span = tracing::info_span!("push", cluster = %self.cluster, revision = %assignment.revision);
        telemetry::continue_trace(&span, &assignment.trace_context);
        let wire = if held.by_digest {
            let holds = held.digests.names();
            let missing: Vec<_> = assignment.digested_apps().filter(|(digest, _)| !holds.contains(digest)).collect();
            for (digest, app) in &missing {
                self.send_content(digest, app, held.content_zstd).instrument(span.clone()).await?;
            }
            tracing::info!(parent: &span, revision = %assignment.revision, digest = %assignment.digest,
                apps = assignment.apps.len(), sent_apps = missing.len(), "sending assignment");
            held.digests = HeldDigests::Sent(assignment.clone());
            assignment.to_wire(|_| false)
        } else {
            tracing::info!(parent: &span, revision = %assignment.revision, digest = %assignment.digest, "sending assignment");
            proto::Assignment::from(&**assignment)
        };
        let mut wire = wire;
        wire.trace_context = telemetry::inject(&span);
        self.send(HubKind::Assignment(wire)).instrument(span).await
    }

    /// Sends the objects of one app in parts of about [`CONTENT_PART_BYTES`]; to an agent that
    /// takes them so (`zstd`), parts of [`COMPRESS_FROM_BYTES`] or more as one zstd frame each.
    async fn send_content(&self, digest: &str, app: &AppAssignment, zstd: bool) -> Result<(), Status> {
        let mut part = Vec::new();
        let mut bytes = 0;
        let mut objects = app.objects.iter().peekable();
        loop {
            let next = objects.next();
            if let Some(object) = next {
                // Document order, as in Assignment::to_wire (a SOPS MAC depends on it).
                let json = object.to_string();
                bytes += json.len();
                part.push(json);
            }
            let last = objects.peek().is_none();
            if last || bytes >= CONTENT_PART_BYTES {
                let objects_json = std::mem::take(&mut part);
                let content = if zstd && bytes >= COMPRESS_FROM_BYTES {
                    let packed = pack_objects(&objects_json)
                        .map_err(|e| Status::internal(format!("cannot compress app content: {e}")))?;
                    AppContent { digest: digest.to_string(), objects_json: Vec::new(), last, objects_zstd: packed }
                } else {
                    AppContent { digest: digest.to_string(), objects_json, last, objects_zstd: Vec::new() }
                };
                self.send(HubKind::AppContent(content)).await?;
                bytes = 0;
            }
            if last {
                return Ok(());
            }
        }
    }

    async fn send(&self, kind: HubKind) -> Result<(), Status> {
        let message = Box::new(Ok(HubMessage { kind: Some(kind) }));
        self.tx.send(message).await.map_err(|_| Status::cancelled("agent went away"))
    }
}

/// What the session believes its agent holds: the apps of the last assignment sent (or those its
/// Hello listed), by digest.
#[derive(Default)]
struct HeldApps {
    /// The agent takes apps by digest (said so in its Hello).
    by_digest: bool,
    /// The agent takes app contents zstd-compressed (said so in its Hello).
    content_zstd: bool,
    digests: HeldDigests,
}

/// The digests of the apps an agent holds.
enum HeldDigests {
    /// As its Hello listed them.
    Listed(HashSet<String>),
    /// Those of the assignment last sent: shared with the assignment table, so an idle stream
    /// keeps no copy of its own.
    Sent(Arc<Assignment>),
}

impl Default for HeldDigests {
    fn default() -> Self {
        HeldDigests::Listed(HashSet::new())
    }
}

impl HeldDigests {
    fn names(&self) -> HashSet<&str> {
        match self {
            HeldDigests::Listed(digests) => digests.iter().map(String::as_str).collect(),
            HeldDigests::Sent(assignment) => assignment.app_digests.iter().map(String::as_str).collect(),
        }
    }
}
