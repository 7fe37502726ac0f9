//! `bench_notify`: what notifications cost.
//! 1. Events per second the outbox takes in (redb, batches of 100 as the observer appends them)
//!    and drains to a slow receiver (50 ms per answer, in order, as a worker delivers them),
//!    beside the receiver's own ceiling (1/latency).
//! 2. Sync latency (commit → every cluster of a 300-cluster fleet assigned it, through a
//!    `convoy-hub` process) with every event routed to a receiver that never answers, against
//!    the same fleet with no receivers, measured in the same run.
//!
//! Run: `bash e2e/bench.sh notify`.

use std::time::{Duration, Instant};

use convoy_e2e::bench::{median_p99, ms};
use convoy_e2e::fleet_repo::{self, FleetRepo};
use convoy_e2e::harness::{HubProcess, TestCa};
use convoy_hub::store::redb::RedbStore;
use convoy_hub::store::{Delivery, OutboxEntry, Store};
use convoy_shared::identity::Role;
use convoy_shared::proto::{ListClustersRequest, RefreshRequest};

const EVENTS: usize = 10_000;
const SLOW: Duration = Duration::from_millis(50);
const DRAINED: usize = 100;
const CLUSTERS: usize = 300;
const COMMITS: usize = 5;

fn entry(i: usize) -> OutboxEntry {
    let payload = format!(r#"{{"id":"bench-{i}","type":"cluster.degraded","message":"bench event {i}"}}"#);
    OutboxEntry {
        seq: 0,
        receiver: "slow".into(),
        payload,
        created_ms: convoy_shared::clock::unix_ms(),
        attempts: 0,
        next_ms: 0,
        state: Delivery::Pending,
        last_error: String::new(),
    }
}

/// Appends `EVENTS` entries in batches of 100; events per second.
fn intake(store: &RedbStore) -> f64 {
    let start = Instant::now();
    for batch in (0..EVENTS).collect::<Vec<_>>().chunks(100) {
        let entries: Vec<OutboxEntry> = batch.iter().map(|i| entry(*i)).collect();
        store.outbox_push(&entries).expect("push");
    }
    EVENTS as f64 / start.elapsed().as_secs_f64()
}

/// Delivers `DRAINED` entries in order to a receiver answering after `SLOW`; events per second.
async fn drain(store: &RedbStore) -> f64 {
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async {
            tokio::time::sleep(SLOW).await;
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::new();
    let start = Instant::now();
    for mut e in store.outbox_pending(Some("slow"), DRAINED).expect("pending") {
        let request = convoy_hub::notify::deliver::Request {
            url: url.clone(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: e.payload.clone().into_bytes(),
        };
        let sent = convoy_hub::notify::deliver::send(&http, request).await;
        e = convoy_hub::notify::outbox::settle(e, sent, convoy_shared::clock::unix_ms());
        assert_eq!(e.state, Delivery::Delivered);
        store.outbox_settle(&e).expect("settle");
    }
    DRAINED as f64 / start.elapsed().as_secs_f64()
}

/// A receiver that takes connections and never answers.
fn black_hole() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    format!("http://{address}/hook")
}

/// Median commit → every cluster assigned it, over `COMMITS` commits.
async fn sync_latency(ca: &TestCa, notifications: Option<&str>) -> (Duration, Duration) {
    let dir = tempfile::tempdir().expect("tmp");
    let repo: FleetRepo = fleet_repo::generated_fleet(dir.path(), CLUSTERS, 5);
    repo.checkout("main");
    if let Some(url) = notifications {
        let fleet = std::fs::read_to_string(dir.path().join("convoy.yaml")).expect("convoy.yaml");
        repo.write(
            "convoy.yaml",
            &format!("{fleet}  notifications:\n    receivers:\n    - {{name: hole, webhook: {{url: '{url}'}}}}\n    routes:\n    - {{receiver: hole}}\n"),
        );
        repo.commit("every event to a receiver that never answers");
    }
    for branch in ["dev", "stage"] {
        repo.checkout(branch);
        repo.merge("main");
    }
    repo.checkout("main");
    let serve = ["--repo", &repo.url(), "--poll-seconds", "3600"];
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let mut cli = ca.cli(&hub.address, Role::Admin).await;
    let mut samples = Vec::new();
    for i in 0..=COMMITS {
        let changed = fleet_repo::change_generated_base(&repo, 0, &format!("v{i}"));
        let head = repo.head();
        let start = Instant::now();
        cli.refresh(RefreshRequest {}).await.expect("refresh");
        loop {
            let clusters = cli.list_clusters(ListClustersRequest {}).await.expect("list").into_inner().clusters;
            let prod: Vec<_> = clusters.iter().filter(|c| c.environment == "prod").collect();
            if !prod.is_empty() && prod.iter().all(|c| c.assigned_revision == head) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "commit {head} never assigned ({changed:?})");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if i > 0 {
            samples.push(start.elapsed());
        }
    }
    drop(hub);
    median_p99(&mut samples)
}

#[tokio::main]
async fn main() {
    convoy_shared::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tmp");
    let store = RedbStore::open(dir.path()).expect("store");
    let taken = intake(&store);
    let drained = drain(&store).await;
    println!("outbox intake (redb, batches of 100): {taken:.0} events/s over {EVENTS} events");
    println!(
        "outbox drain to a receiver answering in {} ms, in order: {drained:.1} events/s (the receiver's ceiling: {:.1}; ratio {:.2})",
        SLOW.as_millis(),
        1.0 / SLOW.as_secs_f64(),
        drained * SLOW.as_secs_f64()
    );
    let ca = TestCa::new();
    let (base, base_p99) = sync_latency(&ca, None).await;
    let (hole, hole_p99) = sync_latency(&ca, Some(&black_hole())).await;
    println!(
        "sync latency, commit → {CLUSTERS} clusters assigned, median/max of {COMMITS}: no receivers {:.1}/{:.1} ms; every event to a receiver that never answers {:.1}/{:.1} ms; ratio {:.2}",
        ms(base),
        ms(base_p99),
        ms(hole),
        ms(hole_p99),
        ms(hole) / ms(base)
    );
}
