//! Convoy's shared crate: the generated wire contract, cluster and user identities, the
//! certificate authority, and the TLS plumbing both ends of the agent link use.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod clock;
pub mod codec;
pub mod enrollment;
pub mod identity;
pub mod link_error;
pub mod model;
pub mod pki;
pub mod prometheus;
pub mod telemetry;
pub mod tls;

/// Generated gRPC code for `proto/convoy/v1`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("convoy.v1");
}

/// Serializes a `Health` enum field by name ("Healthy"), for the CLI's JSON and YAML output.
pub fn health_name<S: serde::Serializer>(value: &i32, serializer: S) -> Result<S::Ok, S::Error> {
    let name = proto::Health::try_from(*value).map(|h| h.as_str_name()).unwrap_or("HEALTH_UNKNOWN");
    serializer.serialize_str(name.trim_start_matches("HEALTH_"))
}

/// A reported health as people read it: `Healthy`, `Degraded`.
pub fn health_label(value: i32) -> &'static str {
    match proto::Health::try_from(value).unwrap_or(proto::Health::Unknown) {
        proto::Health::Healthy => "Healthy",
        proto::Health::Progressing => "Progressing",
        proto::Health::Degraded => "Degraded",
        proto::Health::Missing => "Missing",
        proto::Health::Unknown => "Unknown",
    }
}

/// Version string every Convoy binary reports (agent Hello, CLI `--version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Installs rustls' ring crypto provider as the process default. Every `main` calls this first:
/// with another provider in the tree rustls would otherwise panic when it has to pick one.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Cancels `token` on SIGTERM or Ctrl-C, so a binary drains and exits cleanly.
pub async fn cancel_on_signal(token: tokio_util::sync::CancellationToken) {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
    token.cancel();
}

/// The first 8 characters of a commit or digest ("-" for none).
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(if id.is_empty() { "-" } else { id })
}

/// Equality of secrets whose time does not depend on where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
