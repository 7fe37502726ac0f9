//! The web dashboard (`convoy ui`) in a real browser (Debian's Chromium over WebDriver), on the
//! sandbox: the fleet page lists every cluster; a click reaches a cluster; a kubectl edit on
//! that cluster shows up as drift without a reload; an admin pauses a rollout from the page; a
//! viewer sees the button disabled and why; a foreign Host and a cross-origin POST are refused.
//! Screenshots of every page go to `target/dashboard/`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use convoy_cli::ConfigFile;
use convoy_e2e::browser::{Browser, dashboard};
use convoy_e2e::harness::eventually;
use convoy_e2e::sandbox::{Sandbox, SandboxConfig};
use convoy_shared::identity::Role;
use convoy_shared::proto::RolloutStatusRequest;
use kubesim::kubectl::kubectl_ok;
use tokio_util::sync::CancellationToken;

/// One raw HTTP/1.1 request to `addr` (HOST:PORT), so the test controls every header; returns
/// the status and the whole answer.
fn raw(addr: &str, request: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("the dashboard listens");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The phase of prod's rollout, as the hub says.
async fn prod_phase(config: &Path) -> String {
    let context = ConfigFile::load(config).unwrap().context(None, config).unwrap();
    let request = RolloutStatusRequest { environment: "prod".into() };
    let reply = context.connect().await.unwrap().rollout_status(request).await.unwrap().into_inner();
    reply.rollouts.first().map(|r| r.phase.clone()).unwrap_or_default()
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_fleet_live_and_acts_only_for_those_allowed() {
    let Some(browser) = Browser::start(1280, 900).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = SandboxConfig {
        dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        extra_clusters: 0,
        real_clusters: 0,
        poll: Duration::from_secs(1),
        hook: None,
    };
    let shutdown = CancellationToken::new();
    let sandbox = Sandbox::start(&config, shutdown.clone()).await.expect("the sandbox starts");
    eventually("every cluster in sync", || async {
        let infos = sandbox.hub.cluster_infos();
        (infos.len() == 4 && infos.iter().all(|c| c.in_sync && c.connected)).then_some(())
    })
    .await;
    let viewer_config = sandbox.user_config("auditor", Role::Viewer).unwrap();
    let (_admin_ui, admin) = dashboard(&["--config".as_ref(), sandbox.cli_config.as_os_str()]);
    let (_viewer_ui, viewer) = dashboard(&["--config".as_ref(), viewer_config.as_os_str()]);
    let addr = admin.trim_start_matches("http://").to_string();

    // A local server's defences: a foreign Host (DNS rebinding) and a cross-origin POST.
    let (status, answer) = raw(&addr, "GET /api/me HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = raw(&addr, &format!("GET /api/me HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("content-security-policy: default-src 'self'; script-src 'self'"), "{answer}");
    assert!(answer.contains("cache-control: no-store"), "{answer}");
    let token = answer.split("\"csrfToken\":\"").nth(1).and_then(|t| t.split('"').next()).unwrap().to_string();
    let body = r#"{"environment":"prod","action":"pause"}"#;
    let post = |origin: &str, token: &str| {
        format!(
            "POST /api/rollouts/action HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nX-Convoy-CSRF: {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let (status, answer) = raw(&addr, &post("http://evil.example", &token));
    assert_eq!(status, 403, "a cross-origin POST, even with the token: {answer}");
    assert!(answer.contains("cross-origin"), "{answer}");
    let (status, answer) = raw(&addr, &post(&admin, "forged"));
    assert_eq!(status, 403, "a same-origin POST without the token: {answer}");

    // The fleet page lists every cluster; a click reaches one.
    let shots = screenshots();
    browser.client.goto(&format!("{admin}/")).await.unwrap();
    browser.until("the fleet page", "document.body.dataset.ready === 'fleet'").await;
    for cluster in &sandbox.clusters {
        browser.find(&format!("#cluster-table tr[data-cluster='{cluster}'] a[href='/clusters/{cluster}']")).await;
    }
    let summary = browser.find("#cluster-summary").await.text().await.unwrap();
    assert!(summary.contains('4'), "{summary}");
    browser.screenshot(&shots, "fleet").await;
    browser.find("#cluster-table tr[data-cluster='dev-1'] a").await.click().await.unwrap();
    browser.until("the cluster page", "document.body.dataset.ready === 'cluster'").await;
    assert!(browser.url().await.ends_with("/clusters/dev-1"));
    assert!(browser.find("h1").await.text().await.unwrap().contains("dev-1"));
    browser.find("tr[data-app='web']").await;

    // A kubectl edit on dev-1 shows up as drift, pushed to the open page (no reload).
    browser.client.execute("window.__sameDocument = true; return true;", vec![]).await.unwrap();
    let kubeconfig = dir.path().join("kube/dev-1.kubeconfig");
    let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:edited"}]}}}}"#;
    kubectl_ok(&kubeconfig, &["-n", "web", "patch", "deployment", "web", "--field-manager=kubectl-edit", "-p", patch])
        .await;
    let text = browser.text("tr[data-drift='Deployment/web/web']").await;
    assert!(text.contains("kubectl-edit") && text.contains("image"), "{text}");
    browser.until("the same document", "window.__sameDocument === true").await;
    browser.screenshot(&shots, "cluster").await;

    // The app page and the promotion page.
    browser.client.goto(&format!("{admin}/apps/web?cluster=dev-1")).await.unwrap();
    browser.until("the app page", "document.body.dataset.ready === 'app'").await;
    browser.find("#app-clusters tr[data-cluster='prod-eu']").await;
    browser.find("#app-objects details[data-object='Deployment/web/web']").await;
    browser.screenshot(&shots, "app").await;
    browser.client.goto(&format!("{admin}/promotion?from=dev&to=stage")).await.unwrap();
    browser.until("the promotion page", "document.body.dataset.ready === 'promotion'").await;
    let command = browser.find("#promote-command").await.text().await.unwrap();
    assert!(command.contains("convoy promote dev stage"), "{command}");
    browser.find("#verdict[data-ok]").await;
    browser.screenshot(&shots, "promotion").await;

    // A prod rollout in waves (eu first, then a long soak), and a change that starts it.
    let repo = &sandbox.repo;
    git(repo, &["checkout", "-q", "main"]);
    let fleet = std::fs::read_to_string(repo.join("convoy.yaml")).unwrap().replace(
        "  - {name: prod, branch: main}",
        "  - name: prod\n    branch: main\n    rollout:\n      waves:\n      - {name: eu, clusterSelector: {matchLabels: {region: eu}}}\n      - {name: rest}\n      soak: 1h",
    );
    std::fs::write(repo.join("convoy.yaml"), fleet).unwrap();
    git(repo, &["commit", "-qam", "prod rolls out in waves"]);
    git(repo, &["push", "-q", "origin", "main"]);
    eventually("the hub to read the waves", || async {
        let commit = sandbox.hub.view().fleet.as_ref().map(|f| f.environments.iter().any(|e| e.rollout.is_some()));
        commit.unwrap_or(false).then_some(())
    })
    .await;
    let config_map = repo.join("apps/web/base/config.yaml");
    let changed = std::fs::read_to_string(&config_map).unwrap() + "  rollout: \"2\"\n";
    std::fs::write(&config_map, changed).unwrap();
    git(repo, &["commit", "-qam", "web: a setting for the rollout"]);
    git(repo, &["push", "-q", "origin", "main"]);
    eventually("prod's rollout to soak its first wave", || async {
        (prod_phase(&sandbox.cli_config).await == "soaking").then_some(())
    })
    .await;

    // The admin pauses it from the page, after confirming.
    browser.client.goto(&format!("{admin}/rollouts")).await.unwrap();
    browser.until("the rollouts page", "document.body.dataset.ready === 'rollouts'").await;
    let pause = browser.find("section[data-rollout='prod'] button[data-action='pause']").await;
    assert!(pause.is_enabled().await.unwrap());
    pause.click().await.unwrap();
    browser.find("#confirm-yes").await.click().await.unwrap();
    browser
        .until(
            "the page to show the pause",
            "document.querySelector(\"section[data-rollout='prod'] [data-phase]\")?.textContent.trim() === 'paused'",
        )
        .await;
    assert_eq!(prod_phase(&sandbox.cli_config).await, "paused");
    browser.screenshot(&shots, "rollouts").await;

    // A viewer sees the button, disabled, and why.
    browser.client.goto(&format!("{viewer}/rollouts")).await.unwrap();
    browser.until("the viewer's rollouts page", "document.body.dataset.ready === 'rollouts'").await;
    let resume = browser.find("section[data-rollout='prod'] button[data-action='resume']").await;
    assert!(!resume.is_enabled().await.unwrap(), "a viewer may not resume");
    let why = resume.attr("title").await.unwrap().unwrap_or_default();
    assert!(why.contains("viewer") && why.contains("admin"), "{why}");
    browser.screenshot(&shots, "rollouts-viewer").await;
    assert_eq!(prod_phase(&sandbox.cli_config).await, "paused", "the viewer changed nothing");

    browser.close().await;
    shutdown.cancel();
    sandbox.drain().await;
}
