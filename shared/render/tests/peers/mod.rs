//! The peers the render conformance suites compare with, shared by them: where the workspace
//! and its venv are, and Helm's own engine (`tests/helm/oracle.py`, on PyPI's helm-python-sdk)
//! asked for many renders in one process.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn workspace() -> PathBuf {
    manifest_dir().join("../..").canonicalize().expect("workspace")
}

/// The venv's python (`CONVOY_PYTHON`, set by e2e/peers.sh), else this workspace's e2e/.venv.
pub fn python() -> PathBuf {
    std::env::var_os("CONVOY_PYTHON").map(PathBuf::from).unwrap_or_else(|| workspace().join("e2e/.venv/bin/python"))
}

/// Helm's engine's answer to each request (`{"chart", "values", "name", "namespace"}`), in
/// order: `{"manifest": …}` or `{"error": …}` / `{"install_error": …}`.
pub fn helm_oracle(requests: &[Value]) -> Vec<Value> {
    let mut child = Command::new(python())
        .arg(manifest_dir().join("tests/helm/oracle.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child.stdin.take().unwrap().write_all(serde_json::to_string(requests).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().expect("oracle");
    assert!(out.status.success(), "oracle.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("oracle JSON")
}
