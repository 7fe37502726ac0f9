//! The published view: what the hub knows about the fleet from Git as of the last sync —
//! the fleet model, each environment's state and lineage, rollouts and pins, and the errors of
//! the sync path, typed so status can tell a fetch failure from a broken file.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use convoy_render::fleet::Fleet;

use crate::plan::planner::{CacheSizes, PlanStats};
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
