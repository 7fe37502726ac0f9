//! Convoy hub: resolves one Git repository into per-cluster assignments and serves agents and the CLI.
//!
//! The hub is a pipeline of stages, one folder each, data flowing one way (see `ARCHITECTURE.md`):
//! [`source`] (fetch → snapshot → fleet model) → [`plan`] (render per cluster → assignments) →
//! [`release`] (what each cluster runs now) → [`state`] (the published view: one writer, many
//! readers) → [`api`] (gRPC services and HTTP routes); [`store`] keeps what is not in Git, beside
//! them. [`replication`] runs the source loop on the replica that leads.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod api;
pub mod plan;
pub mod release;
pub mod replication;
pub mod source;
pub mod state;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use convoy_render::fleet;
