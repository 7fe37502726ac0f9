//! `bench_fleet`: one `convoy-hub` process and N simulated agents (`fleetsim`, default 10,000,
//! each its own mutual-TLS stream and certificate) on a generated fleet of N clusters × 10 apps.
//! Prints each figure with its goal:
//!
//! - time until all N agents are connected (goal ≤ 20 s) and have applied their first assignment;
//! - hub RSS per connected idle agent (goal ≤ 40 KiB);
//! - a one-app change committed → an applied report from every agent at the hub, p50 / p99
//!   (goal p99 ≤ 1.5 s), from the hub's own history timestamps;
//! - hub killed (SIGKILL) and restarted → all N reconnected and in sync (goal ≤ 15 s), with when
//!   the new hub listened and its CPU over that time;
//! - hub RSS with N clusters × 10 apps assigned (goal ≤ 1 GiB), and with the agents connected too.
//!
//! The simulator shares the machine (and its cores) with the hub, as it would on a laptop.
//!
//! Run: `bash e2e/bench.sh fleet`, or `target/release/bench_fleet --agents 2000` for fewer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use convoy_e2e::bench::{
    FLEET_HUB_LOG, agents_arg, cpu_time, last_sync, ms, one_app_change, percentile, rss_kib, until,
};
use convoy_e2e::fleet_repo::{FleetRepo, generated_fleet};
use convoy_e2e::harness::{HubProcess, TestCa, connected_and_in_sync, spawn_fleetsim};
use convoy_shared::identity::Role;

const APPS: usize = 10;
const SECRET: &str = "bench-fleet-webhook";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    convoy_shared::install_crypto_provider();
    let agents = agents_arg("bench_fleet")?;
    let work = tempfile::tempdir()?;
    let repo = generated_fleet(&work.path().join("repo"), agents, APPS);
    let data = work.path().join("hub-data");
    let ca = TestCa::new();
    println!("bench_fleet: {agents} simulated agents, {agents} clusters x {APPS} apps (even apps on all, odd on half)");

    let started = Instant::now();
    let hub = start_hub(&ca, &repo, &data, "127.0.0.1:0");
    let viewer = ca.cli(&hub.address, Role::Viewer).await;
    until(&viewer, "every assignment published", |c| {
        c.iter().filter(|c| !c.assigned_digest.is_empty()).count() >= agents
    })
    .await;
    println!("  hub up, {agents} assignments published in {:.2} s", started.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_assigned = rss_kib(hub.process.pid());

    // All connect.
    let started = Instant::now();
    let sim = spawn_fleetsim(&hub.address, &ca.certs, 0..agents);
    until(&viewer, "every agent connected", |c| connected_and_in_sync(c).0 >= agents).await;
    let connected_in = started.elapsed();
    until(&viewer, "every agent in sync", |c| connected_and_in_sync(c).1 >= agents).await;
    let synced_in = started.elapsed();
    println!(
        "  all {agents} connected in {:.2} s, all applied their assignment in {:.2} s | goal connected <= 20 s: {}",
        connected_in.as_secs_f64(),
        synced_in.as_secs_f64(),
        verdict(connected_in <= Duration::from_secs(20))
    );

    // Idle memory per agent.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_idle = rss_kib(hub.process.pid());
    let per_agent = rss_idle.saturating_sub(rss_assigned) as f64 / agents as f64;
    println!(
        "  hub RSS per connected idle agent: {per_agent:.1} KiB ({rss_assigned} KiB before the agents, {rss_idle} KiB with them) | goal <= 40 KiB: {}",
        verdict(per_agent <= 40.0)
    );

    // A one-app change reaches every agent.
    let latencies =
        one_app_change(&repo, (&hub.http_address, SECRET), std::slice::from_ref(&viewer), agents, "bench").await?;
    let (p50, p99, max) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99), latencies[latencies.len() - 1]);
    println!(
        "  one-app change committed -> applied report at the hub, {} agents: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms | goal p99 <= 1.5 s: {}",
        latencies.len(),
        ms(p50),
        ms(p99),
        ms(max),
        verdict(p99 <= Duration::from_millis(1500))
    );
    let sync = last_sync(&hub);
    println!("    of which the hub's sync: {}, {} assignments published", sync.steps(), sync.field("published"));

    // The hub dies and comes back on the same address with the same data.
    let listen = hub.address.clone();
    hub.kill();
    let killed = Instant::now();
    let hub = start_hub(&ca, &repo, &data, &listen);
    let listening_in = killed.elapsed();
    let viewer = ca.cli(&hub.address, Role::Viewer).await;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_cpu(hub.process.pid(), sampling.clone()));
    until(&viewer, "every agent back and in sync", |c| connected_and_in_sync(c).1 >= agents).await;
    let back_in = killed.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let (cpu, busiest) = sampler.await?;
    println!(
        "  hub killed and restarted -> all {agents} reconnected and in sync in {:.2} s | goal <= 15 s: {}",
        back_in.as_secs_f64(),
        verdict(back_in <= Duration::from_secs(15))
    );
    println!(
        "    the new hub listened {:.2} s after the kill; the rest is the agents' reconnect backoff and the streams",
        listening_in.as_secs_f64()
    );
    println!(
        "    hub CPU meanwhile: {:.2} s, {:.0}% of one core on average, busiest second {:.0}% (2 cores)",
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / back_in.as_secs_f64(),
        100.0 * busiest
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_connected = rss_kib(hub.process.pid());
    // The goal is the assignments' memory; the agents' streams have their own goal above.
    println!(
        "  hub RSS with {agents} clusters x {APPS} apps assigned: {:.0} MiB | goal <= 1 GiB: {}",
        rss_assigned as f64 / 1024.0,
        verdict(rss_assigned <= 1 << 20)
    );
    println!(
        "    and with all {agents} agents connected (after the restart): {:.0} MiB",
        rss_connected as f64 / 1024.0
    );
    println!("  (fleetsim itself: {:.0} MiB RSS for {agents} agents)", rss_kib(sim.pid()) as f64 / 1024.0);
    Ok(())
}

/// `convoy-hub serve` reading `repo` (fetching only when the webhook calls), keeping `data`.
fn start_hub(ca: &TestCa, repo: &FleetRepo, data: &std::path::Path, listen: &str) -> HubProcess {
    let data = data.to_str().expect("a UTF-8 data path");
    let url = repo.url();
    let extra = ["--repo", &url, "--data", data, "--poll-seconds", "3600", "--webhook-secret", SECRET];
    HubProcess::start_with(&ca.certs.0, listen, FLEET_HUB_LOG, &extra)
}

/// CPU the hub used while `running`, and the largest share of one core it used in any second.
async fn sample_cpu(pid: u32, running: Arc<AtomicBool>) -> (Duration, f64) {
    let start = cpu_time(pid);
    let mut last = start;
    let mut busiest = 0f64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while running.load(Ordering::Relaxed) {
        tick.tick().await;
        let now = cpu_time(pid);
        busiest = busiest.max(now.saturating_sub(last).as_secs_f64());
        last = now;
    }
    (cpu_time(pid).saturating_sub(start), busiest)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
