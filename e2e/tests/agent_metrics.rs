//! The agent's `/metrics`: Prometheus text whose values follow the hub link and the cluster.

use std::collections::BTreeMap;

use convoy_e2e::fleet_repo::{create_standard_namespaces, standard_fleet};
use convoy_e2e::harness::{InProcessHub, TestCa, eventually, scrape_metrics};
use convoy_shared::identity::Identity;
use kubesim::SimFleet;
use tokio_util::sync::CancellationToken;

fn value(samples: &BTreeMap<String, f64>, sample: &str) -> Option<f64> {
    samples.get(sample).copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_link_and_the_applied_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let kube = SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = kube.cluster("dev-1").unwrap();
    create_standard_namespaces(cluster);

    let cache = tempfile::tempdir().unwrap();
    let cert = ca.issue(Identity::Cluster("dev-1".into()));
    let link = ca.agent_config(&hub.address, Some(&cert), "dev-1");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let shutdown = CancellationToken::new();
    let config = convoy_agent::testing::test_config("dev-1", cache.path());
    let agent = tokio::spawn(convoy_agent::run(
        config,
        link,
        cluster.client().await.unwrap(),
        Some(listener),
        shutdown.clone(),
    ));

    let text = eventually("the agent to apply and report healthy", || {
        let address = address.clone();
        async move {
            let text = scrape_metrics(&address).await;
            let done = value(&text, "convoy_agent_hub_connected") == Some(1.0)
                && value(&text, "convoy_agent_assignment_applied") == Some(1.0)
                // web's and api's ConfigMaps and the Namespaces their app.yaml name.
                && value(&text, r#"convoy_agent_objects{health="healthy"}"#) == Some(4.0);
            done.then_some(text)
        }
    })
    .await;
    assert_eq!(value(&text, "convoy_agent_apply_errors"), Some(0.0), "{text:?}");
    assert_eq!(value(&text, "convoy_agent_drifts"), Some(0.0), "{text:?}");
    assert_eq!(value(&text, "convoy_agent_report_queue_depth"), Some(0.0), "{text:?}");
    let clean_passes = value(&text, r#"convoy_agent_passes_total{outcome="clean"}"#).unwrap_or(0.0);
    assert!(clean_passes >= 1.0, "the applying pass is counted: {text:?}");
    let failed_passes = value(&text, r#"convoy_agent_passes_total{outcome="errors"}"#).unwrap_or(0.0);
    assert_eq!(
        value(&text, "convoy_agent_pass_duration_seconds_count"),
        Some(clean_passes + failed_passes),
        "{text:?}"
    );

    // The hub goes away: the link gauge drops.
    hub.stop().await;
    eventually("the link gauge to drop", || {
        let address = address.clone();
        async move { (value(&scrape_metrics(&address).await, "convoy_agent_hub_connected") == Some(0.0)).then_some(()) }
    })
    .await;
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}
