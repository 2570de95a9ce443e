//! One producer putting continuously while the stream is split twice and merged once under it,
//! for the tests that judge what a reshard does to records in flight (included with
//! `#[path]` by `kpl/tests/resharding.rs` and `system-tests/tests/through_reshards.rs`).

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kinesis_integration::TestBed;
use kinesis_kpl::{Producer, PutResult, UserRecord};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The attempt code of an aggregate stored on a shard not holding all of its records.
pub(crate) const WRONG_SHARD: &str = "WrongShard";

/// Waits until `put` has reached `count` (the producing task counts as it puts).
async fn reached(put: &AtomicUsize, count: usize) {
    while put.load(Ordering::SeqCst) < count {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Puts `records` records over `keys` keys (key `key-{n % keys}`, data: the record's number
/// `n`) at a steady pace through `producer`, while a second task splits the stream's first
/// shard, then its second, then merges its third and fourth, each once a fifth more of the
/// records are put. The producer goes on putting until the reshards are done and then another
/// fifth, so every reshard happens under load. Returns every put's result, in put order.
pub(crate) async fn put_through_reshards(
    bed: &TestBed,
    producer: &Producer,
    stream: &str,
    records: usize,
    keys: usize,
) -> Result<Vec<PutResult>, BoxError> {
    let kinesis = bed.kinesis().clone();
    let put = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let step = records / 5;

    let reshards = async {
        let listed = kinesis.list_shards().stream_name(stream).send().await?;
        let mut shards = Vec::new();
        for shard in listed.shards() {
            let range = shard.hash_key_range().ok_or("a shard without a range")?;
            let (start, end): (u128, u128) = (
                range.starting_hash_key().parse()?,
                range.ending_hash_key().parse()?,
            );
            shards.push((shard.shard_id().to_owned(), start, end));
        }
        for (n, (id, start, end)) in shards.iter().take(2).enumerate() {
            reached(&put, (n + 1) * step).await;
            kinesis
                .split_shard()
                .stream_name(stream)
                .shard_to_split(id)
                .new_starting_hash_key((start + (end - start) / 2).to_string())
                .send()
                .await?;
            bed.wait_for_stream_active(stream).await?;
        }
        reached(&put, 3 * step).await;
        kinesis
            .merge_shards()
            .stream_name(stream)
            .shard_to_merge(&shards[2].0)
            .adjacent_shard_to_merge(&shards[3].0)
            .send()
            .await?;
        bed.wait_for_stream_active(stream).await?;
        done.store(put.load(Ordering::SeqCst), Ordering::SeqCst);
        Ok::<(), BoxError>(())
    };

    let producing = async {
        let mut futures = Vec::new();
        let mut n = 0usize;
        loop {
            let finished = done.load(Ordering::SeqCst);
            if n >= records && finished > 0 && n >= finished + step {
                break;
            }
            futures.push(
                producer.put_record(UserRecord::new(format!("key-{}", n % keys), n.to_string())),
            );
            n += 1;
            put.store(n, Ordering::SeqCst);
            if n.is_multiple_of(200) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let mut results = Vec::with_capacity(futures.len());
        for future in futures {
            results.push(future.await?);
        }
        Ok::<Vec<PutResult>, BoxError>(results)
    };

    let (results, resharded) = tokio::join!(producing, reshards);
    resharded?;
    results
}

/// How many of `results` were sent again after their aggregate landed on the wrong shard.
pub(crate) fn wrong_shard_count(results: &[PutResult]) -> usize {
    results
        .iter()
        .filter(|r| {
            r.attempts
                .iter()
                .any(|a| a.error_code.as_deref() == Some(WRONG_SHARD))
        })
        .count()
}
