//! Retention: streams trim themselves by length and age as entries are
//! added, and with `keep_unacked` never past what a group still needs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orcastra::StreamId;
use orcastra::log::{FsyncPolicy, LogOptions, SegmentLog};
use orcastra::streams::{
    AddOptions, Bound, Clock, Embedded, FileStore, GroupStart, ManualClock, Retention, Streams,
};

mod common;
use common::streams::{history, read_new};

fn open(
    dir: &Path,
    retention: Retention,
    clock: &Arc<ManualClock>,
) -> Embedded<FileStore<SegmentLog>> {
    let options = LogOptions::default()
        .fsync(FsyncPolicy::Never)
        .segment_bytes(4096);
    Embedded::open(FileStore::<SegmentLog>::new(dir, options))
        .with_retention(retention)
        .with_clock(Arc::clone(clock))
}

async fn add_many(s: &impl Streams, n: usize) {
    for _ in 0..n {
        s.add("s", vec![("f".into(), "x".into())], AddOptions::default())
            .await
            .unwrap();
    }
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("s-s").join("entries"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count()
}

#[tokio::test]
async fn a_length_limit_trims_as_entries_arrive_and_frees_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let retention = Retention {
        max_len: Some(100),
        ..Retention::default()
    };
    let s = open(dir.path(), retention, &clock);
    add_many(&s, 1000).await;
    let len = s.len("s").await.unwrap();
    assert!((100..=164).contains(&len), "length {len}");
    let oldest = s.range("s", Bound::Min, Bound::Max, Some(1)).await.unwrap()[0].id;
    let newest = s
        .rev_range("s", Bound::Max, Bound::Min, Some(1))
        .await
        .unwrap()[0]
        .id;
    assert!(oldest > StreamId::new(1_000_000, 800));
    assert_eq!(newest, StreamId::new(1_000_000, 999));
    assert!(segments(dir.path()) < 10, "old segments were kept");
}

#[tokio::test]
async fn an_age_limit_trims_old_entries() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let retention = Retention {
        max_age: Some(Duration::from_secs(60)),
        ..Retention::default()
    };
    let s = open(dir.path(), retention, &clock);
    add_many(&s, 100).await;
    clock.advance(Duration::from_secs(120));
    add_many(&s, 64).await;
    let entries = s.range("s", Bound::Min, Bound::Max, None).await.unwrap();
    assert!(
        entries.iter().all(|e| e.id.ms >= clock.now_ms() - 60_000),
        "an old entry survived"
    );
    assert_eq!(entries.len(), 64);
}

#[tokio::test]
async fn keep_unacked_holds_what_groups_still_need() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let retention = Retention {
        max_len: Some(10),
        keep_unacked: true,
        ..Retention::default()
    };
    let s = open(dir.path(), retention, &clock);
    s.create_group("s", "g", GroupStart::After(StreamId::MIN), true)
        .await
        .unwrap();
    add_many(&s, 300).await;
    // Nothing was delivered: nothing may go.
    assert_eq!(s.len("s").await.unwrap(), 300);

    let read = read_new(&s, "g", "c", Some(200)).await;
    let delivered: Vec<StreamId> = read.iter().map(|e| e.id).collect();
    // Delivered but pending: still nothing may go.
    add_many(&s, 64).await;
    assert_eq!(s.len("s").await.unwrap(), 364);

    // Acknowledge the first 150: those may go, the pending 50 may not.
    s.ack("s", "g", &delivered[..150]).await.unwrap();
    add_many(&s, 64).await;
    let oldest = s.range("s", Bound::Min, Bound::Max, Some(1)).await.unwrap()[0].id;
    assert_eq!(oldest, delivered[150]);
    assert!(
        history(&s, "g", "c")
            .await
            .iter()
            .all(|e| e.fields.is_some()),
        "a pending entry was trimmed"
    );
}
