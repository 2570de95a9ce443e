//! The Kinesis call layer: every Kinesis request the crate sends is built and sent by
//! [`KinesisApi`], as every DynamoDB request goes through [`LeaseTable`](crate::lease::LeaseTable).
//!
//! | call | retried here | the caller handles |
//! |---|---|---|
//! | `ListShards`, every page ([`KinesisApi::list_shards`]) | transient errors, per page, within the caller's [`RetryPolicy`] | `InvalidArgumentException` on a `ShardFilter` (shard sync lists again without it) |
//! | `DescribeStreamSummary` ([`KinesisApi::describe_stream_summary`]) | transient errors, within the caller's [`Retries`] | — |
//! | `GetShardIterator`, `GetRecords` ([`KinesisApi::get_shard_iterator`], [`KinesisApi::get_records`]) | no: one attempt | polling's throttling backoff and metrics, expired iterators, a shard not found |
//! | `SubscribeToShard` ([`KinesisApi::subscribe_to_shard`]) | no: one attempt | fan-out's backoff, `ResourceInUseException`, a shard not found |
//! | `DescribeStreamConsumer` ([`KinesisApi::describe_stream_consumer`]) | no: one attempt | the registration's wait for `ACTIVE` |
//! | `RegisterStreamConsumer`, `DeregisterStreamConsumer` ([`KinesisApi::register_stream_consumer`], [`KinesisApi::deregister_stream_consumer`]) | transient errors, within the caller's [`Retries`] | a consumer registered concurrently, or already gone |
//!
//! "Transient" is [`classify`](super::classify)'s answer, the same for every call. All of it
//! runs on top of the SDK client's own retry layer. A layer made with
//! [`KinesisApi::with_request_timeout`] gives every call that operation timeout.

mod consumers;
mod list_shards;

pub(crate) use list_shards::ListShards;

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::get_records::{GetRecordsError, GetRecordsOutput};
use aws_sdk_kinesis::operation::get_shard_iterator::{
    GetShardIteratorError, GetShardIteratorOutput,
};
use aws_sdk_kinesis::operation::subscribe_to_shard::{
    SubscribeToShardError, SubscribeToShardOutput,
};
use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition, StreamDescriptionSummary};
use aws_smithy_types::DateTime;

use super::retry::{Retries, retrying};
use super::target::StreamTarget;
use crate::error::{Error, Result};

#[cfg(doc)]
use super::RetryPolicy;

/// Sends a fluent request, with the layer's operation timeout if it has one.
macro_rules! send {
    ($api:expr, $request:expr) => {
        match $api.request_timeout {
            Some(timeout) => {
                $request
                    .customize()
                    .config_override($crate::aws::kinesis::timeout_override(timeout))
                    .send()
                    .await
            }
            None => $request.send().await,
        }
    };
}
use send;

/// The Kinesis calls of the crate, through one client.
#[derive(Clone, Debug)]
pub(crate) struct KinesisApi {
    client: Client,
    request_timeout: Option<Duration>,
}

impl KinesisApi {
    /// Calls through `client`, with its own timeouts.
    pub(crate) fn new(client: Client) -> Self {
        KinesisApi {
            client,
            request_timeout: None,
        }
    }

    /// The same layer giving every call the operation timeout `timeout` (retries of the SDK
    /// client included).
    pub(crate) fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// `DescribeStreamSummary` of `target`, by name or ARN.
    ///
    /// # Errors
    ///
    /// [`Error::Kinesis`] if the call fails (after `retries` for transient errors);
    /// [`Error::Worker`] if the response holds no summary.
    pub(crate) async fn describe_stream_summary(
        &self,
        target: &StreamTarget,
        retries: impl Into<Retries>,
    ) -> Result<StreamDescriptionSummary> {
        let request = match target {
            StreamTarget::Arn(arn) => self.client.describe_stream_summary().stream_arn(arn),
            StreamTarget::Name(name) => self.client.describe_stream_summary().stream_name(name),
        };
        let out = retrying(
            retries,
            || {
                let request = request.clone();
                async move { send!(self, request) }
            },
            log_retry("DescribeStreamSummary", target.as_str()),
        )
        .await
        .map_err(|e| kinesis_error("DescribeStreamSummary", target.as_str(), e))?;
        out.stream_description_summary.ok_or_else(|| {
            Error::Worker(format!("DescribeStreamSummary of `{target}` returned no summary").into())
        })
    }

    /// One `GetShardIterator` for `shard_id` of `target`.
    pub(crate) async fn get_shard_iterator(
        &self,
        target: &StreamTarget,
        shard_id: &str,
        kind: ShardIteratorType,
        sequence_number: Option<String>,
        timestamp: Option<DateTime>,
    ) -> std::result::Result<GetShardIteratorOutput, SdkError<GetShardIteratorError, HttpResponse>>
    {
        let request = self
            .client
            .get_shard_iterator()
            .shard_id(shard_id)
            .shard_iterator_type(kind)
            .set_starting_sequence_number(sequence_number)
            .set_timestamp(timestamp);
        let request = match target {
            StreamTarget::Arn(arn) => request.stream_arn(arn),
            StreamTarget::Name(name) => request.stream_name(name),
        };
        send!(self, request)
    }

    /// One `GetRecords` with `iterator` (`StreamARN` is sent when `target` is an ARN).
    pub(crate) async fn get_records(
        &self,
        target: &StreamTarget,
        iterator: &str,
        limit: i32,
    ) -> std::result::Result<GetRecordsOutput, SdkError<GetRecordsError, HttpResponse>> {
        let stream_arn = match target {
            StreamTarget::Arn(arn) => Some(arn.clone()),
            StreamTarget::Name(_) => None,
        };
        let request = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .set_stream_arn(stream_arn);
        send!(self, request)
    }

    /// One `SubscribeToShard` of the consumer `consumer_arn` to `shard_id`.
    pub(crate) async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        position: StartingPosition,
    ) -> std::result::Result<SubscribeToShardOutput, SdkError<SubscribeToShardError, HttpResponse>>
    {
        let request = self
            .client
            .subscribe_to_shard()
            .consumer_arn(consumer_arn)
            .shard_id(shard_id)
            .starting_position(position);
        send!(self, request)
    }
}

/// The config override giving a call the operation timeout `timeout`.
pub(crate) fn timeout_override(timeout: Duration) -> aws_sdk_kinesis::config::Builder {
    aws_sdk_kinesis::config::Builder::default()
        .timeout_config(TimeoutConfig::builder().operation_timeout(timeout).build())
}

/// The `notify` of [`retrying`] for a Kinesis call: a debug line.
fn log_retry<'a, E: ProvideErrorMetadata>(
    operation: &'static str,
    stream: &'a str,
) -> impl FnMut(&SdkError<E, HttpResponse>, Duration) + 'a {
    move |e, delay| {
        tracing::debug!(
            operation,
            stream,
            code = e.code().unwrap_or("-"),
            ?delay,
            "transient Kinesis error, retrying"
        );
    }
}

/// A failed Kinesis call as the crate's [`Error::Kinesis`].
pub(crate) fn kinesis_error<E>(
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
