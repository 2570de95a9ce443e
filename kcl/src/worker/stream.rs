//! One consumed stream: how its shards are synced into leases and read.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;

use crate::aws::{KinesisApi, RetryPolicy};
use crate::error::Result;
use crate::failure::FailurePolicy;
use crate::lease::{HashKeyRange, Lease, LeaseTable, StreamIdentifier};
use crate::retrieval::{
    FanOutRetriever, PollingRetriever, Retrieval, ShardReader, StartingPosition,
};
use crate::shard::{InitialPosition, ShardSyncer, StreamTarget};

/// How one stream's shards are read: polling or enhanced fan-out.
#[derive(Debug)]
pub(crate) enum Retriever {
    Polling(PollingRetriever),
    FanOut {
        retriever: FanOutRetriever,
        deregister_on_shutdown: bool,
    },
}

impl Retriever {
    /// Starts reading a shard (see [`PollingRetriever::start`], [`FanOutRetriever::start`]).
    pub(crate) async fn start(
        &self,
        shard_id: &str,
        hash_key_range: Option<HashKeyRange>,
        position: StartingPosition,
    ) -> Result<ShardReader> {
        match self {
            Retriever::Polling(polling) => polling.start(shard_id, hash_key_range, position).await,
            Retriever::FanOut { retriever, .. } => {
                retriever.start(shard_id, hash_key_range, position).await
            }
        }
    }

    /// On shutdown: deregisters the fan-out consumer if so configured.
    pub(crate) async fn shut_down(&self) {
        if let Retriever::FanOut {
            retriever,
            deregister_on_shutdown: true,
        } = self
            && let Err(error) = retriever.deregister().await
        {
            tracing::warn!(%error, "could not deregister the stream consumer");
        }
    }
}

/// How a stream's leases are keyed.
#[derive(Debug)]
pub(crate) enum Identity {
    /// Single-stream mode: the lease key is the shard id.
    SingleStream,
    /// Multi-stream mode, with the identifier the application supplied.
    Given(StreamIdentifier),
    /// Multi-stream mode, the identifier found by `DescribeStreamSummary`.
    Describe,
}

/// Everything the worker needs per stream.
#[derive(Debug)]
pub(crate) struct StreamContext {
    /// The stream as configured (name or ARN).
    pub(crate) name: String,
    pub(crate) identifier: Option<StreamIdentifier>,
    pub(crate) initial_position: InitialPosition,
    pub(crate) syncer: ShardSyncer,
    pub(crate) retriever: Retriever,
    pub(crate) deliver_empty_batches: bool,
    /// What happens when `process_records` fails.
    pub(crate) failure: Arc<FailurePolicy>,
    /// How many parallel lanes each shard is processed in (1: one processor per shard).
    pub(crate) lanes: usize,
}

impl StreamContext {
    /// Builds the context; in multi-stream mode, looks up the stream's account and creation
    /// time (`DescribeStreamSummary`) for its lease keys. With fan-out, finds or registers the
    /// stream consumer (named `application` unless configured) and waits until it is ACTIVE.
    pub(crate) async fn new(
        kinesis: &Client,
        table: &LeaseTable,
        stream: &str,
        initial_position: InitialPosition,
        retrieval: &Retrieval,
        application: &str,
        identity: Identity,
    ) -> Result<Self> {
        let identifier = match identity {
            Identity::SingleStream => None,
            Identity::Given(id) => Some(id),
            Identity::Describe => Some(describe_identifier(kinesis, stream).await?),
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
        let (retriever, deliver_empty_batches) = match retrieval {
            Retrieval::Polling(polling) => (
                Retriever::Polling(PollingRetriever::new(
                    kinesis.clone(),
                    stream,
                    polling.clone(),
                )),
                polling.deliver_empty_batches(),
            ),
            Retrieval::FanOut(fan_out) => {
                let config = fan_out.clone().with_default_consumer_name(application);
                (
                    Retriever::FanOut {
                        retriever: FanOutRetriever::register(kinesis.clone(), stream, config)
                            .await?,
                        deregister_on_shutdown: fan_out.deregister_on_shutdown(),
                    },
                    fan_out.deliver_empty_batches(),
                )
            }
        };
        Ok(StreamContext {
            name: stream.to_owned(),
            identifier,
            initial_position,
            syncer,
            retriever,
            deliver_empty_batches,
            failure: Arc::new(FailurePolicy::default()),
            lanes: 1,
        })
    }

    /// The context processing each shard in `lanes` parallel lanes.
    pub(crate) fn with_lanes(mut self, lanes: usize) -> Self {
        self.lanes = lanes.max(1);
        self
    }

    /// The context with `policy` for failed `process_records` calls.
    pub(crate) fn with_failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure = Arc::new(policy);
        self
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

/// How long `DescribeStreamSummary` is retried at start-up (throttling, server errors): its
/// limit is 20 calls per second per account, so a fleet of 100 workers of 5 streams each
/// starting at once needs some 25 s.
const DESCRIBE_RETRY: RetryPolicy = RetryPolicy::new(
    Duration::from_secs(60),
    Duration::from_millis(100),
    Duration::from_secs(5),
);

/// `account:name:epoch` of a stream, from `DescribeStreamSummary`.
async fn describe_identifier(kinesis: &Client, stream: &str) -> Result<StreamIdentifier> {
    let summary = KinesisApi::new(kinesis.clone())
        .describe_stream_summary(&StreamTarget::parse(stream), DESCRIBE_RETRY)
        .await?;
    let arn = summary.stream_arn();
    let account = arn.split(':').nth(4).unwrap_or_default();
    let epoch = u64::try_from(summary.stream_creation_timestamp().secs())
        .unwrap_or(0)
        .max(1);
    StreamIdentifier::new(account, summary.stream_name(), epoch)
}
