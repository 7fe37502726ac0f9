//! Registration against a real hub: single-use tokens (reuse, expiry, unknown), a CSR that asks
//! for another cluster's name, admin-only token creation, and revocation closing the live stream
//! and refusing the old certificate until the cluster registers with a new token.

use base64::Engine as _;
use convoy_agent::link::LinkState;
use convoy_agent::testing::namespace;
use convoy_e2e::fleet_repo::standard_fleet;
use convoy_e2e::harness::{
    InProcessHub, Process, RunningAgent, TestCa, eventually, refused_as_revoked, wait_connected, workspace_binary,
};
use convoy_shared::enrollment::generate_csr;
use convoy_shared::identity::{Identity, Role};
use convoy_shared::pki::IssuedCert;
use convoy_shared::proto::registration_service_client::RegistrationServiceClient;
use convoy_shared::proto::{
    CertificateResponse, CreateTokenRequest, RegisterRequest, RenewRequest, RevokeClusterRequest,
};
use convoy_shared::tls::{self, HubAddress};
use kubesim::{SimCluster, SimFleet};
use std::time::Duration;
use tonic::Code;

async fn start() -> (TestCa, InProcessHub, tempfile::TempDir) {
    let ca = TestCa::new();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(repo_dir.path());
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    (ca, hub, repo_dir)
}

async fn token(ca: &TestCa, hub: &InProcessHub, cluster: &str, ttl_seconds: i64) -> String {
    let mut admin = ca.cli(&hub.address, Role::Admin).await;
    let request = CreateTokenRequest { cluster: cluster.into(), ttl_seconds, ..Default::default() };
    admin.create_token(request).await.unwrap().into_inner().token
}

async fn registration(
    ca: &TestCa,
    hub: &str,
    cert: Option<&IssuedCert>,
) -> RegistrationServiceClient<tonic::transport::Channel> {
    let address = HubAddress::parse(hub, None).unwrap();
    RegistrationServiceClient::new(tls::connect(&address, ca.client_tls(cert), Duration::from_secs(5)).await.unwrap())
}

async fn register(
    ca: &TestCa,
    hub: &str,
    token: &str,
    asked: &str,
) -> Result<(CertificateResponse, IssuedCert), tonic::Status> {
    let csr = generate_csr(asked).unwrap();
    let request = RegisterRequest { bootstrap_token: token.into(), csr_pem: csr.cert_pem.clone() };
    let reply = registration(ca, hub, None).await.register(request).await?.into_inner();
    Ok((reply.clone(), IssuedCert { cert_pem: reply.cert_pem, key_pem: csr.key_pem }))
}

fn cluster_of(cert: &str) -> Identity {
    Identity::from_certificate_der(&tls::parse_certs(cert, "test").unwrap()[0]).unwrap()
}

#[tokio::test]
async fn a_token_registers_once_for_its_own_cluster_whatever_the_csr_asks() {
    let (ca, hub, _repo) = start().await;
    let token = token(&ca, &hub, "dev-1", 0).await;
    let (reply, cert) = register(&ca, &hub.address, &token, "prod-eu").await.unwrap();
    assert_eq!(reply.cluster, "dev-1");
    assert_eq!(cluster_of(&cert.cert_pem), Identity::Cluster("dev-1".into()));
    assert_eq!(reply.ca_pem, ca.ca.cert_pem());

    let reused = register(&ca, &hub.address, &token, "dev-1").await.unwrap_err();
    assert_eq!(reused.code(), Code::PermissionDenied);
    assert!(
        reused.message().contains("already used") && reused.message().contains("convoy token create"),
        "{reused:?}"
    );
    let unknown = register(&ca, &hub.address, "cvt_0000", "dev-1").await.unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert!(unknown.message().contains("not known"), "{unknown:?}");

    // The new certificate is a working agent identity: the hub lists the token's cluster.
    let agent = RunningAgent::start(ca.agent_config(&hub.address, Some(&cert), "prod-eu"));
    wait_connected(&ca, &hub.address, "dev-1").await;
    // Renew over mTLS gives a fresh certificate for the same cluster.
    let csr = generate_csr("prod-us").unwrap();
    let renewed =
        registration(&ca, &hub.address, Some(&cert)).await.renew(RenewRequest { csr_pem: csr.cert_pem }).await;
    assert_eq!(cluster_of(&renewed.unwrap().into_inner().cert_pem), Identity::Cluster("dev-1".into()));
    // Renew without a certificate is refused.
    let csr = generate_csr("dev-1").unwrap();
    let anonymous = registration(&ca, &hub.address, None).await.renew(RenewRequest { csr_pem: csr.cert_pem }).await;
    assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);
    agent.stop().await;
    hub.stop().await;
}

#[tokio::test]
async fn expired_tokens_are_refused_and_only_admins_create_tokens() {
    let (ca, hub, _repo) = start().await;
    let token = token(&ca, &hub, "dev-1", 1).await;
    // Let the one-second token lapse (a pause, not a timing assertion).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = register(&ca, &hub.address, &token, "dev-1").await.unwrap_err();
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert!(expired.message().contains("expired"), "{expired:?}");

    let mut viewer = ca.cli(&hub.address, Role::Viewer).await;
    let request = CreateTokenRequest { cluster: "dev-1".into(), ..Default::default() };
    assert_eq!(viewer.create_token(request).await.unwrap_err().code(), Code::PermissionDenied);
    let mut admin = ca.cli(&hub.address, Role::Admin).await;
    let bad = CreateTokenRequest { cluster: "Bad_Name".into(), ..Default::default() };
    assert_eq!(admin.create_token(bad).await.unwrap_err().code(), Code::InvalidArgument);
    hub.stop().await;
}

#[tokio::test]
async fn revocation_closes_the_stream_and_refuses_the_cluster_until_a_new_token() {
    let (ca, hub, _repo) = start().await;
    let first = token(&ca, &hub, "prod-eu", 0).await;
    let (_, cert) = register(&ca, &hub.address, &first, "prod-eu").await.unwrap();
    let agent = RunningAgent::start(ca.agent_config(&hub.address, Some(&cert), "prod-eu"));
    let mut state = agent.handle.state.clone();
    eventually("the agent connected", || {
        let connected = *state.borrow_and_update() == LinkState::Connected;
        async move { connected.then_some(()) }
    })
    .await;

    let mut admin = ca.cli(&hub.address, Role::Admin).await;
    let reply = admin.revoke_cluster(RevokeClusterRequest { cluster: "prod-eu".into() }).await.unwrap().into_inner();
    assert!(reply.stream_closed);
    // The stream closes (the link leaves Connected), and every reconnect is refused.
    state.wait_for(|s| *s != LinkState::Connected).await.unwrap();
    let refused = refused_as_revoked(&state, "a refused reconnect").await;
    assert!(refused.contains("convoy token create"), "{refused}");
    assert!(!hub.hub.connections().get("prod-eu").unwrap().connected);
    let csr = generate_csr("prod-eu").unwrap();
    let renew = registration(&ca, &hub.address, Some(&cert)).await.renew(RenewRequest { csr_pem: csr.cert_pem }).await;
    assert_eq!(renew.unwrap_err().code(), Code::PermissionDenied);
    agent.stop().await;

    // A new token brings the cluster back with a new certificate; the old one stays refused.
    let second = token(&ca, &hub, "prod-eu", 0).await;
    let (_, fresh) = register(&ca, &hub.address, &second, "prod-eu").await.unwrap();
    let agent = RunningAgent::start(ca.agent_config(&hub.address, Some(&fresh), "prod-eu"));
    let mut state = agent.handle.state.clone();
    state.wait_for(|s| *s == LinkState::Connected).await.unwrap();
    agent.stop().await;
    hub.stop().await;
}

/// The `tls.crt` the agent keeps in its credentials Secret.
fn stored_certificate(cluster: &SimCluster) -> Option<String> {
    let secret = cluster.get("v1", "Secret", Some("convoy-system"), "convoy-agent-credentials")?;
    let pem = base64::engine::general_purpose::STANDARD.decode(secret["data"]["tls.crt"].as_str()?).ok()?;
    String::from_utf8(pem).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_renews_before_expiry_and_reconnects_with_the_renewed_certificate() {
    let ca = TestCa::new();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(repo_dir.path());
    let hub = InProcessHub::start_with(&ca, &repo.url(), "127.0.0.1:0", Duration::from_secs(6)).await;
    let token = token(&ca, &hub, "dev-1", 0).await;
    let kube = SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = kube.cluster("dev-1").unwrap();
    cluster.apply("test", &namespace("convoy-system"), true).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(workspace_binary("convoy-agent"));
    command
        .args(["--hub", &hub.address, "--bootstrap-token", &token, "--ca"])
        .arg(ca.certs.ca_cert())
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .arg("--cache-dir")
        .arg(cache.path())
        .env("RUST_LOG", "info");
    let agent = Process::spawn(command);
    agent.wait_for_line("connected to the hub");
    let first = stored_certificate(cluster).expect("the registered certificate is stored");

    // Two renewals at two thirds of a 6 s lifetime: the registered certificate has expired by then.
    eventually("two renewals", || {
        let renewed = agent.log_lines("certificate renewed").len();
        async move { (renewed >= 2).then_some(()) }
    })
    .await;
    let renewed = stored_certificate(cluster).unwrap();
    assert_ne!(renewed, first, "the Secret holds the renewed certificate");
    assert_eq!(
        Identity::from_certificate_der(&tls::parse_certs(&renewed, "renewed").unwrap()[0]).unwrap(),
        Identity::Cluster("dev-1".into())
    );

    // A new hub on the same port once the registered certificate has expired: the agent must
    // redial, and only a renewed certificate is valid.
    let expiry = convoy_shared::enrollment::validity(&first, "registered").unwrap().not_after;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    tokio::time::sleep(Duration::from_secs((expiry + 1 - now).max(0) as u64)).await;
    let port = hub.address.rsplit(':').next().unwrap().to_string();
    hub.stop().await;
    let repo = convoy_e2e::fleet_repo::FleetRepo { dir: repo_dir.path().to_path_buf() };
    let restarted = InProcessHub::start_on(&ca, &repo.url(), &format!("127.0.0.1:{port}")).await;
    wait_connected(&ca, &restarted.address, "dev-1").await;
    assert!(agent.log_lines("expired").is_empty(), "the agent never offered an expired certificate");
    restarted.stop().await;
}
