//! A hub killed with SIGKILL and restarted on the same `--data`: what it recorded (history, the
//! agents' last reports) is still there, an agent that already runs its assignment is told
//! "unchanged" instead of applying it again, and history gains no entry for the restart. A hub
//! stopped with SIGTERM writes what it acknowledged before it exits.

use convoy_e2e::fleet_repo::{create_standard_namespaces, standard_fleet};
use convoy_e2e::harness::{
    HubProcess, Process, RunningAgent, TestCa, cluster_info, eventually, history_events, spawn_agent,
};
use convoy_shared::identity::Identity;
use convoy_shared::model::report::Report;
use kubesim::SimFleet;

fn applying(agent: &Process) -> usize {
    agent.log_lines("applying new assignment").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_hub_keeps_its_history_and_reports_and_the_agent_does_not_reapply() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let head = repo.head();
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().to_str().unwrap();
    let ca = TestCa::new();
    let serve = ["--repo", &repo.url(), "--data", data_path, "--poll-seconds", "1"];
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let address = hub.address.clone();

    let kube = SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = kube.cluster("dev-1").unwrap();
    create_standard_namespaces(cluster);
    let cache = tempfile::tempdir().unwrap();
    let agent = spawn_agent(&ca, &address, cluster, cache.path(), &[]);

    eventually("dev-1 applied and healthy", || async {
        cluster_info(&ca, &address, "dev-1").await.filter(|c| c.in_sync && c.applied_revision == head).map(|_| ())
    })
    .await;
    let before = history_events(&ca, &address, "dev-1", 50).await;
    assert!(before.contains(&("applied".into(), head.clone())), "{before:?}");
    assert_eq!(applying(&agent), 1);

    hub.kill();
    let restarted = HubProcess::start_with(&ca.certs.0, &address, "info", &serve);
    // Straight from the store: the agent may not even be back yet.
    let after = history_events(&ca, &address, "dev-1", 50).await;
    assert!(after.ends_with(&before), "history survives the restart: {before:?} then {after:?}");
    let remembered = cluster_info(&ca, &address, "dev-1").await.expect("dev-1 is known");
    assert_eq!(remembered.applied_revision, head, "the last report survives the restart");

    eventually("dev-1 back and in sync", || async {
        cluster_info(&ca, &address, "dev-1").await.filter(|c| c.connected && c.in_sync).map(|_| ())
    })
    .await;
    assert_eq!(applying(&agent), 1, "the agent held the assignment the restarted hub planned");
    assert!(!restarted.log_lines("sending assignment").iter().any(|l| l.contains("dev-1")), "sent again");
    assert_eq!(
        history_events(&ca, &address, "dev-1", 50).await,
        before,
        "nothing new happened to dev-1, and history says so"
    );
    let config = cluster.get("v1", "ConfigMap", Some("web"), "web-config").expect("still applied");
    assert_eq!(config["data"]["greeting"], "hello dev-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_hub_acknowledged_before_sigterm_are_in_the_store_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().to_str().unwrap();
    let ca = TestCa::new();
    let serve = ["--data", data_path];
    let mut hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let address = hub.address.clone();
    let cert = ca.issue(Identity::Cluster("dev-1".into()));
    let agent = RunningAgent::start(ca.agent_config(&address, Some(&cert), "dev-1"));

    // A burst of applies, each a report and a history entry for the store's writer to queue.
    const REPORTS: usize = 400;
    for i in 0..REPORTS {
        let report = Report {
            revision: format!("r{i}"),
            digest: format!("d{i}"),
            applied: true,
            at_unix_ms: i as i64,
            ..Default::default()
        };
        agent.handle.reports.push(report);
    }
    let last = format!("r{}", REPORTS - 1);
    eventually("the hub to acknowledge the last report", || async {
        cluster_info(&ca, &address, "dev-1").await.filter(|c| c.applied_revision == last).map(|_| ())
    })
    .await;
    let status = hub.process.terminate();
    assert!(status.success(), "the hub exits cleanly on SIGTERM: {status}");
    hub.process.wait_for_line("store flushed");
    agent.stop().await;

    let restarted = HubProcess::start_with(&ca.certs.0, &address, "info", &serve);
    let remembered = cluster_info(&ca, &restarted.address, "dev-1").await.expect("dev-1 is known after the restart");
    assert_eq!(remembered.applied_revision, last, "the last acknowledged report survives");
    let history = history_events(&ca, &restarted.address, "dev-1", 50).await;
    assert_eq!(history.first(), Some(&("applied".to_string(), last.clone())), "{history:?}");
}
