//! Change windows (issue 32) with a real `convoy-hub` process and an agent per cluster: inside a
//! deny window over prod, a new commit reaches dev but prod's clusters keep what they run;
//! `convoy envs` says which window holds it and until when; `convoy rollout override` lets it
//! through once, recorded in each cluster's history and the audit log; a broken window keeps
//! the last good ones in force and says why.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use convoy_e2e::fleet_repo::{self, FleetRepo, release_web as release};
use convoy_e2e::harness::{LocalFleet, TestCa, eventually, workspace_binary};
use convoy_shared::identity::{Identity, Role};
use convoy_shared::proto::{HistoryRequest, ListClustersRequest};

const CLUSTERS: [(&str, &str); 3] = [("dev-1", "dev"), ("prod-1", "prod"), ("prod-2", "prod")];

/// convoy.yaml: dev and prod both read `main`; `windows` under spec.
fn convoy_yaml(windows: &str) -> String {
    format!(
        "apiVersion: convoy.dev/v1\nkind: Fleet\nspec:\n  environments:\n  - {{name: dev, branch: main}}\n  - {{name: prod, branch: main}}\n{windows}"
    )
}

/// A deny window over prod that opened two minutes ago (UTC) and stays open three hours.
fn freeze_now() -> String {
    let opened = convoy_shared::clock::unix_secs() - 120;
    let (hour, minute) = ((opened / 3600) % 24, (opened / 60) % 60);
    format!(
        "  windows:\n  - {{name: freeze, kind: deny, schedule: \"{minute} {hour} * * *\", duration: 3h, environments: [prod]}}\n"
    )
}

async fn assigned(ca: &TestCa, hub: &str) -> BTreeMap<String, (String, bool)> {
    let Ok(mut cli) = ca.cli(hub, Role::Viewer).await.list_clusters(ListClustersRequest {}).await else {
        return BTreeMap::new();
    };
    let clusters = cli.get_mut().clusters.drain(..);
    clusters.map(|c| (c.name, (c.assigned_revision, c.in_sync))).collect()
}

fn convoy(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(workspace_binary("convoy")).arg("--config").arg(config).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_holds_prod_while_dev_moves_and_an_override_lets_one_commit_through() {
    let dir = tempfile::tempdir().unwrap();
    let repo = FleetRepo::init(dir.path());
    repo.write("convoy.yaml", &convoy_yaml(&freeze_now()));
    for (name, env) in CLUSTERS {
        repo.write(&format!("clusters/{name}.yaml"), &fleet_repo::cluster_yaml(name, env, &[]));
    }
    fleet_repo::web_config_app(&repo);
    let v1 = release(&repo, "v1");
    let ca = TestCa::new();
    let names: Vec<&str> = CLUSTERS.iter().map(|(n, _)| *n).collect();
    let local = LocalFleet::start(&ca, &repo.url(), &names).await;
    let hub = &local.hub;
    let configs = tempfile::tempdir().unwrap();
    let admin =
        ca.config_file(&hub.address, configs.path(), Identity::User { name: "oncall".into(), role: Role::Admin }, &[]);

    // Clusters given nothing yet have nothing to protect: v1 goes everywhere.
    eventually("v1 applied everywhere", || async {
        let state = assigned(&ca, &hub.address).await;
        (state.len() == 3 && state.values().all(|(r, ok)| *r == v1 && *ok)).then_some(())
    })
    .await;

    // v2 inside the freeze: dev takes it, prod keeps v1.
    let v2 = release(&repo, "v2");
    let state = eventually("v2 applied on dev-1", || async {
        let state = assigned(&ca, &hub.address).await;
        (state.get("dev-1") == Some(&(v2.clone(), true))).then_some(state)
    })
    .await;
    assert_eq!((state["prod-1"].0.as_str(), state["prod-2"].0.as_str()), (v1.as_str(), v1.as_str()));
    let (ok, envs) = convoy(&admin, &["envs"]);
    assert!(ok, "{envs}");
    assert!(envs.contains("HELD BY WINDOW freeze") && envs.contains("prod: HELD BY WINDOW freeze until"), "{envs}");
    assert!(envs.contains("convoy rollout override prod --reason"), "{envs}");
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        let state = assigned(&ca, &hub.address).await;
        assert_eq!(state["prod-1"].0, v1, "still held: {state:?}");
    }

    // An override needs a reason, then lets v2 through once.
    let (ok, refused) = convoy(&admin, &["rollout", "override", "prod", "--reason", " "]);
    assert!(!ok && refused.contains("needs a reason"), "{refused}");
    let (ok, through) = convoy(&admin, &["rollout", "override", "prod", "--reason", "fix for INC-42"]);
    assert!(ok && through.contains("goes out despite window freeze"), "{through}");
    eventually("v2 applied on prod", || async {
        let state = assigned(&ca, &hub.address).await;
        (state.values().all(|(r, ok)| *r == v2 && *ok)).then_some(())
    })
    .await;
    let mut cli = ca.cli(&hub.address, Role::Viewer).await;
    let history = cli.history(HistoryRequest { cluster: "prod-1".into(), limit: 20 }).await.unwrap().into_inner();
    let noted = history.entries.iter().find(|e| e.event == "override").expect("the override in prod-1's history");
    assert_eq!(noted.revision, v2);
    assert!(noted.detail.contains("oncall") && noted.detail.contains("fix for INC-42"), "{noted:?}");
    let (_, audit) = convoy(&admin, &["audit", "--user", "oncall", "-o", "json"]);
    assert!(audit.contains("\"RolloutAction\"") && audit.contains("override: fix for INC-42"), "{audit}");

    // The next commit is held again; a broken window keeps the freeze in force and says why.
    repo.write(
        "convoy.yaml",
        &convoy_yaml("  windows:\n  - {name: freeze, kind: deny, schedule: \"every friday\", duration: 3h}\n"),
    );
    let v3 = release(&repo, "v3");
    eventually("v3 applied on dev-1", || async {
        (assigned(&ca, &hub.address).await.get("dev-1") == Some(&(v3.clone(), true))).then_some(())
    })
    .await;
    assert_eq!(assigned(&ca, &hub.address).await["prod-2"].0, v2, "held again by the last good freeze");
    let (_, envs) = convoy(&admin, &["envs"]);
    assert!(envs.contains("schedule 'every friday' is not a five-field cron expression"), "{envs}");
    assert!(envs.contains("the last change windows that loaded stay in force"), "{envs}");

    local.stop().await;
}
