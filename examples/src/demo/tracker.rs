//! What the demo's producer stored and its workers delivered, record by record.
//!
//! Every record of a run carries `<run id>:<n>` as its data and `key-<n % keys>` as its partition
//! key, so the tracker can tell, without keeping the payloads, which of the produced records
//! were delivered, which more than once, which never, and whether the first deliveries of each
//! key came in the order the key's records were put. Records of other runs (a reused stream)
//! are counted apart and otherwise ignored.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// The bookkeeping of one run, shared by the producer and every processor.
#[derive(Debug)]
pub struct Tracker {
    prefix: String,
    records: u64,
    keys: u64,
    state: Mutex<State>,
    produced: AtomicU64,
    distinct: AtomicU64,
    per_worker: Vec<AtomicU64>,
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// Per record: stored by the producer.
    stored: Vec<bool>,
    /// Per record: times delivered (saturating).
    delivered: Vec<u32>,
    /// Per key: the largest record number delivered for the first time so far.
    last_first: Vec<Option<u64>>,
    /// Distinct (shard, sequence number) of the Kinesis records holding the stored records.
    kinesis_records: HashSet<(String, String)>,
    /// Stored records not delivered yet.
    undelivered: u64,
    failed_puts: u64,
    deliveries: u64,
    out_of_order: u64,
    foreign: u64,
    malformed: u64,
}

/// Totals at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records stored by the producer.
    pub produced: u64,
    /// Records the producer reported as failed.
    pub failed_puts: u64,
    /// Distinct records of this run delivered to a processor.
    pub consumed: u64,
    /// Stored records never delivered.
    pub lost: u64,
    /// Deliveries of this run's records, re-deliveries included.
    pub deliveries: u64,
    /// Deliveries beyond the first of a record.
    pub duplicates: u64,
    /// First deliveries that came after a later record of the same key.
    pub out_of_order: u64,
    /// Records delivered from other runs (or other writers) of the stream.
    pub foreign: u64,
    /// Records of this run whose partition key or number did not match.
    pub malformed: u64,
    /// Distinct Kinesis records (aggregates or single records) holding the stored records.
    pub kinesis_records: u64,
}

impl Tracker {
    /// A tracker for `records` records over `keys` keys, consumed by `workers` workers;
    /// `run_id` tells this run's records from others.
    pub fn new(run_id: &str, records: u64, keys: u64, workers: usize) -> Self {
        let len = usize::try_from(records).expect("record count fits in memory");
        Tracker {
            prefix: format!("{run_id}:"),
            records,
            keys: keys.max(1),
            state: Mutex::new(State {
                stored: vec![false; len],
                delivered: vec![0; len],
                last_first: vec![None; usize::try_from(keys.max(1)).expect("key count fits")],
                kinesis_records: HashSet::new(),
                undelivered: 0,
                failed_puts: 0,
                deliveries: 0,
                out_of_order: 0,
                foreign: 0,
                malformed: 0,
            }),
            produced: AtomicU64::new(0),
            distinct: AtomicU64::new(0),
            per_worker: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            changed: Notify::new(),
        }
    }

    /// The partition key of record `n`.
    pub fn partition_key(&self, n: u64) -> String {
        format!("key-{}", n % self.keys)
    }

    /// The data of record `n`.
    pub fn payload(&self, n: u64) -> String {
        format!("{}{n}", self.prefix)
    }

    /// Record `n` was stored in the Kinesis record `(shard, sequence_number)`.
    pub fn stored(&self, n: u64, shard: &str, sequence_number: &str) {
        let mut state = self.lock();
        let i = n as usize;
        if state.stored.get(i) == Some(&false) {
            state.stored[i] = true;
            if state.delivered[i] == 0 {
                state.undelivered += 1;
            }
            self.produced.fetch_add(1, Ordering::Relaxed);
        }
        state
            .kinesis_records
            .insert((shard.to_owned(), sequence_number.to_owned()));
    }

    /// A put failed for good.
    pub fn put_failed(&self) {
        self.lock().failed_puts += 1;
    }

    /// Worker `worker` (0-based) was handed these records, as `(partition key, data)`.
    pub fn delivered<'a>(
        &self,
        worker: usize,
        records: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) {
        let mut state = self.lock();
        let mut first = 0;
        let mut ours = 0;
        for (key, data) in records {
            let Some(n) = self.parse(data) else {
                state.foreign += 1;
                continue;
            };
            if n >= self.records || key != self.partition_key(n) {
                state.malformed += 1;
                continue;
            }
            ours += 1;
            state.deliveries += 1;
            let count = &mut state.delivered[n as usize];
            *count = count.saturating_add(1);
            if *count > 1 {
                continue;
            }
            first += 1;
            if state.stored[n as usize] {
                state.undelivered -= 1;
            }
            let last = &mut state.last_first[(n % self.keys) as usize];
            match *last {
                Some(prev) if prev > n => state.out_of_order += 1,
                _ => *last = Some(n),
            }
        }
        drop(state);
        self.distinct.fetch_add(first, Ordering::Relaxed);
        if let Some(counter) = self.per_worker.get(worker) {
            counter.fetch_add(ours, Ordering::Relaxed);
        }
        self.changed.notify_waiters();
    }

    fn parse(&self, data: &[u8]) -> Option<u64> {
        std::str::from_utf8(data)
            .ok()?
            .strip_prefix(&self.prefix)?
            .parse()
            .ok()
    }

    /// Records stored so far (cheap; for progress bars).
    pub fn produced(&self) -> u64 {
        self.produced.load(Ordering::Relaxed)
    }

    /// Distinct records delivered so far (cheap; for progress bars).
    pub fn consumed(&self) -> u64 {
        self.distinct.load(Ordering::Relaxed)
    }

    /// Records of this run delivered to worker `worker` (0-based), re-deliveries included.
    pub fn delivered_to(&self, worker: usize) -> u64 {
        self.per_worker
            .get(worker)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Whether every stored record has been delivered.
    pub fn all_stored_delivered(&self) -> bool {
        self.lock().undelivered == 0
    }

    /// Resolves once every stored record has been delivered (checked after each change).
    pub async fn wait_all_delivered(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.all_stored_delivered() {
                return;
            }
            changed.await;
        }
    }

    /// The totals now.
    pub fn counts(&self) -> Counts {
        let state = self.lock();
        let mut counts = Counts {
            failed_puts: state.failed_puts,
            deliveries: state.deliveries,
            out_of_order: state.out_of_order,
            foreign: state.foreign,
            malformed: state.malformed,
            kinesis_records: state.kinesis_records.len() as u64,
            ..Counts::default()
        };
        for (stored, delivered) in state.stored.iter().zip(&state.delivered) {
            counts.produced += u64::from(*stored);
            counts.consumed += u64::from(*delivered > 0);
            counts.lost += u64::from(*stored && *delivered == 0);
        }
        counts.duplicates = counts.deliveries - counts.consumed;
        counts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(tracker: &Tracker, worker: usize, ns: &[u64]) {
        let items: Vec<(String, String)> = ns
            .iter()
            .map(|&n| (tracker.partition_key(n), tracker.payload(n)))
            .collect();
        tracker.delivered(
            worker,
            items.iter().map(|(k, d)| (k.as_str(), d.as_bytes())),
        );
    }

    #[test]
    fn counts_lost_duplicates_and_aggregation() {
        let tracker = Tracker::new("run", 6, 2, 2);
        for n in 0..5 {
            tracker.stored(n, "shard-0", if n < 3 { "1" } else { "2" });
        }
        tracker.put_failed();
        deliver(&tracker, 0, &[0, 1, 2]);
        deliver(&tracker, 1, &[2, 3]);
        let counts = tracker.counts();
        assert_eq!(counts.produced, 5);
        assert_eq!(counts.failed_puts, 1);
        assert_eq!(counts.consumed, 4);
        assert_eq!(counts.lost, 1, "record 4 was stored and never delivered");
        assert_eq!(counts.deliveries, 5);
        assert_eq!(counts.duplicates, 1);
        assert_eq!(counts.kinesis_records, 2);
        assert_eq!(counts.out_of_order, 0);
        assert_eq!(tracker.delivered_to(0), 3);
        assert_eq!(tracker.delivered_to(1), 2);
        assert!(!tracker.all_stored_delivered());
        deliver(&tracker, 1, &[4]);
        assert!(tracker.all_stored_delivered());
    }

    #[test]
    fn a_record_delivered_but_never_reported_stored_is_consumed_not_lost() {
        let tracker = Tracker::new("run", 2, 1, 1);
        tracker.stored(0, "s", "1");
        deliver(&tracker, 0, &[0, 1]);
        let counts = tracker.counts();
        assert_eq!((counts.produced, counts.consumed, counts.lost), (1, 2, 0));
    }

    #[test]
    fn first_deliveries_out_of_key_order_are_counted() {
        let tracker = Tracker::new("run", 10, 2, 1);
        // Key 0 holds 0, 2, 4, …: 4 arrives before 2.
        deliver(&tracker, 0, &[0, 4, 2, 1, 3]);
        // A re-delivery of an older record is a duplicate, not a reordering.
        deliver(&tracker, 0, &[2, 6]);
        let counts = tracker.counts();
        assert_eq!(counts.out_of_order, 1);
        assert_eq!(counts.duplicates, 1);
    }

    #[test]
    fn other_runs_and_mismatched_records_are_set_apart() {
        let tracker = Tracker::new("run", 3, 3, 1);
        tracker.delivered(
            0,
            [
                ("key-0", b"other:0".as_slice()),
                ("key-1", b"run:0".as_slice()), // record 0 belongs to key-0
                ("key-0", b"run:7".as_slice()), // beyond the run
                ("key-0", b"\xff".as_slice()),
            ],
        );
        let counts = tracker.counts();
        assert_eq!((counts.foreign, counts.malformed), (2, 2));
        assert_eq!(counts.deliveries, 0);
    }

    #[tokio::test]
    async fn waiting_ends_when_the_last_stored_record_arrives() {
        let tracker = std::sync::Arc::new(Tracker::new("run", 2, 1, 1));
        tracker.stored(0, "s", "1");
        tracker.stored(1, "s", "1");
        let waiter = tokio::spawn({
            let tracker = tracker.clone();
            async move { tracker.wait_all_delivered().await }
        });
        deliver(&tracker, 0, &[0]);
        deliver(&tracker, 0, &[1]);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the waiter saw the last delivery")
            .expect("the waiter did not panic");
    }
}
