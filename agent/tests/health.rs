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
