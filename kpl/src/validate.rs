//! Checks a user record against Kinesis's limits before it enters the pipeline.

use crate::config::MAX_PARTITION_KEY_CHARS;
use crate::{PutError, UserRecord};
use kinesis_aggregation::{hash_key_for_partition_key, parse_explicit_hash_key};

/// A record that passed validation, with its hash key computed once.
#[derive(Debug)]
pub(crate) struct Validated {
    pub(crate) record: UserRecord,
    /// The hash key Kinesis will route by (explicit, or MD5 of the partition key).
    pub(crate) hash_key: u128,
    /// Partition key + data, the size Kinesis counts.
    pub(crate) size: usize,
}

/// Validates a record: partition key 1..=256 UTF-16 code units (how the Kinesis API and the
/// Java KPL count its "characters": one per character in the Basic Multilingual Plane, two for
/// others such as emoji), partition key + data at most
/// `max_record_size` bytes, explicit hash key a decimal in `0..2^128` (rewritten in the canonical
/// spelling the API accepts, e.g. `"007"` → `"7"`).
pub(crate) fn validate(
    mut record: UserRecord,
    max_record_size: usize,
) -> Result<Validated, PutError> {
    if record.partition_key.is_empty() {
        return Err(PutError::EmptyPartitionKey {
            max: MAX_PARTITION_KEY_CHARS,
            record: Box::new(record),
        });
    }
    // Cheap bound first: a key of at most 256 bytes has at most 256 UTF-16 units.
    if record.partition_key.len() > MAX_PARTITION_KEY_CHARS {
        let chars = record.partition_key.encode_utf16().count();
        if chars > MAX_PARTITION_KEY_CHARS {
            return Err(PutError::PartitionKeyTooLong {
                chars,
                max: MAX_PARTITION_KEY_CHARS,
                record: Box::new(record),
            });
        }
    }
    let size = record.partition_key.len() + record.data.len();
    if size > max_record_size {
        return Err(PutError::RecordTooLarge {
            size,
            max: max_record_size,
            record: Box::new(record),
        });
    }
    let hash_key = match &record.explicit_hash_key {
        Some(ehk) => {
            let value = match parse_explicit_hash_key(ehk) {
                Ok(value) => value,
                Err(error) => {
                    return Err(PutError::InvalidExplicitHashKey {
                        error,
                        record: Box::new(record),
                    });
                }
            };
            let canonical = value.to_string();
            if &canonical != ehk {
                record.explicit_hash_key = Some(canonical);
            }
            value
        }
        None => hash_key_for_partition_key(&record.partition_key),
    };
    Ok(Validated {
        record,
        hash_key,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_limits_exactly() {
        let key = "é".repeat(256); // 256 characters, 512 bytes
        let ok = validate(UserRecord::new(key.clone(), vec![0u8; 1024 - 512]), 1024).unwrap();
        assert_eq!(ok.size, 1024);
        assert_eq!(ok.hash_key, hash_key_for_partition_key(&key));
    }

    #[test]
    fn counts_utf16_units_like_the_api() {
        // 128 emoji are 256 UTF-16 units: at the limit. One more is over it, though only
        // 129 characters.
        assert!(validate(UserRecord::new("😀".repeat(128), "x"), 4096).is_ok());
        assert!(matches!(
            validate(UserRecord::new("😀".repeat(129), "x"), 4096),
            Err(PutError::PartitionKeyTooLong {
                chars: 258,
                max: 256,
                ..
            })
        ));
    }

    #[test]
    fn rejects_with_the_value_and_the_limit() {
        assert!(matches!(
            validate(UserRecord::new("", "x"), 1024),
            Err(PutError::EmptyPartitionKey { max: 256, .. })
        ));
        assert!(matches!(
            validate(UserRecord::new("k".repeat(257), "x"), 1024),
            Err(PutError::PartitionKeyTooLong {
                chars: 257,
                max: 256,
                ..
            })
        ));
        let err = validate(UserRecord::new("k", vec![0u8; 1024]), 1024).unwrap_err();
        assert!(matches!(
            err,
            PutError::RecordTooLarge {
                size: 1025,
                max: 1024,
                ..
            }
        ));
        assert!(err.to_string().contains("1025") && err.to_string().contains("1024"));
        let err = validate(
            UserRecord::new("k", "x").explicit_hash_key("2".repeat(40)),
            1024,
        )
        .unwrap_err();
        assert!(
            matches!(err, PutError::InvalidExplicitHashKey { .. }),
            "{err}"
        );
        assert!(validate(UserRecord::new("k", "x").explicit_hash_key("-1"), 1024).is_err());
    }

    #[test]
    fn explicit_hash_key_is_canonicalised_and_routes() {
        let ok = validate(UserRecord::new("k", "x").explicit_hash_key("007"), 1024).unwrap();
        assert_eq!(ok.hash_key, 7);
        assert_eq!(ok.record.explicit_hash_key.as_deref(), Some("7"));
    }
}
