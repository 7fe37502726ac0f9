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

/// The audit records about `user`, as `convoy audit -o json` prints them (one JSON line each).
fn audit(config: &Path, user: &str) -> Vec<Value> {
    let out = Command::new(workspace_binary("convoy"))
        .arg("--config")
        .arg(config)
        .args(["audit", "--user", user, "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "convoy audit: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Starts the provider with wendy in group web-team (and, with `dashboard`, the hub dashboard's
/// client redirecting there); returns it and its issuer.
fn provider(dashboard: Option<&str>) -> (Process, String) {
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
    command.args(dashboard);
    let process = Process::spawn(command);
    let line = process.wait_for_line("issuer http://");
    let issuer = line.split_whitespace().last().unwrap().to_string();
    (process, issuer)
}

/// A hub on the standard fleet whose policy lets group web-team view and roll out `web` in dev
/// and stage, signing people in through `issuer`, with `extra` serve flags.
struct Fleet {
    hub: HubProcess,
    ca: TestCa,
    /// An admin's CLI config.
    admin: std::path::PathBuf,
    configs: tempfile::TempDir,
    _repo: tempfile::TempDir,
}

async fn fleet(issuer: &str, extra: &[&str]) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    repo.checkout("main");
    let access = "  access:\n    roles:\n    - name: web-deployer\n      rules:\n      - {environments: [dev, stage], apps: [web], verbs: [view, rollout]}\n    bindings:\n    - {role: web-deployer, groups: [web-team]}\n";
    repo.write("convoy.yaml", &(fleet_yaml(&[("dev", "dev"), ("stage", "stage"), ("prod", "main")]) + access));
    let head = repo.commit("access: the web team");
    let ca = TestCa::new();
    let url = repo.url();
    let mut serve = vec!["--repo", &url, "--poll-seconds", "1", "--oidc-issuer", issuer, "--oidc-client-id", "convoy"];
    serve.extend(extra);
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let configs = tempfile::tempdir().unwrap();
    let admin =
        ca.config_file(&hub.address, configs.path(), Identity::User { name: "root".into(), role: Role::Admin }, &[]);
    eventually("the policy in force", || async {
        (convoy(&admin, &["whoami"])["policyCommit"] == head.as_str()).then_some(())
    })
    .await;
    Fleet { hub, ca, admin, configs, _repo: dir }
}

impl Fleet {
    /// A CLI config with only the hub and its CA, for `convoy login`.
    fn anonymous(&self) -> std::path::PathBuf {
        let anonymous = self.configs.path().join("anonymous.yaml");
        let ca = self.ca.certs.ca_cert();
        std::fs::write(
            &anonymous,
            format!("contexts:\n- name: hub\n  hub: {}\n  ca: {}\n", self.hub.address, ca.display()),
        )
        .unwrap();
        anonymous
    }
}

/// Signs wendy in at the provider's own pages (login, then consent), from wherever the browser
/// is on them.
async fn sign_in_at_the_provider(browser: &Browser) {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_with_the_company_provider_and_get_what_their_groups_may() {
    let Some(browser) = Browser::start(1280, 900).await else { return };
    let (_provider, issuer) = provider(None);
    let fleet = fleet(&issuer, &[]).await;
    let (hub, ca, admin, configs) = (&fleet.hub, &fleet.ca, &fleet.admin, &fleet.configs);

    // `convoy login` with only the hub and its CA: it prints where to sign in and waits.
    let anonymous = fleet.anonymous();
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
    sign_in_at_the_provider(&browser).await;
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
            device_flow: false,
        })
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::Unauthenticated, "{forged:?}");
    let records = convoy(admin, &["audit"]);
    let sign_ins: Vec<&Value> = records.as_array().unwrap().iter().filter(|r| r["verb"] == "sign-in").collect();
    assert!(
        sign_ins.iter().any(|r| r["user"] == "wendy@example.com" && r["result"].as_str().unwrap().starts_with("done")),
        "{sign_ins:?}"
    );
    assert!(sign_ins.iter().any(|r| r["result"].as_str().unwrap().starts_with("denied")), "{sign_ins:?}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_without_a_browser_signs_in_with_a_device_code() {
    let Some(browser) = Browser::start(1280, 900).await else { return };
    let (_provider, issuer) = provider(None);
    let fleet = fleet(&issuer, &[]).await;
    let wendy = fleet.configs.path().join("wendy.yaml");
    let mut login = Process::spawn({
        let mut c = Command::new(workspace_binary("convoy"));
        c.arg("--config").arg(fleet.anonymous()).args(["login", "--device", "--out"]).arg(&wendy);
        c
    });
    // The CLI prints where to go and the code; the person uses a browser anywhere.
    let line = login.wait_for_line("Sign in at: ");
    let address = line.split("Sign in at: ").nth(1).unwrap().trim().to_string();
    assert!(address.starts_with(&format!("{issuer}/device")), "{address}");
    let with_code = login.wait_for_line("with the code ");
    let code = with_code.rsplit("with the code ").next().unwrap().trim().trim_end_matches(')').to_string();
    assert!(!code.is_empty(), "{with_code}");
    browser.client.goto(&address).await.unwrap();
    // The provider asks to confirm the code it shows, then signs the person in.
    browser.find("button[type='submit']").await.click().await.unwrap();
    sign_in_at_the_provider(&browser).await;
    browser.until("the provider's success page", "/success|signed in/i.test(document.body.textContent)").await;
    let status = login.wait();
    assert!(status.success(), "convoy login --device: {:?}", login.log());

    let me = convoy(&wendy, &["whoami"]);
    assert_eq!(
        (me["user"].as_str(), me["roles"].clone()),
        (Some("wendy@example.com"), serde_json::json!(["web-deployer"]))
    );
    let sign_ins = audit(&fleet.admin, "wendy@example.com");
    assert!(sign_ins.iter().any(|r| r["verb"] == "sign-in" && r["action"] == "SignIn"), "{sign_ins:?}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_sign_in_to_the_hubs_dashboard_and_see_only_what_their_groups_may() {
    let Some(browser) = Browser::start(1280, 900).await else { return };
    // The dashboard's address must be known to the provider before either starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap().port();
    let url = format!("https://127.0.0.1:{port}");
    let (_provider, issuer) = provider(Some(&format!("{url}/auth/callback")));
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("dashboard-secret");
    std::fs::write(&secret, "dashboard-secret\n").unwrap();
    let listen = format!("127.0.0.1:{port}");
    let ui = ["--ui-listen", &listen, "--ui-client-id", "convoy-dashboard", "--ui-client-secret-file"];
    let mut extra: Vec<&str> = ui.to_vec();
    extra.push(secret.to_str().unwrap());
    let fleet = fleet(&issuer, &extra).await;
    fleet.hub.process.wait_for_line("dashboard listening");

    // A page without a session goes to the provider, and comes back to it once signed in.
    browser.client.goto(&format!("{url}/clusters/dev-1")).await.unwrap();
    browser.until("the provider's login page", &format!("location.href.startsWith('{issuer}')")).await;
    sign_in_at_the_provider(&browser).await;
    browser.until("the cluster page", "document.body.dataset.ready === 'cluster'").await;
    assert_eq!(browser.url().await, format!("{url}/clusters/dev-1"));

    // The session cookie: HttpOnly, Secure, SameSite=Strict; the page cannot read it.
    let cookie = browser.client.get_named_cookie("__Host-convoy-session").await.unwrap();
    assert_eq!(
        (cookie.http_only(), cookie.secure(), cookie.same_site().map(|s| s.to_string())),
        (Some(true), Some(true), Some("Strict".to_string())),
        "{cookie:?}"
    );
    let visible = browser.client.execute("return document.cookie", vec![]).await.unwrap();
    assert_eq!(visible, serde_json::json!(""), "scripts see no session");

    // The fleet as wendy's groups may see it, and her name on the page.
    browser.client.goto(&format!("{url}/")).await.unwrap();
    browser.until("the fleet page", "document.body.dataset.ready === 'fleet'").await;
    browser.find("#cluster-table tr[data-cluster='stage-1']").await;
    let rows = browser
        .client
        .execute(
            "return [...document.querySelectorAll('#cluster-table tr[data-cluster]')].map(r => r.dataset.cluster)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(rows, serde_json::json!(["dev-1", "stage-1"]));
    let me = browser.find("#me").await.text().await.unwrap();
    assert!(me.contains("wendy@example.com") && me.contains("Sign out"), "{me}");

    // The policy decides actions as for her certificate: prod is not hers; the denial names why.
    let act = |environment: &str| {
        format!(
            "const me = await (await fetch('/api/me')).json();
             const r = await fetch('/api/rollouts/action', {{method: 'POST', headers: {{'Content-Type':
               'application/json', 'X-Convoy-CSRF': me.csrfToken}}, body: JSON.stringify({{environment:
               '{environment}', action: 'pause'}})}});
             return [r.status, await r.text()];"
        )
    };
    let denied = browser.client.execute(&act("prod"), vec![]).await.unwrap();
    assert_eq!(denied[0], 403, "{denied}");
    assert!(denied[1].as_str().unwrap().contains("may not rollout"), "{denied}");
    let forged = browser
        .client
        .execute(
            "const r = await fetch('/api/rollouts/action', {method: 'POST', headers: {'Content-Type': 'application/json',
               'X-Convoy-CSRF': 'guess'}, body: JSON.stringify({environment: 'dev', action: 'pause'})});
             return r.status;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(forged, 403, "a write without the session's CSRF token");

    // The audit: the sign-in and the denial, from the browser's address.
    let records = audit(&fleet.admin, "wendy@example.com");
    assert!(
        records.iter().any(|r| r["action"] == "DashboardSignIn" && r["result"].as_str().unwrap().starts_with("done")),
        "{records:?}"
    );
    let denial = records.iter().find(|r| r["verb"] == "rollout" && r["result"].as_str().unwrap().starts_with("denied"));
    let denial = denial.unwrap_or_else(|| panic!("no denied rollout in {records:?}"));
    assert!(denial["source"].as_str().unwrap().starts_with("127.0.0.1:"), "{denial}");
    assert_eq!(denial["groups"], serde_json::json!(["web-team"]));

    // Revoking her ends the session at once.
    convoy(&fleet.admin, &["users", "revoke", "wendy@example.com"]);
    let after = browser
        .client
        .execute("const r = await fetch('/api/me'); return [r.status, await r.text()];", vec![])
        .await
        .unwrap();
    assert_eq!(after[0], 401, "{after}");
    assert!(after[1].as_str().unwrap().contains("revoked"), "{after}");

    // Signing out clears the session.
    browser.client.goto(&format!("{url}/")).await.unwrap();
    browser.until("signed in again (the provider remembers her)", "document.body.dataset.ready === 'fleet'").await;
    browser.find("#sign-out").await.click().await.unwrap();
    browser.until("the signed-out page", "location.pathname === '/auth/signed-out'").await;
    assert!(browser.client.get_named_cookie("__Host-convoy-session").await.is_err(), "the session is gone");
    let records = audit(&fleet.admin, "wendy@example.com");
    assert!(records.iter().any(|r| r["action"] == "DashboardSignOut"), "{records:?}");
    browser.close().await;
}
