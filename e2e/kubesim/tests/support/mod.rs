//! Manifests shared by the kubesim test binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub use kubesim::kubectl::{kubectl, kubectl_ok};

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
