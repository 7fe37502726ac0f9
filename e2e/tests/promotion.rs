//! Promotion that stays true, end to end on the standard fleet (dev → stage → prod) with an
//! agent per simulated cluster, its environments read from branches named otherwise (dev from
//! `develop`, stage from `staging`, prod from `main`): `convoy envs` shows each environment's
//! verified commit and its branch against the one before; `convoy promote` pushes to the
//! environment's branch, refuses a branch with commits of its own and fast-forwards a clean one
//! to exactly the verified commit; `convoy rollback` pins an environment at its previous
//! revision, holds new commits, and `--release` lets them through. Every command that takes an
//! environment refuses an unknown one with the same words and exit status.

use std::path::Path;

use convoy_e2e::fleet_repo::{self, create_standard_namespaces, standard_fleet_on};
use convoy_e2e::harness::{InProcessHub, TestCa, eventually, run_agents, workspace_binary};
use convoy_shared::identity::{Identity, Role};
use convoy_shared::proto::{EnvironmentInfo, EnvsRequest, ListClustersRequest};
use kubesim::SimFleet;
use tokio_util::sync::CancellationToken;

/// Runs the real `convoy` CLI as admin in `dir`; returns (success, stdout + stderr).
fn convoy(ca: &TestCa, hub: &str, dir: &Path, args: &[&str]) -> (bool, String) {
    let (code, stdout, stderr) = convoy_status(ca, hub, dir, args);
    (code == Some(0), format!("{stdout}{stderr}"))
}

/// `convoy … -o json` in `dir`: its answer, parsed.
fn convoy_json(ca: &TestCa, hub: &str, dir: &Path, args: &[&str]) -> serde_json::Value {
    let (code, stdout, stderr) = convoy_status(ca, hub, dir, &[args, &["-o", "json"]].concat());
    assert_eq!(code, Some(0), "convoy {args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("convoy {args:?} -o json: {e}: {stdout}"))
}

/// Runs the real `convoy` CLI as admin in `dir`; returns (exit status, stdout, stderr).
fn convoy_status(ca: &TestCa, hub: &str, dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let (cert, key) = ca.certs.leaf_paths(&Identity::User { name: "admin".into(), role: Role::Admin });
    let out = std::process::Command::new(workspace_binary("convoy"))
        .args(["--hub", hub, "--ca"])
        .arg(ca.certs.ca_cert())
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run convoy");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

async fn env(ca: &TestCa, hub: &str, name: &str) -> EnvironmentInfo {
    let mut cli = ca.cli(hub, Role::Viewer).await;
    let envs = cli.envs(EnvsRequest {}).await.expect("envs").into_inner().environments;
    envs.into_iter().find(|e| e.name == name).expect("environment")
}

/// The revision each cluster of `environment` is assigned.
async fn assigned(ca: &TestCa, hub: &str, environment: &str) -> Vec<String> {
    let mut cli = ca.cli(hub, Role::Viewer).await;
    let clusters = cli.list_clusters(ListClustersRequest {}).await.expect("clusters").into_inner().clusters;
    clusters.into_iter().filter(|c| c.environment == environment).map(|c| c.assigned_revision).collect()
}

async fn verified(ca: &TestCa, hub: &InProcessHub, name: &str, commit: &str) {
    eventually(&format!("{name} verified at {commit}"), || async {
        (env(ca, &hub.address, name).await.verified_commit == commit).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_moves_the_environments_branch_to_the_verified_commit_refuses_divergence_and_rollback_pins() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet_on(&dir.path().join("fleet"), ["develop", "staging"]);
    let base = repo.head();
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let names = ["dev-1", "stage-1", "prod-eu", "prod-us"];
    let kube = SimFleet::start(&names).await.unwrap();
    for name in names {
        create_standard_namespaces(kube.cluster(name).unwrap());
    }
    let shutdown = CancellationToken::new();
    let caches = tempfile::tempdir().unwrap();
    let agents = run_agents(&ca, &hub.address, &kube, &names, caches.path(), &shutdown).await;
    for name in ["dev", "stage", "prod"] {
        verified(&ca, &hub, name, &base).await;
    }

    // A change on dev, verified there; a hotfix straight into prod that stage lacks.
    repo.write(
        "apps/web/base/config.yaml",
        &fleet_repo::configmap_yaml("web-config", &[("greeting", "hi ${cluster.name}")]),
    );
    let feature = repo.commit("web: friendlier");
    repo.checkout("main");
    repo.write("apps/api/base/config.yaml", &fleet_repo::configmap_yaml("api-config", &[("replicas", "3")]));
    let hotfix = repo.commit("api: hotfix straight into prod");
    repo.checkout("develop");
    hub.sync("develop", &feature).await;
    hub.sync("main", &hotfix).await;
    verified(&ca, &hub, "dev", &feature).await;
    let stage = env(&ca, &hub.address, "stage").await;
    assert_eq!((stage.branch.as_str(), stage.behind), ("staging", 1), "stage lacks dev's change");
    let prod = env(&ca, &hub.address, "prod").await;
    assert_eq!(prod.env_only.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [hotfix.as_str()]);
    let (_, table) = convoy(&ca, &hub.address, dir.path(), &["envs"]);
    assert!(table.contains("prod has 1 commit(s)") && table.contains("api: hotfix"), "{table}");

    // The user's checkout: a clone of the repository the hub reads.
    let checkout = dir.path().join("checkout");
    let cloned = std::process::Command::new("git")
        .args(["clone", "-q", &repo.dir.display().to_string(), &checkout.display().to_string()])
        .status()
        .unwrap();
    assert!(cloned.success());
    let branches = || repo.git(&["for-each-ref", "--format=%(refname:short)", "refs/heads"]);
    assert_eq!(branches(), "develop\nmain\nstaging");
    let (ok, refused) = convoy(&ca, &hub.address, &checkout, &["promote", "stage", "prod"]);
    assert!(
        !ok && refused.contains("api: hotfix straight into prod") && refused.contains("--allow-divergent"),
        "{refused}"
    );
    assert_eq!(repo.git(&["rev-parse", "main"]), hotfix, "nothing pushed");

    // The gate by environment or by branch, as a script reads it.
    let gate = convoy_json(&ca, &hub.address, dir.path(), &["promote-check", "develop", "staging"]);
    assert_eq!((gate["from"].as_str(), gate["toBranch"].as_str()), (Some("dev"), Some("staging")), "{gate}");
    assert_eq!(gate["commit"].as_str(), Some(feature.as_str()), "{gate}");
    let dry = convoy_json(&ca, &hub.address, &checkout, &["promote", "dev", "stage", "--dry-run"]);
    assert_eq!((dry["move"].as_str(), dry["dryRun"].as_bool()), (Some("fast-forward"), Some(true)), "{dry}");
    assert_eq!(repo.git(&["rev-parse", "staging"]), base, "a dry run pushes nothing");
    let (ok, promoted) = convoy(&ca, &hub.address, &checkout, &["promote", "dev", "stage"]);
    assert!(ok && promoted.contains("branch 'staging' fast-forwarded"), "{promoted}");
    assert_eq!(repo.git(&["rev-parse", "staging"]), feature, "stage's branch is exactly dev's verified commit");
    assert_eq!(branches(), "develop\nmain\nstaging", "no branch named after an environment: {promoted}");
    hub.sync("staging", &feature).await;
    verified(&ca, &hub, "stage", &feature).await;

    // Replacing prod's own commits: what it would drop, with a lease on where main is.
    let dry =
        convoy_json(&ca, &hub.address, &checkout, &["promote", "stage", "prod", "--allow-divergent", "--dry-run"]);
    assert_eq!((dry["move"].as_str(), dry["toBranch"].as_str()), (Some("replace"), Some("main")), "{dry}");
    assert_eq!(dry["dropped"][0]["id"].as_str(), Some(hotfix.as_str()), "{dry}");
    assert!(dry["push"].as_str().unwrap().contains(&format!("--force-with-lease=refs/heads/main:{hotfix}")), "{dry}");
    assert_eq!(repo.git(&["rev-parse", "main"]), hotfix, "a dry run pushes nothing");

    // One answer for a name that is no environment, whichever command is given it.
    let unknown = "unknown environment 'qa': the fleet's environments are dev, stage, prod (convoy.yaml)";
    for args in [
        &["promote", "qa", "prod"][..],
        &["promote-check", "dev", "qa"],
        &["diff", "qa", "prod"],
        &["rollback", "qa"],
        &["rollout", "status", "qa"],
        &["rollout", "pause", "qa"],
    ] {
        let (code, _, stderr) = convoy_status(&ca, &hub.address, &checkout, args);
        assert_eq!(code, Some(2), "convoy {args:?}: {stderr}");
        assert!(stderr.contains(unknown), "convoy {args:?}: {stderr}");
        let (_, stdout, _) = convoy_status(&ca, &hub.address, &checkout, &[args, &["-o", "json"]].concat());
        let answer: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON error");
        assert_eq!(answer["error"]["kind"], "not-found", "{answer}");
    }

    // Roll prod back: pinned at the revision before the hotfix; a new prod commit is held.
    let (ok, pinned) = convoy(&ca, &hub.address, dir.path(), &["rollback", "prod"]);
    assert!(ok, "{pinned}");
    eventually("prod back on its previous revision", || async {
        assigned(&ca, &hub.address, "prod").await.iter().all(|r| *r == base).then_some(())
    })
    .await;
    assert_eq!(env(&ca, &hub.address, "prod").await.pinned, base);
    let (_, table) = convoy(&ca, &hub.address, dir.path(), &["envs"]);
    assert!(table.contains("PINNED"), "{table}");
    repo.checkout("main");
    repo.write("apps/api/base/config.yaml", &fleet_repo::configmap_yaml("api-config", &[("replicas", "4")]));
    let later = repo.commit("api: more");
    repo.checkout("develop");
    hub.sync("main", &later).await;
    assert!(
        assigned(&ca, &hub.address, "prod").await.iter().all(|r| *r == base),
        "a pinned environment holds new commits"
    );
    let (_, history) = convoy(&ca, &hub.address, dir.path(), &["history", "prod-eu"]);
    assert!(history.contains("pinned"), "{history}");

    let (ok, released) = convoy(&ca, &hub.address, dir.path(), &["rollback", "prod", "--release"]);
    assert!(ok, "{released}");
    // prod-us runs no api: the commits since its pin leave its objects (and revision) as they were.
    verified(&ca, &hub, "prod", &later).await;
    assert!(assigned(&ca, &hub.address, "prod").await.contains(&later), "prod-eu runs the head again");

    // Now promote stage over prod's own commits, for real: main moves and prod's clusters run it.
    let (ok, replaced) = convoy(&ca, &hub.address, &checkout, &["promote", "stage", "prod", "--allow-divergent"]);
    assert!(ok && replaced.contains("branch 'main' moved") && replaced.contains("dropping 2 commit(s)"), "{replaced}");
    assert_eq!(repo.git(&["rev-parse", "main"]), feature);
    hub.sync("main", &feature).await;
    verified(&ca, &hub, "prod", &feature).await;
    let prod = env(&ca, &hub.address, "prod").await;
    assert_eq!((prod.behind, prod.env_only.len()), (0, 0), "prod is where stage is: {prod:?}");

    shutdown.cancel();
    for agent in agents {
        agent.await.unwrap().unwrap();
    }
    hub.stop().await;
}
