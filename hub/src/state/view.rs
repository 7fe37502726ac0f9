//! The published view: what the hub knows about the fleet from Git as of the last sync —
//! the fleet model, each environment's state and lineage, rollouts and pins, and the errors of
//! the sync path, typed so status can tell a fetch failure from a broken file.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use convoy_render::fleet::Fleet;
use convoy_shared::proto::ClusterInfo;

use crate::plan::planner::{CacheSizes, PlanStats};
use crate::release::gate;
use crate::release::rollout::Rollout;
use crate::source::repository::{EnvironmentState, Lineage, SyncError};

/// What the hub knows about the fleet from Git, replaced whole after every sync.
#[derive(Debug, Default, Clone)]
pub struct FleetView {
    pub fleet: Option<Arc<Fleet>>,
    /// Each environment's latest rollout.
    pub rollouts: BTreeMap<String, Rollout>,
    /// Environments pinned at a commit by a rollback.
    pub pins: BTreeMap<String, String>,
    /// Environments with a revision a change window holds back, and until when.
    pub holds: BTreeMap<String, convoy_render::windows::Hold>,
    /// Each environment against the one before it in promotion order.
    pub lineage: BTreeMap<String, Lineage>,
    pub envs: HashMap<String, Arc<EnvironmentState>>,
    /// Branch → commit as last fetched.
    pub branches: BTreeMap<String, String>,
    /// Problems with the whole source (fetch, convoy.yaml, a deleted branch).
    pub errors: Vec<SyncError>,
    /// Problems of one cluster (its file, its apps' renders).
    pub cluster_errors: BTreeMap<String, Vec<String>>,
    pub stats: PlanStats,
    /// The source's caches after the last plan.
    pub caches: CacheSizes,
    /// Assignments whose content changed in the last plan.
    pub published: usize,
    pub synced_at_ms: i64,
    pub fetch_failures: u32,
}

impl FleetView {
    /// Environment `env`'s verified commit as the release gate judges it at `now_ms`, from this
    /// view and its clusters' reports (`members`); or every reason it has none.
    pub fn verified(&self, env: &str, members: &[&ClusterInfo], now_ms: i64) -> Result<String, Vec<String>> {
        let head = self.envs.get(env).map(|e| e.snapshot.commit.to_string());
        let rollouts: Vec<&Rollout> = self.rollouts.values().filter(|r| r.environment == env).collect();
        let facts = gate::Environment {
            pin: self.pins.get(env).map(String::as_str),
            head: head.as_deref(),
            clusters: members,
            rollouts: &rollouts,
        };
        gate::verified(&facts, now_ms)
    }
}
