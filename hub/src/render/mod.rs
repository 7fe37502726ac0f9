//! Kustomize-compatible render engine (in progress).
