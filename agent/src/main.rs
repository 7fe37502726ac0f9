//! `convoy-agent`: dial out to the hub over mutual TLS and reconcile this cluster to its
//! assignment, enforcing the cached one while the hub is unreachable.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use convoy_agent::link::{Backoff, LinkConfig};
use convoy_agent::reconciler::ReconcilerConfig;
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
    /// This cluster's name, written into the convoy.dev/cluster label; default: the name in the
    /// certificate (which is also what the hub goes by).
    #[arg(long, env = "CONVOY_CLUSTER", default_value = "")]
    cluster: String,
    /// Kubeconfig to use; default: in-cluster config, else ~/.kube/config.
    #[arg(long, env = "CONVOY_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The agent's own namespace (holds the inventory ConfigMap).
    #[arg(long, env = "CONVOY_NAMESPACE", default_value = "convoy-system")]
    namespace: String,
    /// Where the last assignment and the inventory are cached.
    #[arg(long, env = "CONVOY_CACHE_DIR", default_value = "/var/cache/convoy-agent")]
    cache_dir: PathBuf,
    /// API requests in flight while applying or pruning.
    #[arg(long, env = "CONVOY_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
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
    let (link, reconciler) = match config(&cli) {
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
        let client = match kube_client(cli.kubeconfig.as_deref()).await {
            Ok(c) => c,
            Err(e) => {
                // Without a cluster the agent can still show up at the hub, which is where an
                // operator will look; it says loudly that it reconciles nothing.
                tracing::error!(
                    error = format!("{e:#}"),
                    "no Kubernetes API: running the hub link only; nothing is reconciled"
                );
                let (link, _handle) = convoy_agent::link::HubLink::new(link, None);
                link.run(shutdown).await;
                return ExitCode::FAILURE;
            }
        };
        match convoy_agent::run(reconciler, link, client, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("convoy-agent: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    use anyhow::Context as _;
    let Some(path) = kubeconfig else {
        return kube::Client::try_default()
            .await
            .context("no in-cluster config and no usable ~/.kube/config; pass --kubeconfig");
    };
    let kc =
        kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .with_context(|| format!("kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

fn config(cli: &Cli) -> anyhow::Result<(LinkConfig, ReconcilerConfig)> {
    let material = TlsMaterial::from_files(&cli.ca, &cli.cert, &cli.key)?;
    let cluster =
        if cli.cluster.is_empty() { cluster_from_certificate(&material.cert_pem)? } else { cli.cluster.clone() };
    let link = LinkConfig {
        hub: HubAddress::parse(&cli.hub, cli.server_name.as_deref())?,
        tls: tls::client_config(&material.ca_pem, Some((&material.cert_pem, &material.key_pem)))?,
        cluster_name: cluster.clone(),
        heartbeat: Duration::from_secs(cli.heartbeat_seconds.max(1)),
        backoff: Backoff { max: Duration::from_secs(cli.backoff_max_seconds.max(1)), ..Backoff::default() },
        connect_timeout: Duration::from_secs(10),
    };
    let mut reconciler = ReconcilerConfig::new(&cluster, &cli.cache_dir);
    reconciler.namespace = cli.namespace.clone();
    reconciler.concurrency = cli.concurrency.max(1);
    Ok((link, reconciler))
}

fn cluster_from_certificate(cert_pem: &str) -> anyhow::Result<String> {
    let certs = tls::parse_certs(cert_pem, "agent certificate")?;
    let first = certs.first().ok_or_else(|| anyhow::anyhow!("the agent certificate file holds no certificate"))?;
    match convoy_shared::identity::Identity::from_certificate_der(first)? {
        convoy_shared::identity::Identity::Cluster(name) => Ok(name),
        other => anyhow::bail!(
            "the agent certificate is for {other:?}, not a cluster; pass --cluster or issue a cluster certificate"
        ),
    }
}
