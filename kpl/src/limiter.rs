//! Per-shard token buckets: records per second and bytes per second, refilled at `rate_limit` %
//! of the shard's limits and holding at most one second of the (unscaled) limit, as the KPL's
//! limiter does: a shard idle for a while bursts Kinesis's per-second allowance, not 150 % of it.
//!
//! Time is passed in (an [`Instant`]), so the buckets are plain data, tested without sleeping.

use std::time::{Duration, Instant};

/// Kinesis's write limit per shard: 1 000 records per second.
pub(crate) const SHARD_RECORDS_PER_SECOND: f64 = 1_000.0;
/// Kinesis's write limit per shard: 1 MiB per second.
pub(crate) const SHARD_BYTES_PER_SECOND: f64 = 1_048_576.0;

/// Two token buckets for one shard. Each holds at most one second's worth of the shard limit, so
/// a shard idle for a while can burst its full per-second allowance, as Kinesis allows.
#[derive(Clone, Debug)]
pub(crate) struct ShardLimiter {
    records: Bucket,
    bytes: Bucket,
}

#[derive(Clone, Debug)]
struct Bucket {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    updated: Instant,
}

impl Bucket {
    fn new(capacity: f64, per_second: f64, now: Instant) -> Self {
        Self {
            tokens: capacity,
            capacity,
            per_second,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
    }

    /// How long until `amount` tokens are there (zero if they are). An amount over capacity
    /// waits for a full bucket and then overdraws it, so no entry is blocked forever.
    fn wait_for(&self, amount: f64) -> Duration {
        let needed = amount.min(self.capacity) - self.tokens;
        if needed <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(needed / self.per_second)
        }
    }
}

impl ShardLimiter {
    /// Buckets refilled at `percent` % of the shard limits, holding at most the limits.
    pub(crate) fn new(percent: u32, now: Instant) -> Self {
        let scale = f64::from(percent) / 100.0;
        Self {
            records: Bucket::new(
                SHARD_RECORDS_PER_SECOND,
                SHARD_RECORDS_PER_SECOND * scale,
                now,
            ),
            bytes: Bucket::new(SHARD_BYTES_PER_SECOND, SHARD_BYTES_PER_SECOND * scale, now),
        }
    }

    /// Takes tokens for one Kinesis record of `bytes` bytes if both buckets have them, else
    /// returns how long to wait.
    pub(crate) fn try_take(&mut self, bytes: usize, now: Instant) -> Result<(), Duration> {
        self.records.refill(now);
        self.bytes.refill(now);
        let bytes = bytes as f64;
        let wait = self.records.wait_for(1.0).max(self.bytes.wait_for(bytes));
        if wait.is_zero() {
            self.records.tokens -= 1.0;
            self.bytes.tokens -= bytes;
            Ok(())
        } else {
            Err(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_one_second_of_records_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut limiter = ShardLimiter::new(100, t0);
        for _ in 0..1000 {
            assert!(limiter.try_take(10, t0).is_ok());
        }
        let wait = limiter.try_take(10, t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(1),
            "{wait:?}"
        );
        assert!(limiter.try_take(10, t0 + Duration::from_millis(1)).is_ok());
        assert!(limiter.try_take(10, t0 + Duration::from_millis(1)).is_err());
    }

    #[test]
    fn at_150_percent_the_burst_is_the_shard_limit_and_the_refill_is_faster() {
        let t0 = Instant::now();
        let mut limiter = ShardLimiter::new(150, t0);
        let chunk = 512 * 1024;
        // The bucket holds 1 MiB, not 1.5 MiB.
        assert!(limiter.try_take(chunk, t0).is_ok());
        assert!(limiter.try_take(chunk, t0).is_ok());
        let wait = limiter.try_take(chunk, t0).unwrap_err();
        // Refilled at 1.5 MiB/s: 512 KiB more needs 1/3 s.
        assert!((wait.as_secs_f64() - 1.0 / 3.0).abs() < 0.01, "{wait:?}");
        assert!(limiter.try_take(chunk, t0 + wait).is_ok());
        // Records: at most 1 000 at once, then 1 500/s.
        let mut limiter = ShardLimiter::new(150, t0);
        for _ in 0..1000 {
            assert!(limiter.try_take(1, t0).is_ok());
        }
        assert!(
            limiter.try_take(1, t0).is_err(),
            "the burst is 1 000 records"
        );
        let later = t0 + Duration::from_millis(100);
        for _ in 0..150 {
            assert!(limiter.try_take(1, later).is_ok());
        }
        assert!(limiter.try_take(1, later).is_err());
    }

    #[test]
    fn an_entry_over_capacity_waits_for_a_full_bucket_not_forever() {
        let t0 = Instant::now();
        let mut limiter = ShardLimiter::new(50, t0); // holds 1 MiB, refills 512 KiB/s
        assert!(limiter.try_take(2 * 1024 * 1024, t0).is_ok());
        let wait = limiter.try_take(1, t0).unwrap_err();
        assert!(
            wait >= Duration::from_secs(2),
            "overdrawn bucket refills first: {wait:?}"
        );
        assert!(
            limiter
                .try_take(2 * 1024 * 1024, t0 + Duration::from_secs(4))
                .is_ok()
        );
    }
}
