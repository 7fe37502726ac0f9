//! The README's main job and the `convoy` CLI, driven as a user would: start `convoy-sandbox`,
//! then ask it things with the `convoy` binary and its config file.

use kubesim::kubectl::kubectl_ok;

use std::path::Path;
use std::process::Command;

use convoy_agent::sops::{self, AgeKeys};
use convoy_e2e::harness::{Process, eventually, scrape_metrics, workspace_binary};

fn convoy(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(workspace_binary("convoy")).args(args).output().expect("run convoy");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn start_sandbox(dir: &Path, extra_args: &[&str]) -> Process {
    let mut command = Command::new(workspace_binary("convoy-sandbox"));
    // Polling off in effect: a push reaches the hub through repo.git's post-receive hook only.
    command.arg("--dir").arg(dir).args(["--listen", "127.0.0.1:0", "--status-seconds", "0", "--poll-seconds", "3600"]);
    command.args(extra_args);
    let sandbox = Process::spawn(command);
    sandbox.wait_for_line("Convoy sandbox ready");
    sandbox
}

/// The HOST:PORT of the `/metrics` the sandbox printed for `who` ("hub", "dev-1 agent").
fn metrics_address(sandbox: &Process, who: &str) -> String {
    let line = sandbox.log_lines(&format!("/metrics ({who})")).pop().unwrap_or_else(|| panic!("no metrics for {who}"));
    line.split("http://").nth(1).and_then(|rest| rest.split("/metrics").next()).expect("an address").to_string()
}

fn json(config: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--config", config];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let (ok, stdout, stderr) = convoy(&all);
    assert!(ok, "convoy {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).expect("JSON output")
}

/// `convoy clusters -o json` as (name, applied revision) of clusters that are connected, in
/// sync with their assignment and healthy; `None` until all four are.
fn settled(config: &str) -> Option<Vec<(String, String)>> {
    let clusters = json(config, &["clusters"]);
    let ready: Vec<(String, String)> = clusters["clusters"]
        .as_array()?
        .iter()
        .filter(|c| c["connected"] == true && c["inSync"] == true && c["health"] == "HEALTHY")
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["appliedRevision"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    (ready.len() == 4).then_some(ready)
}

fn applied(config: &str, cluster: &str) -> String {
    json(config, &["status", cluster])["clusters"][0]["cluster"]["appliedRevision"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `--real-clusters 1`: dev-1 runs on etcd + kube-apiserver + kube-controller-manager, the other
/// three on kubesim, and the fleet behaves the same: everything applied, healthy (the stand-in
/// kubelet makes pods ready), the SOPS Secret decrypted, a push to dev applied.
#[tokio::test]
async fn the_sandbox_runs_dev_1_on_a_real_control_plane() {
    if kubesim::realkube::binaries::find().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sandbox = start_sandbox(dir.path(), &["--real-clusters", "1"]);
    let clusters = sandbox.wait_for_line("(kubeconfigs in ");
    assert!(clusters.contains("dev-1 (kube-apiserver), stage-1, prod-eu, prod-us"), "{clusters}");
    let config = dir.path().join("convoy.yaml");
    let config = config.to_str().unwrap();
    eventually("4 healthy clusters in sync", || async { settled(config) }).await;

    let kubeconfig = dir.path().join("kube/dev-1.kubeconfig");
    let version: serde_json::Value =
        serde_json::from_str(&kubectl_ok(&kubeconfig, &["version", "-o", "json"]).await).unwrap();
    let server = version["serverVersion"]["gitVersion"].as_str().unwrap_or_default().to_string();
    assert_eq!(server, kubesim::realkube::binaries::kubernetes_version(), "{version}");
    let secret =
        kubectl_ok(&kubeconfig, &["-n", "credentials", "get", "secret", "db", "-o", "jsonpath={.data.username}"]).await;
    assert_eq!(secret, "YXBwLWRldg==", "the dev Secret, decrypted (base64 of app-dev)");

    let repo = convoy_e2e::fleet_repo::FleetRepo { dir: dir.path().join("repo") };
    repo.write(
        "apps/web/base/config.yaml",
        &convoy_e2e::fleet_repo::configmap_yaml("web-config", &[("greeting", "real")]),
    );
    let dev_head = repo.commit("web: greeting");
    let pushed = Command::new("git").current_dir(&repo.dir).args(["push", "-q", "origin", "dev"]).output().unwrap();
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    eventually("dev-1 to apply the dev commit", || async { (applied(config, "dev-1") == dev_head).then_some(()) })
        .await;
    let namespace = kubectl_ok(&kubeconfig, &["get", "configmap", "-A", "-o", "json"]).await;
    let maps: serde_json::Value = serde_json::from_str(&namespace).unwrap();
    let greeting = maps["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("web-config")))
        .map(|m| m["data"]["greeting"].clone());
    assert_eq!(greeting, Some(serde_json::json!("real")), "{maps}");
}

#[tokio::test]
async fn the_sandbox_fleet_promotes_reports_and_shows_drift_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = start_sandbox(dir.path(), &[]);
    let config = dir.path().join("convoy.yaml");
    let config = config.to_str().unwrap();
    let initial = eventually("4 healthy clusters in sync", || async { settled(config) }).await;
    let names: Vec<&str> = initial.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["dev-1", "prod-eu", "prod-us", "stage-1"]);
    let (hub_metrics, dev_metrics, prod_metrics) = (
        metrics_address(&sandbox, "hub"),
        metrics_address(&sandbox, "dev-1 agent"),
        metrics_address(&sandbox, "prod-eu agent"),
    );
    let (hub_before, dev_before) = (scrape_metrics(&hub_metrics).await, scrape_metrics(&dev_metrics).await);
    assert_eq!(hub_before["convoy_hub_agents_connected"], 4.0, "{hub_before:?}");
    let (ok, table, _) = convoy(&["--config", config, "clusters"]);
    assert!(
        ok && table.starts_with("CLUSTER") && table.lines().filter(|l| l.contains("in-sync")).count() == 4,
        "{table}"
    );

    // Each environment's Secret, encrypted in the repository for that environment's key only,
    // is in its clusters decrypted.
    for (cluster, env) in [("dev-1", "dev"), ("stage-1", "stage"), ("prod-eu", "prod")] {
        let kubeconfig = dir.path().join(format!("kube/{cluster}.kubeconfig"));
        let secret = kubectl_ok(&kubeconfig, &["-n", "credentials", "get", "secret", "db", "-o", "json"]).await;
        let secret: serde_json::Value = serde_json::from_str(&secret).unwrap();
        // The applied stringData, folded into data as kube-apiserver does.
        let username = {
            use base64::Engine as _;
            let data = secret["data"]["username"].as_str().unwrap_or_default();
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default()).ok()
        };
        assert_eq!(username, Some(format!("app-{env}")), "{secret}");
        let file = dir.path().join(format!("repo/apps/credentials/envs/{env}/db.enc.yaml"));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("ENC[AES256_GCM") && !text.contains(&format!("app-{env}")), "{text}");
        let document: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let own = AgeKeys::load(&dir.path().join(format!("sops/{env}.agekey"))).unwrap();
        assert!(sops::decrypt(&document, &own).is_ok());
        let other = if env == "prod" { "dev" } else { "prod" };
        let foreign = AgeKeys::load(&dir.path().join(format!("sops/{other}.agekey"))).unwrap();
        assert!(sops::decrypt(&document, &foreign).is_err(), "{other}'s key opens {env}'s Secret");
    }

    // A commit pushed to dev reaches dev-1 only.
    let repo = convoy_e2e::fleet_repo::FleetRepo { dir: dir.path().join("repo") };
    repo.write(
        "apps/web/base/config.yaml",
        &convoy_e2e::fleet_repo::configmap_yaml("web-config", &[("greeting", "hi")]),
    );
    let dev_head = repo.commit("web: greeting");
    // The hook says what it did on the push's stderr, as a forge's hook output would show.
    let pushed = std::process::Command::new("git")
        .current_dir(&repo.dir)
        .args(["push", "-q", "origin", "dev"])
        .output()
        .expect("git push");
    let hook = String::from_utf8_lossy(&pushed.stderr);
    assert!(pushed.status.success() && hook.contains("the hub's webhook took the push"), "{hook}");
    eventually("dev-1 to apply the dev commit", || async { (applied(config, "dev-1") == dev_head).then_some(()) })
        .await;
    let (ok, check, _) = convoy(&["--config", config, "promote-check", "dev", "stage"]);
    assert!(ok, "{check}");

    // Merging dev into stage updates stage-1; prod stays where it was.
    repo.checkout("stage");
    let stage_head = repo.merge("dev");
    repo.git(&["push", "-q", "origin", "stage"]);
    eventually("stage-1 to apply the stage merge", || async {
        (applied(config, "stage-1") == stage_head).then_some(())
    })
    .await;
    let prod_before: Vec<_> = initial.iter().filter(|(n, _)| n.starts_with("prod")).cloned().collect();
    for (cluster, revision) in &prod_before {
        assert_eq!(&applied(config, cluster), revision, "{cluster} must be untouched");
    }

    // The pending promotion, by environment or by branch name.
    let (ok, diff, stderr) = convoy(&["--config", config, "diff", "stage", "main"]);
    assert!(ok, "{stderr}");
    assert!(diff.contains("prod-eu: 1 objects") && diff.contains("~ ConfigMap web/web-config"), "{diff}");

    // A kubectl edit in prod-eu (web has selfHeal off) shows as drift with its manager.
    let kubeconfig = dir.path().join("kube/prod-eu.kubeconfig");
    let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:edited"}]}}}}"#;
    let args = ["-n", "web", "patch", "deployment", "web", "--field-manager=kubectl-edit", "--type=merge", "-p", patch];
    kubectl_ok(&kubeconfig, &args).await;
    let drift = eventually("the drift to reach the hub", || async {
        let (ok, text, _) = convoy(&["--config", config, "drift", "prod-eu"]);
        (ok && text.contains("nginx:edited")).then_some(text)
    })
    .await;
    assert!(
        drift.contains("spec.template.spec.containers[name=web].image") && drift.contains("kubectl-edit"),
        "{drift}"
    );
    let history = json(config, &["history", "dev-1"]);
    let events: Vec<&str> =
        history["entries"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert!(events.starts_with(&["applied", "assigned"]), "{events:?}");

    // The counters moved with all of that.
    let (hub_after, dev_after) = (scrape_metrics(&hub_metrics).await, scrape_metrics(&dev_metrics).await);
    let hub_moved = |name: &str| hub_after[name] - hub_before[name];
    assert!(hub_moved("convoy_hub_assignments_published_total") >= 2.0, "dev-1 and stage-1: {hub_after:?}");
    assert!(hub_moved("convoy_hub_git_fetch_duration_seconds_count") >= 2.0, "{hub_after:?}");
    assert!(hub_moved("convoy_hub_reports_received_total") >= 2.0, "{hub_after:?}");
    assert!(hub_after["convoy_hub_drifts"] >= 1.0, "the prod-eu edit: {hub_after:?}");
    let clean = r#"convoy_agent_passes_total{outcome="clean"}"#;
    assert!(dev_after[clean] > dev_before[clean], "dev-1 applied the dev commit: {dev_after:?}");
    assert!(scrape_metrics(&prod_metrics).await["convoy_agent_drifts"] >= 1.0);

    // Every command answers `-o json` as README's "Scripting the CLI" says, failures included.
    let repo_dir = dir.path().join("repo");
    let repo_dir = repo_dir.to_str().unwrap();
    for (args, key) in [
        (&["clusters"][..], "/clusters/0/name"),
        (&["status", "dev-1"], "/clusters/0/cluster/name"),
        (&["drift"], "/clusters/0/cluster"),
        (&["history", "dev-1"], "/entries/0/event"),
        (&["envs"], "/environments/0/branch"),
        (&["diff", "stage", "prod"], "/fromBranch"),
        (&["promote-check", "dev", "stage", "--allow-divergent"], "/toBranch"),
        (&["promote", "stage", "prod", "--wait", "60s", "--dry-run", "--repo", repo_dir], "/move"),
        (&["rollout", "status"], ""),
        (&["refresh"], "/branches/main"),
        (&["token", "create", "--cluster", "edge-9"], "/token"),
        (&["clusters", "revoke", "edge-9"], "/cluster"),
        (&["render", "--app", "web", "--cluster", "dev-1", "--root", repo_dir], "/0/kind"),
        (&["render", &format!("{repo_dir}/apps/web/base")], "/0/kind"),
    ] {
        let answer = json(config, args);
        assert!(answer.is_object() || answer.is_array(), "convoy {args:?}: {answer}");
        assert!(key.is_empty() || answer.pointer(key).is_some(), "convoy {args:?} -o json lacks {key}: {answer}");
    }
    let (ok, stdout, stderr) = convoy(&["--config", config, "status", "nowhere", "-o", "json"]);
    let failure: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON failure");
    assert!(!ok && failure["error"]["kind"] == "not-found" && stderr.contains("unknown cluster 'nowhere'"), "{stdout}");
}

#[test]
fn cli_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = convoy(&["clusters"]);
    assert!(!ok);
    assert!(stderr.contains("--config") && stderr.contains("missing: hub, ca, cert, key"), "{stderr}");

    let config = dir.path().join("convoy.yaml");
    std::fs::write(&config, "contexts:\n- name: a\n  hub: 127.0.0.1:1\n").unwrap();
    let (ok, _, stderr) = convoy(&["--config", config.to_str().unwrap(), "--context", "b", "clusters"]);
    assert!(!ok);
    assert!(stderr.contains("context 'b'") && stderr.contains("it has: a"), "{stderr}");

    // A real CA and certificate, but nothing listens at the address.
    let ca = convoy_e2e::harness::TestCa::new();
    let admin =
        convoy_shared::identity::Identity::User { name: "admin".into(), role: convoy_shared::identity::Role::Admin };
    let (cert, key) = ca.certs.leaf_paths(&admin);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (ok, _, stderr) = convoy(&[
        "--hub",
        &format!("127.0.0.1:{port}"),
        "--ca",
        ca.certs.ca_cert().to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "clusters",
    ]);
    assert!(!ok);
    assert!(stderr.contains("is convoy-hub running"), "{stderr}");
}
