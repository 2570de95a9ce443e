//! Smoke tests of the bed itself: each proves one wire path works on the selected backend
//! (`KINESIS_TEST_BACKEND`, default embedded) before the libraries rely on it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};
use kinesis_integration::TestBed;
use md5::{Digest, Md5};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The shard whose hash-key range holds MD5(partition key), as Kinesis routes it.
fn shard_for(pk: &str, ranges: &[(String, u128, u128)]) -> String {
    let hash = u128::from_be_bytes(Md5::digest(pk.as_bytes()).into());
    ranges
        .iter()
        .find(|(_, start, end)| (*start..=*end).contains(&hash))
        .map(|(id, _, _)| id.clone())
        .expect("the open shards cover the whole hash-key space")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_records_and_get_records_round_trip_on_four_shards() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(4).await?;
    let kinesis = bed.kinesis();

    let listed = kinesis.list_shards().stream_name(&stream).send().await?;
    let ranges: Vec<(String, u128, u128)> = listed
        .shards()
        .iter()
        .map(|s| {
            let range = s
                .hash_key_range()
                .expect("every shard has a hash-key range");
            (
                s.shard_id().to_owned(),
                range.starting_hash_key().parse().unwrap(),
                range.ending_hash_key().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(ranges.len(), 4);

    // 200 records from 50 keys, in two PutRecords calls (kinesis-mock prefers ~100 per call).
    let mut sent: HashMap<String, (String, String)> = HashMap::new(); // data -> (pk, shard)
    for batch in 0..2 {
        let mut request = kinesis.put_records().stream_name(&stream);
        for i in 0..100 {
            let n = batch * 100 + i;
            let pk = format!("key-{}", n % 50);
            let data = format!("record-{n}");
            sent.insert(data.clone(), (pk.clone(), shard_for(&pk, &ranges)));
            request = request.records(
                PutRecordsRequestEntry::builder()
                    .partition_key(pk)
                    .data(Blob::new(data))
                    .build()?,
            );
        }
        let response = request.send().await?;
        assert_eq!(response.failed_record_count(), Some(0));
        for (entry, i) in response.records().iter().zip(0..) {
            let n = batch * 100 + i;
            let (_, predicted) = &sent[&format!("record-{n}")];
            assert_eq!(
                entry.shard_id(),
                Some(predicted.as_str()),
                "record-{n} routed by MD5"
            );
        }
    }

    // Read every shard from TRIM_HORIZON until it returns nothing more.
    let mut received: BTreeMap<String, String> = BTreeMap::new(); // data -> shard
    for (shard_id, _, _) in &ranges {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator
            .expect("GetShardIterator returns an iterator");
        loop {
            let page = kinesis
                .get_records()
                .shard_iterator(&iterator)
                .send()
                .await?;
            for record in page.records() {
                let data = String::from_utf8(record.data().as_ref().to_vec())?;
                assert!(
                    received.insert(data.clone(), shard_id.clone()).is_none(),
                    "{data} delivered twice"
                );
            }
            match page.next_shard_iterator() {
                Some(next) if !page.records().is_empty() => iterator = next.to_owned(),
                _ => break,
            }
        }
    }
    assert_eq!(
        received.len(),
        sent.len(),
        "every record read back exactly once"
    );
    for (data, shard) in &received {
        assert_eq!(&sent[data].1, shard, "{data} stored on its predicted shard");
    }
    Ok(())
}

#[tokio::test]
async fn conditional_write_failure_is_conditional_check_failed() -> TestResult {
    let bed = TestBed::start().await?;
    let table = bed.create_table("leaseKey").await?;
    let dynamodb = bed.dynamodb();
    let put = || {
        dynamodb
            .put_item()
            .table_name(&table)
            .item("leaseKey", AttributeValue::S("shardId-000000000000".into()))
            .item("leaseCounter", AttributeValue::N("1".into()))
            .condition_expression("attribute_not_exists(leaseKey)")
    };

    put().send().await?;
    let second = put().send().await;
    let error = second.expect_err("the item exists, so the condition must fail");
    let service_error = error.into_service_error();
    assert!(
        service_error.is_conditional_check_failed_exception(),
        "expected ConditionalCheckFailedException, got {service_error:?}"
    );

    let item = dynamodb
        .get_item()
        .table_name(&table)
        .key("leaseKey", AttributeValue::S("shardId-000000000000".into()))
        .consistent_read(true)
        .send()
        .await?;
    assert_eq!(
        item.item().and_then(|i| i.get("leaseCounter")),
        Some(&AttributeValue::N("1".into())),
        "the failed write changed nothing"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_to_shard_delivers_a_record() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    let consumer_arn = bed.register_consumer(&stream).await?;
    let kinesis = bed.kinesis();
    let shard_id = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await?
        .shards()
        .first()
        .map(|s| s.shard_id().to_owned())
        .expect("a one-shard stream has a shard");

    let put = kinesis
        .put_record()
        .stream_name(&stream)
        .partition_key("fan-out")
        .data(Blob::new("pushed over SubscribeToShard"))
        .send()
        .await?;

    let mut subscription = kinesis
        .subscribe_to_shard()
        .consumer_arn(&consumer_arn)
        .shard_id(&shard_id)
        .starting_position(
            StartingPosition::builder()
                .r#type(ShardIteratorType::TrimHorizon)
                .build()?,
        )
        .send()
        .await?;

    let received = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match subscription.event_stream.recv().await? {
                Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)) => {
                    if let Some(record) = event.records().first() {
                        return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(record.clone());
                    }
                }
                Some(_) => {}
                None => return Err("the subscription ended before delivering the record".into()),
            }
        }
    })
    .await??;
    assert_eq!(received.data().as_ref(), b"pushed over SubscribeToShard");
    assert_eq!(received.partition_key(), Some("fan-out"));
    assert_eq!(received.sequence_number(), put.sequence_number());
    Ok(())
}
