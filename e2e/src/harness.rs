//! The fleet harness: a throwaway certificate authority, the real `convoy-hub` binary started as
//! a process, and in-process agents and CLI clients dialing it over real sockets.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy_agent::link::{HubLink, LinkConfig, LinkHandle};
use convoy_shared::backoff::Backoff;

use convoy_hub::state::registry::{DEFAULT_AGENT_CERT_LIFETIME, RegistryConfig};
pub use convoy_hub::testing::TestPostgres;
use convoy_shared::identity::{Identity, Role};
use convoy_shared::pki::{self, CertDir, CertificateAuthority, IssuedCert, LeafRequest};
use convoy_shared::proto::fleet_service_client::FleetServiceClient;
use convoy_shared::tls::{self, HubAddress};
use kubesim::SimCluster;
pub use kubesim::eventually;
use kubesim::poll::HANG_GUARD;
use time::{Duration as TimeDuration, OffsetDateTime};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A certificate directory made by `init_ca`, in a temporary directory.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub certs: CertDir,
    pub ca: CertificateAuthority,
}

impl TestCa {
    /// A fresh CA with a hub certificate for localhost.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = CertDir::new(dir.path().join("certs"));
        let ca = pki::init_ca(&certs, &["localhost".into(), "127.0.0.1".into()], 30).expect("init CA");
        TestCa { dir, certs, ca }
    }

    /// A certificate for `identity`, valid for a day.
    pub fn issue(&self, identity: Identity) -> IssuedCert {
        self.ca.issue(&LeafRequest::new(identity, 1)).expect("issue")
    }

    /// A certificate for `identity` that expired an hour ago.
    pub fn issue_expired(&self, identity: Identity) -> IssuedCert {
        let mut request = LeafRequest::new(identity, 1);
        request.not_before = OffsetDateTime::now_utc() - TimeDuration::days(2);
        request.not_after = OffsetDateTime::now_utc() - TimeDuration::hours(1);
        self.ca.issue(&request).expect("issue expired")
    }

    /// A client TLS config trusting this CA and presenting `cert` (none when `None`).
    pub fn client_tls(&self, cert: Option<&IssuedCert>) -> Arc<rustls::ClientConfig> {
        tls::client_config(self.ca.cert_pem(), cert.map(|c| (c.cert_pem.as_str(), c.key_pem.as_str())))
            .expect("client TLS")
    }

    /// An agent link configuration for `hub` presenting `cert`, with fast reconnects.
    pub fn agent_config(&self, hub: &str, cert: Option<&IssuedCert>, claimed_name: &str) -> LinkConfig {
        LinkConfig {
            hub: HubAddress::parse(hub, None).expect("hub address"),
            tls: self.client_tls(cert),
            cluster_name: claimed_name.to_string(),
            heartbeat: Duration::from_secs(5),
            backoff: Backoff { initial: Duration::from_millis(100), max: Duration::from_millis(1000) },
            connect_timeout: Duration::from_secs(5),
            capabilities: Default::default(),
        }
    }

    /// A CLI config file `DIR/NAME.yaml` for `hub` with a certificate this CA issues to
    /// `identity` (a user NAME) and `groups`, valid for a day.
    pub fn config_file(&self, hub: &str, dir: &Path, identity: Identity, groups: &[&str]) -> PathBuf {
        let mut request = LeafRequest::new(identity.clone(), 1);
        request.groups = groups.iter().map(|g| g.to_string()).collect();
        let issued = self.ca.issue(&request).expect("issue");
        let (cert, key) = self.certs.write_leaf(&identity, &issued).expect("write the certificate");
        let name = match &identity {
            Identity::User { name, .. } | Identity::Cluster(name) => name.clone(),
            Identity::Hub => "hub".into(),
        };
        let path = dir.join(format!("{name}.yaml"));
        let text = format!(
            "current-context: t\ncontexts:\n- name: t\n  hub: {hub}\n  ca: {}\n  cert: {}\n  key: {}\n",
            self.certs.ca_cert().display(),
            cert.display(),
            key.display()
        );
        std::fs::write(&path, text).expect("write the config");
        path
    }

    /// A fleet API client with a fresh CLI certificate of `role`.
    pub async fn cli(&self, hub: &str, role: Role) -> FleetServiceClient<Channel> {
        let cert = self.issue(Identity::User { name: format!("test-{}", role.as_str()), role });
        self.fleet_client(hub, &cert).await.expect("CLI connects")
    }

    /// A fleet API client presenting `cert`.
    pub async fn fleet_client(
        &self,
        hub: &str,
        cert: &IssuedCert,
    ) -> Result<FleetServiceClient<Channel>, tls::TlsError> {
        let address = HubAddress::parse(hub, None)?;
        Ok(FleetServiceClient::new(tls::connect(&address, self.client_tls(Some(cert)), Duration::from_secs(5)).await?))
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// Path of a workspace binary built next to the running test or benchmark (target/<profile>/).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("profile dir");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p convoy-hub`; `cargo test --workspace` builds it)",
        path.display()
    );
    path
}

/// A child process whose stderr lines are collected as they come. Killed when dropped.
pub struct Process {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Process {
    /// Spawns `command` with its stdout and stderr lines collected (interleaved by arrival).
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn process");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().expect("stdout"));
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().expect("stderr"));
        for pipe in [stdout, stderr] {
            let (sink, tx) = (log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().expect("log lock").push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        Process { child, log, lines }
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for_line(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(HANG_GUARD) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with '{needle}'; log so far: {:?}", self.log.lock().expect("log lock")),
            }
        }
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log.lock().expect("log lock").iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Process {
    /// Sends SIGTERM, as a service manager stopping it would, and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait()
    }

    /// Sends signal `name` (`TERM`, `STOP`, `CONT`…).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([&format!("-{name}"), &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -{name} {pid} failed");
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for the process")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `convoy-hub serve` process. Killed when dropped.
pub struct HubProcess {
    pub process: Process,
    /// gRPC address (agents, CLI).
    pub address: String,
    /// HTTP address (webhook, health).
    pub http_address: String,
    /// The data directory, when the caller passed none (removed with the hub).
    _data: Option<tempfile::TempDir>,
}

impl HubProcess {
    /// Starts the hub on `listen` (use `127.0.0.1:0` for any port) with `certs`, logging at info,
    /// and waits until it logs its address.
    pub fn start(certs: &Path, listen: &str) -> Self {
        Self::start_logging(certs, listen, "info")
    }

    /// Like [`HubProcess::start`] with the log filter `filter` (e.g. `trace`).
    pub fn start_logging(certs: &Path, listen: &str, filter: &str) -> Self {
        Self::start_with(certs, listen, filter, &[])
    }

    /// Starts the hub with extra `serve` arguments (e.g. `--repo URL --data DIR`).
    /// Without `--data` among them, the hub gets a fresh temporary data directory.
    pub fn start_with(certs: &Path, listen: &str, filter: &str, extra: &[&str]) -> Self {
        let mut command = Command::new(workspace_binary("convoy-hub"));
        command
            .args(["serve", "--listen", listen, "--http-listen", "127.0.0.1:0", "--certs"])
            .arg(certs)
            .args(extra)
            .env("RUST_LOG", filter);
        hub_allocator_settings(&mut command);
        let data = (!extra.contains(&"--data")).then(|| tempfile::tempdir().expect("hub data dir"));
        if let Some(data) = &data {
            command.arg("--data").arg(data.path());
        }
        let process = Process::spawn(command);
        let address_in = |line: String| line.split("address=").nth(1).expect("address in log line").trim().to_string();
        let address = address_in(process.wait_for_line("hub listening"));
        let http_address = address_in(process.wait_for_line("http listening"));
        HubProcess { process, address, http_address, _data: data }
    }

    /// A replica of a hub whose state is in PostgreSQL `database` (see [`TestPostgres`]),
    /// listening on `listen` and reading `repo_url` every second; it logs "leading" once it
    /// leads.
    pub fn start_replica(certs: &Path, listen: &str, repo_url: &str, database: &str) -> Self {
        let serve = ["--repo", repo_url, "--store", database, "--poll-seconds", "1"];
        Self::start_with(certs, listen, "info", &serve)
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.process.log_lines(needle)
    }

    /// Kills the hub with SIGKILL, as a crash would.
    pub fn kill(self) {
        drop(self);
    }

    /// Pauses the hub (SIGSTOP), as a stalled machine or a long GC pause would; `resume` wakes it.
    pub fn pause(&self) {
        self.process.signal("STOP");
    }

    /// Wakes a paused hub (SIGCONT).
    pub fn resume(&self) {
        self.process.signal("CONT");
    }
}

/// A `convoy-agent` command for a pre-issued certificate, reconciling the cluster of
/// `kubeconfig` and caching in `cache`, logging at warn (add args and env before spawning).
/// The binary is `CONVOY_AGENT_BINARY` when set (bench.sh: the agent as its image ships it, built
/// with the `agent` profile), else the workspace's.
pub fn agent_command(hub: &str, certs: &CertDir, cert: &Path, key: &Path, kubeconfig: &Path, cache: &Path) -> Command {
    let binary =
        std::env::var_os("CONVOY_AGENT_BINARY").map_or_else(|| workspace_binary("convoy-agent"), PathBuf::from);
    let mut command = Command::new(binary);
    command
        .args(["--hub", hub, "--ca"])
        .arg(certs.ca_cert())
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .env("RUST_LOG", "warn");
    command
}

/// A `convoy-agent` process for `cluster` with a certificate `ca` issues it, logging at info,
/// with `extra` arguments; it caches in `cache`.
pub fn spawn_agent(ca: &TestCa, hub: &str, cluster: &SimCluster, cache: &Path, extra: &[&str]) -> Process {
    let identity = Identity::Cluster(cluster.name().to_string());
    let (cert, key) = ca.certs.write_leaf(&identity, &ca.issue(identity.clone())).expect("write agent certificate");
    let mut command = agent_command(hub, &ca.certs, &cert, &key, cluster.kubeconfig_path(), cache);
    command.args(extra).env("RUST_LOG", "info");
    Process::spawn(command)
}

/// A whole agent (link and reconciler) in this process for each of `names`, reconciling its
/// simulated cluster of `kube` and dialing `hub` with a certificate `ca` issues; caches under
/// `caches`. They stop when `shutdown` is cancelled.
pub async fn run_agents(
    ca: &TestCa,
    hub: &str,
    kube: &kubesim::SimFleet,
    names: &[&str],
    caches: &Path,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<Result<(), convoy_agent::reconciler::ReconcileError>>> {
    let mut agents = Vec::new();
    for name in names {
        let cert = ca.issue(Identity::Cluster(name.to_string()));
        let link = ca.agent_config(hub, Some(&cert), name);
        let config = convoy_agent::testing::test_config(name, &caches.join(name));
        let client = kube.cluster(name).expect("a simulated cluster").client().await.expect("kube client");
        agents.push(tokio::spawn(convoy_agent::run(config, link, client, None, shutdown.clone())));
    }
    agents
}

/// A port nothing listens on right now (for servers that cannot report the one they bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("address").port()
}

/// A hub process reading a fleet repository every second, simulated clusters and an agent per
/// cluster in this process.
pub struct LocalFleet {
    pub hub: HubProcess,
    pub kube: kubesim::SimFleet,
    shutdown: CancellationToken,
    agents: Vec<tokio::task::JoinHandle<Result<(), convoy_agent::reconciler::ReconcileError>>>,
    _caches: tempfile::TempDir,
}

impl LocalFleet {
    /// Starts the hub on `repo_url` with `ca`'s certificates and the clusters `names`.
    pub async fn start(ca: &TestCa, repo_url: &str, names: &[&str]) -> LocalFleet {
        let hub =
            HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &["--repo", repo_url, "--poll-seconds", "1"]);
        let kube = kubesim::SimFleet::start(names).await.expect("simulated clusters");
        let (shutdown, caches) = (CancellationToken::new(), tempfile::tempdir().expect("agent caches"));
        let agents = run_agents(ca, &hub.address, &kube, names, caches.path(), &shutdown).await;
        LocalFleet { hub, kube, shutdown, agents, _caches: caches }
    }

    /// Stops the agents and waits for them.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for agent in self.agents {
            let _ = agent.await;
        }
    }
}

/// An agent link running in this process.
pub struct RunningAgent {
    pub handle: LinkHandle,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningAgent {
    /// Starts `config`'s hub link in a task.
    pub fn start(config: LinkConfig) -> Self {
        let (link, handle) = HubLink::new(config, None);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(link.run(shutdown.clone()));
        RunningAgent { handle, shutdown, task }
    }

    /// Stops the link and waits for it to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// A hub running in this process on loopback (gRPC and HTTP), reading `repo`.
pub struct InProcessHub {
    pub hub: Arc<convoy_hub::state::hub::Hub>,
    pub address: String,
    pub http_address: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

/// The webhook secret every [`InProcessHub`] is started with.
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";

impl InProcessHub {
    /// Starts a hub for `ca` reading `repo_url` (polling rarely: tests call
    /// [`InProcessHub::sync`]).
    pub async fn start(ca: &TestCa, repo_url: &str) -> Self {
        Self::start_on(ca, repo_url, "127.0.0.1:0").await
    }

    /// Like [`InProcessHub::start`], with gRPC on `listen` (e.g. the port of a hub that stopped).
    pub async fn start_on(ca: &TestCa, repo_url: &str, listen: &str) -> Self {
        Self::start_with(ca, repo_url, listen, DEFAULT_AGENT_CERT_LIFETIME).await
    }

    /// Like [`InProcessHub::start_on`], signing agent certificates (the hub registers agents
    /// with `ca`) that live `cert_lifetime`.
    pub async fn start_with(ca: &TestCa, repo_url: &str, listen: &str, cert_lifetime: Duration) -> Self {
        Self::start_full(ca, repo_url, listen, cert_lifetime, None).await
    }

    /// Like [`InProcessHub::start`], fetching apps' remote charts with `charts`.
    pub async fn start_with_charts(
        ca: &TestCa,
        repo_url: &str,
        charts: Arc<convoy_render::helm::fetch::ChartFetcher>,
    ) -> Self {
        Self::start_full(ca, repo_url, "127.0.0.1:0", DEFAULT_AGENT_CERT_LIFETIME, Some(charts)).await
    }

    async fn start_full(
        ca: &TestCa,
        repo_url: &str,
        listen: &str,
        cert_lifetime: Duration,
        charts: Option<Arc<convoy_render::helm::fetch::ChartFetcher>>,
    ) -> Self {
        let data = tempfile::tempdir().expect("data dir");
        let material = tls::TlsMaterial::from_files(&ca.certs.ca_cert(), &ca.certs.hub_cert(), &ca.certs.hub_key())
            .expect("hub TLS files");
        let source = convoy_hub::source::SourceConfig {
            url: repo_url.to_string(),
            mirror: data.path().join("mirror.git"),
            fleet_branch: "main".into(),
            interval: Duration::from_secs(3600),
            access: Default::default(),
            charts,
        };
        let config = convoy_hub::HubConfig {
            tls: tls::server_config(&material).expect("server TLS"),
            source: Some(source),
            replication: None,
            webhook_secret: Some(WEBHOOK_SECRET.into()),
            handshakes: Default::default(),
            sign_in: None,
            dashboard: None,
            notify: convoy_hub::notify::outbox::NotifyConfig {
                secrets_dir: data.path().join("secrets"),
                dashboard_url: String::new(),
            },
        };
        let grpc = tokio::net::TcpListener::bind(listen).await.expect("bind gRPC");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
        let address = format!("localhost:{}", grpc.local_addr().expect("addr").port());
        let http_address = http.local_addr().expect("addr").to_string();
        let authority = CertificateAuthority::load(&ca.certs).expect("the test CA");
        let registry = RegistryConfig { authority: Some(Arc::new(authority)), cert_lifetime };
        let (hub, publisher) = convoy_hub::state::hub::Hub::in_memory(registry);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (hub, shutdown) = (hub.clone(), shutdown.clone());
            async move {
                convoy_hub::run(config, grpc, Some(http), (hub, publisher), shutdown).await.expect("hub runs");
            }
        });
        let started = InProcessHub { hub, address, http_address, shutdown, task, _data: data };
        eventually("the first sync", || {
            let synced = started.hub.view().synced_at_ms > 0 || !started.hub.view().errors.is_empty();
            async move { synced.then_some(()) }
        })
        .await;
        started
    }

    /// Makes the hub fetch now and waits until it has seen `commit` on `branch`.
    pub async fn sync(&self, branch: &str, commit: &str) {
        eventually(&format!("the hub to see {branch} at {commit}"), || {
            self.hub.request_refresh();
            let seen = self.hub.view().branches.get(branch).map(String::as_str) == Some(commit);
            async move {
                if !seen {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                seen.then_some(())
            }
        })
        .await;
    }

    /// The digest of `cluster`'s current assignment ("" when none).
    pub fn digest(&self, cluster: &str) -> String {
        self.hub.assignment(cluster).map(|a| a.digest.clone()).unwrap_or_default()
    }

    /// The objects of `app` in `cluster`'s current assignment.
    pub fn objects(&self, cluster: &str, app: &str) -> Vec<serde_json::Value> {
        self.hub
            .assignment(cluster)
            .and_then(|a| a.apps.iter().find(|x| x.name == app).map(|x| x.objects.to_vec()))
            .unwrap_or_default()
    }

    /// Stops the hub and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Waits until the hub at `hub` lists `cluster` as connected (asked with a viewer certificate).
pub async fn wait_connected(ca: &TestCa, hub: &str, cluster: &str) {
    let viewer = ca.cli(hub, Role::Viewer).await;
    eventually(&format!("{cluster} connected"), || {
        let mut viewer = viewer.clone();
        async move {
            let request = convoy_shared::proto::ListClustersRequest {};
            let clusters = viewer.list_clusters(request).await.ok()?.into_inner().clusters;
            clusters.iter().any(|c| c.name == cluster && c.connected).then_some(())
        }
    })
    .await;
}

/// Scrapes `/metrics` at `address` (HOST:PORT) and parses it as OpenMetrics text: the body must
/// end with `# EOF` and every sample line must be `NAME[{LABELS}] VALUE`. Returns samples by
/// name with labels, e.g. `convoy_agent_passes_total{outcome="clean"}`.
pub async fn scrape_metrics(address: &str) -> std::collections::BTreeMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect to /metrics");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").await.expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.trim_end().ends_with("# EOF"), "not OpenMetrics text: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("malformed sample line: {l}"));
            let name_ok = name
                .split('{')
                .next()
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'));
            assert!(name_ok && (!name.contains('{') || name.ends_with('}')), "malformed sample name: {l}");
            (name.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("malformed value: {l}")))
        })
        .collect()
}

/// Posts a GitHub-style push event `body` to the hub's `/webhook` at `http_address`, signed with
/// `secret` (`X-Hub-Signature-256`), over plain HTTP/1.1 as a forge would. Returns the status
/// line when the hub accepted it (202).
pub fn post_webhook(http_address: &str, secret: &str, body: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let url = format!("http://{http_address}/webhook");
    let signature = convoy_hub::api::http::webhook::github_signature(secret.as_bytes(), body.as_bytes());
    let mut stream = std::net::TcpStream::connect(http_address).map_err(|e| format!("cannot reach {url}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let request = format!(
        "POST /webhook HTTP/1.1\r\nHost: {http_address}\r\nUser-Agent: convoy-webhook-test\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("cannot post to {url}: {e}"))?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| format!("no answer from {url}: {e}"))?;
    let status = response.lines().next().unwrap_or_default().to_string();
    if status.split_whitespace().nth(1) == Some("202") { Ok(status) } else { Err(format!("{url} answered {status}")) }
}

/// A GitHub push event body for `reference` moving to `after`. Like a forge's, every body is
/// new (`repository.pushed_at`): the hub refuses a body it accepted before as a replay.
pub fn push_event(reference: &str, after: &str) -> String {
    let pushed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let repository = serde_json::json!({"full_name": "convoy/fleet", "pushed_at": pushed_at.to_string()});
    serde_json::json!({"ref": reference, "after": after, "repository": repository}).to_string()
}

/// A `fleetsim` process running the simulated agents numbered `agents` (clusters `c-00000…`,
/// as [`crate::fleet_repo::generated_fleet`] declares them) against `hub` (one address, or
/// replicas `a,b` tried in turn), their certificates signed by the CA in `certs`. Killed when
/// dropped.
pub fn spawn_fleetsim(hub: &str, certs: &CertDir, agents: std::ops::Range<usize>) -> Process {
    let mut command = Command::new(workspace_binary("fleetsim"));
    let (first, count) = (agents.start.to_string(), agents.len().to_string());
    command.args(["--agents", &count, "--first", &first, "--hub", hub, "--certs"]).arg(&certs.0);
    // fleetsim allocates with the hub's allocator.
    hub_allocator_settings(&mut command);
    Process::spawn(command)
}

/// The hub's allocator settings, as its chart runs it (see `convoy_hub::allocator`).
fn hub_allocator_settings(command: &mut Command) {
    command.env("MIMALLOC_PURGE_DELAY", "0").env("MIMALLOC_ALLOW_THP", "0");
}

/// Every cluster the hub at `hub` knows, asked with `viewer`; `None` while the hub does not answer.
/// Lists of many thousand clusters run to several MiB, past tonic's default 4 MiB.
pub async fn list_clusters(viewer: &FleetServiceClient<Channel>) -> Option<Vec<convoy_shared::proto::ClusterInfo>> {
    let mut viewer = viewer.clone().max_decoding_message_size(256 << 20);
    let request = convoy_shared::proto::ListClustersRequest {};
    Some(viewer.list_clusters(request).await.ok()?.into_inner().clusters)
}

/// `name`'s entry in `convoy clusters` as a viewer of the hub at `hub` sees it.
pub async fn cluster_info(ca: &TestCa, hub: &str, name: &str) -> Option<convoy_shared::proto::ClusterInfo> {
    let viewer = ca.cli(hub, convoy_shared::identity::Role::Viewer).await;
    list_clusters(&viewer).await?.into_iter().find(|c| c.name == name)
}

/// `cluster`'s newest `limit` history entries (event, revision), newest first, as the hub at
/// `hub` reads them from its store.
pub async fn history_events(ca: &TestCa, hub: &str, cluster: &str, limit: u32) -> Vec<(String, String)> {
    let mut viewer = ca.cli(hub, convoy_shared::identity::Role::Viewer).await;
    let request = convoy_shared::proto::HistoryRequest { cluster: cluster.into(), limit };
    let entries = viewer.history(request).await.expect("history").into_inner().entries;
    entries.into_iter().map(|e| (e.event, e.revision)).collect()
}

/// The error an agent link shows once the hub refuses its reconnects as revoked (`what` names
/// the wait in a timeout message).
pub async fn refused_as_revoked(
    state: &tokio::sync::watch::Receiver<convoy_agent::link::LinkState>,
    what: &str,
) -> String {
    eventually(what, || {
        let s = state.borrow().clone();
        async move {
            match s {
                convoy_agent::link::LinkState::Disconnected { error, .. } if error.contains("revoked") => Some(error),
                _ => None,
            }
        }
    })
    .await
}

/// Clusters connected now, and clusters connected and running their current assignment.
pub fn connected_and_in_sync(clusters: &[convoy_shared::proto::ClusterInfo]) -> (usize, usize) {
    let connected = clusters.iter().filter(|c| c.connected).count();
    let in_sync = clusters.iter().filter(|c| c.connected && c.in_sync && !c.assigned_digest.is_empty()).count();
    (connected, in_sync)
}
