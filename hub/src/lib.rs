//! Convoy hub: resolves one Git repository into per-cluster assignments and serves agents and the CLI.
#![forbid(unsafe_code)]

pub mod agent_service;
pub mod allocator;
pub mod assignments;
pub mod auth;
pub mod connections;
pub mod fleet_service;
pub mod git;
pub mod leadership;
pub mod metrics;
pub mod planner;
pub mod registration;
pub mod registry;
pub mod replication;
pub mod rollout;
pub mod server;
pub mod source;
pub mod state;
pub mod store;
pub mod store_pg;
pub mod testing;
pub mod view;
pub mod webhook;

pub use convoy_render::fleet;
