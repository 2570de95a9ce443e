//! The logic of the `kinesis-ops` command-line tool, as functions the tests (and other tools)
//! can call.
//!
//! - [`leases`]: read a lease table twice, an interval apart, and show every lease with its
//!   owner, counter and checkpoint, and whether the counter moved between the reads (a live
//!   owner renews its leases, moving their counters).
//! - [`reset`]: move a lease's checkpoint (also backwards), refusing while a live owner renews
//!   the lease, and only ever as a write conditional on the lease counter just read.
//! - [`decode`]: print the user records of a KPL-aggregated record.
//!
//! # Why the counter tells liveness
//!
//! A lease table stores no clock: the only sign that a worker is alive is that it renews its
//! leases, each renewal bumping `leaseCounter`. A KCL worker renews every third of its
//! failover time (10 s by default), and other workers treat a lease whose counter has not moved
//! for the failover time as expired. So these tools read a lease more than once and compare the
//! counters; a single read cannot tell a live owner from a dead one.

pub mod decode;
pub mod lag;
pub mod leases;
pub mod reset;
pub mod rewind;
pub mod shards;

use std::time::Duration;

/// Parses a duration given on the command line: `500ms`, `2s`, `1.5s`, `1m`, or a plain number
/// of seconds (`2`, `0.25`).
///
/// ```
/// use std::time::Duration;
/// use kinesis_examples::ops::parse_duration;
///
/// assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_seconds) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (examples: 500ms, 2s, 1.5, 1m)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "invalid duration {text:?}: must be a non-negative number"
        ));
    }
    Duration::try_from_secs_f64(value * unit_seconds)
        .map_err(|_| format!("invalid duration {text:?}: out of range"))
}

/// A duration for people: `750ms`, `2s`, `2.5s`.
pub fn format_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        let seconds = duration.as_secs_f64();
        if (seconds - seconds.round()).abs() < 0.05 {
            format!("{:.0}s", seconds)
        } else {
            format!("{:.1}s", seconds)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(format_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_millis(2500)), "2.5s");
    }
}
