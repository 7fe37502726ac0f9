//! `bench_gate`: a failing metric gate → every wave-1 cluster back on the previous revision, in
//! seconds, on a local fleet like the sandbox's (a `convoy-hub` process, ten simulated clusters
//! with an agent each, wave 1 of four), against Debian's Prometheus scraping a test exporter
//! every second and the agents querying it every second. The clock starts when the exporter's
//! error ratio turns bad, after wave 1 applied the new revision; it stops when all four are
//! assigned the previous one again and have applied it. Three runs, each on a fresh fleet.
//!
//! Run: `bash e2e/bench.sh gate`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use convoy_e2e::fleet_repo::{self, FleetRepo};
use convoy_e2e::harness::{LocalFleet, TestCa, free_port};
use convoy_shared::identity::Role;
use convoy_shared::proto::ListClustersRequest;

const WAVE_1: [&str; 4] = ["canary-1", "canary-2", "canary-3", "canary-4"];
const REST: [&str; 6] = ["eu-1", "eu-2", "eu-3", "eu-4", "eu-5", "eu-6"];

/// Whether every cluster of `clusters` is assigned `revision` and applied it.
async fn on(ca: &TestCa, hub: &str, clusters: &[&str], revision: &str) -> bool {
    let Ok(reply) = ca.cli(hub, Role::Viewer).await.list_clusters(ListClustersRequest {}).await else { return false };
    let listed = reply.into_inner().clusters;
    clusters.iter().all(|name| listed.iter().any(|c| c.name == *name && c.assigned_revision == revision && c.in_sync))
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One run: seconds from the ratio turning bad to wave 1 back on the previous revision.
async fn run(prometheus_port: u16, ratio: &Arc<Mutex<f64>>) -> Duration {
    *ratio.lock().unwrap() = 0.0;
    let dir = tempfile::tempdir().expect("tmp");
    let repo = FleetRepo::init(dir.path());
    let prometheus = format!("127.0.0.1:{prometheus_port}");
    repo.write("convoy.yaml", &fleet_repo::gated_fleet_yaml(&prometheus, "agent", "10m", 0));
    for name in WAVE_1 {
        repo.write(&format!("clusters/{name}.yaml"), &fleet_repo::cluster_yaml(name, "prod", &[("tier", "canary")]));
    }
    for name in REST {
        repo.write(&format!("clusters/{name}.yaml"), &fleet_repo::cluster_yaml(name, "prod", &[("tier", "main")]));
    }
    fleet_repo::web_config_app(&repo);
    let v1 = fleet_repo::release_web(&repo, "v1");
    let ca = TestCa::new();
    let names: Vec<&str> = WAVE_1.iter().chain(&REST).copied().collect();
    let local = LocalFleet::start(&ca, &repo.url(), &names).await;
    let hub = local.hub.address.clone();
    until("v1 everywhere", async || on(&ca, &hub, &names, &v1).await).await;
    let v2 = fleet_repo::release_web(&repo, "v2");
    until("wave 1 on v2", async || on(&ca, &hub, &WAVE_1, &v2).await).await;
    let started = Instant::now();
    *ratio.lock().unwrap() = 0.5;
    until("wave 1 back on v1", async || on(&ca, &hub, &WAVE_1, &v1).await).await;
    let took = started.elapsed();
    assert!(on(&ca, &hub, &REST, &v1).await, "the rest never left v1");
    local.stop().await;
    took
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    convoy_shared::install_crypto_provider();
    let binary = convoy_e2e::prometheus::binary().expect("Debian's prometheus (bash e2e/bench.sh installs it)");
    let ratio = Arc::new(Mutex::new(0.0));
    let target = convoy_e2e::prometheus::exporter(ratio.clone()).await;
    let (scratch, port) = (tempfile::tempdir().expect("tmp"), free_port());
    let _prometheus = convoy_e2e::prometheus::start(&binary, scratch.path(), &target, port);
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(run(port, &ratio).await);
    }
    runs.sort();
    println!("bench_gate (release build; Prometheus scrapes every 1 s, agents query every 1 s, failureLimit 0)");
    println!(
        "  failing gate → all 4 wave-1 clusters back on the previous revision and applied: median {:.2} s (min {:.2}, max {:.2}); the other 6 never left it",
        runs[1].as_secs_f64(),
        runs[0].as_secs_f64(),
        runs[2].as_secs_f64()
    );
    println!(
        "  (the floor is one scrape and one query interval: about 1-2 s of it is Prometheus and the agent's wait)"
    );
}
