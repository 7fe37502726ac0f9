//! The published view: what the hub knows about the fleet from Git as of the last sync, and the
//! errors of the sync path, typed so status can tell a fetch failure from a broken file.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use convoy_render::fleet::{Fleet, FleetError};
use crate::source::git::GitError;
use crate::plan::planner::{CacheSizes, EnvironmentState, PlanStats};
use crate::release::rollout::Rollout;

/// Why a sync could not take (part of) the repository. Each message names the branch, file or
/// URL and what to do; the clusters concerned keep their last assignment.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    /// Fetching the repository failed; retried with backoff.
    #[error("{source} (attempt {attempts}, retrying with backoff)")]
    Fetch {
        #[source]
        source: Arc<GitError>,
        attempts: u32,
    },
    /// A fetched commit could not be read.
    #[error(transparent)]
    Snapshot(Arc<GitError>),
    /// The fleet branch is not in the repository.
    #[error("fleet branch '{branch}' is not in {url}; push it or pass --fleet-branch")]
    NoFleetBranch { branch: String, url: String },
    /// `convoy.yaml` or `clusters/` on the fleet branch is invalid.
    #[error("{source} (branch {branch})")]
    Fleet {
        branch: String,
        #[source]
        source: FleetError,
    },
    /// `convoy.yaml` on two branches names two different fleet branches.
    #[error("convoy.yaml on '{configured}' and on '{declared}' name different fleet branches; make them agree")]
    FleetBranchesDisagree { configured: String, declared: String },
    /// An environment's branch is missing.
    #[error(
        "branch '{branch}' of environment '{environment}' is not in the repository; its clusters keep their last assignment"
    )]
    NoEnvironmentBranch { environment: String, branch: String },
    /// An app's `app.yaml` on an environment's branch is invalid.
    #[error("environment '{environment}' (branch {branch}): {source}")]
    App {
        environment: String,
        branch: String,
        #[source]
        source: FleetError,
    },
}

impl SyncError {
    /// Whether the error is about reaching the repository (cleared by the next good fetch).
    pub fn is_fetch(&self) -> bool {
        matches!(self, SyncError::Fetch { .. })
    }
}

/// What the hub knows about the fleet from Git, replaced whole after every sync.
#[derive(Debug, Default, Clone)]
pub struct FleetView {
    pub fleet: Option<Arc<Fleet>>,
    /// Each environment's latest rollout.
    pub rollouts: BTreeMap<String, Rollout>,
    /// Environments pinned at a commit by a rollback.
    pub pins: BTreeMap<String, String>,
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

/// An environment's branch against the previous environment's, in promotion order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    /// Commits the previous environment has that this one lacks.
    pub behind: usize,
    /// Commits only this environment has (hotfixes, merges): id and subject, newest first.
    pub env_only: Vec<(String, String)>,
}
