//! A real Prometheus (Debian's, installed by the test script) scraping a test exporter whose
//! value the caller sets, for the metric gates' tests and benchmark.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::harness::Process;

/// The Prometheus binary: CONVOY_PROMETHEUS, else Debian's.
pub fn binary() -> Option<PathBuf> {
    let (path, required) = match std::env::var("CONVOY_PROMETHEUS") {
        Ok(path) => (PathBuf::from(path), true),
        Err(_) => (PathBuf::from("/usr/bin/prometheus"), std::env::var("CONVOY_REALKUBE").is_ok()),
    };
    if path.exists() {
        return Some(path);
    }
    assert!(!required, "{} is missing: `apt-get install prometheus` (e2e/test.sh does)", path.display());
    eprintln!("skipped: no prometheus at {} (`apt-get install prometheus`)", path.display());
    None
}

/// Serves `test_error_ratio VALUE` on /metrics; returns its address.
pub async fn exporter(ratio: Arc<Mutex<f64>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let value = *ratio.lock().unwrap();
            async move { format!("# TYPE test_error_ratio gauge\ntest_error_ratio {value}\n") }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// Starts Prometheus scraping `target` every second; returns it and its address.
pub fn start(binary: &Path, dir: &Path, target: &str, port: u16) -> Process {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: test\n  static_configs:\n  - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let mut command = Command::new(binary);
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let process = Process::spawn(command);
    process.wait_for_line("Server is ready to receive web requests");
    process
}
