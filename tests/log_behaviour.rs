//! One behaviour suite for every log backend: the contract of the `Log` trait.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Memory, Segment, Text, read_all, small_segments};
use orcastra::log::{FsyncPolicy, Log, LogError, LogOptions, Offset};

async fn offsets_are_consecutive_from_zero<B: Backend>(backend: B) {
    let log = backend.open(small_segments()).unwrap();
    assert_eq!(log.start_offset(), Offset(0));
    assert_eq!(log.next_offset(), Offset(0));
    assert_eq!(log.append(&["a", "b"]).await.unwrap(), Offset(0)..Offset(2));
    assert_eq!(log.append(&["c"]).await.unwrap(), Offset(2)..Offset(3));
    let empty: [&str; 0] = [];
    assert_eq!(log.append(&empty).await.unwrap(), Offset(3)..Offset(3));
    assert_eq!(log.next_offset(), Offset(3));
}

async fn records_come_back_exactly<B: Backend>(backend: B) {
    let log = backend.open(small_segments()).unwrap();
    let records: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"plain".to_vec(),
        b"tab\tnewline\nbackslash\\".to_vec(),
        (0..=255).collect(),
        "unicode ✓ ünïcødé".as_bytes().to_vec(),
        vec![b'x'; 100_000],
    ];
    log.append(&records).await.unwrap();
    assert_eq!(read_all(&log), records);
    assert_eq!(log.read(Offset(2), 2).unwrap(), records[2..4].to_vec());
}

async fn reads_stop_at_the_end_and_refuse_offsets_outside_the_log<B: Backend>(backend: B) {
    let log = backend.open(small_segments()).unwrap();
    log.append(&["a", "b", "c"]).await.unwrap();
    assert_eq!(log.read(Offset(1), 100).unwrap(), vec!["b", "c"]);
    assert_eq!(log.read(Offset(1), 0).unwrap(), Vec::<bytes::Bytes>::new());
    assert!(log.read(Offset(3), 10).unwrap().is_empty());
    assert!(matches!(
        log.read(Offset(4), 10),
        Err(LogError::OffsetPastEnd {
            requested: 4,
            end: 3
        })
    ));
}

async fn many_segments_read_back_in_order<B: Backend>(backend: B) {
    let log = backend.open(small_segments()).unwrap();
    let records: Vec<String> = (0..2000)
        .map(|i| format!("record {i} {}", "x".repeat(i % 97)))
        .collect();
    for chunk in records.chunks(37) {
        log.append(chunk).await.unwrap();
    }
    let read: Vec<String> = read_all(&log)
        .into_iter()
        .map(|r| String::from_utf8(r).unwrap())
        .collect();
    assert_eq!(read, records);
    for at in [0, 1, 63, 64, 65, 999, 1999] {
        assert_eq!(
            log.read(Offset(at), 1).unwrap(),
            vec![records[at as usize].clone()]
        );
    }
}

async fn records_survive_reopening<B: Backend>(backend: B) {
    if !B::PERSISTENT {
        return;
    }
    let log = backend.open(small_segments()).unwrap();
    let records: Vec<String> = (0..500).map(|i| format!("{i}")).collect();
    log.append(&records).await.unwrap();
    drop(log);
    let log = backend.open(small_segments()).unwrap();
    assert_eq!(read_all(&log).len(), 500);
    assert_eq!(
        log.append(&["next"]).await.unwrap(),
        Offset(500)..Offset(501)
    );
    drop(log);
    let log = backend.open(small_segments()).unwrap();
    assert_eq!(log.read(Offset(499), 10).unwrap(), vec!["499", "next"]);
}

async fn an_oversized_record_appends_nothing<B: Backend>(backend: B) {
    let log = backend
        .open(small_segments().max_record_bytes(1000))
        .unwrap();
    let result = log.append(&[b"fine".to_vec(), vec![b'x'; 1001]]).await;
    assert!(
        matches!(
            result,
            Err(LogError::RecordTooLarge {
                size: 1001,
                max: 1000
            })
        ),
        "{result:?}"
    );
    assert_eq!(log.next_offset(), Offset(0));
    log.append(&["still works"]).await.unwrap();
    assert_eq!(read_all(&log), vec![b"still works".to_vec()]);
}

/// A log of 1000 records appended ten at a time, so that they span segments.
async fn thousand_records<B: Backend>(backend: &B) -> (B::L, Vec<String>) {
    let log = backend.open(small_segments()).unwrap();
    let records: Vec<String> = (0..1000).map(|i| format!("record {i:04}")).collect();
    for chunk in records.chunks(10) {
        log.append(chunk).await.unwrap();
    }
    (log, records)
}

async fn retention_drops_a_prefix_and_never_more<B: Backend>(backend: B) {
    let (log, records) = thousand_records(&backend).await;
    log.drop_before(Offset(600)).unwrap();
    let start = log.start_offset();
    assert!(start <= Offset(600), "dropped too much: {start}");
    assert!(start > Offset(0), "dropped nothing");
    assert_eq!(
        log.read(Offset(600), 1).unwrap(),
        vec![records[600].clone()]
    );
    assert!(matches!(
        log.read(Offset(0), 1),
        Err(LogError::OffsetTrimmed { requested: 0, .. })
    ));
    let kept: Vec<Vec<u8>> = read_all(&log);
    assert_eq!(kept.len() as u64, 1000 - start.0);
    // Dropping everything keeps the end where it is.
    log.drop_before(Offset(5000)).unwrap();
    assert_eq!(log.next_offset(), Offset(1000));
    assert_eq!(log.append(&["after"]).await.unwrap().start, Offset(1000));
    assert_eq!(read_all(&log).last().unwrap(), b"after");
}

async fn retention_survives_reopening<B: Backend>(backend: B) {
    if !B::PERSISTENT {
        return;
    }
    let (log, records) = thousand_records(&backend).await;
    log.drop_before(Offset(700)).unwrap();
    let start = log.start_offset();
    drop(log);
    let log = backend.open(small_segments()).unwrap();
    assert_eq!(log.start_offset(), start);
    assert_eq!(log.next_offset(), Offset(1000));
    assert_eq!(
        log.read(Offset(700), 1).unwrap(),
        vec![records[700].clone()]
    );
}

async fn a_waiting_reader_wakes_when_a_record_arrives<B: Backend>(backend: B) {
    let log = Arc::new(backend.open(small_segments()).unwrap());
    log.append(&["first"]).await.unwrap();
    // Already there: returns at once.
    log.wait_for(Offset(0)).await.unwrap();
    let waiter = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            log.wait_for(Offset(1)).await.unwrap();
            log.read(Offset(1), 1).unwrap()
        })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    log.append(&["second"]).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiting reader was never woken")
        .unwrap();
    assert_eq!(read, vec!["second"]);
}

async fn concurrent_appenders_each_get_their_own_offsets<B: Backend>(backend: B) {
    let log = Arc::new(backend.open(small_segments()).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..50 {
                    let record = format!("task {task} record {i}");
                    let offsets = log.append(std::slice::from_ref(&record)).await.unwrap();
                    mine.push((offsets.start, record));
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let offsets: Vec<u64> = all.iter().map(|(o, _)| o.0).collect();
    assert_eq!(offsets, (0..400).collect::<Vec<_>>());
    for (offset, record) in all {
        assert_eq!(log.read(offset, 1).unwrap(), vec![record]);
    }
}

async fn every_fsync_policy_appends_and_reads<B: Backend>(backend: B) {
    for policy in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_millis(5)),
        FsyncPolicy::Batch,
        FsyncPolicy::Always,
    ] {
        let log = backend.open(small_segments().fsync(policy)).unwrap();
        let start = log.next_offset();
        let offsets = log.append(&["x", "y"]).await.unwrap();
        assert_eq!(offsets, start..start + 2, "{policy:?}");
        log.sync().await.unwrap();
        assert_eq!(log.read(start, 2).unwrap(), vec!["x", "y"], "{policy:?}");
        // Split appends are visible once durable under the policy.
        let offsets = log.append_nowait(&["z"]).unwrap();
        log.wait_durable(offsets.end).await.unwrap();
        log.wait_for(offsets.start).await.unwrap();
        assert_eq!(log.read(offsets.start, 1).unwrap(), vec!["z"], "{policy:?}");
    }
}

async fn a_second_owner_is_refused<B: Backend>(backend: B) {
    if !B::PERSISTENT {
        return;
    }
    let log = backend.open(LogOptions::default()).unwrap();
    assert!(matches!(
        backend.open(LogOptions::default()),
        Err(LogError::Locked { .. })
    ));
    drop(log);
    backend.open(LogOptions::default()).unwrap();
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $test() { super::$test(super::Memory).await })*
        }
        mod segment {
            $(#[tokio::test] async fn $test() { super::$test(super::Segment::on_disk()).await })*
        }
        mod text {
            $(#[tokio::test] async fn $test() { super::$test(super::Text::on_disk()).await })*
        }
    };
}

suite!(
    offsets_are_consecutive_from_zero,
    records_come_back_exactly,
    reads_stop_at_the_end_and_refuse_offsets_outside_the_log,
    many_segments_read_back_in_order,
    records_survive_reopening,
    an_oversized_record_appends_nothing,
    retention_drops_a_prefix_and_never_more,
    retention_survives_reopening,
    a_waiting_reader_wakes_when_a_record_arrives,
    concurrent_appenders_each_get_their_own_offsets,
    every_fsync_policy_appends_and_reads,
    a_second_owner_is_refused,
);
