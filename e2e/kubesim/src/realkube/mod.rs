//! A real control plane for tests (issue 29): etcd, kube-apiserver and kube-controller-manager
//! built from their Go modules by `e2e/realkube/build.sh`, started on loopback ports with
//! certificates made here, plus a stand-in kubelet ([`kubelet`]) so workloads become ready.
//! [`RealCluster`] offers what [`crate::SimCluster`] does — a kubeconfig file for kubectl and a
//! `kube::Client` — so a scenario runs unchanged against either.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kubesim::realkube::Error> {
//! use kubesim::realkube::RealCluster;
//! let Some(cluster) = RealCluster::start_if_built("c1").await? else { return Ok(()) };
//! let _client = cluster.client().await?;
//! let _path = cluster.kubeconfig_path(); // for `kubectl --kubeconfig`
//! # Ok(()) }
//! ```

pub mod binaries;
pub mod kubelet;
pub mod pki;

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use binaries::Binaries;

/// Errors from starting a real control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Certificate generation failed.
    #[error("generating certificates for real cluster {cluster}: {source}")]
    Pki {
        /// Cluster name.
        cluster: String,
        /// Cause.
        #[source]
        source: rcgen::Error,
    },
    /// A file or port of the control plane.
    #[error("{what} for real cluster {cluster}: {source}")]
    Io {
        /// Cluster name.
        cluster: String,
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A program exited or never became ready; the end of its log says why.
    #[error("{program} of real cluster {cluster} {problem}; the end of {log}:\n{tail}")]
    NotReady {
        /// Cluster name.
        cluster: String,
        /// `etcd`, `kube-apiserver` or `kube-controller-manager`.
        program: String,
        /// What went wrong.
        problem: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// Building a kube client from the kubeconfig, or registering the node.
    #[error("kube client for real cluster {cluster}: {message}")]
    Client {
        /// Cluster name.
        cluster: String,
        /// Cause.
        message: String,
    },
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long one program may take to become ready on a loaded two-core machine before the start
/// fails with its log instead of hanging.
const READY_GUARD: Duration = Duration::from_secs(180);

/// The stand-in kubelet's node.
pub const NODE: &str = "realkube-node-0";

/// One running program of the control plane, killed when dropped.
struct Program {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// How it was started, to start it again.
    binary: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
}

impl Program {
    /// Starts `binary` with its output in `dir/NAME.log`. `setpriv --pdeathsig KILL` ends it with
    /// the test process even when that process is killed and never runs its destructors.
    fn spawn(name: &'static str, binary: &Path, args: &[String], dir: &Path, cluster: &str) -> Result<Program> {
        let io = |what: String| move |source| Error::Io { cluster: cluster.to_string(), what, source };
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io(format!("opening {}", log.display())))?;
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(binary)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {} under setpriv", binary.display())))?;
        Ok(Program { name, child, log, binary: binary.into(), args: args.to_vec(), dir: dir.into() })
    }

    /// Kills it and waits for it to go.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again as it was started first (after [`Program::stop`]).
    fn respawn(&mut self, cluster: &str) -> Result<()> {
        *self = Program::spawn(self.name, &self.binary, &self.args, &self.dir, cluster)?;
        Ok(())
    }

    fn not_ready(&self, cluster: &str, problem: String) -> Error {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        Error::NotReady { cluster: cluster.into(), program: self.name.into(), problem, log: self.log.clone(), tail }
    }

    /// An error if the program has exited.
    fn check_running(&mut self, cluster: &str) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(self.not_ready(cluster, format!("exited ({status})"))),
            _ => Ok(()),
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running real control plane on loopback; everything stops and its files go when dropped.
pub struct RealCluster {
    name: String,
    url: String,
    kubeconfig: String,
    kubeconfig_path: PathBuf,
    /// Stops the stand-in kubelet; cancelled on drop.
    cancel: CancellationToken,
    /// Dropped in reverse start order: controller-manager, apiserver, etcd.
    programs: Vec<Program>,
    /// The data directory, certificates and logs; removed after the programs stop.
    dir: tempfile::TempDir,
}

/// How many times [`RealCluster::start`] picks ports afresh when one was taken meanwhile.
const PORT_ATTEMPTS: u32 = 3;

impl Error {
    /// A program could not bind its port: another took it between our picking and its binding.
    fn is_port_taken(&self) -> bool {
        matches!(self, Error::NotReady { tail, .. } if tail.contains("address already in use"))
    }
}

fn free_port(cluster: &str) -> Result<u16> {
    let io = |source| Error::Io { cluster: cluster.into(), what: "finding a free loopback port".into(), source };
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(io)
}

/// A kubeconfig with one cluster, user and context named after the cluster, the user being the
/// admin client certificate.
fn kubeconfig(cluster: &str, server: &str, pki: &pki::ControlPlanePki) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: {cluster}-admin\n  user:\n    \
         client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {cluster}\n  context:\n    \
         cluster: {cluster}\n    user: {cluster}-admin\n    namespace: default\ncurrent-context: {cluster}\n\
         preferences: {{}}\n",
        ca = b64(&pki.ca_cert),
        cert = b64(&pki.admin_cert),
        key = b64(&pki.admin_key),
    )
}

/// Polls `/readyz` of the kube-apiserver `program` until it answers ok.
async fn wait_ready(program: &mut Program, client: &kube::Client, cluster: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + READY_GUARD;
    loop {
        let req = http::Request::get("/readyz").body(Vec::new()).expect("a static request");
        if client.request_text(req).await.is_ok_and(|t| t.trim() == "ok") {
            return Ok(());
        }
        program.check_running(cluster)?;
        if tokio::time::Instant::now() > deadline {
            return Err(program.not_ready(cluster, format!("not ready after {READY_GUARD:?}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl RealCluster {
    /// Starts a control plane named `name` when the programs are built, or returns `None` after
    /// printing why it is skipped ([`binaries::find`]); with `CONVOY_REALKUBE` set a missing
    /// build panics instead.
    pub async fn start_if_built(name: &str) -> Result<Option<RealCluster>> {
        match binaries::find() {
            Some(bins) => Self::start(name, &bins).await.map(Some),
            None => Ok(None),
        }
    }

    /// Starts etcd, kube-apiserver, kube-controller-manager and the stand-in kubelet, and
    /// returns once the API server is ready and the controllers serve. The ports are free when
    /// picked, but another program (a test beside this one) can take one before ours binds it:
    /// then it starts again on other ports, up to [`PORT_ATTEMPTS`] times.
    pub async fn start(name: &str, bins: &Binaries) -> Result<RealCluster> {
        let mut attempt = 1;
        loop {
            match Self::start_on_free_ports(name, bins).await {
                Err(e) if attempt < PORT_ATTEMPTS && e.is_port_taken() => attempt += 1,
                started => return started,
            }
        }
    }

    async fn start_on_free_ports(name: &str, bins: &Binaries) -> Result<RealCluster> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| Error::Io { cluster: name.into(), what, source }
        };
        let dir = tempfile::Builder::new().prefix(&format!("realkube-{name}-")).tempdir().map_err(io("a temp dir"))?;
        let root = dir.path().to_path_buf();
        let pki = pki::control_plane_pki(name).map_err(|source| Error::Pki { cluster: name.into(), source })?;
        for (file, text) in [
            ("ca.crt", &pki.ca_cert),
            ("ca.key", &pki.ca_key),
            ("apiserver.crt", &pki.serving_cert),
            ("apiserver.key", &pki.serving_key),
            ("sa.key", &pki.sa_key),
            ("sa.pub", &pki.sa_public),
        ] {
            std::fs::write(root.join(file), text).map_err(io(&format!("writing {file}")))?;
        }
        let p = |file: &str| root.join(file).display().to_string();
        let (etcd_port, peer_port, api_port) = (free_port(name)?, free_port(name)?, free_port(name)?);
        let mut programs = Vec::new();

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args: Vec<String> = vec![
            "--name=realkube".into(),
            format!("--data-dir={}", p("etcd")),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=realkube={peer_url}"),
            // A test cluster's data need not survive a power cut; fsync would dominate its time.
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        programs.push(Program::spawn("etcd", &bins.etcd, &etcd_args, &root, name)?);
        wait_for_port(&mut programs[0], name, etcd_port).await?;

        let apiserver_args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            // Only a range to allocate ClusterIPs from: nothing routes to it.
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            // The `kubernetes` Service's endpoints may not be loopback; no pod dials it here.
            "--endpoint-reconciler-type=none".into(),
            "--authorization-mode=RBAC".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ];
        programs.push(Program::spawn("kube-apiserver", &bins.apiserver, &apiserver_args, &root, name)?);

        let url = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = kubeconfig(name, &url, &pki);
        let kubeconfig_path = root.join(format!("{name}.kubeconfig"));
        std::fs::write(&kubeconfig_path, &kubeconfig).map_err(io("writing the kubeconfig"))?;
        let mut cluster = RealCluster {
            name: name.into(),
            url,
            kubeconfig,
            kubeconfig_path,
            cancel: CancellationToken::new(),
            programs,
            dir,
        };
        let client = cluster.client().await?;
        cluster.wait_ready(&client).await?;

        let kcm_args: Vec<String> = vec![
            format!("--kubeconfig={}", cluster.kubeconfig_path.display()),
            "--leader-elect=false".into(),
            // No kubelet posts heartbeats: the node lifecycle controller would taint the stand-in
            // node unreachable and evict its pods.
            "--controllers=*,-node-lifecycle-controller".into(),
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--root-ca-file={}", p("ca.crt")),
            format!("--cluster-signing-cert-file={}", p("ca.crt")),
            format!("--cluster-signing-key-file={}", p("ca.key")),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port(name)?),
            // The stand-in provisioner's volumes are bound at once, not at the next 15 s sweep.
            "--pvclaimbinder-sync-period=1s".into(),
        ];
        cluster.programs.push(Program::spawn(
            "kube-controller-manager",
            &bins.controller_manager,
            &kcm_args,
            cluster.dir.path(),
            name,
        )?);
        kubelet::register_node(&client, NODE)
            .await
            .map_err(|e| Error::Client { cluster: name.into(), message: format!("registering node {NODE}: {e}") })?;
        let span = tracing::info_span!("realkube-kubelet", cluster = %name);
        tokio::spawn(kubelet::run(client.clone(), NODE.into(), cluster.cancel.clone()).instrument(span));
        cluster.wait_controllers(&client).await?;
        Ok(cluster)
    }

    /// Takes kube-apiserver away for `down` (connections refused; etcd and the controllers stay),
    /// then starts it again on the same port and returns once it is ready: an API server restart
    /// as clients see one.
    pub async fn restart_apiserver(&mut self, down: Duration) -> Result<()> {
        self.programs[1].stop();
        tokio::time::sleep(down).await;
        self.programs[1].respawn(&self.name)?;
        let client = self.client().await?;
        self.wait_ready(&client).await
    }

    /// Takes kube-apiserver away and, while it is away, runs `edits` with a client of a second
    /// kube-apiserver on the same etcd (another port): changes that the first one's clients miss.
    /// When the first starts again its watch cache begins after them, so a client resuming a
    /// watch from before is told 410 Gone (an expired resourceVersion) and must list again.
    pub async fn edit_while_away<F, Fut>(&mut self, edits: F) -> Result<()>
    where
        F: FnOnce(kube::Client) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        self.programs[1].stop();
        let port = free_port(&self.name)?;
        let args: Vec<String> = self.programs[1]
            .args
            .iter()
            .map(|a| if a.starts_with("--secure-port=") { format!("--secure-port={port}") } else { a.clone() })
            .collect();
        let mut side =
            Program::spawn("kube-apiserver-side", &self.programs[1].binary, &args, self.dir.path(), &self.name)?;
        let mut config = self.config().await?;
        config.cluster_url = format!("https://127.0.0.1:{port}").parse().expect("a loopback URL");
        let client = kube::Client::try_from(config)
            .map_err(|e| Error::Client { cluster: self.name.clone(), message: e.to_string() })?;
        wait_ready(&mut side, &client, &self.name).await?;
        edits(client).await;
        side.stop();
        self.programs[1].respawn(&self.name)?;
        let client = self.client().await?;
        self.wait_ready(&client).await
    }

    /// Polls `/readyz` until the API server answers ok.
    async fn wait_ready(&mut self, client: &kube::Client) -> Result<()> {
        wait_ready(&mut self.programs[1], client, &self.name).await
    }

    /// Waits until the controller-manager runs its controllers: the `default` ServiceAccount of
    /// the `default` namespace exists (pods need one).
    async fn wait_controllers(&mut self, client: &kube::Client) -> Result<()> {
        let sa: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(client.clone(), "default");
        let deadline = tokio::time::Instant::now() + READY_GUARD;
        loop {
            if matches!(sa.get_opt("default").await, Ok(Some(_))) {
                return Ok(());
            }
            self.programs[2].check_running(&self.name)?;
            if tokio::time::Instant::now() > deadline {
                let problem = format!("made no default ServiceAccount in {READY_GUARD:?}");
                return Err(self.programs[2].not_ready(&self.name, problem));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The cluster name (also its kubeconfig context name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The kubeconfig text (CA, client certificate and key embedded).
    pub fn kubeconfig(&self) -> &str {
        &self.kubeconfig
    }

    /// Where the kubeconfig was written.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The `kube::Config` read from the kubeconfig.
    pub async fn config(&self) -> Result<kube::Config> {
        let err = |e: &dyn std::fmt::Display| Error::Client { cluster: self.name.clone(), message: e.to_string() };
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig).map_err(|e| err(&e))?;
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| err(&e))
    }

    /// A `kube::Client` built from the kubeconfig, like any real one.
    pub async fn client(&self) -> Result<kube::Client> {
        let cfg = self.config().await?;
        kube::Client::try_from(cfg).map_err(|e| Error::Client { cluster: self.name.clone(), message: e.to_string() })
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        self.cancel.cancel();
        while self.programs.pop().is_some() {}
    }
}

/// Waits until `port` on loopback accepts connections (etcd is up).
async fn wait_for_port(program: &mut Program, cluster: &str, port: u16) -> Result<()> {
    let deadline = tokio::time::Instant::now() + READY_GUARD;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        program.check_running(cluster)?;
        if tokio::time::Instant::now() > deadline {
            return Err(program.not_ready(cluster, format!("did not listen on {addr} in {READY_GUARD:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
