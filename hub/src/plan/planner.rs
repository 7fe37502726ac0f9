//! The planner: from the fleet model and each environment's snapshot to one [`Assignment`] per
//! cluster. Renders are cached per (branch, overlay directory) and checked against the ids of
//! exactly the files and directories the render read, so a commit re-renders only what it
//! touched; per-(app, cluster) results are reused when their render, cluster and app spec are
//! unchanged. A Helm app loads its chart once per commit that touches it and renders once per
//! distinct (chart, values, release, capabilities): clusters with the same values share it.
//!
//! Decisions:
//! - A render is reused while every file and directory it read has the same id in the new
//!   snapshot; each cache entry is checked once per plan.
//! - An app that fails to render, or whose `app.yaml` is invalid, keeps that cluster's last good
//!   objects, marked with the error; an app never planned before ships no objects.
//! - A cluster whose app outputs are all the very ones of its last plan keeps the very same
//!   assignment (publishing compares pointers, not contents).
//! - Helm renders no plan used are dropped at the end of the next plan.
//! - An app output that shares its render's objects (no `${cluster.…}` variable) is built and
//!   digested once per render and app; every cluster on that render holds the same output.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use convoy_model::Objects;
use convoy_model::analysis::QueryFrom;
use convoy_shared::model::{AppAssignment, Assignment, GateQueries};
use gix::ObjectId;
use rayon::prelude::*;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use convoy_render::app::{self as app_render, Namespacing, assemble, overlay_dir};
pub use convoy_render::app::{MAX_OBJECT_BYTES, ObjectError};
use convoy_render::helm::fetch::ChartFetcher;
use convoy_render::helm::remote::Remote;
use convoy_render::helm::{Capabilities, Chart};
use convoy_render::{self as render, EntryKind, RenderError, Renderer, Source};

use crate::source::git::Snapshot;
use crate::source::repository::EnvironmentState;
use convoy_render::fleet::{App, ChartLocation, Cluster, Environment, Fleet, FleetError, HelmSource};

/// Why one app could not be planned for one cluster; the cluster keeps that app's last good
/// objects. Cloned out of the planner's caches, hence the `Arc` around render errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlanError {
    /// The app's kustomization did not render.
    #[error("app '{app}' on cluster '{cluster}': {source}")]
    Render {
        app: String,
        cluster: String,
        #[source]
        source: Arc<RenderError>,
    },
    /// A rendered object cannot go to the cluster: an unresolved `${cluster.…}` variable, or
    /// too large for the API server.
    #[error("app '{app}' on cluster '{cluster}': {source}")]
    Object {
        app: String,
        cluster: String,
        #[source]
        source: Box<ObjectError>,
    },
    /// The app's `app.yaml` is invalid on this environment's branch.
    #[error(transparent)]
    App(FleetError),
}

/// What one plan did, for status and for tests that count re-renders.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlanStats {
    /// Kustomizations actually rendered (cache misses).
    pub renders: usize,
    /// (app, cluster) pairs planned.
    pub pairs: usize,
    /// Pairs whose output was rebuilt rather than reused.
    pub pairs_rebuilt: usize,
}

/// How many entries the hub's caches hold, published with every sync so tests and benchmarks
/// can check that they stay bounded by the fleet's size, not by the number of commits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheSizes {
    /// Git blobs held for the snapshots alive now.
    pub blobs: usize,
    /// Pack files in the Git mirror (each one is mapped into memory).
    pub packs: usize,
    /// Rendered kustomizations, by (branch, directory).
    pub renders: usize,
    /// (cluster, app) outputs, and each pair's last good output.
    pub pairs: usize,
    pub last_good: usize,
    /// Clusters' last assignments.
    pub clusters: usize,
}

/// One cluster's plan: its assignment and any errors to show in status.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// The very `Arc` of the previous plan when none of the cluster's apps changed.
    pub assignment: Arc<Assignment>,
    pub errors: Vec<PlanError>,
}

/// The ids of exactly the files and directories a render or chart load read.
type Fingerprint = Vec<(String, Option<ObjectId>)>;

/// A render's objects, or why it failed (shared by every cluster with the same inputs).
type Rendered = Result<Objects, Arc<RenderError>>;

/// A loaded chart with the digest of its content, or why it did not load.
type LoadedChart = Result<(Arc<Chart>, [u8; 32]), Arc<RenderError>>;

#[derive(Clone)]
struct CachedRender {
    fingerprint: Fingerprint,
    output: Rendered,
}

/// A repository chart as loaded, with what identifies its content.
#[derive(Clone)]
struct CachedChart {
    fingerprint: Fingerprint,
    output: LoadedChart,
}

/// One Helm render: everything it reads, and the digest of it.
struct HelmJob {
    key: [u8; 32],
    chart: Arc<Chart>,
    values: Value,
    helm: HelmSource,
    namespace: String,
    /// What the app's namespace does to the render (every cluster's the same).
    namespacing: Option<Namespacing>,
    capabilities: Arc<Capabilities>,
}

/// A Helm app's chart as this plan loaded it, ready to be layered with a cluster's values.
struct HelmInputs<'h> {
    helm: &'h HelmSource,
    chart: Arc<Chart>,
    identity: [u8; 32],
}

/// Values files as parsed, per path, with the blob they were parsed from.
type ParsedValues = HashMap<String, (Option<ObjectId>, Map<String, Value>)>;

/// What Helm jobs read from the planner: the parsed values files and each cluster's
/// capabilities.
#[derive(Clone, Copy)]
struct PlannerInputs<'p> {
    parsed: &'p ParsedValues,
    capabilities: &'p HashMap<String, Arc<Capabilities>>,
}

impl HelmInputs<'_> {
    /// The render of `app` for `cluster`: the values layered (from `parsed`, which holds every
    /// file they read) and everything digested.
    fn job(
        &self,
        planner: &PlannerInputs,
        env: &EnvironmentState,
        cluster: &Cluster,
        app: &App,
    ) -> Result<HelmJob, Arc<RenderError>> {
        let PlannerInputs { parsed, capabilities } = *planner;
        let snapshot = env.snapshot.as_ref();
        let values =
            app_render::helm_values(snapshot, app, self.helm, cluster, &mut |file: &str| match parsed.get(file) {
                Some((id, values)) if *id == snapshot.id_of(Path::new(file)) => Ok(values.clone()),
                _ => app_render::parse_values(file, snapshot.file(file).unwrap_or_default()),
            })
            .map_err(Arc::new)?;
        let namespacing = Namespacing::of(app);
        let namespace = app.namespace.clone().unwrap_or_else(|| "default".into());
        let capabilities = capabilities.get(&cluster.name).cloned().unwrap_or_else(Capabilities::shared_default);
        let mut hasher = Sha256::new();
        hasher.update(self.identity);
        if let Some(n) = &namespacing {
            for part in [&n.namespace, &n.app] {
                hasher.update(part.as_bytes());
                hasher.update([0]);
            }
            hasher.update([n.create as u8, n.delete as u8]);
        }
        for part in [
            &convoy_shared::model::canonical_json(&values),
            &self.helm.release_name,
            &namespace,
            &capabilities.kube_version,
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        for api in &capabilities.api_versions {
            hasher.update(api.as_bytes());
            hasher.update([0]);
        }
        Ok(HelmJob {
            key: hasher.finalize().into(),
            chart: self.chart.clone(),
            values,
            helm: self.helm.clone(),
            namespace,
            namespacing,
            capabilities,
        })
    }
}

impl HelmJob {
    /// The chart's objects as every cluster with these inputs takes them: placed in the app's
    /// namespace ([`Namespacing::places_render`]) and sorted, so that an assignment without
    /// `${cluster.…}` variables shares them.
    fn render(&self) -> Rendered {
        let mut objects =
            app_render::render_chart(&self.chart, &self.values, &self.helm, &self.namespace, &self.capabilities)
                .map_err(Arc::new)?;
        if let Some(namespacing) = self.namespacing.as_ref().filter(|n| n.places_render(&objects)) {
            namespacing.apply(&mut objects);
        }
        Ok(sorted(objects))
    }
}

/// Loads charts that are not in the repository (chart repositories, OCI registries): the chart
/// and the digest that identifies its bits.
pub type RemoteCharts = Arc<dyn Fn(&Remote) -> Result<(Chart, String), RenderError> + Send + Sync>;

#[derive(Clone)]
struct CachedPair {
    render: Objects,
    cluster: Cluster,
    app: App,
    result: Result<Arc<Digested>, PlanError>,
}

/// An app's output for one cluster with its content digest, computed once; the assignment
/// shares the output.
pub type Digested = ([u8; 32], Arc<AppAssignment>);

/// A cluster's last assignment and the app outputs it was built from (held, so pointer
/// equality cannot be fooled by a freed and reused allocation).
#[derive(Clone)]
struct CachedCluster {
    apps: Vec<Arc<Digested>>,
    environment: String,
    assignment: Arc<Assignment>,
}

/// Keeps render caches and each pair's last good output between plans.
#[derive(Default)]
pub struct Planner {
    renders: HashMap<BranchPath, CachedRender>,
    /// Every pair's last output, boxed: a plan looks up each of 100,000 pairs, and a table of
    /// small entries stays in the caches (with `CachedPair`s inline the lookups took 40% of a
    /// plan of 10,000 clusters).
    pairs: PairTable<Box<CachedPair>>,
    last_good: PairTable<Arc<Digested>>,
    clusters: HashMap<String, CachedCluster>,
    /// Repository charts per chart directory on a branch, checked like renders.
    charts: HashMap<BranchPath, CachedChart>,
    /// Remote charts, fetched once per location.
    remote: HashMap<Remote, LoadedChart>,
    /// What each fetched remote chart resolved to ([`Remote::resolved`]), for assignments'
    /// `chart_sources`.
    resolved: HashMap<Remote, String>,
    remote_loader: Option<RemoteCharts>,
    /// Values files parsed, per path, with the blob they were parsed from.
    values: ParsedValues,
    /// Helm renders by the digest of their inputs, with the plan that last used them; those no
    /// plan used are dropped at the end of the next, so the cache holds what the fleet uses.
    helm_renders: HashMap<[u8; 32], (u64, Rendered)>,
    /// Kustomize renders placed in their app's namespace, by directory and placement, with the
    /// plan that last used them (dropped at the end of the next plan that does not).
    placed: HashMap<(BranchPath, Namespacing), PlacedRender>,
    /// What each cluster's agent said its API server offers (Helm's defaults until it has).
    capabilities: HashMap<String, Arc<Capabilities>>,
    /// The plan running now (or the last one).
    run: PlanRun,
}

/// A (cluster, app) pair: the unit the planner builds, caches and keeps last good.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PairKey {
    cluster: String,
    app: String,
}

impl PairKey {
    fn of(cluster: &Cluster, app: &str) -> PairKey {
        PairKey { cluster: cluster.name.clone(), app: app.to_string() }
    }
}

/// A pair by borrowed names, to look a [`PairKey`] up without building one. Hashes as a
/// `PairKey` of the same names does (field by field, `str` as `String`).
#[derive(Hash)]
struct PairRef<'a> {
    cluster: &'a str,
    app: &'a str,
}

impl<'a> PairRef<'a> {
    fn of(cluster: &'a Cluster, app: &'a str) -> Self {
        PairRef { cluster: &cluster.name, app }
    }
}

impl hashbrown::Equivalent<PairKey> for PairRef<'_> {
    fn equivalent(&self, key: &PairKey) -> bool {
        self.cluster == key.cluster && self.app == key.app
    }
}

/// Something per (cluster, app) pair.
type PairTable<V> = hashbrown::HashMap<PairKey, V>;

/// Sets `pair`'s value in `table`, building its key only when it is new.
fn set_pair<V>(table: &mut PairTable<V>, pair: PairRef, value: V) {
    match table.get_mut(&pair) {
        Some(slot) => *slot = value,
        None => {
            table.insert(PairKey { cluster: pair.cluster.to_string(), app: pair.app.to_string() }, value);
        }
    }
}

/// A render as placed in its app's namespace, and the render it was placed from.
struct PlacedRender {
    render: Objects,
    placed: Objects,
    used: u64,
}

/// A directory on a branch: what renders and repository charts are cached by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BranchPath {
    branch: String,
    path: String,
}

/// What lives for one plan only, started afresh by each.
#[derive(Default)]
struct PlanRun {
    /// Numbers each plan; Helm renders remember the last plan that used them.
    generation: u64,
    /// Renders and charts already checked against this plan's snapshots, so thousands of
    /// clusters sharing an overlay check its fingerprint once.
    renders_checked: HashSet<BranchPath>,
    charts_checked: HashSet<BranchPath>,
    /// Each pair's Helm render key as the pre-render pass computed it, so the per-cluster pass
    /// does not layer the values and digest them again.
    helm_keys: PairTable<[u8; 32]>,
    /// Trace context of the sync running this plan, given to every assignment it builds so
    /// the agents' applies join that trace.
    trace_context: HashMap<String, String>,
    /// Per app, its [`SharedRender`]s found so far.
    shared_renders: HashMap<String, Vec<SharedRender>>,
    stats: PlanStats,
}

/// An app's render in one environment for its clusters without a directory of their own under
/// `apps/<app>/clusters/`: found once per plan and shared by thousands of clusters (looking the
/// overlay and the render up for each took a quarter of a plan of 10,000 clusters).
struct SharedRender {
    environment: String,
    commit: ObjectId,
    /// The entries of `apps/<app>/clusters/`, sorted: those clusters look up their own.
    own: Vec<String>,
    rendered: Rendered,
}

impl PlanRun {
    /// Starts the next run: everything the last one kept is forgotten, but the tables keep their
    /// room, so a plan of 10,000 clusters does not grow them afresh and free the old ones.
    fn start_next(&mut self) {
        self.generation += 1;
        self.renders_checked.clear();
        self.charts_checked.clear();
        self.helm_keys.clear();
        self.shared_renders.clear();
        self.trace_context = convoy_shared::telemetry::inject(&tracing::Span::current());
        self.stats = PlanStats::default();
    }
}

impl Planner {
    /// Plans every cluster of `clusters` whose environment is in `envs`.
    pub fn plan(
        &mut self,
        clusters: &BTreeMap<String, Cluster>,
        envs: &HashMap<String, Arc<EnvironmentState>>,
    ) -> (Vec<ClusterPlan>, PlanStats) {
        self.run.start_next();
        self.prerender_helm(clusters, envs);
        self.prebuild_pairs(clusters, envs);
        let plans = clusters
            .values()
            .filter_map(|cluster| envs.get(&cluster.environment).map(|env| self.plan_cluster(cluster, env)))
            .collect();
        let generation = self.run.generation;
        self.helm_renders.retain(|_, (used, _)| *used == generation);
        self.placed.retain(|_, placed| placed.used == generation);
        (plans, self.run.stats)
    }

    /// Forgets what belongs to clusters no longer in `clusters`, to apps no environment of
    /// `envs` has, and to branches no environment tracks, so the caches are bounded by the
    /// fleet as it is now.
    pub fn forget_gone(&mut self, clusters: &BTreeMap<String, Cluster>, envs: &HashMap<String, Arc<EnvironmentState>>) {
        // Sets, for 100,000 pairs looked up in each.
        let cluster_names: HashSet<&str> = clusters.keys().map(String::as_str).collect();
        let app_names: HashSet<&str> = envs.values().flat_map(|env| env.apps.keys().map(String::as_str)).collect();
        let pair_exists =
            |key: &PairKey| cluster_names.contains(key.cluster.as_str()) && app_names.contains(key.app.as_str());
        let branches: BTreeSet<&str> = envs.values().map(|env| env.environment.branch.as_str()).collect();
        self.clusters.retain(|cluster, _| clusters.contains_key(cluster));
        self.pairs.retain(|key, _| pair_exists(key));
        self.last_good.retain(|key, _| pair_exists(key));
        self.renders.retain(|key, _| branches.contains(key.branch.as_str()));
    }

    /// How many entries each cache holds (`blobs` and `packs` are the Git mirror's, left 0 here).
    pub fn cache_sizes(&self) -> CacheSizes {
        CacheSizes {
            blobs: 0,
            packs: 0,
            renders: self.renders.len(),
            pairs: self.pairs.len(),
            last_good: self.last_good.len(),
            clusters: self.clusters.len(),
        }
    }

    /// A planner that fetches remote charts with `charts`, when there is a fetcher.
    pub fn fetching(charts: Option<&Arc<ChartFetcher>>) -> Self {
        match charts {
            Some(fetcher) => {
                let fetcher = fetcher.clone();
                Planner::default().with_remote_charts(Arc::new(move |remote| fetcher.chart(remote)))
            }
            None => Planner::default(),
        }
    }

    /// Charts that are not in the repository come from `loader`; without one, an app naming
    /// such a chart is a render error saying so.
    pub fn with_remote_charts(mut self, loader: RemoteCharts) -> Self {
        self.remote_loader = Some(loader);
        self
    }

    /// What each cluster's API server offers, for charts' `.Capabilities` (clusters not named
    /// get Helm's defaults). A changed cluster's charts render again at the next plan.
    pub fn set_capabilities(&mut self, capabilities: HashMap<String, Arc<Capabilities>>) {
        self.capabilities = capabilities;
    }

    /// Whether the last plan saw exactly `capabilities`.
    pub fn planned_with(&self, capabilities: &HashMap<String, Arc<Capabilities>>) -> bool {
        self.capabilities == *capabilities
    }

    /// Takes `assignment`'s apps as their cluster's last good renders, as if this planner had
    /// produced them: an app that fails to render next keeps them (a promotion diff sees what a
    /// real promotion would do).
    fn remember(&mut self, assignment: &Assignment) {
        for app in &assignment.apps {
            let key = PairKey { cluster: assignment.cluster.clone(), app: app.name.clone() };
            self.last_good.insert(key, digested((**app).clone()));
        }
    }

    /// What the clusters of environment `to` would get if `to`'s branch had `from`'s head:
    /// `from`'s files rendered with `to`'s environment name (so `envs/<to>` overlays apply),
    /// each cluster starting from its `current` assignment (an app that would fail to render
    /// keeps its current objects, as a real promotion would). Remote charts come from
    /// `charts`, as the sync loop's planner fetches them. A throwaway planner: nothing is
    /// cached or published.
    pub fn preview_promotion(
        fleet: &Fleet,
        from: &EnvironmentState,
        to: &Environment,
        charts: Option<&Arc<ChartFetcher>>,
        current: impl Fn(&str) -> Option<Arc<Assignment>>,
    ) -> Vec<(Option<Arc<Assignment>>, ClusterPlan)> {
        let promoted =
            EnvironmentState { environment: to.clone(), snapshot: from.snapshot.clone(), apps: from.apps.clone() };
        let mut planner = Planner::fetching(charts);
        fleet
            .clusters
            .values()
            .filter(|c| c.environment == to.name)
            .map(|cluster| {
                let current = current(&cluster.name);
                if let Some(current) = &current {
                    planner.remember(current);
                }
                (current, planner.plan_cluster(cluster, &promoted))
            })
            .collect()
    }

    /// Plans one cluster against `env` (its own, or another's for a promotion preview).
    fn plan_cluster(&mut self, cluster: &Cluster, env: &EnvironmentState) -> ClusterPlan {
        let mut apps: Vec<Arc<Digested>> = Vec::new();
        let mut errors = Vec::new();
        for (name, app) in &env.apps {
            let key = PairRef::of(cluster, name);
            let app = match app {
                Ok(app) => app,
                Err(e) => {
                    // We cannot tell whether it targets this cluster: keep what it had, if anything.
                    if let Some(good) = self.last_good.get(&key) {
                        errors.push(PlanError::App(e.clone()));
                        apps.push(digested(AppAssignment { render_error: Some(e.to_string()), ..(*good.1).clone() }));
                    }
                    continue;
                }
            };
            if !app.targets(cluster) {
                continue;
            }
            // Rules that do not compile are refused; the app syncs without them.
            errors.extend(app.health_errors.iter().cloned().map(PlanError::App));
            self.run.stats.pairs += 1;
            match self.pair(cluster, app, env) {
                Ok(assignment) => {
                    set_pair(&mut self.last_good, key, assignment.clone());
                    apps.push(assignment);
                }
                Err(error) => {
                    let message = error.to_string();
                    errors.push(error);
                    let kept =
                        self.last_good.get(&key).map(|good| (*good.1).clone()).unwrap_or_else(|| AppAssignment {
                            name: app.name.clone(),
                            policy: app.policy,
                            depends_on: app.depends_on.clone(),
                            objects: Objects::default(),
                            render_error: None,
                            ignore_differences: app.ignore_differences.clone(),
                            health_rules: app.health.clone(),
                        });
                    apps.push(digested(AppAssignment { render_error: Some(message), ..kept }));
                }
            }
        }
        let queries = gate_queries(&env.environment);
        if let Some(cached) = self.clusters.get(&cluster.name)
            && cached.environment == cluster.environment
            && cached.apps.len() == apps.len()
            && cached.apps.iter().zip(&apps).all(|(a, b)| Arc::ptr_eq(a, b))
            && cached.assignment.gate_queries == queries
        {
            return ClusterPlan { assignment: cached.assignment.clone(), errors };
        }
        let revision = env.snapshot.commit.to_string();
        let owned = apps.iter().map(|a| (a.0, Arc::clone(&a.1))).collect();
        let mut assignment = Assignment::from_digested(&cluster.name, &cluster.environment, &revision, owned, false)
            .with_gate_queries(queries);
        assignment.trace_context = self.run.trace_context.clone();
        assignment.chart_sources = env
            .apps
            .values()
            .filter_map(|app| app.as_ref().ok().filter(|app| app.targets(cluster)))
            .filter_map(|app| match &app.helm.as_ref()?.chart {
                ChartLocation::Remote(remote) => Some((app.name.clone(), self.resolved.get(remote)?.clone())),
                ChartLocation::Path(_) => None,
            })
            .collect();
        let assignment = Arc::new(assignment);
        let cached = CachedCluster { apps, environment: cluster.environment.clone(), assignment: assignment.clone() };
        self.clusters.insert(cluster.name.clone(), cached);
        ClusterPlan { assignment, errors }
    }

    fn pair(&mut self, cluster: &Cluster, app: &App, env: &EnvironmentState) -> Result<Arc<Digested>, PlanError> {
        let rendered = self.rendered(cluster, app, env)?;
        if let Some(cached) = self.cached_pair(cluster, app, &rendered) {
            return cached.result.clone();
        }
        self.run.stats.pairs_rebuilt += 1;
        let result = build_pair(&rendered, cluster, app);
        self.keep_pair(cluster, app, rendered, result.clone());
        result
    }

    /// The app's render for `cluster` (cached by the files it read, or by its Helm inputs).
    fn rendered(&mut self, cluster: &Cluster, app: &App, env: &EnvironmentState) -> Result<Objects, PlanError> {
        match &app.helm {
            None => self.shared_render(cluster, app, env).unwrap_or_else(|| {
                let dir = overlay_dir(env.snapshot.as_ref(), &app.name, &cluster.name, &env.environment.name);
                let rendered = self.render(&env.environment.branch, &env.snapshot, &dir);
                self.placed(&env.environment.branch, &dir, app, rendered)
            }),
            Some(helm) => self.render_helm(cluster, app, helm, env),
        }
        .map_err(|source| PlanError::Render { app: app.name.clone(), cluster: cluster.name.clone(), source })
    }

    /// `app`'s render in `env` when `cluster` has no directory of its own under
    /// `apps/<app>/clusters/`, found once per plan and environment.
    fn shared_render(&mut self, cluster: &Cluster, app: &App, env: &EnvironmentState) -> Option<Rendered> {
        let (name, commit) = (&env.environment.name, env.snapshot.commit);
        let found = |shared: &SharedRender| shared.environment == *name && shared.commit == commit;
        if !self.run.shared_renders.get(&app.name).is_some_and(|all| all.iter().any(found)) {
            let snapshot = env.snapshot.as_ref();
            let own = snapshot.list_dir(Path::new(&format!("apps/{}/clusters", app.name))).unwrap_or_default();
            let dir = app_render::environment_dir(snapshot, &app.name, name);
            let rendered = self.render(&env.environment.branch, &env.snapshot, &dir);
            let rendered = self.placed(&env.environment.branch, &dir, app, rendered);
            let shared = SharedRender { environment: name.clone(), commit, own, rendered };
            self.run.shared_renders.entry(app.name.clone()).or_default().push(shared);
        }
        let shared = self.run.shared_renders.get(&app.name)?.iter().find(|s| found(s))?;
        shared.own.binary_search(&cluster.name).is_err().then(|| shared.rendered.clone())
    }

    /// A kustomize render of `dir` placed in `app`'s namespace (the render itself when
    /// [`Namespacing::places_render`] says no), the same `Objects` for as long as the render is
    /// the same, so the pairs built on it stay cached and share it.
    fn placed(&mut self, branch: &str, dir: &str, app: &App, rendered: Rendered) -> Rendered {
        let rendered = rendered?;
        let Some(namespacing) = Namespacing::of(app) else { return Ok(rendered) };
        let key = (BranchPath { branch: branch.to_string(), path: dir.to_string() }, namespacing);
        let generation = self.run.generation;
        if let Some(placed) = self.placed.get_mut(&key).filter(|p| p.render.ptr_eq(&rendered)) {
            placed.used = generation;
            return Ok(placed.placed.clone());
        }
        let namespacing = &key.1;
        let placed = if namespacing.places_render(&rendered) {
            let mut objects = rendered.to_vec();
            namespacing.apply(&mut objects);
            sorted(objects)
        } else {
            rendered.clone()
        };
        self.placed.insert(key, PlacedRender { render: rendered, placed: placed.clone(), used: generation });
        Ok(placed)
    }

    /// The pair's output from an earlier plan, when it was built from this very render for the
    /// same cluster and app.
    fn cached_pair(&self, cluster: &Cluster, app: &App, rendered: &Objects) -> Option<&CachedPair> {
        let cached = self.pairs.get(&PairRef::of(cluster, &app.name))?;
        (cached.render.ptr_eq(rendered) && cached.cluster == *cluster && cached.app == *app).then_some(cached)
    }

    fn keep_pair(&mut self, cluster: &Cluster, app: &App, render: Objects, result: Result<Arc<Digested>, PlanError>) {
        let pair = CachedPair { render, cluster: cluster.clone(), app: app.clone(), result };
        set_pair(&mut self.pairs, PairRef::of(cluster, &app.name), Box::new(pair));
    }

    /// Builds, across the cores, every (cluster, app) output this plan needs that no earlier
    /// plan built (a change to an app every cluster runs rebuilds one per cluster: the variables,
    /// the namespace, the digest); the per-cluster pass then finds them cached.
    fn prebuild_pairs(&mut self, clusters: &BTreeMap<String, Cluster>, envs: &HashMap<String, Arc<EnvironmentState>>) {
        let mut jobs = Vec::new();
        for cluster in clusters.values() {
            let Some(env) = envs.get(&cluster.environment) else { continue };
            for app in env.apps.values().filter_map(|app| app.as_ref().ok()).filter(|app| app.targets(cluster)) {
                let Ok(rendered) = self.rendered(cluster, app, env) else { continue };
                if self.cached_pair(cluster, app, &rendered).is_none() {
                    jobs.push((cluster, app, rendered));
                }
            }
        }
        let built = build_pairs(&jobs);
        self.run.stats.pairs_rebuilt += built.len();
        for ((cluster, app, rendered), result) in jobs.into_iter().zip(built) {
            self.keep_pair(cluster, app, rendered, result);
        }
    }

    fn render(&mut self, branch: &str, snapshot: &Arc<Snapshot>, dir: &str) -> Rendered {
        let key = BranchPath { branch: branch.to_string(), path: dir.to_string() };
        if let Some(cached) = self.renders.get(&key)
            && still_read(&mut self.run.renders_checked, &key, &cached.fingerprint, snapshot)
        {
            return cached.output.clone();
        }
        self.run.stats.renders += 1;
        let (output, fingerprint) = recorded(snapshot, |source| {
            Renderer::with_source(source).render(Path::new(dir)).map(sorted).map_err(Arc::new)
        });
        self.run.renders_checked.insert(key.clone());
        self.renders.insert(key, CachedRender { fingerprint, output: output.clone() });
        output
    }

    /// A Helm app's objects for one cluster: its chart with the cluster's layered values.
    fn render_helm(&mut self, cluster: &Cluster, app: &App, helm: &HelmSource, env: &EnvironmentState) -> Rendered {
        let generation = self.run.generation;
        let prerendered = self.run.helm_keys.get(&PairRef::of(cluster, &app.name));
        if let Some((used, output)) = prerendered.and_then(|key| self.helm_renders.get_mut(key)) {
            *used = generation;
            return output.clone();
        }
        let job = self.helm_job(cluster, app, helm, env)?;
        if let Some((used, output)) = self.helm_renders.get_mut(&job.key) {
            *used = generation;
            return output.clone();
        }
        self.run.stats.renders += 1;
        let output = job.render();
        self.helm_renders.insert(job.key, (generation, output.clone()));
        output
    }

    /// What rendering a Helm app for one cluster takes: its chart, the cluster's values and
    /// capabilities, and the digest of all of it (the render cache's key).
    fn helm_job(
        &mut self,
        cluster: &Cluster,
        app: &App,
        helm: &HelmSource,
        env: &EnvironmentState,
    ) -> Result<HelmJob, Arc<RenderError>> {
        let inputs = self.helm_inputs(helm, env)?;
        self.parse_values(env, app, cluster)?;
        inputs.job(&PlannerInputs { parsed: &self.values, capabilities: &self.capabilities }, env, cluster, app)
    }

    /// What a Helm job reads from the repository, loaded or checked (the chart, every values
    /// file parsed); [`HelmInputs::job`] then layers and digests them without the planner.
    fn helm_inputs<'h>(
        &mut self,
        helm: &'h HelmSource,
        env: &EnvironmentState,
    ) -> Result<HelmInputs<'h>, Arc<RenderError>> {
        let (chart, identity) = match &helm.chart {
            ChartLocation::Path(path) => self.chart(&env.environment.branch, &env.snapshot, path)?,
            ChartLocation::Remote(remote) => self.remote_chart(remote)?,
        };
        Ok(HelmInputs { helm, chart, identity })
    }

    /// Parses (or finds parsed) every values file of `app` that `cluster` reads.
    fn parse_values(&mut self, env: &EnvironmentState, app: &App, cluster: &Cluster) -> Result<(), Arc<RenderError>> {
        let snapshot = env.snapshot.as_ref();
        for (file, id) in self.unparsed_values(env, app, cluster) {
            let parsed = app_render::parse_values(&file, snapshot.file(&file).unwrap_or_default()).map_err(Arc::new)?;
            self.values.insert(file, (id, parsed));
        }
        Ok(())
    }

    /// The values files of `app` that `cluster` reads and the cache does not hold as they are
    /// now, with their blobs.
    fn unparsed_values(&self, env: &EnvironmentState, app: &App, cluster: &Cluster) -> Vec<(String, Option<ObjectId>)> {
        let snapshot = env.snapshot.as_ref();
        app_render::values_files(snapshot, &app.name, cluster)
            .into_iter()
            .map(|file| {
                let id = snapshot.id_of(Path::new(&file));
                (file, id)
            })
            .filter(|(file, id)| self.values.get(file).is_none_or(|(cached_id, _)| cached_id != id))
            .collect()
    }

    /// Renders, across the machine's cores, every Helm render this plan needs that is not
    /// cached; the per-cluster pass then finds them. The values are layered and digested across
    /// the cores too, after the files they read were parsed. A job that cannot even be set up
    /// (a chart that does not load, bad values) is left to that pass, which records the error.
    fn prerender_helm(&mut self, clusters: &BTreeMap<String, Cluster>, envs: &HashMap<String, Arc<EnvironmentState>>) {
        let mut inputs = Vec::new();
        let mut unparsed = BTreeMap::new();
        for cluster in clusters.values() {
            let Some(env) = envs.get(&cluster.environment) else { continue };
            for app in env.apps.values().filter_map(|app| app.as_ref().ok()) {
                let Some(helm) = app.helm.as_ref().filter(|_| app.targets(cluster)) else { continue };
                let Ok(input) = self.helm_inputs(helm, env) else { continue };
                for (file, id) in self.unparsed_values(env, app, cluster) {
                    unparsed.insert(file, (id, env));
                }
                inputs.push((cluster, app, env, input));
            }
        }
        // Values files are parsed across the cores too (each once); one that does not parse
        // leaves its jobs to the per-cluster pass, which records the error.
        let unparsed: Vec<_> = unparsed.into_iter().collect();
        let parsed = across_cores(unparsed.iter().collect(), |(file, (_, env))| {
            app_render::parse_values(file, env.snapshot.file(file).unwrap_or_default()).ok()
        });
        for ((file, (id, _)), parsed) in unparsed.into_iter().zip(parsed) {
            if let Some(parsed) = parsed {
                self.values.insert(file, (id, parsed));
            }
        }
        let planner = PlannerInputs { parsed: &self.values, capabilities: &self.capabilities };
        let jobs = across_cores(inputs.iter().collect(), |(cluster, app, env, input)| {
            input.job(&planner, env, cluster, app).ok()
        });
        let mut queued = HashSet::new();
        let mut missing = Vec::new();
        for ((cluster, app, _, _), job) in inputs.iter().zip(jobs) {
            let Some(job) = job else { continue };
            self.run.helm_keys.insert(PairKey::of(cluster, &app.name), job.key);
            if !self.helm_renders.contains_key(&job.key) && queued.insert(job.key) {
                missing.push(job);
            }
        }
        let rendered = across_cores(missing, |job| (job.key, job.render()));
        self.run.stats.renders += rendered.len();
        for (key, output) in rendered {
            self.helm_renders.insert(key, (self.run.generation, output));
        }
    }

    /// A repository chart, loaded again only when a file it read changed.
    fn chart(&mut self, branch: &str, snapshot: &Arc<Snapshot>, path: &str) -> LoadedChart {
        let key = BranchPath { branch: branch.to_string(), path: path.to_string() };
        if let Some(cached) = self.charts.get(&key)
            && still_read(&mut self.run.charts_checked, &key, &cached.fingerprint, snapshot)
        {
            return cached.output.clone();
        }
        let (loaded, fingerprint) = recorded(snapshot, |source| app_render::load_chart(source.as_ref(), path));
        let mut hasher = Sha256::new();
        for (path, id) in &fingerprint {
            hasher.update(path.as_bytes());
            hasher.update(id.map(|id| id.to_string()).unwrap_or_default().as_bytes());
        }
        let output = loaded.map(|chart| (Arc::new(chart), hasher.finalize().into())).map_err(Arc::new);
        self.run.charts_checked.insert(key.clone());
        self.charts.insert(key, CachedChart { fingerprint, output: output.clone() });
        output
    }

    /// A chart from a chart repository or registry, fetched once.
    fn remote_chart(&mut self, location: &Remote) -> LoadedChart {
        if let Some(known) = self.remote.get(location) {
            return known.clone();
        }
        let output = match &self.remote_loader {
            None => Err(Arc::new(RenderError::Invalid {
                path: location.to_string().into(),
                message: "this hub fetches no charts from chart repositories or registries; vendor the chart into the repository and name it with spec.helm.chart".into(),
            })),
            Some(load) => load(location).map_err(Arc::new),
        };
        // A failed fetch is tried again at the next plan; a fetched chart is kept.
        let (chart, digest) = output?;
        self.resolved.insert(location.clone(), location.resolved(chart.version(), &digest));
        let loaded: LoadedChart = Ok((Arc::new(chart), Sha256::digest(digest.as_bytes()).into()));
        self.remote.insert(location.clone(), loaded.clone());
        loaded
    }
}

/// Whether what was read from `fingerprint` is still what `snapshot` holds, checked once per
/// plan: `checked` holds the keys already found so in this plan.
fn still_read(
    checked: &mut HashSet<BranchPath>,
    key: &BranchPath,
    fingerprint: &Fingerprint,
    snapshot: &Snapshot,
) -> bool {
    let fresh = checked.contains(key) || fingerprint.iter().all(|(path, id)| snapshot.id_of(Path::new(path)) == *id);
    if fresh {
        checked.insert(key.clone());
    }
    fresh
}

/// Runs `read` over `snapshot` and returns its result with the ids of every path it looked at.
fn recorded<T>(snapshot: &Arc<Snapshot>, read: impl FnOnce(Arc<dyn Source>) -> T) -> (T, Fingerprint) {
    let recording = Arc::new(Recording { snapshot: snapshot.clone(), reads: Mutex::new(BTreeSet::new()) });
    let output = read(recording.clone());
    let reads = std::mem::take(&mut *recording.reads.lock().expect("reads lock"));
    let fingerprint = reads
        .into_iter()
        .map(|path| {
            let id = snapshot.id_of(Path::new(&path));
            (path, id)
        })
        .collect();
    (output, fingerprint)
}

/// One app's output for one cluster: its render with the cluster's variables and the app's
/// namespace, digested.
fn build_pair(rendered: &Objects, cluster: &Cluster, app: &App) -> Result<Arc<Digested>, PlanError> {
    assemble(rendered, cluster, app).map(digested).map_err(|source| PlanError::Object {
        app: app.name.clone(),
        cluster: cluster.name.clone(),
        source: Box::new(source),
    })
}

/// Every job's pair output, in order, built across the cores. An output that shares its
/// render's objects ([`assemble`] changed nothing: no `${cluster.…}` variable, the namespace
/// already placed) holds nothing of its cluster, so it is built once per render and app and every
/// cluster on them takes that very output: one digest, not one per cluster.
fn build_pairs(jobs: &[(&Cluster, &App, Objects)]) -> Vec<Result<Arc<Digested>, PlanError>> {
    // Jobs by render and app (their addresses: the same app of one environment, the same render).
    let group = |(_, app, rendered): &(&Cluster, &App, Objects)| (rendered.as_ptr(), std::ptr::from_ref::<App>(app));
    let mut first_of = HashMap::new();
    let firsts: Vec<usize> = (0..jobs.len()).filter(|&i| *first_of.entry(group(&jobs[i])).or_insert(i) == i).collect();
    let mut results: Vec<Option<Result<Arc<Digested>, PlanError>>> = vec![None; jobs.len()];
    let build = |i: &usize| {
        let (cluster, app, rendered) = &jobs[*i];
        build_pair(rendered, cluster, app)
    };
    for (i, result) in firsts.iter().zip(across_cores(firsts.iter().collect(), build)) {
        results[*i] = Some(result);
    }
    let mut rest = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let first = first_of[&group(job)];
        if first == i {
            continue;
        }
        match &results[first] {
            Some(Ok(shared)) if shared.1.objects.ptr_eq(&job.2) => results[i] = Some(Ok(shared.clone())),
            _ => rest.push(i),
        }
    }
    for (i, result) in rest.iter().zip(across_cores(rest.iter().collect(), build)) {
        results[*i] = Some(result);
    }
    results.into_iter().map(|result| result.expect("every job built")).collect()
}

/// `f` of every job, in order, computed on every core (rayon's pool: threads that stay, so a
/// plan does not start threads, and their allocator heaps, four times over). The jobs move to
/// the cores and are dropped there (freeing a thousand renders' inputs is work too); pass
/// references to keep them.
fn across_cores<T: Send, R: Send>(jobs: Vec<T>, f: impl Fn(T) -> R + Sync + Send) -> Vec<R> {
    jobs.into_par_iter().map(f).collect()
}

/// A render's objects in the order assignments carry them.
fn sorted(objects: Vec<Value>) -> Objects {
    let mut objects = Objects::from(objects);
    objects.sort();
    objects
}

fn digested(mut app: AppAssignment) -> Arc<Digested> {
    app.sort_objects();
    Arc::new((app.digest(), Arc::new(app)))
}

/// A [`Source`] over a snapshot that remembers every path the renderer looked at.
struct Recording {
    snapshot: Arc<Snapshot>,
    reads: Mutex<BTreeSet<String>>,
}

impl Recording {
    fn note(&self, path: &Path) {
        self.reads.lock().expect("reads lock").insert(path.to_string_lossy().into_owned());
    }
}

impl Source for Recording {
    fn kind(&self, path: &Path) -> render::Result<Option<EntryKind>> {
        self.note(path);
        self.snapshot.kind(path)
    }
    fn read(&self, path: &Path) -> render::Result<Vec<u8>> {
        self.note(path);
        self.snapshot.read(path)
    }
    fn list_dir(&self, path: &Path) -> render::Result<Vec<String>> {
        self.note(path);
        self.snapshot.list_dir(path)
    }
}

/// The metric-gate queries `environment`'s agents run: its rollout's analysis, when the agents
/// query (`from: agent`).
fn gate_queries(environment: &Environment) -> Option<GateQueries> {
    let rollout = environment.rollout.as_ref()?;
    let analysis = rollout.analysis.as_ref().filter(|a| a.from == QueryFrom::Agent)?;
    Some(GateQueries {
        address: analysis.prometheus.address.clone(),
        interval_ms: rollout.analysis_interval().as_millis() as u64,
        checks: analysis.checks.iter().map(|c| (c.name.clone(), c.query.clone())).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::git::Snapshot;

    const FLEET: &str = "apiVersion: convoy.dev/v1\nkind: Fleet\nspec:\n  fleetBranch: main\n  environments:\n  - {name: prod, branch: main}\n";

    fn cluster(name: &str, region: &str) -> String {
        format!(
            "apiVersion: convoy.dev/v1\nkind: Cluster\nmetadata:\n  name: {name}\n  labels: {{region: {region}}}\nspec:\n  environment: prod\n"
        )
    }

    fn app(name: &str, selector: &str) -> String {
        let targets = if selector.is_empty() {
            String::new()
        } else {
            format!("  targets:\n    clusterSelector:\n      matchLabels: {{{selector}}}\n")
        };
        format!(
            "apiVersion: convoy.dev/v1\nkind: App\nmetadata:\n  name: {name}\nspec:\n  namespace: {name}\n{targets}"
        )
    }

    fn config_map(name: &str, value: &str) -> String {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n")
    }

    const KUSTOMIZATION: &str = "resources:\n- config.yaml\n";

    /// Clusters eu-1 and us-1; app web on both (its value names the cluster), app api on eu only.
    fn files(web: &str, api_kustomization: &str) -> Vec<(String, String)> {
        [
            ("convoy.yaml", FLEET.to_string()),
            ("clusters/eu-1.yaml", cluster("eu-1", "eu")),
            ("clusters/us-1.yaml", cluster("us-1", "us")),
            ("apps/web/app.yaml", app("web", "")),
            ("apps/web/base/kustomization.yaml", KUSTOMIZATION.into()),
            ("apps/web/base/config.yaml", config_map("web", &format!("{web} ${{cluster.name}}"))),
            ("apps/api/app.yaml", app("api", "region: eu")),
            ("apps/api/base/kustomization.yaml", api_kustomization.into()),
            ("apps/api/base/config.yaml", config_map("api", "v1")),
        ]
        .into_iter()
        .map(|(p, c)| (p.to_string(), c))
        .collect()
    }

    fn commit(files: &[(String, String)]) -> (BTreeMap<String, Cluster>, HashMap<String, Arc<EnvironmentState>>) {
        let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
        let snapshot = Snapshot::of_files(&files, &[]);
        let fleet = Fleet::load(snapshot.as_ref()).expect("fleet loads");
        let prod = fleet.environments.iter().find(|e| e.name == "prod").expect("prod").clone();
        let apps = convoy_render::fleet::load_apps(snapshot.as_ref(), &prod);
        let env = Arc::new(EnvironmentState { environment: prod, snapshot, apps });
        (fleet.clusters, HashMap::from([("prod".to_string(), env)]))
    }

    fn plan_of<'p>(plans: &'p [ClusterPlan], cluster: &str) -> &'p ClusterPlan {
        plans.iter().find(|p| p.assignment.cluster == cluster).expect("planned")
    }

    fn value(plan: &ClusterPlan, app: &str) -> Option<String> {
        let app = plan.assignment.apps.iter().find(|a| a.name == app)?;
        app.objects.iter().find_map(|o| o.pointer("/data/value")?.as_str().map(String::from))
    }

    #[test]
    fn each_cluster_gets_its_apps_with_its_variables() {
        let (clusters, envs) = commit(&files("hello", KUSTOMIZATION));
        let (plans, stats) = Planner::default().plan(&clusters, &envs);
        assert_eq!(value(plan_of(&plans, "eu-1"), "web").as_deref(), Some("hello eu-1"));
        assert_eq!(value(plan_of(&plans, "us-1"), "web").as_deref(), Some("hello us-1"));
        assert_eq!(value(plan_of(&plans, "eu-1"), "api").as_deref(), Some("v1"));
        assert_eq!(value(plan_of(&plans, "us-1"), "api"), None, "api targets region eu only");
        // One render per overlay, shared by the clusters; one output per (cluster, app).
        assert_eq!(stats, PlanStats { renders: 2, pairs: 3, pairs_rebuilt: 3 });
    }

    #[test]
    fn clusters_on_one_helm_render_share_its_objects_placed_in_the_apps_namespace() {
        let mut files: Vec<(String, String)> = [
            ("convoy.yaml", FLEET.to_string()),
            ("clusters/eu-1.yaml", cluster("eu-1", "eu")),
            ("clusters/us-1.yaml", cluster("us-1", "us")),
            (
                "apps/web/app.yaml",
                "apiVersion: convoy.dev/v1\nkind: App\nmetadata:\n  name: web\nspec:\n  namespace: web\n  helm: {chart: charts/web, releaseName: web}\n".into(),
            ),
            ("charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n".into()),
            ("charts/web/values.yaml", "greeting: hello\n".into()),
            ("charts/web/templates/config.yaml", config_map("web", "{{ .Values.greeting }}")),
        ]
        .into_iter()
        .map(|(p, c)| (p.to_string(), c))
        .collect();
        let (clusters, envs) = commit(&files);
        let (plans, stats) = Planner::default().plan(&clusters, &envs);
        assert_eq!(stats.renders, 1, "one render for both clusters");
        let web = |cluster: &str| plan_of(&plans, cluster).assignment.apps.iter().find(|a| a.name == "web").cloned();
        let (eu, us) = (web("eu-1").expect("eu-1 runs web"), web("us-1").expect("us-1 runs web"));
        assert!(eu.objects.ptr_eq(&us.objects), "one copy of the objects for both clusters");
        let config = eu.objects.iter().find(|o| o["kind"] == "ConfigMap").expect("the chart's ConfigMap");
        assert_eq!(config["metadata"]["namespace"], "web");
        assert_eq!(config["data"]["value"], "hello");
        assert!(eu.objects.iter().any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == "web"));

        // A value with a cluster variable gives each cluster its own objects.
        files.retain(|(path, _)| path != "charts/web/values.yaml");
        files.push(("charts/web/values.yaml".into(), "greeting: hello ${cluster.name}\n".into()));
        let (clusters, envs) = commit(&files);
        let (plans, _) = Planner::default().plan(&clusters, &envs);
        let value = |cluster: &str| value(plan_of(&plans, cluster), "web");
        assert_eq!((value("eu-1").as_deref(), value("us-1").as_deref()), (Some("hello eu-1"), Some("hello us-1")));
    }

    #[test]
    fn clusters_on_one_kustomize_render_without_variables_share_it_placed_in_the_namespace() {
        let mut files = files("hello", KUSTOMIZATION);
        files.retain(|(path, _)| path != "apps/api/app.yaml");
        files.push(("apps/api/app.yaml".into(), app("api", "")));
        let (clusters, envs) = commit(&files);
        let mut planner = Planner::default();
        let (plans, _) = planner.plan(&clusters, &envs);
        let api = |plans: &[ClusterPlan], cluster: &str| {
            plan_of(plans, cluster).assignment.apps.iter().find(|a| a.name == "api").cloned().expect("api")
        };
        let (eu, us) = (api(&plans, "eu-1"), api(&plans, "us-1"));
        assert!(eu.objects.ptr_eq(&us.objects), "one copy of the objects for both clusters");
        let config = eu.objects.iter().find(|o| o["kind"] == "ConfigMap").expect("the ConfigMap");
        assert_eq!(config["metadata"]["namespace"], "api");
        assert!(eu.objects.iter().any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == "api"));
        // web holds `${cluster.name}`: each cluster has its own.
        assert_eq!(value(plan_of(&plans, "us-1"), "web").as_deref(), Some("hello us-1"));

        // Nothing of the cluster is in it: both clusters hold the very same output.
        assert!(Arc::ptr_eq(&eu, &us), "one output, one digest");
        let web = |cluster: &str| plan_of(&plans, cluster).assignment.apps.iter().find(|a| a.name == "web").cloned();
        assert!(!Arc::ptr_eq(&web("eu-1").expect("web"), &web("us-1").expect("web")));

        // The next plan of the same commit finds the same placed render: nothing is rebuilt.
        let (again, stats) = planner.plan(&clusters, &envs);
        assert_eq!(stats.pairs_rebuilt, 0);
        assert!(api(&again, "eu-1").objects.ptr_eq(&eu.objects));
    }

    #[test]
    fn an_object_too_large_in_a_shared_render_is_an_error_that_names_each_cluster() {
        let mut files = files("hello", KUSTOMIZATION);
        files.retain(|(path, _)| path != "apps/api/app.yaml" && path != "apps/api/base/config.yaml");
        files.push(("apps/api/app.yaml".into(), app("api", "")));
        let too_much = "x".repeat(convoy_render::app::MAX_DATA_BYTES + 1);
        files.push(("apps/api/base/config.yaml".into(), config_map("api", &too_much)));
        let (clusters, envs) = commit(&files);
        let (plans, _) = Planner::default().plan(&clusters, &envs);
        for cluster in ["eu-1", "us-1"] {
            let errors: Vec<String> = plan_of(&plans, cluster).errors.iter().map(ToString::to_string).collect();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(errors[0].starts_with(&format!("app 'api' on cluster '{cluster}': ")), "{errors:?}");
        }
    }

    #[test]
    fn an_unchanged_commit_renders_nothing_and_keeps_the_very_assignments() {
        let mut planner = Planner::default();
        let (clusters, envs) = commit(&files("hello", KUSTOMIZATION));
        let (first, _) = planner.plan(&clusters, &envs);
        let (again, stats) = planner.plan(&clusters, &envs);
        assert_eq!(stats, PlanStats { renders: 0, pairs: 3, pairs_rebuilt: 0 });
        for cluster in ["eu-1", "us-1"] {
            assert!(Arc::ptr_eq(&plan_of(&first, cluster).assignment, &plan_of(&again, cluster).assignment));
        }
    }

    #[test]
    fn a_change_to_one_app_renders_that_app_alone() {
        let mut planner = Planner::default();
        let (clusters, envs) = commit(&files("hello", KUSTOMIZATION));
        let (first, _) = planner.plan(&clusters, &envs);
        let (clusters, envs) = commit(&files("hi", KUSTOMIZATION));
        let (next, stats) = planner.plan(&clusters, &envs);
        assert_eq!(stats, PlanStats { renders: 1, pairs: 3, pairs_rebuilt: 2 });
        assert_eq!(value(plan_of(&next, "us-1"), "web").as_deref(), Some("hi us-1"));
        let api =
            |plans: &[ClusterPlan]| plan_of(plans, "eu-1").assignment.apps.iter().find(|a| a.name == "api").cloned();
        assert!(Arc::ptr_eq(&api(&first).expect("api"), &api(&next).expect("api")), "api's output is reused");
    }

    #[test]
    fn a_broken_app_keeps_its_last_good_objects_and_names_app_and_cluster() {
        let mut planner = Planner::default();
        let (clusters, envs) = commit(&files("hello", KUSTOMIZATION));
        planner.plan(&clusters, &envs);
        let (clusters, envs) = commit(&files("hi", "resources:\n- missing.yaml\n"));
        let (plans, _) = planner.plan(&clusters, &envs);
        let eu = plan_of(&plans, "eu-1");
        assert_eq!(eu.errors.len(), 1, "{:?}", eu.errors);
        let message = eu.errors[0].to_string();
        assert!(message.starts_with("app 'api' on cluster 'eu-1': "), "{message}");
        assert!(message.contains("missing.yaml"), "{message}");
        let api = eu.assignment.apps.iter().find(|a| a.name == "api").expect("api kept");
        assert_eq!(value(eu, "api").as_deref(), Some("v1"), "the last good objects stay");
        assert!(api.render_error.is_some());
        // The other app moved on; the other cluster has no error.
        assert_eq!(value(eu, "web").as_deref(), Some("hi eu-1"));
        assert!(plan_of(&plans, "us-1").errors.is_empty());
    }

    #[test]
    fn a_cluster_with_its_own_directory_renders_it_and_the_others_share_their_environments() {
        let mut with_overlays = files("hello", KUSTOMIZATION);
        with_overlays.extend(
            [
                ("apps/web/envs/prod/kustomization.yaml", "resources:\n- ../../base\nnamePrefix: prod-\n"),
                ("apps/web/clusters/eu-1/kustomization.yaml", "resources:\n- ../../base\nnamePrefix: eu-\n"),
                ("apps/web/clusters/notes.txt", "not a cluster"),
            ]
            .map(|(p, c)| (p.to_string(), c.to_string())),
        );
        let (clusters, envs) = commit(&with_overlays);
        let (plans, stats) = Planner::default().plan(&clusters, &envs);
        let web_name = |cluster: &str| {
            let assignment = &plan_of(&plans, cluster).assignment;
            let web = assignment.apps.iter().find(|a| a.name == "web").expect("web");
            web.objects[0]["metadata"]["name"].as_str().unwrap().to_string()
        };
        assert_eq!((web_name("eu-1").as_str(), web_name("us-1").as_str()), ("eu-web", "prod-web"));
        assert_eq!(stats.renders, 3, "web for eu-1, web for the environment, api");
    }

    #[test]
    fn caches_forget_clusters_and_apps_that_left() {
        let mut planner = Planner::default();
        let (clusters, envs) = commit(&files("hello", KUSTOMIZATION));
        planner.plan(&clusters, &envs);
        assert_eq!((planner.cache_sizes().pairs, planner.cache_sizes().clusters), (3, 2));
        let mut fewer = files("hello", KUSTOMIZATION);
        fewer.retain(|(path, _)| path != "clusters/us-1.yaml" && !path.starts_with("apps/api/"));
        let (clusters, envs) = commit(&fewer);
        planner.forget_gone(&clusters, &envs);
        let sizes = planner.cache_sizes();
        assert_eq!((sizes.pairs, sizes.last_good, sizes.clusters), (1, 1, 1));
    }
}
