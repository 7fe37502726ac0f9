//! A cluster leaving Git: when its clusters/NAME.yaml is removed it keeps its last assignment
//! (nothing is pruned) but shows as orphaned and counts in no environment, gate or metric of
//! clusters in sync; `convoy clusters retire` then revokes it and forgets it at the hub, without
//! touching anything in the cluster.

use convoy_e2e::fleet_repo::{create_standard_namespaces, standard_fleet};
use convoy_e2e::harness::{InProcessHub, TestCa, eventually, run_agents, scrape_metrics};
use convoy_shared::identity::Role;
use convoy_shared::proto::{EnvsRequest, GetClusterRequest, ListClustersRequest, RetireClusterRequest, StatusRequest};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_removed_from_git_is_orphaned_out_of_the_gates_and_retired_without_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(&dir.path().join("fleet"));
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let names = ["prod-eu", "prod-us"];
    let kube = kubesim::SimFleet::start(&names).await.unwrap();
    for name in names {
        create_standard_namespaces(kube.cluster(name).unwrap());
    }
    let shutdown = CancellationToken::new();
    let caches = tempfile::tempdir().unwrap();
    let agents = run_agents(&ca, &hub.address, &kube, &names, caches.path(), &shutdown).await;
    let mut admin = ca.cli(&hub.address, Role::Admin).await;
    let base = repo.head();
    eventually("prod verified", || {
        let mut cli = admin.clone();
        let base = base.clone();
        async move {
            let envs = cli.envs(EnvsRequest {}).await.ok()?.into_inner().environments;
            envs.iter().any(|e| e.name == "prod" && e.verified_commit == base).then_some(())
        }
    })
    .await;
    // Still declared: retiring is refused.
    let refused = admin.retire_cluster(RetireClusterRequest { cluster: "prod-us".into() }).await.unwrap_err();
    assert!(refused.message().contains("clusters/prod-us.yaml"), "{}", refused.message());

    repo.checkout("main");
    repo.remove("clusters/prod-us.yaml");
    let head = repo.commit("prod-us leaves the fleet");
    hub.sync("main", &head).await;
    let us = admin.get_cluster(GetClusterRequest { name: "prod-us".into() }).await.unwrap().into_inner();
    assert!(us.orphaned && !us.assigned_digest.is_empty(), "it keeps its assignment: {us:?}");
    let envs = admin.envs(EnvsRequest {}).await.unwrap().into_inner().environments;
    let prod = envs.iter().find(|e| e.name == "prod").unwrap();
    assert_eq!(prod.clusters, 1, "prod-us counts no more in prod: {prod:?}");
    let status = admin.status(StatusRequest { cluster: "prod-us".into() }).await.unwrap().into_inner();
    let errors = status.clusters[0].errors.join("\n");
    assert!(errors.contains("orphaned") && errors.contains("convoy clusters retire prod-us"), "{errors}");
    let metrics = scrape_metrics(&hub.http_address).await;
    assert_eq!(metrics["convoy_hub_clusters_orphaned"], 1.0, "{metrics:?}");
    let us_cluster = kube.cluster("prod-us").unwrap();
    assert!(us_cluster.get("v1", "ConfigMap", Some("web"), "web-config").is_some(), "nothing pruned");

    // Retired: refused from now on, forgotten at the hub, its objects left where they are.
    let retired = admin.retire_cluster(RetireClusterRequest { cluster: "prod-us".into() }).await.unwrap().into_inner();
    assert!(retired.stream_closed, "{retired:?}");
    let listed = admin.list_clusters(ListClustersRequest {}).await.unwrap().into_inner().clusters;
    assert!(listed.iter().all(|c| c.name != "prod-us"), "{listed:?}");
    assert!(hub.hub.registry().revoked_at("prod-us").is_some());
    assert!(us_cluster.get("v1", "ConfigMap", Some("web"), "web-config").is_some(), "the cluster is untouched");
    let _ = &mut admin;
    shutdown.cancel();
    for agent in agents {
        let _ = agent.await;
    }
    hub.stop().await;
}
