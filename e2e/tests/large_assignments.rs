//! Assignments of any size: 50 MiB / 20,000 objects reach the agent and apply on kubesim; a
//! one-app change sends that app only; an object larger than a Kubernetes API server stores is a
//! render error of its app that leaves the cluster as it was.

use std::time::Duration;

use convoy_e2e::fleet_repo::{self, bulk_fleet, create_standard_namespaces, standard_fleet, write_bulk_app};
use convoy_e2e::harness::{HubProcess, TestCa, eventually, spawn_agent};
use convoy_shared::identity::Role;
use convoy_shared::proto::fleet_service_client::FleetServiceClient;
use convoy_shared::proto::{ClusterInfo, GetClusterRequest, RefreshRequest, StatusRequest};
use kubesim::SimFleet;
use kubesim::poll::within;
use tonic::transport::Channel;

const APPS: usize = 10;
const OBJECTS_PER_APP: usize = 2_000;
const OBJECT_BYTES: usize = 2_500;

async fn dev_1(cli: &mut FleetServiceClient<Channel>) -> Option<ClusterInfo> {
    cli.get_cluster(GetClusterRequest { name: "dev-1".into() }).await.ok().map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_assignment_of_50_mib_and_20000_objects_applies_and_a_one_app_change_sends_one_app() {
    let dir = tempfile::tempdir().unwrap();
    let repo = bulk_fleet(dir.path(), APPS, OBJECTS_PER_APP, OBJECT_BYTES);
    let head = repo.head();
    let ca = TestCa::new();
    let serve = ["--repo", &repo.url(), "--poll-seconds", "3600"];
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let kube = SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = kube.cluster("dev-1").unwrap();
    cluster.apply("test", &convoy_agent::testing::namespace("bulk"), true).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let agent = spawn_agent(&ca, &hub.address, cluster, cache.path(), &[]);
    let mut cli = ca.cli(&hub.address, Role::Admin).await;

    within("dev-1 to apply 20,000 objects", Duration::from_secs(600), || {
        let mut cli = cli.clone();
        let head = head.clone();
        async move { dev_1(&mut cli).await.filter(|c| c.in_sync && c.applied_revision == head).map(|_| ()) }
    })
    .await;
    let status = cli.status(StatusRequest { cluster: "dev-1".into() }).await.unwrap().into_inner();
    assert!(status.clusters[0].errors.is_empty(), "{:?}", status.clusters[0].errors);
    let applied = cluster.list("v1", "ConfigMap", Some("bulk"));
    assert_eq!(applied.len(), APPS * OBJECTS_PER_APP, "every object applied");
    let last = cluster.get("v1", "ConfigMap", Some("bulk"), &format!("cm-{:02}-{:05}", APPS - 1, OBJECTS_PER_APP - 1));
    assert_eq!(last.expect("the last object applied")["data"]["payload"].as_str().unwrap().len(), OBJECT_BYTES);
    let sent = hub.log_lines("sending assignment");
    assert!(sent.iter().any(|l| l.contains(&format!("sent_apps={APPS}"))), "{sent:?}");
    assert!(
        agent.log_lines("reconnecting").is_empty(),
        "the link never dropped: {:?}",
        agent.log_lines("reconnecting")
    );

    // One app of ten changes: that app travels, the agent takes the nine others from its cache.
    write_bulk_app(&repo, 3, OBJECTS_PER_APP, OBJECT_BYTES, "v2");
    let v2 = repo.commit("bulk-03: v2");
    cli.refresh(RefreshRequest {}).await.unwrap();
    within("dev-1 to apply the one-app change", Duration::from_secs(600), || {
        let mut cli = cli.clone();
        let v2 = v2.clone();
        async move { dev_1(&mut cli).await.filter(|c| c.in_sync && c.applied_revision == v2).map(|_| ()) }
    })
    .await;
    let sent = hub.log_lines("sending assignment");
    assert!(sent.last().unwrap().contains("sent_apps=1"), "{sent:?}");
    let changed = cluster.get("v1", "ConfigMap", Some("bulk"), "cm-03-00000").unwrap();
    let unchanged = cluster.get("v1", "ConfigMap", Some("bulk"), "cm-04-00000").unwrap();
    assert_ne!(
        changed["metadata"]["annotations"]["convoy.dev/revision"],
        unchanged["metadata"]["annotations"]["convoy.dev/revision"]
    );
    let status = cli.status(StatusRequest { cluster: "dev-1".into() }).await.unwrap().into_inner();
    assert!(status.clusters[0].errors.is_empty(), "{:?}", status.clusters[0].errors);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_too_large_for_the_api_server_is_a_render_error_and_the_cluster_keeps_its_objects() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let head = repo.head();
    let ca = TestCa::new();
    let serve = ["--repo", &repo.url(), "--poll-seconds", "3600"];
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let kube = SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = kube.cluster("dev-1").unwrap();
    create_standard_namespaces(cluster);
    let cache = tempfile::tempdir().unwrap();
    let _agent = spawn_agent(&ca, &hub.address, cluster, cache.path(), &[]);
    let mut cli = ca.cli(&hub.address, Role::Admin).await;
    eventually("dev-1 applied", || {
        let mut cli = cli.clone();
        let head = head.clone();
        async move { dev_1(&mut cli).await.filter(|c| c.in_sync && c.applied_revision == head).map(|_| ()) }
    })
    .await;
    let before = cluster.get("v1", "ConfigMap", Some("web"), "web-config").unwrap();

    // An 8 MiB ConfigMap (over the old 4 MiB message limit too) next to a change of web-config:
    // neither reaches the cluster.
    let blob = "x".repeat(8 << 20);
    repo.write("apps/web/base/blob.yaml", &fleet_repo::configmap_yaml("blob", &[("data", &blob)]));
    repo.write("apps/web/base/config.yaml", &fleet_repo::configmap_yaml("web-config", &[("greeting", "changed")]));
    repo.write("apps/web/base/kustomization.yaml", &fleet_repo::kustomization_yaml(&["config.yaml", "blob.yaml"], &[]));
    repo.commit("web: an 8 MiB ConfigMap");
    cli.refresh(RefreshRequest {}).await.unwrap();
    let error = eventually("the render error in status", || {
        let mut cli = cli.clone();
        async move {
            let status = cli.status(StatusRequest { cluster: "dev-1".into() }).await.ok()?.into_inner();
            let web = status.clusters[0].apps.iter().find(|a| a.name == "web")?.clone();
            (!web.render_error.is_empty()).then_some(web.render_error)
        }
    })
    .await;
    assert!(error.contains("ConfigMap web/blob") && error.contains("8.0 MiB"), "{error}");
    // The agent stays in sync with the last good objects; nothing was pruned or changed.
    eventually("dev-1 in sync with the kept objects", || {
        let mut cli = cli.clone();
        async move { dev_1(&mut cli).await.filter(|c| c.in_sync && c.connected).map(|_| ()) }
    })
    .await;
    let after = cluster.get("v1", "ConfigMap", Some("web"), "web-config").expect("not pruned");
    assert_eq!(after["data"], before["data"]);
    assert!(cluster.get("v1", "ConfigMap", Some("web"), "blob").is_none());
}

#[tokio::test]
async fn what_an_agent_cannot_take_shows_in_status_until_it_takes_the_next() {
    use convoy_shared::proto::agent_message::Kind as AgentKind;
    use convoy_shared::proto::agent_service_client::AgentServiceClient;
    use convoy_shared::proto::{AgentMessage, Hello, LinkProblem};

    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let ca = TestCa::new();
    let hub = convoy_e2e::harness::InProcessHub::start(&ca, &repo.url()).await;
    let cert = ca.issue(convoy_shared::identity::Identity::Cluster("dev-1".into()));
    let address = convoy_shared::tls::HubAddress::parse(&hub.address, None).unwrap();
    let channel =
        convoy_shared::tls::connect(&address, ca.client_tls(Some(&cert)), Duration::from_secs(5)).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let hello = Hello { apps_by_digest: true, ..Default::default() };
    tx.send(AgentMessage { kind: Some(AgentKind::Hello(hello)) }).await.unwrap();
    let _inbound =
        AgentServiceClient::new(channel).connect(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap();
    let problem = "cannot take assignment 1234 (revision abc): app 'web' was sent by digest 99";
    tx.send(AgentMessage { kind: Some(AgentKind::Problem(LinkProblem { message: problem.into() })) }).await.unwrap();

    let cli = ca.cli(&hub.address, Role::Viewer).await;
    eventually("the agent's problem in status", || {
        let mut cli = cli.clone();
        async move {
            let status = cli.status(StatusRequest { cluster: "dev-1".into() }).await.ok()?.into_inner();
            status.clusters[0].errors.iter().any(|e| e == &format!("agent: {problem}")).then_some(())
        }
    })
    .await;
    tx.send(AgentMessage { kind: Some(AgentKind::Problem(LinkProblem { message: String::new() })) }).await.unwrap();
    eventually("the problem cleared", || {
        let mut cli = cli.clone();
        async move {
            let status = cli.status(StatusRequest { cluster: "dev-1".into() }).await.ok()?.into_inner();
            status.clusters[0].errors.is_empty().then_some(())
        }
    })
    .await;
    hub.stop().await;
}
