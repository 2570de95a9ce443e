//! `kinesis-ops reset-checkpoint`: move a lease's checkpoint, forwards or backwards, safely.
//!
//! A worker holding the lease keeps its position in memory and would overwrite a reset at its
//! next checkpoint, so a reset is for leases nobody processes: stop the application first.
//! [`prepare`] checks that, since stopping may not have worked:
//!
//! 1. It reads the lease. An unowned lease needs no waiting.
//! 2. An owned lease is watched: re-read every `interval` for the `failover` window (at least
//!    one interval). If its counter moves, its owner is alive, and the reset is refused with
//!    [`ResetError::LiveOwner`]. If the counter stands still for the whole window, the lease is
//!    expired by the KCL's own rule (no renewal within the failover time), and the reset goes
//!    on. With `force`, the watch is skipped.
//!
//! [`ResetPlan::apply`] then writes the new checkpoint the way a checkpointer does
//! ([`Lease::set_checkpoint`], which also clears a pending checkpoint and the owner-switch
//! count, then [`Lease::update_write`]): one `UpdateItem` conditional on the counter last read.
//! If anything wrote the lease in between, nothing is written and the reset fails with
//! [`ResetError::CounterChanged`]; it is never a blind overwrite.
//!
//! A forced reset of a lease whose owner is alive bumps the counter under it: the owner's next
//! renewal or checkpoint fails its condition, so it loses the lease, and whoever takes the lease
//! next (after the failover time, or at once if the lease is released) starts from the new
//! checkpoint.
//!
//! The lease key is used as given, so multi-stream leases
//! (`<accountId>:<streamName>:<creationEpoch>:<shardId>`) work like single-stream ones
//! (`shardId-000000000000`).

use std::time::Duration;

use kinesis_kcl::lease::{
    ExtendedSequenceNumber, Lease, LeaseTable, LeaseWrite, SequencePosition, WriteOutcome,
};
use tokio::time::Instant;

use super::format_duration;

/// Why a reset did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The `--to` / `--sub` arguments do not name a checkpoint a reset may write.
    #[error("invalid target checkpoint: {0}")]
    InvalidTarget(String),
    /// The table has no lease with that key.
    #[error("no lease `{lease_key}` in table `{table}`")]
    NotFound {
        /// The table.
        table: String,
        /// The lease key looked for.
        lease_key: String,
    },
    /// The lease's counter moved while it was watched: its owner is alive.
    #[error(
        "lease `{lease_key}` is held by a live owner ({owner}): its counter moved from {from} to \
         {to} within {}; stop the application first, or pass --force to reset it anyway (the \
         owner then loses the lease at its next renewal)",
        format_duration(*within)
    )]
    LiveOwner {
        /// The lease key.
        lease_key: String,
        /// The owner (and checkpoint owner during a hand-off) as last read.
        owner: String,
        /// The counter at the first read.
        from: u64,
        /// The counter when the move was seen.
        to: u64,
        /// How long after the first read the move was seen.
        within: Duration,
    },
    /// The lease was written between the read and the conditional write; nothing was written.
    #[error(
        "lease `{lease_key}` changed between read and write (counter {expected} read, {}); \
         nothing was written",
        match found { Some(c) => format!("now {c}"), None => "the lease is gone".to_owned() }
    )]
    CounterChanged {
        /// The lease key.
        lease_key: String,
        /// The counter the write was conditioned on.
        expected: u64,
        /// The counter in the table when the write failed (`None`: the lease is gone, or the
        /// server did not say).
        found: Option<u64>,
    },
    /// A lease table request failed, or an item is not a lease.
    #[error(transparent)]
    Lease(#[from] kinesis_kcl::Error),
}

/// Parses a reset target: `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP` or a sequence number, with
/// the sub-sequence number (`--sub`) of a user record in an aggregate (sequence numbers only).
///
/// `SHARD_END` is refused: it marks a shard finished and lets its children start, which is the
/// worker's decision after reading the shard to its end, not an operator's.
///
/// `AT_TIMESTAMP` makes the next owner start from the application's configured initial
/// timestamp (the lease stores no timestamp).
///
/// # Errors
///
/// [`ResetError::InvalidTarget`] for anything else.
pub fn parse_target(to: &str, sub: Option<u64>) -> Result<ExtendedSequenceNumber, ResetError> {
    let position = SequencePosition::parse(to.trim()).map_err(|_| {
        ResetError::InvalidTarget(format!(
            "{to:?} is not TRIM_HORIZON, LATEST, AT_TIMESTAMP or a sequence number (digits)"
        ))
    })?;
    match position {
        SequencePosition::ShardEnd => Err(ResetError::InvalidTarget(
            "SHARD_END is written by the worker that finished the shard, not by a reset".to_owned(),
        )),
        SequencePosition::Sequence(_) => {
            Ok(ExtendedSequenceNumber::new(position, sub.unwrap_or(0)))
        }
        _ if sub.unwrap_or(0) != 0 => Err(ResetError::InvalidTarget(format!(
            "--sub applies to sequence numbers, not to {to}"
        ))),
        _ => Ok(ExtendedSequenceNumber::new(position, 0)),
    }
}

/// What to reset, and how carefully.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetOptions {
    /// The lease key: the shard id, or the full multi-stream lease key.
    pub lease_key: String,
    /// The new checkpoint (see [`parse_target`]).
    pub target: ExtendedSequenceNumber,
    /// Skip the liveness watch.
    pub force: bool,
    /// How long an owned lease's counter must stand still to count as expired (the KCL
    /// failover time; default 10 s).
    pub failover: Duration,
    /// How often the lease is re-read while watched (zero: once, at the end of the window).
    pub interval: Duration,
}

impl ResetOptions {
    /// Options with the defaults: not forced, a 10 s failover window, re-read every second.
    pub fn new(lease_key: impl Into<String>, target: ExtendedSequenceNumber) -> Self {
        ResetOptions {
            lease_key: lease_key.into(),
            target,
            force: false,
            failover: kinesis_kcl::LeaseConfig::default().failover_time(),
            interval: Duration::from_secs(1),
        }
    }
}

/// Why [`prepare`] judged the lease safe to reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Nobody owns the lease.
    Unowned,
    /// The lease is owned, but its counter stood still while watched: the owner is gone.
    Expired {
        /// How long the counter was seen standing still.
        unchanged_for: Duration,
    },
    /// Not checked (`--force`).
    Forced,
}

/// A reset ready to be written: the lease as read, and the conditional write.
#[derive(Clone, Debug)]
pub struct ResetPlan {
    /// The lease as last read; the write is conditional on its counter.
    pub before: Lease,
    /// The checkpoint to write.
    pub target: ExtendedSequenceNumber,
    /// Why the reset may go on.
    pub liveness: Liveness,
    write: LeaseWrite,
}

impl ResetPlan {
    /// Builds the plan from the lease as last read (pure).
    ///
    /// # Errors
    ///
    /// The errors of [`Lease::update_write`].
    pub fn new(
        before: Lease,
        target: ExtendedSequenceNumber,
        liveness: Liveness,
    ) -> Result<Self, ResetError> {
        let mut next = before.clone();
        next.set_checkpoint(target.clone());
        let write = next.update_write()?;
        Ok(ResetPlan {
            before,
            target,
            liveness,
            write,
        })
    }

    /// The conditional write this plan sends.
    pub fn write(&self) -> &LeaseWrite {
        &self.write
    }

    /// What the plan does, for people (several lines).
    pub fn describe(&self) -> String {
        let lease = &self.before;
        let direction = if self.target < lease.checkpoint {
            " (backwards)"
        } else if self.target == lease.checkpoint {
            " (unchanged)"
        } else {
            ""
        };
        let mut text = format!(
            "lease {}: checkpoint {} -> {}{direction}, conditional on counter {}",
            lease.lease_key, lease.checkpoint, self.target, lease.lease_counter
        );
        if let Some(pending) = &lease.pending_checkpoint {
            text.push_str(&format!("\n  clears the pending checkpoint {pending}"));
        }
        if lease.is_shard_end() {
            text.push_str(
                "\n  note: the lease was at SHARD_END; its child shards may already have been processed",
            );
        }
        let owner = owner_text(lease);
        text.push_str(&match &self.liveness {
            Liveness::Unowned => "\n  no owner".to_owned(),
            Liveness::Expired { unchanged_for } => format!(
                "\n  owner {owner} did not renew for {}, the failover time: expired",
                format_duration(*unchanged_for)
            ),
            Liveness::Forced => format!(
                "\n  forced: owner {owner} not checked; a live owner loses the lease at its next renewal"
            ),
        });
        text
    }

    /// Sends the conditional write and returns the lease as written.
    ///
    /// # Errors
    ///
    /// [`ResetError::CounterChanged`] if the lease was written since it was read (nothing is
    /// written); [`ResetError::Lease`] for a failed request.
    pub async fn apply(&self, table: &LeaseTable) -> Result<Lease, ResetError> {
        match table.apply(&self.write).await? {
            WriteOutcome::Applied(lease) => Ok(lease),
            WriteOutcome::ConditionFailed { current } => Err(ResetError::CounterChanged {
                lease_key: self.before.lease_key.clone(),
                expected: self.before.lease_counter,
                found: current.map(|l| l.lease_counter),
            }),
        }
    }
}

fn owner_text(lease: &Lease) -> String {
    match (&lease.lease_owner, &lease.checkpoint_owner) {
        (Some(owner), Some(cp)) if owner != cp => format!("{owner} (checkpointOwner {cp})"),
        (Some(owner), _) => owner.clone(),
        (None, Some(cp)) => format!("checkpointOwner {cp}"),
        (None, None) => "none".to_owned(),
    }
}

async fn read(table: &LeaseTable, lease_key: &str) -> Result<Lease, ResetError> {
    table
        .get_lease(lease_key)
        .await?
        .ok_or_else(|| ResetError::NotFound {
            table: table.table_name().to_owned(),
            lease_key: lease_key.to_owned(),
        })
}

/// Reads the lease and, unless forced or unowned, watches it for the failover window; returns
/// the plan to write, or why not. Writes nothing.
///
/// `on_watch` is called once before an owned lease is watched, with the owner and how long the
/// watch will take (the CLI tells the operator why it waits).
///
/// # Errors
///
/// [`ResetError::NotFound`], [`ResetError::LiveOwner`], [`ResetError::Lease`].
pub async fn prepare(
    table: &LeaseTable,
    options: &ResetOptions,
    on_watch: impl FnOnce(&Lease, Duration),
) -> Result<ResetPlan, ResetError> {
    let first = read(table, &options.lease_key).await?;
    let liveness = if options.force {
        Liveness::Forced
    } else if first.actual_owner().is_none() {
        Liveness::Unowned
    } else {
        let window = options.failover.max(options.interval);
        on_watch(&first, window);
        // A zero interval means one re-read at the end of the window, not a busy loop.
        let step = if options.interval.is_zero() {
            window
        } else {
            options.interval
        };
        let first_read = Instant::now();
        // Re-read at least once, then until the window has passed.
        let (last, unchanged_for) = loop {
            let waited = first_read.elapsed();
            tokio::time::sleep(step.min(window.saturating_sub(waited))).await;
            let read_started = first_read.elapsed();
            let now = read(table, &options.lease_key).await?;
            if now.lease_counter != first.lease_counter {
                return Err(ResetError::LiveOwner {
                    lease_key: options.lease_key.clone(),
                    owner: owner_text(&now),
                    from: first.lease_counter,
                    to: now.lease_counter,
                    within: first_read.elapsed(),
                });
            }
            // The counter stood still from the end of the first read to the start of this one.
            if read_started >= window {
                break (now, read_started);
            }
        };
        return ResetPlan::new(
            last,
            options.target.clone(),
            Liveness::Expired { unchanged_for },
        );
    };
    ResetPlan::new(first, options.target.clone(), liveness)
}

/// [`prepare`], then [`ResetPlan::apply`]: returns the plan and the lease as written.
///
/// # Errors
///
/// As [`prepare`] and [`ResetPlan::apply`].
pub async fn reset_checkpoint(
    table: &LeaseTable,
    options: &ResetOptions,
) -> Result<(ResetPlan, Lease), ResetError> {
    let plan = prepare(table, options, |_, _| {}).await?;
    let written = plan.apply(table).await?;
    Ok((plan, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse_target("TRIM_HORIZON", None).unwrap(),
            ExtendedSequenceNumber::TRIM_HORIZON
        );
        assert_eq!(
            parse_target("LATEST", Some(0)).unwrap(),
            ExtendedSequenceNumber::LATEST
        );
        assert_eq!(
            parse_target("AT_TIMESTAMP", None).unwrap(),
            ExtendedSequenceNumber::AT_TIMESTAMP
        );
        assert_eq!(
            parse_target("4959", Some(3)).unwrap(),
            ExtendedSequenceNumber::parse("4959", 3).unwrap()
        );
        assert!(parse_target("SHARD_END", None).is_err());
        assert!(parse_target("LATEST", Some(2)).is_err());
        assert!(parse_target("12a", None).is_err());
        assert!(parse_target("", None).is_err());
    }

    #[test]
    fn plan_moves_backwards_and_clears_pending() {
        let mut lease = Lease::new(
            "shardId-000000000001",
            ExtendedSequenceNumber::parse("900", 2).unwrap(),
        );
        lease.lease_counter = 41;
        lease.lease_owner = Some("w".to_owned());
        lease.owner_switches_since_checkpoint = 2;
        lease.set_pending_checkpoint(ExtendedSequenceNumber::parse("950", 0).unwrap(), None);
        let plan = ResetPlan::new(
            lease,
            ExtendedSequenceNumber::TRIM_HORIZON,
            Liveness::Forced,
        )
        .unwrap();
        let text = plan.describe();
        assert!(
            text.contains("900/2 -> TRIM_HORIZON/0 (backwards)"),
            "{text}"
        );
        assert!(
            text.contains("clears the pending checkpoint 950/0"),
            "{text}"
        );
        let rendered = plan.write().render();
        assert!(rendered.condition_expression.is_some());
    }
}
