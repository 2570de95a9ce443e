//! Finding, registering and deregistering the stream consumer.
//!
//! `find_or_register` loops on `DescribeStreamConsumer` (by stream ARN and consumer name):
//! `ACTIVE` ends it; `CREATING` and `DELETING` wait; a missing consumer is registered
//! (`RegisterStreamConsumer`; `ResourceInUseException` there means another worker registered
//! it first, which is fine). Throttling (`LimitExceededException`) and transient failures are
//! retried; the loop ends at [`FanOutConfig::registration_timeout`].

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::ConsumerStatus;
use backon::{BackoffBuilder, ConstantBuilder, Retryable};
use tokio::time::Instant;

use super::FanOutConfig;
use crate::error::{Error, Result};

/// Error codes of the registration calls that are retried.
const RETRIED_CODES: [&str; 5] = [
    "LimitExceededException",
    "InternalFailure",
    "InternalFailureException",
    "ServiceUnavailable",
    "ThrottlingException",
];

/// Whether a failed registration call is worth retrying.
fn retried<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(failure) => failure.is_timeout() || failure.is_io(),
        SdkError::ResponseError(response) => response.raw().status().is_server_error(),
        SdkError::ServiceError(service) => {
            service
                .err()
                .code()
                .is_some_and(|c| RETRIED_CODES.contains(&c))
                || service.raw().status().is_server_error()
        }
        _ => false,
    }
}

fn code<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Option<&str> {
    match error {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

fn kinesis_error<E>(
    operation: &'static str,
    stream: &str,
    error: SdkError<E, HttpResponse>,
) -> Error
where
    aws_sdk_kinesis::Error: From<SdkError<E, HttpResponse>>,
{
    Error::Kinesis {
        operation,
        stream: stream.to_owned(),
        source: Box::new(error.into()),
    }
}

fn timeout_override(config: &FanOutConfig) -> aws_sdk_kinesis::config::Builder {
    aws_sdk_kinesis::config::Builder::default().timeout_config(
        TimeoutConfig::builder()
            .operation_timeout(config.request_timeout)
            .build(),
    )
}

/// The pauses between registration calls: the configured delay with jitter, without end (the
/// deadline bounds them).
fn pauses(config: &FanOutConfig) -> impl Iterator<Item = std::time::Duration> {
    ConstantBuilder::new()
        .with_delay(config.registration_retry_delay)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The stream's ARN: `stream` itself if it is one, else from `DescribeStreamSummary`.
async fn stream_arn(client: &Client, stream: &str, config: &FanOutConfig) -> Result<String> {
    if stream.starts_with("arn:") {
        return Ok(stream.to_owned());
    }
    let output = (|| {
        client
            .describe_stream_summary()
            .stream_name(stream)
            .customize()
            .config_override(timeout_override(config))
            .send()
    })
    .retry(
        ConstantBuilder::new()
            .with_delay(config.registration_retry_delay)
            .with_jitter()
            .with_max_times(10),
    )
    .sleep(tokio::time::sleep)
    .when(retried)
    .notify(|error, delay| {
        tracing::debug!(code = ?code(error), ?delay, "DescribeStreamSummary failed, retrying");
    })
    .await
    .map_err(|error| kinesis_error("DescribeStreamSummary", stream, error))?;
    output
        .stream_description_summary()
        .map(|summary| summary.stream_arn().to_owned())
        .ok_or_else(|| {
            Error::Worker(format!("DescribeStreamSummary of `{stream}` returned no summary").into())
        })
}

/// Finds the consumer `name` of `stream`, registering it if missing, and waits until it is
/// `ACTIVE`. Returns its ARN.
pub(super) async fn find_or_register(
    client: &Client,
    stream: &str,
    name: &str,
    config: &FanOutConfig,
) -> Result<String> {
    let started = Instant::now();
    let deadline = started + config.registration_timeout;
    let stream_arn = stream_arn(client, stream, config).await?;
    let mut pauses = pauses(config);
    let mut last_status = "absent".to_owned();
    loop {
        let described = client
            .describe_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(name)
            .customize()
            .config_override(timeout_override(config))
            .send()
            .await;
        match described {
            Ok(output) => match output.consumer_description() {
                Some(description) => {
                    let status = description.consumer_status();
                    if *status == ConsumerStatus::Active {
                        tracing::info!(
                            consumer_arn = description.consumer_arn(),
                            waited = ?started.elapsed(),
                            "stream consumer ACTIVE"
                        );
                        return Ok(description.consumer_arn().to_owned());
                    }
                    last_status = status.as_str().to_owned();
                    tracing::debug!(status = %last_status, "stream consumer not ACTIVE yet");
                }
                None => last_status = "absent".to_owned(),
            },
            Err(error)
                if code(&error) == Some("ResourceNotFoundException")
                    || error
                        .as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                last_status = "absent".to_owned();
                register(client, stream, &stream_arn, name, config).await?;
                // The next description says whether it is ACTIVE already.
                continue;
            }
            Err(error) if retried(&error) => {
                tracing::debug!(code = ?code(&error), "DescribeStreamConsumer failed, retrying");
            }
            Err(error) => return Err(kinesis_error("DescribeStreamConsumer", stream, error)),
        }
        let pause = pauses.next().unwrap_or(config.registration_retry_delay);
        if Instant::now() + pause > deadline {
            return Err(Error::ConsumerNotActive {
                stream: stream.to_owned(),
                consumer: name.to_owned(),
                status: last_status,
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(pause).await;
    }
}

/// One `RegisterStreamConsumer` (retried when throttled or transient). A consumer that exists
/// already (`ResourceInUseException`: another worker registered it, or it is being deleted)
/// is not an error: the caller describes it again.
async fn register(
    client: &Client,
    stream: &str,
    stream_arn: &str,
    name: &str,
    config: &FanOutConfig,
) -> Result<()> {
    let result = (|| {
        client
            .register_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name)
            .customize()
            .config_override(timeout_override(config))
            .send()
    })
    .retry(
        ConstantBuilder::new()
            .with_delay(config.registration_retry_delay)
            .with_jitter()
            .with_max_times(10),
    )
    .sleep(tokio::time::sleep)
    .when(retried)
    .notify(|error, delay| {
        tracing::debug!(code = ?code(error), ?delay, "RegisterStreamConsumer failed, retrying");
    })
    .await;
    match result {
        Ok(output) => {
            tracing::info!(
                consumer_arn = output.consumer().map(|c| c.consumer_arn()),
                "stream consumer registered"
            );
            Ok(())
        }
        Err(error)
            if code(&error) == Some("ResourceInUseException")
                || error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            tracing::debug!("stream consumer registered concurrently (or being deleted)");
            Ok(())
        }
        Err(error) => Err(kinesis_error("RegisterStreamConsumer", stream, error)),
    }
}

/// `DeregisterStreamConsumer` by ARN; a consumer already gone is fine.
pub(super) async fn deregister(
    client: &Client,
    stream: &str,
    consumer_arn: &str,
    config: &FanOutConfig,
) -> Result<()> {
    let result = (|| {
        client
            .deregister_stream_consumer()
            .consumer_arn(consumer_arn)
            .customize()
            .config_override(timeout_override(config))
            .send()
    })
    .retry(
        ConstantBuilder::new()
            .with_delay(config.registration_retry_delay)
            .with_jitter()
            .with_max_times(10),
    )
    .sleep(tokio::time::sleep)
    .when(retried)
    .await;
    match result {
        Ok(_) => {
            tracing::info!(consumer_arn, "stream consumer deregistered");
            Ok(())
        }
        Err(error)
            if code(&error) == Some("ResourceNotFoundException")
                || error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(())
        }
        Err(error) => Err(kinesis_error("DeregisterStreamConsumer", stream, error)),
    }
}
