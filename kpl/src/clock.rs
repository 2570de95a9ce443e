//! Instants plus durations that never overflow: every setting may be as large as
//! `Duration::MAX` ("never"), which `Instant + Duration` would panic on.

use std::time::{Duration, Instant};

/// The longest delay the producer ever waits for: about a hundred years, i.e. never in practice.
/// Larger settings are treated as this.
pub(crate) const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `at + by`, with `by` capped at [`NEVER`].
pub(crate) fn later(at: Instant, by: Duration) -> Instant {
    let by = by.min(NEVER);
    at.checked_add(by)
        .or_else(|| at.checked_add(Duration::from_secs(365 * 24 * 60 * 60)))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_duration_is_a_far_instant_not_a_panic() {
        let now = Instant::now();
        let far = later(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(50 * 365 * 24 * 60 * 60));
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
