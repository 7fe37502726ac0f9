//! Logging setup shared by every Convoy binary: `RUST_LOG`-style filters, text or JSON lines on
//! stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber. `filter` is used when `RUST_LOG` is unset.
pub fn init(filter: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Err means a subscriber is already installed (tests running several mains); keep it.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
