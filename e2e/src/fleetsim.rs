//! The fleet simulator: many lightweight agents in one process. Each is the real agent's hub
//! link ([`HubLink`]: Hello with the digest it holds, heartbeats, reconnects with the agent's
//! own jittered backoff) over its own mutual-TLS stream with its own client certificate, and
//! answers every assignment it takes with an applied report. No Kubernetes is behind it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use convoy_agent::link::{HubLink, LinkConfig, LinkHandle, LinkState};
use convoy_shared::backoff::Backoff;
use convoy_shared::clock::unix_ms;
use convoy_shared::identity::Identity;
use convoy_shared::model::report::{AppStatus, Health, ObjectStatus, Report};
use convoy_shared::model::{Assignment, ObjectRef};
use convoy_shared::pki::{self, CertDir, CertificateAuthority, IssuedCert, LeafRequest};
use convoy_shared::tls::{self, HubAddress};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// File descriptors the simulator keeps for itself besides one socket per agent (runtime,
/// stdio, the certificate directory, a reconnect overlapping a closing socket).
const SPARE_FDS: u64 = 256;

/// Why the simulator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot read the CA in {dir}: {source}; point --certs at the hub's certificate directory")]
    Ca {
        dir: String,
        #[source]
        source: pki::PkiError,
    },
    #[error("cannot issue the certificate of simulated cluster '{cluster}': {source}")]
    Issue {
        cluster: String,
        #[source]
        source: pki::PkiError,
    },
    #[error("cannot make the simulated agents' key pair: {0}")]
    Key(#[source] rcgen::Error),
    #[error("bad hub address or TLS material: {0}")]
    Tls(#[from] tls::TlsError),
    #[error(
        "{agents} agents need {needed} open files but the hard limit (RLIMIT_NOFILE) is {hard}: \
         raise it (`ulimit -Hn {needed}` as root, or LimitNOFILE= in a unit) or run fewer agents"
    )]
    FdLimit { agents: usize, needed: u64, hard: u64 },
    #[error("cannot raise the open-file limit: {0}")]
    Rlimit(#[source] std::io::Error),
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub agents: usize,
    pub hub: HubAddress,
    /// The hub's certificate directory: the CA certificate and key sign each agent's certificate.
    pub certs: CertDir,
    /// Agent `i` is cluster `{prefix}{first + i:05}` (the names `fleet_repo::generated_fleet`
    /// declares); several simulators split one fleet by `first`.
    pub prefix: String,
    pub first: usize,
    pub heartbeat: Duration,
    /// The longest wait between reconnects (the real agent's `--backoff-max-seconds`).
    pub backoff_max: Duration,
}

/// The name of simulated cluster `i`.
pub fn cluster_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:05}")
}

/// Raises the soft open-file limit to what `agents` sockets need; returns the limit now in force.
pub fn raise_fd_limit(agents: usize) -> Result<u64, SimError> {
    let needed = agents as u64 + SPARE_FDS;
    let (_, hard) = rlimit::Resource::NOFILE.get().map_err(SimError::Rlimit)?;
    if hard < needed {
        return Err(SimError::FdLimit { agents, needed, hard });
    }
    rlimit::increase_nofile_limit(needed).map_err(SimError::Rlimit)
}

/// Client certificates for `names`, all over one key pair: the CA signs one CSR per name, so
/// issuing costs one signature each and no key generation.
pub fn issue_certs(ca: &CertificateAuthority, names: &[String]) -> Result<Vec<IssuedCert>, SimError> {
    let key = rcgen::KeyPair::generate().map_err(SimError::Key)?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key).map_err(SimError::Key)?;
    let csr_pem = csr.pem().map_err(SimError::Key)?;
    let key_pem = key.serialize_pem();
    names
        .iter()
        .map(|name| {
            let request = LeafRequest::new(Identity::Cluster(name.clone()), 7);
            let cert_pem =
                ca.sign_csr(&csr_pem, &request).map_err(|source| SimError::Issue { cluster: name.clone(), source })?;
            Ok(IssuedCert { cert_pem, key_pem: key_pem.clone() })
        })
        .collect()
}

/// Counters the simulated agents share.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Assignments taken and answered with an applied report.
    pub applied: AtomicU64,
}

/// The running agents: their link states, for counting.
pub struct SimFleet {
    states: Vec<tokio::sync::watch::Receiver<LinkState>>,
    pub stats: Arc<SimStats>,
    tasks: JoinSet<()>,
    /// How long issuing every certificate took.
    pub issued_in: Duration,
}

impl SimFleet {
    /// Issues a certificate per agent and starts every agent dialing the hub; they run until
    /// `shutdown`.
    pub fn start(config: &SimConfig, shutdown: &CancellationToken) -> Result<SimFleet, SimError> {
        let ca_err = |source| SimError::Ca { dir: config.certs.0.display().to_string(), source };
        let ca = CertificateAuthority::load(&config.certs).map_err(ca_err)?;
        let names: Vec<String> =
            (config.first..config.first + config.agents).map(|i| cluster_name(&config.prefix, i)).collect();
        let started = Instant::now();
        let certs = issue_certs(&ca, &names)?;
        let issued_in = started.elapsed();
        let stats = Arc::new(SimStats::default());
        let mut tasks = JoinSet::new();
        let mut states = Vec::with_capacity(names.len());
        for (name, cert) in names.into_iter().zip(certs) {
            let link = LinkConfig {
                // Each agent its own preferred replica, starting at a random one, as separate
                // agent processes do.
                hub: config.hub.detached().spread(),
                tls: tls::client_config(ca.cert_pem(), Some((&cert.cert_pem, &cert.key_pem)))?,
                cluster_name: name,
                heartbeat: config.heartbeat,
                backoff: Backoff { max: config.backoff_max, ..Backoff::default() },
                connect_timeout: Duration::from_secs(10),
                capabilities: Default::default(),
            };
            let (link, handle) = HubLink::new(link, None);
            states.push(handle.state.clone());
            tasks.spawn(link.run(shutdown.clone()));
            let stats = stats.clone();
            tasks.spawn(apply_every_assignment(handle, move || {
                stats.applied.fetch_add(1, Ordering::Relaxed);
            }));
        }
        Ok(SimFleet { states, stats, tasks, issued_in })
    }

    /// Agents whose link is connected now.
    pub fn connected(&self) -> usize {
        self.states.iter().filter(|s| *s.borrow() == LinkState::Connected).count()
    }

    /// Waits for every agent to stop (after `shutdown`).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// A simulated agent's "cluster": every assignment its link takes is applied at once and
/// reported so (`on_applied` is told). Ends when the link stops (it drops the assignment's sender).
pub async fn apply_every_assignment(mut handle: LinkHandle, on_applied: impl Fn()) {
    // The statuses of the last assignment's apps, by digest: an app that did not change reports
    // as before. The simulator shares the machine with the hub it measures (a real agent's
    // cycles are its cluster's own), so it spends as few as it can.
    let mut known = HashMap::new();
    while handle.assignment.changed().await.is_ok() {
        let assignment = handle.assignment.borrow_and_update().clone();
        if let Some(assignment) = assignment {
            handle.reports.push(applied_report(&assignment, &mut known));
            on_applied();
        }
    }
}

/// The report a healthy agent sends once it applied `assignment`: every object healthy. `known`
/// holds the statuses of apps reported before, by digest, and then those of this report.
fn applied_report(assignment: &Assignment, known: &mut HashMap<String, AppStatus>) -> Report {
    let mut now = HashMap::with_capacity(assignment.apps.len());
    let apps = assignment
        .digested_apps()
        .map(|(digest, app)| {
            let status = known.remove(digest).unwrap_or_else(|| AppStatus {
                name: app.name.clone(),
                health: Health::Healthy,
                message: String::new(),
                objects: app
                    .objects
                    .iter()
                    .map(|object| ObjectStatus {
                        object: ObjectRef::of(object),
                        health: Health::Healthy,
                        message: String::new(),
                        apply_error: None,
                        rule: String::new(),
                    })
                    .collect(),
            });
            now.insert(digest.to_string(), status.clone());
            status
        })
        .collect();
    *known = now;
    Report {
        revision: assignment.revision.clone(),
        digest: assignment.digest.clone(),
        at_unix_ms: unix_ms(),
        apps,
        drifts: Vec::new(),
        summarized_reports: 0,
        applied: true,
        measurements: Vec::new(),
    }
}
