//! The built `producer` binary against the test bed: every flag, what it stores (read back
//! from the stream), and its one-line errors.

mod support;

use std::collections::BTreeSet;

use kinesis_integration::TestBed;
use support::{
    BoxError, Output, TestResult, assert_one_error_line, bounded, command, endpoint_flags,
    read_stream, run,
};

/// Runs the producer against the bed with `args` after the endpoint flags; `None` on a bed
/// without endpoints (real AWS), where these tests do not run.
async fn producer(bed: &TestBed, args: &[&str], stdin: &[u8]) -> Result<Option<Output>, BoxError> {
    let Some(mut flags) = endpoint_flags(bed) else {
        return Ok(None);
    };
    flags.extend(args.iter().map(|a| a.to_string()));
    let mut command = command(env!("CARGO_BIN_EXE_producer"), Some(bed));
    command.args(&flags);
    Ok(Some(run(command, stdin).await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_lines_go_to_a_stream_it_creates_under_one_partition_key() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        let stream = kinesis_integration::unique_name("produced");
        let Some(out) = producer(
            &bed,
            &[
                "--stream",
                &stream,
                "--create-shards",
                "2",
                "--partition-key",
                "fixed",
            ],
            b"alpha\nbeta\ngamma\n",
        )
        .await?
        else {
            return Ok(());
        };
        assert_eq!(out.code, Some(0), "{out}");
        assert!(
            out.stdout
                .starts_with("put 3 records: 3 stored, 0 failed in "),
            "{out}"
        );
        assert!(
            out.stderr
                .contains(&format!("created stream {stream} with 2 shards")),
            "{out}"
        );
        let shards = bed
            .kinesis()
            .list_shards()
            .stream_name(&stream)
            .send()
            .await?;
        assert_eq!(shards.shards().len(), 2);
        let stored = read_stream(&bed, &stream, 3).await?;
        assert_eq!(stored.len(), 3, "{stored:?}");
        assert!(
            stored.iter().all(|r| r.partition_key == "fixed"),
            "{stored:?}"
        );
        let data: BTreeSet<&[u8]> = stored.iter().map(|r| r.data.as_slice()).collect();
        assert_eq!(
            data,
            BTreeSet::from([&b"alpha"[..], &b"beta"[..], &b"gamma"[..]])
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_lines_are_keyed_by_line_number_by_default() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        let stream = bed.create_stream(1).await?;
        let Some(out) = producer(&bed, &["--stream", &stream], b"zero\none\ntwo\n").await? else {
            return Ok(());
        };
        assert_eq!(out.code, Some(0), "{out}");
        assert!(
            out.stdout.starts_with("put 3 records: 3 stored, 0 failed"),
            "{out}"
        );
        let stored = read_stream(&bed, &stream, 3).await?;
        let pairs: Vec<(&str, &[u8])> = stored
            .iter()
            .map(|r| (r.partition_key.as_str(), r.data.as_slice()))
            .collect();
        // One shard, one key per line: in order.
        assert_eq!(
            pairs,
            [("0", &b"zero"[..]), ("1", &b"one"[..]), ("2", &b"two"[..])]
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synthetic_load_is_paced_over_its_keys() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        let stream = bed.create_stream(2).await?;
        let Some(out) = producer(
            &bed,
            &[
                "--stream",
                &stream,
                "--synthetic",
                "300",
                "--rate",
                "1000",
                "--keys",
                "3",
                "--region",
                "eu-west-1",
            ],
            b"",
        )
        .await?
        else {
            return Ok(());
        };
        assert_eq!(out.code, Some(0), "{out}");
        let seconds: f64 = out
            .stdout
            .strip_prefix("put 300 records: 300 stored, 0 failed in ")
            .and_then(|rest| rest.split(' ').next())
            .ok_or_else(|| format!("unexpected summary\n{out}"))?
            .parse()?;
        // 300 records at 1000/s: the last is put 0.299 s after the first.
        assert!(seconds >= 0.29, "paced at --rate: {seconds} s\n{out}");
        let stored = read_stream(&bed, &stream, 300).await?;
        assert_eq!(stored.len(), 300);
        let keys: BTreeSet<&str> = stored.iter().map(|r| r.partition_key.as_str()).collect();
        assert_eq!(keys, BTreeSet::from(["key-0", "key-1", "key-2"]));
        let data: BTreeSet<String> = stored
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .collect();
        assert_eq!(data, (0..300).map(|n| format!("record-{n}")).collect());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_one_error_line_and_exit_1() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        let stream = kinesis_integration::unique_name("missing");
        let Some(out) = producer(&bed, &["--stream", &stream], b"secret-payload\n").await? else {
            return Ok(());
        };
        assert_eq!(out.code, Some(1), "{out}");
        assert_one_error_line(&out, &[&stream, "ResourceNotFoundException"]);
        assert!(!out.stderr.contains("secret-payload"), "{out}");
        Ok(())
    })
    .await
}
