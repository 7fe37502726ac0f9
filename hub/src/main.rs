//! `convoy-hub`: serve the fleet, or manage its certificate authority.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use convoy_hub::{server, state::Hub};
use convoy_shared::identity::{Identity, Role};
use convoy_shared::pki::{self, CertDir, CertificateAuthority, LeafRequest};
use convoy_shared::tls::{self, TlsMaterial};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "convoy-hub", version = convoy_shared::VERSION, about = "The Convoy hub")]
struct Cli {
    /// Log filter (overridden by RUST_LOG).
    #[arg(long, global = true, env = "CONVOY_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines.
    #[arg(long, global = true, env = "CONVOY_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve agents (AgentService) and the CLI (FleetService) over mutual TLS.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "CONVOY_LISTEN", default_value = "0.0.0.0:7443")]
        listen: String,
        /// Certificate directory made by `convoy-hub ca init`.
        #[arg(long, env = "CONVOY_CERTS")]
        certs: PathBuf,
    },
    /// Manage the certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Issue certificates from the CA.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a CA, a hub server certificate and an admin CLI certificate in DIR.
    Init {
        #[arg(long, env = "CONVOY_CERTS")]
        dir: PathBuf,
        /// DNS names and IP addresses the hub is reached at (repeatable).
        #[arg(long = "san", default_values = ["localhost", "127.0.0.1"])]
        sans: Vec<String>,
        #[arg(long, default_value_t = pki::DEFAULT_LEAF_DAYS)]
        days: i64,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Issue an agent certificate (--cluster) or a CLI certificate (--user with --role).
    Issue {
        /// Certificate directory holding the CA.
        #[arg(long, env = "CONVOY_CERTS")]
        dir: PathBuf,
        #[arg(long, conflicts_with_all = ["user", "role"], required_unless_present = "user")]
        cluster: Option<String>,
        #[arg(long, requires = "role")]
        user: Option<String>,
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: Option<String>,
        #[arg(long, default_value_t = pki::DEFAULT_LEAF_DAYS)]
        days: i64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    convoy_shared::install_crypto_provider();
    convoy_shared::telemetry::init(&cli.log, cli.log_json);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("convoy-hub: {e:#}");
            ExitCode::from(64)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("convoy-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// Bad flags or files: exit 64 (EX_USAGE) before anything starts.
    Config(anyhow::Error),
    Runtime(anyhow::Error),
}

fn run(command: Command) -> Result<(), Failure> {
    let config = |e: anyhow::Error| Failure::Config(e);
    match command {
        Command::Ca {
            command: CaCommand::Init { dir, sans, days },
        } => {
            pki::init_ca(&CertDir::new(&dir), &sans, days).map_err(|e| config(e.into()))?;
            println!(
                "created CA, hub and admin certificates in {}",
                dir.display()
            );
            Ok(())
        }
        Command::Certs {
            command:
                CertsCommand::Issue {
                    dir,
                    cluster,
                    user,
                    role,
                    days,
                },
        } => {
            let identity = match (cluster, user) {
                (Some(name), _) => Identity::Cluster(name),
                (None, Some(name)) => Identity::User {
                    name,
                    role: role
                        .unwrap_or_default()
                        .parse::<Role>()
                        .map_err(|e| config(e.into()))?,
                },
                (None, None) => unreachable!("clap requires --cluster or --user"),
            };
            if let Identity::Cluster(name) | Identity::User { name, .. } = &identity
                && !convoy_shared::identity::valid_name(name)
            {
                return Err(config(anyhow::anyhow!(
                    "'{name}' is not a valid name: use lowercase letters, digits and '-'"
                )));
            }
            let dir = CertDir::new(dir);
            let ca = CertificateAuthority::load(&dir).map_err(|e| config(e.into()))?;
            let issued = ca
                .issue(&LeafRequest::new(identity.clone(), days))
                .map_err(|e| config(e.into()))?;
            let (cert, key) = dir
                .write_leaf(&identity, &issued)
                .map_err(|e| config(e.into()))?;
            println!("issued {identity}: {} {}", cert.display(), key.display());
            Ok(())
        }
        Command::Serve { listen, certs } => {
            let dir = CertDir::new(certs);
            let material = TlsMaterial::from_files(&dir.ca_cert(), &dir.hub_cert(), &dir.hub_key())
                .map_err(|e| config(e.into()))?;
            let tls = tls::server_config(&material).map_err(|e| config(e.into()))?;
            let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Runtime(e.into()))?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .map_err(|e| config(anyhow::anyhow!("cannot listen on {listen}: {e}")))?;
                tracing::info!(address = %listener.local_addr().map_err(|e| Failure::Runtime(e.into()))?, "hub listening");
                let shutdown = CancellationToken::new();
                tokio::spawn(convoy_shared::cancel_on_signal(shutdown.clone()));
                server::serve(listener, tls, Arc::new(Hub::default()), shutdown)
                    .await
                    .map_err(|e| Failure::Runtime(e.into()))
            })
        }
    }
}
