//! Chaos with real processes: `kinesis-local` serves Kinesis and DynamoDB, the `producer` binary
//! puts a steady load, and four `worker` binaries (separate OS processes) consume it while the
//! test SIGKILLs random workers at random (seeded) times and starts replacements, pauses one
//! worker with SIGSTOP for twice the failover time and resumes it (the classic paused-process
//! zombie), and splits and merges shards mid-run. Every worker writes what its processors did
//! to its own `--processed-log`; the producer writes where each record was stored.
//!
//! Checked afterwards:
//! - nothing lost: every record the producer stored was processed;
//! - per key, records were first processed in their storage order across the lineage (parents
//!   before children);
//! - no two processors of a shard processed records at overlapping times: no record is
//!   processed by one while another is in the midst of processing that shard (a killed worker
//!   processes nothing after its kill, and a paused one nothing while paused, so no window is
//!   exempt);
//! - the zombie: once resumed, the paused worker processes no record of a shard that another
//!   worker took while it slept;
//! - no checkpoint in the lease table ever moves backwards (sampled every 200 ms).
//!
//! The short variant runs in CI (`cargo test -p kinesis-examples --test chaos`, 40 s of load);
//! the full one is `CHAOS_SECONDS=300 cargo test --release -p kinesis-examples --test chaos --
//! --nocapture`. Each run prints a `REPORT` line: records, kills, pauses, reshards, and the
//! records processed more than once with where that came from.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_examples::ConnectArgs;
use kinesis_examples::processed_log::{Event, now};
use support::local::{Local, pointed_at, start};
use support::{BoxError, TestResult};
use tokio::process::Child;

const SEED: u64 = 0xC4A0_5EED;
const WORKERS: usize = 4;
const FAILOVER: Duration = Duration::from_secs(2);
const STREAM: &str = "chaos";
const APPLICATION: &str = "chaos-app";
const KEYS: u64 = 200;
const RATE: u64 = 400;

/// SplitMix64: the test's seeded choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One worker process.
struct WorkerProcess {
    id: String,
    child: Child,
    log: PathBuf,
}

/// What happened to the workers, with Unix nanosecond times.
#[derive(Default)]
struct Chaos {
    /// Worker id → kill time.
    killed: HashMap<String, u128>,
    /// Worker id, pause start, resume time.
    paused: Vec<(String, u128, u128)>,
    reshards: usize,
}

fn signal(child: &Child, name: &str) -> TestResult {
    let pid = child.id().ok_or("the process already exited")?;
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()?;
    if !status.success() {
        return Err(format!("kill -{name} {pid} failed").into());
    }
    Ok(())
}

fn start_worker(local: &Local, dir: &Path, n: usize) -> Result<WorkerProcess, BoxError> {
    let id = format!("worker-{n}");
    let log = dir.join(format!("{id}.log"));
    let mut command = pointed_at(env!("CARGO_BIN_EXE_worker"), local);
    command
        .args(["--stream", STREAM, "--application", APPLICATION])
        .args(["--worker-id", &id, "--initial-position", "trim-horizon"])
        .args(["--failover-ms", &FAILOVER.as_millis().to_string()])
        .args(["--idle-ms", "100", "--report-every", "0"])
        .arg("--processed-log")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(WorkerProcess {
        id,
        child: command.spawn()?,
        log,
    })
}

/// Whether a worker's processed log shows a processor started and not ended.
fn holds_a_lease(log: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(log) else {
        return false;
    };
    let mut open = HashSet::new();
    for line in text.lines() {
        match Event::parse(line) {
            Some(Event::Init { instance, .. }) => {
                open.insert(instance);
            }
            Some(Event::End { instance, .. }) => {
                open.remove(&instance);
            }
            _ => {}
        }
    }
    !open.is_empty()
}

/// The `(sequence number, sub-sequence number)` order of checkpoints, sentinels included:
/// the starting sentinels first, `SHARD_END` last.
fn checkpoint_order(checkpoint: &str, sub: u64) -> (u8, usize, String, u64) {
    match checkpoint {
        "SHARD_END" => (2, 0, String::new(), 0),
        c if c.bytes().all(|b| b.is_ascii_digit()) => (1, c.len(), c.to_owned(), sub),
        _ => (0, 0, String::new(), 0),
    }
}

/// Samples the lease table until `stop`, recording every checkpoint that moved backwards.
async fn watch_checkpoints(
    dynamodb: aws_sdk_dynamodb::Client,
    stop: Arc<Mutex<bool>>,
) -> Result<Vec<String>, BoxError> {
    let mut last: HashMap<String, (u8, usize, String, u64)> = HashMap::new();
    let mut regressions = Vec::new();
    while !*stop.lock().unwrap() {
        let scan = dynamodb
            .scan()
            .table_name(APPLICATION)
            .consistent_read(true)
            .send()
            .await;
        // The table appears once the first worker created it.
        if let Ok(scan) = scan {
            for item in scan.items() {
                let (Some(AttributeValue::S(key)), Some(AttributeValue::S(checkpoint))) =
                    (item.get("leaseKey"), item.get("checkpoint"))
                else {
                    continue;
                };
                let sub = match item.get("checkpointSubSequenceNumber") {
                    Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
                    _ => 0,
                };
                let now = checkpoint_order(checkpoint, sub);
                if let Some(before) = last.get(key)
                    && now < *before
                {
                    regressions.push(format!("{key}: {before:?} → {now:?}"));
                }
                last.insert(key.clone(), now);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(regressions)
}

/// One record the producer stored: its number, key, and where.
#[derive(Clone, Debug)]
struct Stored {
    key: String,
    shard: String,
    sequence_number: String,
    sub_sequence_number: u64,
}

fn read_results(path: &Path) -> Result<BTreeMap<u64, Stored>, BoxError> {
    let mut stored = BTreeMap::new();
    for line in std::fs::read_to_string(path)?.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [n, key, shard, sequence, sub] = fields.as_slice() else {
            return Err(format!("a result line of another form: {line:?}").into());
        };
        stored.insert(
            n.parse()?,
            Stored {
                key: (*key).to_owned(),
                shard: (*shard).to_owned(),
                sequence_number: (*sequence).to_owned(),
                sub_sequence_number: sub.parse()?,
            },
        );
    }
    Ok(stored)
}

/// A record processed: by which processor (worker, instance), when.
#[derive(Clone, Debug)]
struct Processed {
    worker: String,
    instance: u64,
    shard: String,
    position: (String, u64),
    key: String,
    at: u128,
}

/// A processor start: worker, instance, shard, time.
type Init = (String, u64, String, u128);

/// Every processing event of every worker log: records processed, and processor starts
/// (worker, instance, shard, time).
fn read_logs(workers: &[(String, PathBuf)]) -> Result<(Vec<Processed>, Vec<Init>), BoxError> {
    let mut processed = Vec::new();
    let mut inits = Vec::new();
    for (worker, path) in workers {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines() {
            // A process killed mid-write can leave a partial last line: not a record it
            // checkpointed (lines are flushed before each checkpoint).
            match Event::parse(line) {
                Some(Event::Record {
                    instance,
                    shard,
                    sequence_number,
                    sub_sequence_number,
                    partition_key,
                    at,
                }) => processed.push(Processed {
                    worker: worker.clone(),
                    instance,
                    shard,
                    position: (sequence_number, sub_sequence_number),
                    key: partition_key,
                    at,
                }),
                Some(Event::Init {
                    instance,
                    shard,
                    at,
                }) => inits.push((worker.clone(), instance, shard, at)),
                _ => {}
            }
        }
    }
    Ok((processed, inits))
}

/// Storage order of a position: decimal sequence numbers compare by length, then text.
fn storage_order(position: &(String, u64)) -> (usize, &str, u64) {
    (position.0.len(), &position.0, position.1)
}

/// One sample of a process: seconds since the start, its name, resident memory, open files.
#[derive(Clone, Debug)]
struct Sample {
    at: f64,
    name: String,
    rss_kib: u64,
    fds: usize,
}

/// Samples every watched process's RSS and open file descriptors every `CHAOS_SAMPLE_SECONDS`
/// (not at all when unset), from `/proc`.
struct Sampler {
    watched: Arc<Mutex<Vec<(String, u32)>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Vec<Sample>>>,
}

impl Sampler {
    fn start(local: &Local, producer: &Child) -> Sampler {
        let watched = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let every = std::env::var("CHAOS_SAMPLE_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        let sampler = Sampler {
            watched: watched.clone(),
            stop,
            task: every.map(|every| {
                tokio::spawn(async move {
                    let begin = Instant::now();
                    let mut samples = Vec::new();
                    let mut tick = tokio::time::interval(Duration::from_secs(every.max(1)));
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {}
                            _ = stopped.changed() => return samples,
                        }
                        let at = begin.elapsed().as_secs_f64();
                        let processes = watched.lock().unwrap().clone();
                        for (name, pid) in processes {
                            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                            else {
                                continue; // gone (killed)
                            };
                            // An exited process not yet reaped has no VmRSS line.
                            let Some(rss_kib) = status
                                .lines()
                                .find_map(|l| l.strip_prefix("VmRSS:"))
                                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                            else {
                                continue;
                            };
                            let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                                .map(|d| d.count())
                                .unwrap_or(0);
                            samples.push(Sample {
                                at,
                                name,
                                rss_kib,
                                fds,
                            });
                        }
                        if samples.len() > 1_000_000 {
                            return samples;
                        }
                    }
                })
            }),
        };
        sampler.watch("kinesis-local", &local.child);
        sampler.watch("producer", producer);
        sampler
    }

    fn watch(&self, name: &str, child: &Child) {
        if let Some(pid) = child.id() {
            self.watched.lock().unwrap().push((name.to_owned(), pid));
        }
    }

    async fn stop(mut self) -> Vec<Sample> {
        match self.task.take() {
            Some(task) => {
                let _ = self.stop.send(true);
                task.await.unwrap_or_default()
            }
            None => Vec::new(),
        }
    }
}

/// Per process sampled for at least five minutes: RSS and open files after a two-minute
/// warm-up, first and last, and the RSS slope (least squares) in KiB per minute.
fn memory_report(samples: &[Sample]) -> String {
    let mut by_name: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_name.entry(&s.name).or_default().push(s);
    }
    let mut out = String::from(
        "REPORT soak (after a 2 min warm-up): process, samples, RSS first → last (KiB), RSS \
         slope (KiB/min), open files first → last",
    );
    for (name, series) in by_name {
        let start = series[0].at;
        let warm: Vec<&&Sample> = series.iter().filter(|s| s.at - start >= 120.0).collect();
        if warm.len() < 2 || warm[warm.len() - 1].at - warm[0].at < 180.0 {
            continue;
        }
        let n = warm.len() as f64;
        let mean_t = warm.iter().map(|s| s.at).sum::<f64>() / n;
        let mean_r = warm.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
        let cov: f64 = warm
            .iter()
            .map(|s| (s.at - mean_t) * (s.rss_kib as f64 - mean_r))
            .sum();
        let var: f64 = warm.iter().map(|s| (s.at - mean_t).powi(2)).sum();
        let slope = if var > 0.0 { cov / var * 60.0 } else { 0.0 };
        out.push_str(&format!(
            "\n  {name}: {} samples, {} → {}, {slope:+.1}, {} → {}",
            warm.len(),
            warm[0].rss_kib,
            warm[warm.len() - 1].rss_kib,
            warm[0].fds,
            warm[warm.len() - 1].fds
        ));
    }
    out
}

async fn chaos(seconds: u64) -> TestResult {
    let dir = std::env::temp_dir().join(format!("kinesis-chaos-{}-{}", std::process::id(), now()));
    std::fs::create_dir_all(&dir)?;
    let local = start(&["--create-stream", &format!("{STREAM}:4")]).await?;
    let connection = ConnectArgs {
        kinesis_endpoint: Some(local.kinesis.clone()),
        dynamodb_endpoint: Some(local.dynamodb.clone()),
        region: Some("us-east-1".into()),
    }
    .connect()
    .await?;
    let (kinesis, dynamodb) = (connection.kinesis.clone(), connection.dynamodb.clone());
    let mut rng = Rng(SEED);

    let stop_watching = Arc::new(Mutex::new(false));
    let watcher = tokio::spawn(watch_checkpoints(dynamodb.clone(), stop_watching.clone()));

    let mut workers: Vec<WorkerProcess> = Vec::new();
    let mut started = 0;
    for _ in 0..WORKERS {
        workers.push(start_worker(&local, &dir, started)?);
        started += 1;
    }
    let results = dir.join("producer.log");
    let records = RATE * seconds;
    let mut producer = {
        let mut command = pointed_at(env!("CARGO_BIN_EXE_producer"), &local);
        command
            .args(["--stream", STREAM, "--synthetic", &records.to_string()])
            .args(["--rate", &RATE.to_string(), "--keys", &KEYS.to_string()])
            .arg("--result-log")
            .arg(&results)
            .stdout(Stdio::null());
        command.spawn()?
    };

    // The chaos: a step every 1-4 s; the pause at a third of the run, a split at 40 %, a
    // merge at 60 %.
    // Chaos steps every 1-4 s (CHAOS_STEP_SECONDS scales that: a soak uses longer steps).
    let step_millis = std::env::var("CHAOS_STEP_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(1_000, |s| s.max(1) * 1_000);
    let sampler = Sampler::start(&local, &producer);
    for w in &workers {
        sampler.watch(&w.id, &w.child);
    }
    let mut events = Chaos::default();
    let mut killed_logs: Vec<(String, PathBuf)> = Vec::new();
    let begin = Instant::now();
    let run_for = Duration::from_secs(seconds);
    let (mut paused, mut split, mut merged) = (false, false, false);
    while begin.elapsed() < run_for {
        tokio::time::sleep(Duration::from_millis(
            step_millis + rng.below(3 * step_millis),
        ))
        .await;
        let progress = begin.elapsed().as_secs_f64() / run_for.as_secs_f64();
        if !paused && progress > 0.33 {
            paused = true;
            // A worker holding leases, so that the pause matters.
            let holding: Vec<&WorkerProcess> =
                workers.iter().filter(|w| holds_a_lease(&w.log)).collect();
            let victim = match holding.len() {
                0 => &workers[rng.below(workers.len() as u64) as usize],
                n => holding[rng.below(n as u64) as usize],
            };
            signal(&victim.child, "STOP")?;
            let from = now();
            tokio::time::sleep(FAILOVER * 2).await;
            signal(&victim.child, "CONT")?;
            events.paused.push((victim.id.clone(), from, now()));
        } else if !split && progress > 0.4 {
            split = true;
            let shards = kinesis.list_shards().stream_name(STREAM).send().await?;
            let shard = &shards.shards()[0];
            let range = shard.hash_key_range().ok_or("no range")?;
            let (start, end): (u128, u128) = (
                range.starting_hash_key().parse()?,
                range.ending_hash_key().parse()?,
            );
            kinesis
                .split_shard()
                .stream_name(STREAM)
                .shard_to_split(shard.shard_id())
                .new_starting_hash_key((start + (end - start) / 2).to_string())
                .send()
                .await?;
            events.reshards += 1;
        } else if !merged && progress > 0.6 {
            merged = true;
            kinesis
                .merge_shards()
                .stream_name(STREAM)
                .shard_to_merge("shardId-000000000002")
                .adjacent_shard_to_merge("shardId-000000000003")
                .send()
                .await?;
            events.reshards += 1;
        } else {
            let index = rng.below(workers.len() as u64) as usize;
            let mut victim = workers.swap_remove(index);
            signal(&victim.child, "KILL")?;
            victim.child.wait().await?;
            events.killed.insert(victim.id.clone(), now());
            workers.push(start_worker(&local, &dir, started)?);
            if let Some(w) = workers.last() {
                sampler.watch(&w.id, &w.child);
            }
            started += 1;
            // The killed worker's log stays for the checks.
            killed_logs.push((victim.id, victim.log));
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(120), producer.wait()).await??;
    let samples = sampler.stop().await;
    // Printed before any check, so that a soak's figures survive a failed one.
    if !samples.is_empty() {
        println!("{}", memory_report(&samples));
    }
    assert!(status.success(), "the producer failed: {status}");
    let stored = read_results(&results)?;
    assert_eq!(
        stored.len() as u64,
        records,
        "the producer stored every record"
    );

    // Wait until every stored record was processed.
    let mut logs = killed_logs;
    logs.extend(workers.iter().map(|w| (w.id.clone(), w.log.clone())));
    let wanted: HashSet<(String, String, u64)> = stored
        .values()
        .map(|s| {
            (
                s.shard.clone(),
                s.sequence_number.clone(),
                s.sub_sequence_number,
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (processed, _) = read_logs(&logs)?;
        let seen: HashSet<(String, String, u64)> = processed
            .into_iter()
            .map(|p| (p.shard, p.position.0, p.position.1))
            .collect();
        let missing = wanted.difference(&seen).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} stored records never processed",
            wanted.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The remaining workers stop gracefully (Ctrl-C) and exit 0.
    for worker in &workers {
        signal(&worker.child, "INT")?;
    }
    for worker in &mut workers {
        let status = tokio::time::timeout(Duration::from_secs(60), worker.child.wait()).await??;
        assert!(
            status.success(),
            "{} did not stop cleanly: {status}",
            worker.id
        );
    }
    *stop_watching.lock().unwrap() = true;
    let regressions = watcher.await??;

    // Lineage depth of every shard: parents before children.
    let listed = kinesis.list_shards().stream_name(STREAM).send().await?;
    let parents: HashMap<String, Vec<String>> = listed
        .shards()
        .iter()
        .map(|s| {
            let parents = [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect();
            (s.shard_id().to_owned(), parents)
        })
        .collect();
    fn depth(shard: &str, parents: &HashMap<String, Vec<String>>) -> usize {
        parents.get(shard).map_or(0, |p| {
            p.iter().map(|p| depth(p, parents) + 1).max().unwrap_or(0)
        })
    }

    let (processed, inits) = read_logs(&logs)?;

    // Per key, first processing in storage order across the lineage.
    let mut first: HashMap<(String, String, u64), &Processed> = HashMap::new();
    let mut count: HashMap<(String, String, u64), usize> = HashMap::new();
    for p in &processed {
        let id = (p.shard.clone(), p.position.0.clone(), p.position.1);
        *count.entry(id.clone()).or_default() += 1;
        first
            .entry(id)
            .and_modify(|f| {
                if p.at < f.at {
                    *f = p;
                }
            })
            .or_insert(p);
    }
    for s in stored.values() {
        let id = (
            s.shard.clone(),
            s.sequence_number.clone(),
            s.sub_sequence_number,
        );
        assert_eq!(first[&id].key, s.key, "{id:?} processed with another key");
    }
    let mut per_key: BTreeMap<&str, Vec<&Processed>> = BTreeMap::new();
    for p in first.values() {
        per_key.entry(&p.key).or_default().push(p);
    }
    let mut out_of_order = Vec::new();
    for (key, mut records) in per_key {
        records.sort_by(|a, b| {
            (depth(&a.shard, &parents), storage_order(&a.position))
                .cmp(&(depth(&b.shard, &parents), storage_order(&b.position)))
        });
        if let Some(w) = records.windows(2).find(|w| w[0].at > w[1].at) {
            out_of_order.push(format!("{key}: {:?} processed after {:?}", w[0], w[1]));
        }
    }

    // No processing by one processor while another is in the midst of the same shard.
    let mut spans: HashMap<(String, u64, String), (u128, u128)> = HashMap::new();
    for p in &processed {
        let span = spans
            .entry((p.worker.clone(), p.instance, p.shard.clone()))
            .or_insert((p.at, p.at));
        span.0 = span.0.min(p.at);
        span.1 = span.1.max(p.at);
    }
    let mut overlaps = Vec::new();
    for p in &processed {
        for ((worker, instance, shard), (from, to)) in &spans {
            if *shard == p.shard
                && !(*worker == p.worker && *instance == p.instance)
                && *from < p.at
                && p.at < *to
            {
                overlaps.push(format!(
                    "{} (instance {}) processed {:?} of {shard} while {worker} (instance \
                     {instance}) was processing it",
                    p.worker, p.instance, p.position
                ));
            }
        }
    }

    // The zombie: once resumed, none of the processors it had when paused processes another
    // record of a shard that another worker started on while it slept (it may take a shard
    // again later: that is a new processor, started after its resume).
    let mut zombie = Vec::new();
    for (worker, from, to) in &events.paused {
        let taken: HashSet<&str> = inits
            .iter()
            .filter(|(w, _, _, at)| w != worker && *from <= *at && *at <= *to)
            .map(|(_, _, shard, _)| shard.as_str())
            .collect();
        let before_pause: HashSet<u64> = inits
            .iter()
            .filter(|(w, _, _, at)| w == worker && *at < *from)
            .map(|(_, instance, _, _)| *instance)
            .collect();
        for p in processed.iter().filter(|p| {
            p.worker == *worker
                && p.at > *to
                && before_pause.contains(&p.instance)
                && taken.contains(p.shard.as_str())
        }) {
            zombie.push(format!(
                "{worker} (instance {}) processed {:?} of {} after resuming",
                p.instance, p.position, p.shard
            ));
        }
    }
    let taken_while_paused: usize = events
        .paused
        .iter()
        .map(|(worker, from, to)| {
            inits
                .iter()
                .filter(|(w, _, _, at)| w != worker && *from <= *at && *at <= *to)
                .count()
        })
        .sum();
    let zombie_count = zombie.len();
    zombie.truncate(5);

    // Records processed more than once, by where the first processing came from.
    let (mut after_kill, mut after_pause, mut other) = (0, 0, 0);
    for (id, n) in &count {
        if *n < 2 {
            continue;
        }
        let by = &first[id].worker;
        if events.killed.contains_key(by) {
            after_kill += 1;
        } else if events.paused.iter().any(|(w, _, _)| w == by) {
            after_pause += 1;
        } else {
            other += 1;
        }
    }
    println!(
        "REPORT chaos: {} records stored, {} processings; {} workers killed, {} paused, {} \
         reshards; {taken_while_paused} leases taken during the pause; processed twice or more: {after_kill} after a kill, {after_pause} after the \
         pause, {other} otherwise (lease moves between live workers); {} checkpoint samples \
         regressed",
        stored.len(),
        processed.len(),
        events.killed.len(),
        events.paused.len(),
        events.reshards,
        regressions.len()
    );
    assert!(
        out_of_order.is_empty(),
        "per-key order broken: {out_of_order:?}"
    );
    assert!(
        overlaps.is_empty(),
        "overlapping processing: {:?}",
        &overlaps[..overlaps.len().min(5)]
    );
    assert!(
        zombie.is_empty(),
        "the resumed worker processed {zombie_count} records of taken shards: {zombie:?}"
    );
    assert!(
        regressions.is_empty(),
        "checkpoints moved backwards: {regressions:?}"
    );
    // At the default pace (a step every 1-4 s) a run kills at least 3 workers; a soak with
    // longer steps (CHAOS_STEP_SECONDS) spends most of its few steps on the pause and the
    // reshards, and kills at least one.
    let least_kills = if step_millis == 1_000 { 3 } else { 1 };
    assert!(
        events.killed.len() >= least_kills && events.paused.len() == 1 && events.reshards == 2,
        "chaos done: {} killed (at least {least_kills}), {} paused, {} reshards",
        events.killed.len(),
        events.paused.len(),
        events.reshards
    );
    assert!(
        taken_while_paused > 0,
        "no lease moved while the worker was paused: the zombie check saw nothing"
    );

    std::fs::remove_dir_all(&dir).ok();
    support::local::terminate(local).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_as_processes_survive_kills_a_pause_and_reshards() -> TestResult {
    let seconds = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    tokio::time::timeout(Duration::from_secs(seconds + 360), chaos(seconds))
        .await
        .map_err(|_| "the chaos test did not finish in time")?
}
