//! The main job on the embedded default: submits tasks to a data directory,
//! runs them on a worker in the same process, and prints their results.
//!
//! `cargo run --release --example tasks -- --data ./orcastra-data --tasks 1000`
//!
//! Tasks submitted by an earlier run that did not finish (say it was
//! killed) are run too: they wait in the directory.

use std::time::Instant;

use clap::Parser;
use orcastra::SubmitOptions;
use orcastra::prelude::*;

/// Words of a line, counted; fails (and is retried) on empty lines.
#[orca_task(queue = "text", retries = 2, backoff = "100ms", timeout = "10s")]
async fn count_words(line: String) -> Result<usize, TaskError> {
    if line.trim().is_empty() {
        return Err(TaskError::new("an empty line").no_retry());
    }
    Ok(line.split_whitespace().count())
}

#[derive(Parser)]
struct Args {
    /// The data directory (created if missing).
    #[arg(long, default_value = "./orcastra-data")]
    data: String,
    /// How many tasks to submit.
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// How many tasks the worker runs at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let orca = Orcastra::open(&args.data).await?;
    let worker = orca
        .worker()
        .concurrency(args.concurrency)
        .register(count_words::task())
        .start()
        .await?;
    let start = Instant::now();
    let lines = (0..args.tasks).map(|n| (format!("task {n} of the main job"),));
    let handles = orca
        .submit_many_with(count_words::task(), lines, SubmitOptions::default())
        .await?;
    let mut words = 0;
    for handle in &handles {
        words += handle.result().await??;
    }
    let elapsed = start.elapsed();
    println!(
        "{} tasks submitted, run and recorded in {elapsed:.2?} ({:.0} tasks/s); {words} words counted",
        handles.len(),
        handles.len() as f64 / elapsed.as_secs_f64(),
    );
    if let Some(last) = handles.last() {
        let state = orca.state(last.id()).ok_or("the last task has no state")?;
        println!(
            "last task {}: {:?} on {}",
            state.id,
            state.state,
            state.worker.unwrap_or_default()
        );
    }
    worker.stop().await;
    Ok(())
}
