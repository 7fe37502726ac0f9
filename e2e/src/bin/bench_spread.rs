//! `bench_spread`: agents spread over hub replicas (issue 34). Two `convoy-hub` replicas share
//! one PostgreSQL (as the tests start it); one leads the sync, both serve agents. Two `fleetsim`
//! processes run half the agents each, every agent given both replicas (`--hub A,B`) and
//! starting at a random one, as the agent does (it tries the next when its own is gone).
//! Prints:
//!
//! - all N connected (over both replicas) and in sync;
//! - each replica's RSS per connected idle agent;
//! - a one-app change committed → an applied report from every agent, p50 / p99 across both;
//! - the leading replica killed (SIGKILL) → its agents connected to the other replica and every
//!   agent in sync again (the other replica takes the lead meanwhile).
//!
//! Compare with one replica × N: `bash e2e/bench.sh fleet` (bench_fleet).
//!
//! Run: `bash e2e/bench.sh spread`, or `target/release/bench_spread --agents 2000`.

use std::time::{Duration, Instant};

use convoy_e2e::bench::{
    FLEET_HUB_LOG, PHASE_LIMIT, agents_arg, last_sync, ms, one_app_change, percentile, rss_kib, until,
};
use convoy_e2e::fleet_repo::{FleetRepo, generated_fleet};
use convoy_e2e::harness::{HubProcess, TestCa, TestPostgres, connected_and_in_sync, list_clusters, spawn_fleetsim};
use convoy_shared::identity::Role;
use convoy_shared::proto::ClusterInfo;
use kubesim::poll::within;

const APPS: usize = 10;
const SECRET: &str = "bench-spread-webhook";

/// A replica on `database`, reading `repo` when the webhook calls.
fn start_replica(ca: &TestCa, repo: &FleetRepo, database: &str) -> HubProcess {
    let url = repo.url();
    let extra = ["--repo", &url, "--store", database, "--poll-seconds", "3600", "--webhook-secret", SECRET];
    HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", FLEET_HUB_LOG, &extra)
}

/// Agents with a live stream to this replica.
fn connected_here(clusters: &[ClusterInfo]) -> usize {
    clusters.iter().filter(|c| c.connected).count()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    convoy_shared::install_crypto_provider();
    let agents = agents_arg("bench_spread")?;
    let half = agents / 2;
    let work = tempfile::tempdir()?;
    let repo = generated_fleet(&work.path().join("repo"), agents, APPS);
    let postgres = TestPostgres::start();
    let database = postgres.database();
    let ca = TestCa::new();
    println!(
        "bench_spread: 2 replicas on PostgreSQL, {agents} simulated agents ({half} dialing each first), {APPS} apps"
    );

    let a = start_replica(&ca, &repo, &database);
    a.process.wait_for_line("leading");
    let b = start_replica(&ca, &repo, &database);
    let (view_a, view_b) = (ca.cli(&a.address, Role::Viewer).await, ca.cli(&b.address, Role::Viewer).await);
    let published = |c: &[ClusterInfo]| c.iter().filter(|c| !c.assigned_digest.is_empty()).count() >= agents;
    until(&view_a, "every assignment published by the leader", published).await;
    until(&view_b, "every assignment followed by the other replica", published).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = [rss_kib(a.process.pid()), rss_kib(b.process.pid())];

    let started = Instant::now();
    let sims = [
        spawn_fleetsim(&format!("{},{}", a.address, b.address), &ca.certs, 0..half),
        spawn_fleetsim(&format!("{},{}", a.address, b.address), &ca.certs, half..agents),
    ];
    let split = within("every agent connected to one replica or the other", PHASE_LIMIT, || async {
        let (on_a, on_b) = (list_clusters(&view_a).await, list_clusters(&view_b).await);
        let split = on_a.zip(on_b).map(|(a, b)| (connected_here(&a), connected_here(&b)));
        if split.is_none_or(|(a, b)| a + b < agents) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            return None;
        }
        split
    })
    .await;
    let connected_in = started.elapsed();
    // The leader sees the other replica's agents through the reports it relays: in sync, but
    // not connected here.
    until(&view_a, "every agent in sync", |c| c.iter().filter(|c| c.in_sync).count() >= agents).await;
    println!(
        "  all {agents} connected over both replicas in {:.2} s ({} on A, {} on B), all in sync in {:.2} s",
        connected_in.as_secs_f64(),
        split.0,
        split.1,
        started.elapsed().as_secs_f64()
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    for (name, replica, before, count) in [("A (leads)", &a, before[0], split.0), ("B", &b, before[1], split.1)] {
        let idle = rss_kib(replica.process.pid());
        println!(
            "  replica {name}: RSS {:.0} MiB with every assignment, {:.0} MiB with its {count} agents: {:.1} KiB per agent",
            before as f64 / 1024.0,
            idle as f64 / 1024.0,
            idle.saturating_sub(before) as f64 / count as f64
        );
    }

    let latencies =
        one_app_change(&repo, (&a.http_address, SECRET), &[view_a.clone(), view_b.clone()], agents, "spread").await?;
    println!(
        "  one-app change committed -> applied report, {} agents over both replicas: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies[latencies.len() - 1])
    );
    println!("    of which the leader's sync: {}", last_sync(&a).steps());

    a.kill();
    let killed = Instant::now();
    until(&view_b, "every agent connected to B", |c| connected_here(c) >= agents).await;
    let moved_in = killed.elapsed();
    until(&view_b, "every agent in sync on B", |c| connected_and_in_sync(c).1 >= agents).await;
    println!(
        "  the leading replica killed -> its {} agents connected to the other in {:.2} s, all {agents} in sync there in {:.2} s",
        split.0,
        moved_in.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    b.process.wait_for_line("leading");
    println!("    and B took the lead");
    drop(sims);
    Ok(())
}
