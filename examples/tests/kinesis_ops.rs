//! `kinesis-ops` against real lease tables on the test bed's DynamoDB server: the library
//! functions behind each subcommand, and the built binary itself.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kinesis_aggregation::AggregateBuilder;
use kinesis_examples::ops::decode::decode_record;
use kinesis_examples::ops::leases::{self, CounterChange};
use kinesis_examples::ops::reset::{self, Liveness, ResetError, ResetOptions};
use kinesis_integration::TestBed;
use kinesis_kcl::lease::{ExtendedSequenceNumber, Lease, LeaseTable, TableOptions, WriteOutcome};
use serde_json::Value;
use support::{BoxError, Output, TestResult, bounded_by, command, run};
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

/// Every test body runs under this bound, so a hang fails instead of blocking the suite.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How often the simulated live owner renews: far more often than any window below, so a
/// window always sees it renew.
const RENEW_PERIOD: Duration = Duration::from_millis(50);

async fn bounded(body: impl Future<Output = TestResult>) -> TestResult {
    bounded_by(TEST_TIMEOUT, body).await
}

/// A bed and a fresh, created lease table on it.
async fn fresh_table() -> Result<(TestBed, LeaseTable), BoxError> {
    let bed = TestBed::start().await?;
    let table = LeaseTable::new(bed.dynamodb().clone(), bed.unique_table_name());
    table
        .ensure_table(&TableOptions::default().poll_interval(Duration::from_millis(20)))
        .await?;
    Ok((bed, table))
}

fn seq(digits: &str, sub: u64) -> ExtendedSequenceNumber {
    ExtendedSequenceNumber::parse(digits, sub).unwrap()
}

/// Creates a lease at `checkpoint`, taken by `owner` when given; returns it as stored.
async fn lease(
    table: &LeaseTable,
    key: &str,
    checkpoint: ExtendedSequenceNumber,
    owner: Option<&str>,
) -> Result<Lease, BoxError> {
    let lease = Lease::new(key, checkpoint);
    assert!(table.create_lease_if_absent(&lease).await?);
    let stored = table.get_lease(key).await?.ok_or("lease vanished")?;
    match owner {
        None => Ok(stored),
        Some(owner) => match table.take(&stored, owner).await? {
            WriteOutcome::Applied(taken) => Ok(taken),
            other => Err(format!("take failed: {other:?}").into()),
        },
    }
}

/// A live owner: a task renewing one lease every [`RENEW_PERIOD`] until stopped or until a
/// renewal fails (the lease was written by someone else: lost). Each renewal holds `gate`, so
/// a test can hold renewals back for a moment.
struct Renewer {
    gate: Arc<Mutex<()>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<RenewerReport, kinesis_kcl::Error>>,
}

#[derive(Debug)]
struct RenewerReport {
    renewals: u64,
    lost: bool,
}

impl Renewer {
    fn start(table: LeaseTable, mut lease: Lease) -> Self {
        let gate = Arc::new(Mutex::new(()));
        let (stop, mut stopped) = oneshot::channel();
        let task_gate = gate.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(RENEW_PERIOD);
            let mut renewals = 0;
            loop {
                tokio::select! {
                    _ = &mut stopped => return Ok(RenewerReport { renewals, lost: false }),
                    _ = ticks.tick() => {
                        let _held = task_gate.lock().await;
                        match table.renew(&lease).await? {
                            WriteOutcome::Applied(renewed) => {
                                lease = renewed;
                                renewals += 1;
                            }
                            WriteOutcome::ConditionFailed { .. } => {
                                return Ok(RenewerReport { renewals, lost: true });
                            }
                        }
                    }
                }
            }
        });
        Renewer {
            gate,
            stop: Some(stop),
            task,
        }
    }

    /// Stops the task (if it still runs) and returns what it did.
    async fn stop(mut self) -> Result<RenewerReport, BoxError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        Ok(self.task.await??)
    }

    /// Runs the task until it stops by itself (its lease was lost).
    async fn until_lost(mut self) -> Result<RenewerReport, BoxError> {
        let _keep_running = self.stop.take();
        Ok(self.task.await??)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_listing_shows_owners_counters_and_tells_renewing_from_stale() -> TestResult {
    bounded(async {
        let (_bed, table) = fresh_table().await?;
        let live = lease(
            &table,
            "shardId-000000000000",
            seq("100", 0),
            Some("worker-a"),
        )
        .await?;
        let stale = lease(
            &table,
            "shardId-000000000001",
            seq("200", 4),
            Some("worker-b"),
        )
        .await?;
        let unowned = lease(
            &table,
            "shardId-000000000002",
            ExtendedSequenceNumber::TRIM_HORIZON,
            None,
        )
        .await?;
        let renewer = Renewer::start(table.clone(), live.clone());

        let interval = Duration::from_millis(600);
        let listing = leases::observe(&table, interval).await?;
        let report = renewer.stop().await?;
        assert!(report.renewals > 0 && !report.lost, "{report:?}");

        let keys: Vec<&str> = listing
            .rows
            .iter()
            .map(|r| r.lease.lease_key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "shardId-000000000000",
                "shardId-000000000001",
                "shardId-000000000002"
            ]
        );
        let live_row = listing.row(&live.lease_key).unwrap();
        assert_eq!(live_row.lease.lease_owner.as_deref(), Some("worker-a"));
        match live_row.change {
            CounterChange::Moved { from, to, .. } => assert!(to > from, "{from} -> {to}"),
            ref other => panic!("the renewed lease should have moved: {other:?}"),
        }
        let stale_row = listing.row(&stale.lease_key).unwrap();
        assert_eq!(stale_row.lease.lease_counter, stale.lease_counter);
        match stale_row.change {
            CounterChange::Unchanged { for_at_least } => assert!(for_at_least >= interval),
            ref other => panic!("the stale lease should be unchanged: {other:?}"),
        }
        let unowned_row = listing.row(&unowned.lease_key).unwrap();
        assert_eq!(unowned_row.lease.lease_owner, None);
        assert!(!unowned_row.change.moved());

        let table_text = listing.render_table();
        let stale_line = table_text
            .lines()
            .find(|l| l.starts_with("shardId-000000000001"))
            .ok_or("no line for the stale lease")?;
        assert!(stale_line.contains("worker-b"), "{table_text}");
        assert!(
            stale_line.contains(&format!(" {} ", stale.lease_counter)),
            "{table_text}"
        );
        assert!(stale_line.contains(" 200 "), "{table_text}");
        assert!(stale_line.contains("unchanged ≥"), "{table_text}");
        let live_line = table_text
            .lines()
            .find(|l| l.starts_with("shardId-000000000000"))
            .ok_or("no line for the live lease")?;
        assert!(live_line.contains("worker-a") && live_line.contains("moved (+"));
        assert_eq!(
            listing.summary().split(';').nth(1).map(str::trim),
            Some("unowned: 1 (none moved), worker-a: 1 (1 moved), worker-b: 1 (none moved)")
        );

        let json = listing.json_lines();
        assert_eq!(json[0]["lease_owner"], "worker-a");
        assert_eq!(json[0]["counter"], "moved");
        assert_eq!(json[1]["counter"], "unchanged");
        assert_eq!(json[1]["lease_counter"], stale.lease_counter);
        assert_eq!(json[1]["checkpoint"], "200");
        assert_eq!(json[1]["checkpoint_sub_sequence_number"], 4);
        assert_eq!(json[2]["lease_owner"], Value::Null);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_refuses_a_renewed_lease_unless_forced() -> TestResult {
    bounded(async {
        let (_bed, table) = fresh_table().await?;
        let key = "shardId-000000000007";
        let held = lease(&table, key, seq("1000", 2), Some("worker-a")).await?;
        let renewer = Renewer::start(table.clone(), held);

        let mut options = ResetOptions::new(key, ExtendedSequenceNumber::TRIM_HORIZON);
        options.failover = Duration::from_secs(5);
        options.interval = Duration::from_millis(100);
        match reset::reset_checkpoint(&table, &options).await {
            Err(ResetError::LiveOwner {
                owner, from, to, ..
            }) => {
                assert_eq!(owner, "worker-a");
                assert!(to > from);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let after_refusal = table.get_lease(key).await?.ok_or("lease vanished")?;
        assert_eq!(after_refusal.checkpoint, seq("1000", 2), "nothing written");

        // Forced. Renewals are held back while the reset reads and writes, so that this test
        // is about --force skipping the watch; a renewal racing the write is the next test's.
        options.force = true;
        let (plan, written) = {
            let _no_renewal_now = renewer.gate.lock().await;
            reset::reset_checkpoint(&table, &options).await?
        };
        assert_eq!(plan.liveness, Liveness::Forced);
        assert_eq!(written.checkpoint, ExtendedSequenceNumber::TRIM_HORIZON);
        assert_eq!(written.lease_counter, plan.before.lease_counter + 1);
        assert_eq!(written.lease_owner.as_deref(), Some("worker-a"));

        // The owner's next renewal fails: it has lost the lease, and cannot overwrite the reset.
        let report = renewer.until_lost().await?;
        assert!(report.lost);
        let now = table.get_lease(key).await?.ok_or("lease vanished")?;
        assert_eq!(now.checkpoint, ExtendedSequenceNumber::TRIM_HORIZON);
        assert_eq!(now.lease_counter, written.lease_counter);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_without_force_writes_a_stale_or_unowned_lease() -> TestResult {
    bounded(async {
        let (_bed, table) = fresh_table().await?;
        let stale_key = "123456789012:orders:1700000000:shardId-000000000003";
        let mut stale = lease(&table, stale_key, seq("5000", 0), Some("worker-gone")).await?;
        // A prepared checkpoint and owner switches, which a reset clears.
        stale.set_pending_checkpoint(seq("5100", 0), Some(vec![1, 2]));
        stale.owner_switches_since_checkpoint = 3;
        let stale = table
            .apply(&stale.update_write()?)
            .await?
            .applied()
            .ok_or("update failed")?;

        let mut options = ResetOptions::new(stale_key, seq("4200", 3));
        options.failover = Duration::from_millis(500);
        options.interval = Duration::from_millis(100);
        let (plan, written) = reset::reset_checkpoint(&table, &options).await?;
        match plan.liveness {
            Liveness::Expired { unchanged_for } => {
                assert!(unchanged_for >= options.failover, "{unchanged_for:?}")
            }
            ref other => panic!("expected an expired lease, got {other:?}"),
        }
        assert_eq!(written.lease_counter, stale.lease_counter + 1);
        let stored = table.get_lease(stale_key).await?.ok_or("lease vanished")?;
        assert_eq!(stored.checkpoint, seq("4200", 3), "moved backwards");
        assert_eq!(stored.pending_checkpoint, None);
        assert_eq!(stored.pending_checkpoint_state, None);
        assert_eq!(stored.owner_switches_since_checkpoint, 0);
        assert_eq!(stored.lease_owner.as_deref(), Some("worker-gone"));
        assert_eq!(stored.multi_stream, stale.multi_stream);

        let free_key = "shardId-000000000004";
        lease(&table, free_key, seq("77", 0), None).await?;
        let options = ResetOptions::new(free_key, ExtendedSequenceNumber::LATEST);
        // Unowned: no watch, so the default 10 s failover window is not waited for.
        let started = tokio::time::Instant::now();
        let (plan, _) = reset::reset_checkpoint(&table, &options).await?;
        assert_eq!(plan.liveness, Liveness::Unowned);
        assert!(started.elapsed() < options.failover);
        let stored = table.get_lease(free_key).await?.ok_or("lease vanished")?;
        assert_eq!(stored.checkpoint, ExtendedSequenceNumber::LATEST);

        let missing = ResetOptions::new("shardId-999", ExtendedSequenceNumber::LATEST);
        assert!(matches!(
            reset::reset_checkpoint(&table, &missing).await,
            Err(ResetError::NotFound { .. })
        ));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_fails_when_the_counter_changes_between_read_and_write() -> TestResult {
    bounded(async {
        let (_bed, table) = fresh_table().await?;
        let key = "shardId-000000000005";
        lease(&table, key, seq("300", 0), None).await?;
        let options = ResetOptions::new(key, ExtendedSequenceNumber::TRIM_HORIZON);
        let plan = reset::prepare(&table, &options, |_, _| {}).await?;

        // A worker takes the lease after the read, before the write.
        let taken = table
            .take(&plan.before, "worker-c")
            .await?
            .applied()
            .ok_or("take failed")?;
        match plan.apply(&table).await {
            Err(ResetError::CounterChanged {
                expected, found, ..
            }) => {
                assert_eq!(expected, plan.before.lease_counter);
                assert_eq!(found, Some(taken.lease_counter));
            }
            other => panic!("expected the write to be refused, got {other:?}"),
        }
        let stored = table.get_lease(key).await?.ok_or("lease vanished")?;
        assert_eq!(stored, taken, "the reset wrote nothing");
        Ok(())
    })
    .await
}

/// The user records of an aggregate: partition key, explicit hash key, data.
type UserRecords = Vec<(String, Option<String>, Vec<u8>)>;

fn sample_aggregate() -> (Bytes, UserRecords) {
    let mut records = Vec::new();
    for i in 0..40u32 {
        let key = format!("user-{}", i % 6);
        let ehk = (i % 5 == 0).then(|| (u128::from(i) * 1_000_000_007).to_string());
        let data = if i % 7 == 3 {
            vec![0xff, 0xfe, i as u8] // not UTF-8
        } else {
            format!("event {i} ✓").into_bytes()
        };
        records.push((key, ehk, data));
    }
    let mut builder = AggregateBuilder::default();
    for (key, ehk, data) in &records {
        builder.try_push(key, ehk.as_deref(), data).unwrap();
    }
    (builder.take_aggregate().unwrap(), records)
}

fn assert_lines_match(lines: &[Value], records: &UserRecords) {
    assert_eq!(lines.len(), records.len());
    for (i, (line, (key, ehk, data))) in lines.iter().zip(records).enumerate() {
        assert_eq!(line["aggregated"], true);
        assert_eq!(line["sub_sequence_number"], i as u64);
        assert_eq!(line["partition_key"], key.as_str());
        assert_eq!(line["explicit_hash_key"], serde_json::json!(ehk));
        let shown = line["data"].as_str().unwrap();
        match std::str::from_utf8(data) {
            Ok(text) => {
                assert_eq!(line["encoding"], "utf-8");
                assert_eq!(shown, text);
            }
            Err(_) => {
                assert_eq!(line["encoding"], "base64");
                assert_eq!(
                    kinesis_examples::ops::decode::decode_base64(shown).unwrap(),
                    &data[..]
                );
            }
        }
    }
}

#[test]
fn decode_prints_every_user_record_of_an_aggregate() {
    let (aggregate, records) = sample_aggregate();
    let lines = decode_record(aggregate, 0);
    assert_lines_match(&lines, &records);
}

#[test]
fn decode_marks_plain_and_corrupted_records() {
    let plain = decode_record(Bytes::from_static(b"{\"just\":\"json\"}"), 0);
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0]["aggregated"], false);
    assert_eq!(plain[0]["reason"], "no_magic");
    assert_eq!(plain[0]["malformed_aggregate"], false);
    assert_eq!(plain[0]["data"], "{\"just\":\"json\"}");

    let (aggregate, _) = sample_aggregate();
    let mut corrupted = aggregate.to_vec();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x55;
    let lines = decode_record(Bytes::from(corrupted.clone()), 1);
    assert_eq!(
        lines.len(),
        1,
        "a corrupted aggregate is passed through whole"
    );
    assert_eq!(lines[0]["record"], 1);
    assert_eq!(lines[0]["aggregated"], false);
    assert_eq!(lines[0]["reason"], "digest_mismatch");
    assert_eq!(lines[0]["malformed_aggregate"], true);
    assert_eq!(lines[0]["encoding"], "base64");
    assert_eq!(
        kinesis_examples::ops::decode::decode_base64(lines[0]["data"].as_str().unwrap()).unwrap(),
        corrupted
    );

    let truncated = decode_record(aggregate.slice(..10), 0);
    assert_eq!(truncated[0]["reason"], "too_short");
}

// ---- The binary ------------------------------------------------------------------------------

/// Runs the built `kinesis-ops` to the end with `args` (asynchronously: the bed's servers run
/// in this process); see [`command`] for what it inherits.
async fn ops<S: AsRef<std::ffi::OsStr>>(
    bed: Option<&TestBed>,
    args: &[S],
    stdin: &[u8],
) -> Result<Output, BoxError> {
    let mut command = command(env!("CARGO_BIN_EXE_kinesis-ops"), bed);
    command.args(args);
    run(command, stdin).await
}

/// The connection flags pointing the binary at the bed (none for a bed on real AWS).
fn connect_flags(bed: &TestBed) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(url) = bed.kinesis_endpoint() {
        flags.extend(["--kinesis-endpoint".to_owned(), url.to_owned()]);
    }
    if let Some(url) = bed.dynamodb_endpoint() {
        flags.extend(["--dynamodb-endpoint".to_owned(), url.to_owned()]);
    }
    flags
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_lists_leases_and_resets_checkpoints() -> TestResult {
    bounded(async {
        let (bed, table) = fresh_table().await?;
        let live = lease(
            &table,
            "shardId-000000000000",
            seq("10", 0),
            Some("worker-a"),
        )
        .await?;
        let stale = lease(
            &table,
            "shardId-000000000001",
            seq("20", 0),
            Some("worker-b"),
        )
        .await?;
        let renewer = Renewer::start(table.clone(), live.clone());
        let flags = connect_flags(&bed);
        let with = |args: &[&str]| -> Vec<String> {
            let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            all.extend(flags.iter().cloned());
            all
        };
        let name = table.table_name().to_owned();

        let args = with(&["leases", "--table", &name, "--interval", "500ms"]);
        let out = ops(Some(&bed), &args, b"").await?;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(lines[0].starts_with("LEASE KEY"), "{}", out.stdout);
        assert!(lines[1].starts_with("shardId-000000000000") && lines[1].contains("worker-a"));
        assert!(lines[1].contains("moved (+"), "{}", out.stdout);
        assert!(lines[2].starts_with("shardId-000000000001") && lines[2].contains("worker-b"));
        assert!(
            lines[2].contains(&format!(" {} ", stale.lease_counter))
                && lines[2].contains("unchanged ≥"),
            "{}",
            out.stdout
        );
        assert!(
            lines[3].starts_with("2 leases; worker-a: 1 (1 moved), worker-b: 1 (none moved)"),
            "{}",
            out.stdout
        );

        let args = with(&[
            "leases",
            "--table",
            &name,
            "--interval",
            "0",
            "--json",
            "--region",
            "eu-west-1",
        ]);
        let out = ops(Some(&bed), &args, b"").await?;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let json = json_lines(&out.stdout);
        assert_eq!(json.len(), 2);
        assert_eq!(json[1]["lease_key"], "shardId-000000000001");
        assert_eq!(json[1]["lease_owner"], "worker-b");
        assert_eq!(json[1]["lease_counter"], stale.lease_counter);

        // Refused while worker-a renews: exit 3, nothing written.
        let args = with(&[
            "reset-checkpoint",
            "--table",
            &name,
            "--shard",
            "shardId-000000000000",
            "--to",
            "TRIM_HORIZON",
            "--failover",
            "3s",
            "--interval",
            "100ms",
        ]);
        let out = ops(Some(&bed), &args, b"").await?;
        assert_eq!(out.code, Some(3), "{}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("live owner (worker-a)"),
            "{}",
            out.stderr
        );
        let report = renewer.stop().await?;
        assert!(!report.lost);
        let stored = table.get_lease(&live.lease_key).await?.ok_or("vanished")?;
        assert_eq!(stored.checkpoint, seq("10", 0));

        // A dry run checks and shows, and writes nothing.
        let args = with(&[
            "reset-checkpoint",
            "--table",
            &name,
            "--shard",
            "shardId-000000000001",
            "--to",
            "LATEST",
            "--force",
            "--dry-run",
        ]);
        let out = ops(Some(&bed), &args, b"").await?;
        assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains("dry run: nothing written"),
            "{}",
            out.stdout
        );
        let stored = table.get_lease(&stale.lease_key).await?.ok_or("vanished")?;
        assert_eq!(stored, stale);

        // worker-b's lease is stale: reset backwards without --force.
        let args = with(&[
            "reset-checkpoint",
            "--table",
            &name,
            "--shard",
            "shardId-000000000001",
            "--to",
            "15",
            "--sub",
            "2",
            "--failover",
            "400ms",
            "--interval",
            "100ms",
        ]);
        let out = ops(Some(&bed), &args, b"").await?;
        assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains("20/0 -> 15/2 (backwards)"),
            "{}",
            out.stdout
        );
        let stored = table.get_lease(&stale.lease_key).await?.ok_or("vanished")?;
        assert_eq!(stored.checkpoint, seq("15", 2));
        assert_eq!(stored.lease_counter, stale.lease_counter + 1);

        // Bad target: exit 2; missing lease: exit 1.
        let args = with(&[
            "reset-checkpoint",
            "--table",
            &name,
            "--shard",
            "shardId-000000000001",
            "--to",
            "SHARD_END",
        ]);
        let out = ops(Some(&bed), &args, b"").await?;
        assert_eq!(out.code, Some(2), "{}", out.stderr);
        let args = with(&[
            "reset-checkpoint",
            "--table",
            &name,
            "--shard",
            "shardId-9",
            "--to",
            "LATEST",
        ]);
        let out = ops(Some(&bed), &args, b"").await?;
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        assert!(
            out.stderr.contains("no lease `shardId-9`"),
            "{}",
            out.stderr
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_decodes_raw_and_base64_input() -> TestResult {
    bounded(async {
        let (aggregate, records) = sample_aggregate();
        let out = ops(None, &["decode"], &aggregate).await?;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_lines_match(&json_lines(&out.stdout), &records);
        let out = ops(None, &["decode", "--input", "raw"], &aggregate).await?;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_lines_match(&json_lines(&out.stdout), &records);

        // Base64 lines, as the Kinesis API prints Data: an aggregate, then a plain record.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let input = format!("{}\n{}\n", b64.encode(&aggregate), b64.encode("plain"));
        let out = ops(None, &["decode", "--input", "base64"], input.as_bytes()).await?;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let lines = json_lines(&out.stdout);
        assert_lines_match(&lines[..records.len()], &records);
        let last = &lines[records.len()];
        assert_eq!(last["record"], 1);
        assert_eq!(last["aggregated"], false);
        assert_eq!(last["reason"], "no_magic");
        assert_eq!(last["data"], "plain");

        // From a file: the same records.
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("kinesis-ops-decode-{}.bin", std::process::id()));
        tokio::fs::write(&path, &aggregate).await?;
        let out = ops(
            None,
            &["decode", "--file", path.to_str().ok_or("path")?],
            b"",
        )
        .await?;
        tokio::fs::remove_file(&path).await?;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_lines_match(&json_lines(&out.stdout), &records);

        let mut corrupted = aggregate.to_vec();
        let end = corrupted.len() - 1;
        corrupted[end] ^= 1;
        let out = ops(None, &["decode", "--base64", &b64.encode(&corrupted)], b"").await?;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let lines = json_lines(&out.stdout);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["reason"], "digest_mismatch");
        assert_eq!(lines[0]["malformed_aggregate"], true);

        let out = ops(None, &["decode", "--base64", "not base64!"], b"").await?;
        assert_eq!(out.code, Some(1));
        assert!(out.stderr.contains("not base64"), "{}", out.stderr);
        Ok(())
    })
    .await
}

/// The README's `decode` command, run exactly as written there (its arguments after `--`),
/// prints the user records of a real aggregate, the first as the README shows it.
#[tokio::test]
async fn the_readme_decode_command_prints_what_the_readme_shows() -> TestResult {
    let readme = include_str!("../../README.md");
    let command = readme
        .lines()
        .find(|l| l.starts_with("cargo run -p kinesis-examples --bin kinesis-ops -- decode "))
        .ok_or("no decode command in the README")?;
    let args: Vec<&str> = command
        .split_once(" -- ")
        .ok_or("no `--` in the README's command")?
        .1
        .split_whitespace()
        .map(|arg| arg.trim_matches('"'))
        .collect();
    assert_eq!(args[..2], ["decode", "--base64"], "{command}");
    assert_eq!(args.len(), 3, "{command}");
    let out = ops(None, &args, b"").await?;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines = json_lines(&out.stdout);
    let records: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["aggregated"], true, "{l}");
            (
                l["partition_key"].as_str().unwrap_or("?"),
                l["data"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        records,
        [
            ("user-1", "clicked"),
            ("user-2", "viewed"),
            ("user-1", "bought")
        ]
    );
    let shown = readme
        .lines()
        .skip_while(|l| *l != command)
        .skip_while(|l| *l != "```json")
        .nth(1)
        .ok_or("no JSON sample in the README")?;
    assert_eq!(out.stdout.lines().next(), Some(shown));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_and_embedded_servers_are_not_offered() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        let table = bed.unique_table_name();
        let mut args = vec!["leases".to_owned(), "--table".to_owned(), table.clone()];
        args.extend(connect_flags(&bed));
        args.extend(["--interval".to_owned(), "0".to_owned()]);
        let out = ops(Some(&bed), &args, b"").await?;
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {}", out.stderr);
        assert!(lines[0].starts_with("error: "), "{}", out.stderr);
        assert!(lines[0].contains(&table), "{}", out.stderr);
        assert!(
            lines[0].contains("ResourceNotFoundException"),
            "{}",
            out.stderr
        );
        assert!(!lines[0].contains("ErrorMetadata"), "{}", out.stderr);

        // Fresh embedded servers hold no lease table: the flag is gone.
        for args in [
            &["leases", "--table", "t", "--embedded"][..],
            &[
                "reset-checkpoint",
                "--table",
                "t",
                "--shard",
                "s",
                "--to",
                "LATEST",
                "--embedded",
            ],
        ] {
            let out = ops(None, args, b"").await?;
            assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
            assert!(
                out.stderr.contains("unexpected argument '--embedded'"),
                "{}",
                out.stderr
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_shows_the_lag_of_every_shard_across_a_split() -> TestResult {
    bounded(async {
        let (bed, table) = fresh_table().await?;
        let stream = bed.create_stream(2).await?;
        let kinesis = bed.kinesis();
        let shards = kinesis.list_shards().stream_name(&stream).send().await?;
        let ids: Vec<String> = shards
            .shards()
            .iter()
            .map(|s| s.shard_id().to_owned())
            .collect();
        // Five records on the first shard; the checkpoint is at the second (inside its
        // aggregate, sub-sequence 3), so three more are behind it.
        let mut sequences = Vec::new();
        for n in 0..5 {
            let put = kinesis
                .put_record()
                .stream_name(&stream)
                .partition_key("k")
                .explicit_hash_key("0")
                .data(aws_sdk_kinesis::primitives::Blob::new(format!("r{n}")))
                .send()
                .await?;
            sequences.push(put.sequence_number().to_owned());
        }
        lease(&table, &ids[0], seq(&sequences[1], 3), Some("worker-1")).await?;
        // The second shard was finished, then split.
        lease(&table, &ids[1], ExtendedSequenceNumber::SHARD_END, None).await?;
        let range = shards.shards()[1].hash_key_range().ok_or("no range")?;
        let (start, end): (u128, u128) = (
            range.starting_hash_key().parse()?,
            range.ending_hash_key().parse()?,
        );
        kinesis
            .split_shard()
            .stream_name(&stream)
            .shard_to_split(&ids[1])
            .new_starting_hash_key((start + (end - start) / 2).to_string())
            .send()
            .await?;
        bed.wait_for_stream_active(&stream).await?;
        // The arrival time of the checkpointed record, as Kinesis reports it.
        let iterator = kinesis
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(&ids[0])
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(&sequences[1])
            .send()
            .await?;
        let records = kinesis
            .get_records()
            .shard_iterator(iterator.shard_iterator().ok_or("no iterator")?)
            .send()
            .await?;
        let arrival = records.records()[0]
            .approximate_arrival_timestamp()
            .ok_or("no arrival time")?
            .to_millis()?;

        let mut args = vec!["lag".to_owned(), "--table".to_owned()];
        args.push(table.table_name().to_owned());
        args.extend(["--stream".to_owned(), stream.clone(), "--json".to_owned()]);
        args.extend(connect_flags(&bed));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ops(Some(&bed), &args, b"").await?;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let lines = json_lines(&out.stdout);
        assert_eq!(lines.len(), 3, "two shards and the total: {}", out.stdout);

        let first = &lines[0];
        assert_eq!(first["shard_id"], ids[0].as_str());
        assert_eq!(first["owner"], "worker-1");
        assert_eq!(first["checkpoint"], sequences[1].as_str());
        assert_eq!(first["sub_sequence_number"], 3);
        assert_eq!(first["state"], "open");
        assert!(first["behind_ms"].is_u64(), "{first}");
        assert_eq!(first["checkpointed_at_ms"], arrival);

        let second = &lines[1];
        assert_eq!(second["shard_id"], ids[1].as_str());
        assert_eq!(second["state"], "closed");
        assert_eq!(second["checkpoint"], "SHARD_END");
        assert_eq!(second["behind_ms"], 0);
        assert_eq!(
            second["children"].as_array().map(Vec::len),
            Some(2),
            "{second}"
        );

        assert_eq!(lines[2]["total"]["shards"], 2);
        assert_eq!(lines[2]["total"]["finished"], 1);
        assert_eq!(lines[2]["total"]["max_behind_ms"], first["behind_ms"]);

        // The table form says the same in words.
        let table_args: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
        let out = ops(Some(&bed), &table_args, b"").await?;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(
            out.stdout.contains("2 shards, 1 finished"),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("worker-1"), "{}", out.stdout);
        Ok(())
    })
    .await
}

/// Whether a thread of process `pid` is blocked writing to its standard output (Linux: the
/// syscall number and first argument in `/proc/<pid>/task/<tid>/syscall`; write is 1 on x86_64,
/// 64 on aarch64).
fn blocked_writing_stdout(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("syscall")).is_ok_and(|line| {
            let mut fields = line.split_whitespace();
            let number = fields.next();
            let fd = fields.next();
            matches!(number, Some("1") | Some("64")) && fd == Some("0x1")
        })
    })
}

/// A Ctrl-C that comes while a view is being written (here: blocked on a full pipe) still ends
/// the watch once the write goes through. The old loop listened for Ctrl-C only while reading
/// the table, so such a signal was lost and the watch ran on (a CI run timed out on it).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ctrl_c_while_a_view_is_written_still_ends_the_watch() -> TestResult {
    use tokio::io::AsyncReadExt;
    bounded(async {
        let (bed, table) = fresh_table().await?;
        for shard in 0..20 {
            let key = format!("shardId-{shard:012}");
            lease(&table, &key, seq("7", 0), Some("worker-1")).await?;
        }
        let mut args = vec!["leases".to_owned(), "--table".to_owned()];
        args.push(table.table_name().to_owned());
        args.extend([
            "--interval".to_owned(),
            "1ms".to_owned(),
            "--watch".to_owned(),
        ]);
        args.extend(connect_flags(&bed));
        let mut child = command(env!("CARGO_BIN_EXE_kinesis-ops"), Some(&bed))
            .args(&args)
            .spawn()?;
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        // The first view is out: the watch is listening for Ctrl-C.
        let mut seen = String::new();
        let mut buffer = [0u8; 4096];
        while !seen.contains("worker-1") {
            let n = stdout.read(&mut buffer).await?;
            assert!(n > 0, "kinesis-ops ended early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
        // Reading stops: the pipe fills and the next write blocks.
        let pid = child.id().ok_or("exited")?;
        while !blocked_writing_stdout(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()?
                .success()
        );
        // Reading resumes; the watch ends.
        let drain = tokio::spawn(async move {
            let mut rest = Vec::new();
            stdout.read_to_end(&mut rest).await.map(|_| rest.len())
        });
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .map_err(|_| "the watch ran on after Ctrl-C")??;
        assert!(status.success(), "Ctrl-C ends the watch cleanly: {status}");
        drain.await??;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_watches_the_leases_until_interrupted() -> TestResult {
    use tokio::io::AsyncReadExt;
    bounded(async {
        let (bed, table) = fresh_table().await?;
        lease(
            &table,
            "shardId-000000000000",
            seq("7", 0),
            Some("worker-1"),
        )
        .await?;
        let mut args = vec!["leases".to_owned(), "--table".to_owned()];
        args.push(table.table_name().to_owned());
        args.extend([
            "--interval".to_owned(),
            "100ms".to_owned(),
            "--watch".to_owned(),
        ]);
        args.extend(connect_flags(&bed));
        let mut child = command(env!("CARGO_BIN_EXE_kinesis-ops"), Some(&bed))
            .args(&args)
            .spawn()?;
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        // Three views drawn in place (each starts by clearing the screen).
        let mut seen = String::new();
        let mut buffer = [0u8; 4096];
        while seen.matches("\x1b[2J").count() < 3 {
            let n = stdout.read(&mut buffer).await?;
            assert!(n > 0, "kinesis-ops ended early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
        assert!(seen.contains("worker-1"), "{seen}");
        let pid = child.id().ok_or("exited")?;
        assert!(
            std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()?
                .success()
        );
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
        assert!(status.success(), "Ctrl-C ends the watch cleanly: {status}");

        // A watch needs two reads per view.
        let mut once = args.clone();
        let at = once
            .iter()
            .position(|a| a == "100ms")
            .ok_or("no interval")?;
        once[at] = "0".to_owned();
        let once: Vec<&str> = once.iter().map(String::as_str).collect();
        let out = ops(Some(&bed), &once, b"").await?;
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        assert!(
            out.stderr.contains("--watch needs a non-zero --interval"),
            "{}",
            out.stderr
        );
        Ok(())
    })
    .await
}
