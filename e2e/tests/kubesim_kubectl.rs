//! kubesim fidelity, judged by the real kubectl run as a subprocess against simulated clusters.

mod kubesim_support;

use convoy_e2e::kubesim::SimFleet;
use kubesim_support::{WIDGET_CRD, kubectl, kubectl_ok, manifest, web_app};

#[tokio::test(flavor = "multi_thread")]
async fn server_side_apply_get_diff_wait_delete() {
    let fleet = SimFleet::start(&["k1"]).await.unwrap();
    let c = fleet.cluster("k1").unwrap();
    let kc = c.kubeconfig_path();
    let app = manifest(kc, "app.yaml", &web_app(2));
    let app = app.to_str().unwrap();

    let out = kubectl_ok(kc, &["apply", "--server-side", "-f", app]).await;
    assert!(out.contains("deployment.apps/web serverside-applied"), "{out}");
    assert!(out.contains("namespace/web serverside-applied"), "{out}");

    // managedFields in the Kubernetes format, and defaults owned by nobody.
    let yaml = kubectl_ok(kc, &["-n", "web", "get", "deployment", "web", "-o", "yaml", "--show-managed-fields"]).await;
    assert!(yaml.contains("manager: kubectl\n"), "{yaml}");
    assert!(yaml.contains("operation: Apply"), "{yaml}");
    assert!(yaml.contains("k:{\"name\":\"web\"}:"), "{yaml}");
    assert!(yaml.contains("imagePullPolicy: IfNotPresent"), "{yaml}");
    assert!(yaml.contains("progressDeadlineSeconds: 600"), "{yaml}");
    assert!(!yaml.contains("f:imagePullPolicy"), "defaults must not be owned: {yaml}");
    let svc = kubectl_ok(kc, &["-n", "web", "get", "svc", "web", "-o", "yaml"]).await;
    assert!(svc.contains("clusterIP: 10.96."), "{svc}");
    assert!(svc.contains("targetPort: 80"), "{svc}");

    // Label selectors through kubectl's table output.
    let listed = kubectl_ok(kc, &["get", "deploy,svc,cm", "-A", "-l", "app=web,tier in (front)"]).await;
    assert!(listed.contains("deployment.apps/web"), "{listed}");
    assert!(!listed.contains("service/web"), "{listed}");
    let none = kubectl_ok(kc, &["get", "cm", "-n", "web", "-l", "app!=web", "-o", "name"]).await;
    assert!(none.trim().is_empty(), "{none}");

    // diff --server-side: no change → 0, changed replicas → 1 with the change shown.
    let same = kubectl(kc, &["diff", "--server-side", "-f", app]).await;
    assert_eq!(same.code, 0, "{} {}", same.stdout, same.stderr);
    let changed = manifest(kc, "app3.yaml", &web_app(3));
    let d = kubectl(kc, &["diff", "--server-side", "-f", changed.to_str().unwrap()]).await;
    assert_eq!(d.code, 1, "{} {}", d.stdout, d.stderr);
    assert!(d.stdout.contains("+  replicas: 3"), "{}", d.stdout);
    // The diff was a dry run.
    let live = c.get("apps/v1", "Deployment", Some("web"), "web").unwrap();
    assert_eq!(live["spec"]["replicas"], 2);

    kubectl_ok(kc, &["-n", "web", "wait", "--for=condition=Available", "deployment/web", "--timeout=60s"]).await;
    let live = c.get("apps/v1", "Deployment", Some("web"), "web").unwrap();
    assert_eq!(live["status"]["availableReplicas"], 2);
    let rollout = kubectl_ok(kc, &["-n", "web", "rollout", "status", "deployment/web", "--timeout=60s"]).await;
    assert!(rollout.contains("successfully rolled out"), "{rollout}");

    let out = kubectl_ok(kc, &["delete", "-f", app]).await;
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    assert!(c.get("apps/v1", "Deployment", Some("web"), "web").is_none());
    assert!(c.get("v1", "Namespace", None, "web").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn second_manager_conflicts_unless_forced() {
    let fleet = SimFleet::start(&["k2"]).await.unwrap();
    let c = fleet.cluster("k2").unwrap();
    let kc = c.kubeconfig_path();
    let app = manifest(kc, "app.yaml", &web_app(2));
    kubectl_ok(kc, &["apply", "--server-side", "-f", app.to_str().unwrap()]).await;
    let other = manifest(kc, "other.yaml", &web_app(4));
    let other = other.to_str().unwrap();

    let r = kubectl(kc, &["apply", "--server-side", "--field-manager=ops", "-f", other]).await;
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"),
        "{}",
        r.stderr
    );
    kubectl_ok(kc, &["apply", "--server-side", "--field-manager=ops", "--force-conflicts", "-f", other]).await;
    let live = c.get("apps/v1", "Deployment", Some("web"), "web").unwrap();
    assert_eq!(live["spec"]["replicas"], 4);
    let owners: Vec<String> = live["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["fieldsV1"]["f:spec"].get("f:replicas").is_some())
        .map(|e| e["manager"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(owners, vec!["ops".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_resources_and_custom_resources() {
    let fleet = SimFleet::start(&["k3"]).await.unwrap();
    let c = fleet.cluster("k3").unwrap();
    let kc = c.kubeconfig_path();
    let res = kubectl_ok(kc, &["api-resources"]).await;
    for r in [
        "deployments",
        "statefulsets",
        "daemonsets",
        "cronjobs",
        "ingresses",
        "networkpolicies",
        "clusterrolebindings",
        "horizontalpodautoscalers",
        "poddisruptionbudgets",
        "customresourcedefinitions",
        "persistentvolumeclaims",
    ] {
        assert!(res.contains(r), "{r} missing from:\n{res}");
    }

    let crd = manifest(kc, "crd.yaml", WIDGET_CRD);
    kubectl_ok(kc, &["apply", "--server-side", "-f", crd.to_str().unwrap()]).await;
    kubectl_ok(kc, &["wait", "--for=condition=Established", "crd/widgets.example.com"]).await;
    let cr = manifest(
        kc,
        "cr.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\n\
         spec: {size: 3}\n---\napiVersion: example.com/v1\nkind: Widget\n\
         metadata: {name: w2, namespace: default}\nspec: {size: 5}\n",
    );
    kubectl_ok(kc, &["apply", "--server-side", "-f", cr.to_str().unwrap()]).await;
    let listed = kubectl_ok(kc, &["get", "widgets", "-o", "name"]).await;
    assert_eq!(listed.trim(), "widget.example.com/w1\nwidget.example.com/w2");
    let short = kubectl_ok(kc, &["get", "wd", "w2", "-o", "jsonpath={.spec.size}"]).await;
    assert_eq!(short, "5");
    let res = kubectl_ok(kc, &["api-resources", "--api-group=example.com"]).await;
    assert!(res.contains("widgets"), "{res}");

    kubectl_ok(kc, &["delete", "crd", "widgets.example.com"]).await;
    assert!(c.get("example.com/v1", "Widget", Some("default"), "w1").is_none());
    assert!(c.list_all().iter().all(|o| o["kind"] != "Widget"));
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_fields_disappear_unless_co_owned() {
    let fleet = SimFleet::start(&["k4"]).await.unwrap();
    let c = fleet.cluster("k4").unwrap();
    let kc = c.kubeconfig_path();
    let cm = |data: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: default}}\ndata: {data}\n")
    };
    let v1 = manifest(kc, "v1.yaml", &cm("{a: '1', b: '2', c: '3'}"));
    kubectl_ok(kc, &["apply", "--server-side", "-f", v1.to_str().unwrap()]).await;
    // Another manager co-owns c by applying the same value.
    let co = manifest(kc, "co.yaml", &cm("{c: '3'}"));
    kubectl_ok(kc, &["apply", "--server-side", "--field-manager=helper", "-f", co.to_str().unwrap()]).await;
    let v2 = manifest(kc, "v2.yaml", &cm("{a: '1'}"));
    kubectl_ok(kc, &["apply", "--server-side", "-f", v2.to_str().unwrap()]).await;
    let data = kubectl_ok(kc, &["get", "cm", "c", "-o", "jsonpath={.data}"]).await;
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data, serde_json::json!({"a": "1", "c": "3"}));
}
