//! An app with a rollout of its own (`rollout:` in its app.yaml) next to the environment's: one
//! commit changes two apps, and each moves through its own waves. While they differ, a cluster's
//! assignment is composed of each app's part at the commit its rollout gives the cluster; an
//! action on the app's rollout (`--app`) moves only that app, and aborting the environment's
//! rollout leaves the app's where it is; an app that gains a rollout of its own in the commit
//! that changes it rolls that commit out by it, from what it ran. The agents are simulated (fleetsim's in-process links
//! over real mTLS): each applies what it is given at once and reports it Healthy.

use std::time::Duration;

use convoy_e2e::fleet_repo::{FleetRepo, app_yaml, cluster_yaml, configmap_yaml, kustomization_yaml};
use convoy_e2e::fleetsim::{SimConfig, SimFleet, cluster_name};
use convoy_e2e::harness::{InProcessHub, TestCa, eventually};
use convoy_shared::identity::Role;
use convoy_shared::proto::{RolloutActionRequest, RolloutInfo, RolloutStatusRequest};
use convoy_shared::tls::HubAddress;
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "c-";

const FLEET: &str = "apiVersion: convoy.dev/v1
kind: Fleet
spec:
  fleetBranch: main
  environments:
  - name: prod
    branch: main
    rollout:
      waves:
      - {name: canary, clusterSelector: {matchLabels: {tier: canary}}}
      approval: true
";

/// `mon` goes to the us clusters first, then the rest, with a person's approval between.
const MON_ROLLOUT: &str = "  rollout:
    waves:
    - {name: us, clusterSelector: {matchLabels: {region: us}}}
    approval: true
";

/// Writes both apps at `version` and commits.
fn release(repo: &FleetRepo, version: &str) -> String {
    for app in ["web", "mon"] {
        repo.write(
            &format!("apps/{app}/base/config.yaml"),
            &configmap_yaml(&format!("{app}-config"), &[("version", version)]),
        );
    }
    repo.commit(version)
}

/// The fleet: c-00000 the eu canary, c-00001 eu, c-00002 and c-00003 us.
fn fleet(dir: &std::path::Path) -> FleetRepo {
    let repo = FleetRepo::init(dir);
    repo.write("convoy.yaml", FLEET);
    let labels: [&[(&str, &str)]; 4] =
        [&[("tier", "canary"), ("region", "eu")], &[("region", "eu")], &[("region", "us")], &[("region", "us")]];
    for (i, labels) in labels.iter().enumerate() {
        let name = cluster_name(PREFIX, i);
        repo.write(&format!("clusters/{name}.yaml"), &cluster_yaml(&name, "prod", labels));
    }
    repo.write("apps/web/app.yaml", &app_yaml("web", "web", &[]));
    repo.write("apps/mon/app.yaml", &(app_yaml("mon", "mon", &[]) + MON_ROLLOUT));
    for app in ["web", "mon"] {
        repo.write(&format!("apps/{app}/base/kustomization.yaml"), &kustomization_yaml(&["config.yaml"], &[]));
    }
    release(&repo, "v1");
    repo
}

/// The version of `app` that cluster `i` is assigned.
fn version(hub: &InProcessHub, i: usize, app: &str) -> String {
    let objects = hub.objects(&cluster_name(PREFIX, i), app);
    objects.first().and_then(|o| o["data"]["version"].as_str()).unwrap_or_default().to_string()
}

/// Each cluster's (web, mon) versions.
fn versions(hub: &InProcessHub) -> Vec<(String, String)> {
    (0..4).map(|i| (version(hub, i, "web"), version(hub, i, "mon"))).collect()
}

fn pairs(list: [(&str, &str); 4]) -> Vec<(String, String)> {
    list.iter().map(|(w, m)| (w.to_string(), m.to_string())).collect()
}

async fn rollouts(ca: &TestCa, hub: &InProcessHub) -> Vec<RolloutInfo> {
    let mut cli = ca.cli(&hub.address, Role::Viewer).await;
    let request = RolloutStatusRequest { environment: "prod".into() };
    cli.rollout_status(request).await.map(|r| r.into_inner().rollouts).unwrap_or_default()
}

/// Waits until prod's rollouts are at `revision` in the phases given: (app, phase), the
/// environment's (app "") first, then the apps' by name.
async fn phases(ca: &TestCa, hub: &InProcessHub, revision: &str, want: &[(&str, &str)]) -> Vec<RolloutInfo> {
    let want: Vec<(&str, &str, &str)> = want.iter().map(|(app, phase)| (*app, revision, *phase)).collect();
    eventually(&format!("prod's rollouts {want:?}"), || async {
        let rollouts = rollouts(ca, hub).await;
        let seen: Vec<(&str, &str, &str)> =
            rollouts.iter().map(|r| (r.app.as_str(), r.revision.as_str(), r.phase.as_str())).collect();
        (seen == want).then_some(rollouts.clone())
    })
    .await
}

async fn act(ca: &TestCa, hub: &InProcessHub, action: &str, app: &str) -> String {
    let mut cli = ca.cli(&hub.address, Role::Admin).await;
    let request = RolloutActionRequest {
        environment: "prod".into(),
        action: action.into(),
        app: app.into(),
        ..Default::default()
    };
    cli.rollout_action(request).await.unwrap_or_else(|e| panic!("{action} {app}: {e}")).into_inner().message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_with_its_own_rollout_moves_through_its_own_waves() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fleet(dir.path());
    let v1 = repo.head();
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let shutdown = CancellationToken::new();
    let config = SimConfig {
        agents: 4,
        hub: HubAddress::parse(&hub.address, None).unwrap(),
        certs: ca.certs.clone(),
        prefix: PREFIX.into(),
        first: 0,
        heartbeat: Duration::from_secs(1),
        backoff_max: Duration::from_secs(1),
    };
    let agents = SimFleet::start(&config, &shutdown).unwrap();

    // The first revision goes everywhere: nothing to compare with.
    phases(&ca, &hub, &v1, &[("", "complete"), ("mon", "complete")]).await;
    assert_eq!(versions(&hub), pairs([("v1", "v1"); 4]));

    // v2 changes both apps: web takes the environment's waves (the canary, then approval), mon
    // its own (the us clusters, then approval). Clusters run a mix meanwhile.
    let v2 = release(&repo, "v2");
    hub.sync("main", &v2).await;
    let both = phases(&ca, &hub, &v2, &[("", "awaiting-approval"), ("mon", "awaiting-approval")]).await;
    assert_eq!(versions(&hub), pairs([("v2", "v1"), ("v1", "v1"), ("v1", "v2"), ("v1", "v2")]));
    let mon = &both[1];
    let waves: Vec<(&str, u32, u32)> = mon.waves.iter().map(|w| (w.name.as_str(), w.clusters, w.done)).collect();
    assert_eq!(waves, [("us", 2, 2), ("rest", 2, 0)], "mon's waves, with the us clusters applied and healthy");

    // Approving mon's rollout moves mon only; web still waits for its own approval.
    assert!(act(&ca, &hub, "approve", "mon").await.contains("wave rest opened"));
    phases(&ca, &hub, &v2, &[("", "awaiting-approval"), ("mon", "complete")]).await;
    assert_eq!(versions(&hub), pairs([("v2", "v2"), ("v1", "v2"), ("v1", "v2"), ("v1", "v2")]));

    // Aborting the environment's rollout returns web on the canary; mon's finished rollout stays.
    assert!(act(&ca, &hub, "abort", "").await.starts_with("aborted"));
    phases(&ca, &hub, &v2, &[("", "aborted"), ("mon", "complete")]).await;
    assert_eq!(versions(&hub), pairs([("v1", "v2"); 4]));
    let mut admin = ca.cli(&hub.address, Role::Admin).await;
    let unknown = RolloutActionRequest {
        environment: "prod".into(),
        action: "pause".into(),
        app: "web".into(),
        ..Default::default()
    };
    let refused = admin.rollout_action(unknown).await.unwrap_err();
    assert!(refused.message().contains("app 'web' in 'prod' has no rollout"), "{}", refused.message());

    // v3 gives web a rollout of its own (the eu clusters first) in the commit that changes it:
    // web's rollout starts from what web ran (v1 everywhere, after the abort), not at once.
    repo.write("apps/web/app.yaml", &(app_yaml("web", "web", &[]) + &MON_ROLLOUT.replace("region: us", "region: eu")));
    let v3 = release(&repo, "v3");
    hub.sync("main", &v3).await;
    let want = [("", "awaiting-approval"), ("mon", "awaiting-approval"), ("web", "awaiting-approval")];
    phases(&ca, &hub, &v3, &want).await;
    assert_eq!(versions(&hub), pairs([("v3", "v2"), ("v3", "v2"), ("v1", "v3"), ("v1", "v3")]));

    // Every simulated agent applied what it was given last (a composed assignment included).
    eventually("every agent applied its assignment", || async {
        let applied = (0..4).all(|i| {
            let cluster = cluster_name(PREFIX, i);
            let digest = hub.digest(&cluster);
            hub.hub.connections().get(&cluster).is_some_and(|c| c.applied_digest == digest)
        });
        applied.then_some(())
    })
    .await;
    shutdown.cancel();
    agents.join().await;
    hub.stop().await;
}
