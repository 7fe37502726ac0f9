//! Rollouts across a fleet of ten simulated clusters in one environment, with a real
//! `convoy-hub` process and an agent per cluster: waves open in order, soak holds the next wave,
//! a canary whose Deployment never becomes available pauses the rollout while the later
//! clusters keep the old revision, pause/resume/abort, and a hub killed mid-rollout resumes
//! where it was without re-sending anything.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use convoy_e2e::fleet_repo::{self, FleetRepo};
use convoy_e2e::harness::{HubProcess, TestCa, eventually, run_agents, workspace_binary};
use convoy_shared::identity::{Identity, Role};
use convoy_shared::proto::{Health, ListClustersRequest, RolloutActionRequest, RolloutInfo, RolloutStatusRequest};
use kubesim::SimFleet;
use tokio_util::sync::CancellationToken;

const CANARY: &str = "canary-1";
const EU: [&str; 4] = ["eu-1", "eu-2", "eu-3", "eu-4"];
const US: [&str; 5] = ["us-1", "us-2", "us-3", "us-4", "us-5"];

fn all_clusters() -> Vec<&'static str> {
    std::iter::once(CANARY).chain(EU).chain(US).collect()
}

const FLEET: &str = "apiVersion: convoy.dev/v1
kind: Fleet
spec:
  environments:
  - name: prod
    branch: main
    rollout:
      waves:
      - {name: canary, clusterSelector: {matchLabels: {tier: canary}}}
      - {name: eu, clusterSelector: {matchLabels: {region: eu}}, maxUnavailable: 50%}
      - {name: rest}
      soak: 2s
      failureThreshold: 1
";

/// The fleet: one environment of ten clusters, app `web` (a namespace, a ConfigMap and a
/// Deployment running `image`).
fn fleet(dir: &Path) -> FleetRepo {
    let repo = FleetRepo::init(dir);
    repo.write("convoy.yaml", FLEET);
    repo.write(
        &format!("clusters/{CANARY}.yaml"),
        &fleet_repo::cluster_yaml(CANARY, "prod", &[("tier", "canary"), ("region", "eu")]),
    );
    for name in EU {
        repo.write(&format!("clusters/{name}.yaml"), &fleet_repo::cluster_yaml(name, "prod", &[("region", "eu")]));
    }
    for name in US {
        repo.write(&format!("clusters/{name}.yaml"), &fleet_repo::cluster_yaml(name, "prod", &[("region", "us")]));
    }
    repo.write("apps/web/app.yaml", &fleet_repo::app_yaml("web", "web", &[]));
    repo.write("apps/web/base/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n");
    repo.write(
        "apps/web/base/kustomization.yaml",
        &fleet_repo::kustomization_yaml(&["namespace.yaml", "config.yaml", "deploy.yaml"], &[]),
    );
    release(&repo, "v1", "registry.example/web:1.0");
    repo
}

/// Writes app `web` at `version` running `image`, and commits it.
fn release(repo: &FleetRepo, version: &str, image: &str) -> String {
    repo.write("apps/web/base/config.yaml", &fleet_repo::configmap_yaml("web-config", &[("version", version)]));
    let deploy = fleet_repo::deployment_yaml("web", 1).replace("registry.example/web:1.0", image);
    repo.write("apps/web/base/deploy.yaml", &deploy);
    repo.commit(version)
}

/// Each cluster's assigned revision and whether it applied it healthily.
async fn fleet_state(ca: &TestCa, hub: &str) -> BTreeMap<String, (String, bool)> {
    let Ok(mut cli) = tokio::time::timeout(Duration::from_secs(5), ca.cli(hub, Role::Viewer)).await else {
        return BTreeMap::new();
    };
    let Ok(reply) = cli.list_clusters(ListClustersRequest {}).await else { return BTreeMap::new() };
    let clusters = reply.into_inner().clusters;
    clusters
        .into_iter()
        .map(|c| {
            let healthy = c.in_sync && c.health == Health::Healthy as i32;
            (c.name, (c.assigned_revision, healthy))
        })
        .collect()
}

async fn rollout(ca: &TestCa, hub: &str) -> Option<RolloutInfo> {
    let mut cli = ca.cli(hub, Role::Viewer).await;
    let request = RolloutStatusRequest { environment: "prod".into() };
    cli.rollout_status(request).await.ok()?.into_inner().rollouts.into_iter().next()
}

async fn complete(ca: &TestCa, hub: &str, revision: &str) {
    eventually(&format!("the rollout of {revision} complete"), || async {
        rollout(ca, hub).await.filter(|r| r.revision == revision && r.phase == "complete").map(|_| ())
    })
    .await;
}

async fn act(ca: &TestCa, hub: &str, action: &str) -> String {
    let mut cli = ca.cli(hub, Role::Admin).await;
    let request = RolloutActionRequest {
        environment: "prod".into(),
        action: action.into(),
        app: String::new(),
        ..Default::default()
    };
    cli.rollout_action(request).await.unwrap_or_else(|e| panic!("{action}: {e}")).into_inner().message
}

/// Clusters assigned `revision`.
fn on(state: &BTreeMap<String, (String, bool)>, revision: &str) -> Vec<String> {
    state.iter().filter(|(_, (r, _))| r == revision).map(|(c, _)| c.clone()).collect()
}

async fn all_healthy_on(ca: &TestCa, hub: &str, revision: &str) {
    eventually(&format!("every cluster applied {revision} and healthy"), || async {
        let state = fleet_state(ca, hub).await;
        (state.len() == 10 && state.values().all(|(r, ok)| r == revision && *ok)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_soak_failures_actions_and_a_hub_restart() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fleet(dir.path());
    let v1 = repo.head();
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().to_str().unwrap().to_string();
    let ca = TestCa::new();
    let url = repo.url();
    let serve = ["--repo", url.as_str(), "--data", data_path.as_str(), "--poll-seconds", "1"];
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let address = hub.address.clone();

    let names = all_clusters();
    let kube = SimFleet::start(&names).await.unwrap();
    let shutdown = CancellationToken::new();
    let caches = tempfile::tempdir().unwrap();
    let agents = run_agents(&ca, &address, &kube, &names, caches.path(), &shutdown).await;

    // The first revision the hub sees goes everywhere at once: there is nothing to compare with.
    all_healthy_on(&ca, &address, &v1).await;
    complete(&ca, &address, &v1).await;

    // v2: the canary first, then the eu wave two at a time once the canary soaked, then the rest.
    let v2 = release(&repo, "v2", "registry.example/web:2.0");
    let (mut canary_done_at, mut eu_released_at, mut most_eu_in_flight) = (None, None, 0);
    let mut order: Vec<String> = Vec::new();
    let deadline = Instant::now() + kubesim::poll::HANG_GUARD;
    loop {
        let state = fleet_state(&ca, &address).await;
        for cluster in on(&state, &v2) {
            if !order.contains(&cluster) {
                order.push(cluster);
            }
        }
        if canary_done_at.is_none() && state.get(CANARY).is_some_and(|(r, ok)| *r == v2 && *ok) {
            canary_done_at = Some(Instant::now());
        }
        let eu_in_flight = EU.iter().filter(|c| state.get(**c).is_some_and(|(r, ok)| *r == v2 && !ok)).count();
        most_eu_in_flight = most_eu_in_flight.max(eu_in_flight);
        if eu_released_at.is_none() && EU.iter().any(|c| state.get(*c).is_some_and(|(r, _)| *r == v2)) {
            eu_released_at = Some(Instant::now());
        }
        if state.len() == 10 && state.values().all(|(r, ok)| *r == v2 && *ok) {
            break;
        }
        assert!(Instant::now() < deadline, "v2 did not reach every cluster: {state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(order[0], CANARY, "the canary takes v2 first: {order:?}");
    let eu_positions: Vec<usize> = EU.iter().map(|c| order.iter().position(|o| o == c).unwrap()).collect();
    let us_positions: Vec<usize> = US.iter().map(|c| order.iter().position(|o| o == c).unwrap()).collect();
    assert!(eu_positions.iter().max() < us_positions.iter().min(), "eu before the rest: {order:?}");
    let soaked = eu_released_at.unwrap().duration_since(canary_done_at.unwrap());
    assert!(soaked >= Duration::from_millis(1500), "the eu wave waited out the canary's 2 s soak: {soaked:?}");
    assert!(most_eu_in_flight <= 2, "maxUnavailable 50% of four: {most_eu_in_flight} in flight");
    complete(&ca, &address, &v2).await;

    // v3 runs an image that never becomes available: the canary degrades, the rollout pauses,
    // everyone else keeps v2; abort returns the canary to v2.
    for name in &names {
        kube.cluster(name).unwrap().faults().stick_images("web:broken");
    }
    let v3 = release(&repo, "v3", "registry.example/web:broken");
    let paused = eventually("the rollout of v3 paused", || async {
        rollout(&ca, &address).await.filter(|r| r.revision == v3 && r.phase == "paused")
    })
    .await;
    assert!(paused.reason.contains(CANARY), "{}", paused.reason);
    let state = fleet_state(&ca, &address).await;
    assert_eq!(on(&state, &v3), [CANARY], "only the canary took v3");
    assert_eq!(on(&state, &v2).len(), 9);
    let (cert, key) = ca.certs.leaf_paths(&Identity::User { name: "admin".into(), role: Role::Admin });
    let cli = std::process::Command::new(workspace_binary("convoy"))
        .args(["--hub", &address, "--ca"])
        .arg(ca.certs.ca_cert())
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(["rollout", "status", "prod"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success() && text.contains("prod: paused") && text.contains("canary"), "{text}");
    assert!(act(&ca, &address, "abort").await.starts_with("aborted"));
    eventually("the canary back on v2", || async {
        fleet_state(&ca, &address).await.get(CANARY).filter(|(r, ok)| *r == v2 && *ok).map(|_| ())
    })
    .await;

    // v4 fixes it. Pause after the canary: nothing more is released; resume goes on. The hub is
    // killed mid-rollout and resumes from its store.
    let v4 = release(&repo, "v4", "registry.example/web:4.0");
    eventually("the canary on v4", || async {
        fleet_state(&ca, &address).await.get(CANARY).filter(|(r, _)| *r == v4).map(|_| ())
    })
    .await;
    assert_eq!(act(&ca, &address, "pause").await, "paused");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = fleet_state(&ca, &address).await;
    assert_eq!(on(&state, &v4), [CANARY], "a paused rollout releases no one: {state:?}");

    hub.kill();
    let hub = HubProcess::start_with(&ca.certs.0, &address, "info", &serve);
    let restored = eventually("the rollout restored", || async { rollout(&ca, &address).await }).await;
    assert_eq!((restored.revision.as_str(), restored.phase.as_str()), (v4.as_str(), "paused"));
    eventually("every agent back", || async {
        let state = fleet_state(&ca, &address).await;
        (state.len() == 10 && state.values().all(|(_, ok)| *ok)).then_some(())
    })
    .await;
    let state = fleet_state(&ca, &address).await;
    assert_eq!(on(&state, &v4), [CANARY], "after the restart the held clusters still hold v2: {state:?}");
    assert!(hub.log_lines("sending assignment").is_empty(), "nothing was sent again: every agent held its assignment");

    assert_eq!(act(&ca, &address, "resume").await, "resumed");
    all_healthy_on(&ca, &address, &v4).await;
    complete(&ca, &address, &v4).await;

    shutdown.cancel();
    for agent in agents {
        agent.await.unwrap().unwrap();
    }
}
