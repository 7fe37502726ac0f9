//! `convoy`: ask the fleet what runs where, over mutual TLS with a CLI certificate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use convoy_hub::cli::{self, ConfigFile, Context, Output};
use convoy_shared::proto::ListClustersRequest;

#[derive(Parser)]
#[command(name = "convoy", version = convoy_shared::VERSION, about = "Ask a Convoy fleet what runs where")]
struct Cli {
    /// Config file with contexts (hub address and certificate paths).
    #[arg(long, global = true, env = "CONVOY_CONFIG")]
    config: Option<PathBuf>,
    /// Context of the config file to use (default: its current-context).
    #[arg(long, global = true, env = "CONVOY_CONTEXT")]
    context: Option<String>,
    /// Hub address HOST:PORT (overrides the context).
    #[arg(long, global = true, env = "CONVOY_HUB")]
    hub: Option<String>,
    /// CA certificate that signed the hub's certificate.
    #[arg(long, global = true, env = "CONVOY_CA")]
    ca: Option<PathBuf>,
    /// CLI certificate (admin or viewer).
    #[arg(long, global = true, env = "CONVOY_CERT")]
    cert: Option<PathBuf>,
    /// Key of the CLI certificate.
    #[arg(long, global = true, env = "CONVOY_KEY")]
    key: Option<PathBuf>,
    /// Name the hub's certificate must carry, when it differs from the host dialed.
    #[arg(long, global = true, env = "CONVOY_SERVER_NAME")]
    server_name: Option<String>,
    /// Output format.
    #[arg(
        short,
        long,
        global = true,
        value_enum,
        default_value = "table",
        env = "CONVOY_OUTPUT"
    )]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the clusters the hub knows, with their agent link.
    Clusters,
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    convoy_shared::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("convoy: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convoy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), cli::CliError> {
    let context = || -> Result<Context, cli::CliError> {
        let flags = Context {
            hub: cli.hub.clone(),
            ca: cli.ca.clone(),
            cert: cli.cert.clone(),
            key: cli.key.clone(),
            server_name: cli.server_name.clone(),
            ..Default::default()
        };
        let base = match &cli.config {
            Some(path) => ConfigFile::load(path)?.context(cli.context.as_deref(), path)?,
            None => Context::default(),
        };
        Ok(base.overridden_by(flags))
    };
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "convoy", &mut std::io::stdout());
        }
        Command::Clusters => {
            let mut client = context()?.connect().await?;
            let clusters = client
                .list_clusters(ListClustersRequest {})
                .await?
                .into_inner()
                .clusters;
            match cli.output {
                Output::Table => print!(
                    "{}",
                    cli::clusters_table(&clusters, convoy_hub::connections::now_ms())
                ),
                Output::Json => println!("{:#}", cli::clusters_json(&clusters)),
            }
        }
    }
    Ok(())
}
