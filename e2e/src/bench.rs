//! What the `bench_*` programs share: latency summaries and the kubectl peer.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p` quantile (0.0–1.0) of samples sorted ascending: the nearest-rank sample.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Median and p99 of `samples` (sorted in place).
pub fn median_p99(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    (percentile(samples, 0.5), percentile(samples, 0.99))
}

/// `kubectl apply --server-side -f FILE` as field manager `kubectl-peer`, the peer a benchmark
/// measures Convoy against. Panics when kubectl fails.
pub fn kubectl_apply(kubeconfig: &Path, file: &Path) {
    let out = Command::new(kubesim::kubectl::kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "--server-side", "--field-manager=kubectl-peer", "-f"])
        .arg(file)
        .env("KUBECACHEDIR", kubeconfig.with_extension("cache"))
        .output()
        .expect("kubectl runs");
    assert!(out.status.success(), "kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
}
