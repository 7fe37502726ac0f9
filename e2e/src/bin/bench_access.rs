//! Benchmark of teams (issue 31):
//! - the cost of the access check: a fleet call (`Status` of every cluster, the answer filtered
//!   app by app) by a member whose groups hold one of 200 roles, against the same call by a
//!   built-in viewer under no policy, on the same hub, in one run;
//! - audit write throughput: records appended and made durable, one writer and eight at once,
//!   on the embedded store (redb) and on PostgreSQL (when its server binaries are installed).
//!
//! Run: `cargo build --release -p convoy-e2e --bin bench_access && target/release/bench_access`

use std::sync::Arc;
use std::time::{Duration, Instant};

use convoy_e2e::bench::{median_p99, ms};
use convoy_e2e::fleet_repo::{fleet_yaml, standard_fleet};
use convoy_e2e::harness::{InProcessHub, TestCa, TestPostgres};
use convoy_hub::state::access::AccessControl;
use convoy_hub::store::Store;
use convoy_shared::identity::{Identity, Role};
use convoy_shared::pki::LeafRequest;
use convoy_shared::proto::{AuditRecord, StatusRequest, WhoAmIRequest};

const CALLS: usize = 500;
const ROLES: usize = 200;
const RECORDS: usize = 2_000;

/// 200 roles of one rule each, every one bound to a group; `web-team` holds the last.
fn policy() -> String {
    let mut out = String::from("  access:\n    roles:\n");
    for i in 0..ROLES {
        let envs = ["dev", "stage", "prod"][i % 3];
        out += &format!(
            "    - name: role-{i}\n      rules:\n      - {{environments: [{envs}], apps: [app-{i}, web], verbs: [view, rollout]}}\n"
        );
    }
    out += "    bindings:\n";
    for i in 0..ROLES {
        let group = if i == ROLES - 1 { "web-team".to_string() } else { format!("team-{i}") };
        out += &format!("    - {{role: role-{i}, groups: [{group}]}}\n");
    }
    out
}

async fn calls(
    client: &mut convoy_shared::proto::fleet_service_client::FleetServiceClient<tonic::transport::Channel>,
) -> Vec<Duration> {
    let mut took = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t0 = Instant::now();
        client.status(StatusRequest::default()).await.expect("status");
        took.push(t0.elapsed());
    }
    took
}

/// Appends [`RECORDS`] records with `writers` at once; records per second.
async fn throughput(store: Arc<dyn Store>, writers: usize) -> f64 {
    let access = Arc::new(AccessControl::new(store));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let access = access.clone();
        tasks.spawn(async move {
            for i in 0..RECORDS / writers {
                let record = AuditRecord {
                    at_unix_ms: convoy_shared::clock::unix_ms(),
                    user: format!("user-{w}"),
                    verb: "rollout".into(),
                    target: format!("app 'web' in environment 'prod' #{i}"),
                    result: "allowed".into(),
                    source: "127.0.0.1:5000".into(),
                    request_id: format!("{w}-{i}"),
                    action: "RolloutAction".into(),
                    groups: vec!["web-team".into()],
                };
                access.record(record).await.expect("an audit record");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    RECORDS as f64 / t0.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    convoy_shared::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let repo = standard_fleet(dir.path());
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;

    // No policy: a built-in viewer.
    let mut viewer = ca.cli(&hub.address, Role::Viewer).await;
    calls(&mut viewer).await; // warm up
    let mut none = calls(&mut viewer).await;

    // 200 roles; a member whose group holds the last of them.
    repo.checkout("main");
    repo.write("convoy.yaml", &(fleet_yaml(&[("dev", "dev"), ("stage", "stage"), ("prod", "main")]) + &policy()));
    let head = repo.commit("200 roles");
    hub.sync("main", &head).await;
    let member = Identity::User { name: "wendy".into(), role: Role::Member };
    let mut request = LeafRequest::new(member, 1);
    request.groups = vec!["web-team".into()];
    let cert = ca.ca.issue(&request)?;
    let mut wendy = ca.fleet_client(&hub.address, &cert).await?;
    let me = wendy.who_am_i(WhoAmIRequest {}).await?.into_inner();
    anyhow::ensure!(me.policy_commit == head && me.roles == ["role-199"], "the policy is not in force: {me:?}");
    calls(&mut wendy).await;
    let mut scoped = calls(&mut wendy).await;
    hub.stop().await;

    let (none_median, none_p99) = median_p99(&mut none);
    let (scoped_median, scoped_p99) = median_p99(&mut scoped);
    println!("bench_access ({CALLS} calls each, Status of every cluster over mTLS, one client)");
    println!(
        "  {ROLES}-role policy, member: median {:.3} ms, p99 {:.3} ms; no policy, built-in viewer: median {:.3} ms, p99 {:.3} ms; ratio {:.2}",
        ms(scoped_median),
        ms(scoped_p99),
        ms(none_median),
        ms(none_p99),
        scoped_median.as_secs_f64() / none_median.as_secs_f64()
    );

    let data = tempfile::tempdir()?;
    let redb: Arc<dyn Store> = Arc::new(convoy_hub::store::redb::RedbStore::open(data.path())?);
    println!(
        "  audit writes, embedded store (redb, durable commit per record): {:.0}/s one writer, {:.0}/s eight writers",
        throughput(redb.clone(), 1).await,
        throughput(redb, 8).await
    );
    match std::panic::catch_unwind(TestPostgres::start) {
        Ok(pg) => {
            let store: Arc<dyn Store> = Arc::new(convoy_hub::store::postgres::PgStore::connect(&pg.database())?);
            println!(
                "  audit writes, PostgreSQL: {:.0}/s one writer, {:.0}/s eight writers",
                throughput(store.clone(), 1).await,
                throughput(store, 8).await
            );
        }
        Err(_) => println!("  (no PostgreSQL column: its server binaries are not installed)"),
    }
    Ok(())
}
