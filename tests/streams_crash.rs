//! Crash test of consumer groups: a real child process reads and acks with
//! a segment-log stream and is killed with SIGKILL at random moments. After
//! each kill the parent opens the stream and checks that
//!
//! - no acknowledged entry is pending again,
//! - no delivered, unacknowledged entry is missing from the pending list,
//! - the group's cursor has not gone back past anything delivered.
//!
//! The child prints each delivery once its read has returned, announces an
//! ack before sending it and confirms it after, so the parent knows what was
//! certainly done and what may have been.
//!
//! This file has its own `main` (`harness = false`): run with no arguments
//! it is the test (`ORCASTRA_CRASH_ITERATIONS` sets the number of kills,
//! default 12); run as `streams_crash --child DIR` it is the child.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use orcastra::StreamId;
use orcastra::log::{FsyncPolicy, LogOptions, SegmentLog};
use orcastra::streams::{
    AddOptions, Bound, Embedded, FileStore, GroupStart, PendingQuery, Streams,
};

mod common;
use common::streams::{history, read_new};

const ENTRIES: u64 = 20_000;

fn streams(dir: &Path, fsync: FsyncPolicy) -> Embedded<FileStore<SegmentLog>> {
    let options = LogOptions::default().fsync(fsync).segment_bytes(256 << 10);
    Embedded::open(FileStore::<SegmentLog>::new(dir, options)).with_snapshot_bytes(16 << 10)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.iter().position(|a| a == "--child") {
        Some(at) => runtime.block_on(child(Path::new(&args[at + 1]))),
        None if args.iter().any(|a| a == "--list") => {}
        None => {
            let iterations = std::env::var("ORCASTRA_CRASH_ITERATIONS")
                .map(|n| n.parse().expect("ORCASTRA_CRASH_ITERATIONS is a number"))
                .unwrap_or(12);
            let (delivered, acked) = runtime.block_on(parent(iterations));
            println!(
                "streams_crash: {iterations} kills survived ({delivered} entries delivered, {acked} acknowledged)"
            );
        }
    }
}

/// Reads and acks until killed.
async fn child(dir: &Path) {
    let s = streams(dir, FsyncPolicy::Batch);
    let mut out = std::io::stdout().lock();
    let mut rng = fastrand::Rng::new();
    // Entries left pending by an earlier child are ours to finish.
    let earlier = history(&s, "g", "c").await;
    let mut pending: Vec<StreamId> = earlier.iter().map(|e| e.id).collect();
    loop {
        for entry in read_new(&s, "g", "c", Some(rng.usize(1..40))).await {
            writeln!(out, "D {}", entry.id.ms).unwrap();
            pending.push(entry.id);
        }
        out.flush().unwrap();
        // Acknowledge a random part of what is pending.
        let take = rng.usize(0..=pending.len());
        let acks: Vec<StreamId> = pending.drain(..take).collect();
        if acks.is_empty() {
            continue;
        }
        for id in &acks {
            writeln!(out, "a {}", id.ms).unwrap();
        }
        out.flush().unwrap();
        s.ack("s", "g", &acks).await.unwrap();
        for id in &acks {
            writeln!(out, "A {}", id.ms).unwrap();
        }
        out.flush().unwrap();
    }
}

/// Runs the kills; returns how many entries were delivered and acknowledged.
async fn parent(iterations: usize) -> (usize, usize) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    {
        let s = streams(dir, FsyncPolicy::Never);
        for ms in 1..=ENTRIES {
            let fields = vec![("n".into(), ms.to_string().into())];
            s.add("s", fields, AddOptions::with_id(StreamId::new(ms, 0)))
                .await
                .unwrap();
        }
        s.create_group("s", "g", GroupStart::After(StreamId::MIN), false)
            .await
            .unwrap();
    }
    let mut delivered = BTreeSet::new();
    let mut acked = BTreeSet::new();
    let mut maybe_acked = BTreeSet::new();
    let mut rng = fastrand::Rng::new();
    for iteration in 0..iterations {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--child")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        thread::sleep(Duration::from_millis(rng.u64(30..300)));
        child.kill().unwrap();
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let Some((kind, ms)) = line.split_once(' ') else {
                continue;
            };
            let Ok(ms) = ms.parse::<u64>() else { continue };
            match kind {
                "D" => {
                    delivered.insert(ms);
                }
                "a" => {
                    maybe_acked.insert(ms);
                }
                "A" => {
                    acked.insert(ms);
                }
                _ => {}
            }
        }

        let s = streams(dir, FsyncPolicy::Batch);
        let pending: BTreeSet<u64> = s
            .pending("s", "g", &PendingQuery::first(usize::MAX))
            .await
            .unwrap()
            .iter()
            .map(|p| p.id.ms)
            .collect();
        let wrongly_pending: Vec<_> = acked.intersection(&pending).collect();
        assert!(
            wrongly_pending.is_empty(),
            "iteration {iteration}: acked but pending again: {wrongly_pending:?}"
        );
        let lost: Vec<_> = delivered
            .iter()
            .filter(|ms| !maybe_acked.contains(ms) && !pending.contains(ms))
            .collect();
        assert!(
            lost.is_empty(),
            "iteration {iteration}: delivered, unacked, not pending: {lost:?}"
        );
        let cursor = s.groups("s").await.unwrap()[0].last_delivered_id.ms;
        let furthest = delivered.iter().next_back().copied().unwrap_or(0);
        assert!(
            cursor >= furthest,
            "iteration {iteration}: cursor {cursor} went back before {furthest}"
        );
        assert_eq!(s.len("s").await.unwrap(), ENTRIES);
        // Everything pending was delivered, and nothing beyond the cursor is.
        let undelivered = s
            .range(
                "s",
                Bound::Excluded(StreamId::new(cursor, 0)),
                Bound::Max,
                Some(1),
            )
            .await
            .unwrap();
        assert!(
            pending.iter().all(|&ms| ms <= cursor),
            "iteration {iteration}: pending beyond the cursor"
        );
        assert!(undelivered.first().is_none_or(|e| e.id.ms > cursor));
    }
    assert!(!delivered.is_empty(), "the child never delivered anything");
    (delivered.len(), acked.len())
}
