//! Unique resource names, so tests sharing one server (or one AWS account) never collide.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name unique across the tests of this process and, with high probability, across processes
/// and runs: `{prefix}-{pid}-{millis since the epoch, base 36}-{per-process counter}`.
///
/// Names stay within `[a-zA-Z0-9_.-]` and well under the 128-character limit of Kinesis stream
/// names, DynamoDB table names and consumer names, as long as `prefix` does.
///
/// ```
/// let a = kinesis_integration::unique_name("orders");
/// let b = kinesis_integration::unique_name("orders");
/// assert!(a.starts_with("orders-"));
/// assert_ne!(a, b);
/// ```
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{prefix}-{}-{}-{n}", std::process::id(), to_base36(millis))
}

fn to_base36(mut value: u128) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if value == 0 {
        return "0".to_owned();
    }
    let mut out = Vec::new();
    while value > 0 {
        out.push(DIGITS[(value % 36) as usize]);
        value /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_round_trips_known_values() {
        assert_eq!(to_base36(0), "0");
        assert_eq!(to_base36(35), "z");
        assert_eq!(to_base36(36), "10");
        assert_eq!(
            u128::from_str_radix(&to_base36(1_700_000_000_000), 36).ok(),
            Some(1_700_000_000_000)
        );
    }

    #[test]
    fn names_are_distinct_and_valid() {
        let names: std::collections::HashSet<String> =
            (0..1000).map(|_| unique_name("t")).collect();
        assert_eq!(names.len(), 1000);
        assert!(
            names
                .iter()
                .all(|n| n.len() < 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        );
    }
}
