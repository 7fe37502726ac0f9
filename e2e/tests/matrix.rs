//! The fault and attack matrix (SECURITY.md's table): each test is one fault Convoy must survive
//! (`fault_…`) or one attack it must refuse (`attack_…`), on real processes and real sockets.
//! Rows the other scenario files already prove are listed in `e2e/matrix.tsv` with their own
//! test names; `e2e/test.sh` prints one summary line from it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use convoy_e2e::fleet_repo::{
    app_yaml, bulk_fleet, configmap_yaml, create_standard_namespaces, kustomization_yaml, standard_fleet,
    write_bulk_app,
};
use convoy_e2e::harness::{
    HubProcess, InProcessHub, RunningAgent, TestCa, WEBHOOK_SECRET, eventually, post_webhook, push_event,
    scrape_metrics, spawn_agent, wait_connected, workspace_binary,
};
use convoy_hub::plan::planner::CacheSizes;
use convoy_shared::clock::unix_secs;
use convoy_shared::enrollment::generate_csr;
use convoy_shared::identity::{Identity, Role};
use convoy_shared::pki::IssuedCert;
use convoy_shared::proto::agent_message::Kind as AgentKind;
use convoy_shared::proto::agent_service_client::AgentServiceClient;
use convoy_shared::proto::registration_service_client::RegistrationServiceClient;
use convoy_shared::proto::{
    AgentMessage, AppStatus, CertificateResponse, CreateTokenRequest, Health, Hello, ListClustersRequest,
    RegisterRequest, RenewRequest, Report,
};
use convoy_shared::tls::{self, HubAddress};
use rustls::client::danger::ServerCertVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The first bytes of a TLS ClientHello whose record header promises 512 bytes: a server that
/// waits for the rest waits forever.
const PARTIAL_CLIENT_HELLO: [u8; 11] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

/// A TCP connection to `hub` from the loopback address `source`, sending `first` and then stalling.
async fn stalled_connection(hub: SocketAddr, source: [u8; 4], first: &[u8]) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((source, 0))).expect("bind a loopback source address");
    let mut stream = socket.connect(hub).await.expect("the hub accepts TCP connections");
    stream.write_all(first).await.expect("send the first bytes");
    stream
}

/// Whether the hub closed `stream` (EOF or reset) rather than still waiting on it.
async fn closed_by_hub(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        // An alert or bytes of a ServerHello would mean the handshake went on; never here.
        Ok(Ok(_)) => false,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_half_open_handshakes_by_the_thousand_leave_the_hub_serving() {
    let ca = TestCa::new();
    // A long handshake timeout: what keeps the hub serving here is shedding, not the clock.
    let limits =
        ["--handshake-timeout-seconds", "300", "--max-handshakes", "512", "--max-handshakes-per-source", "128"];
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &limits);
    let address: SocketAddr = hub.address.parse().expect("the hub's address");

    // 1,000 stalled connections: 500 that send nothing from 127.0.0.1 (the address the real
    // clients use too), and 500 partial ClientHellos from four other addresses.
    let mut stalled = Vec::new();
    for i in 0..1000u32 {
        let (source, first): ([u8; 4], &[u8]) = if i % 2 == 0 {
            ([127, 0, 0, 1], &[])
        } else {
            ([127, 0, 0, 2 + (i / 2 % 4) as u8], &PARTIAL_CLIENT_HELLO)
        };
        stalled.push(stalled_connection(address, source, first).await);
    }
    eventually("the hub to shed the oldest stalled handshakes", || async {
        (hub.log_lines("handshake shed").len() >= 1000 - 512).then_some(())
    })
    .await;

    // The hub still answers: the CLI lists clusters and a real agent connects and stays.
    let mut viewer = ca.cli(&hub.address, Role::Viewer).await;
    viewer.list_clusters(ListClustersRequest {}).await.expect("the fleet API answers under the flood");
    let cert = ca.issue(Identity::Cluster("eu-1".into()));
    let agent = RunningAgent::start(ca.agent_config(&hub.address, Some(&cert), "eu-1"));
    wait_connected(&ca, &hub.address, "eu-1").await;

    // The oldest were shed, the newest still wait: a flood cannot push out the client that
    // arrives after it.
    let mut closed = Vec::new();
    for stream in &mut stalled {
        closed.push(closed_by_hub(stream).await);
    }
    assert!(closed[0] && closed[1], "the oldest stalled handshakes of each kind were shed");
    assert!(!closed[998] && !closed[999], "the newest stalled handshakes still wait for their timeout");
    let per_source = hub.log_lines("too many handshakes in progress from this address").len();
    let overall = hub.log_lines("reason=\"too many handshakes in progress\"").len();
    assert!(per_source >= 500 - 128, "127.0.0.1's oldest made way for its newest: {per_source}");
    assert!(overall > 0, "over 512 in all, the oldest overall made way");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_many_commits_keep_the_hub_caches_bounded() {
    // RSS over 10,000 commits is `bench_soak`'s figure; here, the caches that used to grow with
    // every commit (Git blobs of every version ever read, renders and pairs of gone apps) must
    // hold the same after 60 commits as after 20.
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let mut after_20 = None;
    for i in 0..60 {
        let greeting = format!("hello ${{cluster.name}} {i}");
        repo.write("apps/web/base/config.yaml", &configmap_yaml("web-config", &[("greeting", &greeting)]));
        // Apps come and go too: their cache entries must go with them.
        if i % 2 == 0 {
            repo.write("apps/extra/app.yaml", &app_yaml("extra", "web", &[]));
            repo.write("apps/extra/base/kustomization.yaml", &kustomization_yaml(&["config.yaml"], &[]));
            repo.write("apps/extra/base/config.yaml", &configmap_yaml("extra", &[("n", &i.to_string())]));
        } else {
            repo.remove("apps/extra");
        }
        let head = repo.commit(&format!("soak {i}"));
        hub.sync("dev", &head).await;
        if i == 19 {
            after_20 = Some(hub.hub.view().caches);
        }
    }
    let (after_20, after_60) = (after_20.unwrap(), hub.hub.view().caches);
    println!("caches after 20 commits: {after_20:?}; after 60: {after_60:?}");
    // One pack per fetch, folded into one past MAX_PACKS.
    assert!(after_60.packs <= convoy_hub::source::git::MAX_PACKS + 1, "the mirror's packs pile up: {after_60:?}");
    let without_packs = |c: CacheSizes| CacheSizes { packs: 0, ..c };
    assert_eq!(without_packs(after_60), without_packs(after_20), "the hub's caches grow with the number of commits");
    assert!(after_60.blobs < 40, "Git blobs held beyond the live snapshots: {after_60:?}");
    hub.stop().await;
}

/// Commits app `hostile` (on every cluster) made of `files`, next to a change to app `web`, on
/// dev; then checks that the hub refused `hostile` alone, with an error naming it and saying
/// `expect`, planned `web`'s change anyway, and still answers the fleet API.
async fn hostile_app_is_refused(files: &[(&str, String)], symlinks: &[(&str, &str)], expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(&dir.path().join("repo"));
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    repo.write("apps/hostile/app.yaml", &app_yaml("hostile", "web", &[]));
    for (path, contents) in files {
        repo.write(&format!("apps/hostile/{path}"), contents);
    }
    for (link, target) in symlinks {
        let link = repo.dir.join("apps/hostile").join(link);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, link).unwrap();
    }
    let greeting = "hello ${cluster.name} after the attack";
    repo.write("apps/web/base/config.yaml", &configmap_yaml("web-config", &[("greeting", greeting)]));
    let head = repo.commit("hostile content");
    hub.sync("dev", &head).await;

    let errors = hub.hub.view().cluster_errors.get("dev-1").cloned().unwrap_or_default();
    assert!(
        errors.iter().any(|e| e.contains("hostile") && e.contains(expect)),
        "dev-1's errors name the app and say '{expect}': {errors:?}"
    );
    assert!(hub.objects("dev-1", "hostile").is_empty(), "nothing of the hostile app is assigned");
    let web = hub.objects("dev-1", "web");
    assert_eq!(web[0]["data"]["greeting"], "hello dev-1 after the attack", "the rest of the commit is planned");
    let mut viewer = ca.cli(&hub.address, Role::Viewer).await;
    viewer.list_clusters(ListClustersRequest {}).await.expect("the hub keeps serving");
    hub.stop().await;
}

fn kustomization_of(resource: &str) -> (&'static str, String) {
    ("base/kustomization.yaml", kustomization_yaml(&[resource], &[]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_git_yaml_alias_bomb_is_refused() {
    // A billion laughs: nine levels of ten aliases each expand to 10^9 strings.
    let mut bomb = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\nx:\n  a0: &a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n",
    );
    for level in 1..10 {
        let refs = vec![format!("*a{}", level - 1); 10].join(",");
        bomb.push_str(&format!("  a{level}: &a{level} [{refs}]\n"));
    }
    let files = [kustomization_of("bomb.yaml"), ("base/bomb.yaml", bomb)];
    hostile_app_is_refused(&files, &[], "budget breached").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_git_200000_deep_nesting_is_refused() {
    let deep = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\nx: {}{}\n",
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    let files = [kustomization_of("deep.yaml"), ("base/deep.yaml", deep)];
    hostile_app_is_refused(&files, &[], "recursion limit exceeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_git_symlink_outside_the_repository_is_refused() {
    let files = [kustomization_of("passwd.yaml")];
    hostile_app_is_refused(&files, &[("base/passwd.yaml", "/etc/passwd")], "outside the repository").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_git_dot_dot_traversal_is_refused() {
    let files = [kustomization_of("../../../../../../etc/passwd")];
    hostile_app_is_refused(&files, &[], "outside").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_git_64_mib_file_is_refused() {
    let big = configmap_yaml("big", &[("blob", &"x".repeat(64 << 20))]);
    let files = [kustomization_of("big.yaml"), ("base/big.yaml", big)];
    hostile_app_is_refused(&files, &[], "over the 16 MiB").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_webhook_replayed_signed_body_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let event = push_event("refs/heads/dev", &repo.head());
    post_webhook(&hub.http_address, WEBHOOK_SECRET, &event).expect("the first delivery is accepted");
    let replay = post_webhook(&hub.http_address, WEBHOOK_SECRET, &event).expect_err("a replay is refused");
    assert!(replay.contains("409"), "{replay}");
    post_webhook(&hub.http_address, WEBHOOK_SECRET, &push_event("refs/heads/dev", &repo.head()))
        .expect("a new delivery is accepted");
    hub.stop().await;
}

/// Sends `head` and then up to `body_bytes` of body to `address`; returns the status code the
/// server answers with (it may answer before reading the body).
async fn post_raw(address: &str, head: &str, body_bytes: usize) -> u16 {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    // The hub may answer and close before the body is sent: stop writing then.
    while sent < body_bytes && stream.write_all(&chunk[..(body_bytes - sent).min(chunk.len())]).await.is_ok() {
        sent += chunk.len();
        if sent >= 4 << 20 {
            break;
        }
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {response}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_webhook_100_mib_body_and_a_flood_leave_it_serving() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let huge = format!(
        "POST /webhook HTTP/1.1\r\nHost: hub\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: {}\r\n\r\n",
        100 << 20
    );
    assert_eq!(post_raw(&hub.http_address, &huge, 100 << 20).await, 413, "a 100 MiB body is refused at once");

    // A flood of forged deliveries from 50 connections at a time: each is refused.
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let address = hub.http_address.clone();
        flood.spawn(async move {
            let body = r#"{"ref":"refs/heads/dev"}"#;
            let forged = format!(
                "POST /webhook HTTP/1.1\r\nHost: hub\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                "0".repeat(64),
                body.len()
            );
            let mut refused = 0;
            for _ in 0..40 {
                refused += usize::from(post_raw(&address, &forged, 0).await == 401);
            }
            refused
        });
    }
    let refused: usize = flood.join_all().await.into_iter().sum();
    assert_eq!(refused, 2000, "every forged delivery is refused");
    // A real push still gets through, and the hub still serves agents and the CLI.
    repo.write("apps/web/base/config.yaml", &configmap_yaml("web-config", &[("greeting", "after the flood")]));
    let head = repo.commit("after the flood");
    post_webhook(&hub.http_address, WEBHOOK_SECRET, &push_event("refs/heads/dev", &head)).expect("accepted");
    eventually("the push after the flood to be fetched", || {
        let seen = hub.hub.view().branches.get("dev") == Some(&head);
        async move { seen.then_some(()) }
    })
    .await;
    let mut viewer = ca.cli(&hub.address, Role::Viewer).await;
    viewer.list_clusters(ListClustersRequest {}).await.expect("the fleet API answers");
    hub.stop().await;
}

/// An agent stream to `hub` as `cluster` (a certificate `ca` issues), fed from `outbound`.
async fn agent_stream(
    ca: &TestCa,
    hub: &str,
    cluster: &str,
    outbound: tokio::sync::mpsc::Receiver<AgentMessage>,
) -> Result<tonic::Streaming<convoy_shared::proto::HubMessage>, tonic::Status> {
    let cert = ca.issue(Identity::Cluster(cluster.into()));
    let address = HubAddress::parse(hub, None).unwrap();
    let channel = tls::connect(&address, ca.client_tls(Some(&cert)), Duration::from_secs(5)).await.expect("connect");
    let mut client = AgentServiceClient::new(channel);
    let outbound = tokio_stream::wrappers::ReceiverStream::new(outbound);
    client.connect(outbound).await.map(tonic::Response::into_inner)
}

fn hello(cluster: &str) -> AgentMessage {
    AgentMessage {
        kind: Some(AgentKind::Hello(Hello {
            agent_version: "attacker".into(),
            cluster_name: cluster.into(),
            ..Default::default()
        })),
    }
}

async fn applied_revision(ca: &TestCa, hub: &str, cluster: &str) -> Option<String> {
    let mut viewer = ca.cli(hub, Role::Viewer).await;
    let clusters = viewer.list_clusters(ListClustersRequest {}).await.ok()?.into_inner().clusters;
    clusters.into_iter().find(|c| c.name == cluster).map(|c| c.applied_revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_grpc_100_mib_report_is_refused_and_the_hub_keeps_serving() {
    let ca = TestCa::new();
    let hub = HubProcess::start(&ca.certs.0, "127.0.0.1:0");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello("eu-1")).await.unwrap();
    let mut inbound = agent_stream(&ca, &hub.address, "eu-1", rx).await.expect("the stream opens");
    let huge = Report { revision: "r".repeat(100 << 20), ..Default::default() };
    tx.send(AgentMessage { kind: Some(AgentKind::Report(huge)) }).await.unwrap();
    // The hub ends that stream; it never records the report.
    let ended = loop {
        match inbound.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    assert_ne!(applied_revision(&ca, &hub.address, "eu-1").await.map(|r| r.len()), Some(100 << 20));
    // Another agent still connects and reports.
    let cert = ca.issue(Identity::Cluster("us-1".into()));
    let agent = RunningAgent::start(ca.agent_config(&hub.address, Some(&cert), "us-1"));
    agent.handle.reports.push(convoy_shared::model::report::Report {
        revision: "good".into(),
        applied: true,
        ..Default::default()
    });
    eventually("us-1's report recorded", || async {
        (applied_revision(&ca, &hub.address, "us-1").await.as_deref() == Some("good")).then_some(())
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_grpc_report_naming_another_clusters_objects_stays_with_its_sender() {
    let ca = TestCa::new();
    let hub = HubProcess::start(&ca.certs.0, "127.0.0.1:0");
    let victim_cert = ca.issue(Identity::Cluster("us-1".into()));
    let victim = RunningAgent::start(ca.agent_config(&hub.address, Some(&victim_cert), "us-1"));
    victim.handle.reports.push(convoy_shared::model::report::Report {
        revision: "victim".into(),
        applied: true,
        ..Default::default()
    });
    eventually("us-1's own report", || async {
        (applied_revision(&ca, &hub.address, "us-1").await.as_deref() == Some("victim")).then_some(())
    })
    .await;
    // eu-1 says it is us-1 (in Hello) and reports us-1's objects as Degraded.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello("us-1")).await.unwrap();
    let _inbound = agent_stream(&ca, &hub.address, "eu-1", rx).await.expect("the stream opens");
    let lie = Report {
        revision: "forged".into(),
        applied: true,
        apps: vec![AppStatus { name: "web".into(), health: Health::Degraded as i32, ..Default::default() }],
        ..Default::default()
    };
    tx.send(AgentMessage { kind: Some(AgentKind::Report(lie)) }).await.unwrap();
    eventually("eu-1's report recorded under eu-1", || async {
        (applied_revision(&ca, &hub.address, "eu-1").await.as_deref() == Some("forged")).then_some(())
    })
    .await;
    assert_eq!(applied_revision(&ca, &hub.address, "us-1").await.as_deref(), Some("victim"), "us-1 untouched");
    victim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_grpc_a_stream_that_never_sends_hello_is_closed_and_others_are_served() {
    let ca = TestCa::new();
    let hub = HubProcess::start(&ca.certs.0, "127.0.0.1:0");
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let mut silent = agent_stream(&ca, &hub.address, "eu-1", rx).await.expect("the stream opens");
    // Meanwhile a real agent connects.
    let cert = ca.issue(Identity::Cluster("us-1".into()));
    let agent = RunningAgent::start(ca.agent_config(&hub.address, Some(&cert), "us-1"));
    wait_connected(&ca, &hub.address, "us-1").await;
    let ended = loop {
        match silent.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let status = ended.expect_err("the hub ends a stream without Hello with an error");
    assert!(status.message().contains("no Hello"), "{status:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_grpc_1000_connects_from_one_certificate_leave_one_stream() {
    let ca = TestCa::new();
    let hub = HubProcess::start(&ca.certs.0, "127.0.0.1:0");
    let cert = ca.issue(Identity::Cluster("eu-1".into()));
    let address = HubAddress::parse(&hub.address, None).unwrap();
    let tls_config = ca.client_tls(Some(&cert));
    // 1,000 connections with one certificate, 50 at a time, each opening a stream with Hello.
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (address, tls_config) = (address.clone(), tls_config.clone());
            batch.spawn(async move {
                let channel = tls::connect(&address, tls_config, Duration::from_secs(10)).await.ok()?;
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tx.send(hello("eu-1")).await.ok()?;
                let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
                let inbound = AgentServiceClient::new(channel).connect(outbound).await.ok()?.into_inner();
                Some((tx, inbound))
            });
        }
        streams.extend(batch.join_all().await.into_iter().flatten());
    }
    assert!(!streams.is_empty());
    // Every stream but the newest is closed by the hub; the hub lists eu-1 once and serves others.
    let mut viewer = ca.cli(&hub.address, Role::Viewer).await;
    let listed = viewer.list_clusters(ListClustersRequest {}).await.expect("the fleet API answers").into_inner();
    assert_eq!(listed.clusters.iter().filter(|c| c.name == "eu-1" && c.connected).count(), 1, "{listed:?}");
    let closed = hub.log_lines("a newer stream replaced it").len();
    assert!(closed >= streams.len() - 1, "{closed} of {} older streams closed", streams.len());
    let other = ca.issue(Identity::Cluster("us-1".into()));
    let agent = RunningAgent::start(ca.agent_config(&hub.address, Some(&other), "us-1"));
    wait_connected(&ca, &hub.address, "us-1").await;
    agent.stop().await;
}

/// Counts a fault test's losses for the suite's summary line (`e2e/matrix.sh` reads
/// `$CONVOY_MATRIX_DIR/<test>`), then asserts there were none.
fn account(test: &str, lost: usize, unintended_deletions: usize) {
    if let Ok(dir) = std::env::var("CONVOY_MATRIX_DIR") {
        let _ = std::fs::write(std::path::Path::new(&dir).join(test), format!("{lost} {unintended_deletions}\n"));
    }
    assert_eq!((lost, unintended_deletions), (0, 0), "{test}: (objects lost, unintended deletions)");
}

/// A TCP proxy the test controls: forwards to `upstream` until partitioned; partitioned, it
/// drops every connection it carries and every new one, as a network cut would.
struct Partition {
    address: String,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Partition {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut watch = watch.clone();
                if *watch.borrow() {
                    continue; // dropped: the client sees the connection close
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Partition { address, cut }
    }

    fn set(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The managed objects of `cluster` as (kind/namespace/name → uid).
fn managed_uids(cluster: &kubesim::SimCluster) -> BTreeMap<String, String> {
    cluster
        .list_all()
        .into_iter()
        .filter(|o| o["metadata"]["labels"]["convoy.dev/cluster"].is_string())
        .map(|o| {
            let m = &o["metadata"];
            let key = format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap_or(""),
                m["namespace"].as_str().unwrap_or(""),
                m["name"].as_str().unwrap_or("")
            );
            (key, m["uid"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

/// Objects of `before` missing from `after` (lost), and those present with another uid
/// (deleted and created again).
fn losses(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> (usize, usize) {
    let lost = before.keys().filter(|k| !after.contains_key(*k)).count();
    let recreated = before.iter().filter(|(k, uid)| after.get(*k).is_some_and(|now| now != *uid)).count();
    (lost, recreated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_agent_partitioned_from_the_hub_keeps_enforcing_and_reports_after() {
    // A few seconds in the suite; CONVOY_LONG_FAULTS=1 holds the partition for 60 s.
    let hold = if std::env::var_os("CONVOY_LONG_FAULTS").is_some() { 60 } else { 3 };
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(&dir.path().join("repo"));
    let head = repo.head();
    let ca = TestCa::new();
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &["--repo", &repo.url()]);
    let partition = Partition::start(hub.address.clone()).await;
    let kube = kubesim::SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = kube.cluster("dev-1").unwrap();
    create_standard_namespaces(cluster);
    let cache = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let flags = ["--metrics-listen", &metrics, "--heartbeat-seconds", "1", "--backoff-max-seconds", "1"];
    let _agent = spawn_agent(&ca, &partition.address, cluster, cache.path(), &flags);
    eventually("dev-1 applied its assignment", || async {
        (applied_revision(&ca, &hub.address, "dev-1").await.as_deref() == Some(head.as_str())).then_some(())
    })
    .await;
    let before = managed_uids(cluster);
    assert!(before.len() >= 2, "{before:?}");
    let received = |m: &BTreeMap<String, f64>| m["convoy_hub_reports_received_total"];
    let reports_before = received(&scrape_metrics(&hub.http_address).await);

    partition.set(true);
    eventually("the agent to see the hub gone", || async {
        (scrape_metrics(&metrics).await["convoy_agent_hub_connected"] == 0.0).then_some(())
    })
    .await;
    // Someone edits a managed object while the hub is unreachable: the agent heals it from its
    // cache, and queues the report.
    let mut edited = cluster.get("v1", "ConfigMap", Some("web"), "web-config").unwrap();
    edited["data"]["greeting"] = "edited during the partition".into();
    let edited = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "web-config", "namespace": "web"}, "data": edited["data"]});
    cluster.apply("kubectl-edit", &edited, true).unwrap();
    eventually("the agent to heal the edit from its cache", || async {
        let greeting = cluster.get("v1", "ConfigMap", Some("web"), "web-config").unwrap()["data"]["greeting"].clone();
        (greeting == "hello dev-1").then_some(())
    })
    .await;
    eventually("the report queued", || async {
        (scrape_metrics(&metrics).await["convoy_agent_report_queue_depth"] > 0.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(hold)).await;
    assert_eq!(received(&scrape_metrics(&hub.http_address).await), reports_before, "nothing crossed the cut");

    partition.set(false);
    eventually("the queued reports delivered after the partition", || async {
        let agent = scrape_metrics(&metrics).await;
        let delivered = agent["convoy_agent_hub_connected"] == 1.0 && agent["convoy_agent_report_queue_depth"] == 0.0;
        (delivered && received(&scrape_metrics(&hub.http_address).await) > reports_before).then_some(())
    })
    .await;
    wait_connected(&ca, &hub.address, "dev-1").await;
    let (lost, recreated) = losses(&before, &managed_uids(cluster));
    account("fault_agent_partitioned_from_the_hub_keeps_enforcing_and_reports_after", lost, recreated);
}

#[test]
fn fault_a_corrupted_store_is_a_start_up_error_naming_the_file() {
    let ca = TestCa::new();
    let data = tempfile::tempdir().unwrap();
    let store = data.path().join("convoy.redb");
    std::fs::write(&store, b"this is not a redb file, a disk went bad".repeat(200)).unwrap();
    let out = std::process::Command::new(workspace_binary("convoy-hub"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "off", "--certs"])
        .arg(&ca.certs.0)
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the hub must not start on a corrupted store: {stderr}");
    assert!(stderr.contains(&store.display().to_string()), "the error names the file: {stderr}");
    assert!(stderr.contains("corrupted") && stderr.contains("restore a backup"), "and says what to do: {stderr}");
    let garbage = std::fs::read(&store).unwrap();
    assert!(garbage.starts_with(b"this is not a redb file"), "the bad file is left for inspection, not replaced");
}

/// A bootstrap token for `cluster`, created by an admin.
async fn bootstrap_token(ca: &TestCa, hub: &str, cluster: &str) -> String {
    let mut admin = ca.cli(hub, Role::Admin).await;
    let request = CreateTokenRequest { cluster: cluster.into(), ..Default::default() };
    admin.create_token(request).await.expect("an admin creates a token").into_inner().token
}

/// Registers with `token` and `csr_pem`, without a client certificate.
async fn register(ca: &TestCa, hub: &str, token: &str, csr_pem: &str) -> Result<CertificateResponse, tonic::Status> {
    let address = HubAddress::parse(hub, None).unwrap();
    let channel = tls::connect(&address, ca.client_tls(None), Duration::from_secs(5)).await.expect("connect");
    let request = RegisterRequest { bootstrap_token: token.into(), csr_pem: csr_pem.into() };
    RegistrationServiceClient::new(channel).register(request).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_registration_token_guessing_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let token = bootstrap_token(&ca, &hub.address, "dev-1").await;
    let secret = token.trim_start_matches("cvt_");
    assert!(secret.len() * 4 >= 128 || secret.len() * 6 >= 128, "tokens carry at least 128 random bits: {token}");
    let csr = generate_csr("dev-1").unwrap().cert_pem;
    // Guesses: each refused, and after ten the address is refused before any token is looked at.
    let mut codes = Vec::new();
    // Near misses, never the token itself (its last two hex digits may be any of them).
    let guesses = (0..=255u8).map(|i| format!("cvt_{}{i:02x}", &secret[..secret.len() - 2])).filter(|g| *g != token);
    for guess in guesses.take(12) {
        codes.push(register(&ca, &hub.address, &guess, &csr).await.unwrap_err().code());
    }
    assert!(codes[..10].iter().all(|c| *c == tonic::Code::Unauthenticated), "{codes:?}");
    assert!(codes[10..].iter().all(|c| *c == tonic::Code::ResourceExhausted), "{codes:?}");
    // Even the right token waits out the window from that address: guessing buys nothing.
    let refused = register(&ca, &hub.address, &token, &csr).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("too many failed registrations"), "{refused:?}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_registration_csr_asking_for_extra_names_or_ca_gets_neither() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let token = bootstrap_token(&ca, &hub.address, "dev-1").await;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["hub.example.com".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI("spiffe://convoy/user/admin/mallory".try_into().unwrap()));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let issued = register(&ca, &hub.address, &token, &csr).await.expect("the token is good");
    let der = &tls::parse_certs(&issued.cert_pem, "issued").unwrap()[0];
    assert_eq!(Identity::from_certificate_der(der).unwrap(), Identity::Cluster("dev-1".into()));
    let contains = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(b"hub.example.com") && !contains(b"mallory"), "no name the CSR asked for");
    // basicConstraints (2.5.29.19) with cA TRUE: 06 03 55 1d 13 … 01 01 ff.
    let ca_true = der
        .windows(12)
        .any(|w| w[..5] == [0x06, 0x03, 0x55, 0x1d, 0x13] && w[5..].windows(3).any(|b| b == [0x01, 0x01, 0xff]));
    assert!(!ca_true, "the issued certificate is not a CA");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_ten_minutes_of_clock_skew_between_hub_and_agent() {
    // Certificates are back-dated, so a peer whose clock is 10 minutes behind accepts one made
    // just now. Checked with the verifiers the hub and agent use, at a clock 10 minutes back.
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let token = bootstrap_token(&ca, &hub.address, "dev-1").await;
    let csr = generate_csr("dev-1").unwrap();
    let issued = register(&ca, &hub.address, &token, &csr.cert_pem).await.expect("registered");
    let behind = rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(unix_secs() as u64 - 600));
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(tls::parse_certs(ca.ca.cert_pem(), "ca").unwrap().remove(0)).unwrap();
        std::sync::Arc::new(roots)
    };
    // The agent, 10 minutes behind, verifies the hub's certificate (made just now by `ca init`).
    let hub_cert = std::fs::read_to_string(ca.certs.hub_cert()).unwrap();
    let hub_cert = tls::parse_certs(&hub_cert, "hub").unwrap().remove(0);
    let server = rustls::client::WebPkiServerVerifier::builder(roots.clone()).build().unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    server.verify_server_cert(&hub_cert, &[], &name, &[], behind).expect("the hub's certificate, 10 minutes early");
    // The hub, 10 minutes behind, verifies the certificate it just signed for the agent.
    let agent_cert = tls::parse_certs(&issued.cert_pem, "agent").unwrap().remove(0);
    let client = rustls::server::WebPkiClientVerifier::builder(roots).build().unwrap();
    client.verify_client_cert(&agent_cert, &[], behind).expect("the agent's certificate, 10 minutes early");
    // And the agent, with that certificate, connects and renews.
    let cert = IssuedCert { cert_pem: issued.cert_pem.clone(), key_pem: csr.key_pem.clone() };
    let address = HubAddress::parse(&hub.address, None).unwrap();
    let channel = tls::connect(&address, ca.client_tls(Some(&cert)), Duration::from_secs(5)).await.unwrap();
    let renewed = RegistrationServiceClient::new(channel)
        .renew(RenewRequest { csr_pem: generate_csr("dev-1").unwrap().cert_pem })
        .await
        .expect("renewal works");
    let renewed = tls::parse_certs(&renewed.into_inner().cert_pem, "renewed").unwrap().remove(0);
    client_verifies_early(&renewed, &ca, behind);
    hub.stop().await;
}

fn client_verifies_early(cert: &rustls_pki_types::CertificateDer<'_>, ca: &TestCa, at: rustls_pki_types::UnixTime) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(tls::parse_certs(ca.ca.cert_pem(), "ca").unwrap().remove(0)).unwrap();
    let client = rustls::server::WebPkiClientVerifier::builder(std::sync::Arc::new(roots)).build().unwrap();
    client.verify_client_cert(cert, &[], at).expect("a renewed certificate, 10 minutes early");
}

/// The bulk ConfigMaps on `cluster` (name → uid).
fn bulk_uids(cluster: &kubesim::SimCluster) -> BTreeMap<String, String> {
    let list = cluster.list("v1", "ConfigMap", Some("bulk"));
    list.iter()
        .map(|o| {
            (o["metadata"]["name"].as_str().unwrap().to_string(), o["metadata"]["uid"].as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_agent_killed_mid_apply_converges_and_forgets_nothing_it_applied() {
    let dir = tempfile::tempdir().unwrap();
    let repo = bulk_fleet(&dir.path().join("repo"), 1, 300, 64);
    let ca = TestCa::new();
    let hub =
        HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &["--repo", &repo.url(), "--poll-seconds", "1"]);
    let kube = kubesim::SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = kube.cluster("dev-1").unwrap();
    cluster.apply("test", &convoy_agent::testing::namespace("bulk"), true).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let slow = ["--concurrency", "2"];
    let agent = spawn_agent(&ca, &hub.address, cluster, cache.path(), &slow);
    let first = repo.head();
    eventually("rev 1 applied", || async {
        (applied_revision(&ca, &hub.address, "dev-1").await.as_deref() == Some(first.as_str())).then_some(())
    })
    .await;
    let applied_first = bulk_uids(cluster);
    assert_eq!(applied_first.len(), 300);

    // Rev 2 adds 300 objects; the agent is killed -9 with some of them created.
    write_bulk_app(&repo, 0, 600, 64, "v1");
    repo.commit("300 more");
    cluster.faults().set_latency(Duration::from_millis(20));
    eventually("the agent in the middle of applying rev 2", || async {
        let n = bulk_uids(cluster).len();
        (n > 320 && n < 580).then_some(())
    })
    .await;
    drop(agent);
    cluster.faults().clear();
    let created_before_the_kill: Vec<String> =
        bulk_uids(cluster).into_keys().filter(|name| !applied_first.contains_key(name)).collect();
    assert!(!created_before_the_kill.is_empty());

    // While it is down, rev 3 drops those 300 again: what the killed pass created must still
    // be known to the inventory, or it would be left behind forever.
    write_bulk_app(&repo, 0, 300, 64, "v1");
    let third = repo.commit("back to 300");
    let _restarted = spawn_agent(&ca, &hub.address, cluster, cache.path(), &[]);
    eventually("rev 3 applied by the restarted agent", || async {
        (applied_revision(&ca, &hub.address, "dev-1").await.as_deref() == Some(third.as_str())).then_some(())
    })
    .await;
    let now = bulk_uids(cluster);
    let lost = applied_first.keys().filter(|name| !now.contains_key(*name)).count();
    let recreated = applied_first.iter().filter(|(name, uid)| now.get(*name).is_some_and(|u| u != *uid)).count();
    let orphans: Vec<&String> = created_before_the_kill.iter().filter(|name| now.contains_key(*name)).collect();
    assert!(orphans.is_empty(), "objects the killed pass created were forgotten by the inventory: {orphans:?}");
    account("fault_agent_killed_mid_apply_converges_and_forgets_nothing_it_applied", lost, recreated);
}

/// A tmpfs of `size` mounted at a temporary directory (the tests run as root), unmounted when
/// dropped.
struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root (the test suite runs as root)");
        TinyDisk { dir }
    }

    /// Fills what is left of the disk.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.dir.path().join("filler")).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_full_data_directory_keeps_the_hub_serving_and_says_what_it_cannot_write() {
    let disk = TinyDisk::mount("4m");
    let data = disk.dir.path().join("data");
    let ca = TestCa::new();
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &["--data", data.to_str().unwrap()]);
    let cert = ca.issue(Identity::Cluster("eu-1".into()));
    let agent = RunningAgent::start(ca.agent_config(&hub.address, Some(&cert), "eu-1"));
    wait_connected(&ca, &hub.address, "eu-1").await;
    disk.fill();
    // Reports keep coming; the store cannot take them.
    for i in 0..200 {
        let report =
            convoy_shared::model::report::Report { revision: format!("r{i}"), applied: true, ..Default::default() };
        agent.handle.reports.push(report);
    }
    let line = eventually("the hub to say what it cannot write", || async {
        hub.log_lines("cannot write the store").into_iter().next()
    })
    .await;
    assert!(line.contains(&data.join("convoy.redb").display().to_string()) && line.contains("--data"), "{line}");
    // It keeps serving: the last report is in its status, and another agent connects.
    eventually("the last report shown although not persisted", || async {
        (applied_revision(&ca, &hub.address, "eu-1").await.as_deref() == Some("r199")).then_some(())
    })
    .await;
    let other = ca.issue(Identity::Cluster("us-1".into()));
    let second = RunningAgent::start(ca.agent_config(&hub.address, Some(&other), "us-1"));
    wait_connected(&ca, &hub.address, "us-1").await;
    second.stop().await;
    agent.stop().await;
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_hub_killed_while_writing_reports_restarts_on_a_consistent_store() {
    let data = tempfile::tempdir().unwrap();
    let serve = ["--data", data.path().to_str().unwrap()];
    let ca = TestCa::new();
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let address = hub.address.clone();
    let cert = ca.issue(Identity::Cluster("eu-1".into()));
    let agent = RunningAgent::start(ca.agent_config(&address, Some(&cert), "eu-1"));
    // A report every millisecond, through the kill and the restart.
    const REPORTS: usize = 3000;
    let reports = agent.handle.reports.clone();
    let pusher = tokio::spawn(async move {
        for i in 0..REPORTS {
            let (revision, digest) = (format!("r{i:04}"), format!("d{i:04}"));
            let report = convoy_shared::model::report::Report { revision, digest, applied: true, ..Default::default() };
            reports.push(report);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    eventually("the hub in the middle of the stream of reports", || async {
        let revision = applied_revision(&ca, &address, "eu-1").await?;
        (revision.as_str() > "r0300").then_some(())
    })
    .await;
    hub.kill();

    let restarted = HubProcess::start_with(&ca.certs.0, &address, "info", &serve);
    let mut viewer = ca.cli(&restarted.address, Role::Viewer).await;
    let request = convoy_shared::proto::HistoryRequest { cluster: "eu-1".into(), limit: REPORTS as u32 };
    let history: Vec<String> =
        viewer.history(request).await.expect("history").into_inner().entries.into_iter().map(|e| e.revision).collect();
    // What reached the store is whole and in order: newest first, nothing twice.
    assert!(!history.is_empty(), "reports written before the kill are kept");
    assert!(history.windows(2).all(|w| w[0] > w[1]), "history after kill -9 is out of order: {history:?}");
    // The agent comes back and its later reports arrive.
    pusher.await.unwrap();
    let last = format!("r{:04}", REPORTS - 1);
    eventually("the agent's later reports after the restart", || async {
        (applied_revision(&ca, &restarted.address, "eu-1").await.as_deref() == Some(last.as_str())).then_some(())
    })
    .await;
    agent.stop().await;
}
