//! The source stage: fetch → snapshot → fleet model. A bare mirror of the fleet repository
//! fetched with gix and snapshots of its commits ([`git`]); the repository as last read
//! ([`repository`]): the commit each branch is at, the fleet model on the fleet branch, each
//! environment's apps at its branch's head, and how far each environment's branch is behind
//! the one before it. The sync loop ([`crate::sync`]) fetches and reads it.
//!
//! Decisions: which branch holds the fleet model; which commit each environment is at; what a
//! missing branch or an unreadable commit or file leaves in force (the last good state).

pub mod git;
pub mod repository;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use convoy_render::helm::fetch::ChartFetcher;

use crate::source::git::GitAccess;

/// Where the repository is and how often to look.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub url: String,
    /// Directory of the bare mirror.
    pub mirror: PathBuf,
    /// Branch holding `convoy.yaml` and `clusters/` until `convoy.yaml` names another.
    pub fleet_branch: String,
    pub interval: Duration,
    /// Credentials and TLS for an https:// URL.
    pub access: GitAccess,
    /// Charts from HTTP(S) chart repositories and OCI registries (`spec.helm.repo`/`oci`),
    /// resolved once and cached in `<data>/charts` (`None` where no app needs one). Blocking:
    /// call it from the sync's `spawn_blocking`, as the planner runs.
    pub charts: Option<Arc<ChartFetcher>>,
}
