//! The fleet repository as the hub last read it: the bare mirror, the commit each branch is at,
//! the fleet model (`convoy.yaml` and `clusters/` on the fleet branch), each environment's apps
//! at its branch's head ([`EnvironmentState`]) and each environment's branch against the one
//! before it ([`Lineage`]). Blocking (gix): the sync loop calls it from `spawn_blocking`.
//!
//! Decisions:
//! - `convoy.yaml` on the configured fleet branch may name another fleet branch; the hub follows
//!   it once, and refuses two branches that name each other.
//! - An unchanged fleet branch is not parsed again; an environment whose branch and definition
//!   did not move keeps its state (and the planner its caches).
//! - A missing environment branch or an unreadable commit keeps that environment's last state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use convoy_render::fleet::{self, App, Environment, Fleet, FleetError};
use gix::ObjectId;

use crate::source::SourceConfig;
use crate::source::git::{GitError, GitMirror, Snapshot};

/// Commits listed at most when comparing two environments' branches.
const LINEAGE_LIMIT: usize = 1000;

/// One environment at a commit: its branch's snapshot and the apps on it.
pub struct EnvironmentState {
    pub environment: Environment,
    pub snapshot: Arc<Snapshot>,
    pub apps: BTreeMap<String, Result<App, FleetError>>,
}

impl std::fmt::Debug for EnvironmentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvironmentState")
            .field("environment", &self.environment)
            .field("commit", &self.snapshot.commit)
            .finish_non_exhaustive()
    }
}

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
    /// A `spec.health` rule of `convoy.yaml` does not compile; the others hold.
    #[error("{source} (branch {branch})")]
    HealthRule {
        branch: String,
        #[source]
        source: FleetError,
    },
    /// `spec.windows` of `convoy.yaml` does not load; the last good windows stay in force.
    #[error("{source} (branch {branch}); the last change windows that loaded stay in force")]
    Windows {
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

/// An environment's branch against the previous environment's, in promotion order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    /// Commits the previous environment has that this one lacks.
    pub behind: usize,
    /// Commits only this environment has (hotfixes, merges): id and subject, newest first.
    pub env_only: Vec<(String, String)>,
}

/// What one read of the fetched branches found, before it becomes the repository's current
/// state ([`Repository::keep`]).
#[derive(Debug)]
pub struct Reading {
    pub fleet: Arc<Fleet>,
    /// Each environment's state at its branch's head (or its last one, when that is unreadable).
    pub envs: HashMap<String, Arc<EnvironmentState>>,
    /// Problems of one cluster: its file under `clusters/`.
    pub cluster_errors: BTreeMap<String, Vec<String>>,
}

/// The fleet repository as last fetched and read.
pub struct Repository {
    /// The repository's URL (shown redacted).
    url: String,
    /// Branch holding `convoy.yaml` and `clusters/` until `convoy.yaml` names another.
    fleet_branch: String,
    mirror: GitMirror,
    /// Branch → commit as of the last sync that read them.
    branches: Option<BTreeMap<String, ObjectId>>,
    envs: HashMap<String, Arc<EnvironmentState>>,
    fleet: Option<Arc<Fleet>>,
    /// Commit the fleet model was read from: an unchanged fleet branch is not parsed again.
    fleet_commit: Option<ObjectId>,
    /// The cluster files of the last fleet read: a new fleet commit parses only those it changed.
    cluster_files: fleet::ClusterFiles,
    /// Each environment against the one before it, as of the last read.
    lineage: BTreeMap<String, Lineage>,
    /// Fetches failed in a row.
    failures: u32,
}

impl Repository {
    /// The repository `config` names, mirrored in `config.mirror`; nothing is fetched yet.
    pub fn new(config: &SourceConfig) -> Self {
        Repository {
            url: config.url.clone(),
            fleet_branch: config.fleet_branch.clone(),
            mirror: GitMirror::new(&config.url, &config.mirror, config.access.clone()),
            branches: None,
            envs: HashMap::new(),
            fleet: None,
            fleet_commit: None,
            cluster_files: fleet::ClusterFiles::default(),
            lineage: BTreeMap::new(),
            failures: 0,
        }
    }

    /// The repository's URL without credentials.
    pub fn redacted_url(&self) -> String {
        crate::source::git::redacted(&self.url)
    }

    /// Fetches every branch; counts the failures in a row.
    pub fn fetch(&mut self) -> Result<BTreeMap<String, ObjectId>, GitError> {
        let fetched = self.mirror.fetch();
        match &fetched {
            Ok(_) => self.failures = 0,
            Err(_) => self.failures += 1,
        }
        fetched
    }

    /// Fetches failed in a row (0 after a good one).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether the last sync read exactly `branches`.
    pub fn read_before(&self, branches: &BTreeMap<String, ObjectId>) -> bool {
        self.branches.as_ref() == Some(branches)
    }

    /// Records that a sync took `branches`, read or not.
    pub fn set_branches(&mut self, branches: BTreeMap<String, ObjectId>) {
        self.branches = Some(branches);
    }

    /// The fleet model as of the last read.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// Each environment's state as of the last read.
    pub fn envs(&self) -> &HashMap<String, Arc<EnvironmentState>> {
        &self.envs
    }

    /// Each environment against the one before it, as of the last read.
    pub fn lineage(&self) -> &BTreeMap<String, Lineage> {
        &self.lineage
    }

    /// Git objects the mirror holds decoded.
    pub fn cached_blobs(&self) -> usize {
        self.mirror.cached_blobs()
    }

    /// Pack files in the mirror.
    pub fn packs(&self) -> usize {
        self.mirror.packs()
    }

    /// `env` at `commit`: its snapshot and the apps on it.
    pub fn environment_at(&mut self, env: &Environment, commit: ObjectId) -> Result<Arc<EnvironmentState>, GitError> {
        let snapshot = self.mirror.snapshot(commit)?;
        let apps = fleet::load_apps(snapshot.as_ref(), env);
        Ok(Arc::new(EnvironmentState { environment: env.clone(), snapshot, apps }))
    }

    /// Reads the fleet model and each environment at `branches`; problems that leave part of
    /// the fleet as it was go to `errors`. An error when the fleet model itself is unreadable.
    pub fn read(
        &mut self,
        branches: &BTreeMap<String, ObjectId>,
        errors: &mut Vec<SyncError>,
    ) -> Result<Reading, SyncError> {
        let fleet = self.load_fleet(branches)?;
        let mut cluster_errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in &fleet.cluster_errors {
            let name =
                e.file.trim_start_matches("clusters/").trim_end_matches(".yaml").trim_end_matches(".yml").to_string();
            cluster_errors.entry(name).or_default().push(e.to_string());
        }
        let mut envs = HashMap::new();
        for env in &fleet.environments {
            let previous = self.envs.get(&env.name);
            let Some(commit) = branches.get(&env.branch) else {
                errors
                    .push(SyncError::NoEnvironmentBranch { environment: env.name.clone(), branch: env.branch.clone() });
                if let Some(previous) = previous {
                    envs.insert(env.name.clone(), previous.clone());
                }
                continue;
            };
            if let Some(previous) = previous
                && previous.snapshot.commit == *commit
                && previous.environment == *env
            {
                envs.insert(env.name.clone(), previous.clone());
                continue;
            }
            let previous = previous.cloned();
            match self.environment_at(env, *commit) {
                Ok(state) => {
                    envs.insert(env.name.clone(), state);
                }
                Err(e) => {
                    errors.push(SyncError::Snapshot(Arc::new(e)));
                    if let Some(previous) = previous {
                        envs.insert(env.name.clone(), previous);
                    }
                }
            }
        }
        for env in envs.values() {
            for app in env.apps.values() {
                if let Err(e) = app {
                    errors.push(SyncError::App {
                        environment: env.environment.name.clone(),
                        branch: env.environment.branch.clone(),
                        source: e.clone(),
                    });
                }
            }
        }
        Ok(Reading { fleet, envs, cluster_errors })
    }

    /// Makes what a read found the repository's current state, with each environment's branch
    /// against the previous environment's.
    pub fn keep(&mut self, fleet: Arc<Fleet>, envs: HashMap<String, Arc<EnvironmentState>>) {
        self.lineage = self.compare(&fleet, &envs);
        self.envs = envs;
        self.fleet = Some(fleet);
    }

    /// Each environment's branch against the previous environment's (promotion order).
    fn compare(&self, fleet: &Fleet, envs: &HashMap<String, Arc<EnvironmentState>>) -> BTreeMap<String, Lineage> {
        let head = |name: &str| envs.get(name).map(|e| e.snapshot.commit);
        let between = |tip, hidden| {
            self.mirror.commits_between(tip, hidden, LINEAGE_LIMIT).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot compare environment branches");
                Vec::new()
            })
        };
        let mut lineage = BTreeMap::new();
        for pair in fleet.environments.windows(2) {
            let (Some(previous), Some(this)) = (head(&pair[0].name), head(&pair[1].name)) else { continue };
            let entry = Lineage { behind: between(previous, this).len(), env_only: between(this, previous) };
            lineage.insert(pair[1].name.clone(), entry);
        }
        lineage
    }

    fn load_fleet(&mut self, branches: &BTreeMap<String, ObjectId>) -> Result<Arc<Fleet>, SyncError> {
        let mut branch = self.fleet_branch.clone();
        for _ in 0..2 {
            let commit = branches
                .get(&branch)
                .ok_or_else(|| SyncError::NoFleetBranch { branch: branch.clone(), url: self.redacted_url() })?;
            if self.fleet_commit == Some(*commit)
                && let Some(fleet) = &self.fleet
            {
                return Ok(fleet.clone());
            }
            let snapshot = self.mirror.snapshot(*commit).map_err(|e| SyncError::Snapshot(Arc::new(e)))?;
            let in_branch = |source| SyncError::Fleet { branch: branch.clone(), source };
            let declared = fleet::fleet_branch_of(snapshot.as_ref()).map_err(in_branch)?;
            if declared == branch {
                let fleet = Fleet::load_reusing(snapshot.as_ref(), &mut self.cluster_files).map_err(in_branch)?;
                self.fleet_commit = Some(*commit);
                return Ok(Arc::new(fleet));
            }
            branch = declared;
        }
        Err(SyncError::FleetBranchesDisagree { configured: self.fleet_branch.clone(), declared: branch })
    }
}
