//! One app for one cluster, exactly as the hub plans it and `convoy render --app NAME --cluster
//! NAME` prints it: the overlay a cluster takes (`clusters/<name>`, `envs/<env>`, `base`) or the
//! app's Helm chart with its layered values, then `${cluster.*}` variables and the app's
//! namespace. The hub adds caches around these pieces; the CLI calls [`render_app`].

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use convoy_model::{AppAssignment, Objects};
use serde_json::{Map, Value};

use crate::fleet::{App, ChartLocation, Cluster, HelmSource};
use crate::helm::remote::Remote;
use crate::helm::{self, Capabilities, Chart, HookPhase, ReleaseOptions};
use crate::{RenderError, Renderer, Source};

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
    #[error(
        "{object} holds {size} bytes of data, more than the {limit} (1 MiB) a Kubernetes API server takes in a ConfigMap or Secret; split it or move the data out of Git"
    )]
    TooMuchData { object: String, size: usize, limit: usize },
}

/// Why one app cannot be rendered for one cluster.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The app's kustomization or chart did not render.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A rendered object cannot go to the cluster.
    #[error(transparent)]
    Object(#[from] ObjectError),
}

/// Helm values: a mapping.
pub type Values = Map<String, Value>;

/// The values files of a Helm app that exist for `cluster`, in merge order (later wins):
/// `apps/<app>/values.yaml`, `apps/<app>/envs/<env>/values.yaml`,
/// `apps/<app>/clusters/<name>/values.yaml`.
pub fn values_files(src: &dyn Source, app: &str, cluster: &Cluster) -> Vec<String> {
    [
        format!("apps/{app}/values.yaml"),
        format!("apps/{app}/envs/{}/values.yaml", cluster.environment),
        format!("apps/{app}/clusters/{}/values.yaml", cluster.name),
    ]
    .into_iter()
    .filter(|f| matches!(src.kind(Path::new(f)), Ok(Some(crate::EntryKind::File))))
    .collect()
}

/// A values file as Helm reads it: a mapping (an empty file is an empty mapping).
pub fn parse_values(path: &str, bytes: &[u8]) -> Result<Values, RenderError> {
    let invalid = |message: String| RenderError::Invalid { path: path.into(), message };
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("not UTF-8 text".into()))?;
    match helm::yaml_read::parse_yaml(text).map_err(|message| RenderError::Yaml { path: path.into(), message })? {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err(invalid("Helm values must be a mapping".into())),
    }
}

/// The user values of a Helm app on `cluster`: `spec.helm.values`, then each of
/// [`values_files`], maps merged key by key as Helm merges `-f` files, with `${cluster.*}`
/// variables substituted in each layer. `parsed` gives a values file's mapping (the hub caches
/// them by blob).
pub fn helm_values(
    src: &dyn Source,
    app: &App,
    helm: &HelmSource,
    cluster: &Cluster,
    parsed: &mut dyn FnMut(&str) -> Result<Values, RenderError>,
) -> Result<Value, RenderError> {
    let substituted = |file: &str, layer: Map<String, Value>| {
        let mut layer = Value::Object(layer);
        substitute(&mut layer, cluster)
            .map_err(|e| RenderError::Invalid { path: file.into(), message: e.to_string() })?;
        Ok::<_, RenderError>(layer)
    };
    let app_file = format!("apps/{}/app.yaml", app.name);
    let Value::Object(mut values) = substituted(&app_file, helm.values.clone())? else { unreachable!() };
    for file in values_files(src, &app.name, cluster) {
        if let Value::Object(layer) = substituted(&file, parsed(&file)?)? {
            helm::values::merge_maps(&mut values, layer);
        }
    }
    Ok(Value::Object(values))
}

/// Loads the chart directory `path` of the repository.
pub fn load_chart(src: &dyn Source, path: &str) -> Result<Chart, RenderError> {
    if !src.is_dir(Path::new(path))? {
        return Err(RenderError::Invalid {
            path: path.into(),
            message: "spec.helm.chart names no directory of this repository; fix the path or add the chart".into(),
        });
    }
    Chart::load(src, Path::new(path)).map_err(|error| RenderError::Helm { chart: path.into(), error: Box::new(error) })
}

/// Renders `chart` as release `helm` in `namespace` for a cluster with `capabilities`: the
/// objects Helm would install, in its order. CRDs first, then the install/upgrade hooks (they
/// keep their `helm.sh/hook` annotations, by which the agent applies pre-hooks before and
/// post-hooks after the rest, by weight), then the manifests. Test, delete and rollback hooks
/// are left out: Convoy reconciles, it never uninstalls or rolls back a release.
pub fn render_chart(
    chart: &Chart,
    values: &Value,
    helm: &HelmSource,
    namespace: &str,
    capabilities: &Arc<Capabilities>,
) -> Result<Vec<Value>, RenderError> {
    let mut opts = ReleaseOptions::new(&helm.release_name, namespace);
    opts.capabilities = Arc::clone(capabilities);
    let rendered = helm::render(chart, values, &opts)
        .map_err(|error| RenderError::Helm { chart: chart.path.clone(), error: Box::new(error) })?;
    let applied = [HookPhase::PreInstall, HookPhase::PreUpgrade, HookPhase::PostInstall, HookPhase::PostUpgrade];
    let crds = rendered.crds.into_iter().map(|m| m.object);
    let hooks = rendered.hooks.into_iter().filter(|h| h.phases.iter().any(|p| applied.contains(p))).map(|h| h.object);
    Ok(crds.chain(hooks).chain(rendered.manifests.into_iter().map(|m| m.object)).collect())
}

/// One app for one cluster from the tree `src`, uncached: what the hub would assign.
/// `chart` loads a chart that is not in the repository (chart repositories and registries).
pub fn render_app(
    src: &std::sync::Arc<dyn Source>,
    app: &App,
    cluster: &Cluster,
    capabilities: &Arc<Capabilities>,
    chart: &dyn Fn(&Remote) -> Result<Chart, RenderError>,
) -> Result<AppAssignment, AppError> {
    let rendered = match &app.helm {
        None => {
            let dir = overlay_dir(&**src, &app.name, &cluster.name, &cluster.environment);
            Renderer::with_source(src.clone()).render(Path::new(&dir))?
        }
        Some(helm) => {
            let loaded = match &helm.chart {
                ChartLocation::Path(path) => load_chart(&**src, path)?,
                ChartLocation::Remote(remote) => chart(remote)?,
            };
            let values = helm_values(&**src, app, helm, cluster, &mut |file: &str| {
                parse_values(file, &crate::fleet::file(&**src, file).unwrap_or_default())
            })?;
            render_chart(&loaded, &values, helm, app.namespace.as_deref().unwrap_or("default"), capabilities)?
        }
    };
    Ok(assemble(&Objects::from(rendered), cluster, app)?)
}

/// `apps/<app>/clusters/<cluster>` if present, else [`environment_dir`].
pub fn overlay_dir(src: &dyn Source, app: &str, cluster: &str, env: &str) -> String {
    let own = format!("apps/{app}/clusters/{cluster}");
    if src.is_dir(Path::new(&own)).unwrap_or(false) { own } else { environment_dir(src, app, env) }
}

/// What a cluster of `env` without a directory of its own renders: `apps/<app>/envs/<env>` if
/// present, else `apps/<app>/base`.
pub fn environment_dir(src: &dyn Source, app: &str, env: &str) -> String {
    let env_dir = format!("apps/{app}/envs/{env}");
    if src.is_dir(Path::new(&env_dir)).unwrap_or(false) { env_dir } else { format!("apps/{app}/base") }
}

/// Substitutes `${cluster.*}` variables and gives namespaced objects without a namespace the
/// app's namespace.
pub fn assemble(rendered: &Objects, cluster: &Cluster, app: &App) -> Result<AppAssignment, ObjectError> {
    let namespacing = Namespacing::of(app);
    // The render's objects themselves, shared, unless one must change.
    let unchanged = !rendered.iter().any(has_variables) && namespacing.as_ref().is_none_or(|n| n.holds(rendered));
    let objects = if unchanged {
        rendered.clone()
    } else {
        let mut objects = rendered.to_vec();
        for object in &mut objects {
            substitute(object, cluster)?;
        }
        if let Some(namespacing) = &namespacing {
            namespacing.apply(&mut objects);
        }
        Objects::from(objects)
    };
    for object in objects.iter() {
        check_size(object)?;
    }
    Ok(AppAssignment {
        name: app.name.clone(),
        policy: app.policy,
        depends_on: app.depends_on.clone(),
        objects,
        render_error: None,
        ignore_differences: app.ignore_differences.clone(),
        health_rules: app.health.clone(),
    })
}

/// What an app's `spec.namespace` does to its objects, the same on every cluster: namespaced
/// objects without a namespace get it, and (with `spec.createNamespace`) the Namespace itself
/// is added when the sources hold none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespacing {
    pub namespace: String,
    /// The app, named in the Namespace it adds.
    pub app: String,
    pub create: bool,
    pub delete: bool,
}

impl Namespacing {
    /// The namespacing of `app`, when it names a namespace.
    pub fn of(app: &App) -> Option<Namespacing> {
        app.namespace.as_ref().map(|namespace| Namespacing {
            namespace: namespace.clone(),
            app: app.name.clone(),
            create: app.create_namespace,
            delete: app.delete_namespace,
        })
    }

    /// Gives `objects` the namespace, and adds the Namespace if asked and missing.
    pub fn apply(&self, objects: &mut Vec<Value>) {
        let crds = ClusterScopedCrds::of(objects);
        for object in objects.iter_mut().filter(|o| crds.lacks_namespace(o)) {
            object["metadata"]["namespace"] = Value::String(self.namespace.clone());
        }
        if self.create && !self.has_namespace_object(objects) {
            objects.push(namespace_object(&self.namespace, &self.app, self.delete));
        }
    }

    /// Whether a render is placed before any cluster takes it: it holds no `${cluster.…}`
    /// variable (objects with one are placed by each assignment, after they are resolved, as
    /// [`assemble`] does) and placing changes it.
    pub fn places_render(&self, objects: &[Value]) -> bool {
        !objects.iter().any(has_variables) && !self.holds(objects)
    }

    /// Whether [`Namespacing::apply`] would leave `objects` as they are.
    pub fn holds(&self, objects: &[Value]) -> bool {
        let crds = ClusterScopedCrds::of(objects);
        !objects.iter().any(|o| crds.lacks_namespace(o)) && (!self.create || self.has_namespace_object(objects))
    }

    fn has_namespace_object(&self, objects: &[Value]) -> bool {
        objects.iter().any(|o| {
            o["kind"] == "Namespace" && o["apiVersion"] == "v1" && o["metadata"]["name"] == self.namespace.as_str()
        })
    }
}

/// The kinds that custom resource definitions among a render's objects declare cluster-scoped.
struct ClusterScopedCrds(BTreeSet<(String, String)>);

impl ClusterScopedCrds {
    fn of(objects: &[Value]) -> Self {
        ClusterScopedCrds(
            objects
                .iter()
                .filter(|o| o["kind"] == "CustomResourceDefinition" && o["spec"]["scope"] == "Cluster")
                .map(|o| {
                    (
                        o["spec"]["group"].as_str().unwrap_or_default().to_string(),
                        o["spec"]["names"]["kind"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
        )
    }

    /// A namespaced object without a namespace.
    fn lacks_namespace(&self, object: &Value) -> bool {
        let kind = object["kind"].as_str().unwrap_or_default();
        let group = object["apiVersion"].as_str().and_then(|v| v.split_once('/')).map(|(g, _)| g).unwrap_or_default();
        let scoped =
            CLUSTER_SCOPED.contains(&kind) || self.0.iter().any(|(g, k)| g.as_str() == group && k.as_str() == kind);
        !scoped && object["metadata"]["namespace"].as_str().is_none_or(str::is_empty)
    }
}

/// An object too large for the API server, or a ConfigMap or Secret holding too much.
fn check_size(object: &Value) -> Result<(), ObjectError> {
    let size = json_size(object);
    if size > MAX_OBJECT_BYTES {
        return Err(ObjectError::TooLarge {
            object: convoy_model::ObjectRef::of(object).to_string(),
            size: human_bytes(size),
            limit: human_bytes(MAX_OBJECT_BYTES),
        });
    }
    if let Some(data) = data_bytes(object).filter(|data| *data > MAX_DATA_BYTES) {
        return Err(ObjectError::TooMuchData {
            object: convoy_model::ObjectRef::of(object).to_string(),
            size: data,
            limit: MAX_DATA_BYTES,
        });
    }
    Ok(())
}

/// The Namespace an app's `spec.namespace` names, added when its sources hold none: applied
/// first like every Namespace, and never pruned unless `delete` (`spec.deleteNamespace`). The
/// agent tells one it created from one that was there before (it never deletes those).
fn namespace_object(name: &str, app: &str, delete: bool) -> Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert(convoy_model::NAMESPACE_OF_ANNOTATION.into(), Value::String(app.to_string()));
    if !delete {
        annotations.insert("convoy.dev/prune".into(), Value::String("disabled".into()));
    }
    serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "annotations": annotations}})
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

/// The most a ConfigMap's or a Secret's values may hold (kube-apiserver's `MaxSecretSize`).
pub const MAX_DATA_BYTES: usize = 1 << 20;

/// The bytes of the values of a core ConfigMap or Secret, as the API server counts them (text
/// values as they are, base64 ones decoded); `None` for other kinds and for a Secret still
/// encrypted with SOPS (the agent decrypts it, and its ciphertext is no measure).
fn data_bytes(object: &Value) -> Option<usize> {
    use base64::Engine as _;
    let secret = match (object["apiVersion"].as_str(), object["kind"].as_str()) {
        (Some("v1"), Some("ConfigMap")) => false,
        (Some("v1"), Some("Secret")) if object.get("sops").is_none() => true,
        _ => return None,
    };
    let values = |field: &str| object[field].as_object().into_iter().flat_map(|m| m.values());
    let text = |v: &Value| v.as_str().map_or(0, str::len);
    let decoded = |v: &Value| {
        let text = v.as_str().unwrap_or_default();
        base64::engine::general_purpose::STANDARD.decode(text).map_or(text.len(), |b| b.len())
    };
    let data: usize = if secret { values("data").map(decoded).sum() } else { values("data").map(text).sum() };
    Some(data + values("stringData").map(text).sum::<usize>() + values("binaryData").map(decoded).sum::<usize>())
}

fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 { format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64) } else { format!("{bytes} bytes") }
}

/// Whether `text` holds a `${cluster.…}` variable; a byte search first, as most strings hold
/// no `$` and the pattern search costs more.
fn holds_variable(text: &str) -> bool {
    text.contains('$') && text.contains("${cluster.")
}

/// Whether [`substitute`] would change `value`: some string holds a `${cluster.…}` variable.
fn has_variables(value: &Value) -> bool {
    match value {
        Value::String(s) => holds_variable(s),
        Value::Array(items) => items.iter().any(has_variables),
        Value::Object(map) => map.values().any(has_variables),
        _ => false,
    }
}

/// Replaces `${cluster.name}`, `${cluster.environment}` and `${cluster.labels.KEY}` in every
/// string; an unknown `${cluster.…}` variable is an error, never an empty string.
pub fn substitute(value: &mut Value, cluster: &Cluster) -> Result<(), ObjectError> {
    match value {
        Value::String(s) if holds_variable(s) => {
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

    /// An app `name` in namespace `name`, making that namespace or not.
    fn mk_app(name: &str, create_namespace: bool) -> App {
        App {
            ignore_differences: Vec::new(),
            health: Vec::new(),
            health_errors: Vec::new(),
            create_namespace,
            delete_namespace: false,
            name: name.into(),
            targets: None,
            namespace: Some(name.into()),
            depends_on: vec![],
            policy: Default::default(),
            helm: None,
            rollout: None,
        }
    }

    #[test]
    fn an_object_the_api_server_cannot_store_is_an_error_naming_it_and_its_size() {
        let app = mk_app("big", false);
        let fits = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "ok"}, "spec": {"k": "x".repeat(MAX_OBJECT_BYTES - 200)}});
        assert!(assemble(&vec![fits].into(), &mk_cluster("eu-1"), &app).is_ok());
        let huge = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "blob"}, "data": {"k": "x".repeat(4 << 20)}});
        let err = assemble(&vec![huge].into(), &mk_cluster("eu-1"), &app).unwrap_err().to_string();
        assert!(err.contains("ConfigMap big/blob") && err.contains("4.0 MiB") && err.contains("1.5 MiB"), "{err}");
    }

    #[test]
    fn a_config_map_or_secret_holding_over_1_mib_of_data_is_an_error_naming_it() {
        use base64::Engine as _;
        let app = mk_app("big", false);
        let cm = |name: &str, n: usize| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "x".repeat(n)}});
        assert!(assemble(&vec![cm("fits", MAX_DATA_BYTES)].into(), &mk_cluster("eu-1"), &app).is_ok());
        let err =
            assemble(&vec![cm("over", MAX_DATA_BYTES + 1)].into(), &mk_cluster("eu-1"), &app).unwrap_err().to_string();
        assert!(err.contains("ConfigMap big/over holds 1048577 bytes of data, more than the 1048576"), "{err}");
        // A Secret's data counts decoded: 1 MiB of bytes is 1.33 MiB of base64, and fits.
        let encoded = base64::engine::general_purpose::STANDARD.encode(vec![7u8; MAX_DATA_BYTES]);
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": encoded}});
        assert!(assemble(&vec![secret].into(), &mk_cluster("eu-1"), &app).is_ok());
        let over = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"},
            "data": {"k": base64::engine::general_purpose::STANDARD.encode(vec![7u8; MAX_DATA_BYTES])}, "stringData": {"more": "y"}});
        assert!(
            assemble(&vec![over].into(), &mk_cluster("eu-1"), &app).unwrap_err().to_string().contains("Secret big/t")
        );
    }

    #[test]
    fn the_apps_namespace_is_added_unless_its_sources_hold_it_or_it_says_not_to() {
        let mut app = mk_app("web", true);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let added = assemble(&vec![cm.clone()].into(), &mk_cluster("eu-1"), &app).unwrap();
        let ns = added.objects.iter().find(|o| o["kind"] == "Namespace").expect("the app's namespace");
        assert_eq!(ns["metadata"]["name"], "web");
        assert_eq!(ns["metadata"]["annotations"]["convoy.dev/namespace-of"], "web");
        assert_eq!(ns["metadata"]["annotations"]["convoy.dev/prune"], "disabled", "kept unless deleteNamespace");
        app.delete_namespace = true;
        let deletable = assemble(&vec![cm.clone()].into(), &mk_cluster("eu-1"), &app).unwrap();
        let ns = deletable.objects.iter().find(|o| o["kind"] == "Namespace").unwrap();
        assert!(ns["metadata"]["annotations"].get("convoy.dev/prune").is_none());
        let own = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web", "labels": {"a": "b"}}});
        let held = assemble(&vec![cm.clone(), own.clone()].into(), &mk_cluster("eu-1"), &app).unwrap();
        assert_eq!(held.objects.iter().filter(|o| o["kind"] == "Namespace").collect::<Vec<_>>(), [&own]);
        app.create_namespace = false;
        assert!(
            assemble(&vec![cm].into(), &mk_cluster("eu-1"), &app)
                .unwrap()
                .objects
                .iter()
                .all(|o| o["kind"] != "Namespace")
        );
    }

    #[test]
    fn namespaced_objects_get_the_app_namespace_and_cluster_scoped_ones_do_not() {
        let app = mk_app("web", false);
        let rendered = vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "other"}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "c"}}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "ws.x.io"},
                   "spec": {"group": "x.io", "scope": "Cluster", "names": {"kind": "W"}}}),
            json!({"apiVersion": "x.io/v1", "kind": "W", "metadata": {"name": "d"}}),
        ];
        let out = assemble(&rendered.into(), &mk_cluster("eu-1"), &app).unwrap();
        let ns: Vec<_> = out.objects.iter().map(|o| o["metadata"]["namespace"].as_str().map(str::to_string)).collect();
        assert_eq!(ns, [Some("web".into()), Some("other".into()), None, None, None]);
    }

    #[test]
    fn a_render_that_needs_no_change_is_shared_and_one_that_does_is_copied() {
        let app = mk_app("web", false);
        let cluster = mk_cluster("eu-1");
        let plain = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "web"}});
        let rendered: Objects = vec![plain.clone()].into();
        assert!(assemble(&rendered, &cluster, &app).unwrap().objects.ptr_eq(&rendered));

        let templated = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "web"},
            "data": {"where": "${cluster.name}"}});
        let rendered: Objects = vec![plain.clone(), templated].into();
        let out = assemble(&rendered, &cluster, &app).unwrap();
        assert!(!out.objects.ptr_eq(&rendered));
        assert_eq!(out.objects[0], plain);
        assert_eq!(out.objects[1]["data"]["where"], "eu-1");
        assert_eq!(rendered[1]["data"]["where"], "${cluster.name}", "the render itself is left as it was");

        // An undefined variable is still an error, and an object too large still refused.
        let undefined = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "web"},
            "data": {"k": "${cluster.labels.zone}"}});
        assert!(assemble(&vec![undefined].into(), &cluster, &app).is_err());
        let huge = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d", "namespace": "web"},
            "data": {"k": "x".repeat(4 << 20)}});
        assert!(assemble(&vec![huge].into(), &cluster, &app).is_err());
    }

    #[test]
    fn namespaces_placed_on_the_render_give_what_assembling_places_and_share_it() {
        for create in [false, true] {
            namespacing_placed_on_the_render_is_shared(mk_app("web", create));
        }
    }

    fn namespacing_placed_on_the_render_is_shared(app: App) {
        let cluster = mk_cluster("eu-1");
        let render = || {
            vec![
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "ws.x.io"},
                       "spec": {"group": "x.io", "scope": "Cluster", "names": {"kind": "W"}}}),
                json!({"apiVersion": "x.io/v1", "kind": "W", "metadata": {"name": "d"}}),
            ]
        };
        let assembled = assemble(&render().into(), &cluster, &app).unwrap();
        let mut namespaced = render();
        Namespacing::of(&app).unwrap().apply(&mut namespaced);
        let namespaced: Objects = namespaced.into();
        let shared = assemble(&namespaced, &cluster, &app).unwrap();
        assert!(shared.objects.ptr_eq(&namespaced));
        assert_eq!(shared.objects, assembled.objects);
    }
}
