//! The sync loop: runs the stages in order, one sync at a time. Fetch the repository (on an
//! interval, or at once when the webhook or `convoy refresh` asks) and read the fleet model
//! ([`source`](crate::source)), plan ([`plan`](crate::plan)), decide what each cluster runs now
//! ([`release`](crate::release)), and publish the assignments that changed and the fleet view
//! through the hub's one [`Publisher`] ([`state`](crate::state)). Between syncs it steps the
//! rollouts in progress as reports arrive and carries out people's rollout actions.
//! Git work and planning run in `spawn_blocking`, one sync at a time; failures back off and are
//! shown in status. What the last good fetch produced stays in force until a better one.

use convoy_model::analysis::Measurement;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use convoy_shared::backoff::Backoff;
use convoy_shared::clock::unix_ms;
use convoy_shared::model::Assignment;
use gix::ObjectId;
use tokio_util::sync::CancellationToken;

use crate::plan::planner::{CacheSizes, PlanStats, Planner};
use crate::release::releaser::{Ledger, Releaser};
use crate::release::rollout::{Phase, Rollout};
use crate::source::SourceConfig;
use crate::source::repository::{Repository, SyncError};
use crate::state::hub::{EnvironmentRequest, Hub, Publisher};
use crate::state::metrics::HubMetrics;
use crate::state::view::FleetView;

/// Waits between failed fetches: 2 s doubling up to 64 s (and never past the poll interval).
const FETCH_BACKOFF: Backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(64));

/// How often rollouts in progress look at the clusters' reports when none arrive (soaks end on
/// this tick).
const ROLLOUT_TICK: Duration = Duration::from_millis(250);
/// How long a rollout waits after a report for the others of the same moment, so a burst of
/// reports steps it once.
const REPORT_COALESCE: Duration = Duration::from_millis(10);

/// What a sync that read the fleet planned and published, and how long its steps took.
struct Planned {
    stats: PlanStats,
    /// Assignments whose content changed.
    published: usize,
    /// Errors by cluster.
    cluster_errors: BTreeMap<String, Vec<String>>,
    /// Reading the fleet and its apps from the fetched commits.
    read_ms: u64,
    /// Planning: rendering and building every cluster's assignment.
    render_ms: u64,
    /// Releasing (rollouts, windows) and publishing.
    publish_ms: u64,
}

/// The state the loop carries between syncs (moved into and out of `spawn_blocking`): one value
/// per stage.
struct SyncWorker {
    config: SourceConfig,
    repository: Repository,
    planner: Planner,
    releaser: Releaser,
    /// Whether the rollouts and pins the store kept were restored (on the first sync).
    restored: bool,
}

/// A planner that fetches remote charts with the hub's chart fetcher, when it has one.
fn planner(config: &SourceConfig) -> Planner {
    Planner::fetching(config.charts.as_ref())
}

/// Runs the sync loop until `shutdown`, publishing through the hub's one [`Publisher`].
pub async fn run(config: SourceConfig, publisher: Publisher, shutdown: CancellationToken) {
    let publisher = Arc::new(publisher);
    let mut worker = SyncWorker {
        repository: Repository::new(&config),
        planner: planner(&config),
        releaser: Releaser::new(planner(&config)),
        config,
        restored: false,
    };
    loop {
        let started = Instant::now();
        let Some(synced) = blocking(worker, &publisher, SyncWorker::sync).await else { return };
        worker = synced;
        let wait = match worker.repository.failures() {
            0 => worker.config.interval,
            n => FETCH_BACKOFF.ceiling(n).min(worker.config.interval),
        };
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "source sync done");
        // Until the next sync: rollouts in progress step as reports arrive (and on a tick, for
        // soaks), and people's rollout actions are answered.
        let next_sync = tokio::time::Instant::now() + wait;
        loop {
            let tick = if worker.releaser.active() { ROLLOUT_TICK } else { wait };
            // Assignments the store refused go out again when due.
            let tick = match worker.releaser.retry_at() {
                Some(at) => tick.min(Duration::from_millis(at.saturating_sub(unix_ms()).max(0) as u64)),
                None => tick,
            };
            let wake = next_sync.min(tokio::time::Instant::now() + tick);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = publisher.refresh_requested() => {
                    tracing::info!("refresh requested");
                    break;
                }
                _ = publisher.report_arrived(), if worker.releaser.active() => {
                    tokio::time::sleep(REPORT_COALESCE).await;
                    let Some(stepped) = blocking(worker, &publisher, SyncWorker::step_rollouts).await else { return };
                    worker = stepped;
                }
                request = publisher.next_request() => {
                    let Some(request) = request else { return };
                    let answered = blocking(worker, &publisher, move |w, p| w.answer(p, request)).await;
                    let Some(answered) = answered else { return };
                    worker = answered;
                }
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= next_sync {
                        break;
                    }
                    let Some(stepped) = blocking(worker, &publisher, SyncWorker::step_rollouts).await else { return };
                    worker = stepped;
                }
            }
        }
    }
}

/// Runs `f` on the worker in `spawn_blocking` (Git and planning block) and hands it back;
/// `None` when it panicked, which stops the loop.
async fn blocking(
    mut worker: SyncWorker,
    publisher: &Arc<Publisher>,
    f: impl FnOnce(&mut SyncWorker, &Publisher) + Send + 'static,
) -> Option<SyncWorker> {
    let publisher = publisher.clone();
    let joined = tokio::task::spawn_blocking(move || {
        f(&mut worker, &publisher);
        worker
    })
    .await;
    joined.inspect_err(|e| tracing::error!(error = %e, "the sync worker panicked; stopping the sync loop")).ok()
}

impl SyncWorker {
    fn sync(&mut self, publisher: &Publisher) {
        let hub = publisher.hub();
        if !self.restored {
            self.restored = true;
            let pins = hub.store().pins().unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the stored pins; no environment starts pinned");
                Vec::new()
            });
            self.releaser.restore(load_rollouts(hub), pins.into_iter().collect());
        }
        // The root of a commit's trace: fetch, render and publish here; push and apply continue
        // it from the assignment's trace context.
        let _sync = tracing::info_span!("sync", repo = %self.repository.redacted_url()).entered();
        let mut errors = Vec::new();
        let started = Instant::now();
        let fetched = tracing::info_span!("fetch").in_scope(|| self.repository.fetch());
        HubMetrics::observe(&hub.metrics().git_fetch_duration, started.elapsed());
        let branches = match fetched {
            Ok(branches) => branches,
            Err(e) => {
                hub.metrics().git_fetch_failures.inc();
                let failures = self.repository.failures();
                tracing::warn!(error = %e, failures, "git fetch failed; keeping the last fetched state");
                publisher.update_view(|view| {
                    view.fetch_failures = failures;
                    view.errors = vec![SyncError::Fetch { source: Arc::new(e), attempts: failures }];
                });
                return;
            }
        };
        let capabilities = hub.capabilities();
        if self.repository.read_before(&branches) && self.planner.planned_with(&capabilities) {
            publisher.update_view(|view| {
                view.fetch_failures = 0;
                view.errors.retain(|e| !e.is_fetch());
            });
            return;
        }
        self.planner.set_capabilities(capabilities);
        let fetch_ms = started.elapsed().as_millis() as u64;
        match self.plan(publisher, &branches, &mut errors) {
            Some(Planned { stats, published, cluster_errors, read_ms, render_ms, publish_ms }) => {
                HubMetrics::observe(&hub.metrics().sync_duration, started.elapsed());
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(
                    renders = stats.renders,
                    pairs = stats.pairs,
                    rebuilt = stats.pairs_rebuilt,
                    published,
                    ms,
                    fetch_ms,
                    read_ms,
                    render_ms,
                    publish_ms,
                    "planned"
                );
                let view = FleetView {
                    rollouts: self.releaser.rollouts().clone(),
                    pins: self.releaser.pins().clone(),
                    holds: self.releaser.holds().clone(),
                    lineage: self.repository.lineage().clone(),
                    fleet: self.repository.fleet().cloned(),
                    envs: self.repository.envs().clone(),
                    branches: branches.iter().map(|(b, c)| (b.clone(), c.to_string())).collect(),
                    errors,
                    cluster_errors,
                    stats,
                    caches: CacheSizes {
                        blobs: self.repository.cached_blobs(),
                        packs: self.repository.packs(),
                        ..self.planner.cache_sizes()
                    },
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
        self.repository.set_branches(branches);
    }

    /// Reads the fleet, plans, releases and publishes; `None` when the fleet itself could not
    /// be read.
    fn plan(
        &mut self,
        publisher: &Publisher,
        branches: &BTreeMap<String, ObjectId>,
        errors: &mut Vec<SyncError>,
    ) -> Option<Planned> {
        let started = Instant::now();
        let reading = match self.repository.read(branches, errors) {
            Ok(reading) => reading,
            Err(e) => {
                errors.push(e);
                return None;
            }
        };
        let (fleet, envs, mut cluster_errors) = (reading.fleet, reading.envs, reading.cluster_errors);
        let fleet_commit = branches.get(&fleet.fleet_branch).map(ToString::to_string).unwrap_or_default();
        if let Some(change) = publisher.hub().access().update(&fleet.access, &fleet_commit) {
            if let Some(spec) = change.keep {
                publisher.record_access(&fleet_commit, spec);
            }
            let hub = publisher.hub().clone();
            tokio::spawn(async move {
                if let Err(e) = hub.access().record(change.record).await {
                    tracing::error!(error = %e, "the access policy's change could not be audited");
                }
            });
        }
        let render = tracing::info_span!("render", clusters = fleet.clusters.len(), renders = tracing::field::Empty);
        let read = started.elapsed();
        let (plans, stats) = render.in_scope(|| self.planner.plan(&fleet.clusters, &envs));
        let rendered = started.elapsed();
        render.record("renders", stats.renders);
        self.planner.forget_gone(&fleet.clusters, &envs);
        for plan in plans {
            if !plan.errors.is_empty() {
                let messages = plan.errors.iter().map(ToString::to_string);
                cluster_errors.entry(plan.assignment.cluster.clone()).or_default().extend(messages);
            }
            self.releaser.desire(plan.assignment);
        }
        self.releaser.forget_gone(&fleet);
        self.releaser.begin_rollouts(publisher, &fleet, self.repository.envs(), &envs, unix_ms());
        self.releaser.plan_held(&fleet, &mut self.repository, errors);
        self.releaser.set_windows(&fleet.windows);
        if let Err(e) = &fleet.windows {
            errors.push(SyncError::Windows { branch: fleet.fleet_branch.clone(), source: e.clone() });
        }
        let branch = &fleet.fleet_branch;
        errors.extend(
            fleet.health_errors.iter().map(|e| SyncError::HealthRule { branch: branch.clone(), source: e.clone() }),
        );
        self.repository.keep(fleet, envs);
        let published = self.releaser.publish(publisher, unix_ms());
        let ms = |d: Duration| d.as_millis() as u64;
        Some(Planned {
            stats,
            published,
            cluster_errors,
            read_ms: ms(read),
            render_ms: ms(rendered - read),
            publish_ms: ms(started.elapsed() - rendered),
        })
    }

    /// Steps every rollout in progress, publishing what it releases (and what a window no
    /// longer holds back).
    fn step_rollouts(&mut self, publisher: &Publisher) {
        let now = unix_ms();
        let holding = !self.releaser.holds().is_empty();
        let retry = self.releaser.retry_at().is_some_and(|at| now >= at);
        if self.releaser.step_rollouts(publisher, now) || holding || retry {
            self.releaser.publish(publisher, now);
            self.show_rollouts(publisher);
        }
    }

    /// Carries out a person's command on an environment: a rollout action, a pin or a release.
    fn answer(&mut self, publisher: &Publisher, request: EnvironmentRequest) {
        let EnvironmentRequest { environment, command, reply } = request;
        let fleet = self.repository.fleet().cloned();
        let answer =
            self.releaser.command(publisher, &environment, command, fleet.as_ref(), self.repository.envs(), unix_ms());
        if answer.is_ok() {
            if let Some(fleet) = fleet {
                let mut errors = Vec::new();
                self.releaser.plan_held(&fleet, &mut self.repository, &mut errors);
            }
            self.releaser.publish(publisher, unix_ms());
            self.show_rollouts(publisher);
        }
        // The asker may have given up waiting; nothing to do then.
        let _ = reply.send(answer);
    }

    /// Puts the rollouts into the published view, and their figures into the metrics.
    fn show_rollouts(&self, publisher: &Publisher) {
        let metrics = publisher.hub().metrics();
        let rollouts = self.releaser.rollouts();
        metrics.rollouts_active.set(rollouts.values().filter(|r| r.is_active()).count() as i64);
        let held: usize = rollouts.values().filter(|r| r.phase != Phase::Complete).map(|r| r.held().count()).sum();
        metrics.rollout_clusters_held.set(held as i64);
        publisher.update_view(|view| {
            view.rollouts = rollouts.clone();
            view.pins = self.releaser.pins().clone();
            view.holds = self.releaser.holds().clone();
        });
    }
}

impl Ledger for Publisher {
    fn publish(&self, assignments: Vec<Arc<Assignment>>) -> Option<usize> {
        Publisher::publish(self, assignments)
    }

    fn keep_rollout(&self, rollout: &Rollout) {
        self.record_rollout(rollout);
    }

    fn keep_pin(&self, environment: &str, commit: Option<&str>) {
        self.record_pin(environment, commit);
    }

    fn note(&self, cluster: &str, event: &str, revision: &str, detail: &str) {
        Publisher::note(self, cluster, event, revision, detail);
    }

    fn event(&self, kind: &str, detail: String) {
        self.hub().event("", kind, detail);
    }

    fn applied(&self, cluster: &str) -> (String, i32) {
        self.hub().connections().get(cluster).map(|c| (c.applied_digest, c.health)).unwrap_or_default()
    }

    fn assigned(&self, cluster: &str) -> Option<Arc<Assignment>> {
        self.hub().assignment(cluster)
    }

    fn measured(&self, environment: &str, source: &str) -> Vec<Measurement> {
        match source {
            "hub" => self.hub().gate_measurements(environment),
            cluster => self.hub().connections().last_report(cluster).map_or_else(Vec::new, |report| {
                report.measurements.iter().map(convoy_shared::model::report::measurement).collect()
            }),
        }
    }
}

/// The rollouts the store kept; one it cannot read is logged and started afresh.
fn load_rollouts(hub: &Hub) -> BTreeMap<String, Rollout> {
    let stored = match hub.store().rollouts() {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the stored rollouts; environments start from their heads");
            return BTreeMap::new();
        }
    };
    stored
        .into_iter()
        .filter_map(|(environment, json)| match serde_json::from_str::<Rollout>(&json) {
            Ok(rollout) => Some((environment, rollout)),
            Err(e) => {
                tracing::error!(environment, error = %e, "a stored rollout cannot be read; ignoring it");
                None
            }
        })
        .collect()
}
