//! Memory stays bounded as a segment log grows: reading a log many times
//! larger than the mapped-segment limit does not grow the process's
//! resident memory with it. (Alone in its test binary so that no other test
//! shares the process whose memory it measures.)

use orcastra::log::{FsyncPolicy, Log, LogOptions, Offset, SegmentLog};

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test]
async fn reading_a_large_log_keeps_memory_bounded() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions::default()
        .fsync(FsyncPolicy::Never)
        .segment_bytes(8 * MIB)
        .max_mapped_segments(2);
    let log = SegmentLog::open(dir.path(), options).unwrap();
    let batch = vec![vec![7u8; 4000]; 256];
    while log.next_offset().0 < 256 * MIB / 4016 {
        log.append(&batch).await.unwrap();
    }
    let before = resident_bytes();
    let mut at = Offset(0);
    let mut read = 0;
    while at < log.next_offset() {
        let records = log.read(at, 512).unwrap();
        read += records.iter().map(|r| r.len() as u64).sum::<u64>();
        at = at + records.len() as u64;
    }
    let grown = resident_bytes().saturating_sub(before);
    assert!(read >= 256 * MIB - 4 * MIB, "read only {read} bytes");
    // The active segment and two sealed ones may be resident: about 24 MiB.
    assert!(
        grown < 64 * MIB,
        "reading 256 MiB grew memory by {} MiB",
        grown / MIB
    );
}
