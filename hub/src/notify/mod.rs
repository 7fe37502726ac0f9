//! Feedback where people work: notices to chat and webhooks, and a commit status per
//! environment on the forge. Beside the API stage, after state: it reads the published view
//! and the clusters' links, never the sync loop's inner state, and keeps its outbox in the store
//! (so a restart or a failover loses nothing).
//!
//! [`observer`] decides what is worth telling; [`deliver`] builds and sends the requests;
//! [`outbox`] runs the tasks between them.
//!
//! Decisions: see each module.

pub mod deliver;
pub mod observer;
pub mod outbox;
