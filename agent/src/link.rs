//! The agent's link to the hub: dial out over mutual TLS, say Hello, heartbeat, take what the
//! hub sends (converted to the model at this edge), stream reports from the [`ReportQueue`], and
//! after any failure reconnect with capped exponential backoff and jitter.

use crate::discovery::ServerCapabilities;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use convoy_shared::backoff::Backoff;
use convoy_shared::clock::unix_ms;
use convoy_shared::model::report::Report;
use convoy_shared::model::{Assignment, AssignmentError, HeldObjects, unpack_objects};
use convoy_shared::proto::agent_message::Kind as AgentKind;
use convoy_shared::proto::agent_service_client::AgentServiceClient;
use convoy_shared::proto::hub_message::Kind as HubKind;
use convoy_shared::proto::{self, AgentMessage, AppContent, Heartbeat, Hello, HubMessage, LinkProblem};
use convoy_shared::tls::{self, HubAddress, TlsError};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::report_queue::ReportQueue;

/// Largest message the link takes or sends. A current hub sends apps in parts of about 1 MiB
/// (an object is at most 1.5 MiB), so this leaves room for an older hub's whole assignments;
/// reports on tens of thousands of objects run to several MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// How the agent reaches the hub.
#[derive(Clone)]
pub struct LinkConfig {
    pub hub: HubAddress,
    pub tls: Arc<rustls::ClientConfig>,
    /// The cluster name the agent believes it has; the hub trusts only the certificate.
    pub cluster_name: String,
    pub heartbeat: Duration,
    pub backoff: Backoff,
    pub connect_timeout: Duration,
    /// What the cluster's API server offers, said in Hello.
    pub capabilities: ServerCapabilities,
}

/// Errors of one session with the hub.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Connect(#[from] TlsError),
    #[error("{}", convoy_shared::link_error::explain(.0))]
    Call(#[from] tonic::Status),
    #[error("the hub closed the stream")]
    Closed,
}

/// What the link is doing now, for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Connected,
    /// The last session failed; the next attempt comes after `retry_in`.
    Disconnected {
        error: String,
        retry_in: Duration,
    },
    Stopped,
}

/// The agent side of the hub link. Holds the latest assignment the hub sent.
pub struct HubLink {
    config: LinkConfig,
    state: watch::Sender<LinkState>,
    assignment: watch::Sender<Option<Arc<Assignment>>>,
    reports: ReportQueue,
}

/// What other parts of the agent (and tests) read from the link, and where reports go.
#[derive(Clone)]
pub struct LinkHandle {
    pub state: watch::Receiver<LinkState>,
    /// The latest assignment (the cached one until the hub sends another).
    pub assignment: watch::Receiver<Option<Arc<Assignment>>>,
    /// Reports to send; held while the hub is unreachable and flushed on reconnect.
    pub reports: ReportQueue,
}

impl HubLink {
    /// A link that will start from `held` (e.g. the cached assignment).
    pub fn new(config: LinkConfig, held: Option<Arc<Assignment>>) -> (Self, LinkHandle) {
        Self::with_queue(config, held, ReportQueue::default())
    }

    /// Like [`HubLink::new`], sending the reports pushed to `reports`.
    pub fn with_queue(config: LinkConfig, held: Option<Arc<Assignment>>, reports: ReportQueue) -> (Self, LinkHandle) {
        let (state, state_rx) = watch::channel(LinkState::Connecting);
        let (assignment, assignment_rx) = watch::channel(held);
        (
            HubLink { config, state, assignment, reports: reports.clone() },
            LinkHandle { state: state_rx, assignment: assignment_rx, reports },
        )
    }

    /// Keeps a session with the hub open until `shutdown`, reconnecting after every failure.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            self.state.send_replace(LinkState::Connecting);
            let mut connected = false;
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                result = self.session(&mut connected, &shutdown) => result,
            };
            if shutdown.is_cancelled() {
                break;
            }
            // A session that got as far as the hub's answer resets the backoff.
            failures = if connected { 1 } else { failures + 1 };
            let retry_in = self.config.backoff.delay(failures);
            let error = match result {
                Ok(()) => "the hub ended the session".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(hub = %self.config.hub.address, %error, retry_in_ms = retry_in.as_millis() as u64, "hub link down; reconnecting");
            self.state.send_replace(LinkState::Disconnected { error, retry_in });
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(retry_in) => {}
            }
        }
        self.state.send_replace(LinkState::Stopped);
    }

    /// One session: dial, Hello, then heartbeats and hub messages until something breaks.
    async fn session(&self, connected: &mut bool, shutdown: &CancellationToken) -> Result<(), LinkError> {
        let channel = tls::connect(&self.config.hub, self.config.tls.clone(), self.config.connect_timeout).await?;
        // App contents come compressed one by one (`Hello.content_zstd`), in parts far below the
        // limit; no gRPC compression, whose buffers the hub would keep per stream.
        let mut client = AgentServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel(16);
        tx.send(AgentMessage { kind: Some(AgentKind::Hello(self.hello())) }).await.map_err(|_| LinkError::Closed)?;
        let mut inbox = Inbox::default();
        let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
        // The hub may have missed our last state while we were away: a full snapshot first,
        // unless queued reports are about to bring it.
        if self.reports.is_empty()
            && let Some(last) = self.reports.last()
        {
            send_report(&tx, &last).await?;
        }
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = heartbeat.tick() => {
                    let beat = Heartbeat {
                        sent_unix_ms: unix_ms(),
                        queued_reports: self.reports.len() as u32,
                    };
                    if tx.send(AgentMessage { kind: Some(AgentKind::Heartbeat(beat)) }).await.is_err() {
                        return Err(LinkError::Closed);
                    }
                }
                _ = self.reports.ready() => self.flush(&tx).await?,
                message = inbound.message() => match message? {
                    None => return Err(LinkError::Closed),
                    Some(message) => {
                        if !*connected {
                            *connected = true;
                            tracing::info!(hub = %self.config.hub.address, "connected to the hub");
                            self.state.send_replace(LinkState::Connected);
                        }
                        if self.receive(message, &mut inbox, &tx).await? && let Some(last) = self.reports.last() {
                            send_report(&tx, &last).await?;
                        }
                        // Anything queued before the session opened goes out now.
                        self.flush(&tx).await?;
                    }
                },
            }
        }
    }

    /// Sends every queued report; one that cannot be sent goes back to the queue.
    async fn flush(&self, tx: &mpsc::Sender<AgentMessage>) -> Result<(), LinkError> {
        while let Some(report) = self.reports.pop() {
            if let Err(e) = send_report(tx, &report).await {
                self.reports.requeue(report);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The Hello: what the agent holds, and that it takes apps by digest.
    fn hello(&self) -> Hello {
        let held = self.assignment.borrow().clone();
        Hello {
            agent_version: convoy_shared::VERSION.to_string(),
            held_digest: held.as_ref().map(|a| a.digest.clone()).unwrap_or_default(),
            applied_revision: self.reports.applied_revision(),
            cluster_name: self.config.cluster_name.clone(),
            held_app_digests: held.as_ref().map(|a| a.app_digests.clone()).unwrap_or_default(),
            apps_by_digest: true,
            content_zstd: true,
            kube_version: self.config.capabilities.kube_version.clone(),
            api_versions: self.config.capabilities.api_versions.clone(),
        }
    }

    /// Handles one hub message; returns true when the hub asked for a full report. An
    /// assignment the agent cannot take is reported to the hub (and shown in status) while the
    /// agent keeps enforcing what it holds; when it lacks an app, it says Hello again so the hub
    /// sends what it holds anew, once per assignment.
    async fn receive(
        &self,
        message: HubMessage,
        inbox: &mut Inbox,
        tx: &mpsc::Sender<AgentMessage>,
    ) -> Result<bool, LinkError> {
        match message.kind {
            Some(HubKind::AppContent(content)) => inbox.take_part(content),
            Some(HubKind::Assignment(wire)) => {
                let held = self.assignment.borrow().clone();
                let read = Assignment::from_wire(&wire, |digest| inbox.objects_of(digest, held.as_deref()));
                inbox.parts.clear();
                let assignment = match read {
                    Ok(a) => a,
                    Err(e) => {
                        let problem = format!(
                            "cannot take assignment {} (revision {}): {e}; enforcing the one held",
                            wire.digest, wire.revision
                        );
                        tracing::error!(%problem, "the hub sent an assignment that cannot be read; keeping the current one");
                        send_problem(tx, problem.clone()).await?;
                        inbox.problem = Some(problem);
                        if matches!(e, AssignmentError::MissingApp { .. } | AssignmentError::DigestMismatch { .. })
                            && inbox.asked_again.as_deref() != Some(wire.digest.as_str())
                        {
                            inbox.asked_again = Some(wire.digest.clone());
                            let hello = AgentMessage { kind: Some(AgentKind::Hello(self.hello())) };
                            tx.send(hello).await.map_err(|_| LinkError::Closed)?;
                        }
                        return Ok(false);
                    }
                };
                if inbox.problem.take().is_some() {
                    send_problem(tx, String::new()).await?;
                }
                let same = held
                    .as_ref()
                    .is_some_and(|held| held.digest == assignment.digest && held.failed == assignment.failed);
                if same {
                    tracing::debug!(digest = %assignment.digest, "assignment re-sent unchanged");
                    return Ok(false);
                }
                tracing::info!(revision = %assignment.revision, digest = %assignment.digest, apps = assignment.apps.len(), "new assignment");
                self.assignment.send_replace(Some(Arc::new(assignment)));
            }
            Some(HubKind::Unchanged(unchanged)) => {
                tracing::debug!(digest = %unchanged.digest, "assignment unchanged")
            }
            Some(HubKind::Resync(resync)) => {
                tracing::info!(reason = %resync.reason, "hub asked for a resync");
                return Ok(true);
            }
            None => {}
        }
        Ok(false)
    }
}

/// What one session has received towards the next assignment.
#[derive(Default)]
struct Inbox {
    /// Objects of apps sent in `AppContent` parts, by digest, and whether the last part came.
    parts: HashMap<String, (Vec<String>, bool)>,
    /// The problem last reported to the hub, cleared (and the hub told) by the next good assignment.
    problem: Option<String>,
    /// The assignment the agent already said Hello again for, so it asks once, not in a loop.
    asked_again: Option<String>,
}

impl Inbox {
    /// Takes one part of an app's objects. A compressed part that does not read leaves the app
    /// incomplete: the assignment naming it is then missing an app, and the agent asks again.
    fn take_part(&mut self, content: AppContent) {
        let objects = if content.objects_zstd.is_empty() {
            content.objects_json
        } else {
            match unpack_objects(&content.objects_zstd) {
                Ok(objects) => objects,
                Err(e) => {
                    tracing::error!(digest = %content.digest, error = %e, "a compressed app content part does not read");
                    self.parts.remove(&content.digest);
                    return;
                }
            }
        };
        let (held, complete) = self.parts.entry(content.digest).or_default();
        held.extend(objects);
        *complete = content.last;
    }

    /// The app with `digest`: its objects just sent (complete), else the held assignment's app.
    fn objects_of(&mut self, digest: &str, held: Option<&Assignment>) -> Option<HeldObjects> {
        if let Some((objects, true)) = self.parts.remove(digest) {
            return Some(HeldObjects::Sent(objects));
        }
        held?.digested_apps().find(|(d, _)| *d == digest).map(|(_, app)| HeldObjects::Held(app.clone()))
    }
}

async fn send_problem(tx: &mpsc::Sender<AgentMessage>, message: String) -> Result<(), LinkError> {
    let problem = AgentMessage { kind: Some(AgentKind::Problem(LinkProblem { message })) };
    tx.send(problem).await.map_err(|_| LinkError::Closed)
}

async fn send_report(tx: &mpsc::Sender<AgentMessage>, report: &Report) -> Result<(), LinkError> {
    let message = AgentMessage { kind: Some(AgentKind::Report(proto::Report::from(report))) };
    tx.send(message).await.map_err(|_| LinkError::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    use convoy_shared::model::{AppAssignment, canonical_json};
    use serde_json::json;

    fn app(name: &str, data: &str) -> AppAssignment {
        AppAssignment {
            ignore_differences: Vec::new(),
            health_rules: Vec::new(),
            name: name.into(),
            policy: Default::default(),
            depends_on: vec![],
            objects: vec![
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "n"}, "data": {"k": data}}),
            ]
            .into(),
            render_error: None,
        }
    }

    fn link_holding(held: &Assignment) -> (HubLink, LinkHandle) {
        convoy_shared::install_crypto_provider();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let config = LinkConfig {
            hub: HubAddress::parse("localhost:1", None).unwrap(),
            tls: Arc::new(tls),
            cluster_name: "c1".into(),
            heartbeat: Duration::from_secs(1),
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(1),
            capabilities: Default::default(),
        };
        HubLink::new(config, Some(Arc::new(held.clone())))
    }

    fn assignment_message(a: &Assignment) -> HubMessage {
        HubMessage { kind: Some(HubKind::Assignment(a.to_wire(|_| false))) }
    }

    #[tokio::test]
    async fn an_app_never_sent_is_reported_once_and_the_held_assignment_stays() {
        let held = Assignment::new("c1", "dev", "r1", vec![app("a", "1")], false);
        let next = Assignment::new("c1", "dev", "r2", vec![app("a", "1"), app("b", "2")], false);
        let (link, handle) = link_holding(&held);
        let (tx, mut rx) = mpsc::channel(8);
        let mut inbox = Inbox::default();

        // App b comes by digest but was never sent: say so, and say Hello again (once).
        link.receive(assignment_message(&next), &mut inbox, &tx).await.unwrap();
        let Some(AgentKind::Problem(problem)) = rx.try_recv().unwrap().kind else { panic!("a problem first") };
        assert!(problem.message.contains("app 'b'") && problem.message.contains(&next.digest), "{}", problem.message);
        let Some(AgentKind::Hello(hello)) = rx.try_recv().unwrap().kind else { panic!("then a Hello") };
        assert!(hello.apps_by_digest);
        assert_eq!(hello.held_app_digests, held.app_digests);
        assert_eq!(handle.assignment.borrow().as_ref().unwrap().digest, held.digest, "keeps enforcing what it holds");
        link.receive(assignment_message(&next), &mut inbox, &tx).await.unwrap();
        assert!(matches!(rx.try_recv().unwrap().kind, Some(AgentKind::Problem(_))));
        assert!(rx.try_recv().is_err(), "no second Hello for the same assignment: no loop");

        // Sent properly this time (b in a compressed part; a from what it holds): taken, and the
        // problem cleared.
        let objects: Vec<String> = next.apps[1].objects.iter().map(canonical_json).collect();
        let packed = convoy_shared::model::pack_objects(&objects).unwrap();
        let digest = next.app_digests[1].clone();
        let content = AppContent { digest, objects_json: Vec::new(), last: true, objects_zstd: packed };
        link.receive(HubMessage { kind: Some(HubKind::AppContent(content)) }, &mut inbox, &tx).await.unwrap();
        link.receive(assignment_message(&next), &mut inbox, &tx).await.unwrap();
        let Some(AgentKind::Problem(cleared)) = rx.try_recv().unwrap().kind else { panic!("the problem is cleared") };
        assert!(cleared.message.is_empty());
        assert_eq!(**handle.assignment.borrow().as_ref().unwrap(), next);
    }
}
