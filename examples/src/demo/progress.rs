//! The demo's live view: progress bars for records produced and consumed and one per worker
//! (its leases and the records delivered to it), fed by a monitor task that also watches the
//! lease table to report the final lease distribution and how often leases moved.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kinesis_kcl::lease::LeaseTable;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::tracker::Tracker;

/// How often the monitor refreshes the bars and scans the lease table.
pub const MONITOR_PERIOD: Duration = Duration::from_millis(250);

/// Progress bars; hidden when disabled (and by indicatif itself when stderr is no terminal).
#[derive(Debug)]
pub struct Bars {
    produced: ProgressBar,
    consumed: ProgressBar,
    workers: Vec<ProgressBar>,
}

impl Bars {
    /// Bars for `records` records and the given workers, drawn on stderr when `visible`.
    pub fn new(records: u64, worker_ids: &[String], visible: bool) -> Self {
        let multi = MultiProgress::with_draw_target(if visible {
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
        Bars {
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

    fn refresh(&self, tracker: &Tracker, leases: Option<&BTreeMap<String, usize>>, ids: &[String]) {
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
    }

    fn finish(&self) {
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
            bars.finish();
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
