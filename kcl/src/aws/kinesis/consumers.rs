//! The stream-consumer calls of enhanced fan-out: `DescribeStreamConsumer`,
//! `RegisterStreamConsumer`, `DeregisterStreamConsumer`.

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::deregister_stream_consumer::{
    DeregisterStreamConsumerError, DeregisterStreamConsumerOutput,
};
use aws_sdk_kinesis::operation::describe_stream_consumer::{
    DescribeStreamConsumerError, DescribeStreamConsumerOutput,
};
use aws_sdk_kinesis::operation::register_stream_consumer::{
    RegisterStreamConsumerError, RegisterStreamConsumerOutput,
};

use super::{KinesisApi, log_retry, send};
use crate::aws::retry::{Retries, retrying};

impl KinesisApi {
    /// One `DescribeStreamConsumer` of the consumer `name` of the stream `stream_arn`.
    pub(crate) async fn describe_stream_consumer(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<DescribeStreamConsumerOutput, SdkError<DescribeStreamConsumerError, HttpResponse>>
    {
        let request = self
            .client
            .describe_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name);
        send!(self, request)
    }

    /// `RegisterStreamConsumer` of `name` on the stream `stream_arn`, transient errors retried
    /// within `retries`.
    pub(crate) async fn register_stream_consumer(
        &self,
        stream_arn: &str,
        name: &str,
        retries: impl Into<Retries>,
    ) -> Result<RegisterStreamConsumerOutput, SdkError<RegisterStreamConsumerError, HttpResponse>>
    {
        let request = self
            .client
            .register_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name);
        retrying(
            retries,
            || {
                let request = request.clone();
                async move { send!(self, request) }
            },
            log_retry("RegisterStreamConsumer", stream_arn),
        )
        .await
    }

    /// `DeregisterStreamConsumer` of the consumer `consumer_arn`, transient errors retried
    /// within `retries`.
    pub(crate) async fn deregister_stream_consumer(
        &self,
        consumer_arn: &str,
        retries: impl Into<Retries>,
    ) -> Result<DeregisterStreamConsumerOutput, SdkError<DeregisterStreamConsumerError, HttpResponse>>
    {
        let request = self
            .client
            .deregister_stream_consumer()
            .consumer_arn(consumer_arn);
        retrying(
            retries,
            || {
                let request = request.clone();
                async move { send!(self, request) }
            },
            log_retry("DeregisterStreamConsumer", consumer_arn),
        )
        .await
    }
}
