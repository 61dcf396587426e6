//! Opens arbitrary bytes as the active segment of a segment log (with the
//! rest of the input as its index) and as a text log, then reads and
//! verifies whatever opened. Any input must give a log or an error, never a
//! panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use orcastra::log::storage::{OpenMode, SimStorage, Storage};
use orcastra::log::{FsyncPolicy, Log, LogOptions, Offset, SegmentLog, TextLog};

fn write(sim: &SimStorage, path: &str, bytes: &[u8]) {
    let path = Path::new(path);
    sim.create_dir_all(path.parent().unwrap()).unwrap();
    let file = sim.open(path, OpenMode::Create).unwrap();
    file.write_all_at(bytes, 0).unwrap();
}

fn read_everything(log: &impl Log) {
    let mut at = log.start_offset();
    while at < log.next_offset() {
        match log.read(at, 64) {
            Ok(records) if !records.is_empty() => at = at + records.len() as u64,
            _ => break,
        }
    }
    let _ = log.read(Offset(u64::MAX), 1);
}

fuzz_target!(|data: &[u8]| {
    // The first two bytes say where the segment ends and the index begins.
    let (split, rest) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])).min(rest.len()), rest),
        _ => (0, data),
    };
    let (segment, index) = rest.split_at(split);

    let sim = SimStorage::new(0);
    write(&sim, "/log/00000000000000000000.log", segment);
    write(&sim, "/log/00000000000000000000.index", index);
    let options = LogOptions::default()
        .fsync(FsyncPolicy::Never)
        .storage(sim.clone());
    let _ = SegmentLog::verify("/log", &sim);
    if let Ok(log) = SegmentLog::open("/log", options.clone()) {
        read_everything(&log);
    }

    write(&sim, "/text/log.txt", rest);
    let _ = TextLog::verify("/text/log.txt", &sim);
    if let Ok(log) = TextLog::open("/text/log.txt", options) {
        read_everything(&log);
    }
});
