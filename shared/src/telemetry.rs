//! Logging and tracing setup shared by every Convoy binary: `RUST_LOG`-style filters, text or
//! JSON lines on stderr, and optionally every span exported over OTLP/gRPC.
//!
//! One trace follows a commit across processes: the hub's sync span (fetch → render → publish)
//! travels in each `Assignment` as W3C trace context ([`inject`]), the hub's push and the agent's
//! apply continue it ([`continue_trace`]).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tonic::transport::ClientTlsConfig;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// What is exported over OTLP: Convoy's own spans (sync, fetch, render, publish, push, apply,
/// agent streams) and their events, whatever the log filter says.
const EXPORTED_SPANS: &str = "warn,convoy_hub=info,convoy_agent=info,convoy_shared=info";

/// Spans waiting for export before new ones are dropped.
const SPAN_QUEUE: usize = 65_536;

/// How a binary logs and traces.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// Filter used when `RUST_LOG` is unset.
    pub filter: String,
    /// JSON lines instead of text.
    pub json: bool,
    /// OTLP/gRPC collector (`http://HOST:4317`, or `https://` for TLS); spans are exported only
    /// when set.
    pub otlp_endpoint: Option<String>,
    /// CA certificate (PEM file) the `https://` collector's certificate must chain to; default:
    /// the system's roots.
    pub otlp_ca: Option<PathBuf>,
    /// `service.name` of the exported spans.
    pub service: &'static str,
}

/// Keeps the exporter alive; dropping it flushes the spans not yet sent.
#[must_use = "dropping the guard stops exporting spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// The OTLP exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "--otlp-endpoint '{0}' must be an http:// or https:// address of an OTLP/gRPC collector \
         (e.g. http://otel-collector:4317)"
    )]
    Endpoint(String),
    #[error("cannot read the collector's CA certificate {path}: {reason}")]
    CollectorCa { path: PathBuf, reason: String },
    #[error("cannot set up the OTLP exporter for '{endpoint}': {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// Installs the global tracing subscriber. With an OTLP endpoint this must run inside a Tokio
/// runtime, which must outlive the returned guard (the gRPC exporter runs on it).
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let provider = config.otlp_endpoint.as_deref().map(|endpoint| provider(endpoint, config)).transpose()?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = if config.json {
        tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        let ansi = std::io::stderr().is_terminal();
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).boxed()
    };
    // Spans are exported by their own filter: a quiet log level must not cut a trace short.
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer().with_tracer(p.tracer("convoy")).with_filter(EnvFilter::new(EXPORTED_SPANS))
    });
    // Err means a subscriber is already installed (tests running several mains); keep it.
    let _ = tracing_subscriber::registry().with(logs.with_filter(filter)).with(spans).try_init();
    Ok(Telemetry { provider })
}

fn provider(endpoint: &str, config: &TelemetryConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint);
    if endpoint.starts_with("https://") {
        builder = match config.otlp_ca.as_deref() {
            None => builder.with_tls_config(ClientTlsConfig::new().with_native_roots()),
            Some(ca) => builder.with_channel(collector_channel(endpoint, ca)?).with_timeout(EXPORT_TIMEOUT),
        };
    } else if !endpoint.starts_with("http://") {
        return Err(TelemetryError::Endpoint(endpoint.to_string()));
    }
    let exporter = builder
        .build()
        .map_err(|e| TelemetryError::Exporter { endpoint: endpoint.to_string(), reason: e.to_string() })?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(config.service).build();
    // A commit reaching 10,000 clusters makes 10,000 push spans at once; the SDK's default queue
    // (2,048) would drop most of them. OTEL_BSP_MAX_QUEUE_SIZE still decides when set.
    let mut batch = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
        batch = batch.with_max_queue_size(SPAN_QUEUE);
    }
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch.build()).build();
    Ok(SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build())
}

/// A binary's Tokio runtime with telemetry installed on it. Dropping it flushes the spans first,
/// while the runtime still runs the exporter.
pub struct Instrumented {
    // Declaration order is drop order.
    _telemetry: Telemetry,
    runtime: tokio::runtime::Runtime,
}

impl Instrumented {
    /// Starts a multi-threaded runtime and installs telemetry on it. On failure prints
    /// `SERVICE: reason` and returns the exit code to leave with (64 for a bad endpoint).
    pub fn start(config: &TelemetryConfig) -> Result<Self, ExitCode> {
        Self::start_on(config, tokio::runtime::Builder::new_multi_thread())
    }

    /// As [`Instrumented::start`], on the runtime `builder` makes (with every driver enabled).
    pub fn start_on(config: &TelemetryConfig, mut builder: tokio::runtime::Builder) -> Result<Self, ExitCode> {
        let runtime = builder.enable_all().build().map_err(|e| {
            eprintln!("{}: cannot start the runtime: {e}", config.service);
            ExitCode::FAILURE
        })?;
        let telemetry = runtime.block_on(async { init(config) }).map_err(|e| {
            eprintln!("{}: {e}", config.service);
            ExitCode::from(64)
        })?;
        Ok(Instrumented { _telemetry: telemetry, runtime })
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// Runs `main` to completion, then flushes the spans from inside the runtime, which goes on
    /// running the exporter meanwhile (a current-thread runtime runs nothing once its
    /// `block_on` returns, so dropping it afterwards would leave the flush waiting).
    pub fn run<F: std::future::Future>(self, main: F) -> F::Output {
        let Instrumented { _telemetry: telemetry, runtime } = self;
        runtime.block_on(async move {
            let output = main.await;
            // A flush blocks its thread until the exporter is done.
            let _ = tokio::task::spawn_blocking(move || drop(telemetry)).await;
            output
        })
    }
}

/// How long one export may take (the exporter's default), on the channel too.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A channel to the `https://` collector at `endpoint` whose certificate chains to the
/// certificates in `ca`, or is one of them (a self-signed collector certificate, as
/// [`crate::tls::client_config_trusting`] accepts for Git and chart servers too). Our own TLS
/// connector dials it, so the same verifier serves every CA a user gives.
fn collector_channel(endpoint: &str, ca: &Path) -> Result<tonic::transport::Channel, TelemetryError> {
    let unreadable = |reason: String| TelemetryError::CollectorCa { path: ca.to_path_buf(), reason };
    let pem = std::fs::read_to_string(ca).map_err(|e| unreadable(e.to_string()))?;
    let anchors = crate::tls::parse_certs(&pem, &ca.display().to_string()).map_err(|e| unreadable(e.to_string()))?;
    let mut tls = crate::tls::client_config_trusting(anchors).map_err(|e| unreadable(e.to_string()))?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let bad = |reason: String| TelemetryError::Exporter { endpoint: endpoint.to_string(), reason };
    let uri: http::Uri = endpoint.parse().map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
    let host =
        uri.host().ok_or_else(|| bad("no host".into()))?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(443);
    let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| bad(e.to_string()))?;
    // The URI tonic sees is plain: the connector below does the TLS.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
        .map_err(|e| bad(e.to_string()))?
        .timeout(EXPORT_TIMEOUT)
        .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let (connector, name, address) = (connector.clone(), name.clone(), (host.clone(), port));
            async move {
                let tcp = tokio::net::TcpStream::connect(address).await?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }));
    Ok(channel)
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("some spans were not exported: {e}");
        }
    }
}

/// `span`'s trace context as W3C `traceparent`/`tracestate` entries; empty when spans are not
/// exported.
pub fn inject(span: &tracing::Span) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier
}

/// Makes `span` a child of the trace in `carrier` (from [`inject`], possibly in another process).
/// An empty or malformed carrier leaves `span` where it is.
pub fn continue_trace(span: &tracing::Span, carrier: &HashMap<String, String>) {
    if carrier.is_empty() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(carrier);
    // Err: spans are not exported (no OpenTelemetry layer), or `span` was already entered.
    if let Err(e) = span.set_parent(parent) {
        tracing::trace!(error = %e, "span not joined to the incoming trace");
    }
}
