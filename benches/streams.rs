//! Stream and consumer-group benchmarks on the segment log without fsync:
//!
//! - `add/{single,batch_1024}`: entries added one by one and 1024 at a time;
//! - `add_beside_blocked_readers/{0,1000}_readers`: entries added one by one
//!   to a stream while readers wait on others, which must not slow it;
//! - `read_ack/{1,16}_consumers`: read new entries (1024 per read) and ack them;
//! - `claim/batch_100`: XCLAIM of 100 idle pending entries at a time;
//! - `backlog/*`: read + ack from a group with 1 k entries waiting, with
//!   10 M waiting, and with 1 M entries pending (delivered, unacknowledged),
//!   whose rates must stay within 20 % of each other;
//! - `recovery/1m_pending`: opening a stream whose group has 1 M pending entries.
//!
//! It also measures the heap each pending entry costs, with a counting
//! allocator, and prints a summary with the ratios. Run with
//! `cargo bench --bench streams` (it writes about 2 GB to the temp directory).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};

mod common;
#[path = "common/workload.rs"]
mod workload;
use common::{median, rate};
use orcastra::StreamId;
use orcastra::log::{FsyncPolicy, LogOptions, SegmentLog};
use orcastra::streams::{
    ClaimOptions, Embedded, FileStore, GroupRead, GroupStart, ManualClock, PendingQuery, ReadFrom,
    ReadGroupOptions, Streams,
};
use tokio::runtime::Runtime;
use workload::{BATCH, consume, entry, fill, lag, read_ack};

struct Counting;

static HEAP: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout as asked.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HEAP.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

type Engine = Embedded<FileStore<SegmentLog>>;

fn engine(dir: &Path) -> Engine {
    let options = LogOptions::default().fsync(FsyncPolicy::Never);
    Embedded::open(FileStore::<SegmentLog>::new(dir, options))
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Each sample adds to a fresh stream, as the log benchmarks append to a
/// fresh log: this measures the engine, not how fast the disk absorbs
/// gigabytes (a sustained run is bound by the disk's write bandwidth).
fn add(c: &mut Criterion, dir: &Path) {
    let rt = runtime();
    let mut group = c.benchmark_group("add");
    for (name, batch) in [("single", 1), ("batch_1024", BATCH)] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let sample = tempfile::tempdir_in(dir).unwrap();
                let s = engine(sample.path());
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        if batch == 1 {
                            s.add("s", entry(), Default::default()).await.unwrap();
                        } else {
                            s.add_batch("s", vec![entry(); batch]).await.unwrap();
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// An add wakes the readers of its own stream only: a thousand readers
/// blocked on other streams (a server's idle clients) cost it nothing.
fn add_beside_blocked_readers(c: &mut Criterion, dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = Arc::new(engine(&dir.join("beside")));
    let mut group = c.benchmark_group("add_beside_blocked_readers");
    group.throughput(Throughput::Elements(1));
    let mut readers = Vec::new();
    for blocked in [0, 1000] {
        while readers.len() < blocked {
            let (s, name) = (Arc::clone(&s), format!("idle{}", readers.len()));
            readers.push(rt.spawn(async move {
                let read = [(name.as_str(), ReadFrom::End)];
                s.read(&read, None, Some(Duration::ZERO)).await
            }));
        }
        group.bench_function(format!("{blocked}_readers"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        s.add("s", entry(), Default::default()).await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    readers.iter().for_each(|reader| reader.abort());
    group.finish();
}

fn read_and_ack(c: &mut Criterion, dir: &Path) {
    let rt = runtime();
    let s = Arc::new(engine(&dir.join("read")));
    rt.block_on(async {
        s.create_group("s", "g", GroupStart::After(StreamId::MIN), true)
            .await
            .unwrap();
    });
    let mut group = c.benchmark_group("read_ack");
    group.throughput(Throughput::Elements(BATCH as u64));
    for consumers in [1usize, 16] {
        group.bench_function(format!("{consumers}_consumers"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(consume(&s, "s", "g", consumers, iters as usize * BATCH))
            })
        });
    }
    group.finish();
}

fn claim(c: &mut Criterion, dir: &Path) {
    let rt = runtime();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let s = engine(&dir.join("claim")).with_clock(Arc::clone(&clock));
    rt.block_on(async {
        s.create_group("s", "g", GroupStart::After(StreamId::MIN), true)
            .await
            .unwrap();
    });
    let mut group = c.benchmark_group("claim");
    group.throughput(Throughput::Elements(100));
    group.bench_function("batch_100", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                // Deliver fresh entries to "a", let them go idle, time "b" claiming them.
                fill(&s, "s", iters as usize * 100).await;
                let options = ReadGroupOptions {
                    count: Some(iters as usize * 100),
                    ..ReadGroupOptions::default()
                };
                let reply = s
                    .read_group("g", "a", &[("s", GroupRead::New)], options)
                    .await
                    .unwrap();
                let ids: Vec<StreamId> = reply[0].1.iter().map(|e| e.id).collect();
                clock.advance(Duration::from_secs(60));
                let start = Instant::now();
                for chunk in ids.chunks(100) {
                    let claimed = s
                        .claim(
                            "s",
                            "g",
                            "b",
                            Duration::from_secs(30),
                            chunk,
                            ClaimOptions::default(),
                        )
                        .await
                        .unwrap();
                    assert_eq!(claimed.len(), chunk.len());
                }
                let elapsed = start.elapsed();
                s.ack("s", "g", &ids).await.unwrap();
                elapsed
            })
        })
    });
    group.finish();
}

/// Read + ack in three situations that must run at the same rate.
fn backlog(c: &mut Criterion, dir: &Path) {
    let rt = runtime();
    let s = engine(&dir.join("backlog"));
    rt.block_on(async {
        // A small backlog, topped up as it is consumed.
        s.create_group("small", "g", GroupStart::After(StreamId::MIN), true)
            .await
            .unwrap();
        fill(&s, "small", 1000).await;
        // A 10 M-entry backlog.
        fill(&s, "large", 10_000_000).await;
        s.create_group("large", "g", GroupStart::After(StreamId::MIN), false)
            .await
            .unwrap();
        // 1 M entries delivered to a consumer that never acks.
        fill(&s, "pending", 1_000_000).await;
        s.create_group("pending", "g", GroupStart::After(StreamId::MIN), false)
            .await
            .unwrap();
        let options = ReadGroupOptions {
            count: Some(1_000_000),
            ..ReadGroupOptions::default()
        };
        s.read_group("g", "hog", &[("pending", GroupRead::New)], options)
            .await
            .unwrap();
    });
    let mut group = c.benchmark_group("backlog");
    group.throughput(Throughput::Elements(BATCH as u64));
    // The three are compared with each other: more and longer samples keep
    // the machine's noise (and the occasional snapshot) out of the medians.
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(10));
    for stream in ["small", "large", "pending"] {
        let name = match stream {
            "small" => "1k_waiting",
            "large" => "10m_waiting",
            _ => "1m_pending",
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        if stream != "large" {
                            // Keep the same number waiting: add what is read (untimed).
                            fill(&s, stream, BATCH).await;
                        } else if lag(&s, stream, "g").await < BATCH as u64 {
                            s.set_group_id(stream, "g", GroupStart::After(StreamId::MIN))
                                .await
                                .unwrap();
                        }
                        let start = Instant::now();
                        read_ack(&s, stream, "g", "worker", BATCH).await;
                        timed += start.elapsed();
                    }
                    timed
                })
            })
        });
    }
    group.finish();
}

/// Builds a stream whose group has 1 M pending entries; returns its directory
/// and the heap bytes each pending entry costs.
fn build_pending(dir: &Path) -> (PathBuf, f64) {
    let path = dir.join("recovery");
    let rt = runtime();
    let s = engine(&path);
    let per_entry = rt.block_on(async {
        fill(&s, "s", 1_000_000).await;
        s.create_group("s", "g", GroupStart::After(StreamId::MIN), false)
            .await
            .unwrap();
        let before = HEAP.load(Ordering::SeqCst);
        let mut delivered = 0;
        while delivered < 1_000_000 {
            let options = ReadGroupOptions {
                count: Some(10_000),
                ..ReadGroupOptions::default()
            };
            let reply = s
                .read_group("g", "c", &[("s", GroupRead::New)], options)
                .await
                .unwrap();
            delivered += reply[0].1.len();
        }
        (HEAP.load(Ordering::SeqCst) - before) as f64 / delivered as f64
    });
    drop(s);
    (path, per_entry)
}

fn recovery(c: &mut Criterion, path: &Path) {
    let rt = runtime();
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.bench_function("1m_pending", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let s = engine(path);
                let summary = rt.block_on(s.pending_summary("s", "g")).unwrap();
                total += start.elapsed();
                assert_eq!(summary.count, 1_000_000);
                let sample = rt
                    .block_on(s.pending("s", "g", &PendingQuery::first(1)))
                    .unwrap();
                assert_eq!(sample.len(), 1);
            }
            total
        })
    });
    group.finish();
}

fn summary(per_pending_entry: f64) {
    println!("\n## Streams and groups, segment log, fsync never (median)\n");
    let rows = [
        ("add one at a time", rate("add/single", 1.0)),
        (
            "add in batches of 1024",
            rate("add/batch_1024", BATCH as f64),
        ),
        (
            "read + ack, 1 consumer",
            rate("read_ack/1_consumers", BATCH as f64),
        ),
        (
            "read + ack, 16 consumers",
            rate("read_ack/16_consumers", BATCH as f64),
        ),
        ("claim, 100 per call", rate("claim/batch_100", 100.0)),
    ];
    for (name, value) in rows {
        if let Some(value) = value {
            println!("| {name} | {value:.0} entries/s |");
        }
    }
    let small = rate("backlog/1k_waiting", BATCH as f64);
    for (name, id) in [
        ("10 M waiting", "backlog/10m_waiting"),
        ("1 M pending", "backlog/1m_pending"),
    ] {
        if let (Some(small), Some(large)) = (small, rate(id, BATCH as f64)) {
            println!(
                "| read + ack with {name} vs 1 k waiting | {large:.0} vs {small:.0} entries/s ({:.2}x) |",
                large / small
            );
        }
    }
    if let Some(recovery) = median("recovery/1m_pending") {
        println!(
            "| opening a group with 1 M pending entries | {:.0} ms |",
            recovery.as_secs_f64() * 1e3
        );
    }
    println!("| heap per pending entry | {per_pending_entry:.1} bytes |");
}

fn main() {
    let temp = tempfile::tempdir().unwrap();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    add(&mut c, temp.path());
    add_beside_blocked_readers(&mut c, temp.path());
    read_and_ack(&mut c, temp.path());
    claim(&mut c, temp.path());
    let (pending_dir, per_pending_entry) = build_pending(temp.path());
    recovery(&mut c, &pending_dir);
    backlog(&mut c, temp.path());
    c.final_summary();
    summary(per_pending_entry);
}
