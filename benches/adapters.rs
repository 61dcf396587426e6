//! The embedded engine against Redis through the adapter, in the same run
//! and with the same workload:
//!
//! - `add_{embedded,redis}/{single,batch_1024}`: add entries of 100 bytes,
//!   one per call, or 1024 per call (a pipeline of XADDs for Redis);
//! - `read_ack_{embedded,redis}/{1,16}_consumers`: read new entries (1024
//!   per read, split between the consumers) and ack them.
//!
//! The embedded engine runs on the segment log without fsync; Redis is a
//! `redis-server` from PATH on loopback, without persistence: neither waits
//! for the disk. The summary prints each rate and the embedded/Redis ratio.
//! Run with `cargo bench --features redis --bench adapters`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use orcastra::StreamId;
use orcastra::log::{FsyncPolicy, LogOptions, SegmentLog};
use orcastra::streams::{Embedded, FileStore, GroupStart, RedisStreams, Streams};
use tokio::runtime::Runtime;

mod common;
#[path = "../tests/common/redis_server.rs"]
mod redis_server;
#[path = "common/workload.rs"]
mod workload;
use common::rate;
use redis_server::RedisServer;
use workload::{BATCH, consume, entry};

static STREAMS: AtomicU64 = AtomicU64::new(0);

/// A stream name no sample has used.
fn fresh_stream() -> String {
    format!("add-{}", STREAMS.fetch_add(1, Ordering::Relaxed))
}

fn add<S: Streams>(c: &mut Criterion, rt: &Runtime, name: &str, s: &S) {
    let mut group = c.benchmark_group(format!("add_{name}"));
    for (bench, batch) in [("single", 1), ("batch_1024", BATCH)] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(bench, |b| {
            b.iter_custom(|iters| {
                let stream = fresh_stream();
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        if batch == 1 {
                            s.add(&stream, entry(), Default::default()).await.unwrap();
                        } else {
                            s.add_batch(&stream, vec![entry(); batch]).await.unwrap();
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn read_and_ack<S: Streams>(c: &mut Criterion, rt: &Runtime, name: &str, s: &Arc<S>) {
    rt.block_on(async {
        s.create_group("s", "g", GroupStart::After(StreamId::MIN), true)
            .await
            .unwrap();
    });
    let mut group = c.benchmark_group(format!("read_ack_{name}"));
    group.throughput(Throughput::Elements(BATCH as u64));
    for consumers in [1usize, 16] {
        group.bench_function(format!("{consumers}_consumers"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(consume(s, "s", "g", consumers, iters as usize * BATCH))
            })
        });
    }
    group.finish();
}

fn summary() {
    println!();
    println!("## Embedded (segment log, fsync never) vs Redis through the adapter (median)");
    println!();
    println!("| | embedded | Redis | ratio |");
    println!("|---|---:|---:|---:|");
    for (label, bench, per_iter) in [
        ("add one at a time", "add_{}/single", 1.0),
        ("add in batches of 1024", "add_{}/batch_1024", BATCH as f64),
        (
            "read + ack, 1 consumer",
            "read_ack_{}/1_consumers",
            BATCH as f64,
        ),
        (
            "read + ack, 16 consumers",
            "read_ack_{}/16_consumers",
            BATCH as f64,
        ),
    ] {
        let embedded = rate(&bench.replace("{}", "embedded"), per_iter);
        let redis = rate(&bench.replace("{}", "redis"), per_iter);
        if let (Some(embedded), Some(redis)) = (embedded, redis) {
            println!(
                "| {label} | {embedded:.0}/s | {redis:.0}/s | {:.1}x |",
                embedded / redis
            );
        }
    }
}

fn engine(dir: &Path) -> Embedded<FileStore<SegmentLog>> {
    let options = LogOptions::default().fsync(FsyncPolicy::Never);
    Embedded::open(FileStore::<SegmentLog>::new(dir, options))
}

fn main() {
    let temp = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let embedded = Arc::new(engine(temp.path()));
    let redis = Arc::new(
        rt.block_on(RedisStreams::connect(&server.url()))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    add(&mut c, &rt, "embedded", &*embedded);
    add(&mut c, &rt, "redis", &*redis);
    read_and_ack(&mut c, &rt, "embedded", &embedded);
    read_and_ack(&mut c, &rt, "redis", &redis);
    c.final_summary();
    summary();
}
