//! Soak benchmark of the hub's memory: the standard 4-cluster fleet (a `convoy-hub` process,
//! in-process agents on kubesim), then N commits (10,000 by default) on dev, each promoted at
//! once to stage and prod (their branches fast-forwarded), announced by the webhook and awaited
//! until all four clusters applied it. Prints the hub's RSS as it goes, the growth per commit in the first and
//! second half (and their ratio), and whether RSS reached a plateau.
//!
//! Run: `cargo build --release -p convoy-e2e --bins -p convoy-hub && target/release/bench_soak [--commits N]`

use std::time::Instant;

use clap::Parser;
use convoy_e2e::fleet_repo::{configmap_yaml, create_standard_namespaces, standard_fleet};
use convoy_e2e::harness::{HubProcess, TestCa, WEBHOOK_SECRET, eventually, post_webhook, push_event, run_agents};
use convoy_shared::identity::Role;
use convoy_shared::proto::ListClustersRequest;
use kubesim::SimFleet;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Commits to push.
    #[arg(long, default_value_t = 10_000)]
    commits: usize,
    /// RSS samples to print over the run.
    #[arg(long, default_value_t = 20)]
    samples: usize,
}

/// The standard fleet's clusters, each of which applies every commit.
const CLUSTERS: [&str; 4] = ["dev-1", "stage-1", "prod-eu", "prod-us"];

/// Resident set size of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    convoy_shared::install_crypto_provider();
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let repo = standard_fleet(&dir.path().join("repo"));
    let ca = TestCa::new();
    let serve = ["--repo", &repo.url(), "--poll-seconds", "3600", "--webhook-secret", WEBHOOK_SECRET];
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "warn,convoy_hub=info", &serve);
    let kube = SimFleet::start(&CLUSTERS).await?;
    for name in CLUSTERS {
        create_standard_namespaces(kube.cluster(name).expect("a simulated cluster"));
    }
    let shutdown = CancellationToken::new();
    let agents = run_agents(&ca, &hub.address, &kube, &CLUSTERS, &dir.path().join("caches"), &shutdown).await;
    let viewer = ca.cli(&hub.address, Role::Viewer).await;
    let applied = |head: String| {
        let viewer = viewer.clone();
        async move {
            let request = ListClustersRequest {};
            let listed = viewer.clone().list_clusters(request).await.ok()?.into_inner().clusters;
            let done = |name: &str| listed.iter().any(|c| c.name == name && c.applied_revision == head);
            CLUSTERS.iter().all(|name| done(name)).then_some(())
        }
    };
    eventually("the first commit applied", || applied(repo.head())).await;

    let pid = hub.process.pid();
    let start_kib = rss_kib(pid);
    println!("{} commits on the standard fleet (4 clusters); hub RSS at start {:.1} MiB", args.commits, mib(start_kib));
    let every = (args.commits / args.samples.max(1)).max(1);
    let mut mid_kib = start_kib;
    let started = Instant::now();
    for i in 1..=args.commits {
        let greeting = format!("hello ${{cluster.name}} {i}");
        repo.write("apps/web/base/config.yaml", &configmap_yaml("web-config", &[("greeting", &greeting)]));
        let head = repo.commit(&format!("soak {i}"));
        repo.git(&["branch", "-f", "stage", &head]);
        repo.git(&["branch", "-f", "main", &head]);
        let event = push_event("refs/heads/dev", &head);
        let address = hub.http_address.clone();
        tokio::task::spawn_blocking(move || post_webhook(&address, WEBHOOK_SECRET, &event))
            .await?
            .map_err(anyhow::Error::msg)?;
        eventually("the commit applied", || applied(head.clone())).await;
        if i == args.commits / 2 {
            mid_kib = rss_kib(pid);
        }
        if i % every == 0 || i == args.commits {
            let rate = i as f64 / started.elapsed().as_secs_f64();
            println!("  commit {i:>6}: RSS {:>7.1} MiB ({rate:.0} commits/s)", mib(rss_kib(pid)));
        }
    }
    let end_kib = rss_kib(pid);
    shutdown.cancel();
    for agent in agents {
        let _ = agent.await;
    }

    let half = (args.commits / 2).max(1) as f64;
    let first = (mid_kib as f64 - start_kib as f64) / half;
    let second = (end_kib as f64 - mid_kib as f64) / half;
    println!("growth per commit: first half {first:.2} KiB, second half {second:.2} KiB");
    println!(
        "ratio (second half / first half growth): {:.2}",
        if first.abs() > f64::EPSILON { second / first } else { 0.0 }
    );
    // A plateau: the second half adds less than 1 MiB or 5 % of what the hub held at mid-run.
    let plateau = (end_kib as f64 - mid_kib as f64) < (1024.0f64).max(mid_kib as f64 * 0.05);
    println!(
        "{}: RSS {:.1} -> {:.1} -> {:.1} MiB (start, mid-run, end); goal: a plateau",
        if plateau { "plateau" } else { "NO plateau" },
        mib(start_kib),
        mib(mid_kib),
        mib(end_kib)
    );
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
