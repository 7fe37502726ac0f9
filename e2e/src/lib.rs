//! Convoy end-to-end support: kubesim, the fleet harness, scenarios and benchmarks.
#![forbid(unsafe_code)]

pub mod bench;
pub mod browser;
pub mod chart_sources;
pub mod fleet_repo;
pub mod fleetsim;
pub mod git_http;
pub mod harness;
pub mod prometheus;
pub mod sandbox;
