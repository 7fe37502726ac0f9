//! Wall-clock helpers every Convoy binary shares: Unix time in the units the wire contract uses.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it), as reports and history carry.
pub fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// Whole seconds since the Unix epoch (0 if the clock is before it), as certificate times use.
pub fn unix_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

/// `unix_ms` as an RFC 3339 UTC time to the second, e.g. `2026-12-07T08:00:00Z`.
pub fn rfc3339(unix_ms: i64) -> String {
    let at =
        time::OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| format!("{unix_ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_agree() {
        let (ms, s) = (unix_ms(), unix_secs());
        assert!(ms > 1_600_000_000_000, "{ms} is not a current time");
        assert!((ms / 1000 - s).abs() <= 1, "{ms} ms vs {s} s");
    }
}
