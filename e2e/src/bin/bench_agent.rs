//! `bench_agent`: the agent's figures against kubesim, with a peer measured in the same run.
//!
//! - RSS of the `convoy-agent` process (its own process, enforcing a cached assignment with the
//!   hub unreachable) managing 1,000 objects: steady state and peak.
//! - Assignment received → all 200 objects applied (in-process reconciler), vs `kubectl apply
//!   --server-side` of the same 200 objects.
//! - Drift latency, edit → report produced, median and p99 over 100 edits (in-process).
//!
//! Run: `cargo build --release -p convoy-agent -p convoy-e2e && target/release/bench_agent`.

use std::time::{Duration, Instant};

use convoy_agent::testing::{self as fx, InProcessAgent, NS};
use convoy_e2e::bench::{kubectl_apply, ms, peak_rss_kib, percentile, rss_kib};
use convoy_e2e::harness::{Process, agent_command};
use convoy_shared::identity::Identity;
use convoy_shared::model::{Assignment, SyncPolicy};
use convoy_shared::pki::{self, CertDir, LeafRequest};
use kubesim::{SimCluster, SimFleet};
use serde_json::{Value, json};

fn managed_count(cluster: &SimCluster, name: &str) -> usize {
    cluster.list_all().iter().filter(|o| o["metadata"]["labels"]["convoy.dev/cluster"] == name).count()
}

async fn wait(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// RSS of the agent binary managing `n` objects, from a cached assignment with no hub.
async fn agent_process_rss(n: usize) -> (u64, u64, u64, Duration) {
    let name = "rss";
    let fleet = SimFleet::start(&[name]).await.expect("kubesim");
    let cluster = fleet.cluster(name).expect("cluster");
    let dir = tempfile::tempdir().expect("tmp");
    let certs = CertDir::new(dir.path().join("certs"));
    let ca = pki::init_ca(&certs, &["localhost".into()], 1).expect("CA");
    let identity = Identity::Cluster(name.into());
    let issued = ca.issue(&LeafRequest::new(identity.clone(), 1)).expect("issue");
    let (cert, key) = certs.write_leaf(&identity, &issued).expect("write leaf");
    let cache = dir.path().join("cache");
    let assignment = fx::assignment(name, "rev-1", vec![fx::infra_app(), fx::shop_app(n, 0, "v1")]);
    convoy_agent::cache::Cache::new(&cache).store_assignment(&assignment).await.expect("seed cache");

    let mut command = agent_command("127.0.0.1:9", &certs, &cert, &key, cluster.kubeconfig_path(), &cache);
    command.args(["--cluster", name]);
    let started = Instant::now();
    let agent = Process::spawn(command);
    let pid = agent.pid();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);
    wait("the agent process to apply everything", || managed_count(cluster, name) >= n).await;
    let applied_in = started.elapsed();
    // Let status settle and the watches go quiet, then sample the steady state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (steady, peak) = (rss_kib(pid), peak_rss_kib(pid));
    drop(agent);
    (before, steady, peak, applied_in)
}

/// kubectl apply --server-side of the same objects: foundation first (a CRD must exist before
/// kubectl can map its custom resources), then the rest.
fn kubectl_peer(cluster: &SimCluster, assignment: &Assignment) -> Duration {
    let dir = cluster.kubeconfig_path().parent().expect("dir").to_path_buf();
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
    kubectl_apply(cluster.kubeconfig_path(), &a);
    kubectl_apply(cluster.kubeconfig_path(), &b);
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    convoy_shared::install_crypto_provider();
    let runs = 5;

    // Assignment received → all 200 objects applied, vs kubectl, each on a fresh cluster.
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    for run in 0..runs {
        let name = format!("apply-{run}");
        let fleet = SimFleet::start(&[name.as_str()]).await.expect("kubesim");
        let cluster = fleet.cluster(&name).expect("cluster");
        let cache = tempfile::tempdir().expect("tmp");
        let agent =
            InProcessAgent::start(fx::test_config(&name, cache.path()), cluster.client().await.expect("client"), None);
        let a = fx::assignment(&name, "rev-1", vec![fx::infra_app(), fx::shop_app(200, 0, "v1")]);
        let started = Instant::now();
        agent.assign(a.clone());
        let digest = a.digest.clone();
        wait("200 objects applied", || agent.last_report().is_some_and(|r| r.digest == digest && r.applied)).await;
        ours.push(started.elapsed());
        agent.stop().await;

        let peer_name = format!("peer-{run}");
        let peer_fleet = SimFleet::start(&[peer_name.as_str()]).await.expect("kubesim");
        let peer_cluster = peer_fleet.cluster(&peer_name).expect("cluster");
        peer.push(kubectl_peer(peer_cluster, &a));
        assert!(peer_cluster.list_all().len() >= 200);
    }
    ours.sort();
    peer.sort();
    let (ours_med, peer_med) = (percentile(&ours, 0.5), percentile(&peer, 0.5));

    // Drift latency: 100 edits of managed fields by another manager → the report naming them.
    let name = "drift";
    let fleet = SimFleet::start(&[name]).await.expect("kubesim");
    let cluster = fleet.cluster(name).expect("cluster");
    let cache = tempfile::tempdir().expect("tmp");
    let agent =
        InProcessAgent::start(fx::test_config(name, cache.path()), cluster.client().await.expect("client"), None);
    let mut shop = fx::shop_app(200, 0, "v1");
    shop.policy = SyncPolicy { prune: true, self_heal: false };
    let a = fx::assignment(name, "rev-1", vec![fx::infra_app(), shop]);
    agent.assign(a.clone());
    let digest = a.digest.clone();
    wait("the drift cluster applied", || agent.last_report().is_some_and(|r| r.digest == digest && r.applied)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::new();
    for i in 0..100 {
        let edit = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i}"), "namespace": NS},
            "data": {"value": format!("edited-{i}")}});
        let started = Instant::now();
        cluster.apply("kubectl-edit", &edit, true).expect("edit");
        let want = json!(format!("edited-{i}"));
        let object = format!("cm-{i}");
        wait("the drift report", || {
            agent.last_report().is_some_and(|r| {
                r.drifts.iter().any(|d| d.object.name == object && d.fields.iter().any(|f| f.live == want))
            })
        })
        .await;
        latencies.push(started.elapsed());
    }
    agent.stop().await;
    latencies.sort();

    let (_early, steady, peak, process_applied) = agent_process_rss(1000).await;

    println!("bench_agent (kubesim, release build, {runs} runs where repeated)");
    println!(
        "  assignment → 200 objects applied (in-process reconciler): median {:.1} ms (min {:.1}, max {:.1})",
        ms(ours_med),
        ms(ours[0]),
        ms(ours[ours.len() - 1])
    );
    println!(
        "  peer: kubectl apply --server-side, same 200 objects:       median {:.1} ms (min {:.1}, max {:.1})",
        ms(peer_med),
        ms(peer[0]),
        ms(peer[peer.len() - 1])
    );
    println!("  ratio agent/kubectl: {:.2}", ours_med.as_secs_f64() / peer_med.as_secs_f64());
    println!(
        "  drift latency, edit → report produced (100 edits): median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies[latencies.len() - 1])
    );
    println!(
        "  convoy-agent process, 1,000 managed objects: RSS idle (converged, watching) {} KiB, peak {} KiB; all applied {:.0} ms after process start",
        steady,
        peak,
        ms(process_applied)
    );
}
