//! No-op tasks end to end: submit, fetch, run, record the state, ack. Each
//! iteration submits a batch of tasks and waits until a worker has finished
//! all of them; the summary prints tasks/s per backend and concurrency.
//!
//! Run with `cargo bench --bench tasks`. The full issue's matrix (64
//! producers, 1 M queued, submit-to-start latency, Redis) is still to come.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use orcastra::log::{FsyncPolicy, LogOptions};
use orcastra::prelude::*;

mod common;
use common::rate;

#[orca_task]
async fn noop() {}

const TASKS: usize = 1000;

fn main() {
    let temp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let dir = |name: &str| temp.path().join(name).display().to_string();
    let backends = [
        ("memory", "memory://".to_string(), FsyncPolicy::Never),
        ("segment_never", dir("never"), FsyncPolicy::Never),
        ("segment_batch", dir("batch"), FsyncPolicy::Batch),
    ];
    for (name, url, fsync) in &backends {
        let orca = rt
            .block_on(Orcastra::open_with(
                url,
                LogOptions::default().fsync(*fsync),
            ))
            .unwrap();
        let mut group = c.benchmark_group(format!("noop_{name}"));
        group.throughput(Throughput::Elements(TASKS as u64));
        for concurrency in [1usize, 64] {
            let worker = rt
                .block_on(
                    orca.worker()
                        .concurrency(concurrency)
                        .register(noop::task())
                        .start(),
                )
                .unwrap();
            group.bench_function(format!("concurrency_{concurrency}"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let mut handles = Vec::with_capacity(TASKS);
                            for _ in 0..TASKS {
                                handles.push(noop::submit(&orca).await.unwrap());
                            }
                            for handle in handles {
                                handle.result().await.unwrap().unwrap();
                            }
                        }
                        start.elapsed()
                    })
                })
            });
            rt.block_on(worker.stop());
        }
        group.finish();
    }
    c.final_summary();
    println!();
    println!("## No-op tasks end to end, one producer (median)");
    println!();
    for (name, _, _) in &backends {
        for concurrency in [1, 64] {
            if let Some(rate) = rate(
                &format!("noop_{name}/concurrency_{concurrency}"),
                TASKS as f64,
            ) {
                println!("| {name} | concurrency {concurrency} | {rate:.0} tasks/s |");
            }
        }
    }
}
