//! `kubesim`: serves simulated Kubernetes clusters and writes a kubeconfig per cluster.

use anyhow::Context as _;
use clap::Parser;
use kubesim::{FleetOptions, SimConfig, SimFleet};
use std::path::PathBuf;
use std::time::Duration;

/// Simulated Kubernetes API servers for tests and demos.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Cluster names, comma-separated.
    #[arg(long, env = "CONVOY_KUBESIM_CLUSTERS", value_delimiter = ',', required = true)]
    clusters: Vec<String>,
    /// Directory for NAME.kubeconfig files.
    #[arg(long, env = "CONVOY_KUBESIM_DIR")]
    dir: PathBuf,
    /// How long workloads take to become ready, in milliseconds.
    #[arg(long, env = "CONVOY_KUBESIM_READY_DELAY_MS", default_value_t = 500)]
    ready_delay_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Installed before anything touches TLS: only the ring provider is compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating kubeconfig directory {}", args.dir.display()))?;
    let names: Vec<&str> = args.clusters.iter().map(String::as_str).collect();
    let opts = FleetOptions {
        dir: Some(args.dir.clone()),
        config: SimConfig { ready_delay: Duration::from_millis(args.ready_delay_ms), ..SimConfig::default() },
    };
    let fleet = SimFleet::start_with(&names, opts).await.context("starting simulated clusters")?;
    for c in fleet.clusters() {
        println!("{} {} {}", c.name(), c.url(), c.kubeconfig_path().display());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    fleet.shutdown().await;
    Ok(())
}
