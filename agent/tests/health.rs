//! The health the agent reports for each built-in kind, on kubesim and on a real kube-apiserver
//! (where kube-controller-manager's controllers and the stand-in kubelet move the status): every
//! workload, claim, Service and CRD reaches Healthy, and the report names each object's health.

use convoy_agent::testing::{self as fx, InProcessAgent, NS};
use convoy_shared::model::report::{Health, Report};
use kubesim::eventually;
use kubesim::scenario::{Backend, TestCluster};
use serde_json::{Value, json};

const CLUSTER: &str = "h1";

fn pod_template(name: &str) -> Value {
    json!({"metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]}})
}

fn statefulset(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": 2, "serviceName": name, "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name),
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
}

fn daemonset(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": pod_template(name)}})
}

kubesim::on_both_backends!(every_built_in_kind_becomes_healthy_and_the_report_says_so_per_object);

async fn every_built_in_kind_becomes_healthy_and_the_report_says_so_per_object(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, CLUSTER).await else { return };
    let cache = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(fx::test_config(CLUSTER, cache.path()), cluster.client().await, None);
    let objects = vec![
        fx::namespace(NS),
        fx::widget_crd(),
        fx::deployment("web", "nginx:1.27", Some(2)),
        fx::service("web"),
        statefulset("db"),
        daemonset("node-agent"),
        fx::job("migrate"),
        fx::pvc("uploads"),
        fx::config_map("settings", "v1"),
    ];
    let kinds: Vec<String> = objects.iter().map(|o| o["kind"].as_str().unwrap_or_default().to_string()).collect();
    let a = fx::assignment(CLUSTER, "rev-1", vec![fx::app("web", &[], objects)]);
    agent.assign(a.clone());
    let report: Report = eventually("every object healthy", || {
        let r = agent.last_report().filter(|r| r.digest == a.digest && r.applied && r.health() == Health::Healthy);
        async move { r }
    })
    .await;
    let app = report.apps.iter().find(|app| app.name == "web").expect("the app's status");
    for kind in &kinds {
        let status = app.objects.iter().find(|o| o.object.kind == *kind);
        let status = status.unwrap_or_else(|| panic!("no status for the {kind}: {:?}", app.objects));
        assert_eq!(status.health, Health::Healthy, "{kind}: {}", status.message);
    }
    // What made them healthy is in the cluster: the claims bound, the Job complete, every replica
    // ready.
    let uploads = cluster.get("v1", "PersistentVolumeClaim", Some(NS), "uploads").await.expect("the claim");
    assert_eq!(uploads["status"]["phase"], "Bound");
    let job = cluster.get("batch/v1", "Job", Some(NS), "migrate").await.expect("the Job");
    assert_eq!(job["status"]["succeeded"], 1, "{}", job["status"]);
    let db = cluster.get("apps/v1", "StatefulSet", Some(NS), "db").await.expect("the StatefulSet");
    assert_eq!(db["status"]["readyReplicas"], 2, "{}", db["status"]);
    agent.stop().await;
}

/// A rule for Widgets: Ready when its controller says so, Degraded when it says Broken.
fn widget_rule(healthy: &str) -> convoy_model::HealthRule {
    convoy_model::HealthRule {
        group: "example.com".into(),
        kind: "Widget".into(),
        healthy: healthy.into(),
        degraded: Some("has(self.status) && self.status.phase == 'Broken'".into()),
        message: Some("has(self.status) && has(self.status.note) ? self.status.note : ''".into()),
    }
}

kubesim::on_both_backends!(an_apps_cel_rule_judges_its_custom_resource_and_the_report_names_it);

async fn an_apps_cel_rule_judges_its_custom_resource_and_the_report_names_it(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, CLUSTER).await else { return };
    let cache = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(fx::test_config(CLUSTER, cache.path()), cluster.client().await, None);
    let objects = vec![fx::namespace(NS), fx::widget_crd(), fx::widget("w1", 3)];
    let mut app = fx::app("web", &[], objects.clone());
    app.health_rules = vec![widget_rule("has(self.status) && self.status.phase == 'Ready'")];
    let a = fx::assignment(CLUSTER, "rev-1", vec![app]);
    agent.assign(a.clone());
    let widget_status = |report: &Report| {
        let app = report.apps.iter().find(|app| app.name == "web")?;
        app.objects.iter().find(|o| o.object.kind == "Widget").cloned()
    };
    let judged = |health: Health, digest: String| {
        let agent = &agent;
        move || {
            let found = agent.last_report().filter(|r| r.digest == digest).and_then(|r| widget_status(&r));
            async move { found.filter(|o| o.health == health) }
        }
    };
    // Its controller has not written a status yet: Progressing, by the app's rule.
    let status = eventually("the Widget judged Progressing", judged(Health::Progressing, a.digest.clone())).await;
    assert_eq!(status.rule, "spec.health: example.com/Widget");
    // The controller (another field manager) reports it Ready, then Broken with a note.
    let controller = |phase: &str, note: &str| {
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "namespace": NS},
            "status": {"phase": phase, "note": note}})
    };
    cluster.apply("widget-controller", &controller("Ready", ""), true).await;
    eventually("the Widget judged Healthy", judged(Health::Healthy, a.digest.clone())).await;
    cluster.apply("widget-controller", &controller("Broken", "disk full"), true).await;
    let status = eventually("the Widget judged Degraded", judged(Health::Degraded, a.digest.clone())).await;
    assert_eq!(status.message, "disk full");
    let report = agent.last_report().unwrap();
    assert_eq!(report.apps[0].health, Health::Degraded, "the app is as bad as its worst object");
    assert!(report.drifts.is_empty(), "the controller's status is not drift: {:?}", report.drifts);

    // A new rule that fails on this object: the Widget is Unknown and the message says why; the
    // objects themselves did not change, yet the new rule judges them.
    let mut app = fx::app("web", &[], objects);
    app.health_rules = vec![widget_rule("self.status.size > 2")];
    let b = fx::assignment(CLUSTER, "rev-2", vec![app]);
    agent.assign(b.clone());
    let status = eventually("the Widget judged Unknown", judged(Health::Unknown, b.digest.clone())).await;
    assert!(status.message.contains("health rule for example.com/Widget: healthy failed"), "{}", status.message);
    agent.stop().await;
}
