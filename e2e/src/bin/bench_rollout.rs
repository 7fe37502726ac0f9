//! Benchmark of rollouts: 100 clusters of one environment, a commit changing every cluster's
//! objects, timed from the push until the last cluster reported it applied. With three waves
//! (a canary of 10, eu 45, the rest 45; soak 0) against the same commits with no waves, in the
//! same run. The agents are in-process links that report every assignment applied and Healthy at
//! once (no Kubernetes behind them), so the figure is the hub's own overhead: wave bookkeeping and
//! the extra round trips a wave needs before the next opens.
//!
//! Run: `cargo build --release -p convoy-e2e --bin bench_rollout && target/release/bench_rollout [SAMPLES]`

use std::time::{Duration, Instant};

use convoy_agent::link::HubLink;
use convoy_e2e::bench::{median_p99, ms};
use convoy_e2e::fleet_repo::{FleetRepo, app_yaml, cluster_yaml, configmap_yaml, kustomization_yaml};
use convoy_e2e::fleetsim::apply_every_assignment;
use convoy_e2e::harness::{InProcessHub, TestCa};
use convoy_shared::identity::Identity;
use tokio_util::sync::CancellationToken;

const CLUSTERS: usize = 100;

const WAVES: &str = "    rollout:
      waves:
      - {name: canary, clusterSelector: {matchLabels: {tier: canary}}}
      - {name: eu, clusterSelector: {matchLabels: {region: eu}}}
      - {name: rest}
      soak: 0s
";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    convoy_shared::install_crypto_provider();
    let samples: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let (flat_median, flat_p99) = run(false, samples).await?;
    let (waves_median, waves_p99) = run(true, samples).await?;
    println!("commit → last of {CLUSTERS} clusters applied ({samples} commits each)");
    println!("  no waves        median {:>8.1} ms   p99 {:>8.1} ms", ms(flat_median), ms(flat_p99));
    println!("  3 waves, soak 0 median {:>8.1} ms   p99 {:>8.1} ms", ms(waves_median), ms(waves_p99));
    println!("  ratio (waves / no waves, median) {:.2}", waves_median.as_secs_f64() / flat_median.as_secs_f64());
    Ok(())
}

/// The fleet: environment prod on main, 100 clusters (10 canaries in eu, 45 more in eu, 45 in us).
fn fleet(dir: &std::path::Path, waves: bool) -> FleetRepo {
    let repo = FleetRepo::init(dir);
    let rollout = if waves { WAVES } else { "" };
    repo.write(
        "convoy.yaml",
        &format!("apiVersion: convoy.dev/v1\nkind: Fleet\nspec:\n  environments:\n  - name: prod\n    branch: main\n{rollout}"),
    );
    for i in 0..CLUSTERS {
        let name = format!("c-{i:03}");
        let labels: &[(&str, &str)] = match i {
            0..10 => &[("tier", "canary"), ("region", "eu")],
            10..55 => &[("region", "eu")],
            _ => &[("region", "us")],
        };
        repo.write(&format!("clusters/{name}.yaml"), &cluster_yaml(&name, "prod", labels));
    }
    repo.write("apps/web/app.yaml", &app_yaml("web", "web", &[]));
    repo.write("apps/web/base/kustomization.yaml", &kustomization_yaml(&["config.yaml"], &[]));
    release(&repo, 0);
    repo
}

fn release(repo: &FleetRepo, n: usize) -> String {
    let data = [("version", n.to_string()), ("cluster", "${cluster.name}".to_string())];
    let data: Vec<(&str, &str)> = data.iter().map(|(k, v)| (*k, v.as_str())).collect();
    repo.write("apps/web/base/config.yaml", &configmap_yaml("web-config", &data));
    repo.commit(&format!("release {n}"))
}

/// Median and p99 of commit → last cluster applied.
async fn run(waves: bool, samples: usize) -> anyhow::Result<(Duration, Duration)> {
    let dir = tempfile::tempdir()?;
    let repo = fleet(dir.path(), waves);
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let shutdown = CancellationToken::new();
    for i in 0..CLUSTERS {
        let name = format!("c-{i:03}");
        let cert = ca.issue(Identity::Cluster(name.clone()));
        let (link, handle) = HubLink::new(ca.agent_config(&hub.address, Some(&cert), &name), None);
        tokio::spawn(link.run(shutdown.clone()));
        tokio::spawn(apply_every_assignment(handle, || {}));
    }
    let head = repo.head();
    wait_all_applied(&hub, &head).await;
    let mut latencies = Vec::with_capacity(samples);
    for n in 1..=samples {
        let head = release(&repo, n);
        let t0 = Instant::now();
        hub.hub.request_refresh();
        wait_all_applied(&hub, &head).await;
        latencies.push(t0.elapsed());
    }
    shutdown.cancel();
    hub.stop().await;
    Ok(median_p99(&mut latencies))
}

async fn wait_all_applied(hub: &InProcessHub, revision: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let clusters = hub.hub.connections().list();
        if clusters.len() == CLUSTERS && clusters.iter().all(|c| c.applied_revision == revision) {
            return;
        }
        assert!(Instant::now() < deadline, "not every cluster applied {revision}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
