//! Convoy hub: resolves one Git repository into per-cluster assignments and serves agents and the CLI.
#![forbid(unsafe_code)]

pub mod render;
