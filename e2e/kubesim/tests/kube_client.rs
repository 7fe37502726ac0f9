//! kubesim through the unmodified `kube` client: discovery, dynamic CRUD, server-side apply,
//! watchers, status progression, the HPA-like controller and fault injection.

use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    WatchParams,
};
use kube::discovery::Discovery;
use kube::runtime::{WatchStreamExt, watcher};
use kubesim::{ErrorKind, FleetOptions, OutageMode, SimConfig, SimFleet};
use serde_json::{Value, json};
use std::time::Duration;

fn ar(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

fn deploy(name: &str, replicas: i64, extra_label: Option<&str>) -> Value {
    let mut labels = json!({"app": name});
    if let Some(l) = extra_label {
        labels["extra"] = json!(l);
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}})
}

/// Waits for the watcher to report `name` with data value `v`.
async fn wait_for(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Value)>, name: &str, v: &str) {
    let fut = async {
        while let Some((n, val)) = rx.recv().await {
            if n == name && val == v {
                return;
            }
        }
        panic!("watch ended");
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("watcher never reported {name}={v}"));
}

fn status_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls until `f` holds; the guard only turns a hang into a failure, it measures nothing.
async fn eventually<F: FnMut() -> bool>(mut f: F) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition never held");
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_legacy_and_aggregated() {
    let fleet = SimFleet::start(&["d1"]).await.unwrap();
    let client = fleet.cluster("d1").unwrap().client().await.unwrap();
    for d in [
        Discovery::new(client.clone()).run().await.unwrap(),
        Discovery::new(client.clone()).run_aggregated().await.unwrap(),
    ] {
        let (res, caps) =
            d.resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment")).expect("deployments discovered");
        assert_eq!(res.plural, "deployments");
        assert!(caps.supports_operation("patch"));
        assert!(d.has_group("autoscaling"));
        assert!(d.resolve_gvk(&GroupVersionKind::gvk("policy", "v1", "PodDisruptionBudget")).is_some());
    }
    let info = client.apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn ssa_crud_selectors_and_conflicts() {
    let fleet = SimFleet::start(&["c1"]).await.unwrap();
    let cluster = fleet.cluster("c1").unwrap();
    let client = cluster.client().await.unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar("apps", "v1", "Deployment"));
    let agent = PatchParams::apply("convoy-agent");

    for (n, l) in [("a", Some("x")), ("b", None), ("c", Some("y"))] {
        let obj: DynamicObject = serde_json::from_value(deploy(n, 2, l)).unwrap();
        api.patch(n, &agent, &Patch::Apply(&obj)).await.unwrap();
    }
    let got = api.get("a").await.unwrap();
    assert_eq!(got.metadata.generation, Some(1));
    assert!(got.metadata.uid.is_some());
    let mf = got.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("convoy-agent"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // Selectors and paging.
    let names = |l: kube::core::ObjectList<DynamicObject>| -> Vec<String> {
        l.items.into_iter().map(|o| o.metadata.name.unwrap()).collect()
    };
    assert_eq!(names(api.list(&ListParams::default().labels("extra")).await.unwrap()), ["a", "c"]);
    assert_eq!(names(api.list(&ListParams::default().labels("!extra")).await.unwrap()), ["b"]);
    assert_eq!(names(api.list(&ListParams::default().labels("extra notin (x)")).await.unwrap()), ["b", "c"]);
    assert_eq!(names(api.list(&ListParams::default().fields("metadata.name=b")).await.unwrap()), ["b"]);
    let page1 = api.list(&ListParams::default().limit(2)).await.unwrap();
    let token = page1.metadata.continue_.clone().unwrap();
    assert_eq!(names(page1), ["a", "b"]);
    let page2 = api.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap();
    assert_eq!(names(page2), ["c"]);

    // A no-op apply writes nothing; a spec change bumps generation.
    let rv = got.metadata.resource_version.clone();
    let obj: DynamicObject = serde_json::from_value(deploy("a", 2, Some("x"))).unwrap();
    let same = api.patch("a", &agent, &Patch::Apply(&obj)).await.unwrap();
    assert_eq!(same.metadata.resource_version, rv);
    let obj: DynamicObject = serde_json::from_value(deploy("a", 3, Some("x"))).unwrap();
    let bumped = api.patch("a", &agent, &Patch::Apply(&obj)).await.unwrap();
    assert_eq!(bumped.metadata.generation, Some(2));

    // Another manager conflicts, unless forced.
    let obj: DynamicObject = serde_json::from_value(deploy("a", 7, Some("x"))).unwrap();
    let err = api.patch("a", &PatchParams::apply("ops"), &Patch::Apply(&obj)).await.unwrap_err();
    assert_eq!(status_code(&err), 409);
    assert!(err.to_string().contains("conflict with \"convoy-agent\""), "{err}");
    api.patch("a", &PatchParams::apply("ops").force(), &Patch::Apply(&obj)).await.unwrap();
    assert_eq!(cluster.get("apps/v1", "Deployment", Some("default"), "a").unwrap()["spec"]["replicas"], 7);

    // Stale resourceVersion on replace → 409; dry-run stores nothing.
    let mut stale = got.clone();
    stale.data["spec"]["replicas"] = json!(9);
    let err = api.replace("a", &PostParams::default(), &stale).await.unwrap_err();
    assert_eq!(status_code(&err), 409);
    let cms: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar("", "v1", "ConfigMap"));
    let cm: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dry"}, "data": {"k": "v"}}),
    )
    .unwrap();
    let pp = PostParams { dry_run: true, ..Default::default() };
    cms.create(&pp, &cm).await.unwrap();
    assert!(cluster.get("v1", "ConfigMap", Some("default"), "dry").is_none());

    // Errors are real Status objects.
    let err = api.get("nope").await.unwrap_err();
    let kube::Error::Api(s) = &err else { panic!("{err:?}") };
    assert_eq!(s.code, 404);
    assert_eq!(s.reason, "NotFound");
    assert_eq!(s.message, "deployments.apps \"nope\" not found");
    let err = cms
        .create(&PostParams::default(), &{
            let mut c = cm.clone();
            c.metadata.name = Some("c2".into());
            c
        })
        .await;
    assert!(err.is_ok());
    let dup = cms
        .create(&PostParams::default(), &{
            let mut c = cm.clone();
            c.metadata.name = Some("c2".into());
            c
        })
        .await
        .unwrap_err();
    assert_eq!(status_code(&dup), 409);

    // deletecollection honours the selector.
    api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("extra")).await.unwrap();
    assert_eq!(names(api.list(&ListParams::default()).await.unwrap()), ["b"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn patches_record_update_managers() {
    let fleet = SimFleet::start(&["p1"]).await.unwrap();
    let cluster = fleet.cluster("p1").unwrap();
    let client = cluster.client().await.unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar("apps", "v1", "Deployment"));
    let obj: DynamicObject = serde_json::from_value(deploy("w", 1, None)).unwrap();
    api.patch("w", &PatchParams::apply("convoy-agent"), &Patch::Apply(&obj)).await.unwrap();
    // Strategic merge keeps the other container fields; merge patch and JSON patch work too.
    let smp = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "side", "image": "busybox"}]}}}});
    api.patch("w", &PatchParams::default(), &Patch::Strategic(&smp)).await.unwrap();
    api.patch(
        "w",
        &PatchParams { field_manager: Some("editor".into()), ..Default::default() },
        &Patch::Merge(&json!({"metadata": {"labels": {"edited": "yes"}}})),
    )
    .await
    .unwrap();
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/revisionHistoryLimit", "value": 3}])).unwrap();
    api.patch("w", &PatchParams::default(), &Patch::<()>::Json(jp)).await.unwrap();
    let live = cluster.get("apps/v1", "Deployment", Some("default"), "w").unwrap();
    let cs = live["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[1]["imagePullPolicy"], "Always");
    assert_eq!(live["spec"]["revisionHistoryLimit"], 3);
    let managers: Vec<(String, String)> = live["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["manager"].as_str().unwrap().into(), e["operation"].as_str().unwrap().into()))
        .collect();
    assert!(managers.contains(&("convoy-agent".into(), "Apply".into())));
    assert!(managers.contains(&("editor".into(), "Update".into())));
    // No fieldManager: named after the User-Agent, as the API server does.
    assert!(managers.iter().any(|(m, o)| o == "Update" && m != "editor"), "{managers:?}");

    // Writing managedFields explicitly replaces them; `[{}]` resets them, as in Kubernetes.
    api.patch("w", &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"managedFields": [{}]}})))
        .await
        .unwrap();
    let live = cluster.get("apps/v1", "Deployment", Some("default"), "w").unwrap();
    assert!(live["metadata"].get("managedFields").is_none(), "{live}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_field_removed_unless_another_manager_owns_it() {
    let fleet = SimFleet::start(&["f1"]).await.unwrap();
    let cluster = fleet.cluster("f1").unwrap();
    let api: Api<DynamicObject> =
        Api::namespaced_with(cluster.client().await.unwrap(), "default", &ar("apps", "v1", "Deployment"));
    let agent = PatchParams::apply("convoy-agent");
    let mut d = deploy("x", 2, Some("keep"));
    d["metadata"]["labels"]["drop"] = json!("me");
    d["metadata"]["annotations"] = json!({"note": "shared"});
    let obj: DynamicObject = serde_json::from_value(d.clone()).unwrap();
    api.patch("x", &agent, &Patch::Apply(&obj)).await.unwrap();
    // A second manager co-owns the annotation (same value).
    let co: DynamicObject = serde_json::from_value(json!({"apiVersion": "apps/v1",
        "kind": "Deployment", "metadata": {"name": "x", "annotations": {"note": "shared"}}}))
    .unwrap();
    api.patch("x", &PatchParams::apply("other"), &Patch::Apply(&co)).await.unwrap();

    let mut d2 = d.clone();
    d2["metadata"]["labels"].as_object_mut().unwrap().remove("drop");
    d2["metadata"].as_object_mut().unwrap().remove("annotations");
    let obj: DynamicObject = serde_json::from_value(d2).unwrap();
    api.patch("x", &agent, &Patch::Apply(&obj)).await.unwrap();
    let live = cluster.get("apps/v1", "Deployment", Some("default"), "x").unwrap();
    assert!(live["metadata"]["labels"].get("drop").is_none());
    assert_eq!(live["metadata"]["labels"]["extra"], "keep");
    assert_eq!(live["metadata"]["annotations"]["note"], "shared");
    // Defaults survive: nobody owns them, so nobody removes them.
    assert_eq!(live["spec"]["progressDeadlineSeconds"], 600);
}

#[tokio::test(flavor = "multi_thread")]
async fn watcher_sees_changes_and_survives_dropped_watches() {
    let config = SimConfig { bookmark_interval: Duration::from_millis(200), ..Default::default() };
    let fleet = SimFleet::start_with(&["w1"], FleetOptions { dir: None, config }).await.unwrap();
    let cluster = fleet.cluster("w1").unwrap();
    let client = cluster.client().await.unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar("", "v1", "ConfigMap"));
    let cm = |n: &str, v: &str| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": n}, "data": {"v": v}}))
        .unwrap()
    };
    let pp = PatchParams::apply("t");
    api.patch("pre", &pp, &Patch::Apply(&cm("pre", "0"))).await.unwrap();

    for cfg in [watcher::Config::default(), watcher::Config::default().streaming_lists()] {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stream = watcher(api.clone(), cfg).applied_objects();
        let task = tokio::spawn(async move {
            let mut s = std::pin::pin!(stream);
            while let Some(Ok(o)) = s.next().await {
                let _ = tx.send((o.metadata.name.clone().unwrap(), o.data["data"]["v"].clone()));
            }
        });
        wait_for(&mut rx, "pre", "0").await;
        api.patch("live", &pp, &Patch::Apply(&cm("live", "1"))).await.unwrap();
        wait_for(&mut rx, "live", "1").await;
        cluster.faults().drop_watches();
        api.patch("live", &pp, &Patch::Apply(&cm("live", "2"))).await.unwrap();
        wait_for(&mut rx, "live", "2").await;
        task.abort();
        api.delete("live", &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_watch_events_bookmarks_and_gone() {
    let config = SimConfig { event_window: 5, bookmark_interval: Duration::from_millis(100), ..Default::default() };
    let fleet = SimFleet::start_with(&["g1"], FleetOptions { dir: None, config }).await.unwrap();
    let cluster = fleet.cluster("g1").unwrap();
    let api: Api<DynamicObject> =
        Api::namespaced_with(cluster.client().await.unwrap(), "default", &ar("", "v1", "ConfigMap"));
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let stream = api.watch(&WatchParams::default(), &rv).await.unwrap();
    let pp = PatchParams::apply("t");
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1",
        "kind": "ConfigMap", "metadata": {"name": "e"}, "data": {"a": "1"}}))
    .unwrap();
    api.patch("e", &pp, &Patch::Apply(&obj)).await.unwrap();
    api.delete("e", &DeleteParams::default()).await.unwrap();
    let mut s = std::pin::pin!(stream);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev =
            tokio::time::timeout(Duration::from_secs(30), s.try_next()).await.expect("events arrive").unwrap().unwrap();
        seen.push(match ev {
            kube::api::WatchEvent::Added(_) => "ADDED",
            kube::api::WatchEvent::Modified(_) => "MODIFIED",
            kube::api::WatchEvent::Deleted(_) => "DELETED",
            kube::api::WatchEvent::Bookmark(_) => "BOOKMARK",
            kube::api::WatchEvent::Error(_) => "ERROR",
        });
        seen.dedup_by(|a, b| *a == "BOOKMARK" && *b == "BOOKMARK");
    }
    assert!(seen.starts_with(&["ADDED", "DELETED"]) || seen.contains(&"BOOKMARK"), "{seen:?}");
    assert!(seen.contains(&"ADDED") && seen.contains(&"DELETED"), "{seen:?}");

    // Push the window past `rv`: resuming from it is 410 Gone, as from a compacted server.
    for i in 0..10 {
        let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1",
            "kind": "ConfigMap", "metadata": {"name": format!("n{i}")}}))
        .unwrap();
        api.patch(&format!("n{i}"), &pp, &Patch::Apply(&obj)).await.unwrap();
    }
    let stream = api.watch(&WatchParams::default(), &rv).await.unwrap();
    let mut s = std::pin::pin!(stream);
    match s.try_next().await {
        Ok(Some(kube::api::WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        Err(e) => assert!(e.to_string().contains("410") || e.to_string().contains("too old"), "{e}"),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_simulator_and_hpa_like_controller() {
    let config = SimConfig { ready_delay: Duration::from_millis(50), ..Default::default() };
    let fleet = SimFleet::start_with(&["s1"], FleetOptions { dir: None, config }).await.unwrap();
    let cluster = fleet.cluster("s1").unwrap();
    let client = cluster.client().await.unwrap();
    let deps: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar("apps", "v1", "Deployment"));
    let agent = PatchParams::apply("convoy-agent");
    let obj: DynamicObject = serde_json::from_value(deploy("web", 2, None)).unwrap();
    deps.patch("web", &agent, &Patch::Apply(&obj)).await.unwrap();

    let jobs: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar("batch", "v1", "Job"));
    let job: DynamicObject = serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "once"}, "spec": {"template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "busybox"}]}}}}))
    .unwrap();
    jobs.patch("once", &agent, &Patch::Apply(&job)).await.unwrap();
    let pvcs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ar("", "v1", "PersistentVolumeClaim"));
    let pvc: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1",
        "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
    .unwrap();
    pvcs.patch("data", &agent, &Patch::Apply(&pvc)).await.unwrap();

    let get = |k: &str, n: &str| match k {
        "Deployment" => cluster.get("apps/v1", k, Some("default"), n),
        "Job" => cluster.get("batch/v1", k, Some("default"), n),
        _ => cluster.get("v1", k, Some("default"), n),
    };
    eventually(|| get("Deployment", "web").unwrap()["status"]["availableReplicas"] == 2).await;
    eventually(|| get("Job", "once").unwrap()["status"]["succeeded"] == 1).await;
    eventually(|| get("PersistentVolumeClaim", "data").unwrap()["status"]["phase"] == "Bound").await;
    let d = get("Deployment", "web").unwrap();
    assert_eq!(d["status"]["observedGeneration"], 1);
    let conds: Vec<&str> =
        d["status"]["conditions"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(conds, ["Available", "Progressing"]);

    // Spec writes do not touch status; /status writes do not touch spec.
    let status_api = deps
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 9}, "status": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(status_api.data["spec"]["replicas"], 2);

    // The HPA-like controller takes spec.replicas; convoy-agent's next apply conflicts on it.
    let scale = cluster.autoscale("default", "web", 5).unwrap();
    assert_eq!(scale["spec"]["replicas"], 5);
    let d = get("Deployment", "web").unwrap();
    let hpa = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kube-controller-manager" && e["subresource"] == "scale")
        .expect("scale entry")
        .clone();
    assert_eq!(hpa["operation"], "Update");
    assert_eq!(hpa["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    let err = deps.patch("web", &agent, &Patch::Apply(&obj)).await.unwrap_err();
    assert_eq!(status_code(&err), 409);
    assert!(err.to_string().contains("kube-controller-manager"), "{err}");
    eventually(|| get("Deployment", "web").unwrap()["status"]["availableReplicas"] == 5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cascades_namespaces_owners_and_crds() {
    let fleet = SimFleet::start(&["x1"]).await.unwrap();
    let cluster = fleet.cluster("x1").unwrap();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    cluster.apply("t", &ns, false).unwrap();
    let owner = cluster
        .apply(
            "t",
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "owner", "namespace": "team"}}),
            false,
        )
        .unwrap();
    let uid = owner["metadata"]["uid"].as_str().unwrap();
    cluster
        .apply(
            "t",
            &json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "dep", "namespace": "team", "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}}),
            false,
        )
        .unwrap();
    let client = cluster.client().await.unwrap();
    let cms: Api<DynamicObject> = Api::namespaced_with(client.clone(), "team", &ar("", "v1", "ConfigMap"));
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    assert!(cluster.get("v1", "Secret", Some("team"), "dep").is_none(), "dependent collected");

    cluster
        .apply(
            "t",
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "left", "namespace": "team"}}),
            false,
        )
        .unwrap();
    let nss: Api<DynamicObject> = Api::all_with(client.clone(), &ar("", "v1", "Namespace"));
    nss.delete("team", &DeleteParams::default()).await.unwrap();
    eventually(|| cluster.get("v1", "Namespace", None, "team").is_none()).await;
    assert!(cluster.get("v1", "ConfigMap", Some("team"), "left").is_none());

    // CRDs: served once created (Established), gone with their objects once deleted.
    let crd: Value = serde_saphyr::from_str(include_str!("support/widget_crd.yaml")).unwrap();
    cluster.apply("t", &crd, false).unwrap();
    let live = cluster.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, "widgets.example.com").unwrap();
    let conds = live["status"]["conditions"].as_array().unwrap();
    assert!(conds.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
    assert!(conds.iter().any(|c| c["type"] == "NamesAccepted" && c["status"] == "True"));
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ar("example.com", "v1", "Widget"));
    let w: DynamicObject = serde_json::from_value(json!({"apiVersion": "example.com/v1",
        "kind": "Widget", "metadata": {"name": "w"}, "spec": {"n": 1}}))
    .unwrap();
    widgets.patch("w", &PatchParams::apply("t"), &Patch::Apply(&w)).await.unwrap();
    assert_eq!(widgets.list(&ListParams::default()).await.unwrap().items.len(), 1);
    let crds: Api<DynamicObject> =
        Api::all_with(client.clone(), &ar("apiextensions.k8s.io", "v1", "CustomResourceDefinition"));
    crds.delete("widgets.example.com", &DeleteParams::default()).await.unwrap();
    let err = widgets.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(status_code(&err), 404);
    assert!(cluster.list_all().iter().all(|o| o["kind"] != "Widget"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_injection_errors_outages_and_recovery() {
    let fleet = SimFleet::start(&["e1", "e2"]).await.unwrap();
    let cluster = fleet.cluster("e1").unwrap();
    // kube retries 429/503 by default; without retries the injected errors are visible as is.
    let mut cfg = cluster.config().await.unwrap();
    cfg.default_retry = false;
    let no_retry = kube::Client::try_from(cfg).unwrap();
    let api: Api<DynamicObject> = Api::all_with(no_retry, &ar("", "v1", "Namespace"));
    let retrying: Api<DynamicObject> = Api::all_with(cluster.client().await.unwrap(), &ar("", "v1", "Namespace"));
    let other: Api<DynamicObject> =
        Api::all_with(fleet.cluster("e2").unwrap().client().await.unwrap(), &ar("", "v1", "Namespace"));

    cluster.faults().set_error_rate(1.0, ErrorKind::Internal);
    assert_eq!(status_code(&api.get("default").await.unwrap_err()), 500);
    other.get("default").await.expect("faults are per cluster");
    cluster.faults().set_error_rate(1.0, ErrorKind::TooManyRequests);
    let err = api.get("default").await.unwrap_err();
    assert_eq!(status_code(&err), 429);
    cluster.faults().set_error_rate(0.0, ErrorKind::Internal);
    api.get("default").await.unwrap();

    cluster.faults().outage(Duration::from_secs(3600), OutageMode::Unavailable);
    assert_eq!(status_code(&api.get("default").await.unwrap_err()), 503);
    cluster.faults().end_outage();
    api.get("default").await.unwrap();
    // A short outage is ridden out by kube's default retry policy.
    cluster.faults().outage(Duration::from_millis(200), OutageMode::Unavailable);
    retrying.get("default").await.expect("retried past the outage");

    // The admin endpoint (same listener and token) drives the same faults.
    let req =
        http::Request::post("/kubesim/faults").body(br#"{"errorRate": 1.0, "errorKind": "500"}"#.to_vec()).unwrap();
    let _: Value = retrying.clone().into_client().request(req).await.unwrap();
    assert_eq!(status_code(&api.get("default").await.unwrap_err()), 500);
    let req = http::Request::post("/kubesim/faults").body(br#"{"clear": true}"#.to_vec()).unwrap();
    let _: Value = retrying.clone().into_client().request(req).await.unwrap();
    api.get("default").await.unwrap();

    // Added latency still answers.
    cluster.faults().set_latency(Duration::from_millis(20));
    api.get("default").await.unwrap();
    cluster.faults().clear();

    cluster.faults().outage(Duration::from_millis(300), OutageMode::Refuse);
    let err = api.get("default").await.unwrap_err();
    assert!(!matches!(err, kube::Error::Api(_)), "expected a connection error, got {err:?}");
    // The outage ends by itself.
    let mut ok = false;
    for _ in 0..200 {
        if api.get("default").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "cluster recovered after the outage");
}
