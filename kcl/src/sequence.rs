//! Checkpoint positions: Kinesis sequence numbers, the Java KCL's sentinel values, and the
//! KPL sub-sequence number.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A Kinesis sequence number: a non-empty string of ASCII digits.
///
/// The string is kept exactly as read, so a lease written back carries the same bytes.
/// Ordering is numeric (leading zeros do not matter), with the raw string as a last tie-break
/// so that `Ord` agrees with `Eq`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

impl SequenceNumber {
    /// Validates and wraps a sequence number.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] unless `value` is a non-empty string of ASCII digits.
    pub fn new(value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid_value(
                "sequence number",
                &value,
                "a sequence number is a non-empty string of decimal digits",
            ));
        }
        Ok(SequenceNumber(value))
    }

    /// The digits, as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without leading zeros (`"0"` for zero).
    fn significant(&self) -> &str {
        let trimmed = self.0.trim_start_matches('0');
        if trimmed.is_empty() { "0" } else { trimmed }
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.significant(), other.significant());
        a.len()
            .cmp(&b.len())
            .then_with(|| a.cmp(b))
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SequenceNumber {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        SequenceNumber::new(s)
    }
}

/// Where a checkpoint points: a sequence number or one of the Java KCL's sentinel values.
///
/// The sentinels are stored in the `checkpoint` attribute under their Java enum names
/// (`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`, `SHARD_END`). The order mirrors the Java
/// `ExtendedSequenceNumber.compareTo`: `AT_TIMESTAMP < TRIM_HORIZON < LATEST < any sequence
/// number < SHARD_END`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SequencePosition {
    /// `AT_TIMESTAMP`: start at the configured timestamp (the timestamp itself is not stored
    /// in the lease; it comes from the application's initial-position configuration).
    AtTimestamp,
    /// `TRIM_HORIZON`: start at the oldest record in the shard.
    TrimHorizon,
    /// `LATEST`: start after the newest record in the shard.
    Latest,
    /// A record's sequence number: processing resumes after it.
    Sequence(SequenceNumber),
    /// `SHARD_END`: the shard is closed and fully processed; its children may start.
    ShardEnd,
}

impl SequencePosition {
    /// The Java name of `AT_TIMESTAMP`.
    pub const AT_TIMESTAMP: &'static str = "AT_TIMESTAMP";
    /// The Java name of `TRIM_HORIZON`.
    pub const TRIM_HORIZON: &'static str = "TRIM_HORIZON";
    /// The Java name of `LATEST`.
    pub const LATEST: &'static str = "LATEST";
    /// The Java name of `SHARD_END`.
    pub const SHARD_END: &'static str = "SHARD_END";

    /// Parses the string the Java KCL stores in `checkpoint` / `pendingCheckpoint`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] unless `value` is a sentinel name or a string of digits.
    pub fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            Self::AT_TIMESTAMP => SequencePosition::AtTimestamp,
            Self::TRIM_HORIZON => SequencePosition::TrimHorizon,
            Self::LATEST => SequencePosition::Latest,
            Self::SHARD_END => SequencePosition::ShardEnd,
            other => SequencePosition::Sequence(SequenceNumber::new(other).map_err(|_| {
                Error::invalid_value(
                    "checkpoint position",
                    other,
                    "expected decimal digits, TRIM_HORIZON, LATEST, AT_TIMESTAMP or SHARD_END",
                )
            })?),
        })
    }

    /// The string stored in DynamoDB.
    pub fn as_str(&self) -> &str {
        match self {
            SequencePosition::AtTimestamp => Self::AT_TIMESTAMP,
            SequencePosition::TrimHorizon => Self::TRIM_HORIZON,
            SequencePosition::Latest => Self::LATEST,
            SequencePosition::ShardEnd => Self::SHARD_END,
            SequencePosition::Sequence(seq) => seq.as_str(),
        }
    }

    /// Whether this is one of the sentinel values rather than a sequence number.
    pub fn is_sentinel(&self) -> bool {
        !matches!(self, SequencePosition::Sequence(_))
    }

    /// Rank used for ordering; sequence numbers share one rank and compare among themselves.
    fn rank(&self) -> u8 {
        match self {
            SequencePosition::AtTimestamp => 0,
            SequencePosition::TrimHorizon => 1,
            SequencePosition::Latest => 2,
            SequencePosition::Sequence(_) => 3,
            SequencePosition::ShardEnd => 4,
        }
    }
}

impl Ord for SequencePosition {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (SequencePosition::Sequence(a), SequencePosition::Sequence(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for SequencePosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequencePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SequencePosition {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        SequencePosition::parse(s)
    }
}

impl From<SequenceNumber> for SequencePosition {
    fn from(seq: SequenceNumber) -> Self {
        SequencePosition::Sequence(seq)
    }
}

/// A checkpoint as the Java KCL stores it: a position plus the sub-sequence number of a user
/// record inside a KPL-aggregated record (`0` for plain records and for sentinels).
///
/// Ordering mirrors the Java `ExtendedSequenceNumber.compareTo`: by position, then by
/// sub-sequence number.
///
/// ```
/// use kinesis_kcl::{ExtendedSequenceNumber, SequencePosition};
///
/// let cp = ExtendedSequenceNumber::parse("49590338271490256608559692538361571095921575989136588898", 3)?;
/// assert!(cp > ExtendedSequenceNumber::TRIM_HORIZON);
/// assert!(cp < ExtendedSequenceNumber::SHARD_END);
/// assert_eq!(cp.sub_sequence_number, 3);
/// # Ok::<(), kinesis_kcl::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtendedSequenceNumber {
    /// The record position or sentinel (`checkpoint` / `pendingCheckpoint`).
    pub position: SequencePosition,
    /// The user-record index inside an aggregated record
    /// (`checkpointSubSequenceNumber` / `pendingCheckpointSubSequenceNumber`).
    pub sub_sequence_number: u64,
}

impl ExtendedSequenceNumber {
    /// `TRIM_HORIZON`, sub-sequence 0.
    pub const TRIM_HORIZON: Self = Self::sentinel(SequencePosition::TrimHorizon);
    /// `LATEST`, sub-sequence 0.
    pub const LATEST: Self = Self::sentinel(SequencePosition::Latest);
    /// `AT_TIMESTAMP`, sub-sequence 0.
    pub const AT_TIMESTAMP: Self = Self::sentinel(SequencePosition::AtTimestamp);
    /// `SHARD_END`, sub-sequence 0.
    pub const SHARD_END: Self = Self::sentinel(SequencePosition::ShardEnd);

    const fn sentinel(position: SequencePosition) -> Self {
        ExtendedSequenceNumber {
            position,
            sub_sequence_number: 0,
        }
    }

    /// A checkpoint at `position` with the given sub-sequence number.
    pub fn new(position: impl Into<SequencePosition>, sub_sequence_number: u64) -> Self {
        ExtendedSequenceNumber {
            position: position.into(),
            sub_sequence_number,
        }
    }

    /// Parses a stored position string (digits or a sentinel name) with a sub-sequence
    /// number.
    ///
    /// # Errors
    ///
    /// As [`SequencePosition::parse`].
    pub fn parse(position: &str, sub_sequence_number: u64) -> Result<Self> {
        Ok(Self::new(
            SequencePosition::parse(position)?,
            sub_sequence_number,
        ))
    }

    /// Whether the shard has been fully processed (`SHARD_END`, whatever the sub-sequence).
    pub fn is_shard_end(&self) -> bool {
        self.position == SequencePosition::ShardEnd
    }
}

impl fmt::Display for ExtendedSequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.position, self.sub_sequence_number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(s: &str) -> SequencePosition {
        SequencePosition::parse(s).unwrap()
    }

    #[test]
    fn order_matches_java_compare_to() {
        let ordered = [
            seq("AT_TIMESTAMP"),
            seq("TRIM_HORIZON"),
            seq("LATEST"),
            seq("0"),
            seq("9"),
            seq("10"),
            seq("49590338271490256608559692538361571095921575989136588898"),
            seq("SHARD_END"),
        ];
        for w in ordered.windows(2) {
            assert!(w[0] < w[1], "{} < {}", w[0], w[1]);
        }
    }

    #[test]
    fn leading_zeros_compare_numerically_but_stay_distinct() {
        let a = SequenceNumber::new("007").unwrap();
        let b = SequenceNumber::new("7").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.significant(), b.significant());
        assert!(a < SequenceNumber::new("8").unwrap());
        assert!(SequenceNumber::new("10").unwrap() > a);
    }

    #[test]
    fn sub_sequence_breaks_ties() {
        let a = ExtendedSequenceNumber::parse("5", 1).unwrap();
        let b = ExtendedSequenceNumber::parse("5", 2).unwrap();
        assert!(a < b);
        assert!(ExtendedSequenceNumber::parse("4", 99).unwrap() < a);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "12a", "-1", "trim_horizon", " 1", "1.5"] {
            assert!(SequencePosition::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn round_trips_strings() {
        for s in [
            "TRIM_HORIZON",
            "LATEST",
            "AT_TIMESTAMP",
            "SHARD_END",
            "000123",
        ] {
            assert_eq!(seq(s).as_str(), s);
        }
    }
}
