//! The log: an append-only sequence of records addressed by offset.
//!
//! Everything in Orcastra is stored in logs. A [`Log`] appends batches of
//! opaque byte records, gives each the next [`Offset`], and reads them back
//! from any offset still retained. The layers above store Cap'n Proto
//! messages in the records (see [`crate::record`]).
//!
//! Three backends pass the same behaviour suite:
//! - [`SegmentLog`], the default: memory-mapped segment files with a sparse
//!   index, checksummed frames, crash recovery and group commit;
//! - [`MemoryLog`], for tests and benchmarks;
//! - [`TextLog`], one record per line of a text file you can `cat`.
//!
//! Offsets are dense: the records of a log are exactly the offsets
//! `start_offset()..next_offset()`, and retention only ever removes a prefix.

mod commit;
mod error;
mod memory;
pub mod segment;
pub mod storage;
mod synced;
mod text;

use std::fmt;
use std::future::Future;
use std::io;
use std::ops::{Add, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use commit::FsyncLatency;
pub use error::{CorruptKind, LogError};
pub use memory::MemoryLog;
pub use segment::SegmentLog;
pub use text::TextLog;

use storage::{OsStorage, Storage};

/// The position of a record in a log: 0 for the first record ever appended,
/// then one more for each record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub u64);

impl Add<u64> for Offset {
    type Output = Offset;

    fn add(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// When a log calls `fdatasync`, and so what an acknowledged append promises.
///
/// | policy | an append returns once | a power loss may lose |
/// |---|---|---|
/// | `Never` | written to the OS | anything the OS had not flushed |
/// | `Interval(d)` | written to the OS | up to `d` of appends |
/// | `Batch` | durable | nothing acknowledged |
/// | `Always` | durable | nothing acknowledged |
///
/// Every policy survives a crash of the process (`kill -9`), since written
/// data is in the OS page cache. Under `Batch` and `Always` readers see a
/// record only once it is durable, so nothing a reader saw can be lost,
/// except records shown early on purpose ([`Log::show_early`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Never fsync, except when a segment is sealed and when the log closes.
    Never,
    /// Fsync in the background every interval.
    Interval(Duration),
    /// Group commit: an append waits for an fsync that covers it, and all
    /// appends that arrive while one fsync runs share the next one.
    Batch,
    /// Each append waits for an fsync of its own, shared with nobody: the
    /// simple reference that `Batch` is measured against. Same guarantee as
    /// `Batch`, with far lower throughput under concurrency.
    Always,
}

impl FsyncPolicy {
    /// Whether an append waits for its data to be durable.
    pub(crate) fn waits(self) -> bool {
        matches!(self, FsyncPolicy::Batch | FsyncPolicy::Always)
    }
}

/// Settings for opening a file-backed log ([`SegmentLog`] or [`TextLog`]).
///
/// ```
/// use orcastra::log::{FsyncPolicy, LogOptions};
///
/// let options = LogOptions::default()
///     .fsync(FsyncPolicy::Never)
///     .segment_bytes(8 << 20);
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct LogOptions {
    fsync: FsyncPolicy,
    segment_bytes: u64,
    index_interval_bytes: u64,
    max_record_bytes: usize,
    max_mapped_segments: usize,
    storage: Arc<dyn Storage>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            fsync: FsyncPolicy::Batch,
            segment_bytes: 64 << 20,
            index_interval_bytes: 4096,
            max_record_bytes: 8 << 20,
            max_mapped_segments: 8,
            storage: Arc::new(OsStorage),
        }
    }
}

/// The largest segment: positions in the index are 32-bit.
const MAX_SEGMENT_BYTES: u64 = 1 << 30;

/// The most `max_record_bytes` may be: half the largest segment.
pub(crate) const MAX_RECORD_BYTES: usize = (MAX_SEGMENT_BYTES / 2) as usize;

impl LogOptions {
    /// When to fsync (default [`FsyncPolicy::Batch`]).
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    /// Roll to a new segment once the active one reaches this size
    /// (default 64 MiB, at most 1 GiB). Segment logs only.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Bytes of records between two entries of the sparse index
    /// (default 4 KiB). Segment logs only.
    pub fn index_interval_bytes(mut self, bytes: u64) -> Self {
        self.index_interval_bytes = bytes;
        self
    }

    /// The largest record an append accepts (default 8 MiB).
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// How many sealed segments stay mapped at once (default 8); this bounds
    /// the memory a log's readers use, whatever the log's size. Segment logs only.
    pub fn max_mapped_segments(mut self, count: usize) -> Self {
        self.max_mapped_segments = count;
        self
    }

    /// The file layer (default [`OsStorage`]); tests pass a
    /// [`storage::SimStorage`].
    pub fn storage(mut self, storage: impl Storage) -> Self {
        self.storage = Arc::new(storage);
        self
    }

    /// The segment size these options set.
    pub(crate) fn segment_bytes_value(&self) -> u64 {
        self.segment_bytes
    }

    /// The file layer these options open logs on.
    pub(crate) fn storage_ref(&self) -> &dyn Storage {
        &*self.storage
    }

    fn validate(&self) -> Result<(), LogError> {
        let bad = |what: String| Err(LogError::InvalidOption(what));
        if !(4096..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad(format!(
                "segment_bytes must be between 4 KiB and 1 GiB, not {}",
                self.segment_bytes
            ));
        }
        if !(64..=self.segment_bytes).contains(&self.index_interval_bytes) {
            return bad(format!(
                "index_interval_bytes must be between 64 and segment_bytes, not {}",
                self.index_interval_bytes
            ));
        }
        if self.max_record_bytes > MAX_RECORD_BYTES {
            return bad(format!(
                "max_record_bytes must be at most 512 MiB, not {}",
                self.max_record_bytes
            ));
        }
        if self.max_mapped_segments == 0 {
            return bad("max_mapped_segments must be at least 1".into());
        }
        if let FsyncPolicy::Interval(d) = self.fsync
            && d.is_zero()
        {
            return bad("the fsync interval must be longer than zero".into());
        }
        Ok(())
    }
}

/// An append-only, offset-addressed sequence of records.
///
/// Writers are serialized inside the log; readers never wait for them. All
/// methods take `&self`, so a log is shared as an `Arc<L>` or by reference.
///
/// ```
/// use orcastra::log::{Log, MemoryLog, Offset};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let log = MemoryLog::new();
/// let offsets = log.append(&["first", "second"]).await.unwrap();
/// assert_eq!(offsets, Offset(0)..Offset(2));
/// let records = log.read(Offset(1), 10).unwrap();
/// assert_eq!(records, vec!["second"]);
/// # }
/// ```
pub trait Log: Send + Sync + 'static {
    /// Writes `records` at the end of the log and returns their offsets,
    /// without waiting for them to be durable: pair it with
    /// [`wait_durable`](Log::wait_durable), or use [`append`](Log::append).
    /// Splitting the two lets a caller release its own locks before waiting.
    ///
    /// Either the whole batch is written or, on error, none of it is
    /// acknowledged (after a failed write the log is poisoned, see
    /// [`LogError::Poisoned`]).
    fn append_nowait<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Range<Offset>, LogError>;

    /// Resolves once every record before `end` is as durable as the fsync
    /// policy promises (at once under `Never` and `Interval`).
    fn wait_durable(&self, end: Offset) -> impl Future<Output = Result<(), LogError>> + Send;

    /// Appends `records` and returns once they are durable under the policy.
    fn append<R: AsRef<[u8]> + Sync>(
        &self,
        records: &[R],
    ) -> impl Future<Output = Result<Range<Offset>, LogError>> + Send {
        async move {
            let offsets = self.append_nowait(records)?;
            self.wait_durable(offsets.end).await?;
            Ok(offsets)
        }
    }

    /// Fsyncs everything written so far, whatever the policy.
    fn sync(&self) -> impl Future<Output = Result<(), LogError>> + Send;

    /// Hands every record appended so far to the operating system without
    /// waiting for an fsync, so that they survive a crash of the process
    /// (not a power loss). Only a backend that gathers small appends until
    /// its next fsync has anything to do.
    fn flush(&self) -> Result<(), LogError> {
        Ok(())
    }

    /// Lets readers see `written`, the records an
    /// [`append_nowait`](Log::append_nowait) just returned, before they are
    /// durable, if every record before them is visible already (otherwise
    /// they become visible once durable, like any). They are handed to the
    /// OS first, so a crash of the process keeps them; a power loss may
    /// take them. Only for records whose loss does no harm: copies of
    /// records durable elsewhere, written again if lost. Nothing to do
    /// where records are visible once written anyway (policies that do not
    /// wait for durability, the memory log).
    fn show_early(&self, written: Range<Offset>) -> Result<(), LogError> {
        let _ = written;
        Ok(())
    }

    /// Up to `max_records` records starting at `from`, in order; the record
    /// at index `i` has offset `from + i`. Empty at the end of the log.
    ///
    /// Records come back as [`Bytes`] that share the log's memory where the
    /// backend allows (the segment log's maps), so holding them is cheap.
    fn read(&self, from: Offset, max_records: usize) -> Result<Vec<Bytes>, LogError>;

    /// The first offset still in the log.
    fn start_offset(&self) -> Offset;

    /// The offset the next visible record will have: the end of what readers see.
    fn next_offset(&self) -> Offset;

    /// Removes records before `offset`. A backend may keep some of them (the
    /// segment log removes whole segments only); it never removes more.
    fn drop_before(&self, offset: Offset) -> Result<(), LogError>;

    /// Resolves once a record at `offset` is visible, that is once
    /// `next_offset() > offset`. Fails if the log stops accepting writes.
    fn wait_for(&self, offset: Offset) -> impl Future<Output = Result<(), LogError>> + Send;
}

/// Adds what was being done, and to which file, to an I/O error.
fn context(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let path = path.to_path_buf();
    move |e| {
        io::Error::new(
            e.kind(),
            format!("could not {action} {}: {e}", path.display()),
        )
    }
}

/// Whether `found` is what an interrupted write of `expected` can leave:
/// a prefix of it, with any of its bytes possibly still zero.
fn is_interrupted_write(found: &[u8], expected: &[u8]) -> bool {
    found.len() <= expected.len()
        && found
            .iter()
            .zip(expected)
            .all(|(&found, &wanted)| found == 0 || found == wanted)
}

/// Refuses a batch with a record over `max` bytes.
fn check_record_sizes<R: AsRef<[u8]>>(records: &[R], max: usize) -> Result<(), LogError> {
    match records.iter().map(|r| r.as_ref().len()).max() {
        Some(size) if size > max => Err(LogError::RecordTooLarge { size, max }),
        _ => Ok(()),
    }
}

/// Checks a read request against the visible range `start..end` and returns
/// where the read stops, or `None` for an empty read.
fn read_bounds(
    from: Offset,
    max_records: usize,
    start: Offset,
    end: Offset,
) -> Result<Option<Offset>, LogError> {
    if from < start {
        return Err(LogError::OffsetTrimmed {
            requested: from.0,
            start: start.0,
        });
    }
    if from > end {
        return Err(LogError::OffsetPastEnd {
            requested: from.0,
            end: end.0,
        });
    }
    // A damaged file can claim offsets near the top of u64.
    let stop = end.min(Offset(from.0.saturating_add(max_records as u64)));
    Ok((stop > from).then_some(stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_near_the_largest_offset_do_not_overflow() {
        let (start, end) = (Offset(u64::MAX - 2), Offset(u64::MAX));
        assert_eq!(read_bounds(start, 64, start, end).unwrap(), Some(end));
        assert_eq!(read_bounds(end, 64, start, end).unwrap(), None);
    }
}

/// What [`SegmentLog::verify`] and [`TextLog::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// How many data files were checked.
    pub files: usize,
    /// How many valid records they hold.
    pub records: u64,
    /// The first and next offset of the valid records.
    pub offsets: Range<u64>,
    /// Damage that loses or endangers records: the log needs attention.
    pub damage: Vec<Damage>,
    /// An incomplete write at the end, as a crash leaves it. Not an error:
    /// opening the log cuts it off.
    pub torn_tail: Option<Damage>,
    /// Problems that opening the log repairs on its own (a damaged index, a
    /// stray file), in words.
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// True when no record is damaged (a torn tail and notes are fine).
    pub fn is_healthy(&self) -> bool {
        self.damage.is_empty()
    }
}

/// One damaged place in a log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The file.
    pub file: PathBuf,
    /// Byte position in the file.
    pub position: u64,
    /// What is wrong there.
    pub kind: CorruptKind,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.file.display(),
            self.position,
            self.kind
        )
    }
}
