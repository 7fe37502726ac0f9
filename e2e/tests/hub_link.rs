//! The agent link over mutual TLS against the real `convoy-hub` process: who gets in, who is
//! refused and how each side says so, and reconnection after a hub crash.

use convoy_agent::link::LinkState;
use convoy_e2e::harness::{HubProcess, RunningAgent, TestCa, eventually};
use convoy_shared::identity::{Identity, Role};
use convoy_shared::proto::ListClustersRequest;
use convoy_shared::proto::agent_service_client::AgentServiceClient;
use convoy_shared::proto::fleet_service_client::FleetServiceClient;

fn cluster(name: &str) -> Identity {
    Identity::Cluster(name.into())
}

async fn connected_clusters(ca: &TestCa, hub: &str) -> Vec<String> {
    let mut cli = ca.cli(hub, Role::Viewer).await;
    let clusters = cli.list_clusters(ListClustersRequest {}).await.expect("ListClusters").into_inner().clusters;
    clusters.into_iter().filter(|c| c.connected).map(|c| c.name).collect()
}

/// Runs an agent with `config` until its link reports a failure, and returns the error it shows.
async fn agent_error(config: convoy_agent::link::LinkConfig) -> String {
    let agent = RunningAgent::start(config);
    let mut state = agent.handle.state.clone();
    let error = eventually("the agent to report a failed connection", || {
        let current = state.borrow_and_update().clone();
        async move {
            match current {
                LinkState::Disconnected { error, .. } => Some(error),
                _ => None,
            }
        }
    })
    .await;
    agent.stop().await;
    error
}

async fn refusals_logged(hub: &HubProcess, needle: &str) -> Vec<String> {
    eventually(&format!("a hub log line with '{needle}'"), || {
        let lines = hub.log_lines(needle);
        async move { (!lines.is_empty()).then_some(lines) }
    })
    .await
}

#[tokio::test]
async fn an_agent_appears_under_the_name_in_its_certificate_not_its_hello() {
    let ca = TestCa::new();
    let hub = HubProcess::start(&ca.certs.0, "127.0.0.1:0");
    let cert = ca.issue(cluster("eu-1"));
    let agent = RunningAgent::start(ca.agent_config(&hub.address, Some(&cert), "prod-us"));
    let names = eventually("eu-1 to be listed", || async {
        let names = connected_clusters(&ca, &hub.address).await;
        (!names.is_empty()).then_some(names)
    })
    .await;
    assert_eq!(names, ["eu-1"]);
    let mut state = agent.handle.state.clone();
    eventually("the agent to see the hub's answer", || {
        let connected = *state.borrow_and_update() == LinkState::Connected;
        async move { connected.then_some(()) }
    })
    .await;
    let lines = refusals_logged(&hub, "agent claims another cluster name").await;
    assert!(lines[0].contains("prod-us") && lines[0].contains("eu-1"), "{lines:?}");
    agent.stop().await;
    eventually("eu-1 to show as disconnected", || async {
        connected_clusters(&ca, &hub.address).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_agent_without_a_client_certificate_is_refused() {
    let ca = TestCa::new();
    let hub = HubProcess::start(&ca.certs.0, "127.0.0.1:0");
    let error = agent_error(ca.agent_config(&hub.address, None, "eu-1")).await;
    assert!(error.contains("no client certificate"), "{error}");
    assert!(error.contains("convoy-hub certs issue --cluster"), "{error}");
    let lines = refusals_logged(&hub, "refused call").await;
    assert!(lines[0].contains("no client certificate") && lines[0].contains("AgentService"), "{lines:?}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let ca = TestCa::new();
    let foreign = TestCa::new();
    let hub = HubProcess::start(&ca.certs.0, "127.0.0.1:0");
    // Trusts the right hub CA, but presents a certificate the hub's CA never issued.
    let cert = foreign.issue(cluster("eu-1"));
    let error = agent_error(ca.agent_config(&hub.address, Some(&cert), "eu-1")).await;
    assert!(error.contains("another CA"), "{error}");
    let lines = refusals_logged(&hub, "refused TLS connection").await;
    assert!(lines[0].contains("another CA"), "{lines:?}");
    assert!(connected_clusters(&ca, &hub.address).await.is_empty());
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let ca = TestCa::new();
    let hub = HubProcess::start(&ca.certs.0, "127.0.0.1:0");
    let cert = ca.issue_expired(cluster("eu-1"));
    let error = agent_error(ca.agent_config(&hub.address, Some(&cert), "eu-1")).await;
    assert!(error.contains("expired"), "{error}");
    let lines = refusals_logged(&hub, "refused TLS connection").await;
    assert!(lines[0].contains("expired"), "{lines:?}");
}

#[tokio::test]
async fn a_viewer_cli_certificate_cannot_pose_as_an_agent() {
    let ca = TestCa::new();
    let hub = HubProcess::start(&ca.certs.0, "127.0.0.1:0");
    let cert = ca.issue(Identity::User { name: "ana".into(), role: Role::Viewer });
    let error = agent_error(ca.agent_config(&hub.address, Some(&cert), "ana")).await;
    assert!(error.contains("user 'ana' (viewer)") && error.contains("cluster certificate"), "{error}");
    let lines = refusals_logged(&hub, "refused call").await;
    assert!(lines[0].contains("AgentService"), "{lines:?}");
    assert!(connected_clusters(&ca, &hub.address).await.is_empty());
}

#[tokio::test]
async fn an_agent_certificate_cannot_call_the_fleet_api() {
    let ca = TestCa::new();
    let hub = HubProcess::start(&ca.certs.0, "127.0.0.1:0");
    let cert = ca.issue(cluster("eu-1"));
    let mut client = ca.fleet_client(&hub.address, &cert).await.expect("TLS itself succeeds");
    let status = client.list_clusters(ListClustersRequest {}).await.expect_err("must be refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let error = convoy_shared::link_error::explain(&status);
    assert!(error.contains("cluster 'eu-1'") && error.contains("CLI certificate"), "{error}");
    let lines = refusals_logged(&hub, "refused call").await;
    assert!(lines[0].contains("FleetService"), "{lines:?}");
}

#[tokio::test]
async fn plaintext_grpc_to_the_tls_port_is_refused() {
    let ca = TestCa::new();
    let hub = HubProcess::start(&ca.certs.0, "127.0.0.1:0");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", hub.address)).expect("endpoint").connect_lazy();
    let mut fleet = FleetServiceClient::new(channel.clone());
    let status = fleet.list_clusters(ListClustersRequest {}).await.expect_err("plaintext must fail");
    assert_ne!(status.code(), tonic::Code::Ok);
    let mut agent = AgentServiceClient::new(channel);
    assert!(agent.connect(tokio_stream::empty()).await.is_err());
    let lines = refusals_logged(&hub, "refused TLS connection").await;
    assert!(lines[0].contains("not a TLS client"), "{lines:?}");
}

#[tokio::test]
async fn agents_reconnect_by_themselves_after_the_hub_is_killed_and_restarted() {
    let ca = TestCa::new();
    let hub = HubProcess::start(&ca.certs.0, "127.0.0.1:0");
    let address = hub.address.clone();
    let names = ["a-1", "b-2", "c-3"];
    let agents: Vec<_> =
        names.iter().map(|n| RunningAgent::start(ca.agent_config(&address, Some(&ca.issue(cluster(n))), n))).collect();
    eventually("3 agents connected", || async { (connected_clusters(&ca, &address).await.len() == 3).then_some(()) })
        .await;

    hub.kill();
    for agent in &agents {
        let mut state = agent.handle.state.clone();
        eventually("each agent to notice the hub is gone", || {
            let down = matches!(*state.borrow_and_update(), LinkState::Disconnected { .. } | LinkState::Connecting);
            async move { down.then_some(()) }
        })
        .await;
    }

    let restarted = HubProcess::start(&ca.certs.0, &address);
    assert_eq!(restarted.address, address);
    let names_after = eventually("all 3 agents back", || async {
        let names = connected_clusters(&ca, &address).await;
        (names.len() == 3).then_some(names)
    })
    .await;
    assert_eq!(names_after, names);
    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test]
async fn no_key_material_reaches_the_logs_at_trace_level() {
    let ca = TestCa::new();
    let hub = HubProcess::start_logging(&ca.certs.0, "127.0.0.1:0", "trace");
    let cert = ca.issue(cluster("eu-1"));
    let (cert_path, key_path) = ca.certs.write_leaf(&cluster("eu-1"), &cert).expect("write agent cert");
    let mut command = std::process::Command::new(convoy_e2e::harness::workspace_binary("convoy-agent"));
    command
        .args(["--hub", &hub.address, "--ca"])
        .arg(ca.certs.ca_cert())
        .arg("--cert")
        .arg(&cert_path)
        .arg("--key")
        .arg(&key_path)
        .env("RUST_LOG", "trace");
    let agent = convoy_e2e::harness::Process::spawn(command);
    agent.wait_for_line("connected to the hub");
    // The CLI and a refused caller add their share of handshakes to the hub's log.
    connected_clusters(&ca, &hub.address).await;
    let _ = agent_error(ca.agent_config(&hub.address, Some(&ca.issue_expired(cluster("old"))), "old")).await;
    refusals_logged(&hub, "refused TLS connection").await;

    let keys = [
        std::fs::read_to_string(ca.certs.ca_key()).expect("ca key"),
        std::fs::read_to_string(ca.certs.hub_key()).expect("hub key"),
        cert.key_pem.clone(),
    ];
    // Every base64 line of every private key, and the PEM markers themselves.
    let secrets: Vec<&str> = keys
        .iter()
        .flat_map(|k| k.lines())
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .chain(["PRIVATE KEY"])
        .collect();
    let logs: Vec<String> = hub.process.log().into_iter().chain(agent.log()).collect();
    assert!(logs.len() > 20, "trace logging produced too little to judge: {logs:?}");
    for line in &logs {
        for secret in &secrets {
            assert!(!line.contains(secret), "key material in a log line: {line}");
        }
    }
}
