//! Helpers shared by the test suites.
#![allow(dead_code)] // each test crate uses a different part of this module

pub mod redis_server;
pub mod resp;
pub mod streams;

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

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

/// A file-backed log, as the tests open it.
pub trait FileLog: Log + Sized {
    /// The name of its directory or file in a test's temporary directory.
    const NAME: &'static str;
    fn open_at(path: &Path, options: LogOptions) -> Result<Self, LogError>;
}

impl FileLog for SegmentLog {
    const NAME: &'static str = "log";
    fn open_at(path: &Path, options: LogOptions) -> Result<Self, LogError> {
        SegmentLog::open(path, options)
    }
}

impl FileLog for TextLog {
    const NAME: &'static str = "log.txt";
    fn open_at(path: &Path, options: LogOptions) -> Result<Self, LogError> {
        TextLog::open(path, options)
    }
}

/// A file-backed log at `path`: in a temporary directory on disk, or in a
/// simulated storage (which the options then name).
pub struct OnPath<L> {
    pub path: PathBuf,
    _temp: Option<TempDir>,
    _log: PhantomData<L>,
}

pub type Segment = OnPath<SegmentLog>;
pub type Text = OnPath<TextLog>;

impl<L: FileLog> OnPath<L> {
    pub fn on_disk() -> Self {
        let temp = tempfile::tempdir().unwrap();
        OnPath {
            path: temp.path().join(L::NAME),
            _temp: Some(temp),
            _log: PhantomData,
        }
    }

    pub fn simulated() -> Self {
        OnPath {
            path: Path::new("/data").join(L::NAME),
            _temp: None,
            _log: PhantomData,
        }
    }
}

impl<L: FileLog> Backend for OnPath<L> {
    type L = L;
    const PERSISTENT: bool = true;
    fn open(&self, options: LogOptions) -> Result<L, LogError> {
        L::open_at(&self.path, options)
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
