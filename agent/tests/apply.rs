//! The agent through the real kube client, on kubesim and on a real kube-apiserver: a 200-object
//! assignment applied in phase order and healthy with its inventory stored, then a change that
//! deletes exactly what left and writes exactly what changed; Helm hooks applied around the rest
//! by weight; what the server says it serves, as charts' `.Capabilities` will see it; a
//! 1,000-object assignment applied whole, then a revision that changes 99 and drops 100.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use convoy_agent::testing::{self as fx, InProcessAgent, NS};
use convoy_shared::model::report::{Health, Report};
use futures::StreamExt as _;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use kube::discovery::ApiResource;
use kubesim::eventually;
use kubesim::scenario::{Backend, TestCluster};
use serde_json::Value;

const CLUSTER: &str = "c1";

/// What the agent applied: labelled for this cluster and written by `convoy-agent`. The label
/// alone is not enough on a real cluster, where the Endpoints and EndpointSlices of a Service
/// copy its labels.
async fn managed(cluster: &TestCluster) -> Vec<Value> {
    let mut objects = cluster.list_labelled("convoy.dev/cluster", CLUSTER).await;
    objects.retain(|o| {
        o["metadata"]["managedFields"].as_array().is_some_and(|m| m.iter().any(|e| e["manager"] == "convoy-agent"))
    });
    objects
}

/// An object as its writers set it: without status, the resourceVersion and managedFields, which
/// controllers move on a real cluster long after the agent wrote it.
fn written_content(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = o["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    o
}

fn id(o: &Value) -> String {
    format!(
        "{}/{}/{}",
        o["kind"].as_str().unwrap_or(""),
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn rv(o: &Value) -> u64 {
    o["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The objects of `after` written since `before` (both by id: resourceVersion and content), in
/// id order: a new resourceVersion, and on a real cluster (where controllers keep writing the
/// status of Deployments, Jobs and claims) also new content.
fn written(
    cluster: &TestCluster,
    before: &HashMap<String, (u64, Value)>,
    after: &HashMap<String, (u64, Value)>,
) -> Vec<String> {
    let mut written: Vec<String> = after
        .iter()
        .filter(|(k, (rv, o))| {
            before
                .get(*k)
                .is_none_or(|(rv0, content)| rv0 != rv && (cluster.sim().is_some() || *content != written_content(o)))
        })
        .map(|(k, _)| k.clone())
        .collect();
    written.sort();
    written
}

async fn report_where(agent: &InProcessAgent, what: &str, ok: impl Fn(&Report) -> bool) -> Report {
    eventually(what, || {
        let r = agent.last_report().filter(|r| ok(r));
        async move { r }
    })
    .await
}

fn all_healthy(r: &Report, digest: &str) -> bool {
    r.digest == digest && r.applied && !r.apps.is_empty() && r.health() == Health::Healthy
}

/// The kinds of an assignment in apply phases: each phase's objects must be created before the
/// next phase's.
fn phased_kinds() -> Vec<(u32, ApiResource)> {
    vec![
        (0, ar("", "v1", "Namespace", "namespaces")),
        (0, ar("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions")),
        (1, ar("", "v1", "ServiceAccount", "serviceaccounts")),
        (1, ar("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles")),
        (1, ar("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings")),
        (2, ar("", "v1", "ConfigMap", "configmaps")),
        (2, ar("", "v1", "Secret", "secrets")),
        (2, ar("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims")),
        (3, ar("", "v1", "Service", "services")),
        (4, ar("apps", "v1", "Deployment", "deployments")),
        (4, ar("batch", "v1", "Job", "jobs")),
        (5, ar("example.com", "v1", "Widget", "widgets")),
    ]
}

/// The resourceVersion at which each object was created (by id), from ADDED events of watches
/// started before the apply: kube-apiserver's watch cache cannot replay what came before it.
#[derive(Default, Clone)]
struct Creations(Arc<Mutex<HashMap<String, u64>>>);

impl Creations {
    /// Starts a watch of every served kind of [`phased_kinds`] from now. Widgets are not served
    /// yet (the assignment brings their CRD); their creation is their resourceVersion, as
    /// nothing writes them after the agent.
    async fn watch_from_now(client: &kube::Client) -> Creations {
        let creations = Creations::default();
        for (_, ar) in phased_kinds() {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let Ok(list) = api.list_metadata(&ListParams::default().limit(1)).await else { continue };
            let from = list.metadata.resource_version.expect("a list's resourceVersion");
            let mut stream =
                api.watch(&WatchParams::default().timeout(290), &from).await.expect("a watch from now").boxed();
            let seen = creations.0.clone();
            tokio::spawn(async move {
                while let Some(event) = stream.next().await {
                    if let Ok(WatchEvent::Added(o)) = event {
                        let o = serde_json::to_value(o).unwrap();
                        seen.lock().unwrap().entry(id(&o)).or_insert(rv(&o));
                    }
                }
            });
        }
        creations
    }

    /// When `o` was created.
    async fn of(&self, o: &Value) -> u64 {
        if o["kind"] == "Widget" {
            return rv(o);
        }
        self.at(&id(o)).await
    }

    /// When the object `KIND/NAMESPACE/NAME` was created.
    async fn at(&self, id: &str) -> u64 {
        eventually(&format!("the ADDED event of {id}"), || async { self.0.lock().unwrap().get(id).copied() }).await
    }
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() { version.into() } else { format!("{group}/{version}") },
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Each phase's objects were created before the next phase's.
async fn assert_phase_order(creations: &Creations, live: &[Value]) {
    let mut phase_range: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for (phase, ar) in phased_kinds() {
        let mut ours = Vec::new();
        for o in live.iter().filter(|o| o["kind"] == ar.kind.as_str()) {
            ours.push(creations.of(o).await);
        }
        assert!(!ours.is_empty(), "no {} applied", ar.kind);
        let range = phase_range.entry(phase).or_insert((u64::MAX, 0));
        range.0 = range.0.min(*ours.iter().min().unwrap());
        range.1 = range.1.max(*ours.iter().max().unwrap());
    }
    let ranges: Vec<(u64, u64)> = phase_range.values().copied().collect();
    for pair in ranges.windows(2) {
        assert!(pair[0].1 < pair[1].0, "phases overlap: {phase_range:?}");
    }
}

kubesim::on_both_backends!(
    a_fresh_cluster_gets_200_objects_in_order_healthy_with_inventory_then_an_exact_update,
    an_assignment_of_1000_objects_applies_whole_and_its_next_revision_writes_and_prunes_exactly,
    helm_hooks_are_applied_around_the_rest_by_weight_and_capabilities_come_from_discovery,
);

async fn a_fresh_cluster_gets_200_objects_in_order_healthy_with_inventory_then_an_exact_update(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, CLUSTER).await else { return };
    let client = cluster.client().await;
    let cache = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(fx::test_config(CLUSTER, cache.path()), client.clone(), None);
    let creations = Creations::watch_from_now(&client).await;

    let first = fx::assignment(CLUSTER, "rev-1", vec![fx::infra_app(), fx::shop_app(200, 0, "v1")]);
    assert_eq!(first.objects().count(), 200);
    agent.assign(first.clone());
    let report = report_where(&agent, "200 objects applied and healthy", |r| all_healthy(r, &first.digest)).await;
    assert_eq!(report.revision, "rev-1");
    let objects: usize = report.apps.iter().map(|a| a.objects.len()).sum();
    assert_eq!(objects, 200);

    // Every object carries the ownership labels and the revision.
    let live = managed(&cluster).await;
    assert_eq!(live.len(), 200, "{:?}", live.iter().map(id).collect::<Vec<_>>());
    for o in &live {
        let meta = &o["metadata"];
        assert!(meta["labels"]["convoy.dev/app"].is_string(), "{}", id(o));
        assert_eq!(meta["annotations"]["convoy.dev/revision"], "rev-1", "{}", id(o));
        let managers: Vec<&str> =
            meta["managedFields"].as_array().unwrap().iter().filter_map(|m| m["manager"].as_str()).collect();
        assert!(managers.contains(&"convoy-agent"), "{}: {managers:?}", id(o));
    }

    assert_phase_order(&creations, &live).await;

    // The inventory, in the cluster and locally.
    let inventory =
        cluster.get("v1", "ConfigMap", Some("convoy-system"), "convoy-inventory").await.expect("inventory ConfigMap");
    let stored: Value = serde_json::from_str(inventory["data"]["inventory.json"].as_str().unwrap()).unwrap();
    let count: usize =
        stored["apps"].as_object().unwrap().values().map(|a| a["objects"].as_object().unwrap().len()).sum();
    assert_eq!(count, 200);
    assert_eq!(stored["revision"], "rev-1");
    assert!(cache.path().join("inventory.json").exists());
    assert!(cache.path().join("assignment.pb").exists());

    // Next revision: 5 objects dropped, 10 changed.
    let before: HashMap<String, (u64, Value)> = live.iter().map(|o| (id(o), (rv(o), written_content(o)))).collect();
    let mut shop = fx::shop_app(200, 10, "v2");
    let dropped = [
        "Widget/shop/widget-0",
        "Widget/shop/widget-1",
        "Secret/shop/secret-3",
        "Service/shop/web-4",
        "ConfigMap/shop/cm-50",
    ];
    shop.objects.make_mut().retain(|o| !dropped.contains(&id(o).as_str()));
    let second = fx::assignment(CLUSTER, "rev-2", vec![fx::infra_app(), shop]);
    agent.assign(second.clone());
    report_where(&agent, "the second revision applied", |r| all_healthy(r, &second.digest)).await;
    let after = eventually("the 5 dropped objects to be pruned", || async {
        let now = managed(&cluster).await;
        (now.len() == 195).then_some(now)
    })
    .await;
    let after: HashMap<String, (u64, Value)> = after.into_iter().map(|o| (id(&o), (rv(&o), o))).collect();
    for gone in dropped {
        assert!(!after.contains_key(gone), "{gone} should be pruned");
    }
    let mut expected: Vec<String> = (0..10).map(|i| format!("ConfigMap/{NS}/cm-{i}")).collect();
    expected.sort();
    assert_eq!(written(&cluster, &before, &after), expected, "exactly the 10 changed objects are written");
    for name in &expected {
        let (_, o) = &after[name];
        assert_eq!(o["data"]["value"], "v2");
        assert_eq!(o["metadata"]["annotations"]["convoy.dev/revision"], "rev-2");
    }
    assert_eq!(
        after["ConfigMap/shop/cm-11"].1["metadata"]["annotations"]["convoy.dev/revision"], "rev-1",
        "an unchanged object keeps the revision it was applied at"
    );
    agent.stop().await;
}

/// `n` objects of app `bulk` (its Namespace, then ConfigMaps, Secrets and Services in turn),
/// ConfigMaps below `changed` at `version`.
fn bulk_app(n: usize, changed: usize, version: &str) -> convoy_shared::model::AppAssignment {
    let mut objects = vec![fx::namespace(NS)];
    for i in 1..n {
        objects.push(match i % 3 {
            0 => fx::config_map(&format!("cm-{i}"), if i < changed { version } else { "v1" }),
            1 => fx::secret(&format!("secret-{i}")),
            _ => fx::service(&format!("svc-{i}")),
        });
    }
    fx::app("bulk", &[], objects)
}

async fn an_assignment_of_1000_objects_applies_whole_and_its_next_revision_writes_and_prunes_exactly(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, CLUSTER).await else { return };
    let cache = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(fx::test_config(CLUSTER, cache.path()), cluster.client().await, None);
    let first = fx::assignment(CLUSTER, "rev-1", vec![bulk_app(1_000, 0, "v1")]);
    agent.assign(first.clone());
    report_where(&agent, "1,000 objects applied and healthy", |r| all_healthy(r, &first.digest)).await;
    let live = managed(&cluster).await;
    assert_eq!(live.len(), 1_000);
    let inventory = cluster.get("v1", "ConfigMap", Some("convoy-system"), "convoy-inventory").await.unwrap();
    let stored: Value = serde_json::from_str(inventory["data"]["inventory.json"].as_str().unwrap()).unwrap();
    assert_eq!(stored["apps"]["bulk"]["objects"].as_object().unwrap().len(), 1_000);

    // Next revision: every third of the first 300 ConfigMaps changed, 100 Secrets dropped.
    let before: HashMap<String, (u64, Value)> = live.iter().map(|o| (id(o), (rv(o), written_content(o)))).collect();
    let mut bulk = bulk_app(1_000, 300, "v2");
    let dropped: Vec<String> = (0..100).map(|k| format!("Secret/{NS}/secret-{}", 3 * k + 1)).collect();
    bulk.objects.make_mut().retain(|o| !dropped.contains(&id(o)));
    let second = fx::assignment(CLUSTER, "rev-2", vec![bulk]);
    agent.assign(second.clone());
    report_where(&agent, "the second revision applied", |r| all_healthy(r, &second.digest)).await;
    let after = eventually("the 100 dropped Secrets to be pruned", || async {
        let now = managed(&cluster).await;
        (now.len() == 900).then_some(now)
    })
    .await;
    let after: HashMap<String, (u64, Value)> = after.into_iter().map(|o| (id(&o), (rv(&o), o))).collect();
    assert!(dropped.iter().all(|gone| !after.contains_key(gone)));
    let mut expected: Vec<String> = (1..100).map(|k| format!("ConfigMap/{NS}/cm-{}", 3 * k)).collect();
    expected.sort();
    assert_eq!(written(&cluster, &before, &after), expected, "exactly the 99 changed ConfigMaps are written");
    agent.stop().await;
}

async fn helm_hooks_are_applied_around_the_rest_by_weight_and_capabilities_come_from_discovery(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, CLUSTER).await else { return };
    let client = cluster.client().await;
    let capabilities = convoy_agent::discovery::ServerCapabilities::of(&client).await;
    let version = client.apiserver_version().await.expect("the server's version");
    assert_eq!(capabilities.kube_version, version.git_version);
    if cluster.sim().is_none() {
        assert_eq!(capabilities.kube_version, kubesim::realkube::binaries::kubernetes_version());
    }
    for served in ["v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1", "apiextensions.k8s.io/v1"] {
        assert!(capabilities.api_versions.iter().any(|v| v == served), "{served} in {:?}", capabilities.api_versions);
    }

    let hook = |mut object: Value, hook: &str, weight: &str| {
        object["metadata"]["annotations"] = serde_json::json!({"helm.sh/hook": hook, "helm.sh/hook-weight": weight});
        object
    };
    let objects = vec![
        fx::job("plain"),
        hook(fx::config_map("second", "v1"), "pre-install,pre-upgrade", "5"),
        fx::service("web"),
        hook(fx::job("migrate"), "post-install", "0"),
        hook(fx::config_map("first", "v1"), "pre-install", "-1"),
        fx::namespace(NS),
    ];
    let cache = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(fx::test_config(CLUSTER, cache.path()), client.clone(), None);
    let created = Creations::watch_from_now(&client).await;
    let a = fx::assignment(CLUSTER, "rev-1", vec![fx::app("web", &[], objects)]);
    agent.assign(a.clone());
    report_where(&agent, "the hooks and the rest applied", |r| r.digest == a.digest && r.applied).await;
    let order = [
        format!("ConfigMap/{NS}/first"),
        format!("ConfigMap/{NS}/second"),
        format!("Service/{NS}/web"),
        format!("Job/{NS}/migrate"),
    ];
    for pair in order.windows(2) {
        assert!(created.at(&pair[0]).await < created.at(&pair[1]).await, "{} before {}", pair[0], pair[1]);
    }
    let (plain, migrate) =
        (created.at(&format!("Job/{NS}/plain")).await, created.at(&format!("Job/{NS}/migrate")).await);
    assert!(plain < migrate, "a post hook after the main phase");
    agent.stop().await;
}
