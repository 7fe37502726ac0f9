//! The assignment table: the current [`Assignment`] of every cluster, with a change
//! notification per cluster that agent streams wait on.

use std::sync::Arc;

use convoy_shared::model::Assignment;
use dashmap::DashMap;
use tokio::sync::watch;

/// Cluster → current assignment.
#[derive(Debug, Default)]
pub struct AssignmentTable {
    clusters: DashMap<String, watch::Sender<Option<Arc<Assignment>>>>,
}

impl AssignmentTable {
    /// Makes `assignment` current for its cluster. Returns true when its content changed (and
    /// connected agents are notified); a new revision with the same digest is recorded quietly.
    pub fn publish(&self, assignment: Arc<Assignment>) -> bool {
        let sender = self.clusters.entry(assignment.cluster.clone()).or_insert_with(|| watch::channel(None).0).clone();
        sender.send_if_modified(|current| {
            let changed = current.as_ref().is_none_or(|c| c.digest != assignment.digest);
            *current = Some(assignment);
            changed
        })
    }

    /// A receiver that sees `cluster`'s assignment now and every change from here on.
    pub fn subscribe(&self, cluster: &str) -> watch::Receiver<Option<Arc<Assignment>>> {
        self.clusters.entry(cluster.to_string()).or_insert_with(|| watch::channel(None).0).subscribe()
    }

    /// `cluster`'s current assignment.
    pub fn get(&self, cluster: &str) -> Option<Arc<Assignment>> {
        self.clusters.get(cluster).and_then(|s| s.borrow().clone())
    }

    /// Forgets `cluster`'s assignment (a retired cluster): its agent streams see none.
    pub fn remove(&self, cluster: &str) {
        if let Some((_, sender)) = self.clusters.remove(cluster) {
            sender.send_replace(None);
        }
    }

    /// Every cluster's current assignment.
    pub fn all(&self) -> Vec<Arc<Assignment>> {
        self.clusters.iter().filter_map(|s| s.borrow().clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(revision: &str, objects: usize) -> Arc<Assignment> {
        let app = convoy_shared::model::AppAssignment {
            ignore_differences: Vec::new(),
            health_rules: Vec::new(),
            name: "web".into(),
            policy: Default::default(),
            depends_on: vec![],
            objects: (0..objects)
                .map(|i| serde_json::json!({"kind": "ConfigMap", "metadata": {"name": i.to_string()}}))
                .collect(),
            render_error: None,
        };
        Arc::new(Assignment::new("eu-1", "prod", revision, vec![app], false))
    }

    #[test]
    fn only_content_changes_notify() {
        let table = AssignmentTable::default();
        let mut rx = table.subscribe("eu-1");
        assert!(table.publish(assignment("r1", 1)));
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        assert!(!table.publish(assignment("r2", 1)));
        assert!(!rx.has_changed().unwrap());
        assert_eq!(table.get("eu-1").unwrap().revision, "r2");
        assert!(table.publish(assignment("r3", 2)));
        assert!(rx.has_changed().unwrap());
    }
}
