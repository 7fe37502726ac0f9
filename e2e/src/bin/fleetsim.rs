//! `fleetsim`: N simulated agents in one process, each over its own mutual-TLS stream to a hub
//! with a certificate the hub's CA signs (see [`convoy_e2e::fleetsim`]). Prints how many are
//! connected and how many assignments they applied whenever that changes; runs until Ctrl-C or
//! SIGTERM.
//!
//! `fleetsim --agents 10000 --hub localhost:7443[,other:7443] --certs DIR [--clusters-prefix c-] [--first N]`

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use convoy_e2e::fleetsim::{SimConfig, SimFleet, raise_fd_limit};
use convoy_shared::pki::CertDir;
use convoy_shared::tls::HubAddress;
use tokio_util::sync::CancellationToken;

/// The simulator shares the machine with the hub it measures: every cycle it spends is one the
/// hub does not get. The hub's allocator costs it less than glibc's malloc, which took a quarter
/// of its time while 10,000 agents took a change.
#[global_allocator]
static ALLOCATOR: convoy_hub::allocator::Allocator = convoy_hub::allocator::Allocator {};

#[derive(Parser)]
#[command(about = "Simulated Convoy agents: many mutual-TLS hub links in one process, no Kubernetes")]
struct Cli {
    /// How many agents to run.
    #[arg(long, env = "CONVOY_SIM_AGENTS", default_value_t = 1000)]
    agents: usize,
    /// The hub's gRPC address (HOST:PORT; HOST must be in the hub certificate).
    #[arg(long, env = "CONVOY_SIM_HUB")]
    hub: String,
    /// The hub's certificate directory (`convoy-hub ca init --dir DIR`): its CA signs the agents'
    /// certificates.
    #[arg(long, env = "CONVOY_SIM_CERTS")]
    certs: std::path::PathBuf,
    /// Agent i is cluster PREFIX followed by i in five digits (c-00000, c-00001, …).
    #[arg(long, env = "CONVOY_SIM_CLUSTERS_PREFIX", default_value = "c-")]
    clusters_prefix: String,
    /// The number of the first agent's cluster, so several simulators share one fleet.
    #[arg(long, env = "CONVOY_SIM_FIRST", default_value_t = 0)]
    first: usize,
    /// Seconds between each agent's heartbeats.
    #[arg(long, env = "CONVOY_SIM_HEARTBEAT_SECONDS", default_value_t = 10)]
    heartbeat_seconds: u64,
    /// Longest wait between reconnect attempts, in seconds (as the agent's flag).
    #[arg(long, env = "CONVOY_SIM_BACKOFF_MAX_SECONDS", default_value_t = 30)]
    backoff_max_seconds: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    convoy_shared::install_crypto_provider();
    // Each link logs its own reconnects; at thousands of agents only errors are worth a line.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let hub = match HubAddress::parse(&cli.hub, None) {
        Ok(hub) => hub,
        Err(e) => {
            eprintln!("fleetsim: --hub {}: {e}", cli.hub);
            return ExitCode::from(64);
        }
    };
    let limit = match raise_fd_limit(cli.agents) {
        Ok(limit) => limit,
        Err(e) => {
            eprintln!("fleetsim: {e}");
            return ExitCode::from(64);
        }
    };
    let config = SimConfig {
        agents: cli.agents,
        hub,
        certs: CertDir::new(cli.certs),
        prefix: cli.clusters_prefix,
        first: cli.first,
        heartbeat: Duration::from_secs(cli.heartbeat_seconds.max(1)),
        backoff_max: Duration::from_secs(cli.backoff_max_seconds.max(1)),
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run(config, limit))
}

async fn run(config: SimConfig, limit: u64) -> ExitCode {
    let shutdown = CancellationToken::new();
    tokio::spawn(convoy_shared::cancel_on_signal(shutdown.clone()));
    let fleet = match SimFleet::start(&config, &shutdown) {
        Ok(fleet) => fleet,
        Err(e) => {
            eprintln!("fleetsim: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "fleetsim: {} agents dialing {} (certificates issued in {:.2} s; open-file limit {limit})",
        config.agents,
        config.hub.address,
        fleet.issued_in.as_secs_f64()
    );
    let mut last = (usize::MAX, u64::MAX);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = (fleet.connected(), fleet.stats.applied.load(Ordering::Relaxed));
        if now != last {
            println!("fleetsim: {}/{} connected, {} assignments applied", now.0, config.agents, now.1);
            last = now;
        }
    }
    fleet.join().await;
    ExitCode::SUCCESS
}
