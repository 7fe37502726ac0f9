//! Drift, on kubesim and on a real kube-apiserver: a managed field edited with the real kubectl
//! is reported with its path and manager (and restored when the app self-heals); an autoscaler
//! owning replicas and server-defaulted fields are never drift; a deleted object is reported
//! missing and re-created; fields `ignoreDifferences` leaves to an autoscaler and a VPA-like
//! manager are not drift, not healed and not sent, across a heal, a restart and a new revision;
//! changes made while the API server was away are found when the agent's watch comes back to an
//! expired resourceVersion (410 Gone) and lists again.

use std::path::Path;

use kubesim::kubectl::kubectl_ok;

use convoy_agent::testing::{self as fx, InProcessAgent, NS};
use convoy_shared::model::report::{Drift, Health, Report};
use convoy_shared::model::{Assignment, IgnoreRule, SyncPolicy};
use kubesim::eventually;
use kubesim::scenario::{Backend, Edit, TestCluster};
use serde_json::Value;

const CLUSTER: &str = "d1";

fn assignment(revision: &str) -> Assignment {
    let mut web = fx::app(
        "web",
        &[],
        vec![
            fx::namespace(NS),
            fx::deployment("web", "nginx:1.25", None),
            fx::deployment("api", "nginx:1.25", Some(2)),
            fx::config_map("web-config", "v1"),
        ],
    );
    web.policy = SyncPolicy { prune: true, self_heal: false };
    let mut heal = fx::app(
        "healer",
        &["web"],
        vec![fx::config_map("heal-config", "v1"), fx::deployment("heal", "nginx:1.25", Some(1))],
    );
    heal.policy = SyncPolicy { prune: true, self_heal: true };
    fx::assignment(CLUSTER, revision, vec![web, heal])
}

async fn report_where(agent: &InProcessAgent, what: &str, ok: impl Fn(&Report) -> bool) -> Report {
    eventually(what, || {
        let r = agent.last_report().filter(|r| ok(r));
        async move { r }
    })
    .await
}

/// Patches an object in NS under the field manager `kubectl-edit`, which the drift must name.
async fn edit_by_hand(kc: &Path, kind: &str, name: &str, patch: &[&str]) {
    let mut args = vec!["-n", NS, "patch", kind, name, "--field-manager=kubectl-edit"];
    args.extend_from_slice(patch);
    kubectl_ok(kc, &args).await;
}

/// An agent with `assignment("r1")` applied and healthy on `cluster`, caching in `cache`, and
/// no drift: server defaults (imagePullPolicy, strategy, clusterIP…) and status are never drift.
async fn settled_agent(cluster: &TestCluster, cache: &Path) -> InProcessAgent {
    let agent = InProcessAgent::start(fx::test_config(CLUSTER, cache), cluster.client().await, None);
    let a = assignment("r1");
    agent.assign(a.clone());
    let settled = report_where(&agent, "everything applied and healthy", |r| {
        r.digest == a.digest && r.applied && r.health() == Health::Healthy
    })
    .await;
    assert!(settled.drifts.is_empty(), "{:?}", settled.drifts);
    agent
}

fn drift_of<'a>(r: &'a Report, name: &str, healed: bool) -> Option<&'a Drift> {
    r.drifts.iter().find(|d| d.object.name == name && d.healed == healed)
}

kubesim::on_both_backends!(
    drift_is_reported_by_field_and_manager_healed_only_when_the_app_says_so,
    ignored_differences_are_not_drift_not_healed_and_not_sent_across_a_resync,
    changes_missed_while_the_api_server_was_away_are_found_after_the_watch_expires,
);

async fn drift_is_reported_by_field_and_manager_healed_only_when_the_app_says_so(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, CLUSTER).await else { return };
    let kc = cluster.kubeconfig_path().to_path_buf();
    let cache = tempfile::tempdir().unwrap();
    let agent = settled_agent(&cluster, cache.path()).await;

    // selfHeal off: kubectl changes the image; the drift is reported and left alone.
    edit_by_hand(
        &kc,
        "deployment",
        "api",
        &["-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","image":"nginx:edited"}]}}}}"#],
    )
    .await;
    let r = report_where(&agent, "the image drift on api", |r| drift_of(r, "api", false).is_some()).await;
    let d = drift_of(&r, "api", false).unwrap();
    assert_eq!(d.app, "web");
    assert!(!d.missing);
    assert_eq!(d.fields.len(), 1, "{:?}", d.fields);
    let f = &d.fields[0];
    assert_eq!(f.path, "spec.template.spec.containers[name=main].image");
    assert_eq!(f.desired, "nginx:1.25");
    assert_eq!(f.live, "nginx:edited");
    assert_eq!(f.manager, "kubectl-edit");
    let live = cluster.get("apps/v1", "Deployment", Some(NS), "api").await.unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:edited",
        "without selfHeal the edit stays"
    );

    // The autoscaler owns replicas of `web` (which leaves replicas unset): never drift. A later
    // edit on another Deployment (same watch stream) proves the scale event was judged.
    cluster.autoscale(NS, "web", 5).await;
    kubectl_ok(&kc, &["-n", NS, "label", "deployment", "api", "team=edited", "--overwrite"]).await;
    edit_by_hand(&kc, "deployment", "api", &["-p", r#"{"metadata":{"labels":{"convoy.dev/app":"stolen"}}}"#]).await;
    let r = report_where(&agent, "the label drift on api", |r| {
        drift_of(r, "api", false).is_some_and(|d| d.fields.iter().any(|f| f.path == "metadata.labels.convoy.dev/app"))
    })
    .await;
    assert!(drift_of(&r, "web", false).is_none(), "replicas owned by the autoscaler are not drift: {:?}", r.drifts);
    assert_eq!(cluster.get("apps/v1", "Deployment", Some(NS), "web").await.unwrap()["spec"]["replicas"], 5);
    let label = r.drifts.iter().flat_map(|d| &d.fields).find(|f| f.path == "metadata.labels.convoy.dev/app").unwrap();
    assert_eq!(label.manager, "kubectl-edit");
    assert!(
        !r.drifts.iter().flat_map(|d| &d.fields).any(|f| f.path.contains("team")),
        "a label convoy-agent never set is not drift"
    );

    // selfHeal on: the edit is undone and the drift recorded as healed.
    edit_by_hand(&kc, "configmap", "heal-config", &["--type=merge", "-p", r#"{"data":{"value":"hacked"}}"#]).await;
    let r =
        report_where(&agent, "the healed drift on heal-config", |r| drift_of(r, "heal-config", true).is_some()).await;
    let healed = drift_of(&r, "heal-config", true).unwrap();
    assert_eq!(healed.fields[0].path, "data.value");
    assert_eq!(healed.fields[0].live, "hacked");
    assert_eq!(healed.fields[0].manager, "kubectl-edit");
    eventually("heal-config restored", || async {
        let v = cluster.get("v1", "ConfigMap", Some(NS), "heal-config").await;
        v.filter(|v| v["data"]["value"] == "v1")
    })
    .await;

    // A deleted object of a self-healing app is reported missing and re-created.
    kubectl_ok(&kc, &["-n", NS, "delete", "deployment", "heal", "--wait=false"]).await;
    let r = report_where(&agent, "the vanished deployment healed", |r| {
        r.drifts.iter().any(|d| d.object.name == "heal" && d.missing && d.healed)
    })
    .await;
    assert!(r.drifts.iter().any(|d| d.object.name == "heal" && d.missing));
    eventually("heal re-created", || cluster.get("apps/v1", "Deployment", Some(NS), "heal")).await;
    // The selfHeal-off drift is still there, untouched.
    let last = agent.last_report().unwrap();
    assert!(drift_of(&last, "api", false).is_some());
    agent.stop().await;
}

/// What an `ignoreDifferences` rule of the app leaves to another manager on the live `web`
/// Deployment: (replicas, the `main` container's cpu limit).
async fn others_fields(cluster: &TestCluster) -> (Value, Value) {
    let live = cluster.get("apps/v1", "Deployment", Some(NS), "web").await.unwrap();
    (
        live["spec"]["replicas"].clone(),
        live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"].clone(),
    )
}

fn scaled_app(image: &str) -> convoy_shared::model::AppAssignment {
    // Git sets web's cpu limit too: the VPA-like manager's value must win over it once set.
    let mut deployment = fx::deployment("web", image, Some(2));
    deployment["spec"]["template"]["spec"]["containers"][0]["resources"] = serde_json::json!({"limits": {"cpu": "1"}});
    let mut web =
        fx::app("web", &[], vec![fx::namespace(NS), deployment, fx::deployment("solo", "nginx:1.25", Some(3))]);
    web.policy = SyncPolicy { prune: true, self_heal: true };
    let rule = |json: Value| serde_json::from_value::<IgnoreRule>(json).unwrap();
    web.ignore_differences = vec![
        rule(serde_json::json!({"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]})),
        rule(serde_json::json!({"kind": "Deployment", "name": "web", "managedFieldsManagers": ["vpa-recommender"]})),
    ];
    web
}

async fn ignored_differences_are_not_drift_not_healed_and_not_sent_across_a_resync(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, CLUSTER).await else { return };
    let kc = cluster.kubeconfig_path().to_path_buf();
    let cache = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(fx::test_config(CLUSTER, cache.path()), cluster.client().await, None);
    let a = fx::assignment(CLUSTER, "r1", vec![scaled_app("nginx:1.25")]);
    agent.assign(a.clone());
    fx::settled(&agent, &a.digest).await;
    assert_eq!(others_fields(&cluster).await.0, 2, "an object is created with Git's values");

    // An autoscaler scales web; a VPA-like controller sets its cpu limit.
    cluster.autoscale(NS, "web", 5).await;
    let vpa = r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","resources":{"limits":{"cpu":"2"}}}]}}}}"#;
    kubectl_ok(&kc, &["-n", NS, "patch", "deployment", "web", "--field-manager=vpa-recommender", "-p", vpa]).await;
    // A hand edit of the image is drift (web heals itself): the heal puts the image back and
    // leaves the replicas and the limit to their managers.
    edit_by_hand(
        &kc,
        "deployment",
        "web",
        &["-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","image":"nginx:edited"}]}}}}"#],
    )
    .await;
    let r = report_where(&agent, "the image edit healed", |r| drift_of(r, "web", true).is_some()).await;
    let paths: Vec<&str> = r.drifts.iter().flat_map(|d| &d.fields).map(|f| f.path.as_str()).collect();
    assert!(paths.contains(&"spec.template.spec.containers[name=main].image"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains("replicas") || p.contains("resources")), "ignored fields: {paths:?}");
    eventually("the image restored", || async {
        let live = cluster.get("apps/v1", "Deployment", Some(NS), "web").await;
        live.filter(|l| l["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25")
    })
    .await;
    assert_eq!(others_fields(&cluster).await, (Value::from(5), Value::from("2")), "the heal fought no one");
    agent.stop().await;

    // A restart (every object judged afresh, nothing in the index) and a new revision of web.
    let agent = InProcessAgent::start(fx::test_config(CLUSTER, cache.path()), cluster.client().await, None);
    let b = fx::assignment(CLUSTER, "r2", vec![scaled_app("nginx:1.26")]);
    agent.assign(b.clone());
    let r = fx::settled(&agent, &b.digest).await;
    let live = cluster.get("apps/v1", "Deployment", Some(NS), "web").await.unwrap();
    assert_eq!(live["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.26");
    assert_eq!(others_fields(&cluster).await, (Value::from(5), Value::from("2")), "a resync leaves them too");
    assert!(r.drifts.is_empty(), "{:?}", r.drifts);
    // solo's replicas only convoy-agent ever set: kept as they are, not dropped to a default.
    assert_eq!(cluster.get("apps/v1", "Deployment", Some(NS), "solo").await.unwrap()["spec"]["replicas"], 3);
    agent.stop().await;
}

/// Whether a watch of ConfigMaps in NS resuming from `rv` is refused with 410 Gone.
async fn watch_expired(cluster: &TestCluster, rv: &str) -> bool {
    use futures::TryStreamExt as _;
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(cluster.client().await, NS);
    let Ok(stream) = api.watch(&kube::api::WatchParams::default().timeout(5), rv).await else { return false };
    let mut stream = std::pin::pin!(stream);
    match stream.try_next().await {
        Ok(Some(kube::api::WatchEvent::Error(e))) => e.code == 410,
        Err(e) => e.to_string().contains("410") || e.to_string().contains("too old"),
        _ => false,
    }
}

async fn changes_missed_while_the_api_server_was_away_are_found_after_the_watch_expires(backend: Backend) {
    let Some(mut cluster) = TestCluster::start(backend, CLUSTER).await else { return };
    let cache = tempfile::tempdir().unwrap();
    let agent = settled_agent(&cluster, cache.path()).await;
    let uids = |objects: Vec<Value>| -> Vec<(String, Value)> {
        let mut v: Vec<(String, Value)> = objects
            .into_iter()
            .map(|o| {
                let id =
                    format!("{}/{}", o["kind"].as_str().unwrap_or(""), o["metadata"]["name"].as_str().unwrap_or(""));
                (id, o["metadata"]["uid"].clone())
            })
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    let before = uids(cluster.list_labelled("convoy.dev/cluster", CLUSTER).await);
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(cluster.client().await, NS);
    let rv = api.list_metadata(&Default::default()).await.unwrap().metadata.resource_version.unwrap();

    // Behind the agent's back: two hand edits (one app heals itself, one does not) and a delete.
    let edit = |name: &str| Edit::Apply { manager: "kubectl-edit".into(), object: fx::config_map(name, "hacked") };
    let gone = Edit::Delete {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        namespace: Some(NS.into()),
        name: "heal".into(),
    };
    cluster.edit_while_away(vec![edit("web-config"), edit("heal-config"), gone]).await;
    eventually("a watch from before the gap to be refused as expired", || async {
        watch_expired(&cluster, &rv).await.then_some(())
    })
    .await;

    // The agent's watches resume from there too, are refused, list again and find all three.
    let r = report_where(&agent, "every missed change found", |r| {
        drift_of(r, "web-config", false).is_some()
            && drift_of(r, "heal-config", true).is_some()
            && r.drifts.iter().any(|d| d.object.name == "heal" && d.missing && d.healed)
    })
    .await;
    let field = &drift_of(&r, "web-config", false).unwrap().fields[0];
    assert_eq!(field.path, "data.value");
    assert_eq!(field.live, "hacked");
    assert_eq!(field.manager, "kubectl-edit");
    eventually("heal-config restored and heal re-created", || async {
        let restored = cluster.get("v1", "ConfigMap", Some(NS), "heal-config").await?["data"]["value"] == "v1";
        let recreated = cluster.get("apps/v1", "Deployment", Some(NS), "heal").await.is_some();
        (restored && recreated).then_some(())
    })
    .await;
    let live = cluster.get("v1", "ConfigMap", Some(NS), "web-config").await.unwrap();
    assert_eq!(live["data"]["value"], "hacked", "without selfHeal the edit stays");

    // Nothing else was deleted or re-created on the way: only `heal` has a new uid.
    let after = uids(cluster.list_labelled("convoy.dev/cluster", CLUSTER).await);
    let ids = |v: &[(String, Value)]| v.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before));
    for ((id, uid), (_, old)) in after.iter().zip(&before) {
        assert_eq!(uid == old, id != "Deployment/heal", "{id}");
    }
    agent.stop().await;
}
