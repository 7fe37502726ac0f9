//! One cluster for a scenario, simulated or real, behind one API: a scenario written against
//! [`TestCluster`] runs on kubesim and on kube-apiserver alike (issue 29). Reads go through the
//! Kubernetes API on the real one and straight to the state on kubesim.

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, TypeMeta};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope, verbs};
use serde_json::{Value, json};

use crate::realkube::RealCluster;
use crate::{SimCluster, SimFleet};

/// Which API server a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// kubesim, in-process.
    Kubesim,
    /// etcd + kube-apiserver + kube-controller-manager built by `e2e/realkube/build.sh`.
    KubeApiserver,
}

/// A started cluster of either [`Backend`].
pub enum TestCluster {
    /// A one-cluster simulated fleet.
    Sim(SimFleet),
    /// A real control plane.
    Real(Box<RealCluster>),
}

impl TestCluster {
    /// Starts a cluster named `name`; `None` (after printing why) when the real control plane
    /// is asked for, not built and not required. Panics when it cannot start.
    pub async fn start(backend: Backend, name: &str) -> Option<TestCluster> {
        match backend {
            Backend::Kubesim => Some(TestCluster::Sim(SimFleet::start(&[name]).await.expect("kubesim starts"))),
            Backend::KubeApiserver => RealCluster::start_if_built(name)
                .await
                .unwrap_or_else(|e| panic!("the real control plane did not start: {e}"))
                .map(|c| TestCluster::Real(Box::new(c))),
        }
    }

    /// The simulated cluster, for what only kubesim offers (fault injection, its event window).
    pub fn sim(&self) -> Option<&SimCluster> {
        match self {
            TestCluster::Sim(fleet) => fleet.clusters().first(),
            TestCluster::Real(_) => None,
        }
    }

    /// The kubeconfig file, for the real kubectl.
    pub fn kubeconfig_path(&self) -> &std::path::Path {
        match self {
            TestCluster::Sim(fleet) => fleet.clusters()[0].kubeconfig_path(),
            TestCluster::Real(real) => real.kubeconfig_path(),
        }
    }

    /// A `kube::Client` built from the kubeconfig.
    pub async fn client(&self) -> kube::Client {
        match self {
            TestCluster::Sim(fleet) => fleet.clusters()[0].client().await.expect("a kubesim client"),
            TestCluster::Real(real) => real.client().await.expect("a kube-apiserver client"),
        }
    }

    /// The API of `kind` in `api_version`, in `ns` when namespaced; `None` if not served.
    async fn api(&self, api_version: &str, kind: &str, ns: Option<&str>) -> Option<Api<DynamicObject>> {
        api_of(self.client().await, api_version, kind, ns).await
    }

    /// Reads one object, e.g. `get("apps/v1", "Deployment", Some("ns"), "x").await`.
    pub async fn get(&self, api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        if let Some(sim) = self.sim() {
            return sim.get(api_version, kind, ns, name);
        }
        let object = self.api(api_version, kind, ns).await?.get_opt(name).await.ok()??;
        Some(serde_json::to_value(object).expect("JSON"))
    }

    /// Every object of a kind, optionally in one namespace, each with its apiVersion and kind.
    pub async fn list(&self, api_version: &str, kind: &str, ns: Option<&str>) -> Vec<Value> {
        if let Some(sim) = self.sim() {
            return sim.list(api_version, kind, ns);
        }
        let Some(api) = self.api(api_version, kind, ns).await else { return Vec::new() };
        let list = api.list(&ListParams::default()).await.expect("listing");
        let types = TypeMeta { api_version: api_version.into(), kind: kind.into() };
        list.items
            .into_iter()
            .map(|mut o| {
                o.types = Some(types.clone());
                serde_json::to_value(o).expect("JSON")
            })
            .collect()
    }

    /// Server-side applies `obj` as `manager` (forcing conflicts when `force`), e.g. a hand edit.
    pub async fn apply(&self, manager: &str, obj: &Value, force: bool) -> Value {
        if let Some(sim) = self.sim() {
            return sim.apply(manager, obj, force).expect("kubesim applies");
        }
        apply_with(self.client().await, manager, obj, force).await
    }

    /// Every stored object of every listable kind labelled `key=value`.
    pub async fn list_labelled(&self, key: &str, value: &str) -> Vec<Value> {
        if let Some(sim) = self.sim() {
            let mut all = sim.list_all();
            all.retain(|o| o["metadata"]["labels"][key] == value);
            return all;
        }
        let client = self.client().await;
        let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
        let params = ListParams::default().labels(&format!("{key}={value}"));
        let mut out = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                if !caps.supports_operation(verbs::LIST) {
                    continue;
                }
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                let Ok(list) = api.list(&params).await else { continue };
                for mut object in list.items {
                    // A list's items carry no apiVersion and kind; a read object does.
                    object.types = Some(TypeMeta { api_version: ar.api_version.clone(), kind: ar.kind.clone() });
                    out.push(serde_json::to_value(object).expect("JSON"));
                }
            }
        }
        out
    }

    /// Takes the API server away for `d` (connections refused, open watches dropped) and returns
    /// once it serves again: kubesim's outage fault, or kube-apiserver stopped and started again.
    pub async fn outage(&mut self, d: std::time::Duration) {
        match self {
            TestCluster::Sim(fleet) => {
                fleet.clusters()[0].faults().outage(d, crate::OutageMode::Refuse);
                tokio::time::sleep(d).await;
            }
            TestCluster::Real(real) => real.restart_apiserver(d).await.expect("kube-apiserver starts again"),
        }
    }

    /// Makes `edits` while the API server is away, so that its watchers miss them, and makes
    /// every resourceVersion from before expire: a watch resuming from one is 410 Gone and must
    /// list again. kubesim refuses connections, edits its state directly and drops its event
    /// window; kube-apiserver is stopped, the edits go through a second kube-apiserver on the
    /// same etcd, and the first one's watch cache starts after them when it comes back.
    pub async fn edit_while_away(&mut self, edits: Vec<Edit>) {
        match self {
            TestCluster::Sim(fleet) => {
                let sim = &fleet.clusters()[0];
                sim.faults().outage(std::time::Duration::from_secs(3600), crate::OutageMode::Refuse);
                for edit in &edits {
                    match edit {
                        Edit::Apply { manager, object } => {
                            sim.apply(manager, object, true).expect("kubesim applies");
                        }
                        Edit::Delete { api_version, kind, namespace, name } => {
                            sim.delete(api_version, kind, namespace.as_deref(), name).expect("kubesim deletes");
                        }
                    }
                }
                sim.state().compact();
                sim.faults().end_outage();
            }
            TestCluster::Real(real) => real
                .edit_while_away(|client| async move {
                    for edit in &edits {
                        match edit {
                            Edit::Apply { manager, object } => {
                                apply_with(client.clone(), manager, object, true).await;
                            }
                            Edit::Delete { api_version, kind, namespace, name } => {
                                let api = api_of(client.clone(), api_version, kind, namespace.as_deref()).await;
                                api.expect("a served kind").delete(name, &Default::default()).await.expect("deleting");
                            }
                        }
                    }
                })
                .await
                .expect("kube-apiserver comes back"),
        }
    }

    /// Sets `spec.replicas` of a Deployment through the scale subresource as
    /// `kube-controller-manager`, as a HorizontalPodAutoscaler does (an Update, not an apply).
    pub async fn autoscale(&self, ns: &str, deployment: &str, replicas: i64) {
        if let Some(sim) = self.sim() {
            sim.autoscale(ns, deployment, replicas).expect("kubesim scales");
            return;
        }
        let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(self.client().await, ns);
        let params = PatchParams { field_manager: Some("kube-controller-manager".into()), ..Default::default() };
        api.patch_scale(deployment, &params, &Patch::Merge(json!({"spec": {"replicas": replicas}})))
            .await
            .expect("scaling a Deployment");
    }
}

/// A change made behind a watcher's back ([`TestCluster::edit_while_away`]).
#[derive(Debug, Clone)]
pub enum Edit {
    /// A server-side apply by `manager`, forcing conflicts.
    Apply {
        /// The field manager.
        manager: String,
        /// The object, with apiVersion, kind and metadata.
        object: Value,
    },
    /// A delete.
    Delete {
        /// e.g. `apps/v1`.
        api_version: String,
        /// e.g. `Deployment`.
        kind: String,
        /// Its namespace, if namespaced.
        namespace: Option<String>,
        /// Its name.
        name: String,
    },
}

/// The API of `kind` in `api_version` through `client`, in `ns` when namespaced; `None` if not
/// served.
async fn api_of(client: kube::Client, api_version: &str, kind: &str, ns: Option<&str>) -> Option<Api<DynamicObject>> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let (ar, caps) = kube::discovery::pinned_kind(&client, &GroupVersionKind::gvk(group, version, kind)).await.ok()?;
    Some(match (caps.scope, ns) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client, ns, &ar),
        _ => Api::all_with(client, &ar),
    })
}

/// Server-side applies `obj` through `client` as `manager`.
async fn apply_with(client: kube::Client, manager: &str, obj: &Value, force: bool) -> Value {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
    let api = api_of(client, s("/apiVersion"), s("/kind"), obj.pointer("/metadata/namespace").and_then(Value::as_str));
    let api = api.await.expect("a served kind");
    let mut params = PatchParams::apply(manager);
    params.force = force;
    let applied = api.patch(s("/metadata/name"), &params, &Patch::Apply(obj)).await.expect("applying");
    serde_json::to_value(applied).expect("JSON")
}

/// Runs the scenario `async fn NAME(backend: Backend)` as two tests, `NAME::kubesim` and
/// `NAME::kube_apiserver` (the latter skipped with a message when the real control plane is not
/// built and `CONVOY_REALKUBE` is unset).
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kubesim() {
                super::$scenario($crate::scenario::Backend::Kubesim).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kube_apiserver() {
                super::$scenario($crate::scenario::Backend::KubeApiserver).await
            }
        }
    )+};
}
