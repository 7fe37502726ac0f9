//! The hub reading its fleet repository over HTTPS with a token, from a real smart-HTTP Git
//! server (git's own `git http-backend` behind TLS and basic auth): clone, fetch on webhook,
//! force-push followed; a wrong password, an unknown repository, an untrusted certificate and an
//! unreachable host show as source errors naming the URL and never the token, and leave the
//! assignments as they were.

use std::path::Path;

use convoy_e2e::fleet_repo::{self, FleetRepo, standard_fleet};
use convoy_e2e::git_http::GitHttpServer;
use convoy_e2e::harness::{HubProcess, TestCa, eventually, post_webhook, push_event};
use convoy_shared::identity::Role;
use convoy_shared::proto::fleet_service_client::FleetServiceClient;
use convoy_shared::proto::{EnvsRequest, GetClusterRequest, StatusRequest};
use tonic::transport::Channel;

const TOKEN: &str = "glpat-s3cr3t-t0ken-do-not-log";
const SECRET: &str = "webhook-secret";

/// A bare repository `fleet.git` under `root` with every branch of `work`.
fn publish(work: &FleetRepo, root: &Path) -> String {
    let bare = root.join("fleet.git");
    if !bare.exists() {
        FleetRepo { dir: root.to_path_buf() }.git(&["init", "-q", "--bare", "-b", "main", "fleet.git"]);
    }
    let path = bare.display().to_string();
    work.git(&["push", "-q", "--force", &path, "main", "stage", "dev"]);
    path
}

/// The standard fleet in `dir/work`, published as `dir/served/fleet.git`: (work tree, the
/// served root, the bare repository's path).
fn served_fleet(dir: &Path) -> (FleetRepo, std::path::PathBuf, String) {
    let work = standard_fleet(&dir.join("work"));
    let root = dir.join("served");
    std::fs::create_dir_all(&root).unwrap();
    let bare = publish(&work, &root);
    (work, root, bare)
}

fn serve_args<'a>(url: &'a str, token_file: &'a str, ca: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec!["--repo", url, "--git-password-file", token_file, "--webhook-secret", SECRET];
    args.extend(["--poll-seconds", "3600"]);
    if let Some(ca) = ca {
        args.extend(["--git-ca", ca]);
    }
    args
}

async fn envs_commit(cli: &mut FleetServiceClient<Channel>, env: &str) -> Option<String> {
    let envs = cli.envs(EnvsRequest {}).await.ok()?.into_inner();
    envs.environments.into_iter().find(|e| e.name == env).map(|e| e.commit)
}

async fn assigned_digest(cli: &mut FleetServiceClient<Channel>, cluster: &str) -> String {
    cli.get_cluster(GetClusterRequest { name: cluster.into() }).await.unwrap().into_inner().assigned_digest
}

/// The source errors as `convoy envs` shows them (or as its refusal says, before any fleet).
async fn source_errors(cli: &mut FleetServiceClient<Channel>) -> String {
    match cli.envs(EnvsRequest {}).await {
        Ok(envs) => envs.into_inner().errors.join("\n"),
        Err(status) => status.message().to_string(),
    }
}

fn assert_no_token(hub: &HubProcess) {
    let leaked: Vec<String> = hub.process.log().into_iter().filter(|l| l.contains(TOKEN)).collect();
    assert!(leaked.is_empty(), "the token is in the hub's log: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hub_follows_a_repository_over_https_with_a_token() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (work, root, bare) = served_fleet(dir.path());
    let cert = std::fs::read_to_string(ca.certs.hub_cert()).unwrap();
    let key = std::fs::read_to_string(ca.certs.hub_key()).unwrap();
    let server = GitHttpServer::start(&root, &cert, &key, "git", TOKEN).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_file = token_file.display().to_string();
    let ca_file = ca.certs.ca_cert().display().to_string();
    let url = server.url("fleet.git");

    // Clone.
    let hub =
        HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve_args(&url, &token_file, Some(&ca_file)));
    let mut cli = ca.cli(&hub.address, Role::Admin).await;
    let original = work.head();
    eventually("the hub to clone over https", || {
        let mut cli = cli.clone();
        let original = original.clone();
        async move { (envs_commit(&mut cli, "dev").await? == original).then_some(()) }
    })
    .await;
    let first = assigned_digest(&mut cli, "dev-1").await;
    assert!(!first.is_empty());
    let requests = server.requests();
    assert!(requests.iter().any(|r| r.status == 401), "the server asked for credentials: {requests:?}");
    assert!(requests.iter().any(|r| r.status == 200 && r.authorization.is_some()), "{requests:?}");

    // Fetch on webhook.
    work.write("apps/web/base/config.yaml", &fleet_repo::configmap_yaml("web-config", &[("greeting", "over https")]));
    let v2 = work.commit("web: over https");
    publish(&work, &root);
    post_webhook(&hub.http_address, SECRET, &push_event("refs/heads/dev", &v2)).expect("webhook accepted");
    eventually("the webhook's fetch", || {
        let mut cli = cli.clone();
        let v2 = v2.clone();
        async move { (envs_commit(&mut cli, "dev").await? == v2).then_some(()) }
    })
    .await;
    let second = assigned_digest(&mut cli, "dev-1").await;
    assert_ne!(second, first);

    // A force-push back to the original commit is followed.
    work.git(&["reset", "-q", "--hard", &original]);
    work.git(&["push", "-q", "--force", &bare, "dev"]);
    post_webhook(&hub.http_address, SECRET, &push_event("refs/heads/dev", &original)).expect("webhook accepted");
    eventually("the force-push to be followed", || {
        let mut cli = cli.clone();
        let original = original.clone();
        async move { (envs_commit(&mut cli, "dev").await? == original).then_some(()) }
    })
    .await;
    assert_eq!(assigned_digest(&mut cli, "dev-1").await, first);

    // The token is rotated on the server only: 401. The error names the URL, not the token, and
    // nothing moves.
    server.set_password("rotated-elsewhere");
    work.write("apps/web/base/config.yaml", &fleet_repo::configmap_yaml("web-config", &[("greeting", "unseen")]));
    let unseen = work.commit("web: unseen");
    publish(&work, &root);
    post_webhook(&hub.http_address, SECRET, &push_event("refs/heads/dev", &unseen)).expect("webhook accepted");
    let error = eventually("the 401 in convoy envs", || {
        let mut cli = cli.clone();
        async move {
            let errors = source_errors(&mut cli).await;
            errors.contains("401").then_some(errors)
        }
    })
    .await;
    assert!(error.contains(&url), "{error}");
    assert!(!error.contains(TOKEN), "{error}");
    let status = cli.status(StatusRequest { cluster: "dev-1".into() }).await.unwrap().into_inner();
    let errors = status.clusters[0].errors.join("\n");
    assert!(errors.contains("401") && errors.contains(&url) && !errors.contains(TOKEN), "{errors}");
    assert_eq!(envs_commit(&mut cli, "dev").await.unwrap(), original);
    assert_eq!(assigned_digest(&mut cli, "dev-1").await, first, "assignments stay as they were");

    // The right token again: the next webhook fetches and the error clears.
    server.set_password(TOKEN);
    post_webhook(&hub.http_address, SECRET, &push_event("refs/heads/dev", &unseen)).expect("webhook accepted");
    eventually("recovery after the token is fixed", || {
        let mut cli = cli.clone();
        let unseen = unseen.clone();
        async move {
            let recovered = envs_commit(&mut cli, "dev").await? == unseen && source_errors(&mut cli).await.is_empty();
            recovered.then_some(())
        }
    })
    .await;
    assert_no_token(&hub);
}

/// A hub pointed at `url` that cannot fetch it: `convoy envs` says why, naming the URL.
async fn refused(ca: &TestCa, url: &str, token_file: &str, git_ca: Option<&str>, expect: &[&str]) {
    refused_showing(ca, url, url, token_file, git_ca, expect).await
}

/// Like [`refused`], for a `url` that errors show as `shown` (its password redacted).
async fn refused_showing(ca: &TestCa, url: &str, shown: &str, token_file: &str, git_ca: Option<&str>, expect: &[&str]) {
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve_args(url, token_file, git_ca));
    let mut cli = ca.cli(&hub.address, Role::Viewer).await;
    let error = eventually(&format!("a source error for {url}"), || {
        let mut cli = cli.clone();
        async move {
            let errors = source_errors(&mut cli).await;
            errors.contains("git:").then_some(errors)
        }
    })
    .await;
    assert!(error.contains(shown), "the error names the URL: {error}");
    assert!(!error.contains(TOKEN), "{error}");
    assert!(expect.iter().any(|e| error.contains(e)), "expected one of {expect:?} in: {error}");
    // The hub logs the failure as it records it: the line may reach its log just after the
    // CLI has seen the error.
    eventually("the hub to log the failed fetch with the URL", || {
        let logged = hub.log_lines("git fetch failed");
        async move { logged.iter().any(|l| l.contains(shown)).then_some(()) }
    })
    .await;
    assert_no_token(&hub);
    let envs = cli.envs(EnvsRequest {}).await;
    assert!(envs.is_err(), "no fleet was ever read, so nothing is assigned");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_repositories_untrusted_certificates_and_unreachable_hosts_are_source_errors() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (_, root, _) = served_fleet(dir.path());
    let cert = std::fs::read_to_string(ca.certs.hub_cert()).unwrap();
    let key = std::fs::read_to_string(ca.certs.hub_key()).unwrap();
    let server = GitHttpServer::start(&root, &cert, &key, "git", TOKEN).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let token_file = token_file.display().to_string();
    let ca_file = ca.certs.ca_cert().display().to_string();

    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let wrong = wrong.display().to_string();
    refused(&ca, &server.url("fleet.git"), &wrong, Some(&ca_file), &["401"]).await;
    refused(&ca, &server.url("missing.git"), &token_file, Some(&ca_file), &["404"]).await;
    // A token written into the URL itself is used, and never shown.
    let port = server.address.port();
    let with_token = format!("https://git:{TOKEN}@localhost:{port}/missing.git");
    let shown = format!("https://git:<redacted>@localhost:{port}/missing.git");
    refused_showing(&ca, &with_token, &shown, &token_file, Some(&ca_file), &["404"]).await;
    // The system's roots do not know the harness's CA.
    refused(&ca, &server.url("fleet.git"), &token_file, None, &["certificate", "UnknownIssuer"]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = format!("https://localhost:{port}/fleet.git");
    refused(&ca, &unreachable, &token_file, Some(&ca_file), &["onnect", "refused"]).await;
}

/// A self-signed certificate for localhost as `openssl req -x509` makes one (CA:TRUE), with its
/// key, in PEM.
fn self_signed_ca_true() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_self_signed_ca_true_server_certificate_given_as_the_git_ca_is_trusted_and_no_other() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (work, root, _) = served_fleet(dir.path());
    let (cert, key) = self_signed_ca_true();
    let server = GitHttpServer::start(&root, &cert, &key, "git", TOKEN).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let token_file = token_file.display().to_string();
    let url = server.url("fleet.git");

    // Another self-signed CA:TRUE certificate is no anchor for this server: refused.
    let other = dir.path().join("other.pem");
    std::fs::write(&other, self_signed_ca_true().0).unwrap();
    let other = other.display().to_string();
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve_args(&url, &token_file, Some(&other)));
    let mut cli = ca.cli(&hub.address, Role::Admin).await;
    let refused = eventually("the untrusted certificate in convoy envs", || {
        let (mut cli, url) = (cli.clone(), url.clone());
        async move {
            let errors = source_errors(&mut cli).await;
            errors.contains(&url).then_some(errors)
        }
    })
    .await;
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    drop(hub);

    // The server's own certificate, given as the Git CA: the hub clones.
    let own = dir.path().join("own.pem");
    std::fs::write(&own, &cert).unwrap();
    let own = own.display().to_string();
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve_args(&url, &token_file, Some(&own)));
    cli = ca.cli(&hub.address, Role::Admin).await;
    let head = work.head();
    eventually("the hub to clone from the self-signed server", || {
        let mut cli = cli.clone();
        let head = head.clone();
        async move { (envs_commit(&mut cli, "dev").await? == head).then_some(()) }
    })
    .await;
}
