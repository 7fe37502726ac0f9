//! The real control plane harness itself: it starts, kubectl reaches it with the admin
//! certificate, and with the stand-in kubelet every workload kind becomes ready, a Job completes,
//! a claim binds, and deleting a namespace finalizes it and collects its objects.

use kubesim::eventually;
use kubesim::kubectl::kubectl_ok;
use kubesim::realkube::RealCluster;

const WORKLOADS: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: work}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: work}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx:1.27}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: work}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: postgres:17}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: work}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: busybox:1.36}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: work}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox:1.36, command: ["true"]}]
"#;

async fn jsonpath(kc: &std::path::Path, what: &[&str], path: &str) -> String {
    let mut args = vec!["-n", "work", "get"];
    args.extend_from_slice(what);
    let out = format!("-o=jsonpath={path}");
    args.push(&out);
    kubectl_ok(kc, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_become_ready_jobs_complete_claims_bind_and_namespaces_finalize() {
    let Some(cluster) = RealCluster::start_if_built("rk1").await.unwrap() else { return };
    let kc = cluster.kubeconfig_path();
    let version = kubectl_ok(kc, &["version", "-o", "json"]).await;
    assert!(version.contains(kubesim::realkube::binaries::kubernetes_version()), "{version}");
    let nodes = kubectl_ok(kc, &["get", "nodes"]).await;
    assert!(nodes.contains(" Ready "), "{nodes}");

    let file = kc.with_file_name("workloads.yaml");
    std::fs::write(&file, WORKLOADS).unwrap();
    kubectl_ok(kc, &["apply", "--server-side", "-f", file.to_str().unwrap()]).await;
    for (what, path, want) in [
        (&["deployment", "web"][..], "{.status.availableReplicas}", "3"),
        (&["statefulset", "db"], "{.status.readyReplicas}", "2"),
        (&["daemonset", "agent"], "{.status.numberReady}", "1"),
        (&["job", "migrate"], "{.status.succeeded}", "1"),
        (&["pvc", "data-db-0"], "{.status.phase}", "Bound"),
    ] {
        eventually(&format!("{what:?} {path} = {want}"), || async {
            (jsonpath(kc, what, path).await == want).then_some(())
        })
        .await;
    }

    kubectl_ok(kc, &["delete", "namespace", "work", "--wait=false"]).await;
    eventually("namespace work finalized and gone", || async {
        let out = kubectl_ok(kc, &["get", "namespaces", "-o", "name"]).await;
        (!out.contains("namespace/work")).then_some(())
    })
    .await;
    let left = kubectl_ok(kc, &["get", "pods,replicasets", "-A", "-o", "name"]).await;
    assert!(!left.contains("web-"), "garbage collection left {left}");
}
