//! The source loop: fetch the repository (on an interval, or at once when the webhook or
//! `convoy refresh` asks), load the fleet model, plan, and publish the assignments that changed.
//! Git work and planning run in `spawn_blocking`, one fetch at a time; failures back off and are
//! shown in status. What the last good fetch produced stays in force until a better one.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use convoy_shared::clock::unix_ms;
use gix::ObjectId;
use tokio_util::sync::CancellationToken;

use crate::fleet::{self, Fleet};
use crate::git::{GitAccess, GitMirror};
use crate::metrics::HubMetrics;
use crate::planner::{EnvironmentState, PlanStats, Planner};
use crate::state::Hub;

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
}

/// What the hub knows about the fleet from Git, replaced whole after every sync.
#[derive(Debug, Default)]
pub struct FleetView {
    pub fleet: Option<Arc<Fleet>>,
    pub envs: HashMap<String, Arc<EnvironmentState>>,
    /// Branch → commit as last fetched.
    pub branches: BTreeMap<String, String>,
    /// Problems with the whole source (fetch, convoy.yaml, a deleted branch).
    pub errors: Vec<String>,
    /// Problems of one cluster (its file, its apps' renders).
    pub cluster_errors: BTreeMap<String, Vec<String>>,
    pub stats: PlanStats,
    /// Assignments whose content changed in the last plan.
    pub published: usize,
    pub synced_at_ms: i64,
    pub fetch_failures: u32,
}

impl std::fmt::Debug for EnvironmentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvironmentState")
            .field("environment", &self.environment)
            .field("commit", &self.snapshot.commit)
            .finish_non_exhaustive()
    }
}

/// The state the loop carries between syncs (moved into and out of `spawn_blocking`).
struct SourceWorker {
    config: SourceConfig,
    mirror: GitMirror,
    planner: Planner,
    branches: Option<BTreeMap<String, ObjectId>>,
    envs: HashMap<String, Arc<EnvironmentState>>,
    fleet: Option<Arc<Fleet>>,
    /// Commit the fleet model was read from: an unchanged fleet branch is not parsed again.
    fleet_commit: Option<ObjectId>,
    failures: u32,
}

/// Runs the source loop until `shutdown`.
pub async fn run(config: SourceConfig, hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut worker = SourceWorker {
        mirror: GitMirror::new(&config.url, &config.mirror, config.access.clone()),
        config,
        planner: Planner::default(),
        branches: None,
        envs: HashMap::new(),
        fleet: None,
        fleet_commit: None,
        failures: 0,
    };
    loop {
        let started = Instant::now();
        let hub_for_sync = hub.clone();
        let joined = tokio::task::spawn_blocking(move || {
            worker.sync(&hub_for_sync);
            worker
        })
        .await;
        worker = match joined {
            Ok(worker) => worker,
            Err(e) => {
                tracing::error!(error = %e, "the source worker panicked; stopping the source loop");
                return;
            }
        };
        let wait = match worker.failures {
            0 => worker.config.interval,
            n => Duration::from_secs(1u64 << n.min(6)).min(worker.config.interval),
        };
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "source sync done");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hub.refresh.notified() => tracing::info!("refresh requested"),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

impl SourceWorker {
    fn sync(&mut self, hub: &Hub) {
        // The root of a commit's trace: fetch, render and publish here; push and apply continue
        // it from the assignment's trace context.
        let _sync = tracing::info_span!("sync", repo = %crate::git::redacted(&self.config.url)).entered();
        let mut errors = Vec::new();
        let started = Instant::now();
        let fetched = tracing::info_span!("fetch").in_scope(|| self.mirror.fetch());
        HubMetrics::observe(&hub.metrics.git_fetch_duration, started.elapsed());
        let branches = match fetched {
            Ok(branches) => {
                self.failures = 0;
                branches
            }
            Err(e) => {
                hub.metrics.git_fetch_failures.inc();
                self.failures += 1;
                tracing::warn!(error = %e, failures = self.failures, "git fetch failed; keeping the last fetched state");
                hub.update_view(|view| {
                    view.fetch_failures = self.failures;
                    view.errors = vec![format!("{e} (attempt {}, retrying with backoff)", self.failures)];
                });
                return;
            }
        };
        if self.branches.as_ref() == Some(&branches) {
            hub.update_view(|view| {
                view.fetch_failures = 0;
                view.errors.retain(|e| !e.starts_with("git:"));
            });
            return;
        }
        match self.plan(hub, &branches, &mut errors) {
            Some((stats, published, cluster_errors)) => {
                HubMetrics::observe(&hub.metrics.sync_duration, started.elapsed());
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(
                    renders = stats.renders,
                    pairs = stats.pairs,
                    rebuilt = stats.pairs_rebuilt,
                    published,
                    ms,
                    "planned"
                );
                let view = FleetView {
                    fleet: self.fleet.clone(),
                    envs: self.envs.clone(),
                    branches: branches.iter().map(|(b, c)| (b.clone(), c.to_string())).collect(),
                    errors,
                    cluster_errors,
                    stats,
                    published,
                    synced_at_ms: unix_ms(),
                    fetch_failures: 0,
                };
                hub.set_view(view);
            }
            None => {
                for e in &errors {
                    tracing::warn!(error = %e, "fleet not planned; every cluster keeps its assignment");
                }
                hub.update_view(|view| {
                    view.errors = errors;
                    view.branches = branches.iter().map(|(b, c)| (b.clone(), c.to_string())).collect();
                });
            }
        }
        self.branches = Some(branches);
    }

    /// Loads the fleet and plans; `None` when the fleet itself could not be read.
    #[allow(clippy::type_complexity)]
    fn plan(
        &mut self,
        hub: &Hub,
        branches: &BTreeMap<String, ObjectId>,
        errors: &mut Vec<String>,
    ) -> Option<(PlanStats, usize, BTreeMap<String, Vec<String>>)> {
        let fleet = match self.load_fleet(branches) {
            Ok(fleet) => fleet,
            Err(e) => {
                errors.push(e);
                return None;
            }
        };
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
                errors.push(format!(
                    "branch '{}' of environment '{}' is not in the repository; its clusters keep their last assignment",
                    env.branch, env.name
                ));
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
            match self.mirror.snapshot(*commit) {
                Ok(snapshot) => {
                    let apps = fleet::load_apps(&snapshot);
                    envs.insert(
                        env.name.clone(),
                        Arc::new(EnvironmentState { environment: env.clone(), snapshot, apps }),
                    );
                }
                Err(e) => {
                    errors.push(e.to_string());
                    if let Some(previous) = previous {
                        envs.insert(env.name.clone(), previous.clone());
                    }
                }
            }
        }
        for env in envs.values() {
            for app in env.apps.values() {
                if let Err(e) = app {
                    errors.push(format!(
                        "environment '{}' (branch {}): {e}",
                        env.environment.name, env.environment.branch
                    ));
                }
            }
        }
        let render = tracing::info_span!("render", clusters = fleet.clusters.len(), renders = tracing::field::Empty);
        let (plans, stats) = render.in_scope(|| self.planner.plan(&fleet.clusters, &envs));
        render.record("renders", stats.renders);
        let publish = tracing::info_span!("publish", published = tracing::field::Empty).entered();
        let mut published = 0;
        for plan in plans {
            if !plan.errors.is_empty() {
                cluster_errors.entry(plan.assignment.cluster.clone()).or_default().extend(plan.errors);
            }
            if !plan.reused {
                published += usize::from(hub.publish(plan.assignment));
            }
        }
        publish.record("published", published);
        self.envs = envs;
        self.fleet = Some(fleet);
        Some((stats, published, cluster_errors))
    }

    fn load_fleet(&mut self, branches: &BTreeMap<String, ObjectId>) -> Result<Arc<Fleet>, String> {
        let mut branch = self.config.fleet_branch.clone();
        for _ in 0..2 {
            let commit = branches.get(&branch).ok_or_else(|| {
                format!(
                    "fleet branch '{branch}' is not in {}; push it or pass --fleet-branch",
                    crate::git::redacted(&self.config.url)
                )
            })?;
            if self.fleet_commit == Some(*commit)
                && let Some(fleet) = &self.fleet
            {
                return Ok(fleet.clone());
            }
            let snapshot = self.mirror.snapshot(*commit).map_err(|e| e.to_string())?;
            let declared = fleet::fleet_branch_of(&snapshot).map_err(|e| format!("{e} (branch {branch})"))?;
            if declared == branch {
                let fleet = Fleet::load(&snapshot).map_err(|e| format!("{e} (branch {branch})"))?;
                self.fleet_commit = Some(*commit);
                return Ok(Arc::new(fleet));
            }
            branch = declared;
        }
        Err(format!(
            "convoy.yaml on '{}' and on '{branch}' name different fleet branches; make them agree",
            self.config.fleet_branch
        ))
    }
}
