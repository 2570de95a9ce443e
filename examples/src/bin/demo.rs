//! The main job: a `kinesis-kpl` producer puts records into a new stream while `kinesis-kcl`
//! workers consume them with checkpoints; live progress bars, then a summary of what was
//! produced, consumed, lost and duplicated. Exits non-zero when a record was lost. The demo
//! itself is `examples/src/demo/mod.rs`.
//!
//! ```text
//! cargo run --release -p kinesis-examples --bin demo
//! cargo run --release -p kinesis-examples --bin demo -- --records 20000 --workers 3 --no-progress
//! cargo run --release -p kinesis-examples --bin demo -- --kinesis-endpoint http://127.0.0.1:4566 --dynamodb-endpoint http://127.0.0.1:4566
//! ```

use std::process::ExitCode;

use clap::Parser;
use kinesis_examples::demo::{self, DemoArgs, NEXT_STEPS};
use kinesis_examples::error_line;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = DemoArgs::parse();
    match demo::run(&args).await {
        Ok(summary) => {
            println!("{summary}");
            if !args.no_progress {
                eprintln!("\n{NEXT_STEPS}");
            }
            if summary.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("{}", error_line(error.as_ref()));
            ExitCode::from(2)
        }
    }
}
