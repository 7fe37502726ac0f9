//! Two `convoy-hub` replicas on one PostgreSQL database (a server of the test's own): one leads
//! the sync, both serve agents and the fleet API. The leader killed with SIGKILL right after a
//! commit hands the lead to the other, the agent (given both addresses) moves over and gets the
//! commit, and nothing the replicas had acknowledged is lost. A leader paused (SIGSTOP) until the
//! other took over wakes up unable to publish: the fence refuses it, and it stops. A cluster
//! revoked through one replica is cut off by the other at once, and its audit record outlives the
//! replica that wrote it. The access policy the leader reads from Git holds on every replica,
//! one started later too. A commit the database refused to record reaches the cluster once the
//! database takes it again, with no other commit.

use convoy_agent::link::LinkState;
use convoy_e2e::fleet_repo::{FleetRepo, configmap_yaml, create_standard_namespaces, fleet_yaml, standard_fleet};
use convoy_e2e::harness::{
    HubProcess, Process, RunningAgent, TestCa, TestPostgres, cluster_info, eventually, history_events,
    refused_as_revoked, spawn_agent,
};
use convoy_shared::identity::{Identity, Role};
use convoy_shared::proto::{AuditRequest, RevokeClusterRequest, WhoAmIRequest};
use kubesim::SimFleet;

/// A PostgreSQL server of the test's own, the standard fleet in Git, and a replica leading the
/// sync of it on a new database of that server.
struct Leading {
    postgres: TestPostgres,
    database: String,
    dir: tempfile::TempDir,
    repo: FleetRepo,
    head: String,
    ca: TestCa,
    leader: HubProcess,
}

fn leading() -> Leading {
    let postgres = TestPostgres::start();
    let database = postgres.database();
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let head = repo.head();
    let ca = TestCa::new();
    let leader = HubProcess::start_replica(&ca.certs.0, "127.0.0.1:0", &repo.url(), &database);
    leader.process.wait_for_line("leading");
    Leading { postgres, database, dir, repo, head, ca, leader }
}

/// Cluster dev-1 of `kube` with the standard namespaces, and its agent dialing `hubs` (reconnect
/// backoff at most 1 s); the agent's cache directory lives as long as the returned one.
fn dev_1_agent(ca: &TestCa, kube: &SimFleet, hubs: &str) -> (Process, tempfile::TempDir) {
    let cluster = kube.cluster("dev-1").unwrap();
    create_standard_namespaces(cluster);
    let cache = tempfile::tempdir().unwrap();
    (spawn_agent(ca, hubs, cluster, cache.path(), &["--backoff-max-seconds", "1"]), cache)
}

fn new_greeting(repo: &FleetRepo, greeting: &str) -> String {
    repo.write("apps/web/base/config.yaml", &configmap_yaml("web-config", &[("greeting", greeting)]));
    repo.commit(&format!("web: {greeting}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_sync_hands_over_and_nothing_acknowledged_is_lost() {
    let Leading { postgres: _postgres, database, dir: _dir, repo, head, ca, leader } = leading();

    // The agent is given both replicas before the second one listens, so its stream is on the
    // leader, whichever address it tries first.
    let kube = SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = kube.cluster("dev-1").unwrap();
    let second = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (agent, _cache) = dev_1_agent(&ca, &kube, &format!("{},{second}", leader.address));
    eventually("dev-1 streaming to the leader", || async {
        cluster_info(&ca, &leader.address, "dev-1").await.filter(|c| c.connected).map(|_| ())
    })
    .await;
    let follower = HubProcess::start_replica(&ca.certs.0, &second, &repo.url(), &database);

    // Acknowledged: the follower serves the leader's assignment, and takes what the agent
    // applied (reported to the leader) from the shared store.
    let address = follower.address.clone();
    eventually("dev-1 applied, as the follower sees it", || async {
        cluster_info(&ca, &address, "dev-1")
            .await
            .filter(|c| !c.connected && c.in_sync && c.applied_revision == head)
            .map(|_| ())
    })
    .await;
    let before = history_events(&ca, &address, "dev-1", 100).await;
    assert!(before.contains(&("assigned".into(), head.clone())), "{before:?}");
    assert!(before.contains(&("applied".into(), head.clone())), "{before:?}");

    let next = new_greeting(&repo, "hi ${cluster.name}");
    leader.kill();
    follower.process.wait_for_line("leading");
    eventually("dev-1 on the new leader, applied the commit", || async {
        cluster_info(&ca, &address, "dev-1")
            .await
            .filter(|c| c.connected && c.in_sync && c.applied_revision == next)
            .map(|_| ())
    })
    .await;
    // The store's writer records the apply a moment after the status shows it.
    let applied = ("applied".to_string(), next.clone());
    let after = eventually("the apply in the shared history", || async {
        Some(history_events(&ca, &address, "dev-1", 100).await).filter(|h| h.contains(&applied))
    })
    .await;
    assert!(after.ends_with(&before), "history before the kill survives it: {before:?} then {after:?}");
    let config = cluster.get("v1", "ConfigMap", Some("web"), "web-config").expect("applied");
    assert_eq!(config["data"]["greeting"], "hi dev-1");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_database_refused_goes_out_once_it_takes_it_again() {
    let Leading { postgres, database, dir: _dir, repo, head, ca, leader } = leading();
    let kube = SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = kube.cluster("dev-1").unwrap();
    let (agent, _cache) = dev_1_agent(&ca, &kube, &leader.address);
    let address = leader.address.clone();
    eventually("dev-1 applied the head", || async {
        cluster_info(&ca, &address, "dev-1").await.filter(|c| c.in_sync && c.applied_revision == head).map(|_| ())
    })
    .await;

    // The database refuses the next publish (as one that lost a table to an operator's mistake,
    // or its connection, would), and takes writes again after that.
    postgres.sql(&database, "ALTER TABLE convoy_apps RENAME TO convoy_apps_away");
    let next = new_greeting(&repo, "hi ${cluster.name}");
    leader.process.wait_for_line("assignments not published; trying again");
    let before = cluster_info(&ca, &address, "dev-1").await.unwrap();
    assert_eq!(before.applied_revision, head, "nothing refused reached the cluster");
    postgres.sql(&database, "ALTER TABLE convoy_apps_away RENAME TO convoy_apps");
    eventually("dev-1 applied the commit the database refused at first", || async {
        cluster_info(&ca, &address, "dev-1").await.filter(|c| c.in_sync && c.applied_revision == next).map(|_| ())
    })
    .await;
    let config = cluster.get("v1", "ConfigMap", Some("web"), "web-config").expect("applied");
    assert_eq!(config["data"]["greeting"], "hi dev-1");
    assert_eq!(repo.head(), next, "no other commit carried it");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_that_wakes_after_the_takeover_cannot_publish() {
    let Leading { postgres: _postgres, database, dir: _dir, repo, head, ca, leader: mut paused } = leading();
    let other = HubProcess::start_replica(&ca.certs.0, "127.0.0.1:0", &repo.url(), &database);
    let address = other.address.clone();
    eventually("the follower serves the leader's assignment", || async {
        cluster_info(&ca, &address, "dev-1").await.filter(|c| c.assigned_revision == head).map(|_| ())
    })
    .await;

    paused.pause();
    let next = new_greeting(&repo, "hi ${cluster.name}");
    // The database ends the silent leader's session after the lease; the other takes the lead.
    other.process.wait_for_line("leading");
    eventually("the new leader publishes the commit", || async {
        cluster_info(&ca, &address, "dev-1").await.filter(|c| c.assigned_revision == next).map(|_| ())
    })
    .await;

    paused.resume();
    paused.process.wait_for_line("lost the lead");
    let status = paused.process.wait();
    assert!(!status.success(), "a replica that lost the lead stops: {status}");
    for refused in paused.process.log_lines("assignment not published") {
        assert!(refused.contains("refused"), "only the fence keeps it from publishing: {refused}");
    }
    let history = history_events(&ca, &address, "dev-1", 100).await;
    let assigned = history.iter().filter(|entry| *entry == &("assigned".to_string(), next.clone())).count();
    assert_eq!(assigned, 1, "only the new leader published the commit: {history:?}");
    assert_eq!(cluster_info(&ca, &address, "dev-1").await.unwrap().assigned_revision, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_revoked_through_one_replica_is_cut_off_by_the_other() {
    let postgres = TestPostgres::start();
    let database = postgres.database();
    let ca = TestCa::new();
    let serve = ["--store", database.as_str()];
    let one = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let other = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let cert = ca.issue(Identity::Cluster("dev-1".into()));
    let agent = RunningAgent::start(ca.agent_config(&other.address, Some(&cert), "dev-1"));
    let mut state = agent.handle.state.clone();
    state.wait_for(|s| *s == LinkState::Connected).await.unwrap();

    // A log shipper follows the audit on the other replica.
    let since_unix_ms = convoy_shared::clock::unix_ms();
    let follow = AuditRequest { since_unix_ms, follow: true, ..Default::default() };
    let mut following = ca.cli(&other.address, Role::Admin).await.audit(follow).await.unwrap().into_inner();

    let mut admin = ca.cli(&one.address, Role::Admin).await;
    let reply = admin.revoke_cluster(RevokeClusterRequest { cluster: "dev-1".into() }).await.unwrap().into_inner();
    assert!(!reply.stream_closed, "the stream is on the other replica");
    state.wait_for(|s| *s != LinkState::Connected).await.unwrap();
    let refused = refused_as_revoked(&state, "the other replica refuses the reconnect").await;
    assert!(refused.contains("convoy token create"), "{refused}");
    assert_eq!(other.log_lines("revoked on another replica").len(), 1);
    agent.stop().await;
    // The follower of the other replica got the record as it was written.
    let followed = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(record) = following.message().await.unwrap() {
            if record.action == "RevokeCluster" {
                return record;
            }
        }
        panic!("the follow stream ended");
    })
    .await
    .expect("the revocation's record on the other replica's --follow");
    assert!(followed.target.contains("dev-1"), "{followed:?}");

    // Its audit record is in the store the replicas share: the other replica reads it once the
    // one that wrote it is gone.
    one.kill();
    let mut admin = ca.cli(&other.address, Role::Admin).await;
    let mut stream = admin.audit(AuditRequest::default()).await.unwrap().into_inner();
    let mut records = Vec::new();
    while let Some(record) = stream.message().await.unwrap() {
        records.push(record);
    }
    let revocation = records.iter().find(|r| r.action == "RevokeCluster").expect("the revocation's audit record");
    assert_eq!((revocation.user.as_str(), revocation.result.as_str()), ("test-admin", "allowed"));
    assert!(revocation.target.contains("dev-1"), "{revocation:?}");
}

/// What `cert`'s user is told by the hub at `address`, once it answers by the policy of `head`.
async fn policy_on(
    ca: &TestCa,
    address: &str,
    cert: &convoy_shared::pki::IssuedCert,
    head: &str,
) -> Option<convoy_shared::proto::WhoAmIResponse> {
    let mut client = ca.fleet_client(address, cert).await.ok()?;
    let me = client.who_am_i(WhoAmIRequest {}).await.ok()?.into_inner();
    (me.policy_commit == head && me.roles == ["web-deployer"]).then_some(me)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_policy_the_leader_reads_holds_on_every_replica() {
    let postgres = TestPostgres::start();
    let database = postgres.database();
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    repo.checkout("main");
    let access = "  access:\n    roles:\n    - name: web-deployer\n      rules:\n      - {environments: [dev], apps: [web], verbs: [view, rollout]}\n    bindings:\n    - {role: web-deployer, groups: [web-team]}\n";
    repo.write("convoy.yaml", &(fleet_yaml(&[("dev", "dev"), ("stage", "stage"), ("prod", "main")]) + access));
    let head = repo.commit("access: the web team");
    let ca = TestCa::new();
    let leader = HubProcess::start_replica(&ca.certs.0, "127.0.0.1:0", &repo.url(), &database);
    leader.process.wait_for_line("leading");
    let follower = HubProcess::start_replica(&ca.certs.0, "127.0.0.1:0", &repo.url(), &database);
    let mut request =
        convoy_shared::pki::LeafRequest::new(Identity::User { name: "wendy".into(), role: Role::Member }, 1);
    request.groups = vec!["web-team".into()];
    let wendy = ca.ca.issue(&request).unwrap();
    // The follower runs no Git sync: it answers by the policy the leader put in force.
    eventually("the follower to answer by the leader's policy", || policy_on(&ca, &follower.address, &wendy, &head))
        .await;
    // A replica started later begins with it, from the store.
    let late = HubProcess::start_replica(&ca.certs.0, "127.0.0.1:0", &repo.url(), &database);
    let me = eventually("the late replica to answer by it", || policy_on(&ca, &late.address, &wendy, &head)).await;
    assert_eq!(me.may, ["view: apps web in environments dev", "rollout: apps web in environments dev"]);
}
