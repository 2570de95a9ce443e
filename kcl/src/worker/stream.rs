//! One consumed stream: how its shards are synced into leases and read.

use aws_sdk_kinesis::Client;

use crate::error::{Error, Result};
use crate::lease::{Lease, LeaseTable, StreamIdentifier};
use crate::retrieval::{PollingConfig, PollingRetriever};
use crate::shard::{InitialPosition, ShardSyncer, StreamTarget};

/// Everything the worker needs per stream.
#[derive(Debug)]
pub(crate) struct StreamContext {
    /// The stream as configured (name or ARN).
    pub(crate) name: String,
    pub(crate) identifier: Option<StreamIdentifier>,
    pub(crate) initial_position: InitialPosition,
    pub(crate) syncer: ShardSyncer,
    pub(crate) retriever: PollingRetriever,
    pub(crate) deliver_empty_batches: bool,
}

impl StreamContext {
    /// Builds the context; in multi-stream mode, looks up the stream's account and creation
    /// time (`DescribeStreamSummary`) for its lease keys.
    pub(crate) async fn new(
        kinesis: &Client,
        table: &LeaseTable,
        stream: &str,
        initial_position: InitialPosition,
        polling: &PollingConfig,
        multi_stream: bool,
    ) -> Result<Self> {
        let identifier = if multi_stream {
            Some(describe_identifier(kinesis, stream).await?)
        } else {
            None
        };
        let mut syncer = ShardSyncer::new(
            kinesis.clone(),
            table.clone(),
            StreamTarget::parse(stream),
            initial_position,
        );
        if let Some(id) = &identifier {
            syncer = syncer.with_stream_identifier(id.clone());
        }
        Ok(StreamContext {
            name: stream.to_owned(),
            identifier,
            initial_position,
            syncer,
            retriever: PollingRetriever::new(kinesis.clone(), stream, polling.clone()),
            deliver_empty_batches: polling.deliver_empty_batches(),
        })
    }

    /// Whether `lease` belongs to this stream.
    pub(crate) fn owns(&self, lease: &Lease) -> bool {
        match (&self.identifier, &lease.multi_stream) {
            (None, None) => true,
            (Some(id), Some(ms)) => *id == ms.stream,
            _ => false,
        }
    }
}

/// `account:name:epoch` of a stream, from `DescribeStreamSummary`.
async fn describe_identifier(kinesis: &Client, stream: &str) -> Result<StreamIdentifier> {
    let request = match StreamTarget::parse(stream) {
        StreamTarget::Arn(arn) => kinesis.describe_stream_summary().stream_arn(arn),
        StreamTarget::Name(name) => kinesis.describe_stream_summary().stream_name(name),
    };
    let out = request.send().await.map_err(|e| Error::Kinesis {
        operation: "DescribeStreamSummary",
        stream: stream.to_owned(),
        source: Box::new(e.into()),
    })?;
    let summary = out.stream_description_summary().ok_or_else(|| {
        Error::Worker(format!("DescribeStreamSummary of `{stream}` returned no summary").into())
    })?;
    let arn = summary.stream_arn();
    let account = arn.split(':').nth(4).unwrap_or_default();
    let epoch = u64::try_from(summary.stream_creation_timestamp().secs())
        .unwrap_or(0)
        .max(1);
    StreamIdentifier::new(account, summary.stream_name(), epoch)
}
