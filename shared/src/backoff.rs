//! The one backoff every retrying loop of Convoy uses: capped exponential, doubling from
//! `initial` up to `max`, with or without jitter.
//!
//! Decisions: how long to wait before the next attempt after N failures.

use std::time::Duration;

use rand::Rng as _;

/// Capped exponential backoff: after `failures` failures the ceiling is
/// `initial × 2^(failures − 1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// The agent link's: 0.5 s doubling up to 30 s.
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The wait after `failures` failures (1 = the first), without jitter: for a single loop
    /// whose timing others (and tests) can rely on.
    pub fn ceiling(&self, failures: u32) -> Duration {
        self.initial.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(self.max)
    }

    /// The wait after `failures` failures drawn from [ceiling/2, ceiling]: for many peers
    /// retrying the same server (agents after a hub restart), so they do not move in lockstep.
    pub fn delay(&self, failures: u32) -> Duration {
        let cap = self.ceiling(failures);
        let half = cap / 2;
        half + rand::rng().random_range(Duration::ZERO..=cap - half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_from_initial_and_stays_capped() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<u128> = (0..7).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn a_jittered_delay_stays_between_half_and_the_ceiling() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..50 {
            for failures in [1, 3, 5, 40] {
                let d = b.delay(failures);
                assert!(d >= b.ceiling(failures) / 2 && d <= b.ceiling(failures), "{failures}: {d:?}");
            }
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| b.delay(5)).collect();
        assert!(spread.len() > 1, "jitter must vary the delay");
    }
}
