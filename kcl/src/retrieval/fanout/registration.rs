//! Finding, registering and deregistering the stream consumer.
//!
//! `find_or_register` loops on `DescribeStreamConsumer` (by stream ARN and consumer name):
//! `ACTIVE` ends it; `CREATING` and `DELETING` wait; a missing consumer is registered
//! (`RegisterStreamConsumer`; `ResourceInUseException` there means another worker registered
//! it first, which is fine). Transient failures (throttling such as `LimitExceededException`,
//! server errors, timeouts: the crate's one classification) are retried within
//! [`FanOutConfig::registration_retry`]; the loop ends at
//! [`FanOutConfig::registration_timeout`].

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::ConsumerStatus;
use backon::BackoffBuilder;
use tokio::time::Instant;

use super::FanOutConfig;
use crate::aws::classify::is_transient;
use crate::aws::kinesis::kinesis_error;
use crate::aws::retry::Retries;
use crate::aws::{KinesisApi, StreamTarget};
use crate::error::{Error, Result};

/// Most retries of one registration call (`DescribeStreamSummary`, `RegisterStreamConsumer`,
/// `DeregisterStreamConsumer`) within the registration's retry budget: the Java KCL's
/// `registerStreamConsumerRetries` and `maxDescribeStreamSummaryRetries`.
const CALL_RETRIES: usize = 10;

/// How one registration call is retried.
fn call_retries(config: &FanOutConfig) -> Retries {
    Retries {
        policy: config.registration_retry,
        at_most: Some(CALL_RETRIES),
    }
}

fn code<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Option<&str> {
    match error {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

/// The stream's ARN: `stream` itself if it is one, else from `DescribeStreamSummary`.
async fn stream_arn(api: &KinesisApi, stream: &str, config: &FanOutConfig) -> Result<String> {
    if stream.starts_with("arn:") {
        return Ok(stream.to_owned());
    }
    let summary = api
        .describe_stream_summary(&StreamTarget::parse(stream), call_retries(config))
        .await?;
    Ok(summary.stream_arn)
}

/// Finds the consumer `name` of `stream`, registering it if missing, and waits until it is
/// `ACTIVE`. Returns its ARN.
pub(super) async fn find_or_register(
    api: &KinesisApi,
    stream: &str,
    name: &str,
    config: &FanOutConfig,
) -> Result<String> {
    let started = Instant::now();
    let deadline = started + config.registration_retry.budget;
    let stream_arn = stream_arn(api, stream, config).await?;
    let mut pauses = config.registration_retry.backoff().build();
    let mut last_status = "absent".to_owned();
    loop {
        let described = api.describe_stream_consumer(&stream_arn, name).await;
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
                register(api, stream, &stream_arn, name, config).await?;
                // The next description says whether it is ACTIVE already.
                continue;
            }
            Err(error) if is_transient(&error) => {
                tracing::debug!(code = ?code(&error), "DescribeStreamConsumer failed, retrying");
            }
            Err(error) => return Err(kinesis_error("DescribeStreamConsumer", stream, error)),
        }
        let pause = pauses.next().unwrap_or(config.registration_retry.max_delay);
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
    api: &KinesisApi,
    stream: &str,
    stream_arn: &str,
    name: &str,
    config: &FanOutConfig,
) -> Result<()> {
    let result = api
        .register_stream_consumer(stream_arn, name, call_retries(config))
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
    api: &KinesisApi,
    stream: &str,
    consumer_arn: &str,
    config: &FanOutConfig,
) -> Result<()> {
    let result = api
        .deregister_stream_consumer(consumer_arn, call_retries(config))
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
