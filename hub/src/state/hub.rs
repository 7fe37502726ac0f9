//! The hub's shared state. [`Hub`] is what every service reads (and what the agent edge records
//! reports into); [`Publisher`] is the one writer of the published view and the assignments,
//! owned by the sync loop — the reflector's "one writer, many readers".

use convoy_model::analysis::Measurement;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use convoy_render::helm::Capabilities;
use convoy_shared::clock::unix_ms;
use convoy_shared::model::Assignment;
use convoy_shared::model::report::{Report, failure_lines};
use convoy_shared::proto::{self, ClusterInfo, FleetEvent, HistoryEntry};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};

use crate::release::rollout::{Command, Rollout, RolloutError};
use crate::state::access::AccessControl;
use crate::state::assignments::AssignmentTable;
use crate::state::connections::ConnectionTable;
use crate::state::metrics::HubMetrics;
use crate::state::registry::{Registry, RegistryConfig};
use crate::state::view::FleetView;
use crate::store::memory::MemoryStore;
use crate::store::postgres::PgStore;
use crate::store::writer::StoreWriter;
use crate::store::{Store, StoreError, StoreEvent};

/// Apply failures one report may announce as `apply-failed` events.
const MAX_FAILURE_EVENTS: usize = 10;
/// Fleet events kept for watchers that read slowly. A change across the fleet is two events per
/// cluster (assigned, applied) within a second or two: this holds one across 10,000 clusters
/// with room, so `convoy watch` and the dashboard follow it without losing events (a watcher
/// that still falls behind is told how many it missed).
const EVENT_BACKLOG: usize = 32 * 1024;
/// Rollout actions waiting for the sync loop.
const ENVIRONMENT_REQUESTS: usize = 16;

/// Why a rollout action was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum RolloutActionError {
    #[error(
        "this hub runs no rollouts or rollbacks: it reads no repository (--repo), or it is a replica that does not lead (ask the leading one, `convoy_leader.holder` in the database)"
    )]
    NoSource,
    #[error(transparent)]
    Refused(RolloutError),
}

/// Everything the hub's services share. Fields are private: services read through methods, and
/// only the [`Publisher`] changes the view and the assignments.
#[derive(Debug)]
pub struct Hub {
    connections: ConnectionTable,
    assignments: AssignmentTable,
    /// The fleet as of the last sync; swapped whole, read briefly (never across an await).
    view: RwLock<Arc<FleetView>>,
    /// Wakes the sync loop at once (webhook, `convoy refresh`).
    refresh: Notify,
    /// Tells the sync loop an agent reported, so a rollout in progress steps at once.
    reported: Notify,
    store: Arc<dyn Store>,
    metrics: HubMetrics,
    /// Fleet events for `convoy watch`; a watcher that falls behind is told how many it missed.
    events: broadcast::Sender<FleetEvent>,
    /// Bootstrap tokens, certificate signing and revocations.
    registry: Arc<Registry>,
    /// Owned by the hub: the writer task ends once the hub is dropped; [`Hub::flush_store`]
    /// waits for what is queued.
    writer: StoreWriter,
    /// People's rollout actions, answered by the sync loop (the [`Publisher`]'s owner).
    environment_requests: mpsc::Sender<EnvironmentRequest>,
    /// What each cluster's agent said its API server offers (for charts' `.Capabilities`).
    /// Shared, so that each sync's copy of the fleet's map is one reference per cluster.
    capabilities: std::sync::Mutex<HashMap<String, Arc<Capabilities>>>,
    /// Who may do what, and the audit log.
    access: AccessControl,
    /// The hub's own metric-gate measurements (`from: hub`), by environment and check.
    gate_measurements: std::sync::Mutex<HashMap<String, BTreeMap<String, Measurement>>>,
}

/// A person's command on an environment for the sync loop to carry out, with where to send
/// the answer.
#[derive(Debug)]
pub struct EnvironmentRequest {
    pub environment: String,
    pub command: Command,
    pub reply: oneshot::Sender<Result<String, RolloutError>>,
}

/// The one writer of the hub's published view and assignments. Not `Clone`: [`Hub::new`] makes
/// exactly one, for the sync loop.
#[derive(Debug)]
pub struct Publisher {
    hub: Arc<Hub>,
    /// Only the sync loop reads it (the lock is never contended).
    requests: tokio::sync::Mutex<mpsc::Receiver<EnvironmentRequest>>,
    /// The database replicas share, when this hub is one of several: a leader's assignments are
    /// written there (fenced) before its own agents see them.
    replicas: Option<Arc<PgStore>>,
}

impl Hub {
    /// A hub over `store`, with the last reports and revocations it kept, signing agent
    /// certificates as `registry` says. Must run inside a runtime (it starts the store's writer
    /// task). Returns the shared hub and its one [`Publisher`].
    pub fn new(store: Arc<dyn Store>, registry: RegistryConfig) -> Result<(Arc<Hub>, Publisher), StoreError> {
        let (writer, _task) = StoreWriter::spawn(store.clone());
        let (environment_requests, requests) = mpsc::channel(ENVIRONMENT_REQUESTS);
        let hub = Hub {
            environment_requests,
            connections: ConnectionTable::default(),
            assignments: AssignmentTable::default(),
            view: RwLock::default(),
            refresh: Notify::new(),
            reported: Notify::new(),
            store: store.clone(),
            registry: Arc::new(Registry::load(store.clone(), registry)?),
            metrics: HubMetrics::default(),
            events: broadcast::channel(EVENT_BACKLOG).0,
            writer,
            capabilities: Default::default(),
            gate_measurements: Default::default(),
            access: AccessControl::new(store.clone()),
        };
        if let Some((commit, spec)) = store.access_policy()? {
            hub.access.restore(&commit, &spec);
        }
        for (cluster, report) in store.last_reports()? {
            // A cluster revoked after its last report (retired, or revoked) is not brought back.
            if hub.registry.revoked_at(&cluster).is_none_or(|at| at < report.at_unix_ms) {
                hub.connections.restore(&cluster, report);
            }
        }
        let hub = Arc::new(hub);
        Ok((hub.clone(), Publisher { hub, requests: tokio::sync::Mutex::new(requests), replicas: None }))
    }

    /// A hub that keeps its state in memory only.
    pub fn in_memory(registry: RegistryConfig) -> (Arc<Hub>, Publisher) {
        Hub::new(Arc::new(MemoryStore::default()), registry).expect("the memory store cannot fail")
    }

    /// The access policy in force and the audit log.
    pub fn access(&self) -> &AccessControl {
        &self.access
    }

    /// The live agent links.
    pub fn connections(&self) -> &ConnectionTable {
        &self.connections
    }

    /// `cluster`'s current assignment.
    pub fn assignment(&self, cluster: &str) -> Option<Arc<Assignment>> {
        self.assignments.get(cluster)
    }

    /// A receiver that sees `cluster`'s assignment now and every change from here on.
    pub fn subscribe_assignment(&self, cluster: &str) -> watch::Receiver<Option<Arc<Assignment>>> {
        self.assignments.subscribe(cluster)
    }

    /// Tokens, signing and revocations.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The store, for reads (history); writes go through the hub's writer.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The hub's Prometheus metrics.
    pub fn metrics(&self) -> &HubMetrics {
        &self.metrics
    }

    /// Asks the sync loop to fetch now.
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Records what `cluster`'s API server offers, as its agent said in Hello; when it is new
    /// or changed, the sync loop plans again so the cluster's charts see it.
    pub fn set_capabilities(&self, cluster: &str, capabilities: Capabilities) {
        let mut known = self.capabilities.lock().expect("capabilities lock");
        if known.get(cluster).is_none_or(|known| **known != capabilities) {
            known.insert(cluster.to_string(), Arc::new(capabilities));
            self.request_refresh();
        }
    }

    /// What every cluster's agent said its API server offers.
    pub fn capabilities(&self) -> HashMap<String, Arc<Capabilities>> {
        self.capabilities.lock().expect("capabilities lock").clone()
    }

    /// Keeps `m` as the latest run of its check for `environment` (`from: hub`); a rollout in
    /// progress steps at once when it says something new.
    pub fn gate_measured(&self, environment: &str, m: Measurement) {
        let mut all = self.gate_measurements.lock().expect("gate measurements lock");
        let before = all.entry(environment.to_string()).or_default().insert(m.check.clone(), m.clone());
        if before.is_none_or(|b| b != m) {
            self.reported.notify_one();
        }
    }

    /// The hub's latest measurements for `environment`.
    pub fn gate_measurements(&self, environment: &str) -> Vec<Measurement> {
        let all = self.gate_measurements.lock().expect("gate measurements lock");
        all.get(environment).map(|checks| checks.values().cloned().collect()).unwrap_or_default()
    }

    /// Asks the sync loop to carry out `command` on `environment`; returns what it did.
    pub async fn command(&self, environment: &str, command: Command) -> Result<String, RolloutActionError> {
        let (reply, answer) = oneshot::channel();
        let request = EnvironmentRequest { environment: environment.to_string(), command, reply };
        self.environment_requests.send(request).await.map_err(|_| RolloutActionError::NoSource)?;
        answer.await.map_err(|_| RolloutActionError::NoSource)?.map_err(RolloutActionError::Refused)
    }

    /// Fleet events from now on, for `convoy watch`.
    pub fn subscribe_events(&self) -> broadcast::Receiver<FleetEvent> {
        self.events.subscribe()
    }

    /// Every cluster the hub knows: declared in Git, seen on an agent stream, or assigned (by the
    /// leading replica).
    pub fn cluster_infos(&self) -> Vec<ClusterInfo> {
        let view = self.view();
        let mut out: BTreeMap<String, ClusterInfo> =
            self.connections.list().into_iter().map(|c| (c.name.clone(), c)).collect();
        if let Some(fleet) = &view.fleet {
            for name in fleet.clusters.keys() {
                out.entry(name.clone()).or_insert_with(|| ClusterInfo { name: name.clone(), ..Default::default() });
            }
        }
        // A follower replica has no fleet view of its own: the leader's assignments name the
        // clusters too.
        for assignment in self.assignments.all() {
            out.entry(assignment.cluster.clone())
                .or_insert_with(|| ClusterInfo { name: assignment.cluster.clone(), ..Default::default() });
        }
        out.into_values().map(|info| self.complete(&view, info)).collect()
    }

    /// One cluster's [`ClusterInfo`], as [`Hub::cluster_infos`] has it, without building every
    /// other cluster's (a fleet of 10,000 made each `convoy history CLUSTER` build 10,000).
    pub fn cluster_info(&self, name: &str) -> Option<ClusterInfo> {
        let view = self.view();
        let declared =
            view.fleet.as_ref().is_some_and(|f| f.clusters.contains_key(name)) || self.assignments.get(name).is_some();
        let info = match self.connections.get(name) {
            Some(info) => info,
            None if declared => ClusterInfo { name: name.to_string(), ..Default::default() },
            None => return None,
        };
        Some(self.complete(&view, info))
    }

    /// Adds what Git declares (environment, labels) and what is assigned to a cluster's link info.
    fn complete(&self, view: &FleetView, mut info: ClusterInfo) -> ClusterInfo {
        if let Some(cluster) = view.fleet.as_ref().and_then(|f| f.clusters.get(&info.name)) {
            info.environment = cluster.environment.clone();
            info.labels = cluster.labels.clone().into_iter().collect();
        }
        // Git's fleet model no longer declares it, but it still has what it was last assigned.
        info.orphaned = view.fleet.as_ref().is_some_and(|f| !f.clusters.contains_key(&info.name));
        if let Some(assignment) = self.assignments.get(&info.name) {
            info.assigned_revision = assignment.revision.clone();
            info.assigned_digest = assignment.digest.clone();
            info.in_sync = info.applied_digest == assignment.digest;
            if info.environment.is_empty() {
                info.environment = assignment.environment.clone();
            }
        }
        info
    }

    /// The fleet as of the last sync.
    pub fn view(&self) -> Arc<FleetView> {
        self.view.read().expect("view lock").clone()
    }

    /// Digest of the newest "assigned" entry in `cluster`'s stored history.
    fn last_assigned(&self, cluster: &str) -> Option<String> {
        let recent = self.store.history(cluster, 16).ok()?;
        recent.into_iter().find(|e| e.event == "assigned").map(|e| e.digest)
    }

    /// Takes an agent's report: live status, the store, and history when it applied something new.
    pub fn record_report(&self, cluster: &str, session: u64, report: &Report) {
        self.metrics.reports_received.inc();
        let report = proto::Report::from(report);
        // Objects that newly failed to apply are events for `convoy watch` (a report repeating
        // them says nothing new); a report without failures costs nothing here.
        let failing = failure_lines(&report);
        if !failing.is_empty() {
            let before: std::collections::HashSet<String> = self
                .connections
                .last_report(cluster)
                .map(|r| failure_lines(&r))
                .unwrap_or_default()
                .into_iter()
                .collect();
            for line in failing.into_iter().filter(|l| !before.contains(l)).take(MAX_FAILURE_EVENTS) {
                self.event(cluster, "apply-failed", line);
            }
        }
        let change = self.connections.report(cluster, session, &report);
        if change.newly_applied {
            self.history(cluster, "applied", &report.revision, &report.digest, "");
        }
        if let Some((before, after)) = change.health {
            self.event(
                cluster,
                "health",
                format!("{} → {}", convoy_shared::health_label(before), convoy_shared::health_label(after)),
            );
        }
        if let Some(count) = change.drifts {
            self.event(cluster, "drift", format!("{count} drifted objects"));
        }
        self.writer.record(StoreEvent::Report { cluster: cluster.to_string(), report });
        self.reported.notify_one();
    }

    /// Takes a report another replica received and stored (its agent streams there).
    pub fn relay_report(&self, cluster: &str, report: proto::Report) {
        self.connections.relayed(cluster, report);
        self.reported.notify_one();
    }

    /// Takes a revocation another replica recorded: the cluster is refused here too, and its
    /// stream here closed.
    pub fn relay_revocation(&self, cluster: &str, at: i64) {
        self.registry.relay_revocation(cluster, at);
        if let Some(user) = cluster.strip_prefix("user/") {
            self.access.user_revoked(user);
            return;
        }
        if self.connections.disconnect(cluster) {
            tracing::warn!(cluster, "revoked on another replica; its stream here is closed");
        }
    }

    /// Waits until every report and history entry recorded so far is in the store.
    pub async fn flush_store(&self) {
        self.writer.flush().await;
    }

    /// Events waiting for the store's writer.
    pub fn store_queued(&self) -> usize {
        self.writer.queued()
    }

    /// Forgets `cluster` (retired: Git no longer declares it and its certificates are revoked):
    /// its stream is closed, its assignment and live state dropped. True when a stream was open.
    pub fn forget(&self, cluster: &str) -> bool {
        let closed = self.connections.forget(cluster);
        self.assignments.remove(cluster);
        self.event(cluster, "retired", "forgotten by the hub; nothing in the cluster was touched".into());
        closed
    }

    /// Tells watchers something happened to `cluster` (no one listening is fine).
    pub fn event(&self, cluster: &str, kind: &str, detail: String) {
        let _ = self.events.send(FleetEvent {
            at_unix_ms: unix_ms(),
            cluster: cluster.to_string(),
            kind: kind.to_string(),
            detail,
        });
    }

    fn history(&self, cluster: &str, event: &str, revision: &str, digest: &str, detail: &str) {
        self.event(cluster, event, format!("revision {revision} digest {digest}"));
        let entry = HistoryEntry {
            at_unix_ms: unix_ms(),
            revision: revision.to_string(),
            digest: digest.to_string(),
            event: event.to_string(),
            detail: detail.to_string(),
        };
        self.writer.record(StoreEvent::History { cluster: cluster.to_string(), entry });
    }
}

impl Publisher {
    /// The hub this publisher writes to.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The next rollout action people asked for.
    pub async fn next_request(&self) -> Option<EnvironmentRequest> {
        self.requests.lock().await.recv().await
    }

    /// Keeps (or with `None` lifts) an environment's pin in the store.
    pub fn record_pin(&self, environment: &str, commit: Option<&str>) {
        let (environment, commit) = (environment.to_string(), commit.map(str::to_string));
        self.hub.writer.record(StoreEvent::Pin { environment, commit });
    }

    /// Keeps the access policy now in force, for followers and restarts.
    pub fn record_access(&self, commit: &str, spec: String) {
        self.hub.writer.record(StoreEvent::Access { commit: commit.to_string(), spec });
    }

    /// Records `event` in `cluster`'s history (and tells watchers).
    pub fn note(&self, cluster: &str, event: &str, revision: &str, detail: &str) {
        self.hub.history(cluster, event, revision, "", detail);
    }

    /// Keeps `rollout` in the store, replacing its track's previous one (the environment's, or
    /// an app's own: `ENV/APP`).
    pub fn record_rollout(&self, rollout: &Rollout) {
        match serde_json::to_string(rollout) {
            Ok(state) => {
                let environment = rollout.track();
                self.hub.writer.record(StoreEvent::Rollout { environment, state });
            }
            Err(e) => tracing::error!(error = %e, "a rollout cannot be encoded for the store"),
        }
    }

    /// Resolves when an agent reported since the last call.
    pub async fn report_arrived(&self) {
        self.hub.reported.notified().await;
    }

    /// Resolves when someone asks for a fetch now ([`Hub::request_refresh`]).
    pub async fn refresh_requested(&self) {
        self.hub.refresh.notified().await;
    }

    /// Replaces the fleet view.
    pub fn set_view(&self, view: FleetView) {
        *self.hub.view.write().expect("view lock") = Arc::new(view);
    }

    /// Changes a copy of the fleet view's status fields and swaps it in.
    pub fn update_view(&self, change: impl FnOnce(&mut FleetView)) {
        let mut guard = self.hub.view.write().expect("view lock");
        let mut next = (**guard).clone();
        change(&mut next);
        *guard = Arc::new(next);
    }

    /// From now on, writes every assignment it publishes to the replicas' database first, under
    /// this replica's fence (see [`crate::store::leadership`]).
    pub fn replicate_to(&mut self, store: Arc<PgStore>) {
        self.replicas = Some(store);
    }

    /// Serves an assignment the leading replica published (nothing is recorded: the leader did).
    pub fn follow(&self, assignment: Arc<Assignment>) {
        if self.hub.assignments.publish(assignment) {
            self.hub.metrics.assignments_published.inc();
        }
    }

    /// Publishes clusters' assignments; returns how many changed in content (each recorded in
    /// its cluster's history). On a replica they are written to the database first, in one
    /// fenced transaction: when the database refuses the write (the fence, or it went away)
    /// none of them is published, and `None` says so.
    pub fn publish(&self, assignments: Vec<Arc<Assignment>>) -> Option<usize> {
        if let Some(replicas) = &self.replicas {
            let news: Vec<Arc<Assignment>> = assignments
                .iter()
                .filter(|a| {
                    self.hub
                        .assignments
                        .get(&a.cluster)
                        .is_none_or(|c| c.digest != a.digest || c.revision != a.revision)
                })
                .cloned()
                .collect();
            if !news.is_empty() {
                if let Err(e) = replicas.publish(&news) {
                    tracing::error!(clusters = news.len(), error = %e, "assignments not published; trying again");
                    return None;
                }
                // What the assignments replaced is deleted from the database later.
                replicas.prune_soon();
            }
        }
        Some(assignments.into_iter().filter(|a| self.serve(a.clone())).count())
    }

    /// Serves `assignment` to its cluster's agent; true when its content changed (then it is
    /// recorded in the cluster's history).
    fn serve(&self, assignment: Arc<Assignment>) -> bool {
        let (cluster, revision, digest) =
            (assignment.cluster.clone(), assignment.revision.clone(), assignment.digest.clone());
        // Remote charts as resolved, so history tells which bits each app was rendered from.
        let charts: Vec<String> =
            assignment.chart_sources.iter().map(|(app, source)| format!("{app}: {source}")).collect();
        let charts = charts.join("; ");
        // A restarted hub's first plan re-publishes what its history already says was assigned:
        // that is no news for `convoy history` or watchers.
        let recorded = self.hub.assignments.get(&cluster).is_none()
            && self.hub.last_assigned(&cluster).is_some_and(|last| last == digest);
        let changed = self.hub.assignments.publish(assignment);
        if changed {
            self.hub.metrics.assignments_published.inc();
            tracing::debug!(cluster, revision, "assignment published");
            if !recorded {
                self.hub.history(&cluster, "assigned", &revision, &digest, &charts);
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(greeting: &str) -> Arc<Assignment> {
        Arc::new(crate::testing::assignment("eu-1", greeting))
    }

    async fn assigned(store: &dyn Store, count: usize) -> Vec<String> {
        for _ in 0..200 {
            let history = store.history("eu-1", 10).unwrap();
            let revisions: Vec<String> =
                history.into_iter().filter(|e| e.event == "assigned").map(|e| e.revision).collect();
            if revisions.len() >= count {
                return revisions;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("fewer than {count} assigned entries were written");
    }

    #[tokio::test]
    async fn a_restarted_hub_does_not_record_the_same_assignment_again() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let (hub, publisher) = Hub::new(store.clone(), RegistryConfig::default()).unwrap();
        assert_eq!(publisher.publish(vec![assignment("r1")]), Some(1));
        assert_eq!(assigned(&*store, 1).await, ["r1"]);
        drop((hub, publisher));

        let (restarted, publisher) = Hub::new(store.clone(), RegistryConfig::default()).unwrap();
        let mut watch = restarted.subscribe_events();
        assert_eq!(publisher.publish(vec![assignment("r1")]), Some(1), "agents are still told");
        assert!(watch.try_recv().is_err(), "no 'assigned' event for what was assigned before the restart");
        assert_eq!(publisher.publish(vec![assignment("r2")]), Some(1));
        assert_eq!(assigned(&*store, 2).await, ["r2", "r1"]);
    }

    #[tokio::test]
    async fn an_apps_own_rollout_is_kept_beside_its_environments() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let (hub, publisher) = Hub::new(store.clone(), RegistryConfig::default()).unwrap();
        let spec: convoy_render::fleet::RolloutSpec = serde_json::from_value(serde_json::json!({"waves": []})).unwrap();
        let environments = Rollout::settled("prod", &spec, "c1", &[], 0);
        let mons = Rollout::settled("prod", &spec, "c2", &[], 0).of_app(Some("mon"));
        publisher.record_rollout(&environments);
        publisher.record_rollout(&mons);
        hub.flush_store().await;
        let kept: std::collections::BTreeMap<String, Rollout> = store
            .rollouts()
            .unwrap()
            .into_iter()
            .map(|(track, json)| (track, serde_json::from_str(&json).unwrap()))
            .collect();
        assert_eq!(kept, [("prod".to_string(), environments), ("prod/mon".to_string(), mons)].into());
    }
}
