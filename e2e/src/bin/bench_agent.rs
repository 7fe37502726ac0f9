//! `bench_agent`: the agent's figures against kubesim and against a real kube-apiserver (etcd,
//! kube-apiserver, kube-controller-manager from `e2e/realkube`, when built), side by side, with a
//! peer measured in the same run on the same backend.
//!
//! - RSS of the `convoy-agent` process (its own process, enforcing a cached assignment with the
//!   hub unreachable) managing 1,000 objects: steady state and peak, and how long after its
//!   start all 1,000 were applied.
//! - Assignment received → all 200 objects applied (in-process reconciler), vs `kubectl apply
//!   --server-side` of the same 200 objects.
//! - Drift latency, edit → report produced, median and p99 over 100 edits (in-process).
//! - Health rules (issue 32): the same RSS with 20 CEL rules on the app (one judging its
//!   Widgets), and the cost of judging one object by a CEL rule against the built-in kstatus
//!   rules (CPU only, no backend).
//!
//! Run: `bash e2e/bench.sh agent` (builds the release binaries; `bash e2e/realkube/build.sh`
//! first for the kube-apiserver column).

use std::future::Future;
use std::time::{Duration, Instant};

use convoy_agent::testing::{self as fx, InProcessAgent, NS};
use convoy_e2e::bench::{kubectl_apply, ms, peak_rss_kib, percentile, rss_anon_file_kib, rss_kib};
use convoy_e2e::harness::{Process, agent_command};
use convoy_shared::identity::Identity;
use convoy_shared::model::{Assignment, SyncPolicy};
use convoy_shared::pki::{self, CertDir, LeafRequest};
use kubesim::scenario::{Backend, TestCluster};
use serde_json::{Value, json};

const LABEL: &str = "convoy.dev/cluster";

async fn start(backend: Backend, name: &str) -> TestCluster {
    TestCluster::start(backend, name).await.expect("the backend was found built before the run")
}

async fn managed_count(cluster: &TestCluster, name: &str) -> usize {
    cluster.list_labelled(LABEL, name).await.len()
}

/// How often a check of in-process state (kubesim's, or the agent's last report) asks.
const IN_PROCESS: Duration = Duration::from_millis(2);

/// How often a check asks on `backend`: a real API server less often.
fn poll_every(backend: Backend) -> Duration {
    match backend {
        Backend::Kubesim => IN_PROCESS,
        Backend::KubeApiserver => Duration::from_millis(50),
    }
}

/// Polls `check` every `every` until it holds.
async fn wait<F: Future<Output = bool>>(what: &str, every: Duration, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

/// 20 health rules: one for the shop app's Widgets (by their spec, as they have no status),
/// nineteen for kinds it does not have.
fn twenty_rules() -> Vec<convoy_model::HealthRule> {
    let rule = |kind: String, healthy: &str| convoy_model::HealthRule {
        group: "example.com".into(),
        kind,
        healthy: healthy.into(),
        degraded: Some("has(self.status) && has(self.status.phase) && self.status.phase == 'Broken'".into()),
        message: Some("has(self.status) && has(self.status.note) ? self.status.note : ''".into()),
    };
    let mut rules = vec![rule("Widget".into(), "has(self.spec) && self.spec.size >= 0")];
    rules.extend((1..20).map(|i| rule(format!("Gadget{i}"), "has(self.status) && self.status.ready == true")));
    rules
}

/// Nanoseconds per object judged by `rules` (each of `objects` in turn), median of 5 runs.
fn judge_ns(objects: &[Value], rules: &convoy_agent::health::HealthRules) -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..20 {
                for object in objects {
                    std::hint::black_box(convoy_agent::health::object_health(object, rules));
                }
            }
            started.elapsed().as_nanos() as f64 / (20 * objects.len()) as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

/// RSS of the agent binary managing `n` objects (with `rules` on the app), from a cached
/// assignment with no hub.
async fn agent_process_rss(backend: Backend, n: usize, rules: Vec<convoy_model::HealthRule>) -> (Rss, Duration) {
    let name = if rules.is_empty() { "rss" } else { "rss-rules" };
    let cluster = start(backend, name).await;
    let dir = tempfile::tempdir().expect("tmp");
    let certs = CertDir::new(dir.path().join("certs"));
    let ca = pki::init_ca(&certs, &["localhost".into()], 1).expect("CA");
    let identity = Identity::Cluster(name.into());
    let issued = ca.issue(&LeafRequest::new(identity.clone(), 1)).expect("issue");
    let (cert, key) = certs.write_leaf(&identity, &issued).expect("write leaf");
    let cache = dir.path().join("cache");
    let mut shop = fx::shop_app(n, 0, "v1");
    shop.health_rules = rules;
    let assignment = fx::assignment(name, "rev-1", vec![fx::infra_app(), shop]);
    convoy_agent::cache::Cache::new(&cache).store_assignment(&assignment).await.expect("seed cache");

    let mut command = agent_command("127.0.0.1:9", &certs, &cert, &key, cluster.kubeconfig_path(), &cache);
    command.args(["--cluster", name]);
    let started = Instant::now();
    let agent = Process::spawn(command);
    let pid = agent.pid();
    wait("the agent process to apply everything", poll_every(backend), || async {
        managed_count(&cluster, name).await >= n
    })
    .await;
    let applied_in = started.elapsed();
    // Let status settle and the watches go quiet, then sample the steady state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (anon, file) = rss_anon_file_kib(pid);
    let rss = Rss { steady: rss_kib(pid), peak: peak_rss_kib(pid), anon, file };
    drop(agent);
    (rss, applied_in)
}

/// An agent process's resident memory, in KiB: idle, at its peak, and idle split into its own
/// (heap, stacks) and the mapped binary's.
struct Rss {
    steady: u64,
    peak: u64,
    anon: u64,
    file: u64,
}

/// kubectl apply --server-side of the same objects: foundation first (a CRD must exist, and on
/// a real API server be established, before kubectl can map its custom resources), then the rest.
fn kubectl_peer(cluster: &TestCluster, assignment: &Assignment) -> Duration {
    let kubeconfig = cluster.kubeconfig_path();
    let dir = kubeconfig.parent().expect("dir").to_path_buf();
    let (first, rest): (Vec<Value>, Vec<Value>) = assignment
        .objects()
        .map(|(_, o)| o.clone())
        .partition(|o| o["kind"] == "Namespace" || o["kind"] == "CustomResourceDefinition");
    let write = |file: &str, items: Vec<Value>| {
        let path = dir.join(file);
        // A YAML stream of JSON documents (kubesim serves no OpenAPI for `kind: List`).
        let docs: Vec<String> = items.iter().map(Value::to_string).collect();
        std::fs::write(&path, docs.join("\n---\n")).expect("write manifest");
        path
    };
    let (a, b) = (write("peer-1.yaml", first), write("peer-2.yaml", rest));
    let started = Instant::now();
    kubectl_apply(kubeconfig, &a);
    if cluster.sim().is_none() {
        let waited = std::process::Command::new(kubesim::kubectl::kubectl_path())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"])
            .output()
            .expect("kubectl runs");
        assert!(waited.status.success(), "kubectl wait: {}", String::from_utf8_lossy(&waited.stderr));
    }
    kubectl_apply(kubeconfig, &b);
    started.elapsed()
}

/// One backend's figures.
struct Figures {
    ours: Vec<Duration>,
    peer: Vec<Duration>,
    drift: Vec<Duration>,
    rss: Rss,
    process_applied: Duration,
    /// The same with 20 health rules.
    rules_rss: Rss,
}

async fn measure(backend: Backend, runs: usize) -> Figures {
    // Assignment received → all 200 objects applied, vs kubectl, each on a fresh cluster.
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    for run in 0..runs {
        let name = format!("apply-{run}");
        let cluster = start(backend, &name).await;
        let cache = tempfile::tempdir().expect("tmp");
        let agent = InProcessAgent::start(fx::test_config(&name, cache.path()), cluster.client().await, None);
        let a = fx::assignment(&name, "rev-1", vec![fx::infra_app(), fx::shop_app(200, 0, "v1")]);
        let started = Instant::now();
        agent.assign(a.clone());
        let digest = a.digest.clone();
        wait("200 objects applied", poll_every(backend), || {
            let done = agent.last_report().is_some_and(|r| r.digest == digest && r.applied);
            async move { done }
        })
        .await;
        ours.push(started.elapsed());
        agent.stop().await;
        drop(cluster);

        let peer_cluster = start(backend, &format!("peer-{run}")).await;
        peer.push(kubectl_peer(&peer_cluster, &a));
        assert!(peer_cluster.list("v1", "ConfigMap", Some(NS)).await.len() >= 100);
    }
    ours.sort();
    peer.sort();

    // Drift latency: 100 edits of managed fields by another manager → the report naming them.
    let name = "drift";
    let cluster = start(backend, name).await;
    let cache = tempfile::tempdir().expect("tmp");
    let agent = InProcessAgent::start(fx::test_config(name, cache.path()), cluster.client().await, None);
    let mut shop = fx::shop_app(200, 0, "v1");
    shop.policy = SyncPolicy { prune: true, self_heal: false };
    let a = fx::assignment(name, "rev-1", vec![fx::infra_app(), shop]);
    agent.assign(a.clone());
    let digest = a.digest.clone();
    wait("the drift cluster applied", poll_every(backend), || {
        let done = agent.last_report().is_some_and(|r| r.digest == digest && r.applied);
        async move { done }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut drift = Vec::new();
    for i in 0..100 {
        let edit = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i}"), "namespace": NS},
            "data": {"value": format!("edited-{i}")}});
        let started = Instant::now();
        cluster.apply("kubectl-edit", &edit, true).await;
        let want = json!(format!("edited-{i}"));
        let object = format!("cm-{i}");
        wait("the drift report", IN_PROCESS, || {
            let seen = agent.last_report().is_some_and(|r| {
                r.drifts.iter().any(|d| d.object.name == object && d.fields.iter().any(|f| f.live == want))
            });
            async move { seen }
        })
        .await;
        drift.push(started.elapsed());
    }
    agent.stop().await;
    drift.sort();
    drop(cluster);

    let (rss, process_applied) = agent_process_rss(backend, 1000, Vec::new()).await;
    let (rules_rss, _) = agent_process_rss(backend, 1000, twenty_rules()).await;
    Figures { ours, peer, drift, rss, process_applied, rules_rss }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    convoy_shared::install_crypto_provider();
    let runs = 5;
    let mut columns = vec![("kubesim", measure(Backend::Kubesim, runs).await)];
    match kubesim::realkube::binaries::locate() {
        Ok(_) => columns.push(("kube-apiserver", measure(Backend::KubeApiserver, runs).await)),
        Err(missing) => println!("(no kube-apiserver column: {missing})"),
    }
    println!("bench_agent (release build, {runs} runs where repeated; each backend on its own clusters)");
    for (backend, f) in &columns {
        let (ours_med, peer_med) = (percentile(&f.ours, 0.5), percentile(&f.peer, 0.5));
        println!("  [{backend}]");
        println!(
            "    assignment → 200 objects applied (in-process reconciler): median {:.1} ms (min {:.1}, max {:.1})",
            ms(ours_med),
            ms(f.ours[0]),
            ms(f.ours[f.ours.len() - 1])
        );
        println!(
            "    peer: kubectl apply --server-side, same 200 objects:       median {:.1} ms (min {:.1}, max {:.1})",
            ms(peer_med),
            ms(f.peer[0]),
            ms(f.peer[f.peer.len() - 1])
        );
        println!("    ratio agent/kubectl: {:.2}", ours_med.as_secs_f64() / peer_med.as_secs_f64());
        println!(
            "    drift latency, edit → report produced (100 edits): median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(percentile(&f.drift, 0.5)),
            ms(percentile(&f.drift, 0.99)),
            ms(f.drift[f.drift.len() - 1])
        );
        println!(
            "    convoy-agent process, 1,000 managed objects: RSS idle (converged, watching) {} KiB ({} anonymous, {} mapped files), peak {} KiB; all applied {:.0} ms after process start | goal idle <= 20 MiB: {}",
            f.rss.steady,
            f.rss.anon,
            f.rss.file,
            f.rss.peak,
            ms(f.process_applied),
            if f.rss.steady <= 20 * 1024 { "met" } else { "MISSED" }
        );
        println!(
            "    the same with 20 CEL health rules on the app: RSS idle {} KiB, peak {} KiB (ratio idle {:.2})",
            f.rules_rss.steady,
            f.rules_rss.peak,
            f.rules_rss.steady as f64 / f.rss.steady as f64
        );
    }
    // Judging one object: a CEL rule (20 compiled, the first matching) against the built-in
    // kstatus rule for the same objects.
    let widgets: Vec<Value> = (0..1000).map(|i| fx::widget(&format!("w-{i}"), i)).collect();
    let cel = judge_ns(&widgets, &convoy_agent::health::HealthRules::compile(&twenty_rules()));
    let kstatus = judge_ns(&widgets, &convoy_agent::health::HealthRules::default());
    println!(
        "  health of one object, 1,000 Widgets: CEL rule {:.1} µs, built-in kstatus rule {:.2} µs (ratio {:.0}×)",
        cel / 1000.0,
        kstatus / 1000.0,
        cel / kstatus
    );
}
