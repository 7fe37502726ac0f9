//! The api stage: the hub's edges. One TLS accept loop ([`tls`], admitting handshakes by
//! [`admission`]) feeds the gRPC endpoint ([`server`]) with its services — agent
//! streams ([`agent_service`]), the CLI's fleet API ([`fleet_service`]), registration
//! ([`registration`]) — behind one authorization point ([`auth`]), the plain-HTTP routes
//! ([`http`]) and the web dashboard for signed-in browsers ([`dashboard`]). They read the state stage; people's rollout actions go to the sync loop.
//!
//! Decisions: who may call what; which TLS handshakes are refused or shed; what each answer holds.

pub mod admission;
pub mod agent_service;
pub mod auth;
pub mod dashboard;
pub mod fleet_service;
pub mod http;
pub mod notifications;
pub mod oidc;
pub mod registration;
pub mod server;
pub mod tls;
