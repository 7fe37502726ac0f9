//! Benchmark of the hub's path from a push to published assignments: a one-line change in one
//! app's stage overlay is committed, the webhook is called, and the clock stops when the hub
//! has published every assignment the change affects. For 1,000 and 10,000 clusters × 10 apps;
//! median and p99. Peer, in the same run: planning the same commit from scratch (a cold
//! planner, as a hub without per-read render caching would), timed in-process.
//!
//! Run: `cargo build --release -p convoy-e2e --bin bench_hub && target/release/bench_hub [SAMPLES]`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use convoy_e2e::bench::{median_p99, ms};
use convoy_e2e::fleet_repo::{configmap_yaml, generated_fleet};
use convoy_e2e::harness::{InProcessHub, TestCa, WEBHOOK_SECRET, eventually};
use convoy_hub::plan::planner::Planner;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    convoy_shared::install_crypto_provider();
    let samples: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(20);
    for clusters in [1_000, 10_000] {
        run(clusters, 10, samples).await?;
    }
    Ok(())
}

async fn run(clusters: usize, apps: usize, samples: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = generated_fleet(dir.path(), clusters, apps);
    let ca = TestCa::new();
    let started = Instant::now();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let first_sync = started.elapsed();
    repo.checkout("stage");

    let mut latencies = Vec::with_capacity(samples);
    let mut published = 0;
    for i in 0..samples {
        repo.write(
            "apps/app-0/envs/stage/config.yaml",
            &configmap_yaml("app-0-config", &[("env", &format!("stage-{i}"))]),
        );
        let head = repo.commit(&format!("sample {i}"));
        let body = format!(r#"{{"ref":"refs/heads/stage","after":"{head}"}}"#);
        let signature = convoy_hub::api::http::webhook::github_signature(WEBHOOK_SECRET.as_bytes(), body.as_bytes());
        let t0 = Instant::now();
        post(&hub.http_address, &signature, &body).await?;
        eventually("the commit to be published", || {
            let done = hub.hub.view().branches.get("stage") == Some(&head);
            async move {
                if !done {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                done.then_some(())
            }
        })
        .await;
        latencies.push(t0.elapsed());
        published = hub.hub.view().published;
    }

    // Peer: the same commit planned from scratch.
    let view = hub.hub.view();
    let fleet = view.fleet.clone().expect("fleet loaded");
    let envs: HashMap<_, _> = view.envs.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect();
    let mut cold = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let (plans, _) = Planner::default().plan(&fleet.clusters, &envs);
        cold.push(t0.elapsed());
        assert_eq!(plans.len(), clusters);
    }
    hub.stop().await;

    let (median, p99) = median_p99(&mut latencies);
    let (cold_median, _) = median_p99(&mut cold);
    println!("{clusters} clusters x {apps} apps (first sync {:.2} s)", first_sync.as_secs_f64());
    println!(
        "  webhook -> {published} assignments published, {samples} samples: median {:.1} ms, p99 {:.1} ms",
        ms(median),
        ms(p99)
    );
    println!("  peer: full re-plan with a cold planner: median {:.1} ms", ms(cold_median));
    println!("  ratio (cold re-plan / webhook-to-published), median: {:.1}x", ms(cold_median) / ms(median));
    Ok(())
}

async fn post(address: &str, signature: &str, body: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!(
        "POST /webhook HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\nX-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    anyhow::ensure!(response.starts_with("HTTP/1.1 202"), "webhook refused: {response}");
    Ok(())
}
