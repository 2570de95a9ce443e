//! What the builders of [`PollingConfig`](super::PollingConfig) and
//! [`FanOutConfig`](super::FanOutConfig) share: the prefetch limits as set
//! ([`PendingLimits`]) and the checks of their retry settings and timeouts. Each builder keeps
//! its own public setters; the errors name the builder, the bad value and the limit.

use std::time::Duration;

use super::PrefetchLimits;
use crate::aws::RetryPolicy;
use crate::error::ConfigError;

/// The prefetch limits set on a builder (`max_pending_batches`, `max_pending_records`,
/// `max_pending_bytes`): those not set keep their [defaults](PrefetchLimits::default).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PendingLimits {
    pub(super) batches: Option<usize>,
    pub(super) records: Option<usize>,
    pub(super) bytes: Option<usize>,
}

impl PendingLimits {
    /// The limits, each at least 1 (an error names `builder` and the setting).
    pub(super) fn build(self, builder: &'static str) -> Result<PrefetchLimits, ConfigError> {
        let defaults = PrefetchLimits::default();
        PrefetchLimits::checked(
            builder,
            self.batches.unwrap_or(defaults.max_batches()),
            self.records.unwrap_or(defaults.max_records()),
            self.bytes.unwrap_or(defaults.max_bytes()),
        )
    }
}

/// Refuses a zero `value` for the setting `field` of `builder` (a delay or a timeout).
pub(super) fn check_positive(
    builder: &'static str,
    field: &'static str,
    value: Duration,
) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::new(builder, field, value, "must be positive"));
    }
    Ok(())
}

/// Refuses a retry policy set through `retry_min_delay` and `retry_max_delay` whose largest
/// delay is below its first.
pub(super) fn check_retry_delays(
    builder: &'static str,
    retry: RetryPolicy,
) -> Result<(), ConfigError> {
    if retry.max_delay < retry.min_delay {
        return Err(ConfigError::new(
            builder,
            "retry_max_delay",
            retry.max_delay,
            format!("must be at least retry_min_delay ({:?})", retry.min_delay),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_limits_keep_their_defaults_and_errors_name_the_builder() {
        let limits = PendingLimits {
            records: Some(7),
            ..PendingLimits::default()
        }
        .build("PollingConfig")
        .unwrap();
        assert_eq!(
            (
                limits.max_batches(),
                limits.max_records(),
                limits.max_bytes()
            ),
            (3, 7, 8 << 20)
        );
        let error = PendingLimits {
            bytes: Some(0),
            ..PendingLimits::default()
        }
        .build("FanOutConfig")
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid FanOutConfig setting `max_pending_bytes` = 0: must be at least 1"
        );
    }

    #[test]
    fn retry_checks_name_the_value_and_the_limit() {
        let error = check_positive("PollingConfig", "retry_min_delay", Duration::ZERO).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid PollingConfig setting `retry_min_delay` = 0ns: must be positive"
        );
        assert!(
            check_positive("PollingConfig", "request_timeout", Duration::from_millis(1)).is_ok()
        );
        let backwards = RetryPolicy::new(
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(1),
        );
        let error = check_retry_delays("FanOutConfig", backwards).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid FanOutConfig setting `retry_max_delay` = 1s: must be at least \
             retry_min_delay (2s)"
        );
        assert!(check_retry_delays("FanOutConfig", RetryPolicy::default()).is_ok());
    }
}
