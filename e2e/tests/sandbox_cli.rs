//! The README's main job and the `convoy` CLI, driven as a user would: start `convoy-sandbox`,
//! then ask it things with the `convoy` binary and its config file.

use std::path::Path;
use std::process::Command;

use convoy_e2e::harness::{Process, eventually, workspace_binary};

fn convoy(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(workspace_binary("convoy")).args(args).output().expect("run convoy");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn start_sandbox(dir: &Path) -> Process {
    let mut command = Command::new(workspace_binary("convoy-sandbox"));
    command.arg("--dir").arg(dir).args(["--listen", "127.0.0.1:0", "--status-seconds", "0"]);
    let sandbox = Process::spawn(command);
    sandbox.wait_for_line("Convoy sandbox ready");
    sandbox
}

#[tokio::test]
async fn the_sandbox_fleet_answers_the_cli_through_its_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let _sandbox = start_sandbox(dir.path());
    let config = dir.path().join("convoy.yaml");
    let config = config.to_str().unwrap();
    let clusters = eventually("both sandbox agents connected", || async {
        let (ok, stdout, stderr) = convoy(&["--config", config, "clusters", "-o", "json"]);
        assert!(ok, "convoy clusters failed: {stderr}");
        let clusters: serde_json::Value = serde_json::from_str(&stdout).expect("JSON output");
        let connected: Vec<String> = clusters
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["connected"] == true)
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        (connected.len() == 2).then_some(connected)
    })
    .await;
    assert_eq!(clusters, ["dev-1", "prod-eu"]);

    let (ok, table, _) = convoy(&["--config", config, "clusters"]);
    assert!(ok);
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("CLUSTER") && header.contains("LAST SEEN"), "{table}");
    assert_eq!(table.lines().filter(|l| l.contains("connected")).count(), 2, "{table}");
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
