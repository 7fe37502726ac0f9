//! `convoy-agent`: dial out to the hub over mutual TLS and keep this cluster's link alive.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use convoy_agent::link::{Backoff, HubLink, LinkConfig};
use convoy_shared::tls::{self, HubAddress, TlsMaterial};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "convoy-agent", version = convoy_shared::VERSION, about = "The Convoy agent")]
struct Cli {
    /// Hub address HOST:PORT.
    #[arg(long, env = "CONVOY_HUB")]
    hub: String,
    /// Name the hub's certificate must carry, when it differs from HOST.
    #[arg(long, env = "CONVOY_SERVER_NAME")]
    server_name: Option<String>,
    /// This agent's certificate (issued for its cluster).
    #[arg(long, env = "CONVOY_CERT")]
    cert: PathBuf,
    /// This agent's private key.
    #[arg(long, env = "CONVOY_KEY")]
    key: PathBuf,
    /// The hub's CA certificate.
    #[arg(long, env = "CONVOY_CA")]
    ca: PathBuf,
    /// The cluster name this agent expects to be (informational; the certificate decides).
    #[arg(long, env = "CONVOY_CLUSTER", default_value = "")]
    cluster: String,
    /// Seconds between heartbeats.
    #[arg(long, env = "CONVOY_HEARTBEAT_SECONDS", default_value_t = 10)]
    heartbeat_seconds: u64,
    /// Longest wait between reconnect attempts, in seconds.
    #[arg(long, env = "CONVOY_BACKOFF_MAX_SECONDS", default_value_t = 30)]
    backoff_max_seconds: u64,
    /// Log filter (overridden by RUST_LOG).
    #[arg(long, env = "CONVOY_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines.
    #[arg(long, env = "CONVOY_LOG_JSON")]
    log_json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    convoy_shared::install_crypto_provider();
    convoy_shared::telemetry::init(&cli.log, cli.log_json);
    let config = match config(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("convoy-agent: {e:#}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("convoy-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(convoy_shared::cancel_on_signal(shutdown.clone()));
        let (link, _handle) = HubLink::new(config, None);
        link.run(shutdown).await;
    });
    ExitCode::SUCCESS
}

fn config(cli: &Cli) -> anyhow::Result<LinkConfig> {
    let material = TlsMaterial::from_files(&cli.ca, &cli.cert, &cli.key)?;
    Ok(LinkConfig {
        hub: HubAddress::parse(&cli.hub, cli.server_name.as_deref())?,
        tls: tls::client_config(
            &material.ca_pem,
            Some((&material.cert_pem, &material.key_pem)),
        )?,
        cluster_name: cli.cluster.clone(),
        heartbeat: Duration::from_secs(cli.heartbeat_seconds.max(1)),
        backoff: Backoff {
            max: Duration::from_secs(cli.backoff_max_seconds.max(1)),
            ..Backoff::default()
        },
        connect_timeout: Duration::from_secs(10),
    })
}
