//! `kinesis-ops rewind`: make a whole application resume at a point in time, across its shard
//! lineage, as Kafka's `kafka-consumer-groups --reset-offsets --to-datetime` does for a group.
//!
//! One rule serves every shard, open or closed, created before or after the time T: its new
//! checkpoint is the last record that arrived before T (the consumer resumes right after it,
//! at the first record at or after T). So:
//! - a shard that was open at T resumes at its first record at or after T, exactly: the
//!   checkpoint is the last user record of the Kinesis record before it (a checkpoint carries a
//!   sub-sequence number; every user record of an aggregate has its Kinesis record's arrival
//!   time), so nothing at or after T is skipped and nothing before it delivered again;
//! - a shard created after T has no record before T: `TRIM_HORIZON`, read from its start once
//!   its parents are finished (their checkpoints moved back too, so they are not);
//! - a closed shard with no record at or after T (closed before T): `SHARD_END`.
//! - an open shard with no record at or after T: its last record (so what arrives from now on is
//!   delivered), or `TRIM_HORIZON` when it has none.
//!
//! `--to trim-horizon` moves every shard to `TRIM_HORIZON`; `--to latest` every open shard to its
//! last record and every closed one to `SHARD_END`.
//!
//! The records before T are found by reading from `AT_TIMESTAMP` a little before T (1 min,
//! then 10 min, 1 h, 1 day, then the shard's start), never the whole shard when it can be
//! helped. Shards without a lease get one. Nothing is written while any lease is being
//! renewed (a worker runs), unless forced; each write is conditional on the lease counter read
//! (or on the lease's absence), never blind. Single-stream lease tables only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use kinesis_aggregation::{Deaggregated, deaggregate};
use kinesis_kcl::lease::{
    ExtendedSequenceNumber, Lease, LeaseTable, SequenceNumber, SequencePosition, WriteOutcome,
};

use super::leases;
pub use super::shards::{Shard, list_shards};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where to rewind to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The first record at or after this time.
    Time(SystemTime),
    /// The oldest records still held.
    TrimHorizon,
    /// After the newest records (nothing already stored is delivered again).
    Latest,
}

/// One lease's change.
#[derive(Clone, Debug)]
pub enum Step {
    /// Move an existing lease's checkpoint (conditional on its counter).
    Move {
        /// The lease as read.
        before: Lease,
        /// The new checkpoint.
        to: ExtendedSequenceNumber,
    },
    /// Create the lease of a shard that has none (conditional on its absence).
    Create(Lease),
}

impl Step {
    /// The lease key.
    pub fn lease_key(&self) -> &str {
        match self {
            Step::Move { before, .. } => &before.lease_key,
            Step::Create(lease) => &lease.lease_key,
        }
    }

    /// The checkpoint it writes.
    pub fn checkpoint(&self) -> &ExtendedSequenceNumber {
        match self {
            Step::Move { to, .. } => to,
            Step::Create(lease) => &lease.checkpoint,
        }
    }
}

/// The plan (pure): for every listed shard, its lease moved to `checkpoints[shard]` or created
/// there. Shards without a computed checkpoint are left alone.
pub fn plan(
    shards: &[Shard],
    leases: &[Lease],
    checkpoints: &BTreeMap<String, ExtendedSequenceNumber>,
) -> Vec<Step> {
    let by_shard: BTreeMap<&str, &Lease> = leases
        .iter()
        .filter(|l| l.multi_stream.is_none())
        .map(|l| (l.shard_id(), l))
        .collect();
    let mut children: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for shard in shards {
        for parent in &shard.parents {
            children
                .entry(parent.as_str())
                .or_default()
                .push(shard.shard_id.clone());
        }
    }
    shards
        .iter()
        .filter_map(|shard| {
            let to = checkpoints.get(&shard.shard_id)?.clone();
            Some(match by_shard.get(shard.shard_id.as_str()) {
                Some(lease) => Step::Move {
                    before: (*lease).clone(),
                    to,
                },
                None => {
                    let mut lease = Lease::new(&shard.shard_id, to);
                    lease.parent_shard_ids = shard.parents.iter().cloned().collect();
                    lease.child_shard_ids = children
                        .get(shard.shard_id.as_str())
                        .map(|c| c.iter().cloned().collect())
                        .unwrap_or_default();
                    lease.hash_key_range = shard.range;
                    Step::Create(lease)
                }
            })
        })
        .collect()
}

/// The plan for people, one line a lease.
pub fn describe(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        let _ = match step {
            Step::Move { before, to } => writeln!(
                out,
                "{}: {} -> {} (conditional on counter {})",
                before.lease_key, before.checkpoint, to, before.lease_counter
            ),
            Step::Create(lease) => writeln!(
                out,
                "{}: new lease at {}",
                lease.lease_key, lease.checkpoint
            ),
        };
    }
    out
}

/// A Kinesis record as the rewind needs it: where it is, how many user records it holds, when
/// it arrived.
#[derive(Clone, Debug)]
struct Seen {
    sequence_number: String,
    last_sub_sequence: u64,
    arrival: Option<SystemTime>,
}

fn seen(record: &aws_sdk_kinesis::types::Record) -> Seen {
    let data = Bytes::copy_from_slice(record.data().as_ref());
    let last_sub_sequence = match deaggregate(data) {
        Deaggregated::Aggregated(records) => records.len().saturating_sub(1) as u64,
        Deaggregated::PassThrough { .. } => 0,
    };
    Seen {
        sequence_number: record.sequence_number().to_owned(),
        last_sub_sequence,
        arrival: record
            .approximate_arrival_timestamp()
            .and_then(|t| SystemTime::try_from(*t).ok()),
    }
}

/// Reads `shard` from `start` (an iterator type, with a timestamp for `AT_TIMESTAMP`) and
/// returns the last record that arrived before `before` (all records when `None`), and
/// whether a record at or after it was seen.
async fn last_before(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
    start: Option<SystemTime>,
    before: Option<SystemTime>,
) -> Result<(Option<Seen>, bool), BoxError> {
    let request = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard);
    let request = match start {
        Some(at) => request
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(aws_sdk_kinesis::primitives::DateTime::from(at)),
        None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    let mut iterator = request.send().await?.shard_iterator().map(str::to_owned);
    let mut last = None;
    let mut pages = 0usize;
    while let Some(current) = iterator {
        pages += 1;
        if pages > 1_000_000 {
            return Err(format!("shard {shard}: no end after a million pages").into());
        }
        let page = kinesis
            .get_records()
            .shard_iterator(&current)
            .limit(1_000)
            .send()
            .await?;
        for record in page.records() {
            let record = seen(record);
            if let (Some(before), Some(arrival)) = (before, record.arrival)
                && arrival >= before
            {
                return Ok((last, true));
            }
            last = Some(record);
        }
        // At the tip of an open shard (nothing more now) or the end of a closed one.
        if page.records().is_empty() && page.millis_behind_latest().unwrap_or(0) == 0 {
            break;
        }
        iterator = page.next_shard_iterator().map(str::to_owned);
    }
    Ok((last, false))
}

/// The checkpoint that resumes `shard` at `target` (see the module docs).
async fn checkpoint_for(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &Shard,
    target: Target,
) -> Result<ExtendedSequenceNumber, BoxError> {
    let at_record = |seen: Seen| -> Result<ExtendedSequenceNumber, BoxError> {
        Ok(ExtendedSequenceNumber::new(
            SequencePosition::Sequence(SequenceNumber::new(seen.sequence_number)?),
            seen.last_sub_sequence,
        ))
    };
    let time = match target {
        Target::TrimHorizon => return Ok(ExtendedSequenceNumber::TRIM_HORIZON),
        Target::Latest if shard.closed => return Ok(ExtendedSequenceNumber::SHARD_END),
        Target::Latest => {
            let (last, _) = last_before(kinesis, stream, &shard.shard_id, None, None).await?;
            return match last {
                Some(last) => at_record(last),
                None => Ok(ExtendedSequenceNumber::TRIM_HORIZON),
            };
        }
        Target::Time(time) => time,
    };
    // Read from a little before T, further back while nothing before T is found there.
    let mut starts: Vec<Option<SystemTime>> = [60, 600, 3_600, 86_400]
        .into_iter()
        .filter_map(|s| time.checked_sub(Duration::from_secs(s)).map(Some))
        .collect();
    starts.push(None);
    for start in starts {
        let (last, reached_t) =
            last_before(kinesis, stream, &shard.shard_id, start, Some(time)).await?;
        match last {
            Some(last) => {
                if !reached_t && shard.closed {
                    // Every record arrived before T: finished.
                    return Ok(ExtendedSequenceNumber::SHARD_END);
                }
                return at_record(last);
            }
            // Nothing before T from here: from the start of the shard it means none at all.
            None if start.is_none() => {
                return Ok(if shard.closed && !reached_t {
                    ExtendedSequenceNumber::SHARD_END
                } else {
                    ExtendedSequenceNumber::TRIM_HORIZON
                });
            }
            None => continue,
        }
    }
    Ok(ExtendedSequenceNumber::TRIM_HORIZON)
}

/// Reads everything and builds the plan; refuses while a lease is being renewed unless
/// `force` (`interval` apart, two reads of the table tell). Writes nothing.
pub async fn prepare(
    table: &LeaseTable,
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    target: Target,
    interval: Duration,
    force: bool,
) -> Result<Vec<Step>, BoxError> {
    let listing = leases::observe(table, if force { Duration::ZERO } else { interval }).await?;
    if !force {
        let live: Vec<&str> = listing
            .rows
            .iter()
            .filter(|r| r.change.moved())
            .map(|r| r.lease.lease_key.as_str())
            .collect();
        if !live.is_empty() {
            return Err(format!(
                "leases are being renewed ({}): stop the application first, or --force",
                live.join(", ")
            )
            .into());
        }
    }
    let leases: Vec<Lease> = listing.rows.into_iter().map(|r| r.lease).collect();
    let shards = list_shards(kinesis, stream).await?;
    let mut checkpoints = BTreeMap::new();
    for shard in &shards {
        checkpoints.insert(
            shard.shard_id.clone(),
            checkpoint_for(kinesis, stream, shard, target).await?,
        );
    }
    Ok(plan(&shards, &leases, &checkpoints))
}

/// Writes the plan, each step conditional (on the counter read, or on absence). Stops at the
/// first write whose condition fails, naming it: what was written before stays written.
pub async fn apply(table: &LeaseTable, steps: &[Step]) -> Result<usize, BoxError> {
    let mut written = 0;
    for step in steps {
        match step {
            Step::Move { before, to } => {
                let mut next = before.clone();
                next.set_checkpoint(to.clone());
                match table.apply(&next.update_write()?).await? {
                    WriteOutcome::Applied(_) => {}
                    WriteOutcome::ConditionFailed { .. } => {
                        return Err(format!(
                            "lease {} changed since it was read (after {written} writes): \
                             nothing written for it; run again",
                            before.lease_key
                        )
                        .into());
                    }
                }
            }
            Step::Create(lease) => {
                if !table.create_lease_if_absent(lease).await? {
                    return Err(format!(
                        "lease {} appeared since the table was read (after {written} \
                         writes): run again",
                        lease.lease_key
                    )
                    .into());
                }
            }
        }
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use kinesis_kcl::lease::HashKeyRange;

    use super::*;

    fn shard(id: &str, parents: &[&str], closed: bool) -> Shard {
        Shard {
            shard_id: id.into(),
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
            range: HashKeyRange::new(0, 9).ok(),
            closed,
        }
    }

    #[test]
    fn existing_leases_move_and_missing_ones_are_created_with_their_lineage() {
        let shards = [
            shard("s0", &[], true),
            shard("s1", &["s0"], false),
            shard("s2", &["s0"], false),
        ];
        let leases = [Lease::new("s0", ExtendedSequenceNumber::SHARD_END)];
        let checkpoints = BTreeMap::from([
            ("s0".to_owned(), ExtendedSequenceNumber::TRIM_HORIZON),
            ("s1".to_owned(), ExtendedSequenceNumber::TRIM_HORIZON),
        ]);
        let steps = plan(&shards, &leases, &checkpoints);
        assert_eq!(steps.len(), 2, "s2 has no computed checkpoint: left alone");
        assert!(
            matches!(&steps[0], Step::Move { before, to } if before.lease_key == "s0" && *to == ExtendedSequenceNumber::TRIM_HORIZON)
        );
        match &steps[1] {
            Step::Create(lease) => {
                assert_eq!(lease.lease_key, "s1");
                assert!(lease.parent_shard_ids.contains("s0"));
                assert_eq!(lease.hash_key_range, HashKeyRange::new(0, 9).ok());
            }
            other => panic!("{other:?}"),
        }
        let text = describe(&steps);
        assert!(text.contains("s0: SHARD_END/0 -> TRIM_HORIZON/0"), "{text}");
        assert!(text.contains("s1: new lease at TRIM_HORIZON/0"), "{text}");
    }
}
