//! The state stage: what the hub holds in memory and serves. The [`hub::Hub`] every service
//! reads and its one writer, [`hub::Publisher`] (owned by the sync loop): the published
//! [`view`] of the fleet, the [`assignments`] table each agent stream waits on, the live
//! [`connections`] and their reports, the [`registry`] of who may connect, and the [`metrics`].
//!
//! Decisions: when a published assignment counts as changed (and enters history); which
//! clusters the hub knows (declared in Git, connected, or assigned); which newer agent stream
//! replaces an older one; whether a token, certificate or cluster is accepted or revoked.

pub mod access;
pub mod assignments;
pub mod connections;
pub mod hub;
pub mod metrics;
pub mod registry;
pub mod view;
