//! The hub's brain against real Git repositories made by the test: commits, merges (promotion),
//! label changes, removed apps, broken YAML, force-pushes, deleted branches and the webhook.

use std::collections::BTreeMap;

use convoy_e2e::fleet_repo::{self, FleetRepo, standard_fleet};
use convoy_e2e::harness::{InProcessHub, TestCa, WEBHOOK_SECRET, eventually, scrape_metrics};
use convoy_shared::identity::Role;
use convoy_shared::proto::{DiffRequest, EnvsRequest, StatusRequest};

const CLUSTERS: [&str; 4] = ["dev-1", "stage-1", "prod-eu", "prod-us"];

fn digests(hub: &InProcessHub) -> BTreeMap<&'static str, String> {
    CLUSTERS.iter().map(|c| (*c, hub.digest(c))).collect()
}

fn changed(before: &BTreeMap<&'static str, String>, after: &BTreeMap<&'static str, String>) -> Vec<&'static str> {
    CLUSTERS.iter().copied().filter(|c| before[c] != after[c]).collect()
}

fn config_data(hub: &InProcessHub, cluster: &str, app: &str) -> serde_json::Value {
    hub.objects(cluster, app)
        .into_iter()
        .find(|o| o["kind"] == "ConfigMap")
        .map(|o| o["data"].clone())
        .unwrap_or_default()
}

async fn start(repo: &FleetRepo) -> (TestCa, InProcessHub) {
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    for cluster in CLUSTERS {
        assert!(!hub.digest(cluster).is_empty(), "{cluster} has no assignment: {:?}", hub.hub.view().errors);
    }
    (ca, hub)
}

#[tokio::test]
async fn the_first_sync_resolves_overlays_variables_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let (_ca, hub) = start(&repo).await;
    // base for dev-1, envs/stage for stage-1, clusters/prod-eu for prod-eu, base for prod-us.
    assert_eq!(config_data(&hub, "dev-1", "web"), serde_json::json!({"greeting": "hello dev-1"}));
    assert_eq!(config_data(&hub, "stage-1", "web"), serde_json::json!({"greeting": "hello stage-1", "tier": "stage"}));
    assert_eq!(config_data(&hub, "prod-eu", "web"), serde_json::json!({"greeting": "hello prod-eu", "region": "eu"}));
    assert_eq!(config_data(&hub, "prod-us", "web"), serde_json::json!({"greeting": "hello prod-us"}));
    // api targets region=eu only; the app namespace fills in.
    assert_eq!(hub.objects("prod-eu", "api")[0]["metadata"]["namespace"], "api");
    assert!(hub.objects("prod-us", "api").is_empty());
    assert!(hub.objects("stage-1", "api").is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn a_dev_commit_reaches_only_dev_and_merging_promotes_it_to_stage_with_stage_overlays() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let (ca, hub) = start(&repo).await;
    let before = digests(&hub);

    repo.write(
        "apps/web/base/config.yaml",
        &fleet_repo::configmap_yaml("web-config", &[("greeting", "hi ${cluster.name}")]),
    );
    let dev_head = repo.commit("web: new greeting");
    hub.sync("dev", &dev_head).await;
    let after_dev = digests(&hub);
    assert_eq!(changed(&before, &after_dev), ["dev-1"]);
    assert_eq!(config_data(&hub, "dev-1", "web")["greeting"], "hi dev-1");

    // What stage would get from dev, before merging.
    let mut cli = ca.cli(&hub.address, Role::Viewer).await;
    let diff = cli.diff(DiffRequest { from_env: "dev".into(), to_env: "stage".into() }).await.unwrap().into_inner();
    assert_eq!(diff.clusters.len(), 1);
    assert_eq!(diff.clusters[0].cluster, "stage-1");
    assert_eq!(diff.clusters[0].changed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["web-config"]);
    assert!(diff.clusters[0].added.is_empty() && diff.clusters[0].removed.is_empty());

    repo.checkout("stage");
    let stage_head = repo.merge("dev");
    hub.sync("stage", &stage_head).await;
    let after_stage = digests(&hub);
    assert_eq!(changed(&after_dev, &after_stage), ["stage-1"]);
    assert_eq!(config_data(&hub, "stage-1", "web"), serde_json::json!({"greeting": "hi stage-1", "tier": "stage"}));
    assert_eq!(hub.hub.assignment("stage-1").unwrap().revision, stage_head);

    let envs = cli.envs(EnvsRequest {}).await.unwrap().into_inner().environments;
    let summary: Vec<_> = envs.iter().map(|e| (e.name.as_str(), e.branch.as_str(), e.clusters)).collect();
    assert_eq!(summary, [("dev", "dev", 1), ("stage", "stage", 1), ("prod", "main", 2)]);
    assert_eq!(envs[1].commit, stage_head);
    hub.stop().await;
}

#[tokio::test]
async fn changing_a_cluster_label_retargets_apps_and_removing_an_app_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    repo.checkout("main");
    let (_ca, hub) = start(&repo).await;
    assert!(hub.objects("prod-us", "api").is_empty());

    repo.write("clusters/prod-us.yaml", &fleet_repo::cluster_yaml("prod-us", "prod", &[("region", "eu")]));
    let head = repo.commit("prod-us moves to eu");
    hub.sync("main", &head).await;
    // api's ConfigMap, and the Namespace `api` its app.yaml names (spec.createNamespace).
    assert_eq!(hub.objects("prod-us", "api").len(), 2);

    let before = digests(&hub);
    repo.remove("apps/api");
    let head = repo.commit("retire api");
    hub.sync("main", &head).await;
    let prod_apps: Vec<_> = hub.hub.assignment("prod-eu").unwrap().apps.iter().map(|a| a.name.clone()).collect();
    assert_eq!(prod_apps, ["web"]);
    assert_eq!(changed(&before, &digests(&hub)), ["prod-eu", "prod-us"]);
    hub.stop().await;
}

#[tokio::test]
async fn malformed_yaml_in_one_app_leaves_everything_else_and_shows_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    repo.checkout("main");
    let (ca, hub) = start(&repo).await;
    let api_before = hub.objects("prod-eu", "api");

    repo.write("apps/api/base/config.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: api-config\ndata: [");
    repo.write(
        "apps/web/base/config.yaml",
        &fleet_repo::configmap_yaml("web-config", &[("greeting", "still ${cluster.name}")]),
    );
    let head = repo.commit("break api, change web");
    hub.sync("main", &head).await;

    // web moved on everywhere in prod; api kept its last good objects on prod-eu.
    assert_eq!(config_data(&hub, "prod-us", "web")["greeting"], "still prod-us");
    assert_eq!(hub.objects("prod-eu", "api"), api_before);
    let api = hub.hub.assignment("prod-eu").unwrap().apps.iter().find(|a| a.name == "api").cloned().unwrap();
    let error = api.render_error.clone().expect("the render error travels with the app");
    assert!(error.contains("apps/api/base/config.yaml"), "{error}");

    let mut cli = ca.cli(&hub.address, Role::Viewer).await;
    let status = cli.status(StatusRequest { cluster: "prod-eu".into() }).await.unwrap().into_inner();
    let cluster = &status.clusters[0];
    assert!(cluster.errors.iter().any(|e| e.contains("apps/api/base/config.yaml")), "{:?}", cluster.errors);
    let api_status = cluster.apps.iter().find(|a| a.name == "api").unwrap();
    assert!(api_status.render_error.contains("apps/api/base/config.yaml"));
    // prod-us does not run api: no error shown there.
    let status = cli.status(StatusRequest { cluster: "prod-us".into() }).await.unwrap().into_inner();
    assert!(status.clusters[0].errors.is_empty(), "{:?}", status.clusters[0].errors);
    hub.stop().await;
}

#[tokio::test]
async fn an_agent_for_a_cluster_git_does_not_declare_is_told_apart_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let (ca, hub) = start(&repo).await;
    let cert = ca.issue(convoy_shared::identity::Identity::Cluster("edge-9".into()));
    let agent = convoy_e2e::harness::RunningAgent::start(ca.agent_config(&hub.address, Some(&cert), "edge-9"));
    convoy_e2e::harness::wait_connected(&ca, &hub.address, "edge-9").await;

    let mut cli = ca.cli(&hub.address, Role::Viewer).await;
    let status = cli.status(StatusRequest { cluster: "edge-9".into() }).await.unwrap().into_inner();
    let errors = &status.clusters[0].errors;
    assert!(errors.iter().any(|e| e.contains("add clusters/edge-9.yaml on the fleet branch 'main'")), "{errors:?}");
    let declared = cli.status(StatusRequest { cluster: "dev-1".into() }).await.unwrap().into_inner();
    assert!(declared.clusters[0].errors.is_empty(), "{:?}", declared.clusters[0].errors);
    agent.stop().await;
    hub.stop().await;
}

#[tokio::test]
async fn promoting_an_app_that_does_not_render_shows_the_error_and_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let (ca, hub) = start(&repo).await;
    repo.write("apps/web/base/config.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-config\ndata: [");
    let head = repo.commit("break web on dev");
    hub.sync("dev", &head).await;

    let mut cli = ca.cli(&hub.address, Role::Viewer).await;
    let request = DiffRequest { from_env: "dev".into(), to_env: "stage".into() };
    let diff = cli.diff(request).await.unwrap().into_inner();
    let stage = diff.clusters.iter().find(|c| c.cluster == "stage-1").expect("stage-1 in the diff");
    assert!(stage.removed.is_empty(), "web's objects are not promoted away: {stage:?}");
    assert!(stage.errors.iter().any(|e| e.contains("apps/web/base/config.yaml")), "{stage:?}");
    hub.stop().await;
}

#[tokio::test]
async fn a_force_push_is_followed_and_a_deleted_branch_empties_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let original = repo.head();
    let (_ca, hub) = start(&repo).await;
    let first = hub.digest("dev-1");

    repo.write("apps/web/base/config.yaml", &fleet_repo::configmap_yaml("web-config", &[("greeting", "v2")]));
    let v2 = repo.commit("v2");
    hub.sync("dev", &v2).await;
    assert_ne!(hub.digest("dev-1"), first);

    // Rewrite history: dev goes back to the original commit (a force-push upstream).
    repo.git(&["reset", "-q", "--hard", &original]);
    hub.sync("dev", &original).await;
    assert_eq!(hub.digest("dev-1"), first);

    repo.checkout("main");
    repo.git(&["branch", "-D", "dev"]);
    let main = repo.head();
    repo.write("apps/web/base/config.yaml", &fleet_repo::configmap_yaml("web-config", &[("greeting", "prod only")]));
    let main_head = repo.commit("prod change");
    assert_ne!(main, main_head);
    hub.sync("main", &main_head).await;
    assert_eq!(hub.digest("dev-1"), first, "dev-1 keeps its assignment");
    let errors: Vec<String> = hub.hub.view().errors.iter().map(ToString::to_string).collect();
    assert!(
        errors.iter().any(|e| e.contains("branch 'dev'") && e.contains("keep their last assignment")),
        "{errors:?}"
    );
    hub.stop().await;
}

async fn post_webhook(address: &str, headers: &[(&str, String)], body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request = format!(
        "POST /webhook HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_webhook_refuses_bad_signatures_and_fetches_on_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let (_ca, hub) = start(&repo).await;
    let before = scrape_metrics(&hub.http_address).await;
    assert_eq!(before["convoy_hub_clusters"], 4.0);
    let body = r#"{"ref":"refs/heads/dev"}"#;
    let forged = convoy_hub::api::http::webhook::github_signature(b"wrong-secret", body.as_bytes());
    assert_eq!(post_webhook(&hub.http_address, &[("X-Hub-Signature-256", forged)], body).await, 401);
    assert_eq!(post_webhook(&hub.http_address, &[], body).await, 401);
    assert_eq!(post_webhook(&hub.http_address, &[("X-Gitlab-Token", "nope".into())], body).await, 401);

    repo.write("apps/web/base/config.yaml", &fleet_repo::configmap_yaml("web-config", &[("greeting", "webhook")]));
    let head = repo.commit("via webhook");
    let good = convoy_hub::api::http::webhook::github_signature(WEBHOOK_SECRET.as_bytes(), body.as_bytes());
    assert_eq!(post_webhook(&hub.http_address, &[("X-Hub-Signature-256", good)], body).await, 202);
    eventually("the webhook-triggered fetch", || {
        let seen = hub.hub.view().branches.get("dev") == Some(&head);
        async move { seen.then_some(()) }
    })
    .await;
    assert_eq!(config_data(&hub, "dev-1", "web")["greeting"], "webhook");
    let after = scrape_metrics(&hub.http_address).await;
    let moved = |name: &str| after[name] - before[name];
    assert_eq!(moved("convoy_hub_assignments_published_total"), 1.0, "only dev-1 changed");
    assert!(moved("convoy_hub_sync_duration_seconds_count") >= 1.0);
    assert!(moved("convoy_hub_git_fetch_duration_seconds_count") >= 1.0);
    hub.stop().await;
}

#[tokio::test]
async fn agents_get_their_assignment_unchanged_on_reconnect_and_pushes_as_soon_as_published() {
    use convoy_shared::proto::agent_message::Kind as AgentKind;
    use convoy_shared::proto::agent_service_client::AgentServiceClient;
    use convoy_shared::proto::hub_message::Kind as HubKind;
    use convoy_shared::proto::{AgentMessage, Hello};

    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let (ca, hub) = start(&repo).await;
    let cert = ca.issue(convoy_shared::identity::Identity::Cluster("dev-1".into()));
    let address = convoy_shared::tls::HubAddress::parse(&hub.address, None).unwrap();
    let open = |held: String| {
        let (tls, address) = (ca.client_tls(Some(&cert)), address.clone());
        async move {
            let channel = convoy_shared::tls::connect(&address, tls, std::time::Duration::from_secs(5)).await.unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let hello = Hello { held_digest: held, ..Default::default() };
            tx.send(AgentMessage { kind: Some(AgentKind::Hello(hello)) }).await.unwrap();
            let inbound = AgentServiceClient::new(channel)
                .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            (tx, inbound)
        }
    };

    let (_tx, mut fresh) = open(String::new()).await;
    let Some(HubKind::Assignment(first)) = fresh.message().await.unwrap().unwrap().kind else {
        panic!("a fresh agent gets its assignment")
    };
    assert_eq!(first.cluster, "dev-1");
    assert_eq!(first.digest, hub.digest("dev-1"));

    let (_tx2, mut returning) = open(first.digest.clone()).await;
    let Some(HubKind::Unchanged(unchanged)) = returning.message().await.unwrap().unwrap().kind else {
        panic!("a current agent hears Unchanged")
    };
    assert_eq!(unchanged.digest, first.digest);

    repo.write("apps/web/base/config.yaml", &fleet_repo::configmap_yaml("web-config", &[("greeting", "pushed")]));
    let head = repo.commit("push me");
    hub.sync("dev", &head).await;
    let Some(HubKind::Assignment(pushed)) = returning.message().await.unwrap().unwrap().kind else {
        panic!("the new assignment is pushed")
    };
    assert_eq!(pushed.revision, head);
    assert_ne!(pushed.digest, first.digest);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_agent_links_and_assignments_as_they_happen() {
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let (ca, hub) = start(&repo).await;
    let mut cli = ca.cli(&hub.address, Role::Viewer).await;
    let mut events = cli.watch(convoy_shared::proto::WatchRequest {}).await.unwrap().into_inner();

    let agent = convoy_e2e::harness::RunningAgent::start(ca.agent_config(
        &hub.address,
        Some(&ca.issue(convoy_shared::identity::Identity::Cluster("prod-us".into()))),
        "prod-us",
    ));
    let connected = events.message().await.unwrap().unwrap();
    assert_eq!((connected.cluster.as_str(), connected.kind.as_str()), ("prod-us", "connected"));

    repo.write("apps/web/base/config.yaml", &fleet_repo::configmap_yaml("web-config", &[("greeting", "watched")]));
    let head = repo.commit("watch me");
    hub.sync("dev", &head).await;
    let assigned = events.message().await.unwrap().unwrap();
    assert_eq!((assigned.cluster.as_str(), assigned.kind.as_str()), ("dev-1", "assigned"));
    assert!(assigned.detail.contains(&head), "{assigned:?}");

    agent.stop().await;
    let disconnected = events.message().await.unwrap().unwrap();
    assert_eq!((disconnected.cluster.as_str(), disconnected.kind.as_str()), ("prod-us", "disconnected"));
    hub.stop().await;
}
