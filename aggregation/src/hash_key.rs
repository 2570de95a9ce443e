//! Kinesis hash keys as `u128`: MD5 of a partition key, or a decimal explicit hash key.
//!
//! Kinesis maps every record to a point in the 128-bit hash key space `0..2^128` and each shard
//! owns a contiguous range of it. The point is the explicit hash key when one is given (a decimal
//! string), otherwise the MD5 digest of the UTF-8 partition key read as a big-endian unsigned
//! integer. The producer uses this to predict shards; the consumer uses it to drop sub-records
//! that do not belong to the shard being read (as the KCL does after a reshard).

use md5::{Digest, Md5};

/// The largest hash key, `2^128 - 1`, in decimal.
const MAX_DECIMAL: &str = "340282366920938463463374607431768211455";

/// How many characters of an offending value an error keeps.
const MAX_VALUE_IN_ERROR: usize = 64;

/// The hash key Kinesis derives from a partition key: MD5 of its UTF-8 bytes, big-endian.
///
/// ```
/// use kinesis_aggregation::hash_key_for_partition_key;
///
/// // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
/// assert_eq!(hash_key_for_partition_key("a"), 0x0cc175b9c0f1b6a831c399e269772661);
/// ```
pub fn hash_key_for_partition_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// Hash keys of partition keys, remembered across aggregates: a shard's records repeat their
/// keys, so a reader that checks every aggregate against its shard's range
/// ([`HashKeyRange::count_outside_cached`](crate::HashKeyRange::count_outside_cached)) hashes
/// each key once rather than once per aggregate. Holds at most `capacity` keys; when full, it
/// forgets them all and starts again (no bookkeeping per lookup).
///
/// ```
/// use kinesis_aggregation::{HashKeyCache, hash_key_for_partition_key};
///
/// let mut cache = HashKeyCache::new(2);
/// assert_eq!(cache.hash_key("a"), hash_key_for_partition_key("a"));
/// assert_eq!(cache.hash_key("a"), hash_key_for_partition_key("a"));
/// assert_eq!(cache.len(), 1);
/// cache.hash_key("b");
/// cache.hash_key("c"); // full: forgets "a" and "b"
/// assert_eq!(cache.len(), 1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct HashKeyCache {
    keys: std::collections::HashMap<Box<str>, u128>,
    capacity: usize,
}

impl HashKeyCache {
    /// A cache of at most `capacity` keys (0: remembers nothing).
    pub fn new(capacity: usize) -> Self {
        HashKeyCache {
            keys: std::collections::HashMap::new(),
            capacity,
        }
    }

    /// The hash key of `partition_key`, remembered or computed.
    pub fn hash_key(&mut self, partition_key: &str) -> u128 {
        if let Some(&key) = self.keys.get(partition_key) {
            return key;
        }
        let key = hash_key_for_partition_key(partition_key);
        if self.capacity > 0 {
            if self.keys.len() >= self.capacity {
                self.keys.clear();
            }
            self.keys.insert(partition_key.into(), key);
        }
        key
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Parses an explicit hash key: one or more ASCII decimal digits with a value in `0..2^128`.
///
/// Leading zeros are accepted (`"007"` is 7), as the Java KCL's `BigInteger` parse accepts them;
/// signs, whitespace, and anything that is not a digit are not. Note that the Kinesis API itself
/// only accepts the canonical spelling (`0|[1-9][0-9]{0,38}`), so a producer that sends a user's
/// key as is may want to send `value.to_string()` instead.
///
/// ```
/// use kinesis_aggregation::parse_explicit_hash_key;
///
/// assert_eq!(parse_explicit_hash_key("42"), Ok(42));
/// assert_eq!(parse_explicit_hash_key("340282366920938463463374607431768211455"), Ok(u128::MAX));
/// assert!(parse_explicit_hash_key("340282366920938463463374607431768211456").is_err());
/// assert!(parse_explicit_hash_key("-1").is_err());
/// ```
pub fn parse_explicit_hash_key(value: &str) -> Result<u128, HashKeyError> {
    if value.is_empty() {
        return Err(HashKeyError::new(value, HashKeyProblem::Empty));
    }
    let mut parsed: u128 = 0;
    for byte in value.bytes() {
        let digit = match byte {
            b'0'..=b'9' => u128::from(byte - b'0'),
            _ => return Err(HashKeyError::new(value, HashKeyProblem::NotDecimal)),
        };
        parsed = parsed
            .checked_mul(10)
            .and_then(|shifted| shifted.checked_add(digit))
            .ok_or_else(|| {
                // Finish scanning so that "9999…x" reports the non-digit, not the overflow.
                if value.bytes().all(|b| b.is_ascii_digit()) {
                    HashKeyError::new(value, HashKeyProblem::OutOfRange)
                } else {
                    HashKeyError::new(value, HashKeyProblem::NotDecimal)
                }
            })?;
    }
    Ok(parsed)
}

/// The hash key Kinesis uses for a record: the explicit hash key if there is one, else the MD5 of
/// the partition key.
///
/// ```
/// use kinesis_aggregation::{effective_hash_key, hash_key_for_partition_key};
///
/// assert_eq!(effective_hash_key("pk", Some("7")), Ok(7));
/// assert_eq!(effective_hash_key("pk", None), Ok(hash_key_for_partition_key("pk")));
/// ```
pub fn effective_hash_key(
    partition_key: &str,
    explicit_hash_key: Option<&str>,
) -> Result<u128, HashKeyError> {
    match explicit_hash_key {
        Some(ehk) => parse_explicit_hash_key(ehk),
        None => Ok(hash_key_for_partition_key(partition_key)),
    }
}

/// An explicit hash key that is not a decimal integer in `0..2^128`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "explicit hash key {value:?} {problem}: it must be a decimal integer in the range 0..2^128 \
     (0 to {MAX_DECIMAL})"
)]
#[non_exhaustive]
pub struct HashKeyError {
    /// The offending value (its first 64 characters, followed by `…` if it was longer).
    pub value: String,
    /// What is wrong with it.
    pub problem: HashKeyProblem,
}

impl HashKeyError {
    fn new(value: &str, problem: HashKeyProblem) -> Self {
        let value = match value.char_indices().nth(MAX_VALUE_IN_ERROR) {
            Some((cut, _)) => format!("{}…", &value[..cut]),
            None => value.to_owned(),
        };
        Self { value, problem }
    }
}

/// What is wrong with an explicit hash key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashKeyProblem {
    /// The string is empty.
    Empty,
    /// The string has a character that is not an ASCII decimal digit (a sign, a space, …).
    NotDecimal,
    /// The value is `2^128` or more.
    OutOfRange,
}

impl std::fmt::Display for HashKeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Empty => "is empty",
            Self::NotDecimal => "is not a decimal number",
            Self::OutOfRange => "is out of range",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_decimal_is_u128_max() {
        assert_eq!(MAX_DECIMAL, u128::MAX.to_string());
        assert_eq!(parse_explicit_hash_key(MAX_DECIMAL), Ok(u128::MAX));
    }

    #[test]
    fn parses_boundaries_and_leading_zeros() {
        assert_eq!(parse_explicit_hash_key("0"), Ok(0));
        assert_eq!(parse_explicit_hash_key("000"), Ok(0));
        assert_eq!(parse_explicit_hash_key("007"), Ok(7));
        let long_zeros = format!("{}{MAX_DECIMAL}", "0".repeat(100));
        assert_eq!(parse_explicit_hash_key(&long_zeros), Ok(u128::MAX));
    }

    #[test]
    fn rejects_with_the_right_problem() {
        let problem = |s: &str| parse_explicit_hash_key(s).unwrap_err().problem;
        assert_eq!(problem(""), HashKeyProblem::Empty);
        assert_eq!(problem("-1"), HashKeyProblem::NotDecimal);
        assert_eq!(problem("+1"), HashKeyProblem::NotDecimal);
        assert_eq!(problem(" 1"), HashKeyProblem::NotDecimal);
        assert_eq!(problem("0x10"), HashKeyProblem::NotDecimal);
        assert_eq!(problem("１"), HashKeyProblem::NotDecimal); // full-width digit
        assert_eq!(
            problem("340282366920938463463374607431768211456"),
            HashKeyProblem::OutOfRange
        );
        assert_eq!(problem(&"9".repeat(60)), HashKeyProblem::OutOfRange);
        assert_eq!(
            problem(&format!("{}x", "9".repeat(60))),
            HashKeyProblem::NotDecimal
        );
    }

    #[test]
    fn error_names_the_value_and_the_range() {
        let err = parse_explicit_hash_key("12a").unwrap_err();
        assert_eq!(err.value, "12a");
        let text = err.to_string();
        assert!(text.contains("\"12a\""), "{text}");
        assert!(text.contains("0..2^128"), "{text}");
        assert!(text.contains(MAX_DECIMAL), "{text}");
    }

    #[test]
    fn error_truncates_long_values_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let err = parse_explicit_hash_key(&long).unwrap_err();
        assert_eq!(err.value, format!("{}…", "é".repeat(MAX_VALUE_IN_ERROR)));
    }

    #[test]
    fn partition_key_hash_matches_known_md5() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(
            hash_key_for_partition_key(""),
            0xd41d8cd98f00b204e9800998ecf8427e
        );
        assert_eq!(
            effective_hash_key("", None),
            Ok(0xd41d8cd98f00b204e9800998ecf8427e)
        );
        assert!(effective_hash_key("pk", Some("x")).is_err());
    }
}
