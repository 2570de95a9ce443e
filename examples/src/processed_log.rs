//! The `worker` binary's `--processed-log`: what each processor of the worker did and when,
//! one tab-separated line per event, so that a test running workers as separate processes can
//! check afterwards who processed what (never the record data).
//!
//! ```text
//! init     <instance> <shard> <unix nanos>
//! record   <instance> <shard> <sequence number> <sub-sequence number> <partition key> <unix nanos>
//! end      <instance> <shard> <why: lease_lost | shard_ended | shutdown_requested> <unix nanos>
//! ```
//!
//! A partition key's tabs and line breaks are written as spaces. An instance is one processor of this worker (one tenure of one lease). Lines of a batch are
//! written and flushed before its checkpoint, so a record whose checkpoint landed is in the log
//! even if the process is killed right after.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// One line of a processed log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A processor started on a shard.
    Init {
        /// The processor instance.
        instance: u64,
        /// The shard id.
        shard: String,
        /// Unix time in nanoseconds.
        at: u128,
    },
    /// A processor processed a user record.
    Record {
        /// The processor instance.
        instance: u64,
        /// The shard id.
        shard: String,
        /// The record's sequence number.
        sequence_number: String,
        /// Its sub-sequence number.
        sub_sequence_number: u64,
        /// Its partition key.
        partition_key: String,
        /// Unix time in nanoseconds.
        at: u128,
    },
    /// A processor ended.
    End {
        /// The processor instance.
        instance: u64,
        /// The shard id.
        shard: String,
        /// `lease_lost`, `shard_ended` or `shutdown_requested`.
        why: String,
        /// Unix time in nanoseconds.
        at: u128,
    },
}

impl Event {
    /// Parses one line; `None` if it is not one of the three forms.
    pub fn parse(line: &str) -> Option<Event> {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["init", instance, shard, at] => Some(Event::Init {
                instance: instance.parse().ok()?,
                shard: (*shard).to_owned(),
                at: at.parse().ok()?,
            }),
            ["record", instance, shard, sequence, sub, key, at] => Some(Event::Record {
                instance: instance.parse().ok()?,
                shard: (*shard).to_owned(),
                sequence_number: (*sequence).to_owned(),
                sub_sequence_number: sub.parse().ok()?,
                partition_key: (*key).to_owned(),
                at: at.parse().ok()?,
            }),
            ["end", instance, shard, why, at] => Some(Event::End {
                instance: instance.parse().ok()?,
                shard: (*shard).to_owned(),
                why: (*why).to_owned(),
                at: at.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// The current time in Unix nanoseconds.
pub fn now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A processed log being written.
#[derive(Debug)]
pub struct ProcessedLog {
    out: Mutex<BufWriter<File>>,
}

impl ProcessedLog {
    /// Creates (or truncates) the log at `path`.
    pub fn create(path: &Path) -> std::io::Result<ProcessedLog> {
        Ok(ProcessedLog {
            out: Mutex::new(BufWriter::new(File::create(path)?)),
        })
    }

    /// Writes `lines` (already formatted, each ending in a newline) and flushes them.
    pub fn write(&self, lines: &str) -> std::io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(lines.as_bytes())?;
        out.flush()
    }
}

/// The line of a processor start.
pub fn init_line(instance: u64, shard: &str) -> String {
    format!("init\t{instance}\t{shard}\t{}\n", now())
}

/// The line of a processed record.
pub fn record_line(
    instance: u64,
    shard: &str,
    sequence_number: &str,
    sub_sequence_number: u64,
    partition_key: &str,
) -> String {
    let partition_key = partition_key.replace(['\t', '\n', '\r'], " ");
    format!(
        "record\t{instance}\t{shard}\t{sequence_number}\t{sub_sequence_number}\t{partition_key}\t{}\n",
        now()
    )
}

/// The line of a processor end.
pub fn end_line(instance: u64, shard: &str, why: &str) -> String {
    format!("end\t{instance}\t{shard}\t{why}\t{}\n", now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_back() {
        let init = init_line(3, "shardId-1");
        assert!(matches!(
            Event::parse(init.trim_end()),
            Some(Event::Init { instance: 3, ref shard, .. }) if shard == "shardId-1"
        ));
        let record = record_line(3, "shardId-1", "4959", 2, "key-7");
        assert!(matches!(
            Event::parse(record.trim_end()),
            Some(Event::Record { sub_sequence_number: 2, ref partition_key, .. }) if partition_key == "key-7"
        ));
        let end = end_line(3, "shardId-1", "lease_lost");
        assert!(matches!(
            Event::parse(end.trim_end()),
            Some(Event::End { ref why, .. }) if why == "lease_lost"
        ));
        assert_eq!(Event::parse("nonsense"), None);
    }
}
