//! The demo's live view: progress bars for records produced and consumed and one per worker
//! (its leases and the records delivered to it), or the same as a plain line every
//! [`LINE_PERIOD`] when the output is not a terminal; fed by a monitor task that also watches
//! the lease table to report the final lease distribution and how often leases moved.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kinesis_kcl::lease::LeaseTable;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::tracker::Tracker;

/// How often the monitor refreshes the bars and scans the lease table.
pub const MONITOR_PERIOD: Duration = Duration::from_millis(250);

/// How often a plain progress line is printed.
pub const LINE_PERIOD: Duration = Duration::from_secs(5);

/// How progress is shown on standard error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// Live progress bars (for a terminal).
    Bars,
    /// A plain `progress …` line every [`LINE_PERIOD`] and one at the end (for logs and pipes).
    Lines,
    /// Nothing.
    Off,
}

/// Plain progress lines: when the last was printed, and what the workers held then.
#[derive(Debug)]
struct Lines {
    started: Instant,
    next: Instant,
    leases: BTreeMap<String, usize>,
}

/// Progress bars, drawn on stderr in [`ProgressMode::Bars`], hidden otherwise (the counts
/// behind them feed the plain lines too).
#[derive(Debug)]
pub struct Bars {
    records: u64,
    produced: ProgressBar,
    consumed: ProgressBar,
    workers: Vec<ProgressBar>,
    lines: Option<Lines>,
}

impl Bars {
    /// Bars for `records` records and the given workers, shown as `mode` says.
    pub fn new(records: u64, worker_ids: &[String], mode: ProgressMode) -> Self {
        let multi = MultiProgress::with_draw_target(if mode == ProgressMode::Bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let records_style =
            ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos:>7}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> ");
        let worker_style =
            ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos:>7} records, {msg}")
                .expect("valid template")
                .progress_chars("=> ");
        let bar = |prefix: String, style: &ProgressStyle| {
            let bar = multi.add(ProgressBar::new(records));
            bar.set_style(style.clone());
            bar.set_prefix(prefix);
            bar
        };
        let lines = (mode == ProgressMode::Lines).then(|| {
            let now = Instant::now();
            Lines {
                started: now,
                next: now + LINE_PERIOD,
                leases: BTreeMap::new(),
            }
        });
        Bars {
            records,
            lines,
            produced: bar("produced".into(), &records_style),
            consumed: bar("consumed".into(), &records_style),
            workers: worker_ids
                .iter()
                .map(|id| {
                    let bar = bar(id.clone(), &worker_style);
                    bar.set_message("0 leases");
                    bar
                })
                .collect(),
        }
    }

    fn refresh(
        &mut self,
        tracker: &Tracker,
        leases: Option<&BTreeMap<String, usize>>,
        ids: &[String],
    ) {
        for (bar, n) in [
            (&self.produced, tracker.produced()),
            (&self.consumed, tracker.consumed()),
        ] {
            bar.set_position(n);
            let secs = bar.elapsed().as_secs_f64();
            if secs > 0.0 {
                bar.set_message(format!("{:.0} records/s", n as f64 / secs));
            }
        }
        for (i, bar) in self.workers.iter().enumerate() {
            bar.set_position(tracker.delivered_to(i));
            if let Some(leases) = leases {
                let held = leases.get(&ids[i]).copied().unwrap_or(0);
                bar.set_message(format!("{held} lease{}", if held == 1 { "" } else { "s" }));
            }
        }
        if let Some(lines) = &mut self.lines {
            if let Some(leases) = leases {
                lines.leases = leases.clone();
            }
            if Instant::now() >= lines.next {
                lines.next += LINE_PERIOD;
                eprintln!("{}", self.line(tracker, ids));
            }
        }
    }

    /// One plain progress line: `progress 10s: produced 5000/100000 (500 records/s), …`.
    fn line(&self, tracker: &Tracker, ids: &[String]) -> String {
        let Some(lines) = &self.lines else {
            return String::new();
        };
        let secs = lines.started.elapsed().as_secs_f64().max(1e-3);
        let (produced, consumed) = (tracker.produced(), tracker.consumed());
        let mut line = format!(
            "progress {secs:.0}s: produced {produced}/{} ({:.0} records/s), consumed {consumed} \
             ({:.0} records/s)",
            self.records,
            produced as f64 / secs,
            consumed as f64 / secs
        );
        for (i, id) in ids.iter().enumerate() {
            let held = lines.leases.get(id).copied().unwrap_or(0);
            let _ = write!(
                line,
                "; {id}: {held} lease{}, {} records",
                if held == 1 { "" } else { "s" },
                tracker.delivered_to(i)
            );
        }
        line
    }

    fn finish(&self, tracker: &Tracker, ids: &[String]) {
        if self.lines.is_some() {
            eprintln!("{}", self.line(tracker, ids));
        }
        for bar in [&self.produced, &self.consumed]
            .into_iter()
            .chain(&self.workers)
        {
            bar.abandon();
        }
    }
}

/// What the monitor saw of the lease table.
#[derive(Clone, Debug, Default)]
pub struct LeaseWatch {
    /// The last owner of each lease seen owned.
    last_owner: HashMap<String, String>,
    /// Times a lease was seen owned by a worker other than its previous owner.
    pub moves: u64,
    /// Lease table scans that failed (the table may not exist yet at the very start).
    pub failed_scans: u64,
}

impl LeaseWatch {
    /// Takes in one scan: `(lease key, owner)` pairs. Returns the leases held per owner.
    pub fn observe<'a>(
        &mut self,
        leases: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> BTreeMap<String, usize> {
        let mut held = BTreeMap::new();
        for (key, owner) in leases {
            let Some(owner) = owner else { continue };
            *held.entry(owner.to_owned()).or_insert(0) += 1;
            match self.last_owner.get(key) {
                Some(previous) if previous == owner => {}
                Some(_) => {
                    self.moves += 1;
                    self.last_owner.insert(key.to_owned(), owner.to_owned());
                }
                None => {
                    self.last_owner.insert(key.to_owned(), owner.to_owned());
                }
            }
        }
        held
    }
}

/// The monitor task: refreshes the bars and watches the leases until stopped.
#[derive(Debug)]
pub struct Monitor {
    stop: watch::Sender<bool>,
    task: JoinHandle<(LeaseWatch, Bars)>,
}

impl Monitor {
    /// Starts watching `table` and `tracker` every [`MONITOR_PERIOD`].
    pub fn start(table: LeaseTable, tracker: Arc<Tracker>, ids: Vec<String>, bars: Bars) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut bars = bars;
            let mut watch = LeaseWatch::default();
            let mut tick = tokio::time::interval(MONITOR_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => break,
                    _ = tick.tick() => {}
                }
                let held = match table.list_leases().await {
                    Ok(leases) => Some(
                        watch.observe(
                            leases
                                .iter()
                                .map(|l| (l.lease_key.as_str(), l.lease_owner.as_deref())),
                        ),
                    ),
                    Err(error) => {
                        watch.failed_scans += 1;
                        tracing::debug!(%error, "lease table scan failed");
                        None
                    }
                };
                bars.refresh(&tracker, held.as_ref(), &ids);
            }
            bars.refresh(&tracker, None, &ids);
            bars.finish(&tracker, &ids);
            (watch, bars)
        });
        Monitor { stop, task }
    }

    /// Stops the monitor and returns what it saw.
    pub async fn stop(self) -> LeaseWatch {
        self.stop.send_replace(true);
        match self.task.await {
            Ok((watch, _bars)) => watch,
            Err(error) => {
                tracing::error!(%error, "the progress monitor failed");
                LeaseWatch::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_moves_count_owner_changes_only() {
        let mut watch = LeaseWatch::default();
        let held = watch.observe([("s0", Some("a")), ("s1", Some("a")), ("s2", None)]);
        assert_eq!(held, BTreeMap::from([("a".to_owned(), 2)]));
        // Released then taken by b: one move; s2 first taken: no move.
        watch.observe([("s0", None), ("s1", Some("a")), ("s2", Some("b"))]);
        let held = watch.observe([("s0", Some("b")), ("s1", Some("a")), ("s2", Some("b"))]);
        assert_eq!(watch.moves, 1);
        assert_eq!(
            held,
            BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 2)])
        );
    }
}
