//! `convoy-agent`: dial out to the hub over mutual TLS and reconcile this cluster to its
//! assignment, enforcing the cached one while the hub is unreachable.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use convoy_agent::StartError;
use convoy_agent::startup::{AgentConfig, with_causes};
use convoy_shared::telemetry::{Instrumented, TelemetryConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "convoy-agent", version = convoy_shared::VERSION, about = "The Convoy agent")]
struct Cli {
    /// Hub address HOST:PORT; hub replicas as HOST:PORT,HOST:PORT (the agent starts at a random
    /// one and moves to the next when one does not answer), or a name resolving to several.
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
    /// Age key file (as `age-keygen` writes it) to decrypt SOPS-encrypted manifests with, just
    /// before apply; the chart mounts it from the Secret named by `sops.ageKeySecret`.
    #[arg(long, env = "CONVOY_SOPS_AGE_KEY_FILE")]
    sops_age_key_file: Option<PathBuf>,
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
    // One thread: the agent's load is I/O, and every thread that allocates gets a malloc arena
    // (and a stack) of its own, which keeps the peak of a pass resident.
    let runtime = tokio::runtime::Builder::new_current_thread();
    let instrumented = match Instrumented::start_on(&cli.telemetry(), runtime) {
        Ok(instrumented) => instrumented,
        Err(code) => return code,
    };
    let config = cli.config();
    let credentials = match config.credentials() {
        Ok(credentials) => credentials,
        Err(e) => {
            eprintln!("convoy-agent: {}", with_causes(&e));
            return ExitCode::from(64);
        }
    };
    instrumented.run(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(convoy_shared::cancel_on_signal(shutdown.clone()));
        match convoy_agent::start(config, credentials, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            // Said in the log when the link-only run began.
            Err(StartError::LinkOnly(_)) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("convoy-agent: {}", with_causes(&e));
                ExitCode::from(e.exit_code())
            }
        }
    })
}

impl Cli {
    fn telemetry(&self) -> TelemetryConfig {
        TelemetryConfig {
            filter: self.log.clone(),
            json: self.log_json,
            otlp_endpoint: self.otlp_endpoint.clone(),
            otlp_ca: self.otlp_ca.clone(),
            service: "convoy-agent",
        }
    }

    fn config(&self) -> AgentConfig {
        AgentConfig {
            hub: self.hub.clone(),
            server_name: self.server_name.clone(),
            cert_and_key: self.cert.clone().zip(self.key.clone()),
            bootstrap_token: self.bootstrap_token.clone(),
            credentials_secret: self.credentials_secret.clone(),
            ca: self.ca.clone(),
            cluster: self.cluster.clone(),
            kubeconfig: self.kubeconfig.clone(),
            namespace: self.namespace.clone(),
            cache_dir: self.cache_dir.clone(),
            concurrency: self.concurrency.max(1),
            heartbeat: Duration::from_secs(self.heartbeat_seconds.max(1)),
            backoff_max: Duration::from_secs(self.backoff_max_seconds.max(1)),
            metrics_listen: self.metrics_listen.clone(),
            sops_age_key_file: self.sops_age_key_file.clone(),
        }
    }
}
