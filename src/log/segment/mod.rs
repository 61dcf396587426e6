//! The segment log: Orcastra's default, durable backend.
//!
//! A log is a directory (its byte-level format is in `docs/format.md`):
//!
//! ```text
//! LOCK                          held by the one process that owns the log
//! SYNCED                        how far the log is known to be durable
//! 00000000000000000000.log      a segment: records from offset 0
//! 00000000000000000000.index    its sparse index
//! 00000000000000081920.log      the next segment, from offset 81920
//! 00000000000000081920.index
//! ```
//!
//! Records are appended to the last (active) segment with ordinary writes;
//! readers see them through memory maps. When the active segment is full it
//! is sealed and a new one is started. Sealed segments never change, and
//! retention deletes whole ones from the front.
//!
//! **Durability.** All fsyncs happen on the log's fsync thread, never on the
//! append path: it fsyncs sealed segments (with their index and the
//! directory) in order, then the active one, then records how far that got
//! in `SYNCED`. How often it runs, and whether an append waits for it, is the
//! [`FsyncPolicy`](crate::log::FsyncPolicy). When appends wait for it anyway
//! (`Batch`, `Always`), small appends are gathered in memory and written by
//! the fsync thread just before its fsync: one write for a whole group.
//!
//! **Recovery** (see `recovery`) scans only what may be torn: the log after
//! the `SYNCED` mark. Damage there is cut off as a torn tail; damage before
//! it is damage to acknowledged data, and opening fails naming the segment
//! and byte position. Damage in sealed segments is found when it is read (or
//! by [`SegmentLog::verify`]) and is likewise an error, never skipped.
//!
//! **Failures.** After a failed write or fsync the log is poisoned and
//! refuses further appends until it is reopened (see [`LogError::Poisoned`]).
//!
//! **Memory.** Only the active segment and up to `max_mapped_segments` sealed
//! ones are mapped at a time, and only their index is held in memory, so the
//! memory a log needs does not grow with its size.

mod files;
mod frame;
mod index;
mod recovery;
mod verify;

use std::io::{self, IoSlice};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lru::LruCache;
use parking_lot::{Mutex, RwLock};

use self::files::{LOCK_FILE, SYNCED_FILE, index_path, segment_path, temp_index_path};
use self::frame::HEADER_LEN;
use self::index::{IndexEntry, Indexer};
use super::commit::{Committer, SyncTarget};
use super::storage::{LockGuard, Mapping, OpenMode, SharedFile, Storage};
use super::synced::{Mark, SyncedMark};
use super::{
    CorruptKind, Log, LogError, LogOptions, Offset, VerifyReport, check_record_sizes, context,
    read_bounds,
};

/// One append may write at most this much, so positions in a segment fit in 32 bits.
const MAX_BATCH_BYTES: u64 = 2 << 30;
/// Payloads at least this large are written from the caller's buffer (a
/// vectored write) instead of being copied next to their frame headers.
const DIRECT_PAYLOAD_BYTES: usize = 4096;
/// Index entries are written to the index file once this many bytes of them
/// are pending (and when the segment is sealed or synced).
const INDEX_WRITE_BYTES: usize = 4096;
/// Gathered appends are written once this many bytes of them are waiting.
const GATHER_BYTES: usize = 1 << 20;
/// How far ahead of its records the active segment is filled with zeros.
/// An fdatasync of a file that grew must also commit its new size to the
/// file system's journal; into space already written it only flushes data,
/// which takes a third less time here (ext4). Recovery and readers take
/// zeros after the last frame for the end of the records.
const FILL_AHEAD_BYTES: u64 = 1 << 20;

/// A durable [`Log`] in a directory of segment files. See the [module docs](self).
///
/// ```
/// use orcastra::log::{FsyncPolicy, Log, LogOptions, Offset, SegmentLog};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let log = SegmentLog::open(dir.path(), LogOptions::default())?;
/// log.append(&["hello", "world"]).await?;
/// drop(log);
///
/// let log = SegmentLog::open(dir.path(), LogOptions::default())?;
/// assert_eq!(log.read(Offset(0), 10)?, vec!["hello", "world"]);
/// # Ok(())
/// # }
/// ```
pub struct SegmentLog {
    inner: Arc<Inner>,
    commit: Committer,
}

/// The state shared with the fsync thread.
struct Inner {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    options: LogOptions,
    synced: SyncedMark,
    segments: RwLock<Segments>,
    writer: Mutex<Writer>,
    /// Sealed segments currently mapped, most recently used first.
    views: Mutex<LruCache<u64, Arc<SealedView>>>,
    _lock: LockGuard,
}

struct Segments {
    sealed: Vec<Sealed>,
    active: Arc<Active>,
}

#[derive(Clone, Copy, Debug)]
struct Sealed {
    base: u64,
    /// The base of the next segment.
    end: u64,
}

struct SealedView {
    data: Bytes,
    index: Vec<IndexEntry>,
}

/// The segment that takes appends.
struct Active {
    base: u64,
    path: PathBuf,
    file: SharedFile,
    /// Bytes written; stored before the records become visible.
    len: AtomicU64,
    map: RwLock<ActiveMap>,
    index: RwLock<Vec<IndexEntry>>,
}

struct ActiveMap {
    mapping: Arc<dyn Mapping>,
    capacity: u64,
}

/// What only the appender (and, briefly, the fsync thread) touches.
struct Writer {
    active: Arc<Active>,
    index_file: SharedFile,
    /// Bytes of the index file written so far.
    index_len: u64,
    /// Index entries not yet written to the index file: they are written a
    /// few kilobytes at a time, not with every append.
    index_pending: Vec<u8>,
    indexer: Indexer,
    next_offset: u64,
    /// Where the next frame goes: the active segment's written length plus
    /// the frames still in `unwritten`.
    end: u64,
    /// The active segment file's size: its frames, then zeros (see
    /// `FILL_AHEAD_BYTES`).
    filled: u64,
    /// Under policies whose appends wait for an fsync, small appends are
    /// gathered here and written by the fsync thread just before its fsync:
    /// one write for many appends. Readers cannot miss them, since they see
    /// a record only once it is durable.
    unwritten: Vec<u8>,
    gather: bool,
    /// Sealed segments the fsync thread has not synced yet, oldest first.
    unsynced: Vec<Unsynced>,
    /// Buffers kept between appends.
    frames: Vec<u8>,
    direct: Vec<(usize, usize)>,
    index_entries: Vec<IndexEntry>,
}

/// A sealed segment waiting for its fsync.
struct Unsynced {
    segment: Arc<Active>,
    index_file: SharedFile,
}

/// A segment about to take appends, as creation or recovery leaves it.
struct OpenSegment {
    base: u64,
    path: PathBuf,
    file: SharedFile,
    index_file: SharedFile,
    /// Bytes of the segment that hold valid frames.
    len: u64,
    entries: Vec<IndexEntry>,
    indexer: Indexer,
    next_offset: u64,
}

impl OpenSegment {
    /// Maps the segment and makes it the active one.
    fn activate(self, options: &LogOptions) -> io::Result<(Arc<Active>, Writer)> {
        let capacity = options.segment_bytes.max(self.len);
        let mapping = self.file.map(capacity)?;
        let index_len = (self.entries.len() * index::ENTRY_LEN) as u64;
        let active = Arc::new(Active {
            base: self.base,
            path: self.path,
            file: self.file,
            len: AtomicU64::new(self.len),
            map: RwLock::new(ActiveMap { mapping, capacity }),
            index: RwLock::new(self.entries),
        });
        let writer = Writer {
            active: Arc::clone(&active),
            index_file: self.index_file,
            index_len,
            index_pending: Vec::new(),
            indexer: self.indexer,
            next_offset: self.next_offset,
            end: self.len,
            filled: self.len,
            unwritten: Vec::new(),
            gather: options.fsync.waits(),
            unsynced: Vec::new(),
            frames: Vec::new(),
            direct: Vec::new(),
            index_entries: Vec::new(),
        };
        Ok((active, writer))
    }
}

impl SegmentLog {
    /// Opens the log in `dir`, creating it if needed, and recovers it after a
    /// crash. Fails if another log owns the directory, if the directory holds
    /// files that are not an Orcastra log, or if acknowledged records are damaged.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Self, LogError> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let storage = Arc::clone(&options.storage);
        files::prepare_dir(&*storage, &dir)?;
        let listing = files::Listing::read(&*storage, &dir)?;
        listing.check_ours(&dir)?;
        let lock = storage
            .lock(&dir.join(LOCK_FILE))
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock => LogError::Locked { path: dir.clone() },
                _ => LogError::io("lock", dir.join(LOCK_FILE))(e),
            })?;
        listing.clean_up(&*storage, &dir);
        let (synced, mark) = SyncedMark::open(&*storage, &dir.join(SYNCED_FILE))?;
        let recovered = recovery::recover(&*storage, &dir, &listing.segments, mark, &options)?;
        // Recovery made every kept segment durable; make the names durable
        // too before the mark vouches for them.
        storage
            .sync_dir(&dir)
            .map_err(LogError::io("fsync the directory", &dir))?;
        synced
            .store(Mark {
                key: recovered.active.base,
                position: recovered.active.len.load(Ordering::Relaxed),
            })
            .map_err(LogError::io("write", dir.join(SYNCED_FILE)))?;

        let next_offset = recovered.writer.next_offset;
        let cache_size = NonZeroUsize::new(options.max_mapped_segments).expect("validated");
        let inner = Arc::new(Inner {
            dir,
            storage,
            synced,
            segments: RwLock::new(Segments {
                sealed: recovered.sealed,
                active: recovered.active,
            }),
            writer: Mutex::new(recovered.writer),
            views: Mutex::new(LruCache::new(cache_size)),
            options,
            _lock: lock,
        });
        let commit = Committer::start(inner.options.fsync, next_offset, inner.clone())
            .map_err(LogError::io("start the fsync thread for", &inner.dir))?;
        Ok(SegmentLog { inner, commit })
    }

    /// Checks every segment, checksum and index of the log in `dir` without
    /// changing anything (another process may own the log meanwhile).
    pub fn verify(dir: impl AsRef<Path>, storage: &dyn Storage) -> Result<VerifyReport, LogError> {
        verify::verify(dir.as_ref(), storage)
    }

    /// Poisons the log because of `cause` and returns the error for the caller.
    fn fail(&self, cause: io::Error) -> LogError {
        LogError::Poisoned {
            cause: self.commit.poison(cause),
        }
    }
}

impl Log for SegmentLog {
    fn append_nowait<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Range<Offset>, LogError> {
        check_record_sizes(records, self.inner.options.max_record_bytes)?;
        let bytes: u64 = records
            .iter()
            .map(|r| frame::frame_len(r.as_ref().len()) as u64)
            .sum();
        if bytes > MAX_BATCH_BYTES {
            return Err(LogError::BatchTooLarge {
                size: bytes,
                max: MAX_BATCH_BYTES,
            });
        }
        let mut writer = self.inner.writer.lock();
        self.commit.check()?;
        let len = writer.end;
        if len > HEADER_LEN && len + bytes > self.inner.options.segment_bytes {
            self.inner.roll(&mut writer).map_err(|e| self.fail(e))?;
            // Seal it in the background, whatever the policy.
            self.commit.request_sync();
        }
        let first = writer.next_offset;
        self.inner
            .write_batch(&mut writer, records)
            .map_err(|e| self.fail(e))?;
        self.commit.written(writer.next_offset);
        Ok(Offset(first)..Offset(writer.next_offset))
    }

    async fn wait_durable(&self, end: Offset) -> Result<(), LogError> {
        self.commit.wait_durable(end.0).await
    }

    async fn sync(&self) -> Result<(), LogError> {
        self.commit.sync().await
    }

    fn flush(&self) -> Result<(), LogError> {
        let mut writer = self.inner.writer.lock();
        self.commit.check()?;
        self.inner
            .write_unwritten(&mut writer)
            .map_err(|e| self.fail(e))
    }

    fn show_early(&self, written: Range<Offset>) -> Result<(), LogError> {
        // Also past them already under a policy that does not wait.
        if self.commit.visible() != written.start.0 {
            return Ok(());
        }
        let mut writer = self.inner.writer.lock();
        self.commit.check()?;
        // Readers read the file: gathered frames go to it first.
        self.inner
            .write_unwritten(&mut writer)
            .map_err(|e| self.fail(e))?;
        self.commit.show_early(written.start.0, written.end.0);
        Ok(())
    }

    fn read(&self, from: Offset, max_records: usize) -> Result<Vec<Bytes>, LogError> {
        let end = Offset(self.commit.visible());
        let Some(stop) = read_bounds(from, max_records, self.start_offset(), end)? else {
            return Ok(Vec::new());
        };
        // Bounded: a caller may ask for a huge batch of a huge log.
        let mut records = Vec::with_capacity((stop.0 - from.0).min(4096) as usize);
        let mut at = from.0;
        while at < stop.0 {
            self.inner.read_segment(at, stop.0, &mut records)?;
            at = from.0 + records.len() as u64;
        }
        Ok(records)
    }

    fn start_offset(&self) -> Offset {
        Offset(self.inner.segments.read().start())
    }

    fn next_offset(&self) -> Offset {
        Offset(self.commit.visible())
    }

    fn drop_before(&self, offset: Offset) -> Result<(), LogError> {
        let doomed: Vec<Sealed> = {
            let mut segments = self.inner.segments.write();
            let count = segments.sealed.partition_point(|s| s.end <= offset.0);
            segments.sealed.drain(..count).collect()
        };
        if doomed.is_empty() {
            return Ok(());
        }
        let (dir, storage) = (&self.inner.dir, &*self.inner.storage);
        for segment in &doomed {
            self.inner.views.lock().pop(&segment.base);
            files::remove_segment(storage, dir, segment.base)?;
        }
        storage
            .sync_dir(dir)
            .map_err(LogError::io("fsync the directory", dir))
    }

    async fn wait_for(&self, offset: Offset) -> Result<(), LogError> {
        self.commit.wait_visible(offset.0).await
    }
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        // The fsync thread must not run alongside the final sync. A clean
        // close leaves everything durable and marked as such; a poisoned log
        // must not mark anything, as its data may be lost already.
        self.commit.stop();
        if self.commit.check().is_ok()
            && let Err(e) = self.inner.trim().and_then(|()| self.inner.sync_written())
        {
            tracing::warn!(dir = %self.inner.dir.display(), error = %e, "final fsync failed");
        }
    }
}

impl SyncTarget for Inner {
    fn sync_written(&self) -> io::Result<u64> {
        let (sealed, active, len, end) = {
            let mut writer = self.writer.lock();
            self.write_unwritten(&mut writer)?;
            self.write_index(&mut writer)?;
            let active = Arc::clone(&writer.active);
            let len = active.len.load(Ordering::Relaxed);
            (
                std::mem::take(&mut writer.unsynced),
                active,
                len,
                writer.next_offset,
            )
        };
        // In order: the mark may only name a segment once all before it are durable.
        for Unsynced {
            segment,
            index_file,
        } in &sealed
        {
            segment
                .file
                .sync_data()
                .map_err(context("fsync", &segment.path))?;
            index_file
                .sync_data()
                .map_err(context("fsync", &index_path(&self.dir, segment.base)))?;
        }
        if !sealed.is_empty() {
            self.storage
                .sync_dir(&self.dir)
                .map_err(context("fsync the directory", &self.dir))?;
        }
        active
            .file
            .sync_data()
            .map_err(context("fsync", &active.path))?;
        self.synced
            .store(Mark {
                key: active.base,
                position: len,
            })
            .map_err(context("write", &self.dir.join(SYNCED_FILE)))?;
        Ok(end)
    }
}

impl Inner {
    /// Frames `records` and writes them (or gathers them, see
    /// `Writer::unwritten`) with their index entries. On error the caller
    /// poisons the log, so no state needs rolling back.
    fn write_batch<R: AsRef<[u8]>>(&self, writer: &mut Writer, records: &[R]) -> io::Result<()> {
        let Writer {
            active,
            indexer,
            next_offset,
            end,
            frames,
            direct,
            index_pending,
            index_entries,
            ..
        } = &mut *writer;
        let start = *end;
        frames.clear();
        direct.clear();
        index_entries.clear();
        for (i, record) in records.iter().enumerate() {
            let payload = record.as_ref();
            let offset = *next_offset + i as u64;
            if let Some(entry) = indexer.offer(offset - active.base, *end) {
                entry.encode(index_pending);
                index_entries.push(entry);
            }
            if payload.len() >= DIRECT_PAYLOAD_BYTES {
                frame::push_header(frames, offset, payload);
                direct.push((frames.len(), i));
                frame::push_padding(frames, payload.len());
            } else {
                frame::push_frame(frames, offset, payload);
            }
            *end += frame::frame_len(payload.len()) as u64;
        }
        active.make_room(*end)?;
        if !index_entries.is_empty() {
            active.index.write().extend_from_slice(index_entries);
        }
        *next_offset += records.len() as u64;
        if writer.gather && writer.direct.is_empty() {
            writer.unwritten.extend_from_slice(&writer.frames);
            if writer.unwritten.len() >= GATHER_BYTES {
                self.write_unwritten(writer)?;
            }
        } else {
            self.write_unwritten(writer)?;
            self.write_frames(writer, records, start)?;
        }
        if writer.index_pending.len() >= INDEX_WRITE_BYTES {
            self.write_index(writer)?;
        }
        self.fill_ahead(writer);
        Ok(())
    }

    /// Cuts the zeros written ahead off the active segment, as it is sealed
    /// or closed, so segments at rest end with their last record. Gathered
    /// frames must be written first.
    fn cut_filled(&self, writer: &mut Writer) -> io::Result<()> {
        if writer.filled > writer.end {
            writer
                .active
                .file
                .set_len(writer.end)
                .map_err(context("truncate", &writer.active.path))?;
            writer.filled = writer.end;
        }
        Ok(())
    }

    /// Writes everything gathered and cuts the zeros written ahead, before
    /// the log closes.
    fn trim(&self) -> io::Result<()> {
        let mut writer = self.writer.lock();
        self.write_unwritten(&mut writer)?;
        self.cut_filled(&mut writer)
    }

    /// Writes zeros past `writer.end` once the records come close to the
    /// end of the file, up to the size at which the segment is sealed. Only
    /// a speed-up: if it fails (a full disk), the records are written all
    /// the same, and fail themselves if there is no room for them.
    fn fill_ahead(&self, writer: &mut Writer) {
        let limit = self.options.segment_bytes;
        if writer.end + FILL_AHEAD_BYTES / 2 <= writer.filled || writer.end >= limit {
            return;
        }
        // In the zero-initialised data segment: costs no memory until read,
        // and then only the kernel's shared zero page.
        static ZEROS: [u8; FILL_AHEAD_BYTES as usize] = [0; FILL_AHEAD_BYTES as usize];
        let from = writer.filled.max(writer.end);
        let to = (writer.end + FILL_AHEAD_BYTES).min(limit);
        match writer
            .active
            .file
            .write_all_at(&ZEROS[..(to - from) as usize], from)
        {
            Ok(()) => writer.filled = to,
            Err(e) => {
                tracing::debug!(segment = %writer.active.path.display(), error = %e, "could not fill ahead")
            }
        }
    }

    /// Writes the frames in `writer.frames` at `start`, with the large
    /// payloads straight from `records`.
    fn write_frames<R: AsRef<[u8]>>(
        &self,
        writer: &Writer,
        records: &[R],
        start: u64,
    ) -> io::Result<()> {
        let (active, frames) = (&writer.active, &writer.frames);
        let written = if writer.direct.is_empty() {
            active.file.write_all_at(frames, start)
        } else {
            let mut slices = Vec::with_capacity(2 * writer.direct.len() + 1);
            let mut from = 0;
            for &(at, i) in &writer.direct {
                slices.push(IoSlice::new(&frames[from..at]));
                slices.push(IoSlice::new(records[i].as_ref()));
                from = at;
            }
            slices.push(IoSlice::new(&frames[from..]));
            active.file.write_all_vectored_at(&mut slices, start)
        };
        written.map_err(context("write to", &active.path))?;
        active.len.store(writer.end, Ordering::Release);
        Ok(())
    }

    /// Writes the gathered frames to the active segment.
    fn write_unwritten(&self, writer: &mut Writer) -> io::Result<()> {
        if writer.unwritten.is_empty() {
            return Ok(());
        }
        let active = &writer.active;
        let start = active.len.load(Ordering::Relaxed);
        active
            .file
            .write_all_at(&writer.unwritten, start)
            .map_err(context("write to", &active.path))?;
        active
            .len
            .store(start + writer.unwritten.len() as u64, Ordering::Release);
        writer.unwritten.clear();
        Ok(())
    }

    /// Writes the pending index entries to the active segment's index file.
    fn write_index(&self, writer: &mut Writer) -> io::Result<()> {
        if writer.index_pending.is_empty() {
            return Ok(());
        }
        writer
            .index_file
            .write_all_at(&writer.index_pending, writer.index_len)
            .map_err(context(
                "write to",
                &index_path(&self.dir, writer.active.base),
            ))?;
        writer.index_len += writer.index_pending.len() as u64;
        writer.index_pending.clear();
        Ok(())
    }

    /// Seals the active segment and starts a new one at the next offset. The
    /// sealed segment is fsynced later, by the fsync thread.
    fn roll(&self, writer: &mut Writer) -> io::Result<()> {
        self.write_unwritten(writer)?;
        self.write_index(writer)?;
        self.cut_filled(writer)?;
        let base = writer.next_offset;
        let path = segment_path(&self.dir, base);
        let (file, index_file) = files::create_segment(&*self.storage, &self.dir, base)
            .map_err(context("create", &path))?;
        let (active, fresh) = OpenSegment {
            base,
            path: path.clone(),
            file,
            index_file,
            len: HEADER_LEN,
            entries: Vec::new(),
            indexer: Indexer::new(self.options.index_interval_bytes, HEADER_LEN),
            next_offset: base,
        }
        .activate(&self.options)
        .map_err(context("map", &path))?;
        {
            let mut segments = self.segments.write();
            let sealed = Sealed {
                base: segments.active.base,
                end: base,
            };
            segments.sealed.push(sealed);
            segments.active = active;
        }
        let mut old = std::mem::replace(writer, fresh);
        std::mem::swap(&mut writer.frames, &mut old.frames);
        writer.unsynced = old.unsynced;
        writer.unsynced.push(Unsynced {
            segment: old.active,
            index_file: old.index_file,
        });
        Ok(())
    }

    /// Appends the records from `at` up to `stop` that lie in `at`'s segment to `out`.
    fn read_segment(&self, at: u64, stop: u64, out: &mut Vec<Bytes>) -> Result<(), LogError> {
        let (base, stop, data, (rel, pos)) = {
            let segments = self.segments.read();
            if at >= segments.active.base {
                let active = Arc::clone(&segments.active);
                drop(segments);
                let len = active.len.load(Ordering::Acquire) as usize;
                let data = active.map.read().mapping.bytes(len);
                let seek = index::seek(&active.index.read(), at - active.base);
                (active.base, stop, data, seek)
            } else {
                let found = segments.sealed.partition_point(|s| s.base <= at);
                let Some(segment) = found.checked_sub(1).map(|i| segments.sealed[i]) else {
                    return Err(LogError::OffsetTrimmed {
                        requested: at,
                        start: segments.start(),
                    });
                };
                drop(segments);
                let view = self.sealed_view(segment, at)?;
                let seek = index::seek(&view.index, at - segment.base);
                (segment.base, stop.min(segment.end), view.data.clone(), seek)
            }
        };
        let mut offset = base + rel;
        let mut pos = pos as usize;
        while offset < stop {
            let corrupt = |kind| self.corrupt(base, pos as u64, kind);
            if pos >= data.len() {
                return Err(corrupt(CorruptKind::MissingRecords {
                    expected_end: stop,
                    found_end: offset,
                }));
            }
            let frame = frame::read_frame(&data, pos).map_err(corrupt)?;
            if frame.offset != offset {
                return Err(corrupt(CorruptKind::WrongOffset {
                    expected: offset,
                    found: frame.offset,
                }));
            }
            if offset >= at {
                out.push(data.slice(frame.payload));
            }
            offset += 1;
            pos = frame.end;
        }
        Ok(())
    }

    fn sealed_view(&self, segment: Sealed, at: u64) -> Result<Arc<SealedView>, LogError> {
        if let Some(view) = self.views.lock().get(&segment.base) {
            return Ok(Arc::clone(view));
        }
        let view = match self.load_sealed(segment) {
            Ok(view) => Arc::new(view),
            // Retention removed it since we looked it up.
            Err(LogError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound
                    && segment.base < self.segments.read().start() =>
            {
                return Err(LogError::OffsetTrimmed {
                    requested: at,
                    start: self.segments.read().start(),
                });
            }
            Err(e) => return Err(e),
        };
        self.views.lock().put(segment.base, Arc::clone(&view));
        Ok(view)
    }

    /// Maps a sealed segment and loads its index, rebuilding the index if it
    /// is missing, damaged or incomplete.
    fn load_sealed(&self, segment: Sealed) -> Result<SealedView, LogError> {
        let path = segment_path(&self.dir, segment.base);
        let file = self
            .storage
            .open(&path, OpenMode::Read)
            .map_err(LogError::io("open", &path))?;
        let len = file.size().map_err(LogError::io("read", &path))?;
        let data = file
            .map(len)
            .map_err(LogError::io("map", &path))?
            .bytes(len as usize);
        let index_file = index_path(&self.dir, segment.base);
        let stored = match self.storage.open(&index_file, OpenMode::Read) {
            Ok(file) => Some(file.read_all().map_err(LogError::io("read", &index_file))?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(LogError::io("open", index_file)(e)),
        };
        let interval = self.options.index_interval_bytes;
        if let Some(stored) = stored {
            let (entries, whole) = index::decode(&stored, len);
            if whole
                && index::matches(&entries, &data, segment.base)
                && index::covers(&entries, &data, interval)
            {
                return Ok(SealedView {
                    data,
                    index: entries,
                });
            }
        }
        tracing::info!(segment = %path.display(), "rebuilding a missing or damaged index");
        let mut indexer = Indexer::new(interval, HEADER_LEN);
        let mut entries = Vec::new();
        let scan = frame::scan(&data, HEADER_LEN as usize, segment.base, |offset, pos| {
            entries.extend(indexer.offer(offset - segment.base, pos as u64));
        });
        // Persist only a complete index; damage is reported when it is read.
        if scan.error.is_none()
            && let Err(e) = self.replace_index(segment.base, &entries)
        {
            tracing::warn!(segment = %path.display(), error = %e, "could not save the rebuilt index");
        }
        Ok(SealedView {
            data,
            index: entries,
        })
    }

    fn replace_index(&self, base: u64, entries: &[IndexEntry]) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(entries.len() * index::ENTRY_LEN);
        for entry in entries {
            entry.encode(&mut bytes);
        }
        let temp = temp_index_path(&self.dir, base);
        let file = self.storage.open(&temp, OpenMode::Create)?;
        file.set_len(0)?;
        file.write_all_at(&bytes, 0)?;
        self.storage.rename(&temp, &index_path(&self.dir, base))
    }

    fn corrupt(&self, base: u64, position: u64, kind: CorruptKind) -> LogError {
        LogError::Corrupt {
            file: segment_path(&self.dir, base),
            position,
            kind,
        }
    }
}

impl Segments {
    fn start(&self) -> u64 {
        self.sealed.first().map_or(self.active.base, |s| s.base)
    }
}

impl Active {
    /// Ensures readers' map reaches `end`, mapping anew if the segment outgrew it.
    fn make_room(&self, end: u64) -> io::Result<()> {
        let capacity = self.map.read().capacity;
        if end <= capacity {
            return Ok(());
        }
        let capacity = end.max(capacity * 2);
        let mapping = self
            .file
            .map(capacity)
            .map_err(context("map", &self.path))?;
        *self.map.write() = ActiveMap { mapping, capacity };
        Ok(())
    }
}
