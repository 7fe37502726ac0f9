//! What the agent cannot apply is visible at the hub, per object and in words: `convoy status`
//! (and its JSON) names each failed object with the API server's or the agent's reason and
//! what to do, once each; `convoy watch` announces each new failure once.

use convoy_e2e::fleet_repo::{app_yaml, configmap_yaml, kustomization_yaml, standard_fleet};
use convoy_e2e::harness::{InProcessHub, TestCa, eventually, run_agents};
use convoy_shared::identity::Role;
use convoy_shared::proto::StatusRequest;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_object_the_agent_cannot_apply_is_named_with_its_reason_at_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(&dir.path().join("fleet"));
    repo.checkout("main");
    repo.write("apps/broken/app.yaml", &app_yaml("broken", "broken", &[("region", "eu")]));
    repo.write(
        "apps/broken/base/kustomization.yaml",
        &kustomization_yaml(&["good.yaml", "elsewhere.yaml", "widget.yaml"], &[]),
    );
    repo.write("apps/broken/base/good.yaml", &configmap_yaml("good", &[("k", "v")]));
    repo.write(
        "apps/broken/base/elsewhere.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lost\n  namespace: nowhere\ndata: {k: v}\n",
    );
    repo.write(
        "apps/broken/base/widget.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec: {size: 1}\n",
    );
    let head = repo.commit("broken: an object in a namespace nobody made, a kind nobody serves");
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    hub.sync("main", &head).await;
    let mut events = hub.hub.subscribe_events();
    let names = ["prod-eu"];
    let kube = kubesim::SimFleet::start(&names).await.unwrap();
    convoy_e2e::fleet_repo::create_standard_namespaces(kube.cluster("prod-eu").unwrap());
    let shutdown = CancellationToken::new();
    let caches = tempfile::tempdir().unwrap();
    let agents = run_agents(&ca, &hub.address, &kube, &names, caches.path(), &shutdown).await;

    let mut cli = ca.cli(&hub.address, Role::Viewer).await;
    let status = eventually("both failures at the hub", || {
        let mut cli = cli.clone();
        async move {
            let status = cli.status(StatusRequest { cluster: "prod-eu".into() }).await.ok()?.into_inner();
            let broken = status.clusters[0].apps.iter().find(|a| a.name == "broken")?.clone();
            (broken.failed_total == 2).then_some((status, broken))
        }
    })
    .await;
    let (status, broken) = status;
    let reason = |name: &str| {
        broken.failed.iter().find(|f| f.r#ref.as_ref().is_some_and(|r| r.name == name)).map(|f| f.reason.clone())
    };
    let lost = reason("lost").expect("the ConfigMap in a missing namespace");
    assert!(lost.contains("namespaces \"nowhere\" not found") && lost.contains("spec.namespace"), "{lost}");
    let widget = reason("w").expect("the Widget nobody serves");
    assert!(widget.contains("is not served by this cluster") && widget.contains("CRD"), "{widget}");
    for failure in &broken.failed {
        assert!(
            !failure.reason.contains("Status {") && !failure.reason.contains("ErrorResponse"),
            "{}",
            failure.reason
        );
    }
    let errors = status.clusters[0].errors.join("\n");
    assert!(errors.contains("broken: ConfigMap nowhere/lost: ") && errors.contains("Widget"), "{errors}");
    assert!(kube.cluster("prod-eu").unwrap().get("v1", "ConfigMap", Some("broken"), "good").is_some());

    // `convoy watch` heard each failure once, however many reports repeated it.
    let mut failed = Vec::new();
    while let Ok(event) = events.try_recv() {
        if event.kind == "apply-failed" {
            failed.push(event.detail);
        }
    }
    failed.sort();
    let before = failed.len();
    failed.dedup();
    assert_eq!((before, failed.len()), (2, 2), "{failed:?}");
    let _ = &mut cli;
    shutdown.cancel();
    for agent in agents {
        let _ = agent.await;
    }
    hub.stop().await;
}
