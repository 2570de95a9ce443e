//! The producer's input validation, through its public entry (`Producer::try_put_record`), on
//! a producer whose Kinesis client is a mock (`aws-smithy-mocks`: no network, no server).
//!
//! Each input decodes to up to 12 user records (`kinesis_fuzz::decode_records`), which are put,
//! flushed and awaited. Asserted:
//! - a record is refused exactly when the independent oracle (`expected_outcome`) says so, with
//!   the error and figures it names;
//! - an accepted record resolves as stored, in the shard its hash key belongs to;
//! - every PutRecords entry the producer sends is one Kinesis accepts (`check_entry`: key
//!   length, record size, canonical explicit hash key, aggregates holding only records of
//!   their own shard).
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
use aws_sdk_kinesis::types::{HashKeyRange, PutRecordsResultEntry, SequenceNumberRange, Shard};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use kinesis_fuzz::{
    Expected, MAX_RECORD_SIZE, ShardRange, check_entry, check_rejection, decode_records,
    even_shards, expected_outcome, producer_config, shard_for,
};
use kinesis_kpl::Producer;
use libfuzzer_sys::fuzz_target;

struct Harness {
    runtime: tokio::runtime::Runtime,
    producer: Producer,
    shards: Vec<ShardRange>,
    /// What the mock found wrong in the requests it was sent.
    violations: Arc<Mutex<Vec<String>>>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let shards = even_shards(4);
        let violations = Arc::new(Mutex::new(Vec::new()));
        let client = mock_kinesis(shards.clone(), violations.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let producer = runtime
            .block_on(Producer::new(client, "fuzz", producer_config()))
            .expect("the producer starts on the mock");
        Harness {
            runtime,
            producer,
            shards,
            violations,
        }
    })
}

/// A Kinesis client answering ListShards with `shards` and PutRecords by storing every entry
/// in the shard its hash key belongs to, after checking it.
fn mock_kinesis(shards: Vec<ShardRange>, violations: Arc<Mutex<Vec<String>>>) -> Client {
    let listed = shards.clone();
    let list_shards = mock!(Client::list_shards).then_output(move || {
        let shards = listed
            .iter()
            .map(|s| {
                Shard::builder()
                    .shard_id(&s.id)
                    .hash_key_range(
                        HashKeyRange::builder()
                            .starting_hash_key(s.start.to_string())
                            .ending_hash_key(s.end.to_string())
                            .build()
                            .unwrap(),
                    )
                    .sequence_number_range(
                        SequenceNumberRange::builder()
                            .starting_sequence_number("1")
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap()
            })
            .collect::<Vec<_>>();
        ListShardsOutput::builder().set_shards(Some(shards)).build()
    });
    let sequence = AtomicU64::new(1);
    let put_records = mock!(Client::put_records).then_compute_output(move |input| {
        let mut results = Vec::new();
        for entry in input.records() {
            let data = bytes::Bytes::copy_from_slice(entry.data().as_ref());
            let shard = match check_entry(
                entry.partition_key().unwrap_or_default(),
                entry.explicit_hash_key(),
                &data,
                MAX_RECORD_SIZE,
                &shards,
            ) {
                Ok(shard) => shard,
                Err(violation) => {
                    violations.lock().unwrap().push(violation);
                    shards[0].id.clone()
                }
            };
            results.push(
                PutRecordsResultEntry::builder()
                    .shard_id(shard)
                    .sequence_number(sequence.fetch_add(1, Ordering::Relaxed).to_string())
                    .build(),
            );
        }
        PutRecordsOutput::builder()
            .set_records(Some(results))
            .failed_record_count(0)
            .build()
            .unwrap()
    });
    mock_client!(
        aws_sdk_kinesis,
        RuleMode::MatchAny,
        &[&list_shards, &put_records]
    )
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let records = decode_records(data);
    h.runtime.block_on(async {
        let mut puts = Vec::new();
        for (i, record) in records.into_iter().enumerate() {
            let expected = expected_outcome(&record, MAX_RECORD_SIZE);
            match (h.producer.try_put_record(record.clone()), &expected) {
                (Err(error), _) => check_rejection(&expected, &error, &format!("record {i}")),
                (Ok(put), Expected::Accepted { hash_key, .. }) => puts.push((i, *hash_key, put)),
                (Ok(_), _) => panic!("record {i} accepted, expected {expected:?}: {record:?}"),
            }
        }
        h.producer.flush().await;
        let violations = std::mem::take(&mut *h.violations.lock().unwrap());
        assert!(
            violations.is_empty(),
            "PutRecords entries Kinesis would refuse: {violations:#?}"
        );
        for (i, hash_key, put) in puts {
            let stored = put
                .await
                .unwrap_or_else(|e| panic!("record {i} failed: {e}"));
            assert_eq!(
                stored.shard_id,
                shard_for(&h.shards, hash_key),
                "record {i}"
            );
            assert!(stored.sub_sequence_number < 12, "record {i}: {stored:?}");
        }
    });
});
