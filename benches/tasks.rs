//! No-op tasks end to end: submit, fetch, run, record the final state,
//! acknowledge; an iteration ends when every task it submitted has its
//! result.
//!
//! - `noop_<backend>/c<N>_<producers>`: 4096 tasks per iteration, through a
//!   worker of concurrency 1, 64 or 1024, submitted by one producer one at
//!   a time (`p1`), by 64 concurrent producers one at a time each (`p64`),
//!   or by one producer in one `submit_many` call (`batch`); and the
//!   sustained rate of one producer that keeps 4 `submit_many` calls of
//!   1024 tasks in flight, awaiting the oldest's results before it submits
//!   more, over all the iterations of a sample at once (`window`: no pause
//!   while one iteration's last tasks run and the next's are encoded);
//! - submit-to-start latency at light load (one task at a time) and how
//!   late delayed tasks start (after their time, or after their submission
//!   returned if it took longer than their delay), as percentiles, with the
//!   fsyncs meanwhile, and the disk's own latency for small durable writes
//!   with nothing else running;
//! - the sustained rate with 1 k and with 1 M tasks queued ahead;
//! - `floor/segment_never`: the engine's share, the records no-op tasks
//!   write at best (each its queue entry, the group's delivery and
//!   acknowledgement; per 1024 tasks one `queued` event and one `succeeded`
//!   event, as for a submission of 1024 whose tasks all start in the same
//!   millisecond; a run that ends at its first poll has no `running`
//!   event), taken from the segment `never` run and written straight
//!   through `Streams` in batches of 1024, with no task layer.
//!
//! Backends: memory, the segment log with fsync `never` and `batch`, and,
//! with `--features redis`, a `redis-server` from PATH without persistence.
//! Run with `cargo bench --bench tasks` (`ORCASTRA_BENCH_QUICK=1` runs only
//! concurrency 64 and 1024 with 64 producers and in batches).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use orcastra::log::{FsyncPolicy, LogOptions};
use orcastra::prelude::*;
use orcastra::streams::{Bound, Fields, GroupRead, GroupStart, ReadGroupOptions, Streams};
use orcastra::{Orcastra, SubmitOptions, TaskHandle};

mod common;
use common::rate;

#[cfg(feature = "redis")]
#[path = "../tests/common/redis_server.rs"]
mod redis_server;

#[orca_task]
async fn noop() {}

/// When the process started, for timestamps that travel as arguments.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
/// Nanoseconds from submit to start, one per `stamp` run.
static DELAYS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static STARTED: AtomicU64 = AtomicU64::new(0);

fn now_ns() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

/// Records how long after `due_ns` it started.
#[orca_task]
async fn stamp(due_ns: u64) {
    DELAYS.lock().unwrap().push(now_ns().saturating_sub(due_ns));
    STARTED.fetch_add(1, Ordering::SeqCst);
}

const TASKS: usize = 4096;
const PRODUCERS: usize = 64;

struct Backend {
    name: &'static str,
    url: String,
    fsync: FsyncPolicy,
}

fn main() {
    let temp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let quick = std::env::var_os("ORCASTRA_BENCH_QUICK").is_some();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let dir = |name: &str| temp.path().join(name).display().to_string();
    #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
    let mut backends = vec![
        Backend {
            name: "memory",
            url: "memory://".into(),
            fsync: FsyncPolicy::Never,
        },
        Backend {
            name: "segment_never",
            url: dir("never"),
            fsync: FsyncPolicy::Never,
        },
        Backend {
            name: "segment_batch",
            url: dir("batch"),
            fsync: FsyncPolicy::Batch,
        },
    ];
    #[cfg(feature = "redis")]
    let server = redis_server::RedisServer::start();
    #[cfg(feature = "redis")]
    backends.push(Backend {
        name: "redis",
        url: server.url(),
        fsync: FsyncPolicy::Never,
    });
    let concurrencies: &[usize] = if quick { &[64, 1024] } else { &[1, 64, 1024] };
    let producers: &[&str] = if quick {
        &["p64", "batch"]
    } else {
        &["p1", "p64", "batch", "window"]
    };
    let mut latencies = Vec::new();
    for backend in &backends {
        let options = LogOptions::default().fsync(backend.fsync);
        let orca = rt
            .block_on(Orcastra::open_with(&backend.url, options))
            .unwrap();
        let mut group = c.benchmark_group(format!("noop_{}", backend.name));
        group.throughput(Throughput::Elements(TASKS as u64));
        for &concurrency in concurrencies {
            let worker = rt
                .block_on(
                    orca.worker()
                        .concurrency(concurrency)
                        .register(noop::task())
                        .start(),
                )
                .unwrap();
            for &mode in producers {
                group.bench_function(format!("c{concurrency}_{mode}"), |b| {
                    b.iter_custom(|iters| {
                        rt.block_on(async {
                            let start = Instant::now();
                            if mode == "window" {
                                run_window(&orca, iters as usize * TASKS).await;
                            } else {
                                for _ in 0..iters {
                                    run_noops(&orca, mode).await;
                                }
                            }
                            start.elapsed()
                        })
                    })
                });
            }
            rt.block_on(worker.stop());
        }
        group.finish();
        if backend.name == "segment_never" {
            let records = rt.block_on(records_of_a_task(&orca));
            c.benchmark_group("floor")
                .throughput(Throughput::Elements(TASKS as u64))
                .bench_function("segment_never", |b| {
                    b.iter_custom(|iters| {
                        rt.block_on(write_records(&orca, &records, iters as usize * TASKS))
                    })
                });
        }
        if !quick {
            latencies.push((backend.name, rt.block_on(latency(&orca))));
        }
    }
    let disk = (!quick).then(|| bare_disk(&temp.path().join("bare")));
    let backlog = (!quick).then(|| rt.block_on(backlog_ratio(&dir("backlog"))));
    c.final_summary();

    println!();
    println!("## No-op tasks end to end, tasks/s (median; {TASKS} per iteration)");
    println!();
    let header: Vec<String> = backends.iter().map(|b| b.name.to_string()).collect();
    println!("| concurrency | producers | {} |", header.join(" | "));
    println!("|---|---|{}", "---:|".repeat(backends.len()));
    for &concurrency in concurrencies {
        for &mode in producers {
            let rates: Vec<String> = backends
                .iter()
                .map(|b| {
                    rate(
                        &format!("noop_{}/c{concurrency}_{mode}", b.name),
                        TASKS as f64,
                    )
                    .map_or("–".into(), |r| format!("{r:.0}"))
                })
                .collect();
            println!("| {concurrency} | {mode} | {} |", rates.join(" | "));
        }
    }
    if let (Some(floor), Some(tasks)) = (
        rate("floor/segment_never", TASKS as f64),
        rate("noop_segment_never/c1024_batch", TASKS as f64),
    ) {
        println!();
        println!("## The task layer against the engine's floor (segment never)");
        println!();
        println!(
            "no-op tasks (c1024 batch) / their records through `Streams` alone: \
             {tasks:.0}/s / {floor:.0}/s = {:.2}x",
            tasks / floor
        );
    }
    let (Some(backlog), Some(disk)) = (backlog, disk) else {
        return;
    };
    println!();
    println!("## Latency at light load (µs; worker concurrency 64)");
    println!();
    println!(
        "| backend | submit→start p50 | p99 | fsync p50 (ms) | delayed: late by p50 | p99 | max | slowest fsync meanwhile (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, l) in &latencies {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            l.start[0],
            l.start[1],
            bucket_ms(l.fsync_p50),
            l.late[0],
            l.late[1],
            l.late[2],
            bucket_ms(l.slowest_fsync)
        );
    }
    println!();
    println!(
        "The disk alone, nothing else running: a {BARE_BYTES}-byte write and `fdatasync` every \
         {BARE_PAUSE:?} for {BARE_TIME:?} in a file next to the logs: p50 {:.2} ms, p99 {:.2} ms, \
         max {:.1} ms",
        disk[0], disk[1], disk[2]
    );
    println!();
    println!("## Backlog (segment never, concurrency 64, {BACKLOG_PAIRS} pairs of runs)");
    println!();
    let (ratio, big, small) = backlog;
    println!(
        "rate with 1 M queued ahead / with 1 k queued ahead: {ratio:.2}x (median of the pairs' ratios; \
         median rates {big:.0}/s and {small:.0}/s)"
    );
}

/// Submits `TASKS` no-op tasks the way `mode` says and waits for them all.
async fn run_noops(orca: &Orcastra, mode: &str) {
    let handles = match mode {
        "p1" => {
            let mut handles = Vec::with_capacity(TASKS);
            for _ in 0..TASKS {
                handles.push(noop::submit(orca).await.unwrap());
            }
            handles
        }
        "p64" => {
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|_| {
                    let orca = orca.clone();
                    tokio::spawn(async move {
                        let mut handles = Vec::with_capacity(TASKS / PRODUCERS);
                        for _ in 0..TASKS / PRODUCERS {
                            handles.push(noop::submit(&orca).await.unwrap());
                        }
                        handles
                    })
                })
                .collect();
            let mut handles = Vec::with_capacity(TASKS);
            for producer in producers {
                handles.extend(producer.await.unwrap());
            }
            handles
        }
        _ => orca
            .submit_many_with(
                noop::task(),
                (0..TASKS).map(|_| []),
                SubmitOptions::default(),
            )
            .await
            .unwrap(),
    };
    await_all(handles).await;
}

/// Runs `tasks` no-op tasks (a multiple of `CHUNK`) through one producer
/// that keeps `WINDOW` submissions in flight.
async fn run_window(orca: &Orcastra, tasks: usize) {
    const CHUNK: usize = 1024;
    const WINDOW: usize = 4;
    let mut in_flight = VecDeque::with_capacity(WINDOW);
    for _ in 0..tasks / CHUNK {
        if in_flight.len() == WINDOW {
            await_all(in_flight.pop_front().expect("a full window")).await;
        }
        let chunk = orca
            .submit_many_with(
                noop::task(),
                (0..CHUNK).map(|_| []),
                SubmitOptions::default(),
            )
            .await
            .unwrap();
        in_flight.push_back(chunk);
    }
    for chunk in in_flight {
        await_all(chunk).await;
    }
}

async fn await_all(handles: Vec<TaskHandle<()>>) {
    for handle in handles {
        handle.result().await.unwrap().unwrap();
    }
}

/// Microseconds: submit→start p50 and p99; delayed tasks' lateness p50,
/// p99 and max. And the fsyncs meanwhile, as the bounds of their latency
/// buckets (`None` without fsyncs): the median over submit→start, since a
/// task starts after its queue entry's fsync under `batch`; the slowest
/// while delayed tasks were submitted and waited, since a submission
/// returns once durable (a delayed task's move to its queue waits for no
/// fsync).
struct Latency {
    start: [u64; 2],
    late: [u64; 3],
    fsync_p50: Option<f64>,
    slowest_fsync: Option<f64>,
}

/// How many fsyncs of this process fell in each latency bucket so far.
fn fsyncs() -> Vec<(f64, u64)> {
    orcastra::log::FsyncLatency::get().buckets()
}

/// The bound of the bucket that holds quantile `q` of the fsyncs since
/// `before`.
fn fsync_quantile(before: &[(f64, u64)], q: f64) -> Option<f64> {
    let since: Vec<(f64, u64)> = (fsyncs().into_iter().zip(before))
        .map(|((bound, now), (_, then))| (bound, now - then))
        .collect();
    let total: u64 = since.iter().map(|&(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let rank = (total as f64 * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    since.into_iter().find_map(|(bound, n)| {
        seen += n;
        (seen >= rank).then_some(bound)
    })
}

/// A bucket bound in milliseconds, as a table shows it.
fn bucket_ms(bound: Option<f64>) -> String {
    match bound {
        None => "–".into(),
        Some(seconds) if seconds.is_infinite() => "> 1000".into(),
        Some(seconds) => format!("≤ {}", (seconds * 100_000.0).round() / 100.0),
    }
}

const BARE_BYTES: usize = 100;
const BARE_PAUSE: Duration = Duration::from_millis(2);
const BARE_TIME: Duration = Duration::from_secs(10);

/// Milliseconds at p50, p99 and max of small writes made durable one at a
/// time in a file of its own, its blocks written ahead as a segment's are:
/// how long the disk itself takes, to tell its stalls from the queue's.
fn bare_disk(path: &std::path::Path) -> [f64; 3] {
    use std::os::unix::fs::FileExt;
    const SIZE: usize = 1 << 20;
    let file = std::fs::File::create(path).unwrap();
    file.write_all_at(&vec![0; SIZE], 0).unwrap();
    file.sync_all().unwrap();
    let mut nanos = Vec::new();
    let end = Instant::now() + BARE_TIME;
    for at in (0..).map(|i| (i * BARE_BYTES) % (SIZE - BARE_BYTES)) {
        if Instant::now() >= end {
            break;
        }
        file.write_all_at(&[1; BARE_BYTES], at as u64).unwrap();
        let started = Instant::now();
        file.sync_data().unwrap();
        nanos.push(started.elapsed().as_nanos() as u64);
        std::thread::sleep(BARE_PAUSE);
    }
    let quantiles = percentiles(&mut nanos, &[0.5, 0.99, 1.0]);
    std::array::from_fn(|i| quantiles[i] as f64 / 1000.0)
}

const SAMPLES: usize = 2000;
const DELAYED_SAMPLES: usize = 200;

async fn latency(orca: &Orcastra) -> Latency {
    let worker = orca
        .worker()
        .concurrency(64)
        .register(stamp::task())
        .start()
        .await
        .unwrap();
    DELAYS.lock().unwrap().clear();
    let before = fsyncs();
    for _ in 0..SAMPLES {
        let started = STARTED.load(Ordering::SeqCst);
        let handle = stamp::submit(orca, now_ns()).await.unwrap();
        handle.result().await.unwrap().unwrap();
        assert_eq!(STARTED.load(Ordering::SeqCst), started + 1);
    }
    let start = percentiles(&mut DELAYS.lock().unwrap(), &[0.5, 0.99]);
    let fsync_p50 = fsync_quantile(&before, 0.5);
    DELAYS.lock().unwrap().clear();
    let before = fsyncs();
    let delay = Duration::from_millis(20);
    for _ in 0..DELAYED_SAMPLES {
        let due = now_ns() + delay.as_nanos() as u64;
        let later = SubmitOptions {
            delay: Some(delay),
            ..Default::default()
        };
        let handle = orca
            .submit_with(stamp::task(), (due,), later)
            .await
            .unwrap();
        let accepted = now_ns();
        handle.result().await.unwrap().unwrap();
        // A submission whose fsync outlasts the delay is accepted after the
        // task's time: it can start no sooner, and is late from then.
        let mut delays = DELAYS.lock().unwrap();
        let late = delays.last_mut().expect("it ran");
        *late = (due + *late).saturating_sub(due.max(accepted));
    }
    let late = percentiles(&mut DELAYS.lock().unwrap(), &[0.5, 0.99, 1.0]);
    worker.stop().await;
    Latency {
        start: [start[0], start[1]],
        late: [late[0], late[1], late[2]],
        fsync_p50,
        slowest_fsync: fsync_quantile(&before, 1.0),
    }
}

/// Microseconds at each quantile.
fn percentiles(nanos: &mut [u64], quantiles: &[f64]) -> Vec<u64> {
    nanos.sort_unstable();
    quantiles
        .iter()
        .map(|q| {
            let i = ((nanos.len() - 1) as f64 * q).round() as usize;
            nanos[i] / 1000
        })
        .collect()
}

/// Pairs of backlog runs, 1 k and 1 M queued ahead.
const BACKLOG_PAIRS: usize = 5;

/// Tasks/s with 1 M queued ahead against 1 k: the median of the ratios of
/// `BACKLOG_PAIRS` pairs of runs one right after the other, which the
/// machine's drift over the minute they take does not skew, the order
/// alternating within pairs; with the median rates of each.
async fn backlog_ratio(dir: &str) -> (f64, f64, f64) {
    let orca = Orcastra::open_with(dir, LogOptions::default().fsync(FsyncPolicy::Never))
        .await
        .unwrap();
    let (mut ratios, mut big, mut small) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..BACKLOG_PAIRS {
        let (b, s) = if pair % 2 == 0 {
            let s = rate_with_backlog(&orca, 1 << 10).await;
            (rate_with_backlog(&orca, 1 << 20).await, s)
        } else {
            let b = rate_with_backlog(&orca, 1 << 20).await;
            (b, rate_with_backlog(&orca, 1 << 10).await)
        };
        ratios.push(b / s);
        big.push(b);
        small.push(s);
    }
    (median(ratios), median(big), median(small))
}

/// The sustained rate of a worker of concurrency 64 while `backlog` tasks
/// wait ahead of each new one: `backlog` and one chunk more are queued
/// before it starts, and one producer submits a chunk whenever a chunk of
/// the oldest has finished, so `backlog` tasks are left while it submits
/// (the queue never runs dry, not even with a small backlog) and both runs
/// do the same work per task (submit, run, await). Timed after a warm-up,
/// over `MEASURED`.
async fn rate_with_backlog(orca: &Orcastra, backlog: usize) -> f64 {
    const CHUNK: usize = 1 << 10;
    const WARM_UP: usize = 20 * CHUNK;
    const MEASURED: usize = 200 * CHUNK;
    let submit = || {
        orca.submit_many_with(
            noop::task(),
            (0..CHUNK).map(|_| []),
            SubmitOptions::default(),
        )
    };
    let mut queued = VecDeque::with_capacity(backlog / CHUNK + 1);
    for _ in 0..backlog / CHUNK + 1 {
        queued.push_back(submit().await.unwrap());
    }
    let worker = orca
        .worker()
        .concurrency(64)
        .register(noop::task())
        .start()
        .await
        .unwrap();
    let mut start = Instant::now();
    for done in 0..(WARM_UP + MEASURED) / CHUNK {
        if done * CHUNK == WARM_UP {
            start = Instant::now();
        }
        await_all(queued.pop_front().expect("a backlog")).await;
        queued.push_back(submit().await.unwrap());
    }
    let elapsed = start.elapsed();
    for chunk in queued {
        await_all(chunk).await;
    }
    worker.stop().await;
    MEASURED as f64 / elapsed.as_secs_f64()
}

/// What one no-op task wrote: its queue entry's fields and those of its
/// `queued` and `succeeded` events.
struct TaskRecords {
    entry: Fields,
    states: [Fields; 2],
}

/// Runs one no-op task on `orca` and reads its records back (again, in
/// the unlikely case that housekeeping trimmed its entry meanwhile).
async fn records_of_a_task(orca: &Orcastra) -> TaskRecords {
    let worker = orca.worker().register(noop::task()).start().await.unwrap();
    let streams = orca.streams();
    let newest = |stream: &'static str| async move {
        streams
            .rev_range(stream, Bound::Max, Bound::Min, Some(16))
            .await
            .unwrap()
    };
    let records = loop {
        let handle = noop::submit(orca).await.unwrap();
        handle.result().await.unwrap().unwrap();
        let id = handle.id().to_string();
        let events = newest("orca:states").await;
        let event = |state: &str| {
            let has = |fields: &Fields, name: &[u8], value: &[u8]| {
                fields
                    .iter()
                    .any(|(f, v)| &f[..] == name && &v[..] == value)
            };
            let event = events.iter().find(|event| {
                has(&event.fields, b"id", id.as_bytes())
                    && has(&event.fields, b"state", state.as_bytes())
            });
            event.map(|event| event.fields.clone())
        };
        let entry = newest("orca:queue:default").await.into_iter().next();
        if let (Some(entry), Some(queued), Some(succeeded)) =
            (entry, event("queued"), event("succeeded"))
        {
            break TaskRecords {
                entry: entry.fields,
                states: [queued, succeeded],
            };
        }
    };
    worker.stop().await;
    records
}

/// Writes the records of `tasks` no-op tasks (a multiple of 1024) the way
/// the task layer does for submissions of 1024 at best, with no task
/// layer: add the entries and the one `queued` event that names them all,
/// read them as the workers' group, add one `succeeded` event for them all
/// (as for tasks that all started in the same millisecond), acknowledge.
async fn write_records(orca: &Orcastra, records: &TaskRecords, tasks: usize) -> Duration {
    const BATCH: usize = 1024;
    const QUEUE: &str = "floor:queue";
    const STATES: &str = "floor:states";
    let streams = orca.streams();
    // Exists from the first call on.
    let _ = streams
        .create_group(QUEUE, "floor", GroupStart::After(Default::default()), true)
        .await;
    let batch = |fields: &Fields| vec![fields.clone(); BATCH];
    // An event for the batch, as the task layer writes for a submission of
    // many, and for the ends of tasks that started in the same millisecond.
    let for_batch = |fields: &Fields| -> Fields {
        fields
            .iter()
            .map(|(name, value)| match &name[..] {
                b"id" => {
                    let ids = vec![&value[..]; BATCH].join(&b","[..]);
                    (Bytes::from_static(b"ids"), Bytes::from(ids))
                }
                _ => (name.clone(), value.clone()),
            })
            .collect()
    };
    let [queued, succeeded] = records.states.each_ref().map(for_batch);
    let start = Instant::now();
    for _ in 0..tasks / BATCH {
        streams
            .add_batch(QUEUE, batch(&records.entry))
            .await
            .unwrap();
        streams
            .add_batch(STATES, vec![queued.clone()])
            .await
            .unwrap();
        let options = ReadGroupOptions {
            count: Some(BATCH),
            ..Default::default()
        };
        let read = streams
            .read_group("floor", "c", &[(QUEUE, GroupRead::New)], options)
            .await
            .unwrap();
        let ids: Vec<_> = read
            .into_iter()
            .flat_map(|(_, e)| e)
            .map(|e| e.id)
            .collect();
        assert_eq!(ids.len(), BATCH);
        streams
            .add_batch(STATES, vec![succeeded.clone()])
            .await
            .unwrap();
        streams.ack(QUEUE, "floor", &ids).await.unwrap();
    }
    start.elapsed()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
