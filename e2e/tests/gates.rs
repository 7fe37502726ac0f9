//! Metric gates (issue 32) against a real Prometheus (Debian's `prometheus`, installed by the
//! test script) scraping a test exporter whose error ratio the test sets, with a real
//! `convoy-hub` and an agent per cluster that runs the gate's query: a gate that passes opens
//! the next wave; one that fails rolls the canary back and pins the environment, the failing
//! check and its value in the canary's history; `convoy rollback --release` lifts the pin; with
//! Prometheus down the measurements are inconclusive and the rollout waits.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy_e2e::fleet_repo::{self, FleetRepo, release_web as release};
use convoy_e2e::harness::{LocalFleet, Process, TestCa, eventually, workspace_binary};
use convoy_shared::identity::{Identity, Role};
use convoy_shared::proto::{HistoryRequest, ListClustersRequest, RolloutInfo, RolloutStatusRequest};

const CLUSTERS: [(&str, &str); 3] = [("canary-1", "canary"), ("eu-1", "main"), ("eu-2", "main")];

/// Prometheus scraping the exporter, the gated fleet at v1 applied everywhere, the hub and an
/// agent per cluster.
struct Gated {
    ratio: Arc<Mutex<f64>>,
    prometheus: Option<Process>,
    repo: FleetRepo,
    v1: String,
    ca: TestCa,
    local: LocalFleet,
    _dirs: [tempfile::TempDir; 2],
}

impl Gated {
    /// `None` (said why) without Prometheus.
    async fn start(from: &str) -> Option<Gated> {
        let binary = convoy_e2e::prometheus::binary()?;
        let ratio = Arc::new(Mutex::new(0.0));
        let target = convoy_e2e::prometheus::exporter(ratio.clone()).await;
        let (scratch, port) = (tempfile::tempdir().unwrap(), convoy_e2e::harness::free_port());
        let prometheus = Some(convoy_e2e::prometheus::start(&binary, scratch.path(), &target, port));
        let dir = tempfile::tempdir().unwrap();
        let repo = gated_fleet(dir.path(), port, from);
        let v1 = repo.head();
        let ca = TestCa::new();
        let names: Vec<&str> = CLUSTERS.iter().map(|(n, _)| *n).collect();
        let local = LocalFleet::start(&ca, &repo.url(), &names).await;
        everywhere(&ca, &local.hub.address, &v1).await;
        Some(Gated { ratio, prometheus, repo, v1, ca, local, _dirs: [scratch, dir] })
    }
}

/// The fleet: prod in two waves behind the gate (queried `from` agent or hub), app `web`, v1.
fn gated_fleet(dir: &Path, prometheus_port: u16, from: &str) -> FleetRepo {
    let repo = FleetRepo::init(dir);
    repo.write("convoy.yaml", &fleet_repo::gated_fleet_yaml(&format!("127.0.0.1:{prometheus_port}"), from, "3s", 1));
    for (name, tier) in CLUSTERS {
        repo.write(&format!("clusters/{name}.yaml"), &fleet_repo::cluster_yaml(name, "prod", &[("tier", tier)]));
    }
    fleet_repo::web_config_app(&repo);
    release(&repo, "v1");
    repo
}

async fn assigned(ca: &TestCa, hub: &str) -> BTreeMap<String, (String, bool)> {
    let Ok(mut reply) = ca.cli(hub, Role::Viewer).await.list_clusters(ListClustersRequest {}).await else {
        return BTreeMap::new();
    };
    reply.get_mut().clusters.drain(..).map(|c| (c.name, (c.assigned_revision, c.in_sync))).collect()
}

async fn rollout(ca: &TestCa, hub: &str) -> Option<RolloutInfo> {
    let request = RolloutStatusRequest { environment: "prod".into() };
    let reply = ca.cli(hub, Role::Viewer).await.rollout_status(request).await.ok()?;
    reply.into_inner().rollouts.into_iter().next()
}

async fn everywhere(ca: &TestCa, hub: &str, revision: &str) {
    eventually(&format!("{revision} applied everywhere"), || async {
        let state = assigned(ca, hub).await;
        (state.len() == 3 && state.values().all(|(r, ok)| r == revision && *ok)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_open_waves_roll_back_on_failure_and_wait_when_prometheus_is_down() {
    let Some(mut fleet) = Gated::start("agent").await else { return };
    let (ca, hub, repo, ratio) = (&fleet.ca, &fleet.local.hub, &fleet.repo, fleet.ratio.clone());
    let configs = tempfile::tempdir().unwrap();
    let admin =
        ca.config_file(&hub.address, configs.path(), Identity::User { name: "oncall".into(), role: Role::Admin }, &[]);

    // A gate that passes: the canary's error ratio is 0, the rest opens after the soak.
    let v2 = release(repo, "v2");
    everywhere(ca, &hub.address, &v2).await;
    // The last wave's reports complete it at the rollout's next step.
    eventually("the rollout of v2 complete", || async {
        rollout(ca, &hub.address).await.filter(|r| r.revision == v2 && r.phase == "complete")
    })
    .await;

    // A gate that fails: the canary takes v3, its errors climb, the rollout rolls it back to
    // v2 and pins prod there; the rest never saw v3.
    *ratio.lock().unwrap() = 0.5;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v3 = release(repo, "v3");
    let rolled = eventually("the rollout of v3 rolled back", || async {
        rollout(ca, &hub.address).await.filter(|r| r.revision == v3 && r.phase == "aborted")
    })
    .await;
    assert!(
        rolled.reason.contains("check error-rate failed: result 0.5 on canary-1 does not meet result < 0.01"),
        "{}",
        rolled.reason
    );
    everywhere(ca, &hub.address, &v2).await;
    let envs = convoy_cli(&admin, &["envs"]);
    assert!(envs.contains("PINNED"), "{envs}");
    let mut cli = ca.cli(&hub.address, Role::Viewer).await;
    let history = cli.history(HistoryRequest { cluster: "canary-1".into(), limit: 30 }).await.unwrap().into_inner();
    let noted = history.entries.iter().find(|e| e.event == "rolled back").expect("the rollback in canary-1's history");
    assert!(noted.detail.contains("error-rate") && noted.detail.contains("0.5"), "{noted:?}");
    assert_eq!(noted.revision, v2);

    // Fixed: releasing the pin rolls v3 out again, and the gate passes.
    *ratio.lock().unwrap() = 0.0;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let released = convoy_cli(&admin, &["rollback", "prod", "--release"]);
    assert!(released.contains("released"), "{released}");
    everywhere(ca, &hub.address, &v3).await;

    // Prometheus down: the canary's measurements are inconclusive; the soak ends but the
    // rollout waits, the rest keeps v3.
    drop(fleet.prometheus.take());
    let v4 = release(repo, "v4");
    let waiting = eventually("the rollout of v4 waiting on the gate", || async {
        rollout(ca, &hub.address).await.filter(|r| r.revision == v4 && r.reason.contains("inconclusive on canary-1"))
    })
    .await;
    assert_eq!(waiting.phase, "soaking", "{waiting:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let state = assigned(ca, &hub.address).await;
    assert_eq!((state["canary-1"].0.as_str(), state["eu-1"].0.as_str()), (v4.as_str(), v3.as_str()), "{state:?}");
    assert_eq!(rollout(ca, &hub.address).await.unwrap().phase, "soaking", "inconclusive is never success");
    fleet.local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_the_hub_queries_itself_rolls_back_the_same_way() {
    let Some(fleet) = Gated::start("hub").await else { return };
    let (ca, hub, repo, ratio) = (&fleet.ca, &fleet.local.hub, &fleet.repo, fleet.ratio.clone());

    *ratio.lock().unwrap() = 0.5;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v2 = release(repo, "v2");
    let rolled = eventually("the rollout of v2 rolled back", || async {
        rollout(ca, &hub.address).await.filter(|r| r.revision == v2 && r.phase == "aborted")
    })
    .await;
    assert!(rolled.reason.contains("check error-rate failed: result 0.5 on hub"), "{}", rolled.reason);
    everywhere(ca, &hub.address, &fleet.v1).await;
    fleet.local.stop().await;
}

fn convoy_cli(config: &Path, args: &[&str]) -> String {
    let out = Command::new(workspace_binary("convoy")).arg("--config").arg(config).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}
