//! The hub's shared state, handed to every service.

use std::sync::{Arc, RwLock};

use convoy_shared::model::Assignment;
use tokio::sync::Notify;

use crate::assignments::AssignmentTable;
use crate::connections::ConnectionTable;
use crate::source::FleetView;

/// Everything the hub's services share.
#[derive(Debug, Default)]
pub struct Hub {
    pub connections: ConnectionTable,
    pub assignments: AssignmentTable,
    /// The fleet as of the last sync; swapped whole, read briefly (never across an await).
    view: RwLock<Arc<FleetView>>,
    /// Wakes the source loop at once (webhook, `convoy refresh`).
    pub refresh: Notify,
}

impl Hub {
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

    /// Publishes a cluster's assignment; true when its content changed.
    pub fn publish(&self, assignment: Assignment) -> bool {
        let cluster = assignment.cluster.clone();
        let changed = self.assignments.publish(assignment);
        if changed {
            tracing::info!(cluster, "assignment published");
        }
        changed
    }
}
