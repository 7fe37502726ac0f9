//! The planner: from the fleet model and each environment's snapshot to one [`Assignment`] per
//! cluster. Renders are cached per (branch, overlay directory) and checked against the ids of
//! exactly the files and directories the render read, so a commit re-renders only what it
//! touched; per-(app, cluster) results are reused when their render, cluster and app spec are
//! unchanged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use convoy_shared::model::{AppAssignment, Assignment};
use gix::ObjectId;
use serde_json::Value;

use convoy_render::{self as render, EntryKind, RenderError, Renderer, Source};

use crate::fleet::{App, Cluster, Environment, Fleet, FleetError};
use crate::git::Snapshot;

/// Kinds that live outside namespaces; everything else gets the app's namespace when it names
/// none (custom resources follow their CRD's scope when the CRD ships alongside).
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "CSIDriver",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "Node",
];

/// The largest object (as JSON) an app may carry: etcd's default request limit (1.5 MiB), below
/// the API server's 3 MiB request body limit. A larger object could never be applied; it is a
/// render error of its app, which keeps its last good objects.
pub const MAX_OBJECT_BYTES: usize = 3 << 19;

/// One environment as the planner sees it: its branch snapshot and the apps on it.
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

/// Why a rendered object cannot go to a cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("unterminated variable in '{text}'")]
    Unterminated { text: String },
    #[error("${{{var}}} is not defined for cluster '{cluster}' (it has name, environment and labels: {labels})")]
    Undefined { var: String, cluster: String, labels: String },
    #[error(
        "{object} is {size}, larger than the {limit} a Kubernetes API server stores per object (etcd's default limit); split it or move the data out of Git"
    )]
    TooLarge { object: String, size: String, limit: String },
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

#[derive(Clone)]
struct CachedRender {
    fingerprint: Vec<(String, Option<ObjectId>)>,
    output: Result<Arc<Vec<Value>>, Arc<RenderError>>,
}

#[derive(Clone)]
struct CachedPair {
    render: Arc<Vec<Value>>,
    cluster: Cluster,
    app: App,
    result: Result<Arc<Digested>, PlanError>,
}

/// An app's output for one cluster with its content digest, computed once.
pub type Digested = ([u8; 32], AppAssignment);

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
    renders: HashMap<(String, String), CachedRender>,
    pairs: HashMap<(String, String), CachedPair>,
    last_good: HashMap<(String, String), Arc<Digested>>,
    clusters: HashMap<String, CachedCluster>,
    /// Render cache entries already checked against this plan's snapshots (reset per plan), so
    /// thousands of clusters sharing an overlay check its fingerprint once.
    checked: std::collections::HashSet<(String, String)>,
    /// Trace context of the sync running this plan (set per plan), given to every assignment it
    /// builds so the agents' applies join that trace.
    trace_context: HashMap<String, String>,
}

impl Planner {
    /// Plans every cluster of `clusters` whose environment is in `envs`.
    pub fn plan(
        &mut self,
        clusters: &BTreeMap<String, Cluster>,
        envs: &HashMap<String, Arc<EnvironmentState>>,
    ) -> (Vec<ClusterPlan>, PlanStats) {
        let mut stats = PlanStats::default();
        self.checked.clear();
        self.trace_context = convoy_shared::telemetry::inject(&tracing::Span::current());
        let plans = clusters
            .values()
            .filter_map(|cluster| envs.get(&cluster.environment).map(|env| self.plan_cluster(cluster, env, &mut stats)))
            .collect();
        (plans, stats)
    }

    /// Forgets what belongs to clusters no longer in `clusters`, to apps no environment of
    /// `envs` has, and to branches no environment tracks, so the caches are bounded by the
    /// fleet as it is now.
    pub fn forget_gone(&mut self, clusters: &BTreeMap<String, Cluster>, envs: &HashMap<String, Arc<EnvironmentState>>) {
        let app_exists = |app: &String| envs.values().any(|env| env.apps.contains_key(app));
        let branches: BTreeSet<&str> = envs.values().map(|env| env.environment.branch.as_str()).collect();
        self.clusters.retain(|cluster, _| clusters.contains_key(cluster));
        self.pairs.retain(|(cluster, app), _| clusters.contains_key(cluster) && app_exists(app));
        self.last_good.retain(|(cluster, app), _| clusters.contains_key(cluster) && app_exists(app));
        self.renders.retain(|(branch, _), _| branches.contains(branch.as_str()));
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

    /// Takes `assignment`'s apps as their cluster's last good renders, as if this planner had
    /// produced them: an app that fails to render next keeps them (a promotion diff sees what a
    /// real promotion would do).
    fn remember(&mut self, assignment: &Assignment) {
        for app in &assignment.apps {
            self.last_good.insert((assignment.cluster.clone(), app.name.clone()), digested(app.clone()));
        }
    }

    /// What the clusters of environment `to` would get if `to`'s branch had `from`'s head:
    /// `from`'s files rendered with `to`'s environment name (so `envs/<to>` overlays apply),
    /// each cluster starting from its `current` assignment (an app that would fail to render
    /// keeps its current objects, as a real promotion would). A throwaway planner: nothing is
    /// cached or published.
    pub fn preview_promotion(
        fleet: &Fleet,
        from: &EnvironmentState,
        to: &Environment,
        current: impl Fn(&str) -> Option<Arc<Assignment>>,
    ) -> Vec<(Option<Arc<Assignment>>, ClusterPlan)> {
        let promoted =
            EnvironmentState { environment: to.clone(), snapshot: from.snapshot.clone(), apps: from.apps.clone() };
        let mut planner = Planner::default();
        let mut stats = PlanStats::default();
        fleet
            .clusters
            .values()
            .filter(|c| c.environment == to.name)
            .map(|cluster| {
                let current = current(&cluster.name);
                if let Some(current) = &current {
                    planner.remember(current);
                }
                (current, planner.plan_cluster(cluster, &promoted, &mut stats))
            })
            .collect()
    }

    /// Plans one cluster against `env` (its own, or another's for a promotion preview).
    fn plan_cluster(&mut self, cluster: &Cluster, env: &EnvironmentState, stats: &mut PlanStats) -> ClusterPlan {
        let mut apps: Vec<Arc<Digested>> = Vec::new();
        let mut errors = Vec::new();
        for (name, app) in &env.apps {
            let key = (cluster.name.clone(), name.clone());
            let app = match app {
                Ok(app) => app,
                Err(e) => {
                    // We cannot tell whether it targets this cluster: keep what it had, if anything.
                    if let Some(good) = self.last_good.get(&key) {
                        errors.push(PlanError::App(e.clone()));
                        apps.push(digested(AppAssignment { render_error: Some(e.to_string()), ..good.1.clone() }));
                    }
                    continue;
                }
            };
            if !app.targets(cluster) {
                continue;
            }
            stats.pairs += 1;
            match self.pair(cluster, app, env, stats) {
                Ok(assignment) => {
                    self.last_good.insert(key, assignment.clone());
                    apps.push(assignment);
                }
                Err(error) => {
                    let message = error.to_string();
                    errors.push(error);
                    let kept = self.last_good.get(&key).map(|good| good.1.clone()).unwrap_or_else(|| AppAssignment {
                        name: app.name.clone(),
                        policy: app.policy,
                        depends_on: app.depends_on.clone(),
                        objects: Vec::new(),
                        render_error: None,
                    });
                    apps.push(digested(AppAssignment { render_error: Some(message), ..kept }));
                }
            }
        }
        if let Some(cached) = self.clusters.get(&cluster.name)
            && cached.environment == cluster.environment
            && cached.apps.len() == apps.len()
            && cached.apps.iter().zip(&apps).all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return ClusterPlan { assignment: cached.assignment.clone(), errors };
        }
        let revision = env.snapshot.commit.to_string();
        let owned = apps.iter().map(|a| (**a).clone()).collect();
        let mut assignment = Assignment::from_digested(&cluster.name, &cluster.environment, &revision, owned, false);
        assignment.trace_context = self.trace_context.clone();
        let assignment = Arc::new(assignment);
        let cached = CachedCluster { apps, environment: cluster.environment.clone(), assignment: assignment.clone() };
        self.clusters.insert(cluster.name.clone(), cached);
        ClusterPlan { assignment, errors }
    }

    fn pair(
        &mut self,
        cluster: &Cluster,
        app: &App,
        env: &EnvironmentState,
        stats: &mut PlanStats,
    ) -> Result<Arc<Digested>, PlanError> {
        let dir = overlay_dir(&env.snapshot, &app.name, &cluster.name, &env.environment.name);
        let rendered = self
            .render(&env.environment.branch, &env.snapshot, &dir, stats)
            .map_err(|source| PlanError::Render { app: app.name.clone(), cluster: cluster.name.clone(), source })?;
        let key = (cluster.name.clone(), app.name.clone());
        if let Some(cached) = self.pairs.get(&key)
            && Arc::ptr_eq(&cached.render, &rendered)
            && cached.cluster == *cluster
            && cached.app == *app
        {
            return cached.result.clone();
        }
        stats.pairs_rebuilt += 1;
        let result = assemble(&rendered, cluster, app).map(digested).map_err(|source| PlanError::Object {
            app: app.name.clone(),
            cluster: cluster.name.clone(),
            source: Box::new(source),
        });
        self.pairs.insert(
            key,
            CachedPair { render: rendered, cluster: cluster.clone(), app: app.clone(), result: result.clone() },
        );
        result
    }

    fn render(
        &mut self,
        branch: &str,
        snapshot: &Arc<Snapshot>,
        dir: &str,
        stats: &mut PlanStats,
    ) -> Result<Arc<Vec<Value>>, Arc<RenderError>> {
        let key = (branch.to_string(), dir.to_string());
        if let Some(cached) = self.renders.get(&key)
            && (self.checked.contains(&key)
                || cached.fingerprint.iter().all(|(path, id)| snapshot.id_of(Path::new(path)) == *id))
        {
            self.checked.insert(key);
            return cached.output.clone();
        }
        stats.renders += 1;
        let recording = Arc::new(Recording { snapshot: snapshot.clone(), reads: Mutex::new(BTreeSet::new()) });
        let output = Renderer::with_source(recording.clone()).render(Path::new(dir)).map(Arc::new).map_err(Arc::new);
        let reads = std::mem::take(&mut *recording.reads.lock().expect("reads lock"));
        let fingerprint = reads.into_iter().map(|path| {
            let id = snapshot.id_of(Path::new(&path));
            (path, id)
        });
        self.checked.insert(key.clone());
        self.renders.insert(key, CachedRender { fingerprint: fingerprint.collect(), output: output.clone() });
        output
    }
}

/// Sorts an app's objects and computes its digest.
fn digested(mut app: AppAssignment) -> Arc<Digested> {
    app.sort_objects();
    Arc::new((app.digest(), app))
}

/// `apps/<app>/clusters/<cluster>` if present, else `apps/<app>/envs/<env>`, else `apps/<app>/base`.
pub fn overlay_dir(snapshot: &Snapshot, app: &str, cluster: &str, env: &str) -> String {
    [format!("apps/{app}/clusters/{cluster}"), format!("apps/{app}/envs/{env}")]
        .into_iter()
        .find(|dir| snapshot.dir(dir).is_some())
        .unwrap_or_else(|| format!("apps/{app}/base"))
}

/// Substitutes `${cluster.*}` variables and gives namespaced objects without a namespace the
/// app's namespace.
fn assemble(rendered: &[Value], cluster: &Cluster, app: &App) -> Result<AppAssignment, ObjectError> {
    let cluster_scoped_crds: BTreeSet<(String, String)> = rendered
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition" && o["spec"]["scope"] == "Cluster")
        .map(|o| {
            (
                o["spec"]["group"].as_str().unwrap_or_default().to_string(),
                o["spec"]["names"]["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut objects = Vec::with_capacity(rendered.len());
    for object in rendered {
        let mut object = object.clone();
        substitute(&mut object, cluster)?;
        if let Some(namespace) = &app.namespace {
            let kind = object["kind"].as_str().unwrap_or_default().to_string();
            let group = object["apiVersion"]
                .as_str()
                .and_then(|v| v.split_once('/'))
                .map(|(g, _)| g)
                .unwrap_or_default()
                .to_string();
            let scoped = CLUSTER_SCOPED.contains(&kind.as_str()) || cluster_scoped_crds.contains(&(group, kind));
            if !scoped && object["metadata"]["namespace"].as_str().is_none_or(str::is_empty) {
                object["metadata"]["namespace"] = Value::String(namespace.clone());
            }
        }
        let size = json_size(&object);
        if size > MAX_OBJECT_BYTES {
            return Err(ObjectError::TooLarge {
                object: convoy_shared::model::ObjectRef::of(&object).to_string(),
                size: human_bytes(size),
                limit: human_bytes(MAX_OBJECT_BYTES),
            });
        }
        objects.push(object);
    }
    Ok(AppAssignment {
        name: app.name.clone(),
        policy: app.policy,
        depends_on: app.depends_on.clone(),
        objects,
        render_error: None,
    })
}

/// Bytes of `value` as compact JSON, counted without building the string.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("counting never fails");
    count.0
}

fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 { format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64) } else { format!("{bytes} bytes") }
}

/// Replaces `${cluster.name}`, `${cluster.environment}` and `${cluster.labels.KEY}` in every
/// string; an unknown `${cluster.…}` variable is an error, never an empty string.
pub fn substitute(value: &mut Value, cluster: &Cluster) -> Result<(), ObjectError> {
    match value {
        Value::String(s) if s.contains("${cluster.") => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${cluster.") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let end = after.find('}').ok_or_else(|| ObjectError::Unterminated { text: s.clone() })?;
                let var = &after[..end];
                let resolved = match var {
                    "cluster.name" => cluster.name.clone(),
                    "cluster.environment" => cluster.environment.clone(),
                    _ => match var.strip_prefix("cluster.labels.").and_then(|k| cluster.labels.get(k)) {
                        Some(v) => v.clone(),
                        None => {
                            return Err(ObjectError::Undefined {
                                var: var.to_string(),
                                cluster: cluster.name.clone(),
                                labels: cluster.labels.keys().cloned().collect::<Vec<_>>().join(", "),
                            });
                        }
                    },
                };
                out.push_str(&resolved);
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| substitute(v, cluster)),
        Value::Object(map) => map.values_mut().try_for_each(|v| substitute(v, cluster)),
        _ => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mk_cluster(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            environment: "prod".into(),
            labels: [("region".to_string(), "eu".to_string())].into(),
        }
    }

    #[test]
    fn variables_resolve_and_unknown_ones_are_errors() {
        let mut v = json!({"data": {"a": "${cluster.name}-${cluster.labels.region}", "b": ["${cluster.environment}"], "c": "${HOME}"}});
        substitute(&mut v, &mk_cluster("eu-1")).unwrap();
        assert_eq!(v, json!({"data": {"a": "eu-1-eu", "b": ["prod"], "c": "${HOME}"}}));
        let mut bad = json!("${cluster.labels.zone}");
        let err = substitute(&mut bad, &mk_cluster("eu-1")).unwrap_err().to_string();
        assert!(err.contains("cluster.labels.zone") && err.contains("eu-1") && err.contains("region"), "{err}");
    }

    #[test]
    fn an_object_the_api_server_cannot_store_is_an_error_naming_it_and_its_size() {
        let app = App {
            name: "big".into(),
            targets: None,
            namespace: Some("big".into()),
            depends_on: vec![],
            policy: Default::default(),
        };
        let fits = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ok"}, "data": {"k": "x".repeat(MAX_OBJECT_BYTES - 200)}});
        assert!(assemble(&[fits], &mk_cluster("eu-1"), &app).is_ok());
        let huge = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "blob"}, "data": {"k": "x".repeat(4 << 20)}});
        let err = assemble(&[huge], &mk_cluster("eu-1"), &app).unwrap_err().to_string();
        assert!(err.contains("ConfigMap big/blob") && err.contains("4.0 MiB") && err.contains("1.5 MiB"), "{err}");
    }

    #[test]
    fn namespaced_objects_get_the_app_namespace_and_cluster_scoped_ones_do_not() {
        let app = App {
            name: "web".into(),
            targets: None,
            namespace: Some("web".into()),
            depends_on: vec![],
            policy: Default::default(),
        };
        let rendered = vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "other"}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "c"}}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "ws.x.io"},
                   "spec": {"group": "x.io", "scope": "Cluster", "names": {"kind": "W"}}}),
            json!({"apiVersion": "x.io/v1", "kind": "W", "metadata": {"name": "d"}}),
        ];
        let out = assemble(&rendered, &mk_cluster("eu-1"), &app).unwrap();
        let ns: Vec<_> = out.objects.iter().map(|o| o["metadata"]["namespace"].as_str().map(str::to_string)).collect();
        assert_eq!(ns, [Some("web".into()), Some("other".into()), None, None, None]);
    }
}
