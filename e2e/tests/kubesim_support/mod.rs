//! Helpers shared by the kubesim test binaries: locating the real kubectl and running it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub use convoy_e2e::harness::kubectl_path;

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

/// Writes a manifest next to the kubeconfig and returns its path.
pub fn manifest(kubeconfig: &Path, file: &str, text: &str) -> PathBuf {
    let p = kubeconfig.parent().expect("kubeconfig dir").join(file);
    std::fs::write(&p, text).expect("write manifest");
    p
}

/// The multi-document web app used across scenarios.
pub fn web_app(replicas: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: web
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: web
  labels: {{app: web}}
data:
  a: "1"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: web
  labels: {{app: web, tier: front}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: web
  labels: {{app: web}}
spec:
  selector: {{app: web}}
  ports:
  - port: 80
"#
    )
}

/// A namespaced CRD `widgets.example.com` with a status subresource.
pub const WIDGET_CRD: &str = include_str!("widget_crd.yaml");
