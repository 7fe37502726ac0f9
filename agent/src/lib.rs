//! Convoy agent: dials out to the hub and reconciles its cluster to its assignment.
#![forbid(unsafe_code)]

pub mod link;
