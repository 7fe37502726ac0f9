//! `convoy-sandbox`: a whole local fleet on one machine. A hub with its embedded store reading an
//! example fleet repository; simulated clusters (kubesim) dev-1, stage-1, prod-eu, prod-us (and
//! more on request; `--real-clusters N` runs the first N, dev-1 first, on real control planes:
//! etcd, kube-apiserver and kube-controller-manager, issue 29), each reconciled by its own agent
//! over real mTLS on loopback; and a CLI config, so `convoy --config DIR/convoy.yaml …` works at
//! once.
//!
//! Layout of DIR: `repo/` (a working clone; push to its `origin` and the hub picks it up),
//! `repo.git/` (that origin, whose `post-receive` hook calls the hub's `/webhook` with a
//! GitHub-style signature, as a forge would), `convoy.yaml` (CLI config),
//! `kube/<cluster>.kubeconfig`, `certs/`, `hub/` (the hub's mirror, store, webhook secret and
//! webhook URL), `agents/<cluster>/` (agent caches), `sops/<environment>.agekey` (each
//! environment's age key: its agents decrypt the example repository's SOPS-encrypted Secret
//! with it), `env.sh` (sourced by a shell: `convoy` on PATH, `CONVOY_CONFIG` set).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use convoy_agent::link::LinkConfig;
use convoy_agent::reconciler::ReconcilerConfig;
use convoy_cli::{ConfigFile, Context};
use convoy_hub::HubConfig;
use convoy_hub::source::SourceConfig;
use convoy_hub::state::hub::Hub;
use convoy_hub::state::registry::RegistryConfig;
use convoy_hub::store::redb::RedbStore;
use convoy_shared::backoff::Backoff;
use convoy_shared::identity::{Identity, Role};
use convoy_shared::pki::{self, CertDir, CertificateAuthority, LeafRequest};
use convoy_shared::tls::{self, HubAddress, TlsMaterial};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::fleet_repo::{EXAMPLE_ENVIRONMENTS, FleetRepo, example_environment, example_fleet};
use convoy_agent::sops::{self, AgeKeys, EncryptRules};
use kubesim::realkube::{self, RealCluster};
use kubesim::{FleetOptions, SimFleet};

/// The clusters every sandbox has.
pub const SANDBOX_CLUSTERS: [&str; 4] = ["dev-1", "stage-1", "prod-eu", "prod-us"];

/// Errors that stop the sandbox from starting.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Store(#[from] convoy_hub::store::StoreError),
    #[error("cannot listen on {address}: {source}; pass another --listen")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the simulated clusters did not start: {0}")]
    Kubesim(String),
    #[error("--real-clusters {asked}: the sandbox has {clusters} clusters (pass --clusters for more)")]
    TooManyReal { asked: usize, clusters: usize },
    #[error("--real-clusters: {0}")]
    RealClusters(String),
    #[error(transparent)]
    Sops(#[from] sops::SopsError),
}

/// How to lay out and run the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub dir: PathBuf,
    pub listen: String,
    /// Clusters beyond the four standard ones.
    pub extra_clusters: usize,
    /// How many clusters, dev-1 first, run on a real control plane (etcd, kube-apiserver,
    /// kube-controller-manager built by `e2e/realkube/build.sh`) instead of kubesim.
    pub real_clusters: usize,
    /// How often the hub fetches the repository.
    pub poll: Duration,
    /// The `convoy-sandbox` program that `repo.git`'s `post-receive` hook runs to call the
    /// hub's webhook; `None` leaves pushes to the poll.
    pub hook: Option<PathBuf>,
}

/// File in `DIR/hub` holding the webhook secret (made once, kept across restarts).
const WEBHOOK_SECRET_FILE: &str = "webhook-secret";
/// File in `DIR/hub` holding the URL of the running hub's webhook.
const WEBHOOK_URL_FILE: &str = "webhook-url";

/// A running sandbox: where things are, and the hub's state for the status table.
pub struct Sandbox {
    pub hub_address: String,
    pub http_address: String,
    pub cli_config: PathBuf,
    /// `DIR/env.sh`: puts the directory of the sandbox's own program (where `cargo build` puts
    /// `convoy` too) on PATH and sets `CONVOY_CONFIG`, for a shell that `source`s it.
    pub env_script: PathBuf,
    pub repo: PathBuf,
    pub hub: Arc<Hub>,
    pub clusters: Vec<String>,
    /// Each agent's `/metrics` address (HOST:PORT), in `clusters` order.
    pub agent_metrics: Vec<String>,
    /// The sandbox directory, its certificates and the CA that signs them.
    dir: PathBuf,
    certs: CertDir,
    ca: CertificateAuthority,
    /// Owned so the clusters live as long as the sandbox.
    _kube: SimFleet,
    _real: Vec<RealCluster>,
    tasks: JoinSet<()>,
}

impl Sandbox {
    /// Lays out DIR (reusing certificates and the repository when present), starts the
    /// clusters, the hub and the agents, and returns once everything listens.
    pub async fn start(config: &SandboxConfig, shutdown: CancellationToken) -> Result<Self, SandboxError> {
        let certs = CertDir::new(config.dir.join("certs"));
        let ca = if certs.ca_key().exists() {
            CertificateAuthority::load(&certs)?
        } else {
            pki::init_ca(&certs, &["localhost".into(), "127.0.0.1".into()], pki::DEFAULT_LEAF_DAYS)?
        };
        let clusters: Vec<String> = SANDBOX_CLUSTERS
            .iter()
            .map(|c| c.to_string())
            .chain((1..=config.extra_clusters).map(|i| format!("extra-{i}")))
            .collect();
        let keys = environment_keys(&config.dir.join("sops"))?;
        let origin = prepare_repository(&config.dir, config.extra_clusters, &keys)?;

        if config.real_clusters > clusters.len() {
            return Err(SandboxError::TooManyReal { asked: config.real_clusters, clusters: clusters.len() });
        }
        let (real_names, sim_names) = clusters.split_at(config.real_clusters);
        let kube_dir = config.dir.join("kube");
        std::fs::create_dir_all(&kube_dir).map_err(|source| SandboxError::Write { path: kube_dir.clone(), source })?;
        let real = start_real_clusters(real_names, &kube_dir).await?;
        let names: Vec<&str> = sim_names.iter().map(String::as_str).collect();
        let options = FleetOptions { dir: Some(kube_dir), ..Default::default() };
        let kube = SimFleet::start_with(&names, options).await.map_err(|e| SandboxError::Kubesim(e.to_string()))?;

        let listen_err = |address: &str| {
            let address = address.to_string();
            move |source| SandboxError::Listen { address, source }
        };
        let grpc = tokio::net::TcpListener::bind(&config.listen).await.map_err(listen_err(&config.listen))?;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(listen_err("127.0.0.1:0"))?;
        let hub_address = format!("localhost:{}", grpc.local_addr().map_err(listen_err(&config.listen))?.port());
        let http_address = http.local_addr().map_err(listen_err("127.0.0.1:0"))?.to_string();

        let hub_dir = config.dir.join("hub");
        let webhook_secret = webhook_secret(&hub_dir)?;
        write_file(&hub_dir.join(WEBHOOK_URL_FILE), format!("http://{http_address}/webhook"))?;
        if let Some(program) = &config.hook {
            install_post_receive(&origin, program, &config.dir)?;
        }

        // Where spec.notifications' and spec.commitStatus' secret files go.
        let secrets = config.dir.join("hub").join("secrets");
        std::fs::create_dir_all(&secrets).map_err(|source| SandboxError::Write { path: secrets.clone(), source })?;
        let mut tasks = JoinSet::new();
        let (hub, publisher) =
            Hub::new(Arc::new(RedbStore::open(&config.dir.join("hub"))?), RegistryConfig::default())?;
        let material = TlsMaterial::from_files(&certs.ca_cert(), &certs.hub_cert(), &certs.hub_key())?;
        let hub_config = HubConfig {
            tls: tls::server_config(&material)?,
            source: Some(SourceConfig {
                url: format!("file://{}", origin.display()),
                mirror: config.dir.join("hub").join("mirror.git"),
                fleet_branch: "main".into(),
                interval: config.poll,
                access: Default::default(),
                charts: None,
            }),
            replication: None,
            webhook_secret: Some(webhook_secret),
            handshakes: Default::default(),
            sign_in: None,
            dashboard: None,
            notify: convoy_hub::notify::outbox::NotifyConfig { secrets_dir: secrets, dashboard_url: String::new() },
        };
        let (hub_state, token) = ((hub.clone(), publisher), shutdown.clone());
        tasks.spawn(
            async move {
                if let Err(e) = convoy_hub::run(hub_config, grpc, Some(http), hub_state, token).await {
                    tracing::error!(error = %e, "hub stopped");
                }
            }
            .instrument(tracing::info_span!("hub")),
        );

        let mut agent_metrics = Vec::new();
        for name in &clusters {
            let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(listen_err("127.0.0.1:0"))?;
            agent_metrics.push(metrics.local_addr().map_err(listen_err("127.0.0.1:0"))?.to_string());
            let identity = Identity::Cluster(name.clone());
            let issued = ca.issue(&LeafRequest::new(identity.clone(), pki::DEFAULT_LEAF_DAYS))?;
            certs.write_leaf(&identity, &issued)?;
            let link = LinkConfig {
                hub: HubAddress::parse(&hub_address, None)?,
                tls: tls::client_config(ca.cert_pem(), Some((&issued.cert_pem, &issued.key_pem)))?,
                cluster_name: name.clone(),
                heartbeat: Duration::from_secs(5),
                backoff: Backoff { initial: Duration::from_millis(200), max: Duration::from_secs(5) },
                connect_timeout: Duration::from_secs(5),
                capabilities: Default::default(),
            };
            let mut reconciler = ReconcilerConfig::new(name, config.dir.join("agents").join(name));
            reconciler.sops = keys
                .iter()
                .find(|(env, _)| *env == example_environment(name))
                .map(|(_, k)| k.clone())
                .unwrap_or_default();
            let client = match real.iter().find(|r| r.name() == name) {
                Some(r) => r.client().await.map_err(|e| SandboxError::RealClusters(e.to_string()))?,
                None => kube
                    .cluster(name)
                    .expect("a sandbox cluster not real is simulated")
                    .client()
                    .await
                    .map_err(|e| SandboxError::Kubesim(e.to_string()))?,
            };
            let token = shutdown.clone();
            tasks.spawn(
                async move {
                    if let Err(e) = convoy_agent::run(reconciler, link, client, Some(metrics), token).await {
                        tracing::error!(error = %e, "agent stopped");
                    }
                }
                .instrument(tracing::info_span!("agent", cluster = %name)),
            );
        }

        let admin = Identity::User { name: "admin".into(), role: Role::Admin };
        let cli_config = write_cli_config(&config.dir, "convoy.yaml", &certs, &admin, &hub_address)?;
        let env_script = write_env_script(&config.dir, &cli_config, config.hook.as_deref())?;
        Ok(Sandbox {
            hub_address,
            http_address,
            cli_config,
            env_script,
            repo: config.dir.join("repo"),
            hub,
            clusters,
            agent_metrics,
            dir: config.dir.clone(),
            certs,
            ca,
            _kube: kube,
            _real: real,
            tasks,
        })
    }

    /// Issues a CLI certificate for user `name` with `role` from the sandbox's CA and writes a
    /// CLI config for it, `DIR/convoy-NAME.yaml`, beside the admin's `DIR/convoy.yaml`.
    pub fn user_config(&self, name: &str, role: Role) -> Result<PathBuf, SandboxError> {
        let user = Identity::User { name: name.into(), role };
        let issued = self.ca.issue(&LeafRequest::new(user.clone(), pki::DEFAULT_LEAF_DAYS))?;
        self.certs.write_leaf(&user, &issued)?;
        write_cli_config(&self.dir, &format!("convoy-{name}.yaml"), &self.certs, &user, &self.hub_address)
    }

    /// Waits for the hub and every agent to stop (after the shutdown token is cancelled).
    pub async fn drain(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts a real control plane for each of `names`, side by side, and writes each one's
/// kubeconfig into `kube_dir` beside the simulated clusters' (`NAME.kubeconfig`).
async fn start_real_clusters(names: &[String], kube_dir: &Path) -> Result<Vec<RealCluster>, SandboxError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let bins = realkube::binaries::locate().map_err(SandboxError::RealClusters)?;
    let started = futures::future::join_all(names.iter().map(|name| RealCluster::start(name, &bins))).await;
    let real: Vec<RealCluster> =
        started.into_iter().collect::<Result<_, _>>().map_err(|e| SandboxError::RealClusters(e.to_string()))?;
    for cluster in &real {
        write_file(&kube_dir.join(format!("{}.kubeconfig", cluster.name())), cluster.kubeconfig().to_string())?;
    }
    Ok(real)
}

/// Each environment's age key, read from `dir/<environment>.agekey`, generated there (as
/// `age-keygen` writes it, mode 0600) when missing.
fn environment_keys(dir: &Path) -> Result<Vec<(&'static str, AgeKeys)>, SandboxError> {
    std::fs::create_dir_all(dir).map_err(|source| SandboxError::Write { path: dir.to_path_buf(), source })?;
    let mut keys = Vec::new();
    for env in EXAMPLE_ENVIRONMENTS {
        let path = dir.join(format!("{env}.agekey"));
        if !path.exists() {
            use age::secrecy::ExposeSecret as _;
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let identity = age::x25519::Identity::generate();
            let text = format!(
                "# convoy-sandbox: the {env} environment's agents decrypt SOPS files with this key\n# public key: {}\n{}\n",
                identity.to_public(),
                identity.to_string().expose_secret()
            );
            let write = |source| SandboxError::Write { path: path.clone(), source };
            let mut file =
                std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(write)?;
            file.write_all(text.as_bytes()).map_err(write)?;
        }
        keys.push((env, AgeKeys::load(&path)?));
    }
    Ok(keys)
}

/// The example Secret of `env`, encrypted for `recipient` by the real `sops` when it is on the
/// PATH, else by [`sops::encrypt`] (which writes the same format; the agent tests check it
/// against `sops --decrypt`). Only `stringData` is encrypted, so the file stays readable.
fn example_secret(env: &str, recipient: &str) -> Result<String, SandboxError> {
    use rand::Rng as _;
    let password: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(24).map(char::from).collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: credentials\ntype: Opaque\nstringData:\n  username: app-{env}\n  password: {password}\n"
    );
    let regex = "^(data|stringData)$";
    // sops reads a file; a temporary one keeps the cleartext out of DIR.
    let real = tempfile::NamedTempFile::new().and_then(|file| {
        std::fs::write(file.path(), &yaml)?;
        std::process::Command::new("sops")
            .args(["--encrypt", "--age", recipient, "--encrypted-regex", regex, "--input-type", "yaml"])
            .args(["--output-type", "yaml"])
            .arg(file.path())
            .stderr(std::process::Stdio::null())
            .output()
    });
    if let Ok(out) = real
        && out.status.success()
        && let Ok(text) = String::from_utf8(out.stdout)
    {
        return Ok(text);
    }
    let document: serde_json::Value = serde_saphyr::from_str(&yaml).expect("the example Secret is valid YAML");
    let recipient: age::x25519::Recipient =
        recipient.parse().map_err(|e| sops::SopsError::Metadata(format!("age recipient {recipient}: {e}")))?;
    let rules = EncryptRules { encrypted_regex: Some(regex.into()), ..Default::default() };
    let encrypted = sops::encrypt(&document, &[recipient], &rules)?;
    Ok(serde_saphyr::to_string(&encrypted).expect("a JSON value always serializes"))
}

fn write_file(path: &Path, contents: String) -> Result<(), SandboxError> {
    let err = |source| SandboxError::Write { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::write(path, contents).map_err(err)
}

/// The sandbox's webhook secret: read from `DIR/hub/webhook-secret`, made there on first start.
fn webhook_secret(hub_dir: &Path) -> Result<String, SandboxError> {
    let path = hub_dir.join(WEBHOOK_SECRET_FILE);
    if let Ok(secret) = std::fs::read_to_string(&path)
        && !secret.trim().is_empty()
    {
        return Ok(secret.trim().to_string());
    }
    let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    write_file(&path, secret.clone())?;
    Ok(secret)
}

/// Writes `origin/hooks/post-receive`: it runs `program --dir DIR post-receive`, which signs
/// the push like GitHub and posts it to the hub's webhook.
fn install_post_receive(origin: &Path, program: &Path, dir: &Path) -> Result<(), SandboxError> {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let script = format!(
        "#!/bin/sh\n# Written by convoy-sandbox: tell the hub about this push, as a forge's webhook would.\nexec {} --dir {} post-receive\n",
        quote(program),
        quote(&dir)
    );
    let path = origin.join("hooks").join("post-receive");
    write_file(&path, script)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|source| SandboxError::Write { path: path.clone(), source })
}

/// What the `post-receive` hook does: reads git's `OLD NEW REF` lines from `updates`, and posts a
/// GitHub-style push event for the last ref, signed with the sandbox's secret
/// (`X-Hub-Signature-256`), to the running hub's webhook. Returns the hub's status line.
pub fn notify_push(dir: &Path, updates: &str) -> Result<String, String> {
    let hub_dir = dir.join("hub");
    let read = |file: &str| {
        std::fs::read_to_string(hub_dir.join(file))
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("cannot read {}: {e}", hub_dir.join(file).display()))
    };
    let (secret, url) = (read(WEBHOOK_SECRET_FILE)?, read(WEBHOOK_URL_FILE)?);
    let Some((before, after, reference)) = updates.lines().rev().find_map(|l| {
        let mut parts = l.split_whitespace();
        Some((parts.next()?, parts.next()?, parts.next()?))
    }) else {
        return Err("no ref updates on stdin".into());
    };
    let body = serde_json::json!({
        "ref": reference,
        "before": before,
        "after": after,
        "repository": {"full_name": "convoy-sandbox/repo", "clone_url": dir.join("repo.git").display().to_string()},
    })
    .to_string();
    let authority = url.trim_start_matches("http://").split('/').next().unwrap_or_default();
    crate::harness::post_webhook(authority, &secret, &body)
}

/// Creates DIR/repo (the example fleet, branches main, stage and dev, with each environment's
/// Secret encrypted for its key in `keys`) pushed to its origin DIR/repo.git, unless it exists.
/// Returns the origin's path.
fn prepare_repository(dir: &Path, extra: usize, keys: &[(&str, AgeKeys)]) -> Result<PathBuf, SandboxError> {
    let origin = dir.join("repo.git");
    if origin.join("HEAD").exists() {
        return Ok(origin);
    }
    let mut secrets = Vec::new();
    for (env, key) in keys {
        let recipient = key.recipients().into_iter().next().unwrap_or_default();
        secrets.push((*env, example_secret(env, &recipient)?));
    }
    let work = FleetRepo::init(&dir.join("repo"));
    example_fleet(&work, extra, &secrets);
    let bare = FleetRepo { dir: dir.to_path_buf() };
    bare.git(&["init", "-q", "--bare", "-b", "main", "repo.git"]);
    work.git(&["remote", "add", "origin", &origin.display().to_string()]);
    work.git(&["push", "-q", "-u", "origin", "main", "stage", "dev"]);
    Ok(origin)
}

/// Writes `DIR/env.sh`: `CONVOY_CONFIG` set to the CLI config, and the directory of `program`
/// (the sandbox's own binary, beside which cargo builds `convoy`) first on PATH.
fn write_env_script(dir: &Path, cli_config: &Path, program: Option<&Path>) -> Result<PathBuf, SandboxError> {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let mut text =
        String::from("# convoy-sandbox: `source` this file to reach the sandbox with `convoy` from any directory\n");
    text += &format!("export CONVOY_CONFIG={}\n", quote(cli_config));
    if let Some(bin) = program.and_then(Path::parent) {
        text += &format!("export PATH={}:\"$PATH\"\n", quote(bin));
    }
    let path = dir.join("env.sh");
    std::fs::write(&path, text).map_err(|source| SandboxError::Write { path: path.clone(), source })?;
    Ok(path)
}

/// Writes `DIR/NAME`, a CLI config for `user`, whose certificate and key are in `certs`.
fn write_cli_config(
    dir: &Path,
    name: &str,
    certs: &CertDir,
    user: &Identity,
    hub_address: &str,
) -> Result<PathBuf, SandboxError> {
    let (cert, key) = certs.leaf_paths(user);
    let file = ConfigFile {
        current_context: Some("sandbox".into()),
        contexts: vec![Context {
            name: "sandbox".into(),
            hub: Some(hub_address.to_string()),
            ca: Some(certs.ca_cert()),
            cert: Some(cert),
            key: Some(key),
            server_name: None,
        }],
    };
    let path = dir.join(name);
    let text = serde_saphyr::to_string(&file).expect("a config file always serializes");
    std::fs::write(&path, text).map_err(|source| SandboxError::Write { path: path.clone(), source })?;
    Ok(path)
}
