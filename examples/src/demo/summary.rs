//! The demo's result: what was produced, consumed, lost and duplicated, how fast, how well
//! aggregated, and how the leases were spread.

use std::fmt;
use std::time::Duration;

use super::tracker::Counts;

/// One worker's share at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerShare {
    /// The worker id.
    pub worker: String,
    /// Leases it held when every record had been consumed.
    pub leases: usize,
    /// Records delivered to it, re-deliveries included.
    pub records: u64,
}

/// The outcome of a demo run.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The stream used.
    pub stream: String,
    /// Its shard count.
    pub shards: u32,
    /// Where it ran (embedded servers, endpoints, AWS).
    pub target: String,
    /// Records the producer was asked to put.
    pub records: u64,
    /// Distinct partition keys.
    pub keys: u64,
    /// The record counts.
    pub counts: Counts,
    /// From the first put until every put resolved.
    pub produce_time: Duration,
    /// From the first put until the last stored record was first delivered (or the timeout).
    pub end_to_end_time: Duration,
    /// Whether the run gave up waiting for records.
    pub timed_out: bool,
    /// Per worker, in worker order.
    pub workers: Vec<WorkerShare>,
    /// Leases nobody held at the end.
    pub unowned_leases: usize,
    /// Lease owner changes seen while the run went on.
    pub lease_moves: u64,
    /// The first few put errors, for the report.
    pub put_errors: Vec<String>,
}

impl Summary {
    /// Whether the run succeeded: nothing lost and every put stored.
    pub fn ok(&self) -> bool {
        self.counts.lost == 0 && self.counts.failed_puts == 0
    }

    /// User records per Kinesis record (1.0 without aggregation).
    pub fn aggregation_ratio(&self) -> f64 {
        ratio(self.counts.produced, self.counts.kinesis_records)
    }

    /// Records stored per second while producing.
    pub fn produce_throughput(&self) -> f64 {
        per_second(self.counts.produced, self.produce_time)
    }

    /// Distinct records consumed per second, from the first put to the last first delivery.
    pub fn end_to_end_throughput(&self) -> f64 {
        per_second(self.counts.consumed, self.end_to_end_time)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn per_second(n: u64, time: Duration) -> f64 {
    let secs = time.as_secs_f64();
    if secs <= 0.0 { 0.0 } else { n as f64 / secs }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        writeln!(f, "demo summary")?;
        writeln!(
            f,
            "  stream:             {} ({} shards) on {}",
            self.stream, self.shards, self.target
        )?;
        writeln!(
            f,
            "  records produced:   {} of {} over {} keys ({} failed puts)",
            c.produced, self.records, self.keys, c.failed_puts
        )?;
        writeln!(f, "  records consumed:   {}", c.consumed)?;
        writeln!(f, "  records lost:       {}", c.lost)?;
        writeln!(
            f,
            "  duplicates:         {} ({} deliveries in all)",
            c.duplicates, c.deliveries
        )?;
        writeln!(f, "  out of key order:   {}", c.out_of_order)?;
        if c.foreign > 0 || c.malformed > 0 {
            writeln!(
                f,
                "  other records:      {} from other runs, {} malformed",
                c.foreign, c.malformed
            )?;
        }
        writeln!(
            f,
            "  produce throughput: {:.0} records/s ({:.2} s)",
            self.produce_throughput(),
            self.produce_time.as_secs_f64()
        )?;
        writeln!(
            f,
            "  end-to-end:         {:.0} records/s ({:.2} s{})",
            self.end_to_end_throughput(),
            self.end_to_end_time.as_secs_f64(),
            if self.timed_out { ", timed out" } else { "" }
        )?;
        writeln!(
            f,
            "  aggregation ratio:  {:.1} user records per Kinesis record ({} Kinesis records)",
            self.aggregation_ratio(),
            c.kinesis_records
        )?;
        let shares: Vec<String> = self
            .workers
            .iter()
            .map(|w| {
                format!(
                    "{}: {} lease{}, {} records",
                    w.worker,
                    w.leases,
                    if w.leases == 1 { "" } else { "s" },
                    w.records
                )
            })
            .collect();
        writeln!(
            f,
            "  lease distribution: {}{} ({} lease moves seen)",
            shares.join("; "),
            if self.unowned_leases > 0 {
                format!("; {} unowned", self.unowned_leases)
            } else {
                String::new()
            },
            self.lease_moves
        )?;
        for error in &self.put_errors {
            writeln!(f, "  put error:          {error}")?;
        }
        write!(
            f,
            "  result:             {}",
            if self.ok() {
                "OK"
            } else if c.lost > 0 {
                "FAILED: records lost"
            } else {
                "FAILED: puts failed"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(lost: u64, failed_puts: u64) -> Summary {
        Summary {
            stream: "s".into(),
            shards: 4,
            target: "embedded servers".into(),
            records: 1000,
            keys: 10,
            counts: Counts {
                produced: 1000 - failed_puts,
                failed_puts,
                consumed: 1000 - failed_puts - lost,
                lost,
                deliveries: 1010,
                duplicates: 10,
                kinesis_records: 40,
                ..Counts::default()
            },
            produce_time: Duration::from_millis(500),
            end_to_end_time: Duration::from_secs(2),
            timed_out: lost > 0,
            workers: vec![
                WorkerShare {
                    worker: "worker-1".into(),
                    leases: 2,
                    records: 505,
                },
                WorkerShare {
                    worker: "worker-2".into(),
                    leases: 1,
                    records: 505,
                },
            ],
            unowned_leases: 1,
            lease_moves: 3,
            put_errors: Vec::new(),
        }
    }

    #[test]
    fn renders_every_field() {
        let s = summary(0, 0);
        assert!(s.ok());
        assert_eq!(s.aggregation_ratio(), 25.0);
        assert_eq!(s.produce_throughput(), 2000.0);
        let text = s.to_string();
        for line in [
            "records produced:   1000 of 1000 over 10 keys (0 failed puts)",
            "records consumed:   1000",
            "records lost:       0",
            "duplicates:         10 (1010 deliveries in all)",
            "produce throughput: 2000 records/s (0.50 s)",
            "end-to-end:         500 records/s (2.00 s)",
            "aggregation ratio:  25.0 user records per Kinesis record (40 Kinesis records)",
            "lease distribution: worker-1: 2 leases, 505 records; worker-2: 1 lease, 505 records; 1 unowned (3 lease moves seen)",
            "result:             OK",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn losses_and_failed_puts_fail_the_run() {
        let lost = summary(3, 0);
        assert!(!lost.ok());
        assert!(
            lost.to_string()
                .contains("result:             FAILED: records lost")
        );
        assert!(lost.to_string().contains("timed out"));
        let failed = summary(0, 2);
        assert!(!failed.ok());
        assert!(failed.to_string().ends_with("FAILED: puts failed"));
    }
}
