//! A Lambda Kinesis event as Lambda delivers it, deaggregated (feature `lambda`).
//!
//! `tests/data/lambda_kinesis_event.json` has the shape of the sample event in the AWS Lambda
//! developer guide ("Using Lambda with Kinesis Data Streams": `Records[].kinesis` with
//! `kinesisSchemaVersion`, `partitionKey`, `sequenceNumber`, base64 `data`, a fractional
//! `approximateArrivalTimestamp` in seconds; `eventID` = shard id and sequence number). Its
//! first record is that sample's plain record; the second holds the aggregate the Python
//! `aws_kinesis_agg` library made for the `repeated_keys` vector of
//! `tests/data/python_aggregates.txt`; the third is the same aggregate with one digest bit
//! flipped.

use std::time::{Duration, UNIX_EPOCH};

use aws_lambda_events::event::kinesis::KinesisEvent;
use kinesis_aggregation::PassThroughReason;
use kinesis_aggregation::lambda::deaggregate_event;

fn event() -> KinesisEvent {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/lambda_kinesis_event.json"
    );
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("a Kinesis event")
}

#[test]
fn a_lambda_event_yields_every_user_record_in_order() {
    let records = deaggregate_event(event());
    assert_eq!(records.len(), 1 + 8 + 1);

    let plain = &records[0];
    assert_eq!(&plain.data()[..], b"Hello, this is a test.");
    assert_eq!(plain.partition_key(), "1");
    assert!(!plain.is_aggregated());
    assert_eq!(plain.sub_sequence_number(), 0);
    assert_eq!(plain.pass_through_reason(), None);
    assert_eq!(
        plain.sequence_number(),
        "49590338271490256608559692538361571095921575989136588898"
    );
    assert_eq!(
        plain.event_id(),
        Some("shardId-000000000006:49590338271490256608559692538361571095921575989136588898")
    );
    assert_eq!(
        plain.event_source_arn(),
        Some("arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream")
    );
    // Lambda's timestamps are fractional seconds; the event types keep them to the second.
    let arrival = plain
        .approximate_arrival_timestamp()
        .duration_since(UNIX_EPOCH)
        .unwrap();
    assert!(
        arrival >= Duration::from_secs(1_545_084_650)
            && arrival < Duration::from_secs(1_545_084_651)
    );

    // The Python library's aggregate: the records and keys it was made from, in order.
    let expected: [(&str, &str); 8] = [
        ("a", "839feae0cbad77f7"),
        ("b", "7435569951ada9a5"),
        ("a", "81727387b43dbbbb"),
        ("c", "f63e799c60fbc862"),
        ("b", "7b7fc2f360ce0b57"),
        ("a", "57d7fc027630b6fe"),
        ("c", "13105807347be763"),
        ("c", "bac8e98837d0b1da"),
    ];
    for (n, (record, (key, data))) in records[1..9].iter().zip(expected).enumerate() {
        assert!(record.is_aggregated());
        assert_eq!(record.partition_key(), key);
        assert_eq!(hex(record.data()), data);
        assert_eq!(record.sub_sequence_number(), n as u64);
        assert_eq!(
            record.sequence_number(),
            "49590338271490256608559692540925702759324208523137515618"
        );
        assert_eq!(record.item_identifier(), record.sequence_number());
        assert_eq!(record.explicit_hash_key(), None);
    }

    // A broken digest: delivered whole, with the reason.
    let broken = &records[9];
    assert!(!broken.is_aggregated());
    assert_eq!(
        broken.pass_through_reason(),
        Some(PassThroughReason::DigestMismatch)
    );
    assert_eq!(broken.partition_key(), "a");
    assert!(
        !format!("{broken:?}").contains("data:"),
        "no payload in Debug"
    );
}

#[test]
fn an_empty_event_yields_nothing() {
    assert!(deaggregate_event(KinesisEvent::default()).is_empty());
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}
