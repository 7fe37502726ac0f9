//! Single sign-on (issue 31) against a real OpenID provider: npm's `oidc-provider` (a certified
//! implementation, `e2e/oidc`, installed by the test script) on loopback. `convoy login` runs the
//! authorization-code flow with PKCE through a loopback redirect; a real browser (Chromium over
//! WebDriver) signs in at the provider's page; the hub checks the ID token and signs a
//! certificate for the user and the groups the provider says, which the access policy in Git
//! then scopes. A forged token is refused; both are in the audit log.

use std::path::Path;
use std::process::Command;

use convoy_e2e::browser::Browser;
use convoy_e2e::fleet_repo::{fleet_yaml, standard_fleet};
use convoy_e2e::harness::{HubProcess, Process, TestCa, eventually, workspace_binary};
use convoy_shared::identity::{Identity, Role};
use convoy_shared::proto::SignInRequest;
use convoy_shared::proto::registration_service_client::RegistrationServiceClient;
use serde_json::Value;

fn convoy(config: &Path, args: &[&str]) -> Value {
    let out = Command::new(workspace_binary("convoy"))
        .arg("--config")
        .arg(config)
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "convoy {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text)
        .unwrap_or_else(|_| Value::Array(text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()))
}

/// Starts the provider with wendy in group web-team; returns it and its issuer.
fn provider() -> (Process, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "e2e/oidc has no node_modules: `npm ci --prefix e2e/oidc` (e2e/test.sh does)"
    );
    let mut command = Command::new("node");
    command.current_dir(&dir).args([
        "provider.mjs",
        "0",
        r#"{"wendy": {"email": "wendy@example.com", "groups": ["web-team"]}}"#,
    ]);
    let process = Process::spawn(command);
    let line = process.wait_for_line("issuer http://");
    let issuer = line.split_whitespace().last().unwrap().to_string();
    (process, issuer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_with_the_company_provider_and_get_what_their_groups_may() {
    let Some(browser) = Browser::start(1280, 900).await else { return };
    let (_provider, issuer) = provider();
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    repo.checkout("main");
    let access = "  access:\n    roles:\n    - name: web-deployer\n      rules:\n      - {environments: [dev, stage], apps: [web], verbs: [view, rollout]}\n    bindings:\n    - {role: web-deployer, groups: [web-team]}\n";
    repo.write("convoy.yaml", &(fleet_yaml(&[("dev", "dev"), ("stage", "stage"), ("prod", "main")]) + access));
    let head = repo.commit("access: the web team");
    let ca = TestCa::new();
    let serve = ["--repo", &repo.url(), "--poll-seconds", "1", "--oidc-issuer", &issuer, "--oidc-client-id", "convoy"];
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let configs = tempfile::tempdir().unwrap();
    let admin =
        ca.config_file(&hub.address, configs.path(), Identity::User { name: "root".into(), role: Role::Admin }, &[]);
    eventually("the policy in force", || async {
        (convoy(&admin, &["whoami"])["policyCommit"] == head.as_str()).then_some(())
    })
    .await;

    // `convoy login` with only the hub and its CA: it prints where to sign in and waits.
    let anonymous = configs.path().join("anonymous.yaml");
    std::fs::write(
        &anonymous,
        format!("contexts:\n- name: hub\n  hub: {}\n  ca: {}\n", hub.address, ca.certs.ca_cert().display()),
    )
    .unwrap();
    let wendy = configs.path().join("wendy.yaml");
    let mut login = Process::spawn({
        let mut c = Command::new(workspace_binary("convoy"));
        c.arg("--config").arg(&anonymous).args(["login", "--no-browser", "--out"]).arg(&wendy);
        c
    });
    let address = login.wait_for_line("Sign in at: ").split("Sign in at: ").nth(1).unwrap().trim().to_string();
    assert!(
        address.starts_with(&format!("{issuer}/auth?")) && address.contains("code_challenge_method=S256"),
        "{address}"
    );

    // The person signs in at the provider's own page, in a real browser.
    browser.client.goto(&address).await.unwrap();
    browser.find("input[name='login']").await.send_keys("wendy").await.unwrap();
    browser.find("input[name='password']").await.send_keys("any").await.unwrap();
    browser.find("button[type='submit']").await.click().await.unwrap();
    browser
        .until(
            "the consent page",
            "location.pathname.includes('/interaction/') && !document.querySelector(\"input[name='login']\")",
        )
        .await;
    browser.find("button[type='submit']").await.click().await.unwrap();
    browser.until("the loopback redirect answered", "document.body.textContent.includes('Signed in')").await;
    let status = login.wait();
    assert!(status.success(), "convoy login: {:?}", login.log());

    // The certificate names the provider's user and groups; the policy in Git scopes them.
    let me = convoy(&wendy, &["whoami"]);
    assert_eq!(me["user"], "wendy@example.com");
    assert_eq!(me["groups"], serde_json::json!(["web-team"]));
    assert_eq!(me["roles"], serde_json::json!(["web-deployer"]));
    let clusters: Vec<String> = convoy(&wendy, &["clusters"])["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(clusters, ["dev-1", "stage-1"]);
    let key = std::fs::metadata(configs.path().join("wendy.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600,
        "the key is the user's alone"
    );

    // A forged ID token is refused, and both sign-ins are audited.
    let channel = {
        let address = convoy_shared::tls::HubAddress::parse(&hub.address, None).unwrap();
        convoy_shared::tls::connect(&address, ca.client_tls(None), std::time::Duration::from_secs(5)).await.unwrap()
    };
    let forged = RegistrationServiceClient::new(channel)
        .sign_in(SignInRequest {
            id_token: "eyJhbGciOiJub25lIn0.eyJzdWIiOiJldmUifQ.".into(),
            nonce: "n".into(),
            csr_pem: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::Unauthenticated, "{forged:?}");
    let records = convoy(&admin, &["audit"]);
    let sign_ins: Vec<&Value> = records.as_array().unwrap().iter().filter(|r| r["verb"] == "sign-in").collect();
    assert!(
        sign_ins.iter().any(|r| r["user"] == "wendy@example.com" && r["result"].as_str().unwrap().starts_with("done")),
        "{sign_ins:?}"
    );
    assert!(sign_ins.iter().any(|r| r["result"].as_str().unwrap().starts_with("denied")), "{sign_ins:?}");
    browser.close().await;
}
