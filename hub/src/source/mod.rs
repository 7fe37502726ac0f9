//! The source stage: fetch → snapshot → fleet model. A bare mirror of the fleet repository
//! ([`git`]) and the source loop ([`sync`]) that fetches it, reads the fleet model of each
//! environment's branch, and drives the later stages: plan, release, publish.
//!
//! Decisions: when to fetch (interval, webhook, `convoy refresh`, backoff after failures); which
//! branch holds the fleet model; which commit each environment is at; what a failed fetch or an
//! unreadable file leaves in force (the last good state).

pub mod git;
pub mod sync;
