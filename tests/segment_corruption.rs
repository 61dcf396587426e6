//! Damaged segment logs: torn tails are cut, damage to acknowledged records
//! fails loudly and is never cut, indexes are rebuilt, strangers are refused.

mod common;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use common::read_all;
use orcastra::log::storage::{OsStorage, SimStorage};
use orcastra::log::{CorruptKind, FsyncPolicy, Log, LogError, LogOptions, Offset, SegmentLog};
use tempfile::TempDir;

fn segment(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn index(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

fn record(i: usize) -> Vec<u8> {
    format!("record {i} {}", "x".repeat(i * 7 % 40)).into_bytes()
}

/// The options every log in these tests is opened with: small segments and
/// a dense index, so a few hundred records span several segments.
fn options() -> LogOptions {
    LogOptions::default()
        .fsync(FsyncPolicy::Never)
        .segment_bytes(4096)
        .index_interval_bytes(256)
}

fn open(dir: &Path) -> Result<SegmentLog, LogError> {
    SegmentLog::open(dir, options())
}

/// A one-segment log as a crash leaves it: `synced` records fsynced, then
/// `unsynced` more written but never fsynced.
struct Crashed {
    _temp: TempDir,
    dir: PathBuf,
    records: Vec<Vec<u8>>,
    synced: usize,
    /// Where the synced records end in the segment.
    synced_end: u64,
}

impl Crashed {
    async fn new(synced: usize, unsynced: usize) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("log");
        let records: Vec<Vec<u8>> = (0..synced + unsynced).map(record).collect();
        let log = open(&dir).unwrap();
        for record in &records[..synced] {
            log.append(&[record]).await.unwrap();
        }
        log.sync().await.unwrap();
        let mark = fs::read(dir.join("SYNCED")).unwrap();
        for record in &records[synced..] {
            log.append(&[record]).await.unwrap();
        }
        drop(log);
        // Put back the mark of the last fsync, as a crash would have left it.
        fs::write(dir.join("SYNCED"), &mark).unwrap();
        let synced_end = u64::from_le_bytes(mark[8..16].try_into().unwrap());
        Crashed {
            _temp: temp,
            dir,
            records,
            synced,
            synced_end,
        }
    }

    fn len(&self) -> u64 {
        fs::metadata(segment(&self.dir, 0)).unwrap().len()
    }

    /// A copy of the log to damage.
    fn copy(&self) -> (TempDir, PathBuf) {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("log");
        copy_dir(&self.dir, &dir);
        (temp, dir)
    }

    /// Where record `i` starts, found by reading the frames' lengths.
    fn position(&self, i: usize) -> u64 {
        let data = fs::read(segment(&self.dir, 0)).unwrap();
        let mut pos = 32;
        for _ in 0..i {
            let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
            pos += (16 + len).next_multiple_of(8);
        }
        pos as u64
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn flip_bit(path: &Path, byte: u64, bit: u8) {
    let mut data = fs::read(path).unwrap();
    data[byte as usize] ^= 1 << bit;
    fs::write(path, data).unwrap();
}

fn truncate(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Opens the damaged copy and checks it holds a prefix of the records that
/// keeps every synced one, each exact.
fn assert_recovers_synced_prefix(crashed: &Crashed, dir: &Path, what: &str) {
    let log = open(dir).unwrap_or_else(|e| panic!("{what}: {e}"));
    let read = read_all(&log);
    assert!(read.len() >= crashed.synced, "{what}: lost synced records");
    assert_eq!(read, crashed.records[..read.len()], "{what}");
    // The log goes on working after recovery.
    let next = log.next_offset();
    drop(log);
    let log = open(dir).unwrap();
    assert_eq!(log.next_offset(), next, "{what}: recovery was not durable");
}

fn assert_corrupt_at(result: Result<SegmentLog, LogError>, position: u64, what: &str) {
    match result {
        Err(LogError::Corrupt {
            position: found, ..
        }) => assert_eq!(found, position, "{what}"),
        Err(other) => panic!("{what}: expected a corruption error, got {other}"),
        Ok(_) => panic!("{what}: damaged synced data was accepted"),
    }
}

#[tokio::test]
async fn truncation_at_every_byte_of_the_unsynced_tail_keeps_every_synced_record() {
    let crashed = Crashed::new(5, 3).await;
    for len in crashed.synced_end..crashed.len() {
        let (_temp, dir) = crashed.copy();
        truncate(&segment(&dir, 0), len);
        let report = SegmentLog::verify(&dir, &OsStorage).unwrap();
        assert!(report.is_healthy(), "cut at {len}: {report:?}");
        assert_recovers_synced_prefix(&crashed, &dir, &format!("cut at {len}"));
    }
}

#[tokio::test]
async fn truncation_inside_synced_records_fails_loudly_and_cuts_nothing() {
    let crashed = Crashed::new(5, 2).await;
    for len in crashed.position(3)..crashed.synced_end {
        let (_temp, dir) = crashed.copy();
        truncate(&segment(&dir, 0), len);
        let result = open(&dir);
        assert!(
            matches!(result, Err(LogError::Corrupt { .. })),
            "cut at {len}: {:?}",
            result.as_ref().err()
        );
        assert_eq!(fs::metadata(segment(&dir, 0)).unwrap().len(), len);
        assert!(!SegmentLog::verify(&dir, &OsStorage).unwrap().is_healthy());
    }
}

#[tokio::test]
async fn every_bit_flip_in_the_unsynced_tail_is_cut_and_never_read() {
    let crashed = Crashed::new(4, 3).await;
    for byte in crashed.synced_end..crashed.len() {
        for bit in 0..8 {
            let (_temp, dir) = crashed.copy();
            flip_bit(&segment(&dir, 0), byte, bit);
            assert_recovers_synced_prefix(&crashed, &dir, &format!("flip {byte}:{bit}"));
        }
    }
}

#[tokio::test]
async fn every_bit_flip_in_synced_records_fails_loudly_and_cuts_nothing() {
    let crashed = Crashed::new(6, 1).await;
    let len = crashed.len();
    for i in 4..6 {
        let (start, end) = (crashed.position(i), crashed.position(i + 1));
        for byte in start..end {
            for bit in 0..8 {
                let (_temp, dir) = crashed.copy();
                flip_bit(&segment(&dir, 0), byte, bit);
                let what = format!("flip {byte}:{bit} in record {i}");
                match open(&dir) {
                    // A flip in a frame's zero padding changes no record.
                    Ok(log) => assert_eq!(read_all(&log), crashed.records, "{what}"),
                    Err(LogError::Corrupt { position, .. }) => {
                        assert_eq!(position, start, "{what}")
                    }
                    Err(other) => panic!("{what}: {other}"),
                }
                assert_eq!(fs::metadata(segment(&dir, 0)).unwrap().len(), len, "{what}");
            }
        }
    }
}

#[tokio::test]
async fn zeros_after_the_last_record_are_cut_off_as_free_space() {
    let crashed = Crashed::new(4, 2).await;
    let (_temp, dir) = crashed.copy();
    let mut data = fs::read(segment(&dir, 0)).unwrap();
    // What the log writes ahead of its records, or a crash leaves of a
    // write that grew the file but never reached the disk.
    data.extend_from_slice(&[0; 8192]);
    fs::write(segment(&dir, 0), &data).unwrap();
    let report = SegmentLog::verify(&dir, &OsStorage).unwrap();
    assert!(report.is_healthy());
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.records, 6);
    let log = open(&dir).unwrap();
    assert_eq!(read_all(&log), crashed.records);
    drop(log);
    assert_eq!(fs::metadata(segment(&dir, 0)).unwrap().len(), crashed.len());
}

#[tokio::test]
async fn the_space_written_ahead_is_cut_when_sealed_closed_or_recovered() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let log = open(&dir).unwrap();
    let records: Vec<Vec<u8>> = (0..20).map(record).collect();
    log.append(&records).await.unwrap();
    // Open, the active segment is filled with zeros up to the segment size.
    let written = frames_len(&records);
    assert_eq!(fs::metadata(segment(&dir, 0)).unwrap().len(), 4096);
    // As a kill -9 leaves it.
    let killed = tempfile::tempdir().unwrap();
    copy_dir(&dir, killed.path());
    let reopened = open(killed.path()).unwrap();
    assert_eq!(read_all(&reopened), records);
    assert_eq!(
        fs::metadata(segment(killed.path(), 0)).unwrap().len(),
        written
    );
    drop(reopened);

    // Sealed by the next append, which does not fit.
    let big = vec![7; 4096 - written as usize];
    let next = log.append(&[&big]).await.unwrap().start;
    assert_eq!(fs::metadata(segment(&dir, 0)).unwrap().len(), written);
    assert!(fs::metadata(segment(&dir, next.0)).unwrap().len() > 32);
    drop(log);
    assert_eq!(
        fs::metadata(segment(&dir, next.0)).unwrap().len(),
        frames_len(&[big])
    );
}

/// The bytes a segment holding `records` takes: its header, then the frames.
fn frames_len(records: &[Vec<u8>]) -> u64 {
    let frames: usize = records
        .iter()
        .map(|r| (16 + r.len()).next_multiple_of(8))
        .sum();
    32 + frames as u64
}

#[tokio::test]
async fn zeros_over_synced_records_fail_loudly() {
    let crashed = Crashed::new(4, 0).await;
    let (_temp, dir) = crashed.copy();
    let mut data = fs::read(segment(&dir, 0)).unwrap();
    let (start, end) = (crashed.position(2) as usize, crashed.position(3) as usize);
    data[start..end].fill(0);
    fs::write(segment(&dir, 0), &data).unwrap();
    assert_corrupt_at(open(&dir), start as u64, "zeroed record 2");
}

/// A clean log of several segments with a dense index.
async fn multi_segment_log(records: usize) -> (TempDir, PathBuf, Vec<Vec<u8>>) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let log = open(&dir).unwrap();
    let all: Vec<Vec<u8>> = (0..records).map(record).collect();
    for chunk in all.chunks(5) {
        log.append(chunk).await.unwrap();
    }
    drop(log);
    (temp, dir, all)
}

fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort();
    bases
}

#[tokio::test]
async fn a_bit_flip_in_a_sealed_segment_fails_loudly_when_read() {
    let (_temp, dir, records) = multi_segment_log(300).await;
    let path = segment(&dir, 0);
    let len = fs::metadata(&path).unwrap().len();
    flip_bit(&path, 1000, 3);

    let report = SegmentLog::verify(&dir, &OsStorage).unwrap();
    assert!(!report.is_healthy());
    assert_eq!(report.damage[0].file, path);

    let log = open(&dir).unwrap();
    let mut at = Offset(0);
    let error = loop {
        match log.read(at, 1) {
            Ok(batch) => {
                assert_eq!(batch[0].as_ref(), records[at.0 as usize].as_slice());
                at = at + 1;
            }
            Err(e) => break e,
        }
    };
    match error {
        LogError::Corrupt { file, position, .. } => {
            assert_eq!(file, path);
            assert_eq!(position, report.damage[0].position);
            assert!(position <= 1000);
        }
        other => panic!("expected corruption, got {other}"),
    }
    // Records after the damage are still there and readable.
    let later = segment_bases(&dir)[2];
    assert_eq!(
        log.read(Offset(later), 1).unwrap()[0].as_ref(),
        records[later as usize].as_slice()
    );
    drop(log);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        len,
        "the damaged segment was cut"
    );
}

#[tokio::test]
async fn a_bit_flip_early_in_the_active_segment_fails_loudly_when_read() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let options = LogOptions::default().index_interval_bytes(256);
    let log = SegmentLog::open(&dir, options.clone()).unwrap();
    let records: Vec<Vec<u8>> = (0..100).map(record).collect();
    log.append(&records).await.unwrap();
    drop(log);
    let path = segment(&dir, 0);
    flip_bit(&path, 100, 0);
    // The flip lies before the last index entry, so opening does not scan it...
    let log = SegmentLog::open(&dir, options).unwrap();
    // ...but reading it fails, naming the place.
    assert!(matches!(
        log.read(Offset(0), 100),
        Err(LogError::Corrupt { position: 96, .. })
    ));
    assert_eq!(
        log.read(Offset(50), 1).unwrap()[0].as_ref(),
        records[50].as_slice()
    );
}

async fn index_damage_is_repaired(damage: impl Fn(&Path)) {
    let (_temp, dir, records) = multi_segment_log(300).await;
    let bases = segment_bases(&dir);
    let healthy_index = fs::read(index(&dir, bases[1])).unwrap();
    for &base in &bases {
        damage(&index(&dir, base));
    }
    let log = open(&dir).unwrap();
    assert_eq!(read_all(&log), records);
    for at in [0, 17, 150, 299] {
        assert_eq!(
            log.read(Offset(at), 1).unwrap()[0].as_ref(),
            records[at as usize].as_slice()
        );
    }
    drop(log);
    // The index of a sealed segment that was read is rebuilt on disk.
    assert_eq!(fs::read(index(&dir, bases[1])).unwrap(), healthy_index);
    assert!(
        SegmentLog::verify(&dir, &OsStorage)
            .unwrap()
            .notes
            .is_empty()
    );
}

#[tokio::test]
async fn a_deleted_index_is_rebuilt() {
    index_damage_is_repaired(|path| fs::remove_file(path).unwrap()).await;
}

#[tokio::test]
async fn a_truncated_index_is_rebuilt() {
    index_damage_is_repaired(|path| {
        let len = fs::metadata(path).unwrap().len();
        truncate(path, len / 2 + 3);
    })
    .await;
}

#[tokio::test]
async fn an_index_cut_at_an_entry_boundary_is_rebuilt() {
    index_damage_is_repaired(|path| truncate(path, 12)).await;
}

#[tokio::test]
async fn an_index_of_garbage_is_rebuilt() {
    index_damage_is_repaired(|path| {
        let len = fs::metadata(path).unwrap().len() as usize;
        let garbage: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
        fs::write(path, garbage).unwrap();
    })
    .await;
}

#[tokio::test]
async fn an_empty_segment_left_by_a_crash_while_rolling_is_reinitialised() {
    let (_temp, dir, records) = multi_segment_log(100).await;
    let next = records.len() as u64;
    fs::write(segment(&dir, next), b"").unwrap();
    let log = open(&dir).unwrap();
    assert_eq!(read_all(&log), records);
    assert_eq!(log.append(&["more"]).await.unwrap().start, Offset(next));
}

#[tokio::test]
async fn an_empty_sealed_segment_is_refused() {
    let (_temp, dir, _) = multi_segment_log(300).await;
    let middle = segment(&dir, segment_bases(&dir)[1]);
    fs::write(&middle, b"").unwrap();
    match open(&dir) {
        Err(LogError::NotALogFile { path, .. }) => assert_eq!(path, middle),
        other => panic!("expected NotALogFile, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn a_missing_segment_is_reported_not_skipped() {
    let (_temp, dir, records) = multi_segment_log(300).await;
    let bases = segment_bases(&dir);
    fs::remove_file(segment(&dir, bases[1])).unwrap();
    fs::remove_file(index(&dir, bases[1])).unwrap();
    let report = SegmentLog::verify(&dir, &OsStorage).unwrap();
    assert!(matches!(
        report.damage[0].kind,
        CorruptKind::MissingRecords { .. }
    ));
    let log = open(&dir).unwrap();
    assert_eq!(
        log.read(Offset(0), 1).unwrap()[0].as_ref(),
        records[0].as_slice()
    );
    assert!(matches!(
        log.read(Offset(bases[1]), 1),
        Err(LogError::Corrupt {
            kind: CorruptKind::MissingRecords { .. },
            ..
        })
    ));
}

#[tokio::test]
async fn a_segment_with_another_base_in_its_header_is_refused() {
    let (_temp, dir, _) = multi_segment_log(300).await;
    let bases = segment_bases(&dir);
    fs::rename(segment(&dir, bases[1]), segment(&dir, bases[1] + 1)).unwrap();
    assert!(matches!(
        open(&dir),
        Err(LogError::Corrupt {
            kind: CorruptKind::BadHeader(_),
            ..
        })
    ));
}

#[tokio::test]
async fn a_stray_file_is_ignored() {
    let (_temp, dir, records) = multi_segment_log(50).await;
    fs::write(dir.join("notes.txt"), "someone's notes").unwrap();
    let report = SegmentLog::verify(&dir, &OsStorage).unwrap();
    assert!(report.is_healthy());
    assert!(report.notes.iter().any(|n| n.contains("notes.txt")));
    assert_eq!(read_all(&open(&dir).unwrap()), records);
    assert_eq!(
        fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "someone's notes"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_segment_is_refused_and_left_alone() {
    let temp = tempfile::tempdir().unwrap();
    let path = segment(temp.path(), 0);
    fs::write(&path, "#!/bin/sh\necho not a segment\n").unwrap();
    assert!(matches!(
        open(temp.path()),
        Err(LogError::NotALogFile { .. })
    ));
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "#!/bin/sh\necho not a segment\n"
    );

    // Also as the last segment of a real log.
    let (_temp, dir, _) = multi_segment_log(50).await;
    let stranger = segment(&dir, 99_999);
    fs::write(&stranger, vec![b'z'; 100]).unwrap();
    assert!(matches!(open(&dir), Err(LogError::NotALogFile { .. })));
    assert_eq!(fs::read(&stranger).unwrap(), vec![b'z'; 100]);
}

#[test]
fn a_directory_of_another_program_is_refused_and_left_alone() {
    let temp = tempfile::tempdir().unwrap();
    fs::write(temp.path().join("photo.jpg"), b"\xff\xd8\xff").unwrap();
    fs::write(temp.path().join("notes.txt"), "notes").unwrap();
    let error = open(temp.path()).err().unwrap();
    assert!(
        matches!(error, LogError::ForeignDirectory { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("notes.txt"));
    let mut names: Vec<_> = fs::read_dir(temp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["notes.txt", "photo.jpg"]);
}

#[test]
fn a_data_path_that_is_a_file_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("data");
    fs::write(&path, "a file").unwrap();
    let error = open(&path).err().unwrap();
    assert!(
        matches!(
            error,
            LogError::WrongKind {
                expected: "directory",
                found: "file",
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_read_only_file_system_gives_a_clear_error_and_changes_nothing() {
    let sim = SimStorage::new(1);
    let options = LogOptions::default().storage(sim.clone());
    let log = SegmentLog::open("/data", options.clone()).unwrap();
    log.append(&["kept"]).await.unwrap();
    drop(log);
    let before = sim.contents(&segment(Path::new("/data"), 0)).unwrap();
    sim.set_read_only(true);
    let error = SegmentLog::open("/data", options.clone()).err().unwrap();
    assert!(error.to_string().contains("read-only"), "{error}");
    sim.set_read_only(false);
    assert_eq!(
        sim.contents(&segment(Path::new("/data"), 0)).unwrap(),
        before
    );
    let error = SegmentLog::open(
        "/fresh",
        options.clone().storage({
            let sim = SimStorage::new(2);
            sim.set_read_only(true);
            sim
        }),
    )
    .err()
    .unwrap();
    assert!(error.to_string().contains("/fresh"), "{error}");
}

#[tokio::test]
async fn a_full_disk_refuses_appends_and_keeps_durable_records() {
    let sim = SimStorage::new(3);
    let options = LogOptions::default()
        .fsync(FsyncPolicy::Batch)
        .storage(sim.clone());
    let log = SegmentLog::open("/data", options.clone()).unwrap();
    log.append(&["one", "two"]).await.unwrap();
    sim.set_disk_full(true);
    // Appends may go on into the space the log wrote ahead, then stop.
    let mut acknowledged = vec![b"one".to_vec(), b"two".to_vec()];
    let error = loop {
        let record = format!("{:0>1000}", acknowledged.len()).into_bytes();
        match log.append(&[&record]).await {
            Ok(_) => acknowledged.push(record),
            Err(error) => break error,
        }
        assert!(acknowledged.len() < 10_000, "the disk never filled up");
    };
    match &error {
        LogError::Poisoned { cause } => assert_eq!(cause.kind(), ErrorKind::StorageFull),
        other => panic!("expected the log to stop, got {other}"),
    }
    assert!(error.to_string().contains("full"), "{error}");
    // Refused from now on, even once there is room again.
    sim.set_disk_full(false);
    assert!(matches!(
        log.append(&["four"]).await,
        Err(LogError::Poisoned { .. })
    ));
    assert_eq!(read_all(&log), acknowledged);
    drop(log);
    sim.power_loss();
    let log = SegmentLog::open("/data", options).unwrap();
    assert_eq!(read_all(&log)[..acknowledged.len()], acknowledged);
    let next = log.next_offset();
    assert_eq!(log.append(&["five"]).await.unwrap().start, next);
}

/// A log of several segments where only the first `synced` records were
/// fsynced before a crash: the mark names the segment holding them, and all
/// later segments were never synced.
async fn crashed_across_segments(synced: usize, total: usize) -> (TempDir, PathBuf, Vec<Vec<u8>>) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let records: Vec<Vec<u8>> = (0..total).map(record).collect();
    let log = open(&dir).unwrap();
    log.append(&records[..synced]).await.unwrap();
    log.sync().await.unwrap();
    let mark = fs::read(dir.join("SYNCED")).unwrap();
    for chunk in records[synced..].chunks(5) {
        log.append(chunk).await.unwrap();
    }
    drop(log);
    fs::write(dir.join("SYNCED"), &mark).unwrap();
    (temp, dir, records)
}

#[tokio::test]
async fn a_torn_tail_spanning_segments_is_cut_and_the_segments_after_it_removed() {
    let (_temp, dir, records) = crashed_across_segments(20, 400).await;
    let bases = segment_bases(&dir);
    assert!(bases.len() >= 5, "{bases:?}");
    // Damage the first record of a segment written after the last fsync.
    let torn = bases[3];
    flip_bit(&segment(&dir, torn), 40, 0);

    let report = SegmentLog::verify(&dir, &OsStorage).unwrap();
    assert!(report.is_healthy(), "{report:?}");
    assert_eq!(report.torn_tail.unwrap().file, segment(&dir, torn));
    assert_eq!(report.offsets.end, torn);

    let log = open(&dir).unwrap();
    assert_eq!(read_all(&log), records[..torn as usize]);
    assert_eq!(segment_bases(&dir), bases[..4]);
    assert_eq!(log.append(&["after"]).await.unwrap().start, Offset(torn));
}

#[tokio::test]
async fn a_missing_unsynced_segment_ends_the_log_where_it_was() {
    let (_temp, dir, records) = crashed_across_segments(20, 400).await;
    let bases = segment_bases(&dir);
    fs::remove_file(segment(&dir, bases[2])).unwrap();
    let log = open(&dir).unwrap();
    assert_eq!(read_all(&log), records[..bases[2] as usize]);
    assert_eq!(segment_bases(&dir), bases[..2]);
}

#[tokio::test]
async fn damage_before_the_mark_in_a_sealed_segment_is_not_mistaken_for_a_torn_tail() {
    let (_temp, dir, _) = crashed_across_segments(200, 400).await;
    let bases = segment_bases(&dir);
    let first = segment(&dir, bases[0]);
    let len = fs::metadata(&first).unwrap().len();
    flip_bit(&first, 40, 0);
    assert!(!SegmentLog::verify(&dir, &OsStorage).unwrap().is_healthy());
    let log = open(&dir).unwrap();
    assert!(matches!(
        log.read(Offset(0), 1),
        Err(LogError::Corrupt { .. })
    ));
    drop(log);
    assert_eq!(fs::metadata(&first).unwrap().len(), len);
    assert_eq!(segment_bases(&dir), bases);
}
