//! kubesim: a multi-cluster Kubernetes API simulator (in progress).
