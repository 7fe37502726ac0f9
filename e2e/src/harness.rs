//! The fleet harness: a throwaway certificate authority, the real `convoy-hub` binary started as
//! a process, and in-process agents and CLI clients dialing it over real sockets.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy_agent::link::{Backoff, HubLink, LinkConfig, LinkHandle};
use convoy_shared::identity::{Identity, Role};
use convoy_shared::pki::{self, CertDir, CertificateAuthority, IssuedCert, LeafRequest};
use convoy_shared::proto::fleet_service_client::FleetServiceClient;
use convoy_shared::tls::{self, HubAddress};
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
        let ca =
            pki::init_ca(&certs, &["localhost".into(), "127.0.0.1".into()], 30).expect("init CA");
        TestCa { dir, certs, ca }
    }

    /// A certificate for `identity`, valid for a day.
    pub fn issue(&self, identity: Identity) -> IssuedCert {
        self.ca
            .issue(&LeafRequest::new(identity, 1))
            .expect("issue")
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
        tls::client_config(
            self.ca.cert_pem(),
            cert.map(|c| (c.cert_pem.as_str(), c.key_pem.as_str())),
        )
        .expect("client TLS")
    }

    /// An agent link configuration for `hub` presenting `cert`, with fast reconnects.
    pub fn agent_config(
        &self,
        hub: &str,
        cert: Option<&IssuedCert>,
        claimed_name: &str,
    ) -> LinkConfig {
        LinkConfig {
            hub: HubAddress::parse(hub, None).expect("hub address"),
            tls: self.client_tls(cert),
            cluster_name: claimed_name.to_string(),
            heartbeat: Duration::from_secs(5),
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(1000),
            },
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// A fleet API client with a fresh CLI certificate of `role`.
    pub async fn cli(&self, hub: &str, role: Role) -> FleetServiceClient<Channel> {
        let cert = self.issue(Identity::User {
            name: format!("test-{}", role.as_str()),
            role,
        });
        self.fleet_client(hub, &cert).await.expect("CLI connects")
    }

    /// A fleet API client presenting `cert`.
    pub async fn fleet_client(
        &self,
        hub: &str,
        cert: &IssuedCert,
    ) -> Result<FleetServiceClient<Channel>, tls::TlsError> {
        let address = HubAddress::parse(hub, None)?;
        Ok(FleetServiceClient::new(
            tls::connect(
                &address,
                self.client_tls(Some(cert)),
                Duration::from_secs(5),
            )
            .await?,
        ))
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
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn process");
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
                Err(_) => panic!(
                    "no log line with '{needle}'; log so far: {:?}",
                    self.log.lock().expect("log lock")
                ),
            }
        }
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
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

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `convoy-hub serve` process. Killed when dropped.
pub struct HubProcess {
    pub process: Process,
    pub address: String,
}

impl HubProcess {
    /// Starts the hub on `listen` (use `127.0.0.1:0` for any port) with `certs`, logging at info,
    /// and waits until it logs its address.
    pub fn start(certs: &Path, listen: &str) -> Self {
        Self::start_logging(certs, listen, "info")
    }

    /// Like [`HubProcess::start`] with the log filter `filter` (e.g. `trace`).
    pub fn start_logging(certs: &Path, listen: &str, filter: &str) -> Self {
        let mut command = Command::new(workspace_binary("convoy-hub"));
        command
            .args(["serve", "--listen", listen, "--certs"])
            .arg(certs)
            .env("RUST_LOG", filter);
        let process = Process::spawn(command);
        let line = process.wait_for_line("hub listening");
        let address = line
            .split("address=")
            .nth(1)
            .expect("address in log line")
            .trim()
            .to_string();
        HubProcess { process, address }
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.process.log_lines(needle)
    }

    /// Kills the hub with SIGKILL, as a crash would.
    pub fn kill(self) {
        drop(self);
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
        RunningAgent {
            handle,
            shutdown,
            task,
        }
    }

    /// Stops the link and waits for it to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// How long [`eventually`] waits before declaring a hang. A guard against tests that never end,
/// not a performance expectation: it is far above anything a healthy run needs.
const HANG_GUARD: Duration = Duration::from_secs(90);

/// Polls `check` every 50 ms until it returns `Some`; panics naming `what` if it never does.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
