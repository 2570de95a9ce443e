//! `kinesis-ops leases`: the lease table at a glance, and which owners are alive.
//!
//! [`observe`] scans the table, waits an interval, scans it again, and [`compare`]s the two
//! scans: a lease whose counter moved has an owner (or a taker, or a checkpointer) writing to
//! it right now; one whose counter stayed put was not written for at least the gap between the
//! scans. With the KCL's defaults an owner renews every ~3.3 s, so an interval of 4 s (the
//! CLI's default) sees every live owner renew; a lease unchanged for the whole failover time (10 s by
//! default) is what other workers consider expired.
//!
//! The comparison and the rendering are pure functions over the scanned leases.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use kinesis_kcl::lease::{Lease, LeaseTable};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::format_duration;

/// What happened to a lease's counter between the two scans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterChange {
    /// The counter moved: someone wrote the lease between the scans.
    Moved {
        /// The counter in the first scan.
        from: u64,
        /// The counter in the second scan.
        to: u64,
        /// The longest the move can have taken to be seen: from the start of the first scan
        /// to the end of the second.
        within: Duration,
    },
    /// The counter did not move for at least this long (the time between the end of the
    /// first scan and the start of the second).
    Unchanged {
        /// A lower bound on how long the counter has stood still.
        for_at_least: Duration,
    },
    /// The lease was created between the scans.
    Appeared,
    /// The lease was deleted between the scans (the row shows it as the first scan saw it).
    Deleted,
    /// Only one scan was made (interval 0): nothing to compare.
    SingleRead,
}

impl CounterChange {
    /// Whether the counter moved between the scans.
    pub fn moved(&self) -> bool {
        matches!(self, CounterChange::Moved { .. })
    }

    /// A short description for the table: `moved (+3 in ≤2.1s)`, `unchanged ≥2s`, ….
    pub fn describe(&self) -> String {
        match self {
            CounterChange::Moved { from, to, within } => format!(
                "moved (+{} in ≤{})",
                to.saturating_sub(*from),
                format_duration(*within)
            ),
            CounterChange::Unchanged { for_at_least } => {
                format!("unchanged ≥{}", format_duration(*for_at_least))
            }
            CounterChange::Appeared => "new".to_owned(),
            CounterChange::Deleted => "deleted".to_owned(),
            CounterChange::SingleRead => "-".to_owned(),
        }
    }
}

/// One lease as shown by `kinesis-ops leases`.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRow {
    /// The lease as the second scan saw it (the first, for a deleted lease).
    pub lease: Lease,
    /// What its counter did between the scans.
    pub change: CounterChange,
}

/// When the two scans were made, relative to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ScanTiming {
    /// From the end of the first scan to the start of the second: a counter equal in both was
    /// unchanged at least this long.
    pub gap: Duration,
    /// From the start of the first scan to the end of the second: a counter that differs moved
    /// within this time.
    pub span: Duration,
}

/// The leases of a table, sorted by key, with what their counters did.
#[derive(Clone, Debug, PartialEq)]
pub struct Listing {
    /// One row per lease, sorted by lease key.
    pub rows: Vec<LeaseRow>,
    /// When the scans were made; `None` for a single scan.
    pub timing: Option<ScanTiming>,
}

/// Compares two scans of a lease table (pure). `second` is `None` when only one scan was made.
pub fn compare(first: Vec<Lease>, second: Option<(Vec<Lease>, ScanTiming)>) -> Listing {
    let Some((second, timing)) = second else {
        let mut rows: Vec<LeaseRow> = first
            .into_iter()
            .map(|lease| LeaseRow {
                lease,
                change: CounterChange::SingleRead,
            })
            .collect();
        rows.sort_by(|a, b| a.lease.lease_key.cmp(&b.lease.lease_key));
        return Listing { rows, timing: None };
    };
    let mut before: BTreeMap<String, Lease> = first
        .into_iter()
        .map(|lease| (lease.lease_key.clone(), lease))
        .collect();
    let mut rows = Vec::with_capacity(second.len());
    for lease in second {
        let change = match before.remove(&lease.lease_key) {
            None => CounterChange::Appeared,
            Some(old) if old.lease_counter != lease.lease_counter => CounterChange::Moved {
                from: old.lease_counter,
                to: lease.lease_counter,
                within: timing.span,
            },
            Some(_) => CounterChange::Unchanged {
                for_at_least: timing.gap,
            },
        };
        rows.push(LeaseRow { lease, change });
    }
    rows.extend(before.into_values().map(|lease| LeaseRow {
        lease,
        change: CounterChange::Deleted,
    }));
    rows.sort_by(|a, b| a.lease.lease_key.cmp(&b.lease.lease_key));
    Listing {
        rows,
        timing: Some(timing),
    }
}

/// Scans `table`, waits `interval`, scans again, and compares (a single scan when `interval`
/// is zero).
///
/// # Errors
///
/// The errors of [`LeaseTable::list_leases`] (a failed request, an item that is not a lease).
pub async fn observe(
    table: &LeaseTable,
    interval: Duration,
) -> Result<Listing, kinesis_kcl::Error> {
    let started = Instant::now();
    let first = table.list_leases().await?;
    if interval.is_zero() {
        return Ok(compare(first, None));
    }
    let first_done = Instant::now();
    tokio::time::sleep(interval).await;
    let second_started = Instant::now();
    let second = table.list_leases().await?;
    let timing = ScanTiming {
        gap: second_started - first_done,
        span: started.elapsed(),
    };
    Ok(compare(first, Some((second, timing))))
}

/// The owner column: `leaseOwner`, and `checkpointOwner` during a hand-off.
fn owner_text(lease: &Lease) -> String {
    match (&lease.lease_owner, &lease.checkpoint_owner) {
        (Some(owner), Some(cp)) if cp != owner => format!("{owner} (checkpointOwner {cp})"),
        (Some(owner), _) => owner.clone(),
        (None, Some(cp)) => format!("- (checkpointOwner {cp})"),
        (None, None) => "-".to_owned(),
    }
}

fn parents_text(parents: &BTreeSet<String>) -> String {
    if parents.is_empty() {
        "-".to_owned()
    } else {
        parents.iter().cloned().collect::<Vec<_>>().join(",")
    }
}

impl Listing {
    /// The row of `lease_key`, if the table has it.
    pub fn row(&self, lease_key: &str) -> Option<&LeaseRow> {
        self.rows.iter().find(|r| r.lease.lease_key == lease_key)
    }

    /// How many leases each owner (`leaseOwner`) holds; unowned leases count under `None`.
    /// Deleted leases are not counted.
    pub fn owner_counts(&self) -> BTreeMap<Option<String>, usize> {
        let mut counts = BTreeMap::new();
        for row in self
            .rows
            .iter()
            .filter(|r| r.change != CounterChange::Deleted)
        {
            *counts.entry(row.lease.lease_owner.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// The summary line: `3 leases; worker-a: 2 (2 moved), unowned: 1`.
    pub fn summary(&self) -> String {
        let live: Vec<&LeaseRow> = self
            .rows
            .iter()
            .filter(|r| r.change != CounterChange::Deleted)
            .collect();
        let mut moved: BTreeMap<Option<String>, usize> = BTreeMap::new();
        for row in live.iter().filter(|r| r.change.moved()) {
            *moved.entry(row.lease.lease_owner.clone()).or_insert(0) += 1;
        }
        let owners: Vec<String> = self
            .owner_counts()
            .into_iter()
            .map(|(owner, count)| {
                let name = owner.clone().unwrap_or_else(|| "unowned".to_owned());
                match (self.timing, moved.get(&owner)) {
                    (Some(_), Some(m)) => format!("{name}: {count} ({m} moved)"),
                    (Some(_), None) => format!("{name}: {count} (none moved)"),
                    (None, _) => format!("{name}: {count}"),
                }
            })
            .collect();
        let handoffs = live
            .iter()
            .filter(|r| r.lease.checkpoint_owner.is_some())
            .count();
        let mut line = format!(
            "{} lease{}",
            live.len(),
            if live.len() == 1 { "" } else { "s" }
        );
        if !owners.is_empty() {
            let _ = write!(line, "; {}", owners.join(", "));
        }
        if handoffs > 0 {
            let _ = write!(line, "; {handoffs} in hand-off");
        }
        if let Some(timing) = self.timing {
            let _ = write!(
                line,
                "; counters compared over {}",
                format_duration(timing.gap)
            );
        }
        line
    }

    /// The aligned text table, header first, one line per lease (without the summary).
    pub fn render_table(&self) -> String {
        const HEADER: [&str; 9] = [
            "LEASE KEY",
            "OWNER",
            "COUNTER",
            "CHECKPOINT",
            "SUB",
            "PENDING",
            "PARENTS",
            "SWITCHES",
            "COUNTER LAST MOVED",
        ];
        let mut lines: Vec<[String; 9]> = vec![HEADER.map(str::to_owned)];
        for row in &self.rows {
            let lease = &row.lease;
            lines.push([
                lease.lease_key.clone(),
                owner_text(lease),
                lease.lease_counter.to_string(),
                lease.checkpoint.position.to_string(),
                lease.checkpoint.sub_sequence_number.to_string(),
                lease
                    .pending_checkpoint
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
                parents_text(&lease.parent_shard_ids),
                lease.owner_switches_since_checkpoint.to_string(),
                row.change.describe(),
            ]);
        }
        let mut widths = [0usize; 9];
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in &lines {
            let mut text = String::new();
            for (i, (cell, width)) in line.iter().zip(widths).enumerate() {
                if i + 1 == line.len() {
                    text.push_str(cell);
                } else {
                    let pad = width - cell.chars().count();
                    let _ = write!(text, "{cell}{}  ", " ".repeat(pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }

    /// One JSON object per lease, in key order.
    pub fn json_lines(&self) -> Vec<Value> {
        self.rows
            .iter()
            .map(|row| {
                let lease = &row.lease;
                let (change, from, within_ms, unchanged_ms) = match &row.change {
                    CounterChange::Moved { from, within, .. } => {
                        ("moved", Some(*from), Some(within.as_millis() as u64), None)
                    }
                    CounterChange::Unchanged { for_at_least } => (
                        "unchanged",
                        None,
                        None,
                        Some(for_at_least.as_millis() as u64),
                    ),
                    CounterChange::Appeared => ("new", None, None, None),
                    CounterChange::Deleted => ("deleted", None, None, None),
                    CounterChange::SingleRead => ("single_read", None, None, None),
                };
                json!({
                    "lease_key": lease.lease_key,
                    "shard_id": lease.shard_id(),
                    "lease_owner": lease.lease_owner,
                    "checkpoint_owner": lease.checkpoint_owner,
                    "lease_counter": lease.lease_counter,
                    "checkpoint": lease.checkpoint.position.as_str(),
                    "checkpoint_sub_sequence_number": lease.checkpoint.sub_sequence_number,
                    "pending_checkpoint": lease.pending_checkpoint.as_ref().map(|p| p.position.as_str()),
                    "pending_checkpoint_sub_sequence_number":
                        lease.pending_checkpoint.as_ref().map(|p| p.sub_sequence_number),
                    "parent_shard_ids": lease.parent_shard_ids,
                    "child_shard_ids": lease.child_shard_ids,
                    "owner_switches_since_checkpoint": lease.owner_switches_since_checkpoint,
                    "counter": change,
                    "counter_before": from,
                    "moved_within_ms": within_ms,
                    "unchanged_for_at_least_ms": unchanged_ms,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use kinesis_kcl::lease::ExtendedSequenceNumber;

    use super::*;

    fn lease(key: &str, owner: Option<&str>, counter: u64) -> Lease {
        let mut lease = Lease::new(key, ExtendedSequenceNumber::TRIM_HORIZON);
        lease.lease_owner = owner.map(str::to_owned);
        lease.lease_counter = counter;
        lease
    }

    #[test]
    fn compare_tells_moved_unchanged_new_and_deleted() {
        let timing = ScanTiming {
            gap: Duration::from_secs(2),
            span: Duration::from_millis(2100),
        };
        let listing = compare(
            vec![
                lease("b", Some("w1"), 5),
                lease("a", Some("w2"), 7),
                lease("gone", None, 1),
            ],
            Some((
                vec![
                    lease("a", Some("w2"), 7),
                    lease("b", Some("w1"), 6),
                    lease("c", None, 0),
                ],
                timing,
            )),
        );
        let keys: Vec<&str> = listing
            .rows
            .iter()
            .map(|r| r.lease.lease_key.as_str())
            .collect();
        assert_eq!(keys, ["a", "b", "c", "gone"]);
        assert_eq!(
            listing.row("a").unwrap().change,
            CounterChange::Unchanged {
                for_at_least: Duration::from_secs(2)
            }
        );
        assert!(listing.row("b").unwrap().change.moved());
        assert_eq!(listing.row("c").unwrap().change, CounterChange::Appeared);
        assert_eq!(listing.row("gone").unwrap().change, CounterChange::Deleted);
        assert_eq!(
            listing.summary(),
            "3 leases; unowned: 1 (none moved), w1: 1 (1 moved), w2: 1 (none moved); \
             counters compared over 2s"
        );
        let table = listing.render_table();
        assert!(table.starts_with("LEASE KEY"), "{table}");
        assert!(table.contains("moved (+1 in ≤2.1s)"), "{table}");
        assert!(table.contains("unchanged ≥2s"), "{table}");
    }

    #[test]
    fn hand_off_shows_both_owners() {
        let mut l = lease("k", Some("next"), 3);
        l.checkpoint_owner = Some("previous".to_owned());
        assert_eq!(owner_text(&l), "next (checkpointOwner previous)");
        let listing = compare(vec![l], None);
        assert!(listing.summary().contains("1 in hand-off"));
        assert_eq!(listing.json_lines()[0]["checkpoint_owner"], "previous");
    }
}
