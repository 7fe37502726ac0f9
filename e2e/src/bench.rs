//! What the `bench_*` programs share: latency summaries, the kubectl peer, and waiting on a
//! simulated fleet.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use convoy_shared::proto::fleet_service_client::FleetServiceClient;
use convoy_shared::proto::{ClusterInfo, HistoryRequest, WatchRequest};
use futures::StreamExt as _;
use kubesim::poll::within;
use tonic::transport::Channel;

use convoy_shared::clock::unix_ms;

use crate::fleet_repo::{FleetRepo, change_generated_base};
use crate::harness::{list_clusters, post_webhook, push_event};

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p` quantile (0.0–1.0) of samples sorted ascending: the nearest-rank sample.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Median and p99 of `samples` (sorted in place).
pub fn median_p99(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    (percentile(samples, 0.5), percentile(samples, 0.99))
}

/// `kubectl apply --server-side -f FILE` as field manager `kubectl-peer`, the peer a benchmark
/// measures Convoy against. Panics when kubectl fails.
pub fn kubectl_apply(kubeconfig: &Path, file: &Path) {
    let out = Command::new(kubesim::kubectl::kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "--server-side", "--field-manager=kubectl-peer", "-f"])
        .arg(file)
        .env("KUBECACHEDIR", kubeconfig.with_extension("cache"))
        .output()
        .expect("kubectl runs");
    assert!(out.status.success(), "kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A field of `/proc/PID/status` in KiB (0 when the process or the field is gone).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of process `pid` now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Resident memory of process `pid` that is its own (heap, stacks) and that maps files (its
/// binary's and libraries' pages), in KiB.
pub fn rss_anon_file_kib(pid: u32) -> (u64, u64) {
    (status_kib(pid, "RssAnon:"), status_kib(pid, "RssFile:"))
}

/// The most resident memory process `pid` has had, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// CPU time (user and system, all threads) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, so split after its ')'): utime and
    // stime are the 14th and 15th fields, in USER_HZ ticks (100 a second on Linux).
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The hub's log filter in fleet benchmarks: per-stream lines at info would make the hub log
/// 10,000s of lines per phase.
pub const FLEET_HUB_LOG: &str =
    "warn,convoy_hub=info,convoy_hub::api::agent_service=warn,convoy_hub::state::connections=warn";

/// `--agents N` from the command line of `program` (default 10,000).
pub fn agents_arg(program: &str) -> anyhow::Result<usize> {
    let mut args = std::env::args().skip(1);
    let mut agents = 10_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--agents" => agents = args.next().ok_or_else(|| anyhow::anyhow!("--agents needs a number"))?.parse()?,
            other => anyhow::bail!("unknown argument {other}; usage: {program} [--agents N]"),
        }
    }
    Ok(agents)
}

/// `hub`'s last "planned" line (its last sync: fetch, read, plan, publish).
pub fn last_sync(hub: &crate::harness::HubProcess) -> LastSync {
    LastSync(hub.log_lines("planned").pop().unwrap_or_default())
}

/// A hub's "planned" log line.
pub struct LastSync(String);

impl LastSync {
    /// The value of field `name` ("?" where the line has none).
    pub fn field(&self, name: &str) -> String {
        let value = self.0.split(&format!(" {name}=")).nth(1).and_then(|v| v.split_whitespace().next());
        value.unwrap_or("?").to_string()
    }

    /// "N ms (fetch N, read N, plan N, publish N)": the whole sync and its steps.
    pub fn steps(&self) -> String {
        let [ms, fetch, read, render, publish] =
            ["ms", "fetch_ms", "read_ms", "render_ms", "publish_ms"].map(|f| self.field(f));
        format!("{ms} ms (fetch {fetch}, read {read}, plan {render}, publish {publish})")
    }
}

/// The longest any phase of a fleet benchmark may take before it gives up.
pub const PHASE_LIMIT: Duration = Duration::from_secs(900);

/// Waits until the hub's cluster list satisfies `done`, asking about four times a second (a list
/// of 10,000 clusters is work for the hub too).
pub async fn until(viewer: &FleetServiceClient<Channel>, what: &str, done: impl Fn(&[ClusterInfo]) -> bool) {
    let done = &done;
    within(what, PHASE_LIMIT, move || async move {
        let clusters = list_clusters(viewer).await;
        let finished = clusters.is_some_and(|c| done(&c));
        if !finished {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        finished.then_some(())
    })
    .await
}

/// Commits a one-app change (`value` in app-0's base) to `repo`, calls the webhook of the hub at
/// `http_address`, waits until all `agents` applied it and returns every cluster's latency,
/// sorted: commit to the hub's "applied" event, as the replica the agent streams to stamped it
/// when the report arrived.
///
/// It follows the event stream (`convoy watch`) of every replica in `viewers` rather than
/// listing the fleet: a list of 10,000 clusters four times a second took an eighth of the hub's
/// time while the change went out. Should a stream fall behind the hub's backlog, the list and
/// the clusters' history answer instead.
pub async fn one_app_change(
    repo: &FleetRepo,
    (http_address, secret): (&str, &str),
    viewers: &[FleetServiceClient<Channel>],
    agents: usize,
    value: &str,
) -> anyhow::Result<Vec<Duration>> {
    let mut streams = Vec::new();
    for viewer in viewers {
        streams.push(viewer.clone().watch(WatchRequest {}).await?.into_inner());
    }
    let mut events = futures::stream::select_all(streams);
    let commits = change_generated_base(repo, 0, value);
    let committed_ms = unix_ms();
    post_webhook(http_address, secret, &push_event("refs/heads/main", &commits[2])).map_err(anyhow::Error::msg)?;
    let of_change = |detail: &str| commits.iter().any(|c| detail.starts_with(&format!("revision {c} ")));
    let mut applied_at: HashMap<String, i64> = HashMap::new();
    let followed = tokio::time::timeout(PHASE_LIMIT, async {
        while applied_at.len() < agents {
            let Some(event) = events.next().await.transpose()? else {
                anyhow::bail!("a hub ended its event stream");
            };
            match event.kind.as_str() {
                "applied" if of_change(&event.detail) => {
                    applied_at.entry(event.cluster).or_insert(event.at_unix_ms);
                }
                "lagged" => return Ok(false),
                _ => {}
            }
        }
        Ok(true)
    })
    .await
    .map_err(|_| anyhow::anyhow!("not every agent applied the change within {PHASE_LIMIT:?}"))??;
    let mut latencies: Vec<Duration> = if followed {
        applied_at.into_values().map(|at| since(committed_ms, at)).collect()
    } else {
        println!("    (the event stream fell behind the hub; latencies from the clusters' history)");
        let fresh = |c: &ClusterInfo| commits.contains(&c.applied_revision) && c.in_sync;
        until(&viewers[0], "every agent to apply the change", |c| c.iter().filter(|c| fresh(c)).count() >= agents)
            .await;
        applied_latencies(&viewers[0], committed_ms, &commits).await
    };
    latencies.sort();
    Ok(latencies)
}

fn since(committed_ms: i64, at_unix_ms: i64) -> Duration {
    Duration::from_millis(at_unix_ms.saturating_sub(committed_ms).max(0) as u64)
}

/// For every cluster, the time from `committed_ms` to the hub's "applied" history entry for one
/// of `commits`, as the hub stamped it when the report arrived. The hub's store writer takes
/// entries in batches, so an entry the cluster list already shows may take a moment to read.
async fn applied_latencies(
    viewer: &FleetServiceClient<Channel>,
    committed_ms: i64,
    commits: &[String],
) -> Vec<Duration> {
    let clusters = list_clusters(viewer).await.expect("the cluster list");
    futures::stream::iter(clusters)
        .map(|cluster| {
            let viewer = viewer.clone();
            let what = format!("the 'applied' history entry of {} for the change", cluster.name);
            async move {
                within(&what, Duration::from_secs(60), move || {
                    let mut viewer = viewer.clone();
                    let request = HistoryRequest { cluster: cluster.name.clone(), limit: 8 };
                    async move {
                        let entries = viewer.history(request).await.expect("history").into_inner().entries;
                        let applied = entries.iter().find(|e| e.event == "applied" && commits.contains(&e.revision));
                        if applied.is_none() {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        applied.map(|e| since(committed_ms, e.at_unix_ms))
                    }
                })
                .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}
