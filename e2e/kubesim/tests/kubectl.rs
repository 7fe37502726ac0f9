//! kubesim fidelity, judged by the real kubectl run as a subprocess against simulated clusters.

mod support;

use kubesim::SimFleet;
use support::{WIDGET_CRD, kubectl, kubectl_ok, manifest, web_app};

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

/// Whether `got` holds every field of `want` with the same value. Objects may have more keys
/// (the defaults kubesim adds); arrays must match element by element; a null in `want` is the
/// client's unset value and matches anything.
fn contains(got: &serde_json::Value, want: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (got, want) {
        (_, Value::Null) => true,
        (Value::Object(g), Value::Object(w)) => w.iter().all(|(k, wv)| g.get(k).is_some_and(|gv| contains(gv, wv))),
        (Value::Array(g), Value::Array(w)) => g.len() == w.len() && g.iter().zip(w).all(|(gv, wv)| contains(gv, wv)),
        (g, w) => g == w,
    }
}

/// Every `kubectl create <generator>` sends its object as Kubernetes protobuf; kubesim decodes it
/// into the same object the client renders with `--dry-run=client -o json` (the oracle).
#[tokio::test(flavor = "multi_thread")]
async fn create_generators_send_protobuf_and_store_what_the_client_renders() {
    let fleet = SimFleet::start(&["k5"]).await.unwrap();
    let kc = fleet.cluster("k5").unwrap().kubeconfig_path();
    let dir = kc.parent().unwrap();
    let bin = dir.join("blob.bin");
    std::fs::write(&bin, [0xff, 0x00, 0xfe, b'k', b'8', b's']).unwrap();
    let tls = rcgen::generate_simple_self_signed(vec!["web.example".to_string()]).unwrap();
    let crt = manifest(kc, "tls.crt", &tls.cert.pem());
    let key = manifest(kc, "tls.key", &tls.signing_key.serialize_pem());
    let file = |flag: &str, p: &std::path::Path| format!("{flag}{}", p.display());

    let cases: Vec<Vec<String>> = [
        vec!["configmap", "cfg", "--from-literal=a=b", "--from-literal=empty="],
        vec!["namespace", "team"],
        vec!["secret", "generic", "s1", "--from-literal=password=hunter2", "--type=example.com/custom"],
        vec![
            "secret",
            "docker-registry",
            "d1",
            "--docker-server=r.example",
            "--docker-username=u",
            "--docker-password=p",
        ],
        vec!["deployment", "web", "--image=nginx:1.27", "--replicas=3", "--port=80"],
        vec!["deployment", "idle", "--image=nginx:1.27", "--replicas=0"],
        vec!["service", "clusterip", "web", "--tcp=80:8080"],
        vec!["service", "nodeport", "np", "--tcp=80:8080", "--node-port=30080"],
        vec!["service", "externalname", "ext", "--external-name=db.example.com"],
        vec!["serviceaccount", "robot"],
        vec!["job", "once", "--image=busybox", "--", "echo", "hi"],
        vec!["cronjob", "nightly", "--image=busybox", "--schedule=*/5 * * * *", "--", "date"],
        vec!["role", "reader", "--verb=get,list,watch", "--resource=pods,configmaps,deployments.apps"],
        vec!["rolebinding", "rb", "--role=reader", "--user=alice", "--serviceaccount=default:robot"],
        vec!["clusterrole", "cr", "--verb=get", "--resource=configmaps", "--resource-name=cfg"],
        vec!["clusterrole", "logs", "--verb=get", "--non-resource-url=/logs/*"],
        vec!["clusterrolebinding", "crb", "--clusterrole=cr", "--group=devs"],
        vec!["quota", "q", "--hard=pods=10,requests.cpu=500m,requests.memory=1Gi", "--scopes=NotBestEffort"],
        vec!["priorityclass", "high", "--value=1000", "--description=important", "--preemption-policy=Never"],
        vec!["poddisruptionbudget", "pdb", "--selector=app=web", "--min-available=50%"],
        vec!["poddisruptionbudget", "pdb2", "--selector=app=web", "--max-unavailable=1"],
        vec!["ingress", "ing", "--class=nginx", "--rule=foo.com/bar*=svc:8080,tls=my-cert", "--annotation=a=b"],
    ]
    .into_iter()
    .map(|c| c.into_iter().map(String::from).collect())
    .chain([
        vec!["configmap".into(), "bin".into(), "--from-literal=a=b".into(), file("--from-file=blob=", &bin)],
        vec!["secret".into(), "tls".into(), "t1".into(), file("--cert=", &crt), file("--key=", &key)],
    ])
    .collect();

    for case in &cases {
        let args: Vec<&str> = case.iter().map(String::as_str).collect();
        // Flags go before a `--` that starts the container's command.
        let (own, command) = args.split_at(args.iter().position(|a| *a == "--").unwrap_or(args.len()));
        let render = [&["create"][..], own, &["--dry-run=client", "-o", "json"], command].concat();
        let want = kubectl_ok(kc, &render).await;
        let want: serde_json::Value = serde_json::from_str(&want).unwrap_or_else(|e| panic!("{args:?}: {e}: {want}"));
        let created = kubectl(kc, &[&["create", "-v=8"][..], &args].concat()).await;
        assert_eq!(created.code, 0, "kubectl create {args:?}: {}", created.stderr);
        assert!(
            created.stderr.contains("Content-Type: application/vnd.kubernetes.protobuf"),
            "kubectl create {args:?} no longer sends protobuf: {}",
            created.stderr
        );
        let kind = want["kind"].as_str().unwrap().to_lowercase();
        let name = want["metadata"]["name"].as_str().unwrap();
        let got = kubectl_ok(kc, &["get", &format!("{kind}/{name}"), "-o", "json"]).await;
        let got: serde_json::Value = serde_json::from_str(&got).unwrap();

        for (field, w) in want.as_object().unwrap() {
            match field.as_str() {
                "metadata" => {
                    // The server may add labels of its own (kubernetes.io/metadata.name).
                    for m in ["labels", "annotations"] {
                        assert!(contains(&got["metadata"][m], &w[m]), "{args:?}: metadata.{m} {}", got["metadata"]);
                    }
                }
                "status" => {}
                // Client-rendered specs gain the defaults kubesim adds; everything rendered stays.
                "spec" => assert!(contains(&got[field], w), "{args:?}: spec\nwant {w:#}\ngot {:#}", got[field]),
                _ => assert_eq!(&got[field], w, "{args:?}: {field}"),
            }
        }
    }
}
