//! Teams (issue 31), through the real `convoy` and `convoy-hub` binaries: the access policy in
//! `spec.access` of convoy.yaml scopes users by environment and app; an admin issues a member's
//! certificate with `convoy users issue`; answers and watched events are filtered to what a user
//! may view; denials say who, what and which role would allow it; every change and denial is an
//! audit record that survives a hub restart; a broken policy keeps the last good one; a revoked
//! user's open watch closes and their certificate is refused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use convoy_e2e::fleet_repo::{FleetRepo, create_standard_namespaces, fleet_yaml, standard_fleet};
use convoy_e2e::harness::{HubProcess, Process, TestCa, eventually, spawn_agent, workspace_binary};
use convoy_shared::identity::{Identity, Role};
use kubesim::SimFleet;
use serde_json::Value;

const POLICY: &str = "  access:
    roles:
    - name: web-deployer
      rules:
      - {environments: [dev, stage], apps: [web], verbs: [view, refresh, rollout, rollback]}
    bindings:
    - {role: web-deployer, groups: [web-team]}
    - {role: viewer, users: [auditor@example.com]}
";

/// convoy.yaml of the standard fleet with `access` appended under `spec`.
fn fleet_with(access: &str) -> String {
    fleet_yaml(&[("dev", "dev"), ("stage", "stage"), ("prod", "main")]) + access
}

/// Runs `convoy --config CONFIG ARGS…`: (succeeded, stdout, stderr).
fn convoy(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(workspace_binary("convoy")).arg("--config").arg(config).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `convoy … -o json` that must succeed.
fn json(config: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (ok, out, err) = convoy(config, &all);
    assert!(ok, "convoy {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("convoy {args:?} printed no JSON ({e}): {out}"))
}

/// `convoy … ` that must fail; returns stderr.
fn refused(config: &Path, args: &[&str]) -> String {
    let (ok, out, err) = convoy(config, args);
    assert!(!ok, "convoy {args:?} should be refused: {out}");
    err
}

fn names(clusters: &Value) -> Vec<String> {
    let mut names: Vec<String> = clusters["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().or(c["cluster"]["name"].as_str()).unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn audit(config: &Path) -> Vec<Value> {
    let (ok, out, err) = convoy(config, &["audit", "-o", "json"]);
    assert!(ok, "convoy audit: {err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn push_policy(repo: &FleetRepo, access: &str, message: &str) -> String {
    repo.checkout("main");
    repo.write("convoy.yaml", &fleet_with(access));
    repo.commit(message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_see_and_do_what_the_policy_in_git_says_and_every_change_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let policy_commit = push_policy(&repo, POLICY, "access: the web team deploys web in dev and stage");
    let data = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let serve = ["--repo", &repo.url(), "--data", data.path().to_str().unwrap(), "--poll-seconds", "1"];
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let address = hub.address.clone();
    let configs = tempfile::tempdir().unwrap();
    let admin =
        ca.config_file(&address, configs.path(), Identity::User { name: "root".into(), role: Role::Admin }, &[]);
    eventually("the policy in force", || async {
        let me = json(&admin, &["whoami"]);
        (me["policyCommit"] == policy_commit.as_str()).then_some(())
    })
    .await;

    // An admin issues the web team's member a certificate; the key never leaves this machine.
    let wendy = configs.path().join("wendy.yaml");
    let issued = json(
        &admin,
        &["users", "issue", "wendy", "--group", "web-team", "--hours", "2", "--out", wendy.to_str().unwrap()],
    );
    assert_eq!(issued["user"], "wendy");
    let auditor = ca.config_file(
        &address,
        configs.path(),
        Identity::User { name: "auditor@example.com".into(), role: Role::Member },
        &[],
    );
    let eve = ca.config_file(
        &address,
        configs.path(),
        Identity::User { name: "eve".into(), role: Role::Member },
        &["strangers"],
    );

    // whoami says who and what.
    let me = json(&wendy, &["whoami"]);
    assert_eq!(
        (me["user"].as_str(), me["groups"][0].as_str(), me["certificateRole"].as_str()),
        (Some("wendy"), Some("web-team"), Some("member"))
    );
    assert_eq!(me["roles"], serde_json::json!(["web-deployer"]));
    assert_eq!(me["may"][0], "view: apps web in environments dev, stage");

    // Answers are filtered to what each may view.
    assert_eq!(names(&json(&wendy, &["clusters"])), ["dev-1", "stage-1"]);
    assert_eq!(names(&json(&auditor, &["clusters"])), ["dev-1", "prod-eu", "prod-us", "stage-1"]);
    assert!(names(&json(&eve, &["clusters"])).is_empty(), "eve's groups hold no role");
    let status = json(&wendy, &["status", "dev-1"]);
    let apps: Vec<&str> =
        status["clusters"][0]["apps"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(apps, ["web"], "api runs on dev-1 too, but is not the web team's");
    let envs: Vec<String> = json(&wendy, &["envs"])["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(envs, ["dev", "stage"]);

    // Denials say who, what, and which role would allow it.
    let denied = refused(&wendy, &["rollback", "prod"]);
    assert!(
        denied.contains("user 'wendy' (web-team) may not rollback environment 'prod' (every app)")
            && denied.contains("role 'admin' would allow it"),
        "{denied}"
    );
    let denied = refused(&wendy, &["rollback", "dev"]);
    assert!(
        denied.contains("may not rollback environment 'dev' (every app)"),
        "an environment's pin moves every app: {denied}"
    );
    let denied = refused(&wendy, &["token", "create", "--cluster", "new-1"]);
    assert!(denied.contains("may not tokens the whole fleet"), "{denied}");
    let denied = refused(&eve, &["status", "dev-1"]);
    assert!(
        denied.contains("user 'eve' (strangers) may not view environment 'dev'") && denied.contains("web-deployer"),
        "{denied}"
    );
    let denied = refused(&auditor, &["refresh"]);
    assert!(denied.contains("may not refresh"), "{denied}");
    let denied = refused(&wendy, &["diff", "dev", "stage"]);
    assert!(denied.contains("may not view"), "a diff shows every app: {denied}");
    // Allowed: a refresh (any rule with refresh), and a rollout action on web in dev (which has
    // no rollout: allowed by the policy, then refused by the hub, both recorded).
    let (ok, _, err) = convoy(&wendy, &["refresh"]);
    assert!(ok, "{err}");
    let err = refused(&wendy, &["rollout", "pause", "dev", "--app", "web"]);
    assert!(!err.contains("may not"), "the policy allows it; the hub has no such rollout: {err}");

    // Watched events are filtered too: wendy sees dev-1 and stage-1 connect, not prod's.
    let mut watch = Process::spawn({
        let mut c = Command::new(workspace_binary("convoy"));
        c.arg("--config").arg(&wendy).args(["watch", "-o", "json"]);
        c
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kube = SimFleet::start(&["dev-1", "stage-1", "prod-eu", "prod-us"]).await.unwrap();
    let caches = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    for cluster in kube.clusters() {
        create_standard_namespaces(cluster);
        agents.push(spawn_agent(&ca, &address, cluster, &caches.path().join(cluster.name()), &[]));
    }
    eventually("every agent connected", || async {
        let all = json(&admin, &["clusters"]);
        all["clusters"].as_array().unwrap().iter().all(|c| c["connected"] == true).then_some(())
    })
    .await;
    let events = |watch: &Process| -> Vec<Value> {
        watch.log().iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
    };
    eventually("wendy's watch to show dev-1 and stage-1 connecting", || async {
        let connected: Vec<Value> = events(&watch).into_iter().filter(|e| e["kind"] == "connected").collect();
        let seen = |c: &str| connected.iter().any(|e| e["cluster"] == c);
        (seen("dev-1") && seen("stage-1")).then_some(())
    })
    .await;
    let leaked: Vec<String> = watch.log().into_iter().filter(|l| l.contains("prod-")).collect();
    assert!(leaked.is_empty(), "wendy saw prod's events: {leaked:?}");

    // A revoked user's open watch closes at once, and their certificate is refused.
    let revoked = json(&admin, &["users", "revoke", "wendy"]);
    assert_eq!(revoked["streamsClosed"], 1, "{revoked}");
    let status = watch.wait();
    assert!(status.code().is_some(), "the watch ended");
    let denied = refused(&wendy, &["clusters"]);
    assert!(denied.contains("user 'wendy' was revoked"), "{denied}");

    // A broken policy keeps the last good one, and says so.
    let broken = push_policy(&repo, "  access:\n    bindings:\n    - {role: ghost, users: [eve]}\n", "access: a typo");
    eventually("the broken policy refused", || async {
        let me = json(&auditor, &["whoami"]);
        me["policyError"].as_str().is_some_and(|e| e.contains("'ghost'")).then_some(me)
    })
    .await;
    assert_eq!(json(&auditor, &["whoami"])["policyCommit"], policy_commit.as_str(), "the last good policy stays");
    assert_eq!(names(&json(&auditor, &["clusters"])).len(), 4, "the auditor keeps their view");
    let errors = json(&admin, &["envs"])["errors"].to_string();
    assert!(errors.contains("ghost") && errors.contains("stays in force"), "{errors}");

    // Every change, denial and policy change is in the audit log, which survives a restart.
    let records = audit(&admin);
    let has = |user: &str, verb: &str, result: &str| {
        records
            .iter()
            .any(|r| r["user"] == user && r["verb"] == verb && r["result"].as_str().unwrap_or("").starts_with(result))
    };
    assert!(has("root", "users", "allowed"), "the certificate issued to wendy");
    assert!(has("wendy", "rollback", "denied"));
    assert!(has("wendy", "tokens", "denied"));
    assert!(has("eve", "view", "denied"));
    assert!(
        records.iter().any(|r| r["user"] == "wendy"
            && r["action"] == "Diff"
            && r["result"].as_str().unwrap().starts_with("denied"))
    );
    assert!(has("wendy", "refresh", "allowed"));
    assert!(
        has("wendy", "rollout", "allowed") && has("wendy", "rollout", "failed"),
        "allowed, then refused by the hub"
    );
    assert!(has("root", "users", "allowed") && records.iter().any(|r| r["action"] == "RevokeUser"));
    assert!(records.iter().any(|r| r["verb"] == "policy" && r["target"].as_str().unwrap().contains(&policy_commit)));
    assert!(records.iter().any(|r| r["verb"] == "policy"
        && r["target"].as_str().unwrap().contains(&broken)
        && r["result"].as_str().unwrap().starts_with("failed")));
    let denial = records.iter().find(|r| r["user"] == "wendy" && r["verb"] == "rollback").unwrap();
    assert!(
        denial["source"].as_str().unwrap().starts_with("127.0.0.1:")
            && !denial["requestId"].as_str().unwrap().is_empty()
    );
    assert_eq!(denial["groups"], serde_json::json!(["web-team"]));
    let denied = refused(&auditor, &["audit"]);
    assert!(denied.contains("may not audit"), "{denied}");

    drop(agents);
    hub.kill();
    let _restarted = HubProcess::start_with(&ca.certs.0, &address, "info", &serve);
    let after = audit(&admin);
    assert!(after.len() >= records.len(), "{} records before the restart, {} after", records.len(), after.len());
    assert_eq!(after[..records.len()], records[..], "the same records, in order");
}
