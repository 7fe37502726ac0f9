//! Benchmark of assignment transfer, in one run against one hub:
//! 1. bytes on the wire (TLS records, counted by a loopback proxy) to a cluster for a one-app
//!    change among 30 apps, for the ways an agent can take assignments: whole and uncompressed
//!    (what every agent got before apps were content-addressed), gRPC-compressed only, by digest
//!    only, by digest with gRPC compression, and by digest with each app content part compressed
//!    once by the hub (`Hello.content_zstd`: what the agent does now);
//! 2. time for a 50 MiB / 20,000-object assignment from the hub publishing it to the agent having
//!    applied it on kubesim, with the link's share next to the apply's.
//!
//! Run: `cargo build --release -p convoy-e2e --bin bench_assign && target/release/bench_assign`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use convoy_agent::reconciler::ReconcilerConfig;
use convoy_e2e::fleet_repo::{FleetRepo, bulk_fleet, cluster_yaml, fleet_yaml, write_bulk_app};
use convoy_e2e::harness::{InProcessHub, TestCa};
use convoy_shared::identity::Identity;
use convoy_shared::proto::agent_message::Kind as AgentKind;
use convoy_shared::proto::agent_service_client::AgentServiceClient;
use convoy_shared::proto::hub_message::Kind as HubKind;
use convoy_shared::proto::{AgentMessage, Hello, HubMessage};
use convoy_shared::tls::{self, HubAddress};
use kubesim::SimFleet;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;

const APPS: usize = 30;
const OBJECTS_PER_APP: usize = 40;
const OBJECT_BYTES: usize = 1_000;

const BIG_APPS: usize = 10;
const BIG_OBJECTS_PER_APP: usize = 2_000;
const BIG_OBJECT_BYTES: usize = 2_500;

/// A TCP proxy on loopback to `upstream` counting the bytes that come back from it.
async fn counting_proxy(upstream: String) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let address = format!("localhost:{}", listener.local_addr().unwrap().port());
    let down = Arc::new(AtomicU64::new(0));
    let counter = down.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else { return };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, down)
}

/// One way of taking assignments, as a raw agent stream through a counting proxy.
struct Receiver {
    label: &'static str,
    down: Arc<AtomicU64>,
    assignments: tokio::sync::watch::Receiver<(String, usize)>,
    _tx: tokio::sync::mpsc::Sender<AgentMessage>,
}

async fn receiver(
    ca: &TestCa,
    hub: &str,
    cluster: &str,
    label: &'static str,
    by_digest: bool,
    compression: Compression,
) -> Receiver {
    let upstream = format!("127.0.0.1:{}", hub.rsplit(':').next().unwrap());
    let (proxy, down) = counting_proxy(upstream).await;
    let cert = ca.issue(Identity::Cluster(cluster.into()));
    let address = HubAddress::parse(&proxy, None).unwrap();
    let channel = tls::connect(&address, ca.client_tls(Some(&cert)), Duration::from_secs(5)).await.unwrap();
    let mut client = AgentServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    if compression == Compression::Grpc {
        client = client.accept_compressed(CompressionEncoding::Zstd);
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let content_zstd = compression == Compression::Content;
    let hello = Hello { cluster_name: cluster.into(), apps_by_digest: by_digest, content_zstd, ..Default::default() };
    tx.send(AgentMessage { kind: Some(AgentKind::Hello(hello)) }).await.unwrap();
    let mut inbound =
        client.connect(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("connect").into_inner();
    let (seen_tx, seen_rx) = tokio::sync::watch::channel((String::new(), 0usize));
    tokio::spawn(async move {
        let mut bytes = 0usize;
        while let Ok(Some(HubMessage { kind: Some(kind) })) = inbound.message().await {
            match kind {
                HubKind::AppContent(content) => bytes += content.encoded_len(),
                HubKind::Assignment(a) => {
                    bytes += a.encoded_len();
                    seen_tx.send_replace((a.digest.clone(), bytes));
                    bytes = 0;
                }
                _ => {}
            }
        }
    });
    Receiver { label, down, assignments: seen_rx, _tx: tx }
}

/// How an agent asks for what the hub sends to be compressed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    /// gRPC compression of every message (`grpc-accept-encoding: zstd`).
    Grpc,
    /// Each app content part compressed once by the hub (`Hello.content_zstd`).
    Content,
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn one_app_change(ca: &TestCa) {
    let dir = tempfile::tempdir().unwrap();
    let repo = bulk_fleet(dir.path(), APPS, OBJECTS_PER_APP, OBJECT_BYTES);
    let variants = [
        ("dev-1", "whole, uncompressed (before)", false, Compression::None),
        ("dev-2", "whole, gRPC zstd", false, Compression::Grpc),
        ("dev-3", "by digest, uncompressed", true, Compression::None),
        ("dev-4", "by digest, gRPC zstd", true, Compression::Grpc),
        ("dev-5", "by digest, zstd per part (now)", true, Compression::Content),
    ];
    for (cluster, ..) in &variants[1..] {
        repo.write(&format!("clusters/{cluster}.yaml"), &cluster_yaml(cluster, "dev", &[("region", "eu")]));
    }
    let head = repo.commit("five identical clusters");
    let hub = InProcessHub::start(ca, &repo.url()).await;
    hub.sync("main", &head).await;
    let mut receivers = Vec::new();
    for (cluster, label, by_digest, compression) in variants {
        receivers.push(receiver(ca, &hub.address, cluster, label, by_digest, compression).await);
    }
    let first = hub.digest("dev-1");
    for r in &receivers {
        until("the first assignment", Duration::from_secs(60), || r.assignments.borrow().0 == first).await;
    }
    let total: usize = hub.hub.assignment("dev-1").unwrap().apps.iter().map(|a| a.objects.len()).sum();
    println!(
        "one-app change among {APPS} apps ({total} objects, ~{} per app on the wire as JSON):",
        human((OBJECTS_PER_APP * (OBJECT_BYTES + 120)) as u64)
    );
    println!("  {:<32} {:>12} {:>12} {:>14}", "agent takes assignments", "first", "change", "change (msgs)");
    let initial: Vec<u64> = receivers.iter().map(|r| r.down.load(Ordering::Relaxed)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled: Vec<u64> = receivers.iter().map(|r| r.down.load(Ordering::Relaxed)).collect();

    write_bulk_app(&repo, 7, OBJECTS_PER_APP, OBJECT_BYTES, "v2");
    let v2 = repo.commit("bulk-07: v2");
    hub.sync("main", &v2).await;
    let second = hub.digest("dev-1");
    for r in &receivers {
        until("the changed assignment", Duration::from_secs(60), || r.assignments.borrow().0 == second).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut change = Vec::new();
    for (i, r) in receivers.iter().enumerate() {
        let bytes = r.down.load(Ordering::Relaxed) - settled[i];
        change.push(bytes);
        println!(
            "  {:<32} {:>12} {:>12} {:>14}",
            r.label,
            human(initial[i]),
            human(bytes),
            human(r.assignments.borrow().1 as u64)
        );
    }
    let now = change[change.len() - 1];
    println!(
        "  ratio, change bytes before / now: {:.1}x (whole uncompressed {} vs by digest + zstd per part {})",
        change[0] as f64 / now as f64,
        human(change[0]),
        human(now)
    );
    hub.stop().await;
}

async fn fifty_mib(ca: &TestCa) {
    let dir = tempfile::tempdir().unwrap();
    // The cluster first runs nothing; the big commit comes once the agent is connected.
    let repo = FleetRepo::init(dir.path());
    repo.write("convoy.yaml", &fleet_yaml(&[("dev", "main")]));
    repo.write("clusters/dev-1.yaml", &cluster_yaml("dev-1", "dev", &[("region", "eu")]));
    repo.commit("empty fleet");
    let hub = InProcessHub::start(ca, &repo.url()).await;
    let kube = SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = kube.cluster("dev-1").unwrap();
    cluster.apply("bench", &convoy_agent::testing::namespace("bulk"), true).unwrap();
    let cert = ca.issue(Identity::Cluster("dev-1".into()));
    let link = ca.agent_config(&hub.address, Some(&cert), "dev-1");
    let cache = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let client = cluster.client().await.unwrap();
    let agent = tokio::spawn(convoy_agent::run(
        ReconcilerConfig::new("dev-1", cache.path()),
        link,
        client,
        None,
        shutdown.clone(),
    ));
    let in_sync = |digest: &str| {
        hub.hub.cluster_infos().iter().any(|c| c.name == "dev-1" && c.in_sync && c.applied_digest == digest)
    };
    let empty = hub.digest("dev-1");
    until("the empty assignment applied", Duration::from_secs(60), || in_sync(&empty)).await;

    for app in 0..BIG_APPS {
        write_bulk_app(&repo, app, BIG_OBJECTS_PER_APP, BIG_OBJECT_BYTES, "v1");
    }
    let head = repo.commit("50 MiB");
    let started = Instant::now();
    hub.hub.request_refresh();
    until("the hub to publish", Duration::from_secs(600), || hub.digest("dev-1") != empty).await;
    let published = started.elapsed();
    let assignment = hub.hub.assignment("dev-1").unwrap();
    let objects: usize = assignment.apps.iter().map(|a| a.objects.len()).sum();
    let json_bytes: usize =
        assignment.apps.iter().flat_map(|a| &a.objects).map(|o| serde_json::to_vec(o).unwrap().len()).sum();
    let digest = assignment.digest.clone();
    let t0 = Instant::now();
    until("dev-1 to apply 50 MiB", Duration::from_secs(1800), || in_sync(&digest)).await;
    let applied = t0.elapsed();
    assert!(hub.hub.view().branches.get("main") == Some(&head));
    println!("50 MiB assignment ({objects} objects, {} as JSON, {BIG_APPS} apps):", human(json_bytes as u64));
    println!("  fetch + render + publish on the hub: {:.2} s", published.as_secs_f64());
    println!(
        "  publish → applied on kubesim (link + SSA of every object + report): {:.2} s ({:.0} objects/s)",
        applied.as_secs_f64(),
        objects as f64 / applied.as_secs_f64()
    );

    // Peer, in the same run: one app of the ten changes, so only that app travels and applies.
    write_bulk_app(&repo, 0, BIG_OBJECTS_PER_APP, BIG_OBJECT_BYTES, "v2");
    repo.commit("one app of ten changes");
    let before = hub.digest("dev-1");
    let started = Instant::now();
    hub.hub.request_refresh();
    until("the hub to publish the change", Duration::from_secs(600), || hub.digest("dev-1") != before).await;
    let digest = hub.digest("dev-1");
    let t0 = Instant::now();
    until("dev-1 to apply the change", Duration::from_secs(1800), || in_sync(&digest)).await;
    println!(
        "  peer: one app of the ten changes ({BIG_OBJECTS_PER_APP} objects): publish {:.2} s, publish → applied {:.2} s; ratio whole / one app: {:.1}x",
        started.elapsed().as_secs_f64() - t0.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        applied.as_secs_f64() / t0.elapsed().as_secs_f64()
    );
    shutdown.cancel();
    let _ = agent.await;
    hub.stop().await;
}

#[tokio::main]
async fn main() {
    convoy_shared::install_crypto_provider();
    let ca = TestCa::new();
    one_app_change(&ca).await;
    fifty_mib(&ca).await;
}
