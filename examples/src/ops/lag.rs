//! `kinesis-ops lag`: how far behind each shard's checkpoint is, as Kafka's
//! `kafka-consumer-groups --describe` shows a consumer group's lag per partition.
//!
//! For every lease of the application on the stream: its owner and checkpoint, whether the
//! shard is open or closed, its parents and children, and how far behind the checkpoint is:
//! - `behind`: `MillisBehindLatest` of a `GetRecords` (limit 1) from an iterator at the
//!   checkpoint (`AT_SEQUENCE_NUMBER`, so a checkpoint inside an aggregate counts what is left
//!   of it), or at `TRIM_HORIZON` / `LATEST` for a shard not started; 0 at `SHARD_END`;
//! - `checkpointed_at`: the arrival time of the checkpointed record.
//!
//! [`rows`] builds the report from what was read (pure); [`read`] does the reading.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::types::ShardIteratorType;
use kinesis_kcl::lease::{Lease, LeaseTable, SequencePosition};
use serde_json::{Value, json};

use super::format_duration;
use super::shards::{Shard, list_shards};

/// What reading a shard at its checkpoint found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// `MillisBehindLatest` of the read.
    pub behind: Option<Duration>,
    /// The arrival time of the record at the checkpoint.
    pub checkpointed_at: Option<SystemTime>,
}

/// One shard's line of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The lease key (the shard id, or the multi-stream key).
    pub lease_key: String,
    /// The shard id.
    pub shard_id: String,
    /// The lease owner, if any.
    pub owner: Option<String>,
    /// The checkpoint as stored (`SHARD_END`, `TRIM_HORIZON`, a sequence number).
    pub checkpoint: String,
    /// Its sub-sequence number.
    pub sub_sequence_number: u64,
    /// `open`, `closed`, or `unknown` (no longer listed: trimmed).
    pub state: &'static str,
    /// Parent shards.
    pub parents: Vec<String>,
    /// Child shards.
    pub children: Vec<String>,
    /// How far behind the tip the checkpoint is.
    pub behind: Option<Duration>,
    /// When the checkpointed record arrived.
    pub checkpointed_at: Option<SystemTime>,
}

impl Row {
    /// Whether the shard is finished (checkpointed at `SHARD_END`).
    pub fn finished(&self) -> bool {
        self.checkpoint == SequencePosition::SHARD_END
    }
}

/// The report: one row per lease, in shard order, from the leases, the listed shards and the
/// probes (by lease key).
pub fn rows(leases: &[Lease], shards: &[Shard], probes: &BTreeMap<String, Probe>) -> Vec<Row> {
    let listed: BTreeMap<&str, &Shard> = shards.iter().map(|s| (s.shard_id.as_str(), s)).collect();
    let mut children: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for shard in shards {
        for parent in &shard.parents {
            children
                .entry(parent.as_str())
                .or_default()
                .insert(shard.shard_id.clone());
        }
    }
    let mut rows: Vec<Row> = leases
        .iter()
        .map(|lease| {
            let shard_id = lease.shard_id().to_owned();
            let facts = listed.get(shard_id.as_str());
            let probe = probes.get(&lease.lease_key).cloned().unwrap_or_default();
            let finished = lease.checkpoint.is_shard_end();
            Row {
                lease_key: lease.lease_key.clone(),
                owner: lease.lease_owner.clone(),
                checkpoint: lease.checkpoint.position.as_str().to_owned(),
                sub_sequence_number: lease.checkpoint.sub_sequence_number,
                state: match facts {
                    Some(f) if f.closed => "closed",
                    Some(_) => "open",
                    None => "unknown",
                },
                parents: facts.map_or_else(
                    || lease.parent_shard_ids.iter().cloned().collect(),
                    |f| f.parents.clone(),
                ),
                children: children
                    .get(shard_id.as_str())
                    .map(|c| c.iter().cloned().collect())
                    .unwrap_or_else(|| lease.child_shard_ids.iter().cloned().collect()),
                behind: if finished {
                    Some(Duration::ZERO)
                } else {
                    probe.behind
                },
                checkpointed_at: probe.checkpointed_at,
                shard_id,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
    rows
}

/// The summary: shards, how many are finished, and the largest lag of the unfinished ones.
pub fn total(rows: &[Row]) -> (usize, usize, Option<Duration>) {
    let finished = rows.iter().filter(|r| r.finished()).count();
    let most = rows
        .iter()
        .filter(|r| !r.finished())
        .filter_map(|r| r.behind)
        .max();
    (rows.len(), finished, most)
}

fn unix_millis(time: SystemTime) -> Option<u128> {
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_millis())
}

/// The report as JSON lines: one object per shard, then `{"total": …}`.
pub fn render_json(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        let line = json!({
            "lease_key": row.lease_key,
            "shard_id": row.shard_id,
            "owner": row.owner,
            "checkpoint": row.checkpoint,
            "sub_sequence_number": row.sub_sequence_number,
            "state": row.state,
            "parents": row.parents,
            "children": row.children,
            "behind_ms": row.behind.map(|d| d.as_millis() as u64),
            "checkpointed_at_ms": row.checkpointed_at.and_then(unix_millis).map(|m| m as u64),
        });
        let _ = writeln!(out, "{line}");
    }
    let (shards, finished, most) = total(rows);
    let summary: Value = json!({"total": {
        "shards": shards,
        "finished": finished,
        "max_behind_ms": most.map(|d| d.as_millis() as u64),
    }});
    let _ = writeln!(out, "{summary}");
    out
}

/// The report as a table with a summary line.
pub fn render_table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<8} {:<20} {:<10} {:<58} {:<}",
        "SHARD", "STATE", "OWNER", "BEHIND", "CHECKPOINT", "PARENTS → CHILDREN"
    );
    for row in rows {
        let checkpoint = if row.sub_sequence_number > 0 {
            format!("{}/{}", row.checkpoint, row.sub_sequence_number)
        } else {
            row.checkpoint.clone()
        };
        let _ = writeln!(
            out,
            "{:<24} {:<8} {:<20} {:<10} {:<58} {} → {}",
            row.shard_id,
            row.state,
            row.owner.as_deref().unwrap_or("-"),
            row.behind.map_or("?".to_owned(), format_duration),
            checkpoint,
            if row.parents.is_empty() {
                "-".to_owned()
            } else {
                row.parents.join(",")
            },
            if row.children.is_empty() {
                "-".to_owned()
            } else {
                row.children.join(",")
            },
        );
    }
    let (shards, finished, most) = total(rows);
    let _ = writeln!(
        out,
        "{shards} shards, {finished} finished; most behind: {}",
        most.map_or("-".to_owned(), format_duration)
    );
    out
}

/// Reads the leases of `stream` in `table` (single-stream leases, or multi-stream leases of a
/// stream of that name), lists the stream's shards, and probes each unfinished shard at its
/// checkpoint.
pub async fn read(
    table: &LeaseTable,
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<Row>, Box<dyn std::error::Error + Send + Sync>> {
    let leases: Vec<Lease> = table
        .list_leases()
        .await?
        .into_iter()
        .filter(|lease| {
            lease
                .multi_stream
                .as_ref()
                .is_none_or(|m| m.stream.stream_name() == stream)
        })
        .collect();
    let shards = list_shards(kinesis, stream).await?;
    let mut probes = BTreeMap::new();
    for lease in &leases {
        let iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(lease.shard_id());
        let iterator = match &lease.checkpoint.position {
            SequencePosition::ShardEnd => continue,
            SequencePosition::Sequence(sequence) => iterator
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(sequence.as_str()),
            SequencePosition::Latest => iterator.shard_iterator_type(ShardIteratorType::Latest),
            // AT_TIMESTAMP's time is not in the lease: measured from the oldest record.
            _ => iterator.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let Ok(iterator) = iterator.send().await else {
            // Trimmed, or the stream is gone: nothing to measure.
            continue;
        };
        let Some(iterator) = iterator.shard_iterator() else {
            continue;
        };
        let read = kinesis
            .get_records()
            .shard_iterator(iterator)
            .limit(1)
            .send()
            .await?;
        let checkpointed = matches!(lease.checkpoint.position, SequencePosition::Sequence(_));
        probes.insert(
            lease.lease_key.clone(),
            Probe {
                behind: read
                    .millis_behind_latest()
                    .map(|ms| Duration::from_millis(ms.max(0) as u64)),
                checkpointed_at: read
                    .records()
                    .first()
                    .filter(|_| checkpointed)
                    .and_then(|r| r.approximate_arrival_timestamp())
                    .and_then(|t| SystemTime::try_from(*t).ok()),
            },
        );
    }
    Ok(rows(&leases, &shards, &probes))
}

#[cfg(test)]
mod tests {
    use kinesis_kcl::lease::{ExtendedSequenceNumber, SequenceNumber};

    use super::*;

    fn lease(shard: &str, checkpoint: ExtendedSequenceNumber, owner: Option<&str>) -> Lease {
        let mut lease = Lease::new(shard, checkpoint);
        lease.lease_owner = owner.map(str::to_owned);
        lease
    }

    #[test]
    fn rows_join_leases_shards_and_probes() {
        let seq = |s: &str| {
            ExtendedSequenceNumber::new(
                SequencePosition::Sequence(SequenceNumber::new(s).unwrap()),
                2,
            )
        };
        let leases = [
            lease("shardId-0", ExtendedSequenceNumber::SHARD_END, None),
            lease("shardId-1", seq("100"), Some("w1")),
            lease("shardId-2", ExtendedSequenceNumber::TRIM_HORIZON, None),
        ];
        let shards = [
            Shard {
                shard_id: "shardId-0".into(),
                parents: vec![],
                range: None,
                closed: true,
            },
            Shard {
                shard_id: "shardId-1".into(),
                parents: vec!["shardId-0".into()],
                range: None,
                closed: false,
            },
            Shard {
                shard_id: "shardId-2".into(),
                parents: vec!["shardId-0".into()],
                range: None,
                closed: false,
            },
        ];
        let probes = BTreeMap::from([
            (
                "shardId-1".to_owned(),
                Probe {
                    behind: Some(Duration::from_secs(5)),
                    checkpointed_at: Some(UNIX_EPOCH + Duration::from_secs(1_000)),
                },
            ),
            (
                "shardId-2".to_owned(),
                Probe {
                    behind: Some(Duration::from_secs(60)),
                    checkpointed_at: None,
                },
            ),
        ]);
        let rows = rows(&leases, &shards, &probes);
        assert_eq!(rows[0].state, "closed");
        assert_eq!(rows[0].children, ["shardId-1", "shardId-2"]);
        assert_eq!(
            rows[0].behind,
            Some(Duration::ZERO),
            "a finished shard is not behind"
        );
        assert_eq!(rows[1].owner.as_deref(), Some("w1"));
        assert_eq!(
            (rows[1].checkpoint.as_str(), rows[1].sub_sequence_number),
            ("100", 2)
        );
        assert_eq!(rows[1].parents, ["shardId-0"]);
        assert_eq!(total(&rows), (3, 1, Some(Duration::from_secs(60))));
        let json = render_json(&rows);
        assert!(
            json.lines()
                .last()
                .unwrap()
                .contains("\"max_behind_ms\":60000"),
            "{json}"
        );
        assert!(json.contains("\"checkpointed_at_ms\":1000000"), "{json}");
        assert!(
            render_table(&rows).contains("3 shards, 1 finished; most behind: 60s"),
            "{}",
            render_table(&rows)
        );
    }

    #[test]
    fn a_lease_of_a_trimmed_shard_is_unknown_and_keeps_its_lineage() {
        let mut gone = lease("shardId-9", ExtendedSequenceNumber::TRIM_HORIZON, None);
        gone.parent_shard_ids.insert("shardId-8".into());
        let rows = rows(&[gone], &[], &BTreeMap::new());
        assert_eq!(rows[0].state, "unknown");
        assert_eq!(rows[0].parents, ["shardId-8"]);
        assert_eq!(rows[0].behind, None);
    }
}
