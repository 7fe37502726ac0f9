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
use crate::git::GitMirror;
use crate::metrics::HubMetrics;
use crate::planner::{EnvironmentState, PlanStats, Planner};
use crate::state::Publisher;
use crate::view::{FleetView, SyncError};

/// Where the repository is and how often to look.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub url: String,
    /// Directory of the bare mirror.
    pub mirror: PathBuf,
    /// Branch holding `convoy.yaml` and `clusters/` until `convoy.yaml` names another.
    pub fleet_branch: String,
    pub interval: Duration,
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

/// Runs the source loop until `shutdown`, publishing through the hub's one [`Publisher`].
pub async fn run(config: SourceConfig, publisher: Publisher, shutdown: CancellationToken) {
    let publisher = Arc::new(publisher);
    let mut worker = SourceWorker {
        mirror: GitMirror::new(&config.url, &config.mirror),
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
        let for_sync = publisher.clone();
        let joined = tokio::task::spawn_blocking(move || {
            worker.sync(&for_sync);
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
            _ = publisher.refresh_requested() => tracing::info!("refresh requested"),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

impl SourceWorker {
    fn sync(&mut self, publisher: &Publisher) {
        let hub = publisher.hub();
        // The root of a commit's trace: fetch, render and publish here; push and apply continue
        // it from the assignment's trace context.
        let _sync = tracing::info_span!("sync", repo = %self.config.url).entered();
        let mut errors = Vec::new();
        let started = Instant::now();
        let fetched = tracing::info_span!("fetch").in_scope(|| self.mirror.fetch());
        HubMetrics::observe(&hub.metrics().git_fetch_duration, started.elapsed());
        let branches = match fetched {
            Ok(branches) => {
                self.failures = 0;
                branches
            }
            Err(e) => {
                hub.metrics().git_fetch_failures.inc();
                self.failures += 1;
                tracing::warn!(error = %e, failures = self.failures, "git fetch failed; keeping the last fetched state");
                publisher.update_view(|view| {
                    view.fetch_failures = self.failures;
                    view.errors = vec![SyncError::Fetch { source: Arc::new(e), attempts: self.failures }];
                });
                return;
            }
        };
        if self.branches.as_ref() == Some(&branches) {
            publisher.update_view(|view| {
                view.fetch_failures = 0;
                view.errors.retain(|e| !e.is_fetch());
            });
            return;
        }
        match self.plan(publisher, &branches, &mut errors) {
            Some((stats, published, cluster_errors)) => {
                HubMetrics::observe(&hub.metrics().sync_duration, started.elapsed());
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
                publisher.set_view(view);
            }
            None => {
                for e in &errors {
                    tracing::warn!(error = %e, "fleet not planned; every cluster keeps its assignment");
                }
                publisher.update_view(|view| {
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
        publisher: &Publisher,
        branches: &BTreeMap<String, ObjectId>,
        errors: &mut Vec<SyncError>,
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
            match self.mirror.snapshot(*commit) {
                Ok(snapshot) => {
                    let apps = fleet::load_apps(&snapshot);
                    envs.insert(
                        env.name.clone(),
                        Arc::new(EnvironmentState { environment: env.clone(), snapshot, apps }),
                    );
                }
                Err(e) => {
                    errors.push(SyncError::Snapshot(Arc::new(e)));
                    if let Some(previous) = previous {
                        envs.insert(env.name.clone(), previous.clone());
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
        let render = tracing::info_span!("render", clusters = fleet.clusters.len(), renders = tracing::field::Empty);
        let (plans, stats) = render.in_scope(|| self.planner.plan(&fleet.clusters, &envs));
        render.record("renders", stats.renders);
        let publish = tracing::info_span!("publish", published = tracing::field::Empty).entered();
        let mut published = 0;
        for plan in plans {
            if !plan.errors.is_empty() {
                let messages = plan.errors.iter().map(ToString::to_string);
                cluster_errors.entry(plan.assignment.cluster.clone()).or_default().extend(messages);
            }
            if !plan.reused {
                published += usize::from(publisher.publish(plan.assignment));
            }
        }
        publish.record("published", published);
        self.envs = envs;
        self.fleet = Some(fleet);
        Some((stats, published, cluster_errors))
    }

    fn load_fleet(&mut self, branches: &BTreeMap<String, ObjectId>) -> Result<Arc<Fleet>, SyncError> {
        let mut branch = self.config.fleet_branch.clone();
        for _ in 0..2 {
            let commit = branches
                .get(&branch)
                .ok_or_else(|| SyncError::NoFleetBranch { branch: branch.clone(), url: self.config.url.clone() })?;
            if self.fleet_commit == Some(*commit)
                && let Some(fleet) = &self.fleet
            {
                return Ok(fleet.clone());
            }
            let snapshot = self.mirror.snapshot(*commit).map_err(|e| SyncError::Snapshot(Arc::new(e)))?;
            let in_branch = |source| SyncError::Fleet { branch: branch.clone(), source };
            let declared = fleet::fleet_branch_of(&snapshot).map_err(in_branch)?;
            if declared == branch {
                let fleet = Fleet::load(&snapshot).map_err(in_branch)?;
                self.fleet_commit = Some(*commit);
                return Ok(Arc::new(fleet));
            }
            branch = declared;
        }
        Err(SyncError::FleetBranchesDisagree { configured: self.config.fleet_branch.clone(), declared: branch })
    }
}
