//! `convoy-hub`: serve the fleet, or manage its certificate authority.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use std::time::Duration;

use convoy_hub::HubConfig;
use convoy_hub::api::admission::HandshakeLimits;
use convoy_hub::notify::outbox::NotifyConfig;
use convoy_hub::replication::Replication;
use convoy_hub::source::SourceConfig;
use convoy_hub::source::git::GitAccess;
use convoy_hub::state::hub::Hub;
use convoy_hub::state::registry::RegistryConfig;
use convoy_hub::store::Store;
use convoy_hub::store::postgres::PgStore;
use convoy_hub::store::redb::RedbStore;
use convoy_render::helm::fetch::{ChartFetcher, Credential, FetchConfig};
use convoy_shared::identity::{Identity, Role};
use convoy_shared::pki::{self, CertDir, CertificateAuthority, LeafRequest};
use convoy_shared::telemetry::{Instrumented, TelemetryConfig};
use convoy_shared::tls::{self, TlsMaterial};
use tokio_util::sync::CancellationToken;

/// The longest agent certificate lifetime `--agent-cert-hours` takes (ten years).
const MAX_AGENT_CERT_HOURS: u64 = 87_600;

#[derive(Parser)]
#[command(name = "convoy-hub", version = convoy_shared::VERSION, about = "The Convoy hub")]
struct Cli {
    /// Log filter (overridden by RUST_LOG).
    #[arg(long, global = true, env = "CONVOY_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines.
    #[arg(long, global = true, env = "CONVOY_LOG_JSON")]
    log_json: bool,
    /// Export spans to this OTLP/gRPC collector (http://HOST:4317, or https:// for TLS): one
    /// trace per sync, from fetch through render and push to every agent's apply.
    #[arg(long, global = true, env = "CONVOY_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// CA certificate an https:// collector's certificate must chain to (default: system roots).
    #[arg(long, global = true, env = "CONVOY_OTLP_CA")]
    otlp_ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at startup: the size of `Serve` does not matter.
#[allow(clippy::large_enum_variant)]
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
        /// The fleet repository (https://…, ssh://…, file://…, or a local path).
        #[arg(long, env = "CONVOY_REPO")]
        repo: Option<String>,
        /// User name for an https:// repository (sent with the token when the server asks).
        #[arg(long, env = "CONVOY_GIT_USERNAME", default_value = "git")]
        git_username: String,
        /// File holding the password or access token for an https:// repository.
        #[arg(long, env = "CONVOY_GIT_PASSWORD_FILE", conflicts_with = "git_password")]
        git_password_file: Option<PathBuf>,
        /// Password or access token for an https:// repository (prefer --git-password-file).
        #[arg(long, env = "CONVOY_GIT_PASSWORD", hide_env_values = true)]
        git_password: Option<String>,
        /// CA certificates (PEM) the https:// repository's certificate must chain to (default:
        /// the system's roots).
        #[arg(long, env = "CONVOY_GIT_CA")]
        git_ca: Option<PathBuf>,
        /// Credentials for chart repositories and OCI registries: a YAML (or JSON) list of
        /// {host, username, password | token} (the hub chart mounts it from a Secret).
        #[arg(long, env = "CONVOY_CHART_CREDENTIALS")]
        chart_credentials: Option<PathBuf>,
        /// CA certificates (PEM) https:// chart repositories' and registries' certificates must
        /// chain to (default: the system's roots).
        #[arg(long, env = "CONVOY_CHART_CA")]
        chart_ca: Option<PathBuf>,
        /// Chart repositories and OCI registries (HOST or HOST:PORT) reached over plain HTTP,
        /// like `helm --plain-http`; every other host must be https://.
        #[arg(long, env = "CONVOY_CHART_PLAIN_HTTP", value_delimiter = ',')]
        chart_plain_http: Vec<String>,
        /// Directory for the Git mirror, the embedded store and the chart cache.
        #[arg(long, env = "CONVOY_DATA", default_value = "convoy-data")]
        data: PathBuf,
        /// Directory of the files convoy.yaml's notifications and commit status name
        /// (`secretRef`, `urlRef`, `tokenRef`), read at each use. Default: DATA/secrets.
        #[arg(long, env = "CONVOY_SECRETS_DIR")]
        secrets_dir: Option<PathBuf>,
        /// Keep the hub's state in PostgreSQL (postgres://USER[:PASSWORD]@HOST:PORT/DATABASE)
        /// instead of the embedded store in --data; hubs sharing one database are replicas: one
        /// leads the sync, every one serves agents and the CLI.
        #[arg(long, env = "CONVOY_STORE", hide_env_values = true)]
        store: Option<String>,
        /// Branch holding convoy.yaml (convoy.yaml's spec.fleetBranch may move it).
        #[arg(long, env = "CONVOY_FLEET_BRANCH", default_value = "main")]
        fleet_branch: String,
        /// Seconds between fetches (a webhook or `convoy refresh` fetches at once).
        #[arg(long, env = "CONVOY_POLL_SECONDS", default_value_t = 30)]
        poll_seconds: u64,
        /// Address of the HTTP listener (POST /webhook, /healthz); "off" disables it.
        #[arg(long, env = "CONVOY_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
        http_listen: String,
        /// Shared secret for webhook signatures (GitHub/Gitea HMAC, GitLab token).
        #[arg(long, env = "CONVOY_WEBHOOK_SECRET", hide_env_values = true)]
        webhook_secret: Option<String>,
        /// Lifetime of the agent certificates registration signs (agents renew at two thirds).
        #[arg(long, env = "CONVOY_AGENT_CERT_HOURS", default_value_t = 720,
              value_parser = clap::value_parser!(u64).range(1..=MAX_AGENT_CERT_HOURS))]
        agent_cert_hours: u64,
        /// Seconds a client may take to finish its TLS handshake.
        #[arg(long, env = "CONVOY_HANDSHAKE_TIMEOUT_SECONDS", default_value_t = 10,
              value_parser = clap::value_parser!(u64).range(1..=300))]
        handshake_timeout_seconds: u64,
        /// TLS handshakes in progress at once; over it, a connection waits its turn and sheds
        /// the oldest one if that has stalled for 2 s (the hub never stops accepting).
        #[arg(long, env = "CONVOY_MAX_HANDSHAKES", default_value_t = 1024,
              value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        max_handshakes: u64,
        /// TLS handshakes in progress from one IP address; over it, a connection from there
        /// waits its turn and sheds that address's oldest one if stalled. Raise it when many
        /// agents share one address (NAT).
        #[arg(long, env = "CONVOY_MAX_HANDSHAKES_PER_SOURCE", default_value_t = 128,
              value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        max_handshakes_per_source: u64,
        /// Single sign-on: the OpenID provider people sign in with (`convoy login`); the hub
        /// signs a short-lived member certificate for the user and groups of its ID tokens.
        #[arg(long, env = "CONVOY_OIDC_ISSUER", requires = "oidc_client_id")]
        oidc_issuer: Option<String>,
        /// The client id registered for Convoy at the provider (the ID tokens' audience).
        #[arg(long, env = "CONVOY_OIDC_CLIENT_ID")]
        oidc_client_id: Option<String>,
        /// The ID token claim holding the user's groups.
        #[arg(long, env = "CONVOY_OIDC_GROUPS_CLAIM", default_value = "groups")]
        oidc_groups_claim: String,
        /// The ID token claim naming the user (`sub` when the token lacks it).
        #[arg(long, env = "CONVOY_OIDC_USER_CLAIM", default_value = "email")]
        oidc_user_claim: String,
        /// Serve the web dashboard to browsers on this address (HTTPS), signing them in through
        /// the OpenID provider (needs --oidc-issuer).
        #[arg(long, env = "CONVOY_UI_LISTEN", requires = "oidc_issuer")]
        ui_listen: Option<String>,
        /// Where browsers reach the dashboard (behind a load balancer or another name); the
        /// provider must allow URL/auth/callback as a redirect. Default: https:// and the
        /// listen address.
        #[arg(long, env = "CONVOY_UI_URL", requires = "ui_listen")]
        ui_url: Option<String>,
        /// The client id registered for the dashboard at the provider (a web client that
        /// redirects to URL/auth/callback). Default: --oidc-client-id.
        #[arg(long, env = "CONVOY_UI_CLIENT_ID", requires = "ui_listen")]
        ui_client_id: Option<String>,
        /// A file holding that client's secret, for a confidential client (else PKCE alone).
        #[arg(long, env = "CONVOY_UI_CLIENT_SECRET_FILE", requires = "ui_listen")]
        ui_client_secret_file: Option<PathBuf>,
        /// The dashboard's TLS certificate and key (PEM), e.g. one browsers trust. Default: the
        /// hub's serving certificate.
        #[arg(long, env = "CONVOY_UI_TLS_CERT", requires_all = ["ui_listen", "ui_tls_key"])]
        ui_tls_cert: Option<PathBuf>,
        #[arg(long, env = "CONVOY_UI_TLS_KEY", requires = "ui_tls_cert")]
        ui_tls_key: Option<PathBuf>,
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
        /// admin and viewer are built-in roles; member holds only what the access policy
        /// (spec.access of convoy.yaml) binds to the user or their groups.
        #[arg(long, value_parser = ["admin", "viewer", "member"])]
        role: Option<String>,
        /// A group of the user, which the access policy binds roles to (repeatable).
        #[arg(long = "group", requires = "user")]
        groups: Vec<String>,
        #[arg(long, default_value_t = pki::DEFAULT_LEAF_DAYS)]
        days: i64,
    },
}

#[global_allocator]
static ALLOCATOR: convoy_hub::allocator::Allocator = convoy_hub::allocator::Allocator {};

fn main() -> ExitCode {
    let cli = Cli::parse();
    convoy_shared::install_crypto_provider();
    let telemetry = TelemetryConfig {
        filter: cli.log,
        json: cli.log_json,
        otlp_endpoint: cli.otlp_endpoint,
        otlp_ca: cli.otlp_ca,
        service: "convoy-hub",
    };
    let instrumented = match Instrumented::start(&telemetry) {
        Ok(instrumented) => instrumented,
        Err(code) => return code,
    };
    match run(cli.command, instrumented.runtime()) {
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

fn run(command: Command, runtime: &tokio::runtime::Runtime) -> Result<(), Failure> {
    let config = |e: anyhow::Error| Failure::Config(e);
    match command {
        Command::Ca { command: CaCommand::Init { dir, sans, days } } => {
            pki::init_ca(&CertDir::new(&dir), &sans, days).map_err(|e| config(e.into()))?;
            println!("created CA, hub and admin certificates in {}", dir.display());
            Ok(())
        }
        Command::Certs { command: CertsCommand::Issue { dir, cluster, user, role, groups, days } } => {
            let identity = match (cluster, user) {
                (Some(name), _) => Identity::Cluster(name),
                (None, Some(name)) => Identity::User {
                    name,
                    role: role.unwrap_or_default().parse::<Role>().map_err(|e| config(e.into()))?,
                },
                (None, None) => unreachable!("clap requires --cluster or --user"),
            };
            if let Identity::Cluster(name) = &identity
                && !convoy_shared::identity::valid_name(name)
            {
                return Err(config(anyhow::anyhow!(
                    "'{name}' is not a valid name: use lowercase letters, digits and '-'"
                )));
            }
            let user_names = match &identity {
                Identity::User { name, .. } => std::iter::once(name).chain(&groups).collect(),
                _ => Vec::new(),
            };
            if let Some(bad) = user_names.iter().find(|n| !convoy_shared::identity::valid_user_name(n)) {
                return Err(config(anyhow::anyhow!(
                    "'{bad}' is not a valid user or group name: use letters, digits and . _ @ + -"
                )));
            }
            let dir = CertDir::new(dir);
            let ca = CertificateAuthority::load(&dir).map_err(|e| config(e.into()))?;
            let mut request = LeafRequest::new(identity.clone(), days);
            request.groups = groups;
            let issued = ca.issue(&request).map_err(|e| config(e.into()))?;
            let (cert, key) = dir.write_leaf(&identity, &issued).map_err(|e| config(e.into()))?;
            println!("issued {identity}: {} {}", cert.display(), key.display());
            Ok(())
        }
        Command::Serve {
            listen,
            certs,
            repo,
            git_username,
            git_password_file,
            git_password,
            git_ca,
            chart_credentials,
            chart_ca,
            chart_plain_http,
            data,
            secrets_dir,
            store,
            fleet_branch,
            poll_seconds,
            http_listen,
            webhook_secret,
            agent_cert_hours,
            handshake_timeout_seconds,
            max_handshakes,
            max_handshakes_per_source,
            oidc_issuer,
            oidc_client_id,
            oidc_groups_claim,
            oidc_user_claim,
            ui_listen,
            ui_url,
            ui_client_id,
            ui_client_secret_file,
            ui_tls_cert,
            ui_tls_key,
        } => {
            let dir = CertDir::new(certs);
            // With the CA key the hub signs agent CSRs (bootstrap tokens); without it (a hub
            // that only holds ca.crt) registration is refused with a clear error.
            let authority = if dir.ca_key().exists() {
                Some(Arc::new(CertificateAuthority::load(&dir).map_err(|e| config(e.into()))?))
            } else {
                tracing::warn!("no ca.key in the certificate directory: agent registration is disabled");
                None
            };
            let registry = RegistryConfig { authority, cert_lifetime: Duration::from_secs(agent_cert_hours * 3600) };
            let material = TlsMaterial::from_files(&dir.ca_cert(), &dir.hub_cert(), &dir.hub_key())
                .map_err(|e| config(e.into()))?;
            let tls = tls::server_config(&material).map_err(|e| config(e.into()))?;
            let access = GitAccess::load(git_username, git_password_file.as_deref(), git_password, git_ca.as_deref())
                .map_err(|e| config(e.into()))?;
            let charts = ChartFetcher::new(FetchConfig {
                cache_dir: data.join("charts"),
                credentials: match &chart_credentials {
                    Some(path) => Credential::load_file(path).map_err(|e| config(e.into()))?,
                    None => Vec::new(),
                },
                tls: chart_ca.map(|ca| GitAccess::tls_config(Some(&ca))).transpose().map_err(|e| config(e.into()))?,
                plain_http_hosts: chart_plain_http,
            })
            .map_err(|e| config(e.into()))?;
            let source = repo.map(|url| SourceConfig {
                url: repository_url(&url),
                mirror: data.join("mirror.git"),
                fleet_branch,
                interval: Duration::from_secs(poll_seconds.max(1)),
                access,
                charts: Some(Arc::new(charts)),
            });
            let handshakes = HandshakeLimits {
                timeout: Duration::from_secs(handshake_timeout_seconds),
                max_total: max_handshakes as usize,
                max_per_source: max_handshakes_per_source as usize,
            };
            let sign_in = oidc_issuer.map(|issuer| convoy_hub::api::oidc::OidcConfig {
                issuer,
                client_id: oidc_client_id.unwrap_or_default(),
                user_claim: oidc_user_claim,
                groups_claim: oidc_groups_claim,
            });
            // The dashboard: its own TLS (no client certificates), its own client at the provider.
            let dashboard = match &ui_listen {
                None => None,
                Some(_) => {
                    let tls = match (&ui_tls_cert, &ui_tls_key) {
                        (Some(cert), Some(key)) => {
                            let read = |p: &PathBuf| pki::read(p).map_err(|e| config(e.into()));
                            tls::web_server_config(&read(cert)?, &read(key)?)
                        }
                        _ => tls::web_server_config(&material.cert_pem, &material.key_pem),
                    }
                    .map_err(|e| config(e.into()))?;
                    let secret = ui_client_secret_file
                        .map(|path| {
                            std::fs::read_to_string(&path)
                                .map(|s| s.trim().to_string())
                                .map_err(|e| config(anyhow::anyhow!("--ui-client-secret-file {}: {e}", path.display())))
                        })
                        .transpose()?;
                    let mut oidc = sign_in.clone().expect("clap requires --oidc-issuer with --ui-listen");
                    if let Some(id) = ui_client_id {
                        oidc.client_id = id;
                    }
                    let session_key = convoy_hub::api::dashboard::session_key(&material.key_pem);
                    Some((tls, oidc, secret, session_key))
                }
            };
            let mut hub_config = HubConfig {
                tls,
                source,
                replication: None,
                webhook_secret,
                handshakes,
                sign_in,
                dashboard: None,
                notify: NotifyConfig {
                    secrets_dir: secrets_dir.unwrap_or_else(|| data.join("secrets")),
                    dashboard_url: String::new(),
                },
            };
            // One open file per agent stream: take all the hard limit allows (the soft default
            // is often 1,024), and say how many agents that leaves room for.
            match rlimit::increase_nofile_limit(u64::MAX) {
                Ok(limit) => tracing::info!(limit, "open-file limit raised to the hard limit (one per agent stream)"),
                Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit; agent streams may be refused"),
            }
            runtime.block_on(async {
                let grpc = bind(&listen).await?;
                tracing::info!(address = %local_addr(&grpc)?, "hub listening");
                let http = if http_listen == "off" { None } else { Some(bind(&http_listen).await?) };
                if let Some(http) = &http {
                    tracing::info!(address = %local_addr(http)?, "http listening");
                }
                if let (Some(address), Some((tls, oidc, client_secret, session_key))) = (&ui_listen, dashboard) {
                    let listener = bind(address).await?;
                    let local = local_addr(&listener)?;
                    let url = match ui_url {
                        Some(url) => url,
                        None if local.ip().is_unspecified() => format!("https://{}:{}", hostname(), local.port()),
                        None => format!("https://{local}"),
                    }
                    .parse::<reqwest::Url>()
                    .map_err(|e| config(anyhow::anyhow!("the dashboard's URL: {e} (set --ui-url)")))?;
                    hub_config.notify.dashboard_url = url.to_string().trim_end_matches('/').to_string();
                    let ui = convoy_hub::api::dashboard::DashboardConfig {
                        listener,
                        tls,
                        url,
                        oidc,
                        client_secret,
                        session_key,
                    };
                    hub_config.dashboard = Some(ui);
                }
                let shutdown = CancellationToken::new();
                tokio::spawn(convoy_shared::cancel_on_signal(shutdown.clone()));
                let store: Arc<dyn Store> = match &store {
                    Some(url) => {
                        let store = Arc::new(PgStore::connect(url).map_err(|e| config(e.into()))?);
                        let holder = format!("{}@{listen}", hostname());
                        hub_config.replication = Some(Replication::new(store.clone(), holder));
                        store
                    }
                    None => Arc::new(RedbStore::open(&data).map_err(|e| config(e.into()))?),
                };
                let hub = Hub::new(store, registry).map_err(|e| config(e.into()))?;
                convoy_hub::run(hub_config, grpc, http, hub, shutdown).await.map_err(|e| Failure::Runtime(e.into()))
            })
        }
    }
}

async fn bind(address: &str) -> Result<tokio::net::TcpListener, Failure> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Failure::Config(anyhow::anyhow!("cannot listen on {address}: {e}")))?;
    Ok(listener)
}

fn local_addr(listener: &tokio::net::TcpListener) -> Result<std::net::SocketAddr, Failure> {
    listener.local_addr().map_err(|e| Failure::Runtime(e.into()))
}

/// This machine's name (a pod's name in Kubernetes), to say which replica leads.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// Accepts a local path as the repository and turns it into a file:// URL.
fn repository_url(repo: &str) -> String {
    if repo.contains("://") || repo.contains('@') {
        return repo.to_string();
    }
    let path = std::fs::canonicalize(repo).unwrap_or_else(|_| PathBuf::from(repo));
    format!("file://{}", path.display())
}
