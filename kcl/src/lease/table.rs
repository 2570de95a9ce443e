//! The DynamoDB I/O on the lease table: a thin layer that sends the requests the pure core
//! describes ([`Lease::to_item`], [`LeaseWrite::render`]) and reads items back with
//! [`Lease::from_item`].
//!
//! # Capacity per call
//!
//! Lease items are small (about 150–400 bytes; well under 1 KB even with parents, children,
//! hash range and a pending checkpoint). DynamoDB charges a write 1 write request unit (WRU,
//! or WCU when provisioned) per started 1 KB of item size, and a strongly consistent read
//! 1 read request unit (RRU/RCU) per started 4 KB. Hence, per call:
//!
//! | call | request | cost (lease items < 1 KB) |
//! |---|---|---|
//! | [`LeaseTable::ensure_table`] | `DescribeTable` (+ `CreateTable` when missing) | none: control-plane calls consume no capacity |
//! | [`LeaseTable::list_leases`] | consistent `Scan`, every page | 1 RCU per started 4 KB of lease data *per page* (≈ 1 RCU per 10–25 leases); a page holds up to 1 MB |
//! | [`LeaseTable::get_lease`] | consistent `GetItem` | 1 RCU (also when absent) |
//! | [`LeaseTable::create_lease_if_absent`] | conditional `PutItem` | 1 WCU, also when the lease exists (a failed condition is charged) |
//! | [`LeaseTable::apply`] and [`renew`](LeaseTable::renew) / [`take`](LeaseTable::take) / [`evict`](LeaseTable::evict) / [`update_checkpoint`](LeaseTable::update_checkpoint) | conditional `UpdateItem`, `ReturnValues=ALL_NEW` | 1 WCU, also when the condition fails; the returned item costs nothing extra |
//! | [`LeaseTable::delete_lease`] | `DeleteItem` | 1 WCU (also when absent) |
//!
//! Every retried attempt is charged again (a throttled attempt is not). So a worker holding
//! `L` leases with the default [`LeaseConfig`](crate::LeaseConfig) (renewal every 3.33 s, a
//! scan every 3.33 s) spends about `18·L` WCU per minute renewing and
//! `18·⌈L/15⌉` RCU per minute scanning (15 leases per 4 KB), plus 1 WCU per checkpoint.
//!
//! # Retries
//!
//! Transient errors (throttling such as `ThrottlingException`,
//! `ProvisionedThroughputExceededException`, `RequestLimitExceeded`; server errors; timeouts
//! and I/O failures: the crate's one classification, in `aws::classify`) are retried with
//! exponential backoff and jitter until the [`RetryPolicy`]'s total budget is spent
//! (default [`DEFAULT_RETRY_BUDGET`](super::DEFAULT_RETRY_BUDGET)); this is on top of the SDK client's own retry layer.
//! Everything else is returned at once as [`Error::DynamoDb`].

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ProvisionedThroughput, ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TableStatus, Tag,
};
use tokio::time::Instant;

use super::item::{Item, TableItem, attr};
use super::model::Lease;
use super::ops::{CREATE_CONDITION_EXPRESSION, LeaseWrite, UpdateAction, lease_key_item};
use crate::aws::RetryPolicy;
use crate::aws::retry::retrying;
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::sequence::ExtendedSequenceNumber;

/// Default time [`LeaseTable::ensure_table`] waits for the table to become ACTIVE: 120 s
/// (a new table on AWS typically takes 5–30 s).
pub(crate) const DEFAULT_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// How a missing lease table is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Billing {
    /// On-demand (`PAY_PER_REQUEST`), the default (as in the Java KCL 2.x+).
    #[default]
    OnDemand,
    /// Provisioned throughput.
    Provisioned {
        /// Read capacity units.
        read_capacity_units: i64,
        /// Write capacity units.
        write_capacity_units: i64,
    },
}

/// Options for creating the lease table. The defaults: on-demand billing, no tags, no
/// deletion protection (as the Java KCL), wait up to 2 minutes for ACTIVE,
/// polling every second.
///
/// They only matter when the table does not exist yet; an existing table is used as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableOptions {
    billing: Billing,
    tags: Vec<(String, String)>,
    deletion_protection: bool,
    active_timeout: Duration,
    poll_interval: Duration,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            billing: Billing::OnDemand,
            tags: Vec::new(),
            deletion_protection: false,
            active_timeout: DEFAULT_ACTIVE_TIMEOUT,
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl TableOptions {
    /// Sets the billing mode (default [`Billing::OnDemand`]).
    pub fn billing(mut self, billing: Billing) -> Self {
        self.billing = billing;
        self
    }

    /// Adds a tag to the new table.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Enables or disables deletion protection on the new table (default off).
    pub fn deletion_protection(mut self, enabled: bool) -> Self {
        self.deletion_protection = enabled;
        self
    }

    /// How long to wait for the table to become ACTIVE (default 2 minutes).
    pub fn active_timeout(mut self, timeout: Duration) -> Self {
        self.active_timeout = timeout;
        self
    }

    /// How often `DescribeTable` is polled while waiting (default 1 s; the first check is
    /// immediate).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }
}

/// The result of a conditional lease write.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub enum WriteOutcome {
    /// The condition held; the lease as it now is in the table.
    Applied(Lease),
    /// The condition did not hold (someone else renewed, took, evicted or checkpointed the
    /// lease, or it was deleted); nothing was written.
    ConditionFailed {
        /// The lease as it is in the table, when DynamoDB returned it
        /// (`ReturnValuesOnConditionCheckFailure=ALL_OLD`); `None` when the lease does not
        /// exist or the server did not return it.
        current: Option<Lease>,
    },
}

impl WriteOutcome {
    /// The new lease if the write was applied.
    pub fn applied(self) -> Option<Lease> {
        match self {
            WriteOutcome::Applied(lease) => Some(lease),
            WriteOutcome::ConditionFailed { .. } => None,
        }
    }

    /// Whether the condition failed.
    pub fn is_condition_failed(&self) -> bool {
        matches!(self, WriteOutcome::ConditionFailed { .. })
    }
}

/// The lease table: one DynamoDB table in the Java KCL layout, hash key `leaseKey` (S).
///
/// Cheap to clone (the SDK client is reference-counted).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use kinesis_kcl::lease::{ExtendedSequenceNumber, Lease, LeaseTable, TableOptions, WriteOutcome};
///
/// let bed = kinesis_integration::TestBed::start().await?;
/// let table = LeaseTable::new(bed.dynamodb().clone(), bed.unique_table_name());
/// table.ensure_table(&TableOptions::default()).await?;
///
/// let lease = Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON);
/// assert!(table.create_lease_if_absent(&lease).await?);
///
/// let WriteOutcome::Applied(mine) = table.take(&lease, "worker-a").await? else {
///     panic!("nobody else is racing for it");
/// };
/// assert_eq!(mine.lease_owner.as_deref(), Some("worker-a"));
///
/// // A second take from the stale copy fails its condition: the counter moved on.
/// assert!(table.take(&lease, "worker-b").await?.is_condition_failed());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LeaseTable {
    client: Client,
    table_name: String,
    retry: RetryPolicy,
    /// Keys of unreadable items already reported at `warn` (later scans report them at
    /// `debug`, so one corrupt item does not flood the log every second).
    reported: Arc<Mutex<HashSet<String>>>,
}

impl LeaseTable {
    /// A lease table named `table_name`, reached through `client`, with the default
    /// [`RetryPolicy`].
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        LeaseTable {
            client,
            table_name: table_name.into(),
            retry: RetryPolicy::default(),
            reported: Arc::default(),
        }
    }

    /// The same table with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The table name.
    pub fn table_name(&self) -> &str {
        &self.table_name
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Creates the table if it does not exist, then waits until it is usable (ACTIVE, or
    /// UPDATING, during which DynamoDB serves reads and writes).
    ///
    /// Safe to call from many workers at once: a `ResourceInUseException` from
    /// `CreateTable` (someone else created it first) counts as success.
    ///
    /// # Errors
    ///
    /// [`Error::DynamoDb`] for a failed request, [`Error::TableNotActive`] on timeout.
    pub async fn ensure_table(&self, options: &TableOptions) -> Result<()> {
        if self.table_status().await?.is_none() {
            self.create_table(options).await?;
        }
        let deadline = Instant::now() + options.active_timeout;
        loop {
            let status = self.table_status().await?;
            if matches!(status, Some(TableStatus::Active | TableStatus::Updating)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::TableNotActive {
                    table: self.table_name.clone(),
                    status: status.map_or_else(|| "not found".to_owned(), |s| s.to_string()),
                    waited: options.active_timeout,
                });
            }
            tokio::time::sleep(options.poll_interval).await;
        }
    }

    /// The table's status, `None` when it does not exist.
    async fn table_status(&self) -> Result<Option<TableStatus>> {
        let result = self
            .retrying(|| {
                self.client
                    .describe_table()
                    .table_name(&self.table_name)
                    .send()
            })
            .await;
        match result {
            Ok(out) => Ok(Some(
                out.table()
                    .and_then(|t| t.table_status().cloned())
                    .unwrap_or(TableStatus::Creating),
            )),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), DescribeTableError::ResourceNotFoundException(_)) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.sdk_error("DescribeTable", e)),
        }
    }

    async fn create_table(&self, options: &TableOptions) -> Result<()> {
        let build = |e| {
            self.sdk_error(
                "CreateTable",
                SdkError::<CreateTableError, HttpResponse>::construction_failure(e),
            )
        };
        let definition = AttributeDefinition::builder()
            .attribute_name(attr::LEASE_KEY)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(build)?;
        let key = KeySchemaElement::builder()
            .attribute_name(attr::LEASE_KEY)
            .key_type(KeyType::Hash)
            .build()
            .map_err(build)?;
        let mut request = self
            .client
            .create_table()
            .table_name(&self.table_name)
            .attribute_definitions(definition)
            .key_schema(key)
            .deletion_protection_enabled(options.deletion_protection);
        request = match options.billing {
            Billing::OnDemand => request.billing_mode(BillingMode::PayPerRequest),
            Billing::Provisioned {
                read_capacity_units,
                write_capacity_units,
            } => request
                .billing_mode(BillingMode::Provisioned)
                .provisioned_throughput(
                    ProvisionedThroughput::builder()
                        .read_capacity_units(read_capacity_units)
                        .write_capacity_units(write_capacity_units)
                        .build()
                        .map_err(build)?,
                ),
        };
        for (k, v) in &options.tags {
            request = request.tags(Tag::builder().key(k).value(v).build().map_err(build)?);
        }
        match self.retrying(|| request.clone().send()).await {
            Ok(_) => Ok(()),
            // Another worker created it concurrently (or it is being deleted: the wait
            // for ACTIVE then reports it).
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), CreateTableError::ResourceInUseException(_)) =>
            {
                Ok(())
            }
            Err(e) => Err(self.sdk_error("CreateTable", e)),
        }
    }

    /// Every lease in the table: a strongly consistent `Scan`, following all pages. See
    /// [`list_leases_eventually_consistent`](Self::list_leases_eventually_consistent) for the
    /// half-price read the taker uses.
    ///
    /// Items that are not leases are skipped and never touched: those of another kind
    /// (`entityType` present and not `LEASE`, as Java KCL 3.5 keeps beside its leases) and
    /// those that do not parse as a lease (logged at `warn` once per key, and counted in
    /// `kinesis_kcl_lease_table_items_skipped_total` by `reason`: `not_a_lease`, `unreadable`).
    ///
    /// # Errors
    ///
    /// [`Error::DynamoDb`] for a failed request.
    pub async fn list_leases(&self) -> Result<Vec<Lease>> {
        self.scan_leases(true).await
    }

    /// [`list_leases`](Self::list_leases) with an eventually consistent `Scan`: half the
    /// read units (as the Java KCL 2.x's taker reads), and a lease may show a state a moment
    /// old (DynamoDB's replicas agree within about a second). Enough wherever a stale view
    /// only delays a decision: a counter that changed is noticed a scan later, and every write
    /// decided on it is conditional on the counter read, so a stale view never takes a live
    /// lease.
    ///
    /// # Errors
    ///
    /// [`Error::DynamoDb`] for a failed request.
    pub async fn list_leases_eventually_consistent(&self) -> Result<Vec<Lease>> {
        self.scan_leases(false).await
    }

    async fn scan_leases(&self, consistent: bool) -> Result<Vec<Lease>> {
        let mut leases = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .retrying(|| {
                    self.client
                        .scan()
                        .table_name(&self.table_name)
                        .consistent_read(consistent)
                        .set_exclusive_start_key(start.clone())
                        .send()
                })
                .await
                .map_err(|e| self.sdk_error("Scan", e))?;
            for item in out.items() {
                match TableItem::classify(item) {
                    TableItem::Lease(lease) => leases.push(*lease),
                    TableItem::NotALease => {
                        metrics::counter!(m::LEASE_TABLE_ITEMS_SKIPPED, "reason" => "not_a_lease")
                            .increment(1);
                    }
                    TableItem::Unreadable(error) => {
                        metrics::counter!(m::LEASE_TABLE_ITEMS_SKIPPED, "reason" => "unreadable")
                            .increment(1);
                        self.report_unreadable(item, &error);
                    }
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(leases),
            }
        }
    }

    /// Whether `item` shows `write` applied, owned as it should be after it (asked only of a
    /// write tried more than once).
    fn landed(&self, write: &LeaseWrite, item: &Item, holder: Option<&str>) -> bool {
        let sets_owner = write.updates.iter().any(|u| {
            matches!(u, UpdateAction::Set { attribute, .. } | UpdateAction::Remove { attribute }
                if *attribute == attr::LEASE_OWNER)
        });
        let owned = sets_owner
            || holder.is_some_and(|holder| {
                matches!(item.get(attr::LEASE_OWNER), Some(AttributeValue::S(o)) if o == holder)
            });
        owned && write.is_applied_in(item)
    }

    fn report_unreadable(&self, item: &Item, error: &Error) {
        let key = match item.get(attr::LEASE_KEY) {
            Some(AttributeValue::S(key)) => key.clone(),
            _ => String::from("(no leaseKey)"),
        };
        let first = self
            .reported
            .lock()
            .map(|mut reported| reported.insert(key.clone()))
            .unwrap_or(false);
        if first {
            tracing::warn!(table = %self.table_name, item = %key, %error,
                "skipping a lease table item that is not a readable lease (left untouched)");
        } else {
            tracing::debug!(table = %self.table_name, item = %key, %error,
                "skipping an unreadable lease table item");
        }
    }

    /// One lease (a strongly consistent `GetItem`), `None` if it does not exist.
    ///
    /// # Errors
    ///
    /// As [`list_leases`](Self::list_leases).
    pub async fn get_lease(&self, lease_key: &str) -> Result<Option<Lease>> {
        let out = self
            .retrying(|| {
                self.client
                    .get_item()
                    .table_name(&self.table_name)
                    .set_key(Some(lease_key_item(lease_key)))
                    .consistent_read(true)
                    .send()
            })
            .await
            .map_err(|e| self.sdk_error("GetItem", e))?;
        out.item().map(Lease::from_item).transpose()
    }

    /// Writes `lease` unless a lease with its key exists (a `PutItem` conditioned on
    /// [`CREATE_CONDITION_EXPRESSION`]). Returns `false`, writing nothing, when it exists.
    ///
    /// # Errors
    ///
    /// [`Error::DynamoDb`] for a failed request; the errors of [`Lease::to_item`].
    pub async fn create_lease_if_absent(&self, lease: &Lease) -> Result<bool> {
        let item = lease.to_item()?;
        let result = self
            .retrying(|| {
                self.client
                    .put_item()
                    .table_name(&self.table_name)
                    .set_item(Some(item.clone()))
                    .condition_expression(CREATE_CONDITION_EXPRESSION)
                    .expression_attribute_names("#k", attr::LEASE_KEY)
                    .send()
            })
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.sdk_error("PutItem", e)),
        }
    }

    /// Sends `write` as a conditional `UpdateItem` returning the whole new item.
    ///
    /// A failed condition is not an error but [`WriteOutcome::ConditionFailed`], carrying
    /// the lease as it now is when DynamoDB returns it.
    ///
    /// # Errors
    ///
    /// [`Error::DynamoDb`] for a failed request; the errors of [`Lease::from_item`] when the
    /// returned item is not a valid lease.
    pub async fn apply(&self, write: &LeaseWrite) -> Result<WriteOutcome> {
        self.apply_as(write, None).await
    }

    /// As [`apply`](Self::apply), for a write by `holder`, the lease's owner (a renewal or a
    /// checkpoint; `None`: the write sets or removes the owner itself, as a take or a release
    /// does). When the condition of a write tried more than once (by us or the SDK) fails
    /// but the table shows exactly this write applied with the owner it leaves (see
    /// [`LeaseWrite::is_applied_in`]), an earlier attempt landed and its answer was lost: the outcome is [`WriteOutcome::Applied`], as the Java KCL recovers
    /// after re-reading the lease. Without a holder, a write that leaves the owner as it was
    /// is never taken as applied that way (a take by another worker moves the counter too).
    ///
    /// # Errors
    ///
    /// As [`apply`](Self::apply).
    pub async fn apply_as(&self, write: &LeaseWrite, holder: Option<&str>) -> Result<WriteOutcome> {
        let rendered = write.render();
        let values = (!rendered.expression_attribute_values.is_empty())
            .then_some(rendered.expression_attribute_values);
        let names = (!rendered.expression_attribute_names.is_empty())
            .then_some(rendered.expression_attribute_names);
        // Every attempt, ours and the SDK's: only a write tried more than once can have landed
        // without our knowing.
        let attempts = Arc::new(AtomicU32::new(0));
        let result = self
            .retrying(|| {
                self.client
                    .update_item()
                    .table_name(&self.table_name)
                    .set_key(Some(rendered.key.clone()))
                    .set_condition_expression(rendered.condition_expression.clone())
                    .update_expression(&rendered.update_expression)
                    .set_expression_attribute_names(names.clone())
                    .set_expression_attribute_values(values.clone())
                    .return_values(ReturnValue::AllNew)
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .customize()
                    .interceptor(CountAttempts(Arc::clone(&attempts)))
                    .send()
            })
            .await;
        let retried = attempts.load(AtomicOrdering::Relaxed) > 1;
        match result {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                Ok(WriteOutcome::Applied(Lease::from_item(&item)?))
            }
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                let current = match e.err() {
                    UpdateItemError::ConditionalCheckFailedException(c) => c.item(),
                    _ => None,
                };
                match current {
                    Some(item)
                        if retried && !item.is_empty() && self.landed(write, item, holder) =>
                    {
                        // An earlier attempt landed and its answer was lost: this is our write.
                        tracing::info!(
                            lease = %write.lease_key,
                            "a retried lease write had already landed; taking it as applied"
                        );
                        Ok(WriteOutcome::Applied(Lease::from_item(item)?))
                    }
                    Some(item) if !item.is_empty() => Ok(WriteOutcome::ConditionFailed {
                        current: Some(Lease::from_item(item)?),
                    }),
                    _ => Ok(WriteOutcome::ConditionFailed { current: None }),
                }
            }
            Err(e) => Err(self.sdk_error("UpdateItem", e)),
        }
    }

    /// Renews (heartbeats) `lease`: [`Lease::renew_write`] through [`apply`](Self::apply).
    ///
    /// # Errors
    ///
    /// As [`Lease::renew_write`] and [`apply`](Self::apply).
    pub async fn renew(&self, lease: &Lease) -> Result<WriteOutcome> {
        self.apply_as(&lease.renew_write()?, lease.lease_owner.as_deref())
            .await
    }

    /// Takes (or steals) `lease` for `owner`: [`Lease::take_write`] through
    /// [`apply`](Self::apply).
    ///
    /// # Errors
    ///
    /// As [`Lease::take_write`] and [`apply`](Self::apply).
    pub async fn take(&self, lease: &Lease, owner: &str) -> Result<WriteOutcome> {
        self.apply(&lease.take_write(owner)?).await
    }

    /// Releases `lease`: [`Lease::evict_write`] through [`apply`](Self::apply).
    ///
    /// # Errors
    ///
    /// As [`Lease::evict_write`] and [`apply`](Self::apply).
    pub async fn evict(&self, lease: &Lease) -> Result<WriteOutcome> {
        self.apply(&lease.evict_write()?).await
    }

    /// Writes `checkpoint` as the lease's checkpoint ([`Lease::set_checkpoint`], then
    /// [`Lease::update_write`] through [`apply`](Self::apply)), fenced on the counter of
    /// `lease`, which must be the holder's latest copy.
    ///
    /// Checkpoints never move backwards: because the write only succeeds if the table still
    /// holds `lease`'s counter, the table's checkpoint is `lease.checkpoint`, and a
    /// `checkpoint` below it is refused before anything is sent. Writing the same checkpoint
    /// again is allowed (it clears a pending checkpoint).
    ///
    /// # Errors
    ///
    /// [`Error::CheckpointRegression`] if `checkpoint < lease.checkpoint`; otherwise as
    /// [`Lease::update_write`] and [`apply`](Self::apply).
    pub async fn update_checkpoint(
        &self,
        lease: &Lease,
        checkpoint: ExtendedSequenceNumber,
    ) -> Result<WriteOutcome> {
        if checkpoint < lease.checkpoint {
            return Err(Error::CheckpointRegression {
                lease_key: lease.lease_key.clone(),
                current: lease.checkpoint.to_string(),
                proposed: checkpoint.to_string(),
            });
        }
        let mut next = lease.clone();
        next.set_checkpoint(checkpoint);
        self.apply_as(&next.update_write()?, next.lease_owner.as_deref())
            .await
    }

    /// Deletes a lease (unconditionally, as the Java `deleteLease`), e.g. for a shard that
    /// was fully processed and has expired from the stream. Deleting a missing lease succeeds.
    ///
    /// # Errors
    ///
    /// [`Error::DynamoDb`] for a failed request.
    pub async fn delete_lease(&self, lease_key: &str) -> Result<()> {
        self.retrying(|| {
            self.client
                .delete_item()
                .table_name(&self.table_name)
                .set_key(Some(lease_key_item(lease_key)))
                .send()
        })
        .await
        .map_err(|e| self.sdk_error("DeleteItem", e))?;
        Ok(())
    }

    /// Runs `send` until it succeeds, fails with a non-transient error, or the retry budget
    /// is spent.
    async fn retrying<T, E, F, Fut>(&self, send: F) -> Result<T, SdkError<E, HttpResponse>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        retrying(self.retry, send, |e, delay| {
            tracing::debug!(
                table = %self.table_name,
                code = e.code().unwrap_or("-"),
                ?delay,
                "transient DynamoDB error, retrying"
            );
        })
        .await
    }

    fn sdk_error<E>(&self, operation: &'static str, error: SdkError<E, HttpResponse>) -> Error
    where
        aws_sdk_dynamodb::Error: From<SdkError<E, HttpResponse>>,
    {
        Error::DynamoDb {
            operation,
            table: self.table_name.clone(),
            source: Box::new(error.into()),
        }
    }
}

/// Counts the attempts of one request (the SDK's retries included).
#[derive(Debug)]
struct CountAttempts(Arc<AtomicU32>);

impl Intercept for CountAttempts {
    fn name(&self) -> &'static str {
        "CountAttempts"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        self.0.fetch_add(1, AtomicOrdering::Relaxed);
        Ok(())
    }
}
