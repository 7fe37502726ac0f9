//! The source loop: fetch the repository (on an interval, or at once when the webhook or
//! `convoy refresh` asks), load the fleet model, plan, and publish the assignments that changed.
//! Git work and planning run in `spawn_blocking`, one fetch at a time; failures back off and are
//! shown in status. What the last good fetch produced stays in force until a better one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use convoy_render::helm::fetch::ChartFetcher;
use convoy_shared::clock::unix_ms;
use convoy_shared::model::{AppAssignment, Assignment};
use gix::ObjectId;
use tokio_util::sync::CancellationToken;

use convoy_render::fleet::{self, Cluster, Environment, Fleet, RolloutSpec};
use crate::source::git::{GitAccess, GitMirror};
use crate::state::metrics::HubMetrics;
use crate::plan::planner::{CacheSizes, EnvironmentState, PlanStats, Planner};
use crate::release::rollout::{self, Action, Command, Observed, Phase, Rollout, RolloutError};
use crate::state::hub::{EnvironmentRequest, Publisher};
use crate::state::view::{FleetView, Lineage, SyncError};

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

/// Commits listed at most when comparing two environments' branches.
const LINEAGE_LIMIT: usize = 1000;
/// How often rollouts in progress look at the clusters' reports when none arrive (soaks end on
/// this tick).
const ROLLOUT_TICK: Duration = Duration::from_millis(250);
/// How long a rollout waits after a report for the others of the same moment, so a burst of
/// reports steps it once.
const REPORT_COALESCE: Duration = Duration::from_millis(10);

/// The state the loop carries between syncs (moved into and out of `spawn_blocking`).
struct SourceWorker {
    config: SourceConfig,
    mirror: GitMirror,
    planner: Planner,
    /// Plans what clusters held by a rollout run: a revision other than their branch's head.
    held_planner: Planner,
    /// Every cluster's assignment at its environment's head (from the last plan).
    desired: HashMap<String, Arc<Assignment>>,
    /// Clusters' assignments at the earlier commits rollouts began from and pins hold, by
    /// (cluster, commit).
    held: HashMap<(String, String), Arc<Assignment>>,
    /// Snapshots of the commits clusters are held at, by (environment, commit).
    held_envs: HashMap<(String, ObjectId), Arc<EnvironmentState>>,
    /// What was last published to each cluster.
    published: HashMap<String, Arc<Assignment>>,
    /// Each environment's latest rollout (restored from the store on the first sync).
    rollouts: BTreeMap<String, Rollout>,
    /// Environments a rollback pinned at a commit (restored from the store on the first sync).
    pins: BTreeMap<String, String>,
    /// Each environment against the one before it, as of the last plan.
    lineage: BTreeMap<String, Lineage>,
    rollouts_loaded: bool,
    branches: Option<BTreeMap<String, ObjectId>>,
    envs: HashMap<String, Arc<EnvironmentState>>,
    fleet: Option<Arc<Fleet>>,
    /// Commit the fleet model was read from: an unchanged fleet branch is not parsed again.
    fleet_commit: Option<ObjectId>,
    failures: u32,
}

/// A planner that fetches remote charts with the hub's chart fetcher, when it has one.
fn planner(config: &SourceConfig) -> Planner {
    Planner::fetching(config.charts.as_ref())
}

/// Runs the source loop until `shutdown`, publishing through the hub's one [`Publisher`].
pub async fn run(config: SourceConfig, publisher: Publisher, shutdown: CancellationToken) {
    let publisher = Arc::new(publisher);
    let mut worker = SourceWorker {
        mirror: GitMirror::new(&config.url, &config.mirror, config.access.clone()),
        planner: planner(&config),
        held_planner: planner(&config),
        config,
        desired: HashMap::new(),
        held: HashMap::new(),
        held_envs: HashMap::new(),
        published: HashMap::new(),
        rollouts: BTreeMap::new(),
        pins: BTreeMap::new(),
        lineage: BTreeMap::new(),
        rollouts_loaded: false,
        branches: None,
        envs: HashMap::new(),
        fleet: None,
        fleet_commit: None,
        failures: 0,
    };
    loop {
        let started = Instant::now();
        let Some(synced) = blocking(worker, &publisher, SourceWorker::sync).await else { return };
        worker = synced;
        let wait = match worker.failures {
            0 => worker.config.interval,
            n => Duration::from_secs(1u64 << n.min(6)).min(worker.config.interval),
        };
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "source sync done");
        // Until the next sync: rollouts in progress step as reports arrive (and on a tick, for
        // soaks), and people's rollout actions are answered.
        let next_sync = tokio::time::Instant::now() + wait;
        loop {
            let tick = if worker.rollouts_active() { ROLLOUT_TICK } else { wait };
            let wake = next_sync.min(tokio::time::Instant::now() + tick);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = publisher.refresh_requested() => {
                    tracing::info!("refresh requested");
                    break;
                }
                _ = publisher.report_arrived(), if worker.rollouts_active() => {
                    tokio::time::sleep(REPORT_COALESCE).await;
                    let Some(stepped) = blocking(worker, &publisher, SourceWorker::step_rollouts).await else { return };
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
                    let Some(stepped) = blocking(worker, &publisher, SourceWorker::step_rollouts).await else { return };
                    worker = stepped;
                }
            }
        }
    }
}

/// Runs `f` on the worker in `spawn_blocking` (Git and planning block) and hands it back;
/// `None` when it panicked, which stops the loop.
async fn blocking(
    mut worker: SourceWorker,
    publisher: &Arc<Publisher>,
    f: impl FnOnce(&mut SourceWorker, &Publisher) + Send + 'static,
) -> Option<SourceWorker> {
    let publisher = publisher.clone();
    let joined = tokio::task::spawn_blocking(move || {
        f(&mut worker, &publisher);
        worker
    })
    .await;
    joined.inspect_err(|e| tracing::error!(error = %e, "the source worker panicked; stopping the source loop")).ok()
}

impl SourceWorker {
    fn sync(&mut self, publisher: &Publisher) {
        let hub = publisher.hub();
        if !self.rollouts_loaded {
            self.rollouts_loaded = true;
            self.rollouts = load_rollouts(hub);
            let pins = hub.store().pins().unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the stored pins; no environment starts pinned");
                Vec::new()
            });
            self.pins = pins.into_iter().collect();
        }
        // The root of a commit's trace: fetch, render and publish here; push and apply continue
        // it from the assignment's trace context.
        let _sync = tracing::info_span!("sync", repo = %crate::source::git::redacted(&self.config.url)).entered();
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
        let capabilities = hub.capabilities();
        if self.branches.as_ref() == Some(&branches) && self.planner.planned_with(&capabilities) {
            publisher.update_view(|view| {
                view.fetch_failures = 0;
                view.errors.retain(|e| !e.is_fetch());
            });
            return;
        }
        self.planner.set_capabilities(capabilities);
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
                    rollouts: self.rollouts.clone(),
                    pins: self.pins.clone(),
                    lineage: self.lineage.clone(),
                    fleet: self.fleet.clone(),
                    envs: self.envs.clone(),
                    branches: branches.iter().map(|(b, c)| (b.clone(), c.to_string())).collect(),
                    errors,
                    cluster_errors,
                    stats,
                    caches: CacheSizes {
                        blobs: self.mirror.cached_blobs(),
                        packs: self.mirror.packs(),
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
                    let apps = fleet::load_apps(snapshot.as_ref());
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
        self.planner.forget_gone(&fleet.clusters, &envs);
        for plan in plans {
            if !plan.errors.is_empty() {
                let messages = plan.errors.iter().map(ToString::to_string);
                cluster_errors.entry(plan.assignment.cluster.clone()).or_default().extend(messages);
            }
            self.desired.insert(plan.assignment.cluster.clone(), plan.assignment);
        }
        self.desired.retain(|cluster, _| fleet.clusters.contains_key(cluster));
        self.lineage = self.lineage(&fleet, &envs);
        self.begin_rollouts(publisher, &fleet, &envs);
        self.plan_held(&fleet, errors);
        self.envs = envs;
        self.fleet = Some(fleet);
        let published = self.publish(publisher);
        Some((stats, published, cluster_errors))
    }

    /// Starts a rollout for every environment with `rollout:`, and every app with a `rollout:`
    /// of its own, whose head moved: from the previous rollout's state, or settled at the head
    /// when the hub sees it first. An app's rollout that is new starts from what its clusters
    /// ran. Runs before `self.envs` takes the new heads.
    fn begin_rollouts(&mut self, publisher: &Publisher, fleet: &Fleet, envs: &HashMap<String, Arc<EnvironmentState>>) {
        let now = unix_ms();
        for env in &fleet.environments {
            if self.pins.contains_key(&env.name) {
                // New commits wait for the pin's release.
                continue;
            }
            let Some(state) = envs.get(&env.name) else {
                self.rollouts.retain(|_, r| r.environment != env.name);
                continue;
            };
            let head = state.snapshot.commit.to_string();
            let clusters: Vec<&Cluster> = fleet.clusters.values().filter(|c| c.environment == env.name).collect();
            let previous_head = self.envs.get(&env.name).map(|e| e.snapshot.commit.to_string()).filter(|c| *c != head);
            let env_before = self.rollouts.get(&env.name).cloned();
            let specs = rollout_specs(env, state);
            // An app whose app.yaml does not read keeps its rollout as it is.
            let unread = state.apps.iter().filter(|(_, app)| app.is_err()).map(|(name, _)| Some(name.as_str()));
            let kept: BTreeSet<String> =
                specs.iter().map(|(app, _)| *app).chain(unread).map(|app| rollout::track(&env.name, app)).collect();
            self.rollouts.retain(|key, r| r.environment != env.name || kept.contains(key));
            for (app, spec) in specs {
                let next = match (self.rollouts.get(&rollout::track(&env.name, app)), &previous_head) {
                    (Some(current), _) if current.revision == head => continue,
                    (Some(current), _) => current.successor(spec, &head, &clusters, now),
                    (None, Some(previous)) if app.is_some() => {
                        let ran = |c: &Cluster| match &env_before {
                            Some(r) => r.running(&c.name).map(str::to_string),
                            None => Some(previous.clone()),
                        };
                        let from =
                            clusters.iter().filter_map(|c| ran(c).map(|commit| (c.name.clone(), commit))).collect();
                        Rollout::begin(&env.name, spec, &head, &clusters, from, 0, now).of_app(app)
                    }
                    (None, _) => Rollout::settled(&env.name, spec, &head, &clusters, now).of_app(app),
                };
                if next.phase != Phase::Complete {
                    let detail = format!(
                        "{}: rolling out {} in {} waves (from wave {})",
                        next.track(),
                        rollout::short(&head),
                        next.waves.len(),
                        next.opened
                    );
                    publisher.hub().event("", "rollout", detail);
                }
                publisher.record_rollout(&next);
                self.rollouts.insert(next.track(), next);
            }
        }
    }

    /// Plans, against that commit, the clusters rollouts began from an earlier commit (held
    /// there, or the baseline a released one is measured against) and those a pin holds.
    fn plan_held(&mut self, fleet: &Fleet, errors: &mut Vec<SyncError>) {
        let mut groups: BTreeMap<(String, String), BTreeMap<String, Cluster>> = BTreeMap::new();
        for rollout in self.rollouts.values().filter(|r| r.phase != Phase::Complete) {
            if self.pins.contains_key(&rollout.environment) {
                continue;
            }
            for (name, commit) in &rollout.from {
                if let Some(cluster) = fleet.clusters.get(name) {
                    let key = (rollout.environment.clone(), commit.clone());
                    groups.entry(key).or_default().insert(name.clone(), cluster.clone());
                }
            }
        }
        for (environment, commit) in &self.pins {
            for cluster in fleet.clusters.values().filter(|c| &c.environment == environment) {
                let key = (environment.clone(), commit.clone());
                groups.entry(key).or_default().insert(cluster.name.clone(), cluster.clone());
            }
        }
        let mut held = HashMap::new();
        let mut used = std::collections::HashSet::new();
        for ((environment, commit), clusters) in groups {
            let Some(env) = fleet.environment(&environment) else { continue };
            let Ok(id) = ObjectId::from_hex(commit.as_bytes()) else { continue };
            let key = (environment.clone(), id);
            let state = match self.held_envs.get(&key) {
                Some(state) => state.clone(),
                None => match self.mirror.snapshot(id) {
                    Ok(snapshot) => {
                        let apps = fleet::load_apps(snapshot.as_ref());
                        Arc::new(EnvironmentState { environment: env.clone(), snapshot, apps })
                    }
                    Err(e) => {
                        errors.push(SyncError::Snapshot(Arc::new(e)));
                        continue;
                    }
                },
            };
            used.insert(key.clone());
            self.held_envs.insert(key, state.clone());
            let (plans, _) = self.held_planner.plan(&clusters, &HashMap::from([(environment, state)]));
            held.extend(
                plans.into_iter().map(|plan| ((plan.assignment.cluster.clone(), commit.clone()), plan.assignment)),
            );
        }
        self.held_envs.retain(|key, _| used.contains(key));
        self.held = held;
    }

    /// `cluster`'s assignment at `commit` (`None`: its head's).
    fn at(&self, cluster: &str, commit: Option<&str>) -> Option<&Arc<Assignment>> {
        match commit {
            None => self.desired.get(cluster),
            Some(commit) => self.held.get(&(cluster.to_string(), commit.to_string())),
        }
    }

    /// The rollouts of `environment`, and the apps among them with rollouts of their own.
    fn tracks(&self, environment: &str) -> (Vec<&Rollout>, BTreeSet<String>) {
        let tracks: Vec<&Rollout> = self.rollouts.values().filter(|r| r.environment == environment).collect();
        let own = tracks.iter().filter_map(|r| r.app.clone()).collect();
        (tracks, own)
    }

    /// What `cluster` is to run now: its head's assignment, the one a pin holds it at, or the
    /// apps' parts at the commits their rollouts give it: each app's own rollout for its part,
    /// the environment's for the rest. `None` while a commit it needs is not planned.
    fn target(&self, cluster: &str, desired: &Arc<Assignment>) -> Option<Arc<Assignment>> {
        if let Some(pin) = self.pins.get(&desired.environment) {
            return self.at(cluster, Some(pin)).cloned();
        }
        let (tracks, own) = self.tracks(&desired.environment);
        let base = tracks.iter().find(|r| r.app.is_none()).and_then(|r| r.held_at(cluster));
        let apps: Vec<(&str, Option<&str>)> =
            tracks.iter().filter_map(|r| r.app.as_deref().map(|app| (app, r.held_at(cluster)))).collect();
        let base_assignment = self.at(cluster, base)?;
        if apps.iter().all(|(_, c)| *c == base) {
            return Some(base_assignment.clone());
        }
        let mut failed = base_assignment.failed;
        let mut parts: Vec<(&str, &Arc<AppAssignment>)> =
            base_assignment.digested_apps().filter(|(_, part)| !own.contains(&part.name)).collect();
        let mut chart_sources = base_assignment.chart_sources.clone();
        chart_sources.retain(|app, _| !own.contains(app));
        for (app, commit) in apps {
            let source = self.at(cluster, commit)?;
            failed |= source.failed;
            parts.extend(source.digested_apps().filter(|(_, part)| part.name == app));
            chart_sources.extend(source.chart_sources.get(app).map(|chart| (app.to_string(), chart.clone())));
        }
        let revision = &base_assignment.revision;
        let mut composed = Assignment::compose(cluster, &desired.environment, revision, parts, failed);
        composed.trace_context = desired.trace_context.clone();
        composed.chart_sources = chart_sources;
        Some(Arc::new(composed))
    }

    /// Publishes to each cluster what it is to run now ([`Self::target`]). Returns how many
    /// assignments changed.
    fn publish(&mut self, publisher: &Publisher) -> usize {
        let _span = tracing::info_span!("publish", published = tracing::field::Empty).entered();
        let mut published = 0;
        for (cluster, desired) in &self.desired {
            let Some(target) = self.target(cluster, desired) else { continue };
            let same = |last: &Arc<Assignment>| {
                Arc::ptr_eq(last, &target) || (last.digest == target.digest && last.revision == target.revision)
            };
            if self.published.get(cluster).is_some_and(same) {
                continue;
            }
            published += usize::from(publisher.publish(target.clone()));
            self.published.insert(cluster.clone(), target);
        }
        tracing::Span::current().record("published", published);
        published
    }

    fn rollouts_active(&self) -> bool {
        self.rollouts.values().any(|r| r.is_active() && !self.pins.contains_key(&r.environment))
    }

    /// Each environment's branch against the previous environment's (promotion order).
    fn lineage(&self, fleet: &Fleet, envs: &HashMap<String, Arc<EnvironmentState>>) -> BTreeMap<String, Lineage> {
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

    /// What the hub sees of `cluster` for `rollout`: the parts of its assignment the rollout
    /// decides, at the new revision against the commit it began from, and whether the
    /// assignment it was last given carries them and is applied.
    fn observe(&self, hub: &crate::state::hub::Hub, rollout: &Rollout, own: &BTreeSet<String>, cluster: &str) -> Observed {
        let parts = |a| governed(a, rollout, own);
        let new = parts(self.desired.get(cluster));
        let from = parts(rollout.from.get(cluster).and_then(|commit| self.at(cluster, Some(commit))));
        let (applied, health) =
            hub.connections().get(cluster).map(|c| (c.applied_digest, c.health)).unwrap_or_default();
        let runs_new = self.desired.contains_key(cluster)
            && self.published.get(cluster).is_some_and(|p| p.digest == applied && parts(Some(p)) == new);
        Observed::of(new != from, runs_new, health)
    }

    /// Steps every rollout in progress, publishing what it releases.
    fn step_rollouts(&mut self, publisher: &Publisher) {
        let hub = publisher.hub().clone();
        let now = unix_ms();
        let mut stepped = Vec::new();
        for rollout in self.rollouts.values().filter(|r| r.is_active()) {
            let mut next = rollout.clone();
            let _span = tracing::info_span!("rollout", track = %rollout.track()).entered();
            let (_, own) = self.tracks(&rollout.environment);
            // A step looks at each cluster several times; read its link once per step.
            let seen = std::cell::RefCell::new(HashMap::new());
            let observe = |c: &str| {
                *seen.borrow_mut().entry(c.to_string()).or_insert_with(|| self.observe(&hub, rollout, &own, c))
            };
            for event in next.step(now, observe) {
                tracing::info!(revision = %rollout.revision, "{event}");
                hub.event("", "rollout", format!("{}: {event}", rollout.track()));
            }
            if next != *rollout {
                publisher.record_rollout(&next);
                stepped.push(next);
            }
        }
        let changed = !stepped.is_empty();
        for next in stepped {
            self.rollouts.insert(next.track(), next);
        }
        if changed {
            self.publish(publisher);
            self.show_rollouts(publisher);
        }
    }

    /// Carries out a person's command on an environment: a rollout action, a pin or a release.
    fn answer(&mut self, publisher: &Publisher, request: EnvironmentRequest) {
        let environment = request.environment.clone();
        let answer = match request.command {
            Command::Rollout { action, app } => self.act(publisher, &environment, app.as_deref(), action),
            Command::Pin { commit } => self.pin(publisher, &environment, commit),
            Command::Release => self.release(publisher, &environment),
        };
        if answer.is_ok() {
            if let Some(fleet) = self.fleet.clone() {
                let mut errors = Vec::new();
                self.plan_held(&fleet, &mut errors);
            }
            self.publish(publisher);
            self.show_rollouts(publisher);
        }
        // The asker may have given up waiting; nothing to do then.
        let _ = request.reply.send(answer);
    }

    /// Carries out `action` on `environment`'s rollout, or on `app`'s own in it.
    fn act(
        &mut self,
        publisher: &Publisher,
        environment: &str,
        app: Option<&str>,
        action: Action,
    ) -> Result<String, RolloutError> {
        if let Some(commit) = self.pins.get(environment) {
            return Err(RolloutError::Pinned { environment: environment.to_string(), commit: commit.clone() });
        }
        let hub = publisher.hub().clone();
        let key = rollout::track(environment, app);
        let current = self.rollouts.get(&key).ok_or_else(|| RolloutError::None(key.clone()))?;
        let (_, own) = self.tracks(environment);
        let mut next = current.clone();
        let message = next.act(action, |c| self.observe(&hub, current, &own, c))?;
        hub.event("", "rollout", format!("{key}: {message}"));
        publisher.record_rollout(&next);
        self.rollouts.insert(key, next);
        Ok(message)
    }

    /// Pins `environment` at `commit`: every cluster of it runs that commit, new ones wait.
    fn pin(&mut self, publisher: &Publisher, environment: &str, commit: String) -> Result<String, RolloutError> {
        let fleet = self.fleet.clone().ok_or_else(|| RolloutError::UnknownEnvironment(environment.into()))?;
        if fleet.environment(environment).is_none() {
            return Err(RolloutError::UnknownEnvironment(environment.into()));
        }
        for cluster in fleet.clusters.values().filter(|c| c.environment == environment) {
            publisher.note(&cluster.name, "pinned", &commit, "convoy rollback");
        }
        let short = rollout::short(&commit).to_string();
        publisher.hub().event("", "rollback", format!("{environment}: pinned at {short}"));
        publisher.record_pin(environment, Some(&commit));
        self.pins.insert(environment.to_string(), commit);
        Ok(format!("{environment} pinned at {short}; new commits wait for `convoy rollback {environment} --release`"))
    }

    /// Lifts `environment`'s pin: its head reaches its clusters again, in waves when it has a
    /// rollout (starting from the pinned commit).
    fn release(&mut self, publisher: &Publisher, environment: &str) -> Result<String, RolloutError> {
        let pinned = self.pins.remove(environment).ok_or_else(|| RolloutError::NotPinned(environment.into()))?;
        publisher.record_pin(environment, None);
        let fleet = self.fleet.clone();
        let env = fleet.as_ref().and_then(|f| f.environment(environment));
        let state = self.envs.get(environment).map(|state| (state.snapshot.commit.to_string(), state.clone()));
        if let (Some(fleet), Some(env), Some((head, state))) = (&fleet, env, state)
            && head != pinned
        {
            // Every rollout of the environment starts over from the pinned commit.
            let clusters: Vec<&Cluster> = fleet.clusters.values().filter(|c| c.environment == environment).collect();
            let from: BTreeMap<String, String> = clusters.iter().map(|c| (c.name.clone(), pinned.clone())).collect();
            for (app, spec) in rollout_specs(env, &state) {
                let next = Rollout::begin(environment, spec, &head, &clusters, from.clone(), 0, unix_ms()).of_app(app);
                publisher.record_rollout(&next);
                self.rollouts.insert(next.track(), next);
            }
        }
        let short = rollout::short(&pinned);
        publisher.hub().event("", "rollback", format!("{environment}: released from {short}"));
        Ok(format!("{environment} released from {short}; its head reaches its clusters again"))
    }

    /// Puts the rollouts into the published view, and their figures into the metrics.
    fn show_rollouts(&self, publisher: &Publisher) {
        let metrics = publisher.hub().metrics();
        metrics.rollouts_active.set(self.rollouts.values().filter(|r| r.is_active()).count() as i64);
        let held: usize = self.rollouts.values().filter(|r| r.phase != Phase::Complete).map(|r| r.held().count()).sum();
        metrics.rollout_clusters_held.set(held as i64);
        publisher.update_view(|view| {
            view.rollouts = self.rollouts.clone();
            view.pins = self.pins.clone();
        });
    }

    fn load_fleet(&mut self, branches: &BTreeMap<String, ObjectId>) -> Result<Arc<Fleet>, SyncError> {
        let mut branch = self.config.fleet_branch.clone();
        for _ in 0..2 {
            let commit = branches.get(&branch).ok_or_else(|| SyncError::NoFleetBranch {
                branch: branch.clone(),
                url: crate::source::git::redacted(&self.config.url),
            })?;
            if self.fleet_commit == Some(*commit)
                && let Some(fleet) = &self.fleet
            {
                return Ok(fleet.clone());
            }
            let snapshot = self.mirror.snapshot(*commit).map_err(|e| SyncError::Snapshot(Arc::new(e)))?;
            let in_branch = |source| SyncError::Fleet { branch: branch.clone(), source };
            let declared = fleet::fleet_branch_of(snapshot.as_ref()).map_err(in_branch)?;
            if declared == branch {
                let fleet = Fleet::load(snapshot.as_ref()).map_err(in_branch)?;
                self.fleet_commit = Some(*commit);
                return Ok(Arc::new(fleet));
            }
            branch = declared;
        }
        Err(SyncError::FleetBranchesDisagree { configured: self.config.fleet_branch.clone(), declared: branch })
    }
}

/// The rollouts `env` has at `state`'s commit: the environment's (app `None`), then each app's
/// own.
fn rollout_specs<'a>(env: &'a Environment, state: &'a EnvironmentState) -> Vec<(Option<&'a str>, &'a RolloutSpec)> {
    let apps =
        state.apps.iter().filter_map(|(name, app)| Some((Some(name.as_str()), app.as_ref().ok()?.rollout.as_ref()?)));
    env.rollout.iter().map(|spec| (None, spec)).chain(apps).collect()
}

/// The (app, digest) parts of `assignment` that `rollout` decides.
fn governed<'a>(
    assignment: Option<&'a Arc<Assignment>>,
    rollout: &Rollout,
    own: &BTreeSet<String>,
) -> Vec<(&'a str, &'a str)> {
    let Some(assignment) = assignment else { return Vec::new() };
    assignment
        .digested_apps()
        .filter(|(_, app)| rollout.governs(&app.name, own))
        .map(|(digest, app)| (app.name.as_str(), digest))
        .collect()
}

/// The rollouts the store kept; one it cannot read is logged and started afresh.
fn load_rollouts(hub: &crate::state::hub::Hub) -> BTreeMap<String, Rollout> {
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
