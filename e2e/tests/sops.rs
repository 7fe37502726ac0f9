//! Secrets in Git, readable only inside the cluster: a Secret encrypted with the real `sops` for
//! the agent's age key travels Git → hub → agent as ciphertext and lands decrypted in the
//! cluster; the hub's log and store and the assignment the agent caches hold no cleartext; a
//! value tampered with in Git is refused while the rest of its app applies.

use age::secrecy::ExposeSecret as _;
use convoy_agent::testing::{parse_manifest, sops_encrypt};
use convoy_e2e::fleet_repo::{
    app_yaml, configmap_yaml, create_standard_namespaces, kustomization_yaml, standard_fleet,
};
use convoy_e2e::harness::{HubProcess, TestCa, eventually, spawn_agent};
use convoy_shared::identity::Role;
use convoy_shared::proto::StatusRequest;
use kubesim::SimFleet;
use serde_json::Value;

const PASSWORD: &str = "s3cr3t-in-git-only-as-ciphertext";
const USERNAME: &str = "vault-admin-user";

fn secret_yaml() -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: vault\ntype: Opaque\nstringData:\n  \
         username: {USERNAME}\n  password: {PASSWORD}\n"
    )
}

fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_containing(&path, needle));
        } else if std::fs::read(&path).unwrap().windows(needle.len()).any(|w| w == needle.as_bytes()) {
            out.push(path);
        }
    }
    out
}

/// The password the cluster's Secret holds (the applied `stringData` folded into `data`).
fn password_in(cluster: &kubesim::SimCluster) -> Option<String> {
    use base64::Engine as _;
    let secret = cluster.get("v1", "Secret", Some("vault"), "db")?;
    let data = secret["data"]["password"].as_str()?;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_secret_reaches_the_cluster_decrypted_and_nowhere_else_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let key_file = dir.path().join("age.agekey");
    std::fs::write(&key_file, format!("# public key: {recipient}\n{}\n", identity.to_string().expose_secret()))
        .unwrap();

    let encrypted = sops_encrypt(&secret_yaml(), "yaml", &recipient, &["--encrypted-regex", "^(data|stringData)$"]);
    repo.write("apps/vault/app.yaml", &app_yaml("vault", "vault", &[]));
    repo.write(
        "apps/vault/base/kustomization.yaml",
        &kustomization_yaml(&["namespace.yaml", "config.yaml", "db.enc.yaml"], &[]),
    );
    repo.write("apps/vault/base/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: vault\n");
    repo.write("apps/vault/base/config.yaml", &configmap_yaml("vault-config", &[("version", "v1")]));
    repo.write("apps/vault/base/db.enc.yaml", &encrypted);
    let head = repo.commit("vault: an encrypted Secret");

    // The render passes the sops document through untouched: metadata, ciphertext, key order.
    let rendered = convoy_render::Renderer::new(&repo.dir).render(&repo.dir.join("apps/vault/base")).unwrap();
    let secret = rendered.iter().find(|o| o["kind"] == "Secret").expect("the Secret renders");
    let written = parse_manifest(&encrypted, "yaml");
    assert_eq!(secret, &written);
    let keys = |v: &Value| v["stringData"].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(secret), ["username", "password"]);
    assert!(!convoy_render::to_yaml(&rendered).contains(PASSWORD));

    let data = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let serve = ["--repo", &repo.url(), "--data", data.path().to_str().unwrap(), "--poll-seconds", "1"];
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "debug", &serve);
    let kube = SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = kube.cluster("dev-1").unwrap();
    create_standard_namespaces(cluster);
    let cache = tempfile::tempdir().unwrap();
    let agent =
        spawn_agent(&ca, &hub.address, cluster, cache.path(), &["--sops-age-key-file", key_file.to_str().unwrap()]);

    eventually("the Secret decrypted in dev-1", || {
        let found = password_in(cluster);
        async move { (found.as_deref() == Some(PASSWORD)).then_some(()) }
    })
    .await;
    let live = cluster.get("v1", "Secret", Some("vault"), "db").unwrap();
    assert!(live.get("sops").is_none(), "the sops metadata is not applied: {live}");
    assert_eq!(live["metadata"]["annotations"]["convoy.dev/revision"], head.as_str());

    // Nowhere outside the cluster in clear.
    for needle in [PASSWORD, USERNAME] {
        assert!(hub.process.log().iter().all(|l| !l.contains(needle)), "the hub logged {needle}");
        assert!(agent.log().iter().all(|l| !l.contains(needle)), "the agent logged {needle}");
        assert_eq!(files_containing(data.path(), needle), Vec::<std::path::PathBuf>::new(), "the hub's store");
        assert_eq!(files_containing(cache.path(), needle), Vec::<std::path::PathBuf>::new(), "the agent's cache");
    }
    // The agent's cache holds the assignment as the hub sent it: ciphertext.
    assert!(!files_containing(cache.path(), "ENC[AES256_GCM").is_empty());

    // A value swapped in Git: refused; the rest of the app still applies; the cluster keeps the
    // last good Secret.
    let mut tampered = written.clone();
    tampered["stringData"]["password"] = written["stringData"]["username"].clone();
    repo.write("apps/vault/base/db.enc.yaml", &serde_saphyr::to_string(&tampered).unwrap());
    repo.write("apps/vault/base/config.yaml", &configmap_yaml("vault-config", &[("version", "v2")]));
    repo.commit("vault: tampered");
    eventually("the config applied and the tampered Secret refused", || {
        let config = cluster.get("v1", "ConfigMap", Some("vault"), "vault-config");
        let refused = agent.log_lines("cannot decrypt");
        let (ca, address) = (&ca, hub.address.clone());
        async move {
            config.filter(|c| c["data"]["version"] == "v2")?;
            refused.iter().find(|l| l.contains("Secret vault/db") && l.contains("stringData.password"))?;
            // The hub hears of it as a failed object of the app (the agent's error stays in the
            // agent's report).
            let mut cli = ca.cli(&address, Role::Viewer).await;
            let status = cli.status(StatusRequest { cluster: "dev-1".into() }).await.ok()?.into_inner();
            let vault = status.clusters.first()?.apps.iter().find(|a| a.name == "vault")?.clone();
            vault.message.contains("failed to apply").then_some(())
        }
    })
    .await;
    assert_eq!(password_in(cluster).as_deref(), Some(PASSWORD), "the last good Secret stays");
    assert!(cluster.get("v1", "ConfigMap", Some("web"), "web-config").is_some(), "nothing pruned");
    for needle in [PASSWORD, USERNAME] {
        assert!(hub.process.log().iter().all(|l| !l.contains(needle)), "the hub logged {needle}");
        assert!(agent.log().iter().all(|l| !l.contains(needle)), "the agent logged {needle}");
    }
}
