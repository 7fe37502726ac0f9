//! `convoy-sandbox --dir DIR`: run a whole local Convoy fleet until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use convoy_cli::ColorChoice;
use convoy_e2e::sandbox::{Sandbox, SandboxConfig};
use convoy_shared::telemetry::{Instrumented, TelemetryConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "convoy-sandbox", version = convoy_shared::VERSION, about = "A whole local Convoy fleet on one machine")]
struct Cli {
    /// Where the sandbox lays out its certificates and CLI config (reused when it exists).
    #[arg(long, env = "CONVOY_SANDBOX_DIR", default_value = "convoy-sandbox")]
    dir: PathBuf,
    /// Address the hub listens on (port 0 picks a free one).
    #[arg(long, env = "CONVOY_SANDBOX_LISTEN", default_value = "127.0.0.1:7443")]
    listen: String,
    /// Simulated clusters beyond dev-1, stage-1, prod-eu and prod-us.
    #[arg(long, env = "CONVOY_SANDBOX_CLUSTERS", default_value_t = 0)]
    clusters: usize,
    /// How many clusters, dev-1 first, run on a real control plane (etcd, kube-apiserver and
    /// kube-controller-manager, built once by `bash e2e/realkube/build.sh`) instead of kubesim.
    #[arg(long, env = "CONVOY_SANDBOX_REAL_CLUSTERS", default_value_t = 0)]
    real_clusters: usize,
    /// Seconds between fetches of the repository by the hub.
    #[arg(long, env = "CONVOY_SANDBOX_POLL_SECONDS", default_value_t = 2)]
    poll_seconds: u64,
    /// Seconds between status tables (0: print none).
    #[arg(long, env = "CONVOY_SANDBOX_STATUS_SECONDS", default_value_t = 5)]
    status_seconds: u64,
    /// Export spans of the hub and agents to this OTLP/gRPC collector (http://HOST:4317).
    #[arg(long, env = "CONVOY_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Option<Hook>,
}

#[derive(clap::Subcommand)]
enum Hook {
    /// Run by DIR/repo.git/hooks/post-receive: post the push to the hub's webhook, signed.
    #[command(hide = true)]
    PostReceive,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Hook::PostReceive) = cli.command {
        let mut updates = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut updates);
        return match convoy_e2e::sandbox::notify_push(&cli.dir, &updates) {
            Ok(_) => {
                eprintln!("convoy-sandbox: the hub's webhook took the push; it fetches now");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "convoy-sandbox: could not call the hub's webhook ({e}); the hub's poll will pick the push up"
                );
                ExitCode::SUCCESS
            }
        };
    }
    convoy_shared::install_crypto_provider();
    let telemetry = TelemetryConfig {
        filter: "warn,convoy_e2e=info".into(),
        json: false,
        otlp_endpoint: cli.otlp_endpoint.clone(),
        otlp_ca: None,
        service: "convoy-sandbox",
    };
    let instrumented = match Instrumented::start(&telemetry) {
        Ok(instrumented) => instrumented,
        Err(code) => return code,
    };
    instrumented.runtime().block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(convoy_shared::cancel_on_signal(shutdown.clone()));
        let config = SandboxConfig {
            dir: cli.dir.clone(),
            listen: cli.listen.clone(),
            extra_clusters: cli.clusters,
            real_clusters: cli.real_clusters,
            poll: Duration::from_secs(cli.poll_seconds.max(1)),
            hook: std::env::current_exe().ok(),
        };
        let sandbox = match Sandbox::start(&config, shutdown.clone()).await {
            Ok(sandbox) => sandbox,
            Err(e) => {
                eprintln!("convoy-sandbox: {e}");
                return ExitCode::from(64);
            }
        };
        println!("Convoy sandbox ready");
        println!("  hub        {}", sandbox.hub_address);
        println!(
            "  webhook    http://{}/webhook (secret in {}; repo.git's post-receive hook calls it on every push)",
            sandbox.http_address,
            cli.dir.join("hub").join("webhook-secret").display()
        );
        println!("  metrics    http://{}/metrics (hub)", sandbox.http_address);
        for (cluster, address) in sandbox.clusters.iter().zip(&sandbox.agent_metrics) {
            println!("             http://{address}/metrics ({cluster} agent)");
        }
        let clusters: Vec<String> = sandbox
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| if i < cli.real_clusters { format!("{c} (kube-apiserver)") } else { c.clone() })
            .collect();
        println!("  clusters   {} (kubeconfigs in {})", clusters.join(", "), cli.dir.join("kube").display());
        println!("  repo       {} (commit, then `git push`: applied at once)", sandbox.repo.display());
        println!("  certs      {}", cli.dir.join("certs").display());
        println!("  age keys   {} (one per environment, for sops)", cli.dir.join("sops").display());
        println!("  CLI config {}", sandbox.cli_config.display());
        let convoy = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.join("convoy")));
        match convoy.filter(|c| c.exists()) {
            Some(convoy) => println!("  convoy     {}", convoy.display()),
            None => println!(
                "  convoy     not built yet: `cargo build --release -p convoy-cli` (or `cargo install --path hub/cli`)"
            ),
        }
        println!("  shell      source {}   (convoy on PATH, CONVOY_CONFIG set)", sandbox.env_script.display());
        println!("  try        convoy clusters");
        println!("Ctrl-C stops it.");
        if cli.status_seconds > 0 {
            let hub = sandbox.hub.clone();
            let token = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(cli.status_seconds));
                let terminal = ColorChoice::Auto.enabled();
                // The first tick is immediate; give the agents a moment before the first table.
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let now = convoy_shared::clock::unix_ms();
                    let table = convoy_cli::clusters_table(&hub.cluster_infos(), now);
                    if terminal {
                        print!("\x1b[2J\x1b[H\n{}", convoy_cli::paint(&table));
                    } else {
                        println!("\n{table}");
                    }
                }
            });
        }
        sandbox.drain().await;
        println!(
            "convoy-sandbox stopped. {} keeps the certificates, the fleet repository (repo, repo.git), the age keys \
             and the hub's store: `--dir {}` again reuses them (the simulated clusters start empty and their agents \
             apply everything again); delete it to start afresh.",
            cli.dir.display(),
            cli.dir.display()
        );
        ExitCode::SUCCESS
    })
}
