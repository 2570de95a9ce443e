//! What a fleet of workers costs in DynamoDB: read and write units per minute at steady state,
//! by operation, for W workers sharing L leases, beside the Java KCL 2.x's figure for the same
//! fleet computed from its published cadence.
//!
//! `cargo bench -p kinesis-kcl --bench fleet` runs each point of `FLEET_POINTS` (default
//! `100x4,1000x10`; `LxW` pairs, comma-separated) for `FLEET_SECONDS` of steady state (default
//! 60) at the default failover time (10 s), on the bed's backend (embedded by default;
//! `KINESIS_TEST_BACKEND=emulators` for DynamoDB Local): a stream of L shards, W workers in this
//! process, each with its own DynamoDB client, all through one counting layer. Once every
//! lease is held (warm-up), the calls of the measuring window are counted.
//!
//! Units are computed from the calls by DynamoDB's rules, not read from
//! `ConsumedCapacity` (the embedded server does not report it):
//! - a `Scan` reads the whole table, L items of the measured mean item size; a strongly
//!   consistent scan costs 1 read unit per 4 KB, an eventually consistent one half;
//! - a `GetItem` or `Query` of one lease costs 1 read unit (0.5 eventually consistent);
//! - `UpdateItem`, `PutItem` and `DeleteItem` of a lease cost 1 write unit (items < 1 KB).
//!
//! The Java KCL 2.x figure: each worker scans the table every `2 × (failover + epsilon)`
//! (20.05 s; eventually consistent) and renews each lease every `failover / 3 − epsilon`
//! (3.308 s), so `W × L × 60 / 20.05` items read and `L × 60 / 3.308` writes per minute.
//!
//! Without `--bench` (`cargo test --benches`) one small point runs for a few seconds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_integration::TestBed;
use kinesis_integration::faults::{Service, ServiceFaults, ServicePlan};
use kinesis_kcl::{
    Checkpointer, InitialPosition, LeaseConfig, PollingConfig, ProcessRecordsInput, ProcessorError,
    Retrieval, ShardRecordProcessor, Worker, WorkerHandle,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The Java KCL 2.x's cadence at the default failover (10 s, epsilon 25 ms).
const JAVA_SCAN_PERIOD_S: f64 = 20.05;
const JAVA_RENEW_PERIOD_S: f64 = 3.308;

fn main() -> Result<(), BoxError> {
    let bench = std::env::args().any(|a| a == "--bench");
    let (points, seconds) = if bench {
        let points = std::env::var("FLEET_POINTS").unwrap_or_else(|_| "100x4,1000x10".into());
        let seconds = std::env::var("FLEET_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60);
        (parse_points(&points)?, seconds)
    } else {
        (vec![(8, 2)], 3)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "| leases L | workers W | operation | calls/min | items read/min | read units/min | write units/min |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (leases, workers) in points {
        runtime.block_on(point(leases, workers, Duration::from_secs(seconds)))?;
    }
    Ok(())
}

fn parse_points(points: &str) -> Result<Vec<(usize, usize)>, BoxError> {
    points
        .split(',')
        .map(|point| {
            let (l, w) = point
                .trim()
                .split_once('x')
                .ok_or_else(|| format!("FLEET_POINTS: {point:?} is not LxW"))?;
            Ok((l.parse()?, w.parse()?))
        })
        .collect()
}

/// A processor that does nothing: the harness measures lease coordination only.
struct Idle;

#[kinesis_kcl::async_trait]
impl ShardRecordProcessor for Idle {
    async fn process_records(
        &mut self,
        _input: ProcessRecordsInput,
        _checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }
}

/// What one operation cost over the window.
#[derive(Default)]
struct Cost {
    calls: u64,
    items_read: f64,
    read_units: f64,
    write_units: f64,
}

async fn point(leases: usize, workers: usize, window: Duration) -> Result<(), BoxError> {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(u32::try_from(leases)?).await?;
    let application = bed.unique_table_name();
    let counted = ServiceFaults::new(Service::DynamoDb, ServicePlan::seeded(1));
    let mut running = Vec::new();
    for n in 0..workers {
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(counted.dynamodb_config(&bed).build());
        let worker = Worker::builder(&application, bed.kinesis().clone(), dynamodb, |_| Idle)
            .stream(&stream)
            .worker_id(format!("worker-{n}"))
            .initial_position(InitialPosition::Latest)
            .lease_config(LeaseConfig::builder().build()?)
            // Reading is not measured: poll rarely, so that the servers' CPU goes to leases.
            .retrieval(Retrieval::Polling(
                PollingConfig::builder()
                    .idle_time_between_reads(Duration::from_secs(10))
                    .build()?,
            ))
            .build()?;
        let handle = worker.handle();
        running.push((handle, tokio::spawn(worker.run())));
    }

    // Warm-up: every lease held, and the fleet balanced (max − min ≤ 1).
    let warm = Instant::now();
    let deadline = warm + Duration::from_secs(600);
    loop {
        // The first worker creates the table: until then, nothing is held.
        let owners = owners(bed.dynamodb(), &application)
            .await
            .unwrap_or_default();
        let held: usize = owners.values().sum();
        let balanced = owners.len() == workers
            && owners.values().max().copied().unwrap_or(0)
                - owners.values().min().copied().unwrap_or(0)
                <= 1;
        if held == leases && balanced {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{leases}x{workers}: not balanced in 600 s: {owners:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let warm_up = warm.elapsed();
    let item_size = mean_item_size(bed.dynamodb(), &application).await?;

    counted.log_calls(true);
    tokio::time::sleep(window).await;
    counted.log_calls(false);
    let calls = counted.calls();

    let per_minute = 60.0 / window.as_secs_f64();
    let mut costs: BTreeMap<String, Cost> = BTreeMap::new();
    for call in &calls {
        let body = call
            .request
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if !body.contains(&application) {
            continue;
        }
        let consistent = body.contains("\"ConsistentRead\":true");
        let read_unit = if consistent { 1.0 } else { 0.5 };
        let cost = costs.entry(call.operation.clone()).or_default();
        cost.calls += 1;
        match call.operation.as_str() {
            // Every scan page but the first carries ExclusiveStartKey; pages add up to one
            // pass over the table per scan.
            "Scan" if !body.contains("ExclusiveStartKey") => {
                let bytes = leases as f64 * item_size;
                cost.items_read += leases as f64;
                cost.read_units += (bytes / 4096.0).ceil() * read_unit;
            }
            "GetItem" | "Query" => {
                cost.items_read += 1.0;
                cost.read_units += read_unit;
            }
            "UpdateItem" | "PutItem" | "DeleteItem" => cost.write_units += 1.0,
            _ => {}
        }
    }
    let mut total = Cost::default();
    for (operation, cost) in &costs {
        println!(
            "| {leases} | {workers} | {operation} | {:.0} | {:.0} | {:.0} | {:.0} |",
            cost.calls as f64 * per_minute,
            cost.items_read * per_minute,
            cost.read_units * per_minute,
            cost.write_units * per_minute,
        );
        total.calls += cost.calls;
        total.items_read += cost.items_read;
        total.read_units += cost.read_units;
        total.write_units += cost.write_units;
    }
    println!(
        "| {leases} | {workers} | **all** | {:.0} | {:.0} | {:.0} | {:.0} |",
        total.calls as f64 * per_minute,
        total.items_read * per_minute,
        total.read_units * per_minute,
        total.write_units * per_minute,
    );
    let java_items = workers as f64 * leases as f64 * 60.0 / JAVA_SCAN_PERIOD_S;
    let java_reads = workers as f64 * 60.0 / JAVA_SCAN_PERIOD_S
        * (leases as f64 * item_size / 4096.0).ceil()
        * 0.5;
    let java_writes = leases as f64 * 60.0 / JAVA_RENEW_PERIOD_S;
    println!(
        "| {leases} | {workers} | Java KCL 2.x (computed) | | {java_items:.0} | {java_reads:.0} | {java_writes:.0} |"
    );
    println!(
        "REPORT fleet {leases}x{workers}: warm-up {:.1} s, mean lease item {item_size:.0} B, \
         read units/min per lease {:.2} (Java 2.x {:.2}), write units/min per lease {:.2} (Java 2.x {:.2})",
        warm_up.as_secs_f64(),
        total.read_units * per_minute / leases as f64,
        java_reads / leases as f64,
        total.write_units * per_minute / leases as f64,
        java_writes / leases as f64,
    );

    stop(running).await;
    Ok(())
}

async fn stop(
    running: Vec<(
        WorkerHandle,
        tokio::task::JoinHandle<Result<(), kinesis_kcl::Error>>,
    )>,
) {
    for (handle, _) in &running {
        let handle = handle.clone();
        tokio::spawn(async move { handle.shutdown().await });
    }
    for (_, task) in running {
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
    }
}

/// Leases held per owner, read with an uncounted client.
async fn owners(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<BTreeMap<String, usize>, BoxError> {
    let mut owners = BTreeMap::new();
    for item in scan(dynamodb, table).await? {
        if let Some(AttributeValue::S(owner)) = item.get("leaseOwner") {
            *owners.entry(owner.clone()).or_default() += 1;
        }
    }
    Ok(owners)
}

/// The mean size of a lease item by DynamoDB's rules (attribute names plus values; numbers
/// as their digits / 2 + 1).
async fn mean_item_size(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> Result<f64, BoxError> {
    let items = scan(dynamodb, table).await?;
    let total: usize = items
        .iter()
        .map(|item| {
            item.iter()
                .map(|(name, value)| name.len() + value_size(value))
                .sum::<usize>()
        })
        .sum();
    Ok(total as f64 / items.len().max(1) as f64)
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len() / 2 + 1,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        AttributeValue::B(b) => b.as_ref().len(),
        _ => 0,
    }
}

async fn scan(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Vec<std::collections::HashMap<String, AttributeValue>>, BoxError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = dynamodb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        items.extend(page.items().iter().cloned());
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => break,
        }
    }
    Ok(items)
}
