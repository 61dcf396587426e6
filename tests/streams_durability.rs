//! Streams and groups survive closing and reopening, on the segment and text
//! logs; recovery replays only the last snapshot and what follows it; and a
//! proptest model checks groups through random operations and restarts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use orcastra::StreamId;
use orcastra::log::storage::{SimStorage, Storage};
use orcastra::log::{FsyncPolicy, LogOptions, SegmentLog, TextLog};
use orcastra::streams::{
    AddOptions, AutoClaim, Bound, ClaimOptions, Clock, Embedded, FileLog, FileStore, GroupRead,
    GroupStart, ManualClock, PendingQuery, ReadGroupOptions, StreamError, Streams, Trim,
};
use proptest::prelude::*;

mod common;
use common::streams::{history, ms, read_new};

fn id(ms: u64) -> StreamId {
    StreamId::new(ms, 0)
}

/// Streams in `dir` with small segments, so that snapshots soon free
/// journal segments.
fn open<L: FileLog>(
    dir: &Path,
    clock: &Arc<ManualClock>,
    snapshot_bytes: u64,
) -> Embedded<FileStore<L>> {
    open_with(dir, LogOptions::default(), clock, snapshot_bytes)
}

fn open_with<L: FileLog>(
    dir: &Path,
    options: LogOptions,
    clock: &Arc<ManualClock>,
    snapshot_bytes: u64,
) -> Embedded<FileStore<L>> {
    let store = FileStore::<L>::new(dir, options.segment_bytes(64 << 10));
    Embedded::open(store)
        .with_clock(Arc::clone(clock))
        .with_snapshot_bytes(snapshot_bytes)
}

async fn add(s: &impl Streams, ms: u64) {
    let fields = vec![(Bytes::from_static(b"n"), Bytes::from(ms.to_string()))];
    s.add("s", fields, AddOptions::with_id(id(ms)))
        .await
        .unwrap();
}

/// Everything about stream `s` that does not depend on the time of reading.
async fn describe(s: &impl Streams) -> String {
    let mut out = String::new();
    let info = s.info("s").await.unwrap();
    let _ = writeln!(
        out,
        "len {} last {} maxdel {} added {} first {}",
        info.length,
        info.last_generated_id,
        info.max_deleted_entry_id,
        info.entries_added,
        info.recorded_first_entry_id
    );
    let entries = s.range("s", Bound::Min, Bound::Max, None).await.unwrap();
    let _ = writeln!(
        out,
        "entries {:?}",
        entries.iter().map(|e| e.id.ms).collect::<Vec<_>>()
    );
    for group in s.groups("s").await.unwrap() {
        let _ = writeln!(out, "{group:?}");
        for consumer in s.consumers("s", &group.name).await.unwrap() {
            let _ = writeln!(
                out,
                "  consumer {} pending {}",
                consumer.name, consumer.pending
            );
        }
        for pending in s
            .pending("s", &group.name, &PendingQuery::first(usize::MAX))
            .await
            .unwrap()
        {
            let _ = writeln!(
                out,
                "  {} {} {} idle {:?}",
                pending.id, pending.consumer, pending.deliveries, pending.idle
            );
        }
    }
    out
}

/// A bit of everything: adds, deletes, a trim, XSETID, two groups with
/// pending entries, claims, acks, a deleted consumer and a NOACK read.
async fn busy_history(s: &impl Streams, clock: &ManualClock) {
    for ms in 1..=40 {
        add(s, ms).await;
    }
    s.delete("s", &[id(5), id(6)]).await.unwrap();
    s.trim("s", Trim::min_id(id(4))).await.unwrap();
    s.create_group("s", "g", GroupStart::After(StreamId::MIN), false)
        .await
        .unwrap();
    s.create_group("s", "h", GroupStart::After(id(20)), false)
        .await
        .unwrap();
    read_new(s, "g", "alice", Some(10)).await;
    clock.advance(Duration::from_secs(5));
    read_new(s, "g", "bob", Some(10)).await;
    s.ack("s", "g", &[id(4), id(8), id(30)]).await.unwrap();
    s.claim(
        "s",
        "g",
        "carol",
        Duration::from_secs(1),
        &[id(9), id(10), id(20)],
        ClaimOptions::default(),
    )
    .await
    .unwrap();
    s.create_consumer("s", "g", "dave").await.unwrap();
    s.create_consumer("s", "g", "erin").await.unwrap();
    s.delete_consumer("s", "g", "erin").await.unwrap();
    let noack = ReadGroupOptions {
        count: Some(3),
        no_ack: true,
        ..ReadGroupOptions::default()
    };
    s.read_group("h", "frank", &[("s", GroupRead::New)], noack)
        .await
        .unwrap();
    read_new(s, "h", "gina", Some(4)).await;
    s.set_group_id("s", "h", GroupStart::After(id(22)))
        .await
        .unwrap();
    s.set_last_id("s", id(100), None, None).await.unwrap();
    clock.advance(Duration::from_secs(60));
}

async fn everything_survives_reopening<L: FileLog>() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let before = {
        let s = open::<L>(dir.path(), &clock, 8 << 20);
        busy_history(&s, &clock).await;
        describe(&s).await
    };
    let s = open::<L>(dir.path(), &clock, 8 << 20);
    assert_eq!(describe(&s).await, before);
    // And it goes on: the next read continues after the cursor.
    assert_eq!(ms(&read_new(&s, "g", "alice", Some(2)).await), vec![26, 27]);
}

#[tokio::test]
async fn everything_survives_reopening_segment_logs() {
    everything_survives_reopening::<SegmentLog>().await;
}

#[tokio::test]
async fn everything_survives_reopening_text_logs() {
    everything_survives_reopening::<TextLog>().await;
}

/// DEL and FLUSHDB: a deleted stream stays deleted after reopening, its
/// name can be used again for a new, empty stream, and a deletion cut
/// short by a crash (the marker written, files left) counts as done.
async fn deleted_streams_stay_deleted<L: FileLog>() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    {
        let s = open::<L>(dir.path(), &clock, 1 << 20);
        for name in ["a", "b/c", "d"] {
            s.add(name, vec![("n".into(), "1".into())], AddOptions::default())
                .await
                .unwrap();
        }
        s.create_group("a", "g", GroupStart::End, false)
            .await
            .unwrap();
        assert!(s.remove("a").unwrap());
        assert!(!s.remove("a").unwrap());
        assert_eq!(s.names().unwrap(), ["b/c", "d"]);
    }
    // A deletion interrupted after its marker was written.
    let d_dir = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.file_name().unwrap() == "s-d")
        .unwrap();
    std::fs::write(d_dir.join("deleted"), b"").unwrap();

    let s = open::<L>(dir.path(), &clock, 1 << 20);
    assert_eq!(s.names().unwrap(), ["b/c"]);
    assert!(!s.exists("a").unwrap() && !s.exists("d").unwrap());
    assert_eq!(s.len("b/c").await.unwrap(), 1);
    // Used again, the names are new, empty streams without groups.
    add(&s, 5).await;
    for name in ["a", "d"] {
        s.add(name, vec![("n".into(), "2".into())], AddOptions::default())
            .await
            .unwrap();
        assert_eq!(s.len(name).await.unwrap(), 1);
        assert_eq!(s.info(name).await.unwrap().entries_added, 1);
        assert!(s.groups(name).await.unwrap().is_empty());
    }
    assert_eq!(s.names().unwrap(), ["a", "b/c", "d", "s"]);
}

#[tokio::test]
async fn deleted_streams_stay_deleted_segment_logs() {
    deleted_streams_stay_deleted::<SegmentLog>().await;
}

#[tokio::test]
async fn deleted_streams_stay_deleted_text_logs() {
    deleted_streams_stay_deleted::<TextLog>().await;
}

#[tokio::test]
async fn snapshots_keep_the_journal_short() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let before = {
        let s = open::<SegmentLog>(dir.path(), &clock, 4096);
        busy_history(&s, &clock).await;
        // Many group events: each read and ack is journaled.
        for ms in 101..=3000 {
            add(&s, ms).await;
        }
        for _ in 0..300 {
            let got = ms(&read_new(&s, "g", "alice", Some(10)).await);
            let ids: Vec<_> = got.iter().map(|&ms| id(ms)).collect();
            s.ack("s", "g", &ids[..ids.len() / 2]).await.unwrap();
        }
        describe(&s).await
    };
    // The journal's early segments are gone: recovery does not replay them.
    let journal = dir.path().join("s-s").join("journal");
    let first_segment = std::fs::read_dir(&journal)
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .into_string()
                .unwrap()
                .strip_suffix(".log")
                .map(|b| b.parse::<u64>().unwrap())
        })
        .min()
        .unwrap();
    assert!(
        first_segment > 0,
        "no journal segment was dropped after snapshots"
    );
    let s = open::<SegmentLog>(dir.path(), &clock, 4096);
    assert_eq!(describe(&s).await, before);
}

/// Step `step` of a run of group reads and acknowledgements (the journal
/// only): even steps read 10 new entries, odd ones acknowledge half of them.
async fn group_step(
    s: &impl Streams,
    step: usize,
    read: &mut Vec<StreamId>,
) -> Result<(), StreamError> {
    if step.is_multiple_of(2) {
        let options = ReadGroupOptions {
            count: Some(10),
            ..ReadGroupOptions::default()
        };
        let got = s
            .read_group("g", "alice", &[("s", GroupRead::New)], options)
            .await?;
        *read = got
            .into_iter()
            .flat_map(|(_, entries)| entries)
            .map(|e| e.id)
            .collect();
    } else {
        s.ack("s", "g", &read[..read.len() / 2]).await?;
    }
    Ok(())
}

/// The journal segments a snapshot makes unneeded go only once the
/// snapshot is durable. The step that writes a snapshot (and, done, drops
/// a segment) has its fsync fail, and the power goes before anything else
/// is synced: reopened, the stream is as that step found it (removing the
/// segments at once, the snapshot was lost with the power and what the
/// segments said with them).
#[tokio::test]
async fn a_snapshot_that_never_became_durable_leaves_the_journal_whole() {
    const STEPS: usize = 400;
    let root = Path::new("/data");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let journal = root.join("s-s").join("journal");
    let first_segment = |sim: &SimStorage| {
        let names = sim.list(&journal).unwrap();
        names
            .iter()
            .filter_map(|name| name.to_str()?.strip_suffix(".log")?.parse::<u64>().ok())
            .min()
    };
    let start = |sim: &SimStorage| {
        let options = LogOptions::default()
            .fsync(FsyncPolicy::Batch)
            .storage(sim.clone());
        open_with::<SegmentLog>(root, options, &clock, 4096)
    };
    let prepare = async |s: &Embedded<FileStore<SegmentLog>>| {
        for ms in 1..=3000 {
            add(s, ms).await;
        }
        s.create_group("s", "g", GroupStart::After(StreamId::MIN), false)
            .await
            .unwrap();
    };
    // Without faults: the steps after which a journal segment was gone.
    let dropping = {
        let sim = SimStorage::new(1);
        let s = start(&sim);
        prepare(&s).await;
        let (mut read, mut steps) = (Vec::new(), Vec::new());
        let mut first = first_segment(&sim);
        for step in 0..STEPS {
            group_step(&s, step, &mut read).await.unwrap();
            let now = first_segment(&sim);
            if now != first {
                steps.push(step);
                first = now;
            }
        }
        steps
    };
    assert!(
        dropping.len() >= 2,
        "segments dropped after steps {dropping:?}"
    );
    for &failing in &dropping[..2] {
        let sim = SimStorage::new(failing as u64);
        let s = start(&sim);
        prepare(&s).await;
        let mut read = Vec::new();
        for step in 0..failing {
            group_step(&s, step, &mut read).await.unwrap();
        }
        let before = describe(&s).await;
        sim.fail_next_sync(io::ErrorKind::Other);
        assert!(group_step(&s, failing, &mut read).await.is_err());
        drop(s);
        sim.power_loss();
        assert_eq!(describe(&start(&sim)).await, before, "step {failing}");
    }
}

/// A delivery read with `unsynced_delivery` is written before the read
/// returns, though not synced: a crash of the process right after the read
/// keeps it (a worker that a task kills at once still counts that
/// delivery), and a power loss may forget it but never the entry, which is
/// then delivered again as new.
#[tokio::test]
async fn an_unsynced_delivery_survives_a_crash_but_maybe_not_a_power_loss() {
    let root = Path::new("/data");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let start = |sim: &SimStorage| {
        let options = LogOptions::default()
            .fsync(FsyncPolicy::Batch)
            .storage(sim.clone());
        open_with::<SegmentLog>(root, options, &clock, 1 << 20)
    };
    let unsynced = ReadGroupOptions {
        unsynced_delivery: true,
        ..ReadGroupOptions::default()
    };
    let (mut kept, mut forgotten) = (0, 0);
    for seed in 0..40 {
        let sim = SimStorage::new(seed);
        let s = start(&sim);
        add(&s, 1).await;
        s.create_group("s", "g", GroupStart::After(StreamId::MIN), false)
            .await
            .unwrap();
        let read = s
            .read_group("g", "c", &[("s", GroupRead::New)], unsynced)
            .await
            .unwrap();
        assert_eq!(ms(&read[0].1), [1]);
        let power_lost = seed % 2 == 1;
        if power_lost {
            sim.power_loss();
        } else {
            sim.process_crash();
        }
        drop(s);
        let s = start(&sim);
        let pending = s.pending("s", "g", &PendingQuery::first(10)).await.unwrap();
        match pending.as_slice() {
            [entry] => {
                assert_eq!((entry.id, entry.deliveries), (id(1), 1), "seed {seed}");
                kept += 1;
            }
            [] => {
                assert!(
                    power_lost,
                    "seed {seed}: a crash of the process lost the delivery"
                );
                assert_eq!(ms(&read_new(&s, "g", "c", None).await), [1], "seed {seed}");
                forgotten += 1;
            }
            more => panic!("seed {seed}: {more:?}"),
        }
    }
    assert!(kept >= 20, "kept {kept}, forgotten {forgotten}");
}

// ---------------------------------------------------------------- model test

#[derive(Clone, Debug)]
enum Op {
    Add,
    Read {
        consumer: u8,
        count: usize,
    },
    History {
        consumer: u8,
    },
    Ack {
        pick: usize,
    },
    Claim {
        consumer: u8,
        pick: usize,
        min_idle_s: u64,
    },
    AutoClaim {
        consumer: u8,
        count: usize,
    },
    Delete {
        pick: usize,
    },
    Trim {
        keep: u64,
    },
    SetId {
        back: u64,
    },
    DeleteConsumer {
        consumer: u8,
    },
    Wait {
        seconds: u64,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Add),
        5 => (0u8..3, 1usize..5).prop_map(|(consumer, count)| Op::Read { consumer, count }),
        2 => (0u8..3).prop_map(|consumer| Op::History { consumer }),
        4 => any::<usize>().prop_map(|pick| Op::Ack { pick }),
        2 => (0u8..3, any::<usize>(), 0u64..20).prop_map(|(consumer, pick, min_idle_s)| Op::Claim { consumer, pick, min_idle_s }),
        1 => (0u8..3, 1usize..4).prop_map(|(consumer, count)| Op::AutoClaim { consumer, count }),
        1 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        1 => (0u64..10).prop_map(|keep| Op::Trim { keep }),
        1 => (0u64..5).prop_map(|back| Op::SetId { back }),
        1 => (0u8..3).prop_map(|consumer| Op::DeleteConsumer { consumer }),
        2 => (0u64..15).prop_map(|seconds| Op::Wait { seconds }),
        2 => Just(Op::Restart),
    ]
}

/// A deliberately simple group: what the engine must agree with.
#[derive(Default)]
struct Model {
    /// Live entries, by id.
    entries: Vec<u64>,
    next: u64,
    last_delivered: u64,
    /// id -> (consumer, delivery count, delivered at ms)
    pending: BTreeMap<u64, (u8, u64, u64)>,
}

impl Model {
    fn pick_pending(&self, pick: usize) -> Option<u64> {
        (!self.pending.is_empty())
            .then(|| *self.pending.keys().nth(pick % self.pending.len()).unwrap())
    }
}

fn consumer(n: u8) -> String {
    format!("c{n}")
}

fn pending_view(model: &Model) -> Vec<(u64, String, u64)> {
    model
        .pending
        .iter()
        .map(|(&id, &(c, count, _))| (id, consumer(c), count))
        .collect()
}

async fn engine_pending(s: &impl Streams) -> Vec<(u64, String, u64)> {
    s.pending("s", "g", &PendingQuery::first(usize::MAX))
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.id.ms, p.consumer, p.deliveries))
        .collect()
}

async fn run_model(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    // A tiny snapshot threshold, so restarts also recover from snapshots.
    let mut s = open::<SegmentLog>(dir.path(), &clock, 512);
    s.create_group("s", "g", GroupStart::After(StreamId::MIN), true)
        .await
        .unwrap();
    let mut model = Model {
        next: 1,
        ..Model::default()
    };
    for op in ops {
        let now = clock.now_ms();
        match op {
            Op::Add => {
                add(&s, model.next).await;
                model.entries.push(model.next);
                model.next += 1;
            }
            Op::Read { consumer: c, count } => {
                let got = ms(&read_new(&s, "g", &consumer(c), Some(count)).await);
                let expected: Vec<u64> = model
                    .entries
                    .iter()
                    .copied()
                    .filter(|&e| e > model.last_delivered)
                    .take(count)
                    .collect();
                prop_assert_eq!(&got, &expected);
                for &e in &expected {
                    model.pending.insert(e, (c, 1, now));
                }
                if let Some(&last) = expected.last() {
                    model.last_delivered = last;
                }
            }
            Op::History { consumer: c } => {
                let got: Vec<(u64, bool)> = history(&s, "g", &consumer(c))
                    .await
                    .iter()
                    .map(|e| (e.id.ms, e.fields.is_some()))
                    .collect();
                let expected: Vec<(u64, bool)> = model
                    .pending
                    .iter()
                    .filter(|(_, p)| p.0 == c)
                    .map(|(&e, _)| (e, model.entries.contains(&e)))
                    .collect();
                prop_assert_eq!(got, expected);
                for p in model.pending.values_mut().filter(|p| p.0 == c) {
                    p.1 += 1;
                    p.2 = now;
                }
            }
            Op::Ack { pick } => {
                if let Some(e) = model.pick_pending(pick) {
                    prop_assert_eq!(s.ack("s", "g", &[id(e)]).await.unwrap(), 1);
                    model.pending.remove(&e);
                }
            }
            Op::Claim {
                consumer: c,
                pick,
                min_idle_s,
            } => {
                if let Some(e) = model.pick_pending(pick) {
                    let min_idle = Duration::from_secs(min_idle_s);
                    let got = s
                        .claim(
                            "s",
                            "g",
                            &consumer(c),
                            min_idle,
                            &[id(e)],
                            ClaimOptions::default(),
                        )
                        .await
                        .unwrap();
                    let (_, count, at) = model.pending[&e];
                    let exists = model.entries.contains(&e);
                    let idle_enough = min_idle_s == 0 || now - at >= min_idle_s * 1000;
                    if !exists {
                        prop_assert!(got.is_empty());
                        model.pending.remove(&e);
                    } else if idle_enough {
                        prop_assert_eq!(got.len(), 1);
                        model.pending.insert(e, (c, count + 1, now));
                    } else {
                        prop_assert!(got.is_empty());
                    }
                }
            }
            Op::AutoClaim { consumer: c, count } => {
                let options = AutoClaim {
                    min_idle: Duration::from_secs(10),
                    start: StreamId::MIN,
                    count,
                    just_id: false,
                };
                let got = s.auto_claim("s", "g", &consumer(c), options).await.unwrap();
                let mut claimed = Vec::new();
                let mut deleted = Vec::new();
                for (&e, &(_, _, at)) in model.pending.iter().take(count * 10) {
                    if claimed.len() + deleted.len() == count {
                        break;
                    }
                    if !model.entries.contains(&e) {
                        deleted.push(e);
                    } else if now - at >= 10_000 {
                        claimed.push(e);
                    }
                }
                prop_assert_eq!(
                    got.claimed.iter().map(|e| e.id.ms).collect::<Vec<_>>(),
                    claimed.clone()
                );
                prop_assert_eq!(
                    got.deleted.iter().map(|d| d.ms).collect::<Vec<_>>(),
                    deleted.clone()
                );
                for e in deleted {
                    model.pending.remove(&e);
                }
                for e in claimed {
                    let count = model.pending[&e].1;
                    model.pending.insert(e, (c, count + 1, now));
                }
            }
            Op::Delete { pick } => {
                if !model.entries.is_empty() {
                    let e = model.entries.remove(pick % model.entries.len());
                    prop_assert_eq!(s.delete("s", &[id(e)]).await.unwrap(), 1);
                }
            }
            Op::Trim { keep } => {
                let removed = s.trim("s", Trim::max_len(keep)).await.unwrap();
                let excess = model.entries.len().saturating_sub(keep as usize);
                prop_assert_eq!(removed, excess as u64);
                model.entries.drain(..excess);
            }
            Op::SetId { back } => {
                let to = model.last_delivered.saturating_sub(back);
                s.set_group_id("s", "g", GroupStart::After(id(to)))
                    .await
                    .unwrap();
                model.last_delivered = to;
            }
            Op::DeleteConsumer { consumer: c } => {
                let dropped = s.delete_consumer("s", "g", &consumer(c)).await.unwrap();
                let expected = model.pending.values().filter(|p| p.0 == c).count() as u64;
                prop_assert_eq!(dropped, expected);
                model.pending.retain(|_, p| p.0 != c);
            }
            Op::Wait { seconds } => clock.advance(Duration::from_secs(seconds)),
            Op::Restart => {
                drop(s);
                s = open::<SegmentLog>(dir.path(), &clock, 512);
            }
        }
        prop_assert_eq!(engine_pending(&s).await, pending_view(&model));
        let live: Vec<u64> = s
            .range("s", Bound::Min, Bound::Max, None)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id.ms)
            .collect();
        prop_assert_eq!(live, model.entries.clone());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn groups_match_the_model_through_restarts(ops in prop::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run_model(ops))?;
    }
}
