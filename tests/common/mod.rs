//! Helpers shared by the log test suites.
#![allow(dead_code)] // each test crate uses a different part of this module

use std::path::PathBuf;

use orcastra::log::{Log, LogError, LogOptions, MemoryLog, SegmentLog, TextLog};
use tempfile::TempDir;

/// A place a log lives, which can open (and for files, reopen) it.
pub trait Backend {
    type L: Log;
    /// Whether records survive closing and reopening.
    const PERSISTENT: bool;
    fn open(&self, options: LogOptions) -> Result<Self::L, LogError>;
}

pub struct Memory;

impl Backend for Memory {
    type L = MemoryLog;
    const PERSISTENT: bool = false;
    fn open(&self, options: LogOptions) -> Result<MemoryLog, LogError> {
        Ok(MemoryLog::with_options(&options))
    }
}

/// A segment log in a directory (on disk, or at `path` in a simulated storage).
pub struct Segment {
    pub path: PathBuf,
    _temp: Option<TempDir>,
}

impl Segment {
    pub fn on_disk() -> Self {
        let temp = tempfile::tempdir().unwrap();
        Segment {
            path: temp.path().join("log"),
            _temp: Some(temp),
        }
    }

    pub fn simulated() -> Self {
        Segment {
            path: PathBuf::from("/data/log"),
            _temp: None,
        }
    }
}

impl Backend for Segment {
    type L = SegmentLog;
    const PERSISTENT: bool = true;
    fn open(&self, options: LogOptions) -> Result<SegmentLog, LogError> {
        SegmentLog::open(&self.path, options)
    }
}

/// A text log in a file (on disk, or at `path` in a simulated storage).
pub struct Text {
    pub path: PathBuf,
    _temp: Option<TempDir>,
}

impl Text {
    pub fn on_disk() -> Self {
        let temp = tempfile::tempdir().unwrap();
        Text {
            path: temp.path().join("log.txt"),
            _temp: Some(temp),
        }
    }

    pub fn simulated() -> Self {
        Text {
            path: PathBuf::from("/data/log.txt"),
            _temp: None,
        }
    }
}

impl Backend for Text {
    type L = TextLog;
    const PERSISTENT: bool = true;
    fn open(&self, options: LogOptions) -> Result<TextLog, LogError> {
        TextLog::open(&self.path, options)
    }
}

/// Small segments and a dense index, so a few records exercise rolling and
/// index lookups.
pub fn small_segments() -> LogOptions {
    LogOptions::default()
        .segment_bytes(4096)
        .index_interval_bytes(64)
}

/// Every record of `log`, from its start.
pub fn read_all(log: &impl Log) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    let mut at = log.start_offset();
    while at < log.next_offset() {
        let batch = log.read(at, 100).unwrap();
        assert!(!batch.is_empty(), "no progress reading at {at}");
        at = at + batch.len() as u64;
        records.extend(batch.into_iter().map(|b| b.to_vec()));
    }
    records
}
