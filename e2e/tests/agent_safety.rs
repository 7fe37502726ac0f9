//! What the agent must never do, and what it must do without the hub: a restart while the hub is
//! down re-enforces the cached assignment; a failed assignment deletes nothing; protected objects
//! and apps with a render error are not pruned; an app waits for its dependencies to be healthy.
//! Each runs on kubesim and on a real kube-apiserver (issue 29), but the wait for dependencies,
//! which needs kubesim's readiness delay to catch the dependency still progressing.

use std::time::Duration;

use convoy_agent::link::LinkState;
use convoy_agent::testing::{self as fx, InProcessAgent, NS, settled};
use convoy_e2e::harness::{TestCa, eventually};
use convoy_shared::identity::Identity;
use convoy_shared::model::report::Health;
use kubesim::SimFleet;
use kubesim::scenario::{Backend, TestCluster};
use serde_json::json;
use tokio_util::sync::CancellationToken;

async fn cm_exists(cluster: &TestCluster, name: &str) -> bool {
    cluster.get("v1", "ConfigMap", Some(NS), name).await.is_some()
}

fn web(names: &[&str]) -> convoy_shared::model::AppAssignment {
    let mut objects = vec![fx::namespace(NS)];
    objects.extend(names.iter().map(|n| fx::config_map(n, "v1")));
    fx::app("web", &[], objects)
}

kubesim::on_both_backends!(
    a_restart_while_the_hub_is_down_re_enforces_the_cached_assignment,
    a_failed_assignment_deletes_nothing_and_a_later_good_one_prunes,
    an_app_with_a_render_error_is_not_pruned_and_prune_false_is_honored,
    reports_queue_while_the_hub_is_down,
);

async fn a_restart_while_the_hub_is_down_re_enforces_the_cached_assignment(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, "r1").await else { return };
    let cache = tempfile::tempdir().unwrap();
    let a = fx::assignment("r1", "rev-1", vec![web(&["a", "b", "c"])]);
    let agent = InProcessAgent::start(fx::test_config("r1", cache.path()), cluster.client().await, None);
    agent.assign(a.clone());
    settled(&agent, &a.digest).await;
    agent.stop().await;

    // While the agent is away: one object deleted, one edited, and one stray object of ours left
    // in the inventory by hand (a restart must never prune it).
    let kc = cluster.client().await;
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(kc, NS);
    cms.delete("a", &Default::default()).await.unwrap();
    cluster
        .apply(
            "kubectl-edit",
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": NS},
                "data": {"value": "edited"}}),
            true,
        )
        .await;

    // The whole agent (link + reconciler), with a hub that does not answer.
    let ca = TestCa::new();
    let cert = ca.issue(Identity::Cluster("r1".into()));
    let link = ca.agent_config("127.0.0.1:9", Some(&cert), "r1");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(convoy_agent::run(
        fx::test_config("r1", cache.path()),
        link,
        cluster.client().await,
        None,
        shutdown.clone(),
    ));
    eventually("the deleted object re-created and the edit undone", || async {
        let a = cm_exists(&cluster, "a").await;
        let b = cluster.get("v1", "ConfigMap", Some(NS), "b").await;
        (a && b.is_some_and(|b| b["data"]["value"] == "v1")).then_some(())
    })
    .await;
    assert!(cm_exists(&cluster, "c").await);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

async fn a_failed_assignment_deletes_nothing_and_a_later_good_one_prunes(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, "p1").await else { return };
    let cache = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(fx::test_config("p1", cache.path()), cluster.client().await, None);
    let first = fx::assignment("p1", "rev-1", vec![web(&["keep", "drop", "guarded"])]);
    agent.assign(first.clone());
    settled(&agent, &first.digest).await;

    // Failed: apply what is there (a new object), prune nothing.
    let mut failed = convoy_shared::model::Assignment::new("p1", "prod", "rev-2", vec![web(&["keep", "new"])], true);
    failed.failed = true;
    agent.assign(failed.clone());
    settled(&agent, &failed.digest).await;
    assert!(cm_exists(&cluster, "new").await);
    assert!(cm_exists(&cluster, "drop").await, "a failed assignment deletes nothing");
    assert!(cm_exists(&cluster, "guarded").await);

    // Someone protects `guarded`; a good assignment without both prunes only `drop`.
    cluster
        .apply(
            "kubectl-annotate",
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "guarded",
                "namespace": NS, "annotations": {"convoy.dev/prune": "disabled"}}}),
            false,
        )
        .await;
    let good = fx::assignment("p1", "rev-3", vec![web(&["keep", "new"])]);
    agent.assign(good.clone());
    settled(&agent, &good.digest).await;
    eventually("drop pruned", || async { (!cm_exists(&cluster, "drop").await).then_some(()) }).await;
    assert!(cm_exists(&cluster, "guarded").await, "convoy.dev/prune: disabled protects");
    assert!(cm_exists(&cluster, "keep").await && cm_exists(&cluster, "new").await);
    // The inventory of rev-3 is written after its prune: on a real API server the read can come
    // between the two.
    let text = eventually("the inventory of rev-3", || async {
        let inventory = cluster.get("v1", "ConfigMap", Some("convoy-system"), "convoy-inventory").await?;
        let text = inventory["data"]["inventory.json"].as_str()?.to_string();
        text.contains("\"revision\":\"rev-3\"").then_some(text)
    })
    .await;
    assert!(!text.contains("\"guarded\""), "a protected object leaves the inventory: {text}");
    agent.stop().await;
}

async fn an_app_with_a_render_error_is_not_pruned_and_prune_false_is_honored(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, "e1").await else { return };
    let cache = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(fx::test_config("e1", cache.path()), cluster.client().await, None);
    let mut tools = fx::app("tools", &[], vec![fx::config_map("tool-a", "v1"), fx::config_map("tool-b", "v1")]);
    tools.policy.prune = false;
    let first = fx::assignment("e1", "rev-1", vec![web(&["x", "y"]), tools]);
    agent.assign(first.clone());
    settled(&agent, &first.digest).await;

    let mut broken = web(&["x"]);
    broken.render_error = Some("apps/web/base/kustomization.yaml: missing deployment.yaml".into());
    let mut tools = fx::app("tools", &[], vec![fx::config_map("tool-a", "v1")]);
    tools.policy.prune = false;
    let marker = fx::app("marker", &[], vec![fx::config_map("marker", "v1")]);
    let second = fx::assignment("e1", "rev-2", vec![broken, tools, marker]);
    agent.assign(second.clone());
    let report = eventually("the second assignment applied", || {
        let r = agent.last_report().filter(|r| r.digest == second.digest && r.applied);
        async move { r }
    })
    .await;
    assert!(cm_exists(&cluster, "marker").await);
    assert!(cm_exists(&cluster, "y").await, "an app with a render error is not pruned");
    assert!(cm_exists(&cluster, "tool-b").await, "prune: false is honored");
    let web_status = report.apps.iter().find(|a| a.name == "web").unwrap();
    assert_eq!(web_status.health, Health::Degraded);
    assert!(web_status.message.contains("render error"), "{}", web_status.message);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_applied_only_after_its_dependencies_are_healthy() {
    let fleet = SimFleet::start(&["g1"]).await.unwrap();
    let sim = fleet.cluster("g1").unwrap();
    sim.set_ready_delay(Duration::from_secs(2));
    let cluster = TestCluster::Sim(fleet);
    let cache = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(fx::test_config("g1", cache.path()), cluster.client().await, None);
    let db = fx::app("db", &[], vec![fx::namespace(NS), fx::deployment("db", "postgres:16", Some(1))]);
    let api = fx::app("api", &["db"], vec![fx::config_map("api", "v1")]);
    let a = fx::assignment("g1", "rev-1", vec![api, db]);
    agent.assign(a.clone());
    let waiting = eventually("db applied but not ready", || {
        let r =
            agent.last_report().filter(|r| r.apps.iter().any(|a| a.name == "db" && a.health == Health::Progressing));
        async move { r }
    })
    .await;
    let api_status = waiting.apps.iter().find(|a| a.name == "api").unwrap();
    assert!(api_status.message.contains("waiting for db"), "{}", api_status.message);
    assert!(!cm_exists(&cluster, "api").await, "api must wait for db");
    settled(&agent, &a.digest).await;
    assert!(cm_exists(&cluster, "api").await);
    agent.stop().await;
}

async fn reports_queue_while_the_hub_is_down(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, "q1").await else { return };
    let cache = tempfile::tempdir().unwrap();
    // Seed the cache, as an earlier run with the hub would have.
    let a = fx::assignment("q1", "rev-1", vec![web(&["a"])]);
    convoy_agent::cache::Cache::new(cache.path()).store_assignment(&a).await.unwrap();
    let ca = TestCa::new();
    let cert = ca.issue(Identity::Cluster("q1".into()));
    let config = fx::test_config("q1", cache.path());
    let reconciler = convoy_agent::reconciler::Reconciler::new(config, cluster.client().await);
    let held = reconciler.cached_assignment().await.map(std::sync::Arc::new);
    assert!(held.is_some());
    let (link, handle) = convoy_agent::link::HubLink::new(ca.agent_config("127.0.0.1:9", Some(&cert), "q1"), held);
    let shutdown = CancellationToken::new();
    let link_task = tokio::spawn(link.run(shutdown.clone()));
    let rec_task = tokio::spawn(reconciler.run(handle.assignment.clone(), handle.reports.clone(), shutdown.clone()));
    eventually("a report queued while the hub is unreachable", || {
        let queued = handle.reports.len();
        let down = matches!(*handle.state.borrow(), LinkState::Disconnected { .. });
        async move { (queued > 0 && down).then_some(()) }
    })
    .await;
    assert!(cm_exists(&cluster, "a").await);
    shutdown.cancel();
    link_task.await.unwrap();
    rec_task.await.unwrap().unwrap();
}
