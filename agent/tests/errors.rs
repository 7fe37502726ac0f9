//! What the API server refuses, on kubesim and on a real kube-apiserver: an invalid object (422),
//! a ConfigMap over 1 MiB (422), one in a namespace nobody made (404) and one of a kind nobody
//! serves each fail alone, named with the server's reason; the rest of the app applies, a large
//! ConfigMap under the limit included.

use std::collections::HashMap;

use convoy_agent::testing::{self as fx, InProcessAgent, NS};
use kubesim::eventually;
use kubesim::scenario::{Backend, TestCluster};
use serde_json::json;

const CLUSTER: &str = "e1";

kubesim::on_both_backends!(each_refused_object_fails_alone_with_the_servers_reason);

async fn each_refused_object_fails_alone_with_the_servers_reason(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, CLUSTER).await else { return };
    let cache = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(fx::test_config(CLUSTER, cache.path()), cluster.client().await, None);
    let mut invalid = fx::deployment("invalid", "nginx:1.25", Some(1));
    invalid["spec"]["selector"]["matchLabels"]["app"] = json!("someone-else");
    let lost = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "lost", "namespace": "nowhere"}, "data": {"k": "v"}});
    // Large objects: 1,000 KiB of values applies; over 1 MiB the server refuses it alone.
    let mut large = fx::config_map("large", "v1");
    large["data"]["blob"] = json!("x".repeat(1000 * 1024));
    let mut huge = fx::config_map("huge", "v1");
    huge["data"]["blob"] = json!("x".repeat(1024 * 1024 + 1));
    let objects =
        vec![fx::namespace(NS), fx::config_map("good", "v1"), invalid, lost, fx::widget("unserved", 1), large, huge];
    let a = fx::assignment(CLUSTER, "r1", vec![fx::app("web", &[], objects)]);
    agent.assign(a.clone());

    let errors: HashMap<String, String> = eventually("four objects refused", || async {
        let r = agent.last_report().filter(|r| r.digest == a.digest)?;
        let errors: HashMap<String, String> = r
            .apps
            .iter()
            .flat_map(|app| &app.objects)
            .filter_map(|o| o.apply_error.clone().map(|e| (o.object.name.clone(), e)))
            .collect();
        (errors.len() == 4).then_some(errors)
    })
    .await;
    assert!(errors["invalid"].contains("selector") && errors["invalid"].contains("labels"), "{errors:?}");
    assert!(errors["lost"].contains("nowhere"), "{errors:?}");
    assert!(errors["unserved"].contains("Widget"), "{errors:?}");
    assert!(errors["huge"].contains("Too long: may not be more than 1048576 bytes"), "{errors:?}");
    assert!(cluster.get("v1", "ConfigMap", Some(NS), "good").await.is_some(), "the rest of the app applies");
    let large = cluster.get("v1", "ConfigMap", Some(NS), "large").await.expect("the large ConfigMap applies");
    assert_eq!(large["data"]["blob"].as_str().map(str::len), Some(1000 * 1024));
    let report = agent.last_report().unwrap();
    assert!(!report.applied);
    agent.stop().await;
}
