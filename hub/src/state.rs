//! The hub's shared state, handed to every service.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use convoy_shared::clock::unix_ms;
use convoy_shared::model::Assignment;
use convoy_shared::proto::{ClusterInfo, FleetEvent, HistoryEntry, Report};

/// Fleet events kept for watchers that read slowly.
const EVENT_BACKLOG: usize = 1024;
use tokio::sync::Notify;

use crate::assignments::AssignmentTable;
use crate::connections::ConnectionTable;
use crate::metrics::HubMetrics;
use crate::source::FleetView;
use crate::store::{MemoryStore, Store, StoreEvent, StoreWriter};

/// Everything the hub's services share.
#[derive(Debug)]
pub struct Hub {
    pub connections: ConnectionTable,
    pub assignments: AssignmentTable,
    /// The fleet as of the last sync; swapped whole, read briefly (never across an await).
    view: RwLock<Arc<FleetView>>,
    /// Wakes the source loop at once (webhook, `convoy refresh`).
    pub refresh: Notify,
    pub store: Arc<dyn Store>,
    pub metrics: HubMetrics,
    /// Fleet events for `convoy watch`; a watcher that falls behind is told how many it missed.
    pub events: tokio::sync::broadcast::Sender<FleetEvent>,
    /// Bootstrap tokens, certificate signing and revocations.
    pub registry: crate::registration::Registry,
    /// Owned by the hub: the writer task ends once the hub is dropped.
    writer: StoreWriter,
}

impl Hub {
    /// A hub over `store`, with the last reports it kept restored. Must run inside a runtime
    /// (it starts the store's writer task).
    pub fn new(store: Arc<dyn Store>) -> Result<Arc<Hub>, crate::store::StoreError> {
        let (writer, _task) = StoreWriter::spawn(store.clone());
        let hub = Hub {
            connections: ConnectionTable::default(),
            assignments: AssignmentTable::default(),
            view: RwLock::default(),
            refresh: Notify::new(),
            store: store.clone(),
            registry: crate::registration::Registry::load(store.clone())?,
            metrics: HubMetrics::default(),
            events: tokio::sync::broadcast::channel(EVENT_BACKLOG).0,
            writer,
        };
        for (cluster, report) in store.last_reports()? {
            hub.connections.restore(&cluster, report);
        }
        Ok(Arc::new(hub))
    }

    /// A hub that keeps its state in memory only.
    pub fn in_memory() -> Arc<Hub> {
        Hub::new(Arc::new(MemoryStore::default())).expect("the memory store cannot fail")
    }

    /// Every cluster the hub knows: declared in Git, or seen on an agent stream.
    pub fn cluster_infos(&self) -> Vec<ClusterInfo> {
        let view = self.view();
        let mut out: BTreeMap<String, ClusterInfo> =
            self.connections.list().into_iter().map(|c| (c.name.clone(), c)).collect();
        if let Some(fleet) = &view.fleet {
            for cluster in fleet.clusters.values() {
                let info = out
                    .entry(cluster.name.clone())
                    .or_insert_with(|| ClusterInfo { name: cluster.name.clone(), ..Default::default() });
                info.environment = cluster.environment.clone();
                info.labels = cluster.labels.clone().into_iter().collect();
            }
        }
        for info in out.values_mut() {
            if let Some(assignment) = self.assignments.get(&info.name) {
                info.assigned_revision = assignment.revision.clone();
                info.assigned_digest = assignment.digest.clone();
                info.in_sync = info.applied_digest == assignment.digest;
                if info.environment.is_empty() {
                    info.environment = assignment.environment.clone();
                }
            }
        }
        out.into_values().collect()
    }

    /// The fleet as of the last sync.
    pub fn view(&self) -> Arc<FleetView> {
        self.view.read().expect("view lock").clone()
    }

    /// Replaces the fleet view.
    pub fn set_view(&self, view: FleetView) {
        *self.view.write().expect("view lock") = Arc::new(view);
    }

    /// Changes a copy of the fleet view's status fields and swaps it in.
    pub fn update_view(&self, change: impl FnOnce(&mut FleetView)) {
        let mut guard = self.view.write().expect("view lock");
        let current = &**guard;
        let mut next = FleetView {
            fleet: current.fleet.clone(),
            envs: current.envs.clone(),
            branches: current.branches.clone(),
            errors: current.errors.clone(),
            cluster_errors: current.cluster_errors.clone(),
            stats: current.stats,
            published: current.published,
            synced_at_ms: current.synced_at_ms,
            fetch_failures: current.fetch_failures,
        };
        change(&mut next);
        *guard = Arc::new(next);
    }

    /// Publishes a cluster's assignment; true when its content changed (then it is recorded in
    /// the cluster's history).
    pub fn publish(&self, assignment: Arc<Assignment>) -> bool {
        let (cluster, revision, digest) =
            (assignment.cluster.clone(), assignment.revision.clone(), assignment.digest.clone());
        // A restarted hub's first plan re-publishes what its history already says was assigned:
        // that is no news for `convoy history` or watchers.
        let recorded =
            self.assignments.get(&cluster).is_none() && self.last_assigned(&cluster).is_some_and(|last| last == digest);
        let changed = self.assignments.publish(assignment);
        if changed {
            self.metrics.assignments_published.inc();
            tracing::debug!(cluster, revision, "assignment published");
            if !recorded {
                self.history(&cluster, "assigned", &revision, &digest, "");
            }
        }
        changed
    }

    /// Digest of the newest "assigned" entry in `cluster`'s stored history.
    fn last_assigned(&self, cluster: &str) -> Option<String> {
        let recent = self.store.history(cluster, 16).ok()?;
        recent.into_iter().find(|e| e.event == "assigned").map(|e| e.digest)
    }

    /// Takes an agent's report: live status, the store, and history when it applied something new.
    pub fn record_report(&self, cluster: &str, session: u64, report: Report) {
        self.metrics.reports_received.inc();
        let newly_applied = self.connections.report(cluster, session, report.clone());
        if newly_applied {
            self.history(cluster, "applied", &report.revision, &report.digest, "");
        }
        self.writer.record(StoreEvent::Report { cluster: cluster.to_string(), report });
    }

    /// Events waiting for the store's writer.
    pub fn store_queued(&self) -> usize {
        self.writer.queued()
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

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_shared::model::AppAssignment;

    fn assignment(greeting: &str) -> Arc<Assignment> {
        let app = AppAssignment {
            name: "web".into(),
            policy: Default::default(),
            depends_on: vec![],
            objects: vec![serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"g": greeting}})],
            render_error: None,
        };
        Arc::new(Assignment::new("eu-1", "prod", greeting, vec![app], false))
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
        let hub = Hub::new(store.clone()).unwrap();
        assert!(hub.publish(assignment("r1")));
        assert_eq!(assigned(&*store, 1).await, ["r1"]);
        drop(hub);

        let restarted = Hub::new(store.clone()).unwrap();
        let mut watch = restarted.events.subscribe();
        assert!(restarted.publish(assignment("r1")), "agents are still told");
        assert!(watch.try_recv().is_err(), "no 'assigned' event for what was assigned before the restart");
        assert!(restarted.publish(assignment("r2")));
        assert_eq!(assigned(&*store, 2).await, ["r2", "r1"]);
    }
}
