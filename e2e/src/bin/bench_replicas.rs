//! Benchmark of hub replicas on PostgreSQL (a server of its own, as the tests start it).
//!
//! Failover: two `convoy-hub` replicas; a commit lands and the leader is killed with SIGKILL
//! (or paused with SIGSTOP, which only the lease ends); the clock stops when the other replica,
//! now leading, has published the commit's assignment. Goal: within 10 s. A fresh follower is
//! started for each sample.
//!
//! Reports: what the store's writer sustains, reports per second written and committed, through
//! the same batching writer the hub uses, on PostgreSQL and on the embedded redb (the peer, in
//! the same run).
//!
//! Scale (issue 34's 100,000-cluster plan): one commit's store writes on PostgreSQL — an
//! "assigned" history entry for each of 100,000 clusters through the writer, and the leader's
//! fenced publish of every cluster's assignment: all 100,000 in one transaction, as the leader
//! publishes a commit now, against one transaction per cluster, as it did before (10,000 of
//! those measured, scaled to 100,000).
//!
//! Run: `cargo build --release -p convoy-e2e --bins && target/release/bench_replicas [SAMPLES]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use convoy_e2e::bench::{median_p99, ms};
use convoy_e2e::fleet_repo::{configmap_yaml, standard_fleet};
use convoy_e2e::harness::{HubProcess, TestCa, TestPostgres};
use convoy_hub::store::postgres::PgStore;
use convoy_hub::store::redb::RedbStore;
use convoy_hub::store::writer::StoreWriter;
use convoy_hub::store::{Store, StoreEvent};
use convoy_shared::identity::Role;
use convoy_shared::proto::{ListClustersRequest, Report};

/// The goal for a failover.
const FAILOVER_GOAL: Duration = Duration::from_secs(10);
/// Reports written per store in the throughput run, over this many clusters.
const REPORTS: usize = 100_000;
const CLUSTERS: usize = 1_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    convoy_shared::install_crypto_provider();
    let samples: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let postgres = TestPostgres::start();
    failover(&postgres, samples).await?;
    reports(&postgres).await?;
    scale(&postgres).await?;
    Ok(())
}

/// Clusters whose "assigned" history entries one commit writes.
const HISTORY: usize = 100_000;
/// Assignments published through the fence in the scale run.
const PUBLISHED: usize = 10_000;

async fn scale(postgres: &TestPostgres) -> anyhow::Result<()> {
    use convoy_hub::store::leadership::Leadership;
    use convoy_shared::proto::HistoryEntry;

    let url = postgres.database();
    let pg = Arc::new(tokio::task::spawn_blocking(move || PgStore::connect(&url)).await??);
    let store: Arc<dyn Store> = pg.clone();
    let (writer, task) = StoreWriter::spawn(store);
    let t0 = Instant::now();
    for i in 0..HISTORY {
        let entry = HistoryEntry {
            at_unix_ms: i as i64,
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            digest: format!("{i:064x}"),
            event: "assigned".into(),
            detail: String::new(),
        };
        writer.record(StoreEvent::History { cluster: format!("c-{i:06}"), entry });
        if i % 8_192 == 8_191 {
            writer.flush().await;
        }
    }
    writer.flush().await;
    let history = t0.elapsed();
    drop(writer);
    let _ = task.await;

    let _lead = Leadership::new(pg.config().clone(), pg.fence().clone(), "bench".into()).acquire().await;
    let commit = |greeting: &str, count: usize| -> Vec<Arc<convoy_shared::model::Assignment>> {
        (0..count).map(|i| Arc::new(convoy_hub::testing::assignment(&format!("c-{i:06}"), greeting))).collect()
    };
    // As the leader published before: one fenced transaction per cluster.
    let (singly, publisher) = (commit("v2", PUBLISHED), pg.clone());
    let t0 = Instant::now();
    tokio::task::spawn_blocking(move || singly.iter().try_for_each(|a| publisher.publish(std::slice::from_ref(a))))
        .await??;
    let one_by_one = t0.elapsed();
    // As it publishes now: a commit's fan-out in one fenced transaction.
    let (batch, publisher) = (commit("v3", HISTORY), pg.clone());
    let t0 = Instant::now();
    tokio::task::spawn_blocking(move || publisher.publish(&batch)).await??;
    let batched = t0.elapsed();
    let per_cluster = |d: Duration, n: usize| ms(d) / n as f64;
    println!(
        "one commit to 100,000 clusters on PostgreSQL: {HISTORY} history entries through the writer in {:.2} s ({:.0}/s); \
         the leader's fenced publish: one transaction per cluster {:.3} ms each over {PUBLISHED} (so {:.1} s for 100,000), \
         all in one transaction {:.3} ms each, {:.2} s for {HISTORY}: {:.1}x faster",
        history.as_secs_f64(),
        HISTORY as f64 / history.as_secs_f64(),
        per_cluster(one_by_one, PUBLISHED),
        per_cluster(one_by_one, PUBLISHED) * 100.0,
        per_cluster(batched, HISTORY),
        batched.as_secs_f64(),
        per_cluster(one_by_one, PUBLISHED) / per_cluster(batched, HISTORY),
    );
    Ok(())
}

async fn failover(postgres: &TestPostgres, samples: usize) -> anyhow::Result<()> {
    let database = postgres.database();
    let dir = tempfile::tempdir()?;
    let repo = standard_fleet(dir.path());
    let ca = TestCa::new();
    let mut leader = HubProcess::start_replica(&ca.certs.0, "127.0.0.1:0", &repo.url(), &database);
    leader.process.wait_for_line("leading");
    for (how, count) in [("SIGKILL", samples), ("SIGSTOP", samples.div_ceil(3))] {
        let mut times = Vec::with_capacity(count);
        for i in 0..count {
            let follower = HubProcess::start_replica(&ca.certs.0, "127.0.0.1:0", &repo.url(), &database);
            let revision = repo.head();
            wait_assigned(&ca, &follower.address, &revision).await;
            repo.write("apps/web/base/config.yaml", &configmap_yaml("web-config", &[("n", &format!("{how}-{i}"))]));
            let next = repo.commit(&format!("{how} sample {i}"));
            let t0 = Instant::now();
            if how == "SIGKILL" {
                leader.kill();
            } else {
                leader.pause();
            }
            wait_assigned(&ca, &follower.address, &next).await;
            times.push(t0.elapsed());
            follower.process.wait_for_line("leading");
            leader = follower;
        }
        let (median, p99) = median_p99(&mut times);
        println!(
            "failover after {how}: leader gone → commit published by the new leader: median {:.0} ms, p99 {:.0} ms \
             over {count} (goal {} s: ratio {:.2})",
            ms(median),
            ms(p99),
            FAILOVER_GOAL.as_secs(),
            p99.as_secs_f64() / FAILOVER_GOAL.as_secs_f64()
        );
    }
    Ok(())
}

/// Polls `hub` until dev-1's assigned revision is `revision`.
async fn wait_assigned(ca: &TestCa, hub: &str, revision: &str) {
    let mut cli = ca.cli(hub, Role::Viewer).await;
    loop {
        if let Ok(clusters) = cli.list_clusters(ListClustersRequest {}).await
            && clusters.into_inner().clusters.iter().any(|c| c.name == "dev-1" && c.assigned_revision == revision)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn reports(postgres: &TestPostgres) -> anyhow::Result<()> {
    let url = postgres.database();
    let pg: Arc<dyn Store> = Arc::new(tokio::task::spawn_blocking(move || PgStore::connect(&url)).await??);
    let dir = tempfile::tempdir()?;
    let redb: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path())?);
    let pg_rate = sustained(pg.clone()).await;
    let redb_rate = sustained(redb.clone()).await;
    for store in [pg, redb] {
        let kept = tokio::task::spawn_blocking(move || store.last_reports()).await??;
        anyhow::ensure!(kept.len() == CLUSTERS, "{} clusters' reports kept, not {CLUSTERS}", kept.len());
    }
    println!(
        "reports written through the store writer: PostgreSQL {pg_rate:.0}/s, redb {redb_rate:.0}/s \
         ({REPORTS} reports over {CLUSTERS} clusters; ratio PostgreSQL/redb {:.2})",
        pg_rate / redb_rate
    );
    Ok(())
}

/// Reports per second `store` takes through the hub's writer, in bursts the queue holds.
async fn sustained(store: Arc<dyn Store>) -> f64 {
    let (writer, task) = StoreWriter::spawn(store);
    const BURST: usize = 8_192;
    let t0 = Instant::now();
    for start in (0..REPORTS).step_by(BURST) {
        for i in start..(start + BURST).min(REPORTS) {
            let report = Report {
                revision: format!("r{i}"),
                digest: format!("{i:064x}"),
                applied: true,
                at_unix_ms: i as i64,
                ..Default::default()
            };
            writer.record(StoreEvent::Report { cluster: format!("c-{:05}", i % CLUSTERS), report });
        }
        writer.flush().await;
    }
    let elapsed = t0.elapsed();
    drop(writer);
    let _ = task.await;
    REPORTS as f64 / elapsed.as_secs_f64()
}
