//! Stream, consumer and table helpers that wait for the resource to be usable.
//!
//! Free functions over SDK clients, so the examples' demo can use them with its own clients;
//! [`TestBed`](crate::TestBed) has methods that call them with its clients.

use std::time::Duration;

use aws_sdk_kinesis::types::{ConsumerStatus, StreamStatus};

use crate::BedError;
use crate::wait::poll_until;

/// Creates a provisioned stream with `shards` shards and waits until it is ACTIVE.
pub async fn create_stream(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    shards: u32,
    timeout: Duration,
) -> Result<(), BedError> {
    let shard_count = i32::try_from(shards).map_err(|_| BedError::Backend {
        backend: "any",
        message: format!(
            "shard count {shards} exceeds the API's limit of {}",
            i32::MAX
        ),
    })?;
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shard_count)
        .send()
        .await
        .map_err(|e| BedError::kinesis("CreateStream", e))?;
    wait_for_stream_active(client, name, timeout).await
}

/// Waits until the stream's status is ACTIVE (after creation, resharding or a mode change).
pub async fn wait_for_stream_active(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    timeout: Duration,
) -> Result<(), BedError> {
    poll_until(&format!("stream {name}"), "ACTIVE", timeout, || async {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .map_err(|e| BedError::kinesis("DescribeStreamSummary", e))?;
        Ok(summary
            .stream_description_summary()
            .is_some_and(|s| *s.stream_status() == StreamStatus::Active))
    })
    .await
}

/// Registers an enhanced fan-out consumer on the stream (by ARN) and waits until it is ACTIVE;
/// returns the consumer ARN.
pub async fn register_consumer(
    client: &aws_sdk_kinesis::Client,
    stream_arn: &str,
    consumer_name: &str,
    timeout: Duration,
) -> Result<String, BedError> {
    let registered = client
        .register_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name(consumer_name)
        .send()
        .await
        .map_err(|e| BedError::kinesis("RegisterStreamConsumer", e))?;
    let arn = registered
        .consumer()
        .map(|c| c.consumer_arn().to_owned())
        .ok_or_else(|| BedError::Backend {
            backend: "any",
            message: "RegisterStreamConsumer returned no consumer".to_owned(),
        })?;
    poll_until(
        &format!("stream consumer {consumer_name}"),
        "ACTIVE",
        timeout,
        || async {
            let described = client
                .describe_stream_consumer()
                .consumer_arn(&arn)
                .send()
                .await
                .map_err(|e| BedError::kinesis("DescribeStreamConsumer", e))?;
            Ok(described
                .consumer_description()
                .is_some_and(|d| *d.consumer_status() == ConsumerStatus::Active))
        },
    )
    .await?;
    Ok(arn)
}

/// The stream's ARN, from DescribeStreamSummary.
pub async fn stream_arn(client: &aws_sdk_kinesis::Client, name: &str) -> Result<String, BedError> {
    let summary = client
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .map_err(|e| BedError::kinesis("DescribeStreamSummary", e))?;
    summary
        .stream_description_summary()
        .map(|s| s.stream_arn().to_owned())
        .ok_or_else(|| BedError::Backend {
            backend: "any",
            message: format!("DescribeStreamSummary for {name} returned no summary"),
        })
}
