//! Telemetry of the real binaries. Tracing across processes: a `convoy-hub` and a `convoy-agent`
//! process export spans over OTLP to a receiver in this test, and a commit's trace runs from the
//! hub's fetch through render, publish and push to the agent's apply of that commit; a collector
//! behind TLS is reached with `--otlp-ca`. Logs: `--log-json` writes one JSON object a line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use convoy_e2e::fleet_repo::{create_standard_namespaces, standard_fleet};
use convoy_e2e::harness::{HubProcess, Process, TestCa, eventually, spawn_agent, workspace_binary};
use kubesim::SimFleet;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use tokio_stream::wrappers::TcpListenerStream;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

/// An OTLP/gRPC trace receiver keeping every span it is sent.
#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

/// String and integer attributes, as text.
fn strings(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(AnyValue::StringValue(s)) => Some((kv.key.clone(), s.clone())),
            Some(AnyValue::IntValue(i)) => Some((kv.key.clone(), i.to_string())),
            _ => None,
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans.resource.map(|r| strings(&r.attributes)).unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes: strings(&span.attributes),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Serves OTLP on a free port, over TLS with `identity` (certificate and key PEM) when given;
    /// returns the endpoint to export to.
    async fn start(&self, identity: Option<(String, String)>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut server = tonic::transport::Server::builder();
        let endpoint = match identity {
            Some((cert, key)) => {
                let tls =
                    tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert, key));
                server = server.tls_config(tls).unwrap();
                format!("https://localhost:{port}")
            }
            None => format!("http://127.0.0.1:{port}"),
        };
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(server.add_service(service).serve_with_incoming(TcpListenerStream::new(listener)));
        endpoint
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

/// The spans of the trace whose agent apply applied `revision` without errors, once the hub's
/// part of it has arrived too.
fn commit_trace(spans: &[Received], revision: &str) -> Option<Vec<Received>> {
    let apply = spans.iter().find(|s| {
        s.service == "convoy-agent"
            && s.name == "apply"
            && s.attributes.get("revision").map(String::as_str) == Some(revision)
            && s.attributes.get("errors").map(String::as_str) == Some("0")
    })?;
    let trace: Vec<Received> = spans.iter().filter(|s| s.trace_id == apply.trace_id).cloned().collect();
    let hub_names: Vec<&str> = trace.iter().filter(|s| s.service == "convoy-hub").map(|s| s.name.as_str()).collect();
    ["sync", "fetch", "render", "publish", "push"].iter().all(|n| hub_names.contains(n)).then_some(trace)
}

fn one<'a>(trace: &'a [Received], service: &str, name: &str) -> &'a Received {
    let found: Vec<&Received> = trace.iter().filter(|s| s.service == service && s.name == name).collect();
    assert_eq!(found.len(), 1, "one {service} span '{name}' in the trace: {trace:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_commit_from_the_hub_fetch_to_the_agent_apply() {
    let receiver = Receiver::default();
    let endpoint = receiver.start(None).await;

    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let ca = TestCa::new();
    let hub = HubProcess::start_with(
        &ca.certs.0,
        "127.0.0.1:0",
        "info",
        &["--repo", &repo.url(), "--poll-seconds", "1", "--otlp-endpoint", &endpoint],
    );

    let kube = SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = kube.cluster("dev-1").unwrap();
    create_standard_namespaces(cluster);
    let cache = tempfile::tempdir().unwrap();
    let agent = spawn_agent(&ca, &hub.address, cluster, cache.path(), &["--otlp-endpoint", &endpoint]);
    agent.wait_for_line("connected to the hub");

    repo.write(
        "apps/web/base/config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  greeting: traced\n",
    );
    let revision = repo.commit("web: a traced greeting");
    let trace = eventually("the commit's trace from hub and agent", || {
        let spans = receiver.spans();
        let revision = revision.clone();
        async move { commit_trace(&spans, &revision) }
    })
    .await;
    assert_eq!(
        cluster.get("v1", "ConfigMap", Some("web"), "web-config").unwrap()["data"]["greeting"],
        "traced",
        "the traced apply applied the commit"
    );

    // The shape: sync ⟶ fetch, render ⟶ push (hub) ⟶ apply (agent); publish under sync.
    let sync = one(&trace, "convoy-hub", "sync");
    assert!(sync.parent_span_id.is_empty(), "sync is the root: {sync:?}");
    for child in ["fetch", "render", "publish"] {
        assert_eq!(one(&trace, "convoy-hub", child).parent_span_id, sync.span_id, "{child} under sync");
    }
    let push = one(&trace, "convoy-hub", "push");
    assert_eq!(push.parent_span_id, one(&trace, "convoy-hub", "render").span_id, "push continues the render");
    assert_eq!(push.attributes.get("cluster").map(String::as_str), Some("dev-1"));
    let applies: Vec<&Received> =
        trace.iter().filter(|s| s.name == "apply" && s.parent_span_id == push.span_id).collect();
    assert!(!applies.is_empty(), "the agent's apply is a child of the hub's push: {trace:#?}");
    // What a trace viewer shows: how much was published and applied, and whether it went well.
    assert_eq!(one(&trace, "convoy-hub", "publish").attributes.get("published").map(String::as_str), Some("1"));
    let clean = applies.iter().find(|a| a.attributes.get("errors").map(String::as_str) == Some("0"));
    let clean = clean.unwrap_or_else(|| panic!("a pass without errors: {applies:#?}"));
    assert!(clean.attributes.get("objects").and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n >= 2), "{clean:?}");
    drop(agent);
    drop(hub);
}

#[test]
fn json_logs_are_one_object_a_line_with_the_fields_as_keys() {
    let ca = TestCa::new();
    let data = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(workspace_binary("convoy-hub"));
    command
        .args(["--log-json", "serve", "--listen", "127.0.0.1:0", "--http-listen", "off", "--certs"])
        .arg(&ca.certs.0)
        .arg("--data")
        .arg(data.path())
        .env("RUST_LOG", "info");
    let hub = Process::spawn(command);
    let line = hub.wait_for_line("hub listening");
    let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(event["level"], "INFO", "{event}");
    assert_eq!(event["fields"]["message"], "hub listening", "{event}");
    assert!(event["fields"]["address"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{event}");
    for line in hub.log() {
        assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok(), "not JSON: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_tls_collector_whose_certificate_chains_to_the_given_ca() {
    let ca = TestCa::new();
    let receiver = Receiver::default();
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap();
    let endpoint = receiver.start(Some((read(ca.certs.hub_cert()), read(ca.certs.hub_key())))).await;
    assert!(endpoint.starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    let otlp_ca = ca.certs.ca_cert();
    let args = ["--repo", &repo.url(), "--otlp-endpoint", &endpoint, "--otlp-ca", otlp_ca.to_str().unwrap()];
    let _hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &args);
    eventually("the hub's first sync at the TLS collector", || {
        let synced = receiver.spans().iter().any(|s| s.service == "convoy-hub" && s.name == "sync");
        async move { synced.then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_collector_whose_own_self_signed_certificate_is_the_given_ca() {
    // As `openssl req -x509` makes it: self-signed, marked CA:TRUE.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let receiver = Receiver::default();
    let endpoint = receiver.start(Some((cert.pem(), key.serialize_pem()))).await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("collector.pem");
    std::fs::write(&own, cert.pem()).unwrap();
    let repo = standard_fleet(&dir.path().join("fleet"));
    let args = ["--repo", &repo.url(), "--otlp-endpoint", &endpoint, "--otlp-ca", own.to_str().unwrap()];
    let _hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &args);
    eventually("the hub's first sync at the self-signed collector", || {
        let synced = receiver.spans().iter().any(|s| s.service == "convoy-hub" && s.name == "sync");
        async move { synced.then_some(()) }
    })
    .await;
}
