//! The hub's plain-HTTP listener.

pub mod webhook;
