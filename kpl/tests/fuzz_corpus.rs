//! Replays the committed fuzz corpus of the `producer_validation` target
//! (`tests/data/fuzz-corpus/producer_validation/`) on the stable toolchain, asserting the
//! invariants the fuzz target asserts (the same code: `tests/support/producer_invariants.rs`,
//! compiled in below). The `deaggregate` target's corpus is replayed by `kinesis-aggregation`.
//! CI therefore needs no nightly toolchain; `cargo +nightly fuzz run` grows the corpus (see
//! `fuzz/README.md`).
//!
//! - `producer_validation`: every input as user records through a real [`Producer`] on the
//!   bed's Kinesis (the fuzz target uses a mock client instead). Refusals must match the
//!   oracle; accepted records must be stored on their shard; and every Kinesis record the
//!   producer stored, read back from the stream, must be one Kinesis accepts and hold exactly
//!   the user records the put results point at.

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use kinesis_aggregation::{Deaggregated, deaggregate};
use kinesis_integration::TestBed;
use kinesis_kpl::{Producer, PutError, PutResult, UserRecord};

// The fuzz targets' invariants. `even_shards` serves only the fuzz target's mock client.
#[allow(dead_code)]
// `pub`: the fuzz crate re-exports these for its targets.
#[allow(unreachable_pub)]
#[path = "support/producer_invariants.rs"]
mod fuzz;

use fuzz::{
    Expected, MAX_RECORD_SIZE, ShardRange, check_entry, check_rejection, decode_records,
    expected_outcome, producer_config, shard_for,
};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The corpus files of a fuzz target, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz-corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// One accepted put: where it came from, what was put, and where it was stored.
struct Accepted {
    origin: String,
    record: UserRecord,
    /// The explicit hash key as it must be stored (canonical), if any.
    explicit_hash_key: Option<String>,
    stored: PutResult,
}

/// One Kinesis record read back: (shard id, partition key, data), by (shard id, sequence number).
type Stored = BTreeMap<(String, String), (String, Bytes)>;

async fn read_stream(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: &[ShardRange],
) -> Result<Stored, Box<dyn std::error::Error + Send + Sync>> {
    let mut out = Stored::new();
    for shard in shards {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(&shard.id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator;
        while let Some(current) = iterator {
            let page = client.get_records().shard_iterator(current).send().await?;
            for record in page.records() {
                let key = (shard.id.clone(), record.sequence_number().to_owned());
                let value = (
                    record.partition_key().unwrap_or_default().to_owned(),
                    Bytes::copy_from_slice(record.data().as_ref()),
                );
                assert!(out.insert(key, value).is_none(), "a record read twice");
            }
            iterator = if page.records().is_empty() {
                None
            } else {
                page.next_shard_iterator().map(str::to_owned)
            };
        }
    }
    Ok(out)
}

fn kind(expected: &Expected) -> &'static str {
    match expected {
        Expected::Accepted { .. } => "accepted",
        Expected::EmptyPartitionKey => "empty partition key",
        Expected::PartitionKeyTooLong(_) => "partition key too long",
        Expected::RecordTooLarge(_) => "record too large",
        Expected::InvalidExplicitHashKey(_) => "invalid explicit hash key",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_validation_corpus_matches_the_oracle_and_stores_what_kinesis_accepts()
-> TestResult {
    let files = corpus("producer_validation");
    assert!(files.len() >= 20, "only {} corpus files", files.len());
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(2).await?;
    let listed = bed
        .kinesis()
        .list_shards()
        .stream_name(&stream)
        .send()
        .await?;
    let shards: Vec<ShardRange> = listed
        .shards()
        .iter()
        .map(|s| {
            let range = s.hash_key_range().expect("shards have ranges");
            ShardRange {
                id: s.shard_id().to_owned(),
                start: range.starting_hash_key().parse().unwrap(),
                end: range.ending_hash_key().parse().unwrap(),
            }
        })
        .collect();
    let producer = Producer::new(bed.kinesis().clone(), &stream, producer_config()).await?;

    // As the fuzz target: put an input's records, flush, then await them.
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut accepted = Vec::new();
    let mut refused_by_server = 0;
    for (name, input) in &files {
        let mut puts = Vec::new();
        for (i, record) in decode_records(input).into_iter().enumerate() {
            let origin = format!("{name} record {i}");
            let expected = expected_outcome(&record, MAX_RECORD_SIZE);
            *kinds.entry(kind(&expected)).or_default() += 1;
            match (producer.try_put_record(record.clone()), expected) {
                (Err(error), expected) => check_rejection(&expected, &error, &origin),
                (
                    Ok(put),
                    Expected::Accepted {
                        hash_key,
                        explicit_hash_key,
                    },
                ) => puts.push((origin, record, hash_key, explicit_hash_key, put)),
                (Ok(_), expected) => panic!("{origin}: accepted, expected {expected:?}"),
            }
        }
        producer.flush().await;
        // The embedded server (ferrokinesis 0.7) limits partition keys to 256 UTF-8 *bytes* and
        // refuses a whole PutRecords call over one longer key, where the producer (and the
        // Kinesis documentation) count 256 characters. An input with such a key may therefore
        // see its puts refused by the server; nothing else may fail.
        let long_key = puts.iter().any(|(_, r, ..)| r.partition_key.len() > 256);
        for (origin, record, hash_key, explicit_hash_key, put) in puts {
            let stored = match put.await {
                Ok(stored) => stored,
                Err(PutError::Rejected { attempts, .. }) if long_key => {
                    let last = attempts.last().expect("a refused put made an attempt");
                    assert_eq!(
                        last.error_code.as_deref(),
                        Some("ValidationException"),
                        "{origin}: {last:?}"
                    );
                    let message = last.error_message.as_deref().unwrap_or_default();
                    assert!(message.contains("partitionKey"), "{origin}: {message}");
                    refused_by_server += 1;
                    continue;
                }
                Err(error) => return Err(format!("{origin}: {error}").into()),
            };
            assert_eq!(stored.shard_id, shard_for(&shards, hash_key), "{origin}");
            accepted.push(Accepted {
                origin,
                record,
                explicit_hash_key,
                stored,
            });
        }
    }
    producer.shutdown().await;
    assert_eq!(
        kinds.len(),
        5,
        "the corpus should reach every validation outcome: {kinds:?}"
    );

    // Read everything back. Puts sharing a sequence number were aggregated together.
    let stored = read_stream(bed.kinesis(), &stream, &shards).await?;
    let mut by_entry: BTreeMap<(String, String), Vec<&Accepted>> = BTreeMap::new();
    for put in &accepted {
        let key = (
            put.stored.shard_id.clone(),
            put.stored.sequence_number.clone(),
        );
        by_entry.entry(key).or_default().push(put);
    }
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        by_entry.keys().collect::<Vec<_>>(),
        "the stream holds exactly the records the puts resolved to"
    );
    let mut aggregates = 0;
    for (key, puts) in &by_entry {
        let (partition_key, data) = &stored[key];
        if let [put] = puts.as_slice() {
            // Sent alone, as it was put.
            assert_eq!(put.stored.sub_sequence_number, 0, "{}", put.origin);
            assert_eq!(partition_key, &put.record.partition_key, "{}", put.origin);
            assert_eq!(data, &put.record.data, "{}", put.origin);
            let shard = check_entry(
                partition_key,
                put.explicit_hash_key.as_deref(),
                data,
                MAX_RECORD_SIZE,
                &shards,
            )
            .map_err(|e| format!("{}: {e}", put.origin))?;
            assert_eq!(shard, key.0, "{}", put.origin);
            continue;
        }
        aggregates += 1;
        let Deaggregated::Aggregated(records) = deaggregate(data.clone()) else {
            panic!("{}: the shared record is not an aggregate", puts[0].origin);
        };
        assert_eq!(records.len(), puts.len(), "{}", puts[0].origin);
        // As the KPL: partition key "a", routed by its first record's hash key.
        assert_eq!(partition_key, "a", "{}", puts[0].origin);
        let routing = records[0].effective_hash_key().to_string();
        let shard = check_entry(
            partition_key,
            Some(&routing),
            data,
            MAX_RECORD_SIZE,
            &shards,
        )
        .map_err(|e| format!("{}: {e}", puts[0].origin))?;
        assert_eq!(shard, key.0, "{}", puts[0].origin);
        for put in puts {
            let record = &records[put.stored.sub_sequence_number as usize];
            assert_eq!(
                (
                    record.partition_key(),
                    record.explicit_hash_key(),
                    record.data()
                ),
                (
                    put.record.partition_key.as_str(),
                    put.explicit_hash_key.as_deref(),
                    &put.record.data
                ),
                "{}",
                put.origin
            );
        }
    }
    println!(
        "{} inputs: {kinds:?}; {} puts stored in {} Kinesis records ({aggregates} aggregates); \
         {refused_by_server} refused by the server",
        files.len(),
        accepted.len(),
        by_entry.len()
    );
    assert!(aggregates > 0, "the corpus should make aggregates");
    assert!(
        refused_by_server * 4 < accepted.len(),
        "{refused_by_server} puts refused by the server, {} stored",
        accepted.len()
    );
    Ok(())
}
