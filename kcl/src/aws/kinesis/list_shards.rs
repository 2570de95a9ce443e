//! `ListShards`, every page.
//!
//! Pages are followed with `NextToken`, as the Java `KinesisShardDetector` does. Some servers
//! do not accept a `NextToken` on its own (the embedded ferrokinesis 0.7 answers
//! `ResourceNotFoundException`, and real Kinesis rejects a token older than 300 s with
//! `ExpiredNextTokenException`): when a continuation fails with a service error that is not
//! transient, the page is requested again with the stream and `ExclusiveStartShardId` (the last
//! shard id received), which every server supports, and the rest of the listing continues that
//! way. A server that keeps answering the same page ends the listing.
//!
//! The SDK has no paginator for `ListShards` (the Kinesis model does not mark it paginated: a
//! continuation must not name the stream), and this fallback needs the pages' shard ids, so the
//! pages are followed here.
//!
//! A stream given by ARN ([`StreamTarget::Arn`]) is listed with `StreamARN` and the
//! `StreamName` taken from the ARN, as the Java KCL sends them (Kinesis accepts both together).
//! ferrokinesis 0.7 reads only `StreamName` in `ListShards` (an ARN alone is answered with
//! `InvalidArgumentException`), so it works there thanks to the name.

use std::collections::BTreeMap;

use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
use aws_sdk_kinesis::operation::list_shards::builders::ListShardsFluentBuilder;
use aws_sdk_kinesis::types::{Shard, ShardFilter};

use super::{KinesisApi, kinesis_error, log_retry, send};
use crate::aws::classify::is_transient;
use crate::aws::retry::{RetryPolicy, retrying};
use crate::aws::target::StreamTarget;
use crate::error::Result;

/// What to list.
#[derive(Clone, Debug)]
pub(crate) struct ListShards<'a> {
    /// The stream.
    pub(crate) target: &'a StreamTarget,
    /// The `ShardFilter` of the first page (and of pages asked with `ExclusiveStartShardId`).
    pub(crate) filter: Option<ShardFilter>,
    /// `MaxResults` of each page (default: the server's).
    pub(crate) page_size: Option<i32>,
    /// How each page is retried.
    pub(crate) retry: RetryPolicy,
}

impl KinesisApi {
    /// Every page of a `ListShards` listing, deduplicated and sorted by shard id.
    ///
    /// # Errors
    ///
    /// [`Error::Kinesis`](crate::Error::Kinesis) (operation `ListShards`) if a page fails with
    /// an error that is not transient, or transient errors outlast the retry policy.
    pub(crate) async fn list_shards(&self, listing: ListShards<'_>) -> Result<Vec<Shard>> {
        let ListShards {
            target,
            filter,
            page_size,
            retry,
        } = listing;
        let page = |exclusive_start: Option<String>| {
            self.first_page(target, filter.clone(), exclusive_start, page_size)
        };
        let mut shards: BTreeMap<String, Shard> = BTreeMap::new();
        let mut out = self.send_page(target, retry, page(None)).await?;
        let mut by_exclusive_start = false;
        let mut previous_token: Option<String> = None;
        loop {
            let token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            let before = shards.len();
            for shard in out.shards.unwrap_or_default() {
                shards.insert(shard.shard_id().to_owned(), shard);
            }
            let Some(token) = token else { break };
            // Guards against a server that keeps answering the same page.
            let stuck = if by_exclusive_start {
                shards.len() == before
            } else {
                previous_token.as_ref() == Some(&token)
            };
            if stuck {
                tracing::warn!(stream = %target, "ListShards paging made no progress, stopping");
                break;
            }
            let last = shards.keys().next_back().cloned();
            if by_exclusive_start {
                out = self.send_page(target, retry, page(last)).await?;
                continue;
            }
            let request = self
                .client
                .list_shards()
                .next_token(token.clone())
                .set_max_results(page_size);
            previous_token = Some(token);
            out = match self.try_page(target, retry, request).await {
                Ok(out) => out,
                Err(e) if matches!(e, SdkError::ServiceError(_)) && !is_transient(&e) => {
                    tracing::debug!(
                        stream = %target,
                        error = %aws_sdk_kinesis::Error::from(e),
                        "ListShards NextToken refused, continuing with ExclusiveStartShardId"
                    );
                    by_exclusive_start = true;
                    self.send_page(target, retry, page(last)).await?
                }
                Err(e) => return Err(kinesis_error("ListShards", target.as_str(), e)),
            };
        }
        Ok(shards.into_values().collect())
    }

    /// A `ListShards` request naming the stream.
    fn first_page(
        &self,
        target: &StreamTarget,
        filter: Option<ShardFilter>,
        exclusive_start_shard_id: Option<String>,
        page_size: Option<i32>,
    ) -> ListShardsFluentBuilder {
        let request = self.client.list_shards();
        // With an ARN, the name goes along too, as the Java `KinesisShardDetector` sends it
        // (Kinesis accepts both; servers that only read `StreamName` then work as well).
        let request = match target {
            StreamTarget::Name(name) => request.stream_name(name),
            StreamTarget::Arn(arn) => request
                .stream_arn(arn)
                .set_stream_name(target.stream_name().map(str::to_owned)),
        };
        request
            .set_shard_filter(filter)
            .set_exclusive_start_shard_id(exclusive_start_shard_id)
            .set_max_results(page_size)
    }

    /// One page, retried; its error as [`Error::Kinesis`](crate::Error::Kinesis).
    async fn send_page(
        &self,
        target: &StreamTarget,
        retry: RetryPolicy,
        request: ListShardsFluentBuilder,
    ) -> Result<ListShardsOutput> {
        self.try_page(target, retry, request)
            .await
            .map_err(|e| kinesis_error("ListShards", target.as_str(), e))
    }

    /// One page, retried.
    async fn try_page(
        &self,
        target: &StreamTarget,
        retry: RetryPolicy,
        request: ListShardsFluentBuilder,
    ) -> std::result::Result<
        ListShardsOutput,
        SdkError<
            aws_sdk_kinesis::operation::list_shards::ListShardsError,
            aws_sdk_kinesis::config::http::HttpResponse,
        >,
    > {
        retrying(
            retry,
            || {
                let request = request.clone();
                async move { send!(self, request) }
            },
            log_retry("ListShards", target.as_str()),
        )
        .await
    }
}
