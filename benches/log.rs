//! Segment log benchmarks, each next to its physical reference in the same run:
//!
//! - `append/{never,batch}/{size}x{batch}`: appends of 100 B, 1 KiB and 16 KiB
//!   records in batches of 1, 64 and 1024, without fsync and with group commit;
//! - `raw_write/{never,batch}/{size}x{batch}`: one `write()` of the same payload
//!   bytes to a plain file (and one `fdatasync` for `batch`);
//! - `read/sequential`: reading a 1M-record log from start to end;
//! - `durable/…`: one fsync per record against 64 appenders sharing fsyncs.
//!
//! After the run, a table of throughputs and ratios is printed from
//! criterion's own estimates. Run with `cargo bench --bench log`.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};

mod common;
use common::rate;
use orcastra::log::{FsyncPolicy, Log, LogOptions, Offset, SegmentLog};

const SIZES: [usize; 3] = [100, 1024, 16 * 1024];
const BATCHES: [usize; 3] = [1, 64, 1024];
const READ_RECORDS: u64 = 1_000_000;
const APPENDERS: usize = 64;

fn policies() -> [(&'static str, FsyncPolicy); 2] {
    [("never", FsyncPolicy::Never), ("batch", FsyncPolicy::Batch)]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn open(dir: &Path, policy: FsyncPolicy) -> SegmentLog {
    SegmentLog::open(dir, LogOptions::default().fsync(policy)).unwrap()
}

fn append(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("append");
    for (name, policy) in policies() {
        for size in SIZES {
            for batch in BATCHES {
                let records = vec![vec![0x5a_u8; size]; batch];
                group.throughput(Throughput::Elements(batch as u64));
                group.bench_function(BenchmarkId::new(name, format!("{size}x{batch}")), |b| {
                    b.iter_custom(|iters| {
                        let dir = tempfile::tempdir().unwrap();
                        let log = open(dir.path(), policy);
                        let start = Instant::now();
                        for _ in 0..iters {
                            rt.block_on(log.append(&records)).unwrap();
                        }
                        start.elapsed()
                    })
                });
            }
        }
    }
    group.finish();
}

fn raw_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("raw_write");
    for (name, policy) in policies() {
        for size in SIZES {
            for batch in BATCHES {
                let bytes = vec![0x5a_u8; size * batch];
                group.throughput(Throughput::Elements(batch as u64));
                group.bench_function(BenchmarkId::new(name, format!("{size}x{batch}")), |b| {
                    b.iter_custom(|iters| {
                        let dir = tempfile::tempdir().unwrap();
                        let mut file = File::create(dir.path().join("raw")).unwrap();
                        let start = Instant::now();
                        for _ in 0..iters {
                            file.write_all(&bytes).unwrap();
                            if policy == FsyncPolicy::Batch {
                                file.sync_data().unwrap();
                            }
                        }
                        start.elapsed()
                    })
                });
            }
        }
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), FsyncPolicy::Never);
    let records = vec![vec![0x5a_u8; 100]; 1024];
    let rt = runtime();
    while log.next_offset().0 < READ_RECORDS {
        rt.block_on(log.append(&records)).unwrap();
    }
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(READ_RECORDS));
    group.sample_size(10);
    group.bench_function("sequential", |b| {
        b.iter(|| {
            let mut at = Offset(0);
            let mut bytes = 0;
            while at.0 < READ_RECORDS {
                let batch = log.read(at, 1024).unwrap();
                bytes += batch.iter().map(|r| r.len()).sum::<usize>();
                at = at + batch.len() as u64;
            }
            bytes
        })
    });
    group.finish();
}

fn durable(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_fsync_per_record", |b| {
        let rt = runtime();
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let log = open(dir.path(), FsyncPolicy::Always);
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(log.append(&[[0x5a_u8; 100]])).unwrap();
            }
            start.elapsed()
        })
    });
    for (name, policy) in [
        ("64_appenders_group_commit", FsyncPolicy::Batch),
        ("64_appenders_always", FsyncPolicy::Always),
    ] {
        group.bench_function(name, |b| {
            // One thread for the appenders: the fsync thread needs the other core.
            let rt = runtime();
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().unwrap();
                let log = Arc::new(open(dir.path(), policy));
                let per_task = iters.div_ceil(APPENDERS as u64);
                let start = Instant::now();
                rt.block_on(async {
                    let tasks: Vec<_> = (0..APPENDERS)
                        .map(|_| {
                            let log = Arc::clone(&log);
                            tokio::spawn(async move {
                                for _ in 0..per_task {
                                    log.append(&[[0x5a_u8; 100]]).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                });
                // Time per record actually appended, scaled to `iters`.
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_task * APPENDERS as u64) as f64)
            })
        });
    }
    group.finish();
}

fn summary() {
    println!("\n## Segment log against a raw write of the same payload bytes (median)\n");
    println!("| fsync | record | batch | log records/s | log MB/s | raw records/s | log / raw |");
    println!("|---|---|---|---|---|---|---|");
    for (name, _) in policies() {
        for size in SIZES {
            for batch in BATCHES {
                let case = format!("{name}/{size}x{batch}");
                let (Some(log), Some(raw)) = (
                    rate(&format!("append/{case}"), batch as f64),
                    rate(&format!("raw_write/{case}"), batch as f64),
                ) else {
                    continue;
                };
                println!(
                    "| {name} | {size} B | {batch} | {log:.0} | {:.0} | {raw:.0} | {:.2} |",
                    log * size as f64 / 1e6,
                    log / raw
                );
            }
        }
    }
    if let Some(read) = rate("read/sequential", READ_RECORDS as f64) {
        println!("\nsequential read, 100 B records: {read:.0} records/s");
    }
    let single = rate("durable/one_fsync_per_record", 1.0);
    let shared = rate("durable/64_appenders_group_commit", 1.0);
    let always = rate("durable/64_appenders_always", 1.0);
    if let (Some(single), Some(shared)) = (single, shared) {
        println!(
            "durable appends: one fsync per record {single:.0}/s; {APPENDERS} appenders with group commit {shared:.0}/s ({:.1}x)",
            shared / single
        );
    }
    if let Some(always) = always {
        println!("{APPENDERS} appenders under `Always` (no sharing): {always:.0}/s");
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    append(&mut c);
    raw_write(&mut c);
    read(&mut c);
    durable(&mut c);
    c.final_summary();
    summary();
}
