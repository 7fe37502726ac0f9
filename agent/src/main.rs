//! `convoy-agent`: dial out to the hub over mutual TLS and reconcile this cluster to its
//! assignment, enforcing the cached one while the hub is unreachable.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use convoy_agent::bootstrap::{self, AgentCertificate, BootstrapConfig};
use convoy_agent::link::{Backoff, LinkConfig};
use convoy_agent::reconciler::ReconcilerConfig;
use convoy_shared::telemetry::{Instrumented, TelemetryConfig};
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
    /// This agent's certificate (pre-issued for its cluster); without it the agent bootstraps
    /// (credentials Secret, else --bootstrap-token).
    #[arg(long, env = "CONVOY_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// This agent's private key (with --cert).
    #[arg(long, env = "CONVOY_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Single-use bootstrap token (`convoy token create`), used only while the credentials
    /// Secret holds no valid certificate.
    #[arg(long, env = "CONVOY_BOOTSTRAP_TOKEN", hide_env_values = true)]
    bootstrap_token: Option<String>,
    /// Secret (in --namespace) where a bootstrapped agent keeps its key and certificate.
    #[arg(long, env = "CONVOY_CREDENTIALS_SECRET", default_value = "convoy-agent-credentials")]
    credentials_secret: String,
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
    /// Address to serve Prometheus `/metrics` on (e.g. 0.0.0.0:9090); none when unset.
    #[arg(long, env = "CONVOY_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Log filter (overridden by RUST_LOG).
    #[arg(long, env = "CONVOY_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines.
    #[arg(long, env = "CONVOY_LOG_JSON")]
    log_json: bool,
    /// Export spans to this OTLP/gRPC collector (http://HOST:4317, or https:// for TLS); an
    /// apply joins the trace of the hub sync that produced its assignment.
    #[arg(long, env = "CONVOY_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// CA certificate an https:// collector's certificate must chain to (default: system roots).
    #[arg(long, env = "CONVOY_OTLP_CA")]
    otlp_ca: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    convoy_shared::install_crypto_provider();
    let telemetry = TelemetryConfig {
        filter: cli.log.clone(),
        json: cli.log_json,
        otlp_endpoint: cli.otlp_endpoint.clone(),
        otlp_ca: cli.otlp_ca.clone(),
        service: "convoy-agent",
    };
    let instrumented = match Instrumented::start(&telemetry) {
        Ok(instrumented) => instrumented,
        Err(code) => return code,
    };
    let (material, bootstrap) = match credentials_config(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("convoy-agent: {e:#}");
            return ExitCode::from(64);
        }
    };
    instrumented.runtime().block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(convoy_shared::cancel_on_signal(shutdown.clone()));
        let client = kube_client(cli.kubeconfig.as_deref()).await;
        let (link, reconciler) = match (&material, &client) {
            (Some(material), _) => match pre_issued(&cli, material) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("convoy-agent: {e:#}");
                    return ExitCode::from(64);
                }
            },
            (None, Ok(client)) => match bootstrapped(&cli, &bootstrap, client, &shutdown).await {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("convoy-agent: {e:#}");
                    return ExitCode::FAILURE;
                }
            },
            (None, Err(e)) => {
                eprintln!("convoy-agent: bootstrapping needs the Kubernetes API for its credentials Secret: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let client = match client {
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
        let metrics = match &cli.metrics_listen {
            None => None,
            Some(address) => match tokio::net::TcpListener::bind(address).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    eprintln!("convoy-agent: cannot serve metrics on {address}: {e}; pass another --metrics-listen");
                    return ExitCode::from(64);
                }
            },
        };
        match convoy_agent::run(reconciler, link, client, metrics, shutdown).await {
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
        // kube's message already carries its causes; printing the chain too would repeat them.
        return kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("no in-cluster config and no usable ~/.kube/config; pass --kubeconfig ({e})")
        });
    };
    let kc =
        kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .with_context(|| format!("kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Reads the pre-issued certificate files, if given, and what bootstrapping needs.
fn credentials_config(cli: &Cli) -> anyhow::Result<(Option<TlsMaterial>, BootstrapConfig)> {
    let material = match (&cli.cert, &cli.key) {
        (Some(cert), Some(key)) => Some(TlsMaterial::from_files(&cli.ca, cert, key)?),
        _ => None,
    };
    let ca_pem = convoy_shared::pki::read(&cli.ca)?;
    tls::parse_certs(&ca_pem, &format!("the hub CA {}", cli.ca.display()))?;
    let bootstrap = BootstrapConfig {
        hub: HubAddress::parse(&cli.hub, cli.server_name.as_deref())?,
        ca_pem,
        token: cli.bootstrap_token.clone().filter(|t| !t.trim().is_empty()),
        secret: cli.credentials_secret.clone(),
        namespace: cli.namespace.clone(),
        connect_timeout: Duration::from_secs(10),
    };
    Ok((material, bootstrap))
}

/// Link and reconciler configuration with a pre-issued certificate.
fn pre_issued(cli: &Cli, material: &TlsMaterial) -> anyhow::Result<(LinkConfig, ReconcilerConfig)> {
    let cert_cluster = cluster_from_certificate(&material.cert_pem)?;
    let tls = tls::client_config(&material.ca_pem, Some((&material.cert_pem, &material.key_pem)))?;
    config(cli, tls, cert_cluster)
}

/// Gets credentials from the Secret or the bootstrap token, and keeps renewing them.
async fn bootstrapped(
    cli: &Cli,
    bootstrap: &BootstrapConfig,
    client: &kube::Client,
    shutdown: &CancellationToken,
) -> anyhow::Result<(LinkConfig, ReconcilerConfig)> {
    let credentials = bootstrap::obtain(bootstrap, client).await?;
    let cluster = credentials.cluster.clone();
    let certificate = AgentCertificate::new(credentials)?;
    let tls = certificate.client_config(&bootstrap.ca_pem)?;
    tokio::spawn(bootstrap::renew_loop(bootstrap.clone(), client.clone(), certificate, shutdown.clone()));
    config(cli, tls, cluster)
}

fn config(
    cli: &Cli,
    tls: std::sync::Arc<rustls::ClientConfig>,
    cert_cluster: String,
) -> anyhow::Result<(LinkConfig, ReconcilerConfig)> {
    let cluster = if cli.cluster.is_empty() { cert_cluster } else { cli.cluster.clone() };
    let link = LinkConfig {
        hub: HubAddress::parse(&cli.hub, cli.server_name.as_deref())?,
        tls,
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
