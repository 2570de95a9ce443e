//! The bed's TLS + HTTP/2 transport: the SDK's own HTTPS client, trusting the bed's test CA,
//! negotiates HTTP/2 with the Kinesis server for regular calls and for `SubscribeToShard`, as
//! real AWS serves it; and the certificate is really checked.
//!
//! Runs on the embedded backend (ferrokinesis over TLS) and on the emulators backend
//! (kinesis-mock's TLS port with the bed's certificate, behind the bed's recording front):
//! `KINESIS_TEST_BACKEND=emulators cargo test -p kinesis-integration --test http2`. On backends
//! without a TLS endpoint of the bed's (LocalStack, endpoint) the bed refuses to start with
//! `KinesisTransport::TlsHttp2`, and these tests fail saying so.

use std::time::Duration;

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
use kinesis_integration::tls::{HttpVersion, ObservedCall};
use kinesis_integration::{BedOptions, KinesisTransport, TestBed};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn h2_bed() -> Result<TestBed, kinesis_integration::BedError> {
    TestBed::start_with_options(BedOptions::default().kinesis_transport(KinesisTransport::TlsHttp2))
        .await
}

/// The calls named `operation` among `calls`; fails the test if there is none.
fn served<'a>(calls: &'a [ObservedCall], operation: &str) -> Vec<&'a ObservedCall> {
    let found: Vec<_> = calls.iter().filter(|c| c.operation == operation).collect();
    assert!(
        !found.is_empty(),
        "no {operation} call was observed; observed: {calls:?}"
    );
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regular_calls_are_served_over_http2() -> TestResult {
    let bed = h2_bed().await?;
    assert_eq!(bed.kinesis_transport(), KinesisTransport::TlsHttp2);
    assert!(
        bed.kinesis_h2_endpoint()
            .is_some_and(|url| url.starts_with("https://127.0.0.1:"))
    );

    let stream = bed.create_stream(2).await?; // CreateStream, DescribeStreamSummary, over TLS.
    let kinesis = bed.kinesis();
    let shards = kinesis.list_shards().stream_name(&stream).send().await?;
    assert_eq!(shards.shards().len(), 2);
    let put = kinesis
        .put_record()
        .stream_name(&stream)
        .partition_key("h2")
        .data(Blob::new("over HTTP/2"))
        .send()
        .await?;
    assert!(!put.sequence_number().is_empty());

    let calls = bed.http_versions();
    for operation in ["CreateStream", "ListShards", "PutRecord"] {
        for call in served(&calls, operation) {
            assert_eq!(
                call.version,
                Some(HttpVersion::Http2),
                "{operation} was not served over HTTP/2: {call:?}"
            );
        }
    }
    assert!(
        calls
            .iter()
            .all(|call| call.version == Some(HttpVersion::Http2)),
        "every call over HTTP/2: {calls:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_to_shard_is_served_over_http2_and_delivers_events() -> TestResult {
    let bed = h2_bed().await?;
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
        .data(Blob::new("pushed over HTTP/2"))
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
    assert_eq!(received.data().as_ref(), b"pushed over HTTP/2");
    assert_eq!(received.sequence_number(), put.sequence_number());

    let calls = bed.http_versions();
    let subscribe = served(&calls, "SubscribeToShard");
    assert_eq!(subscribe.len(), 1, "one subscription, no retry: {calls:?}");
    assert_eq!(
        subscribe[0].version,
        Some(HttpVersion::Http2),
        "SubscribeToShard was not served over HTTP/2: {calls:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_built_from_the_h2_config_are_observed_on_any_transport() -> TestResult {
    // A bed with the default (plain) transport still offers TLS + HTTP/2 on request.
    let bed = TestBed::start().await?;
    assert_eq!(bed.kinesis_transport(), KinesisTransport::Plain);
    bed.kinesis().list_streams().send().await?; // Plain HTTP: not observed.
    assert!(bed.http_versions().is_empty());

    let kinesis = aws_sdk_kinesis::Client::from_conf(
        bed.kinesis_h2_config()?
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    kinesis.list_streams().send().await?;
    let calls = bed.http_versions();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].operation, "ListStreams");
    assert_eq!(calls[0].version, Some(HttpVersion::Http2));
    assert!(calls[0].local_addr.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_own_tls_port_presents_a_certificate_the_test_ca_verifies() -> TestResult {
    let bed = h2_bed().await?;
    let direct = bed
        .kinesis_tls_endpoint()
        .ok_or("the backend has no TLS port")?;
    let trusting = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(bed.sdk_config())
            .endpoint_url(direct)
            .http_client(bed.https_client().ok_or("no test CA")?)
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    trusting.list_streams().send().await?;

    // The SDK's default client does not know the test CA: the handshake must fail.
    let untrusting = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(bed.sdk_config())
            .endpoint_url(direct)
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    let refused = untrusting.list_streams().send().await;
    let error = refused.expect_err("a certificate from an unknown CA must be refused");
    let error = aws_sdk_kinesis::error::DisplayErrorContext(&error).to_string();
    assert!(
        error.contains("certificate") || error.contains("UnknownIssuer"),
        "expected a certificate error, got: {error}"
    );
    Ok(())
}
