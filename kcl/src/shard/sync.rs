//! Shard discovery and lease bookkeeping for one stream: [`ShardSyncer`] lists the shards
//! (`ListShards`), creates the leases the lineage rules call for, creates children's leases
//! at a shard's end, and deletes the leases of finished shards.
//!
//! The decisions are the pure functions of [`lineage`](super::lineage); this module only does
//! the I/O around them. Every write is idempotent (`create_lease_if_absent`, `DeleteItem`), so
//! any number of workers may run the same syncer concurrently.
//!
//! # How a worker uses it
//!
//! - at start-up and periodically (the Java KCL: every few minutes, and whenever a shard
//!   ends without reported children), [`ShardSyncer::sync`];
//! - when `GetRecords` / `SubscribeToShard` reports the end of a shard with its `ChildShards`,
//!   [`ShardSyncer::create_child_leases`] before checkpointing `SHARD_END`;
//! - before processing a lease, [`ShardSyncer::blocking_parents`] (or
//!   [`LeaseLineage`](super::LeaseLineage) on a scan it already has);
//! - periodically (the Java KCL: every few minutes), [`ShardSyncer::clean_up`].
//!
//! # `ListShards`
//!
//! Every page is followed (the paging, with its fallback for servers that refuse a bare
//! `NextToken`, and how a stream given by ARN is named, are the crate's Kinesis call layer's),
//! with a configurable page size ([`ShardSyncer::with_page_size`]); transient errors are
//! retried per page within [`ShardSyncer::with_retry`]'s policy.
//!
//! On an empty lease table the listing carries the `ShardFilter` of the initial position
//! (`AT_LATEST`, `AT_TRIM_HORIZON`, `AT_TIMESTAMP`), as in Java. Servers that ignore the filter
//! (ferrokinesis 0.7 does) return every shard, so the filter is applied again on the client
//! ([`shards_at_initial_position`]); a server that rejects it with
//! `InvalidArgumentException` is asked again without it.
//!
//! A stream given by ARN ([`StreamTarget::Arn`]) is listed with `StreamARN` and the
//! `StreamName` taken from the ARN, as the Java KCL sends them.

use std::time::Duration;

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::list_shards::ListShardsError;
use aws_sdk_kinesis::types::{ShardFilter, ShardFilterType};

use super::lineage::{
    LeaseDeletion, NewLease, ShardInfo, bootstrap_leases, inconsistent_shards,
    is_hash_range_complete, leases_to_delete, plan_new_leases, shards_at_initial_position,
    sibling_lease_key,
};
use super::{ChildShard, InitialPosition};
use crate::aws::KinesisApi;
pub use crate::aws::StreamTarget;
use crate::aws::kinesis::ListShards;
use crate::aws::kinesis::kinesis_error;
use crate::error::{Error, Result};
use crate::lease::{HashKeyRange, Lease, LeaseTable, RetryPolicy, StreamIdentifier};
use crate::sequence::SequenceNumber;

/// Default number of listings tried on an empty lease table before giving up on a listing
/// that does not cover the hash key space (the Java KCL's 3).
pub(crate) const DEFAULT_LISTING_ATTEMPTS: u32 = 3;

/// Default pause between those listings (the Java KCL's 1 s).
pub(crate) const DEFAULT_LISTING_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The largest `MaxResults` `ListShards` accepts.
const MAX_PAGE_SIZE: u32 = 10_000;

/// What [`ShardSyncer::sync`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// Shards in the listing the decision was made on (on an empty table: the shards open at
    /// the initial position).
    pub shards_seen: usize,
    /// Whether the stream had no lease yet, so the bootstrap rule applied.
    pub bootstrap: bool,
    /// Keys of the leases this call created, in creation order.
    pub created: Vec<String>,
    /// Keys of leases it meant to create that existed already (another worker was faster).
    pub already_present: Vec<String>,
    /// Open shards skipped because the listing showed their parent still open (a reshard
    /// was under way); the next sync picks them up.
    pub inconsistent_shards: Vec<String>,
}

/// What [`ShardSyncer::create_child_leases`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildLeases {
    /// Every child has a lease now.
    Created {
        /// Keys of the leases this call created.
        created: Vec<String>,
        /// Keys of children's leases that existed already.
        already_present: Vec<String>,
    },
    /// The only child is a merge whose other parent has no lease yet, so nothing was created
    /// (as the Java `ShutdownTask`): the child must not start before that parent's lease
    /// exists and ends. Keep the lease, do not checkpoint `SHARD_END` yet, and call again
    /// later.
    Deferred {
        /// The merged child.
        child_shard_id: String,
        /// The key of the other parent's missing lease.
        missing_parent_lease_key: String,
    },
}

/// What [`ShardSyncer::clean_up`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanupReport {
    /// Shards listed (0 when no lease was finished, so no listing was needed).
    pub shards_seen: usize,
    /// The leases deleted, parents first.
    pub deleted: Vec<LeaseDeletion>,
}

/// Shard discovery and lease bookkeeping for one stream (the Java `ShardSyncTaskManager` /
/// `HierarchicalShardSyncer` / `LeaseCleanupManager` trio, without their threads: the worker
/// calls the methods on its own schedule).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use kinesis_kcl::lease::{ExtendedSequenceNumber, LeaseTable, TableOptions};
/// use kinesis_kcl::shard::{InitialPosition, ShardSyncer};
///
/// let bed = kinesis_integration::TestBed::start().await?;
/// let stream = bed.create_stream(2).await?;
/// let table = LeaseTable::new(bed.dynamodb().clone(), bed.unique_table_name());
/// table.ensure_table(&TableOptions::default()).await?;
///
/// let syncer = ShardSyncer::new(bed.kinesis().clone(), table.clone(), stream.as_str(),
///     InitialPosition::TrimHorizon);
/// let report = syncer.sync().await?;
/// assert_eq!(report.created.len(), 2);
/// let leases = table.list_leases().await?;
/// assert!(leases.iter().all(|l| l.checkpoint == ExtendedSequenceNumber::TRIM_HORIZON));
///
/// // Syncing again (from this or any other worker) creates nothing more.
/// assert!(syncer.sync().await?.created.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ShardSyncer {
    kinesis: KinesisApi,
    table: LeaseTable,
    target: StreamTarget,
    stream: Option<StreamIdentifier>,
    position: InitialPosition,
    page_size: Option<i32>,
    retry: RetryPolicy,
    listing_attempts: u32,
    listing_retry_delay: Duration,
}

impl ShardSyncer {
    /// A syncer for the stream `target` (a name, or an ARN starting with `arn:`), whose new
    /// leases start at `position`, in single-stream mode (lease key = shard id).
    pub fn new(
        kinesis: aws_sdk_kinesis::Client,
        table: LeaseTable,
        target: impl Into<StreamTarget>,
        position: InitialPosition,
    ) -> Self {
        ShardSyncer {
            kinesis: KinesisApi::new(kinesis),
            table,
            target: target.into(),
            stream: None,
            position,
            page_size: None,
            retry: RetryPolicy::default(),
            listing_attempts: DEFAULT_LISTING_ATTEMPTS,
            listing_retry_delay: DEFAULT_LISTING_RETRY_DELAY,
        }
    }

    /// Multi-stream mode: leases are keyed `<account>:<stream>:<epoch>:<shard>` and only
    /// this stream's leases are considered.
    pub fn with_stream_identifier(mut self, stream: StreamIdentifier) -> Self {
        self.stream = Some(stream);
        self
    }

    /// `MaxResults` of each `ListShards` page, clamped to 1..=10 000 (default: the server's,
    /// 1 000 on AWS).
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        let clamped = page_size.clamp(1, MAX_PAGE_SIZE);
        self.page_size = Some(i32::try_from(clamped).unwrap_or(i32::MAX));
        self
    }

    /// How transient Kinesis errors are retried (default [`RetryPolicy::default`]).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// On an empty table, how many listings to try for one that covers the hash key space,
    /// and the pause between them (defaults 3 and 1 s).
    pub fn with_listing_retries(mut self, attempts: u32, delay: Duration) -> Self {
        self.listing_attempts = attempts.max(1);
        self.listing_retry_delay = delay;
        self
    }

    /// The stream.
    pub fn target(&self) -> &StreamTarget {
        &self.target
    }

    /// The multi-stream identifier, in multi-stream mode.
    pub fn stream_identifier(&self) -> Option<&StreamIdentifier> {
        self.stream.as_ref()
    }

    /// Where new leases start.
    pub fn initial_position(&self) -> InitialPosition {
        self.position
    }

    /// The lease table.
    pub fn table(&self) -> &LeaseTable {
        &self.table
    }

    /// The lease key of `shard_id` in this syncer's mode.
    pub fn lease_key(&self, shard_id: &str) -> String {
        match &self.stream {
            Some(stream) => stream.lease_key(shard_id),
            None => shard_id.to_owned(),
        }
    }

    /// This stream's leases: in multi-stream mode those of the stream identifier, otherwise
    /// the single-stream leases (a multi-stream lease in the table is not ours).
    ///
    /// # Errors
    ///
    /// As [`LeaseTable::list_leases`].
    pub async fn stream_leases(&self) -> Result<Vec<Lease>> {
        let mut leases = self.table.list_leases().await?;
        leases.retain(|l| match (&self.stream, &l.multi_stream) {
            (Some(stream), Some(ms)) => ms.stream == *stream,
            (None, None) => true,
            _ => false,
        });
        Ok(leases)
    }

    /// The children of `shard_id` as `ListShards` lists them: for a shard whose end came
    /// without its children (it was not found, being trimmed after its retention period),
    /// as the Java `ShutdownTask` asks its shard detector. Empty if none is listed.
    ///
    /// # Errors
    ///
    /// As [`list_shards`](Self::list_shards).
    pub async fn listed_children(&self, shard_id: &str) -> Result<Vec<ChildShard>> {
        Ok(children_in_listing(shard_id, &self.list_shards().await?))
    }

    /// Every shard of the stream still listed (open and closed), sorted by shard id,
    /// following all pages.
    ///
    /// # Errors
    ///
    /// [`Error::Kinesis`] if `ListShards` fails (a missing stream is
    /// `ResourceNotFoundException`); [`Error::InvalidValue`] if a shard lacks its hash key or
    /// sequence number range, or has malformed ones.
    pub async fn list_shards(&self) -> Result<Vec<ShardInfo>> {
        self.list(None).await
    }

    /// The shards open at the initial position (see [`shards_at_initial_position`]), from a
    /// listing that covers the hash key space: listings are retried as configured by
    /// [`with_listing_retries`](Self::with_listing_retries).
    ///
    /// # Errors
    ///
    /// As [`list_shards`](Self::list_shards); [`Error::IncompleteShardListing`] if no
    /// listing covered the hash key space.
    pub async fn list_shards_at_initial_position(&self) -> Result<Vec<ShardInfo>> {
        let filter = self.initial_filter()?;
        for attempt in 1..=self.listing_attempts {
            let listed = match self.list(Some(filter.clone())).await {
                Err(Error::Kinesis { source, .. })
                    if matches!(*source, aws_sdk_kinesis::Error::InvalidArgumentException(_)) =>
                {
                    tracing::debug!(stream = %self.target, "ShardFilter rejected, listing all shards");
                    self.list(None).await?
                }
                other => other?,
            };
            let open: Vec<ShardInfo> = shards_at_initial_position(&listed, self.position)
                .into_iter()
                .cloned()
                .collect();
            if is_hash_range_complete(&open) {
                return Ok(open);
            }
            tracing::info!(stream = %self.target, attempt, "shard listing does not cover the hash key space");
            if attempt < self.listing_attempts {
                tokio::time::sleep(self.listing_retry_delay).await;
            }
        }
        Err(Error::IncompleteShardListing {
            stream: self.target.to_string(),
            attempts: self.listing_attempts,
        })
    }

    /// Creates the leases the lineage rules call for, and reports what it did.
    ///
    /// With no lease of this stream in the table, every shard open at the initial position
    /// gets a lease at it ([`bootstrap_leases`]); otherwise the full listing and the leases
    /// decide ([`plan_new_leases`]). (Java picks between the two on whether the *whole* table
    /// is empty; here a stream added to a multi-stream table bootstraps too. The outcome only
    /// differs for `AT_TIMESTAMP`, where the filtered listing can start at younger shards.) Leases are created with
    /// [`LeaseTable::create_lease_if_absent`], oldest shards first, so concurrent syncs from
    /// several workers create each lease once.
    ///
    /// # Errors
    ///
    /// As [`stream_leases`](Self::stream_leases), [`list_shards`](Self::list_shards),
    /// [`list_shards_at_initial_position`](Self::list_shards_at_initial_position) and
    /// [`LeaseTable::create_lease_if_absent`]. Leases created before an error stay.
    pub async fn sync(&self) -> Result<SyncReport> {
        let leases = self.stream_leases().await?;
        let mut report = SyncReport::default();
        let planned = if leases.is_empty() {
            let shards = self.list_shards_at_initial_position().await?;
            report.bootstrap = true;
            report.shards_seen = shards.len();
            bootstrap_leases(&shards, self.position)
        } else {
            let shards = self.list_shards().await?;
            report.shards_seen = shards.len();
            if shards.is_empty() {
                tracing::warn!(stream = %self.target, "no shards listed, skipping shard sync");
                return Ok(report);
            }
            report.inconsistent_shards = inconsistent_shards(&shards).into_iter().collect();
            plan_new_leases(&shards, &leases, self.position)
        };
        for new in planned {
            let lease = new.into_lease(self.stream.as_ref());
            if self.table.create_lease_if_absent(&lease).await? {
                report.created.push(lease.lease_key);
            } else {
                report.already_present.push(lease.lease_key);
            }
        }
        tracing::info!(
            stream = %self.target,
            created = report.created.len(),
            shards = report.shards_seen,
            "shard sync done"
        );
        Ok(report)
    }

    /// At the end of `parent`'s shard, creates the leases of its `children` (from the
    /// `ChildShards` of `GetRecords` or `SubscribeToShard`) unless they exist: at
    /// `TRIM_HORIZON`, with their parents and hash key ranges, keyed like `parent`.
    ///
    /// As the Java `ShutdownTask`: when the only child is a merge whose other parent has no
    /// lease, and the child has none either, nothing is created ([`ChildLeases::Deferred`]);
    /// the worker then keeps the parent short of `SHARD_END` and calls again every second.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] if a child names no parent, or the only child does not name
    /// two parents (a merge always has two); otherwise as [`LeaseTable::get_lease`] and
    /// [`LeaseTable::create_lease_if_absent`].
    pub async fn create_child_leases(
        &self,
        parent: &Lease,
        children: &[ChildShard],
    ) -> Result<ChildLeases> {
        let new: Vec<NewLease> = children
            .iter()
            .map(NewLease::for_child)
            .collect::<Result<_>>()?;
        if let [child] = children {
            if child.parent_shard_ids.len() != 2 {
                return Err(Error::invalid_value(
                    "child shard",
                    &child.shard_id,
                    "the only child of a shard must be a merge naming two parents",
                ));
            }
            let mut missing = None;
            let mut present = 0;
            for p in &child.parent_shard_ids {
                let key = sibling_lease_key(parent, p);
                if self.table.get_lease(&key).await?.is_some() {
                    present += 1;
                } else {
                    missing = Some(key);
                }
            }
            // Deferred only while the child has no lease either: one that exists (the other
            // parent ended first and created it, and its lease may be gone since, trimmed
            // and cleaned up) cannot be made to wait for a lease that will never come back.
            let child_key = sibling_lease_key(parent, &child.shard_id);
            if let (1, Some(missing_parent_lease_key)) = (present, missing)
                && self.table.get_lease(&child_key).await?.is_none()
            {
                return Ok(ChildLeases::Deferred {
                    child_shard_id: child.shard_id.clone(),
                    missing_parent_lease_key,
                });
            }
        }
        let stream = parent.multi_stream.as_ref().map(|ms| &ms.stream);
        let mut created = Vec::new();
        let mut already_present = Vec::new();
        for child in new {
            let lease = child.into_lease(stream);
            if self.table.create_lease_if_absent(&lease).await? {
                created.push(lease.lease_key);
            } else {
                already_present.push(lease.lease_key);
            }
        }
        Ok(ChildLeases::Created {
            created,
            already_present,
        })
    }

    /// The parent leases that keep `lease` from being processed (present and not at
    /// `SHARD_END`), read from the table one `GetItem` each (the Java
    /// `BlockOnParentShardTask`). Empty: the lease may be processed.
    ///
    /// # Errors
    ///
    /// As [`LeaseTable::get_lease`].
    pub async fn blocking_parents(&self, lease: &Lease) -> Result<Vec<Lease>> {
        let mut blocking = Vec::new();
        for p in &lease.parent_shard_ids {
            let parent = self.table.get_lease(&sibling_lease_key(lease, p)).await?;
            blocking.extend(parent.filter(|parent| !parent.is_shard_end()));
        }
        Ok(blocking)
    }

    /// Deletes the leases of finished shards that are no longer needed (see
    /// [`leases_to_delete`]): at `SHARD_END` with every child's lease started and no parent's
    /// lease left, or at `SHARD_END` with the shard gone from the stream. Call it periodically
    /// (the Java KCL checks completed leases every 5 minutes and trimmed ones every 30).
    ///
    /// Deleting is safe against concurrent workers: a lease at `SHARD_END` never changes
    /// again, a started child never goes back, and deleting a deleted lease succeeds.
    ///
    /// # Errors
    ///
    /// As [`stream_leases`](Self::stream_leases), [`list_shards`](Self::list_shards) and
    /// [`LeaseTable::delete_lease`]. Leases deleted before an error stay deleted.
    pub async fn clean_up(&self) -> Result<CleanupReport> {
        let leases = self.stream_leases().await?;
        let mut report = CleanupReport::default();
        if !leases.iter().any(Lease::is_shard_end) {
            return Ok(report);
        }
        let shards = self.list_shards().await?;
        report.shards_seen = shards.len();
        for deletion in leases_to_delete(&leases, &shards) {
            self.table.delete_lease(&deletion.lease_key).await?;
            tracing::info!(lease = %deletion.lease_key, reason = ?deletion.reason, "lease deleted");
            report.deleted.push(deletion);
        }
        Ok(report)
    }

    /// The `ShardFilter` of the initial position, as the Java KCL sends on an empty table.
    fn initial_filter(&self) -> Result<ShardFilter> {
        let builder = match self.position {
            InitialPosition::TrimHorizon => {
                ShardFilter::builder().r#type(ShardFilterType::AtTrimHorizon)
            }
            InitialPosition::Latest => ShardFilter::builder().r#type(ShardFilterType::AtLatest),
            InitialPosition::AtTimestamp(at) => ShardFilter::builder()
                .r#type(ShardFilterType::AtTimestamp)
                .timestamp(aws_smithy_types::DateTime::from(at)),
        };
        builder.build().map_err(|e| {
            self.sdk_error(SdkError::<ListShardsError, HttpResponse>::construction_failure(e))
        })
    }

    /// Every page of a listing, deduplicated and sorted by shard id.
    async fn list(&self, filter: Option<ShardFilter>) -> Result<Vec<ShardInfo>> {
        let shards = self
            .kinesis
            .list_shards(ListShards {
                target: &self.target,
                filter,
                page_size: self.page_size,
                retry: self.retry,
            })
            .await?;
        shards.iter().map(shard_info).collect()
    }

    fn sdk_error(&self, error: SdkError<ListShardsError, HttpResponse>) -> Error {
        kinesis_error("ListShards", self.target.as_str(), error)
    }
}

/// A listed shard as plain data.
fn shard_info(shard: &aws_sdk_kinesis::types::Shard) -> Result<ShardInfo> {
    let id = shard.shard_id();
    let range = shard.hash_key_range().ok_or_else(|| {
        Error::invalid_value("shard", id, "ListShards returned no hash key range")
    })?;
    let sequence = shard.sequence_number_range().ok_or_else(|| {
        Error::invalid_value("shard", id, "ListShards returned no sequence number range")
    })?;
    Ok(ShardInfo {
        shard_id: id.to_owned(),
        parent_shard_id: shard.parent_shard_id().map(str::to_owned),
        adjacent_parent_shard_id: shard.adjacent_parent_shard_id().map(str::to_owned),
        hash_key_range: HashKeyRange::parse(range.starting_hash_key(), range.ending_hash_key())?,
        starting_sequence_number: SequenceNumber::new(sequence.starting_sequence_number())?,
        ending_sequence_number: sequence
            .ending_sequence_number()
            .map(SequenceNumber::new)
            .transpose()?,
    })
}

/// The shards of `listing` that name `shard_id` as a parent (split or merge), as children.
fn children_in_listing(shard_id: &str, listing: &[ShardInfo]) -> Vec<ChildShard> {
    listing
        .iter()
        .filter(|s| {
            s.parent_shard_id.as_deref() == Some(shard_id)
                || s.adjacent_parent_shard_id.as_deref() == Some(shard_id)
        })
        .map(|s| ChildShard {
            shard_id: s.shard_id.clone(),
            parent_shard_ids: s
                .parent_shard_id
                .iter()
                .chain(s.adjacent_parent_shard_id.iter())
                .cloned()
                .collect(),
            hash_key_range: Some(s.hash_key_range),
        })
        .collect()
}
