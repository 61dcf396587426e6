//! The segment log: Orcastra's default, durable backend.
//!
//! A log is a directory:
//!
//! ```text
//! LOCK                          held by the one process that owns the log
//! SYNCED                        how far the active segment is durable (see `synced`)
//! 00000000000000000000.log      a segment: records from offset 0
//! 00000000000000000000.index    its sparse index
//! 00000000000000081920.log      the next segment, from offset 81920
//! 00000000000000081920.index
//! ```
//!
//! Records are appended to the last (active) segment with ordinary writes;
//! readers see them through memory maps. When the active segment is full it
//! is fsynced with its index and sealed, and a new one is created (and the
//! directory fsynced). Sealed segments never change; retention deletes whole
//! ones from the front.
//!
//! **Recovery.** Opening a log checks the header of every segment, then scans
//! the active segment from the last index entry inside its synced part (the
//! `SYNCED` mark) to its end. An invalid frame past the synced part is a torn
//! tail: it and everything after it are cut off. An invalid frame inside the
//! synced part is damage to acknowledged data: opening fails and names the
//! segment and byte position. Damage in sealed segments is found when it is
//! read (or by [`SegmentLog::verify`]) and is likewise an error, never
//! skipped.
//!
//! **Failures.** After a failed write or fsync the log is poisoned and
//! refuses further appends until it is reopened (see [`LogError::Poisoned`]).
//!
//! **Memory.** Only the active segment and up to `max_mapped_segments` sealed
//! ones are mapped at a time, and only their index is held in memory, so the
//! memory a log needs does not grow with its size.

mod frame;
mod index;
mod verify;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lru::LruCache;
use parking_lot::{Mutex, RwLock};

use self::frame::{HEADER_LEN, HeaderError};
use self::index::{IndexEntry, Indexer};
use super::commit::{Committer, SyncTarget};
use super::storage::{EntryKind, LockGuard, Mapping, OpenMode, SharedFile, Storage, StorageFile};
use super::synced::{Mark, SyncedMark};
use super::{
    CorruptKind, Log, LogError, LogOptions, Offset, check_record_sizes, context,
    is_interrupted_write, read_bounds,
};

pub use verify::verify;

const LOCK_FILE: &str = "LOCK";
const SYNCED_FILE: &str = "SYNCED";
/// One append may write at most this much, so positions in a segment fit in 32 bits.
const MAX_BATCH_BYTES: u64 = 2 << 30;

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

/// What only the appender touches.
struct Writer {
    active: Arc<Active>,
    index_file: SharedFile,
    index_len: u64,
    indexer: Indexer,
    next_offset: u64,
    frames: Vec<u8>,
    index_bytes: Vec<u8>,
    index_entries: Vec<IndexEntry>,
}

impl SegmentLog {
    /// Opens the log in `dir`, creating it if needed, and recovers it after a
    /// crash. Fails if another log owns the directory, if the directory holds
    /// files that are not an Orcastra log, or if acknowledged records are damaged.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Self, LogError> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let storage = Arc::clone(&options.storage);
        prepare_dir(&*storage, &dir)?;
        let listing = Listing::read(&*storage, &dir)?;
        if let (true, Some(example)) = (
            listing.segments.is_empty() && !listing.ours,
            listing.foreign.first(),
        ) {
            return Err(LogError::ForeignDirectory {
                dir,
                example: example.clone(),
            });
        }
        let lock = storage
            .lock(&dir.join(LOCK_FILE))
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock => LogError::Locked { path: dir.clone() },
                _ => LogError::io("lock", dir.join(LOCK_FILE))(e),
            })?;
        listing.clean_up(&*storage, &dir);
        let (synced, mark) = SyncedMark::open(&*storage, &dir.join(SYNCED_FILE))?;

        let mut sealed = Vec::new();
        for pair in listing.segments.windows(2) {
            check_sealed_header(&*storage, &dir, pair[0])?;
            sealed.push(Sealed {
                base: pair[0],
                end: pair[1],
            });
        }
        let (active, writer) = match listing.segments.last() {
            Some(&base) => recover_active(&*storage, &dir, base, mark, &options)?,
            None => {
                let (file, index_file) = create_segment(&*storage, &dir, 0)?;
                new_active(&dir, 0, file, index_file, Vec::new(), &options)?
            }
        };
        synced
            .store(Mark {
                key: active.base,
                position: active.len.load(Ordering::Relaxed),
            })
            .map_err(LogError::io("write", dir.join(SYNCED_FILE)))?;
        storage
            .sync_dir(&dir)
            .map_err(LogError::io("fsync the directory", &dir))?;

        let next_offset = writer.next_offset;
        let cache_size = NonZeroUsize::new(options.max_mapped_segments).expect("validated");
        let inner = Arc::new(Inner {
            dir,
            storage,
            synced,
            segments: RwLock::new(Segments { sealed, active }),
            writer: Mutex::new(writer),
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
    pub fn verify(
        dir: impl AsRef<Path>,
        storage: &dyn Storage,
    ) -> Result<super::VerifyReport, LogError> {
        verify(dir.as_ref(), storage)
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
        let len = writer.active.len.load(Ordering::Relaxed);
        if len > HEADER_LEN && len + bytes > self.inner.options.segment_bytes {
            self.inner.roll(&mut writer).map_err(|e| self.fail(e))?;
            self.commit.made_durable(writer.next_offset);
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

    fn read(&self, from: Offset, max_records: usize) -> Result<Vec<Bytes>, LogError> {
        let end = Offset(self.commit.visible());
        let Some(stop) = read_bounds(from, max_records, self.start_offset(), end)? else {
            return Ok(Vec::new());
        };
        let mut records = Vec::with_capacity((stop.0 - from.0) as usize);
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
            // The index goes first, so a crash in between leaves no orphan index.
            for path in [
                index_path(dir, segment.base),
                segment_path(dir, segment.base),
            ] {
                match storage.remove(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(LogError::io("remove", path)(e));
                    }
                    _ => {}
                }
            }
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
        // A clean close leaves everything durable and marked as such. A
        // poisoned log must not mark anything: its data may be lost already.
        if self.commit.check().is_ok()
            && let Err(e) = self.inner.sync_written()
        {
            tracing::warn!(dir = %self.inner.dir.display(), error = %e, "final fsync failed");
        }
    }
}

impl SyncTarget for Inner {
    fn sync_written(&self) -> io::Result<u64> {
        let (active, len, end) = {
            let writer = self.writer.lock();
            let active = Arc::clone(&writer.active);
            let len = active.len.load(Ordering::Relaxed);
            (active, len, writer.next_offset)
        };
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
    /// Frames `records`, writes them and their index entries. On error the
    /// caller poisons the log, so no state needs rolling back.
    fn write_batch<R: AsRef<[u8]>>(&self, writer: &mut Writer, records: &[R]) -> io::Result<()> {
        let Writer {
            active,
            index_file,
            index_len,
            indexer,
            next_offset,
            frames,
            index_bytes,
            index_entries,
        } = writer;
        let start = active.len.load(Ordering::Relaxed);
        frames.clear();
        index_bytes.clear();
        index_entries.clear();
        for (i, record) in records.iter().enumerate() {
            let offset = *next_offset + i as u64;
            if let Some(entry) = indexer.offer(offset - active.base, start + frames.len() as u64) {
                entry.encode(index_bytes);
                index_entries.push(entry);
            }
            frame::push_frame(frames, offset, record.as_ref());
        }
        let end = start + frames.len() as u64;
        active.make_room(end)?;
        active
            .file
            .write_all_at(frames, start)
            .map_err(context("write to", &active.path))?;
        if !index_bytes.is_empty() {
            index_file
                .write_all_at(index_bytes, *index_len)
                .map_err(context("write to", &index_path(&self.dir, active.base)))?;
            *index_len += index_bytes.len() as u64;
            active.index.write().extend_from_slice(index_entries);
        }
        active.len.store(end, Ordering::Release);
        *next_offset += records.len() as u64;
        Ok(())
    }

    /// Seals the active segment (fsyncing it and its index) and starts a new
    /// one at the next offset.
    fn roll(&self, writer: &mut Writer) -> io::Result<()> {
        let old = Arc::clone(&writer.active);
        old.file.sync_data().map_err(context("fsync", &old.path))?;
        writer
            .index_file
            .sync_data()
            .map_err(context("fsync", &index_path(&self.dir, old.base)))?;
        let base = writer.next_offset;
        let (file, index_file) =
            create_segment(&*self.storage, &self.dir, base).map_err(into_io)?;
        self.synced
            .store(Mark {
                key: base,
                position: HEADER_LEN,
            })
            .map_err(context("write", &self.dir.join(SYNCED_FILE)))?;
        let (active, mut fresh) =
            new_active(&self.dir, base, file, index_file, Vec::new(), &self.options)
                .map_err(into_io)?;
        {
            let mut segments = self.segments.write();
            segments.sealed.push(Sealed {
                base: old.base,
                end: base,
            });
            segments.active = active;
        }
        // Keep the buffers, which have grown to the usual batch size.
        std::mem::swap(&mut fresh.frames, &mut writer.frames);
        *writer = fresh;
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

/// Makes `dir` a directory if it is not one yet.
fn prepare_dir(storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
    match storage.kind(dir).map_err(LogError::io("inspect", dir))? {
        Some(EntryKind::Dir) => Ok(()),
        Some(EntryKind::File) => Err(LogError::WrongKind {
            path: dir.to_path_buf(),
            expected: "directory",
            found: "file",
        }),
        None => storage
            .create_dir_all(dir)
            .map_err(LogError::io("create the directory", dir)),
    }
}

/// What a log directory holds, by kind.
struct Listing {
    /// Segment base offsets, ascending.
    segments: Vec<u64>,
    /// Leftovers of an interrupted index rewrite, and indexes without a segment.
    leftovers: Vec<PathBuf>,
    /// Whether any file shows that Orcastra used this directory.
    ours: bool,
    /// Names Orcastra does not know.
    foreign: Vec<String>,
}

impl Listing {
    fn read(storage: &dyn Storage, dir: &Path) -> Result<Self, LogError> {
        let mut segments = BTreeSet::new();
        let mut indexes = BTreeSet::new();
        let mut listing = Listing {
            segments: Vec::new(),
            leftovers: Vec::new(),
            ours: false,
            foreign: Vec::new(),
        };
        for name in storage.list(dir).map_err(LogError::io("list", dir))? {
            match classify(&name) {
                Name::Segment(base) => {
                    segments.insert(base);
                }
                Name::Index(base) => {
                    indexes.insert(base);
                }
                Name::TempIndex => listing.leftovers.push(dir.join(&name)),
                Name::Control => listing.ours = true,
                Name::Foreign => listing.foreign.push(name.to_string_lossy().into_owned()),
            }
        }
        listing.ours |= !indexes.is_empty();
        listing.leftovers.extend(
            indexes
                .difference(&segments)
                .map(|&base| index_path(dir, base)),
        );
        listing.foreign.sort();
        listing.segments = segments.into_iter().collect();
        Ok(listing)
    }

    /// Removes leftovers and reports strays; neither is worth failing over.
    fn clean_up(&self, storage: &dyn Storage, dir: &Path) {
        for path in &self.leftovers {
            if let Err(e) = storage.remove(path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a leftover file");
            }
        }
        for name in &self.foreign {
            tracing::warn!(dir = %dir.display(), name, "ignoring a file that is not part of the log");
        }
    }
}

enum Name {
    Segment(u64),
    Index(u64),
    TempIndex,
    Control,
    Foreign,
}

fn classify(name: &OsStr) -> Name {
    let Some(name) = name.to_str() else {
        return Name::Foreign;
    };
    if name == LOCK_FILE || name == SYNCED_FILE {
        return Name::Control;
    }
    let base = |stem: &str| {
        (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse().ok())
            .flatten()
    };
    if let Some(base) = name.strip_suffix(".log").and_then(base) {
        Name::Segment(base)
    } else if let Some(base) = name.strip_suffix(".index").and_then(base) {
        Name::Index(base)
    } else if name.strip_suffix(".index.tmp").and_then(base).is_some() {
        Name::TempIndex
    } else {
        Name::Foreign
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

fn temp_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index.tmp"))
}

/// Creates (or re-creates, emptied) the files of the segment at `base`, with
/// its header durable and the directory fsynced.
fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
) -> Result<(SharedFile, SharedFile), LogError> {
    let path = segment_path(dir, base);
    let file = storage
        .open(&path, OpenMode::Create)
        .map_err(LogError::io("create", &path))?;
    write_header(&*file, base).map_err(LogError::io("write", &path))?;
    let index = index_path(dir, base);
    let index_file = storage
        .open(&index, OpenMode::Create)
        .map_err(LogError::io("create", &index))?;
    // Durably empty: an older index of the same name must not come back.
    index_file
        .set_len(0)
        .and_then(|()| index_file.sync_data())
        .map_err(LogError::io("truncate", &index))?;
    storage
        .sync_dir(dir)
        .map_err(LogError::io("fsync the directory", dir))?;
    Ok((file, index_file))
}

fn write_header(file: &dyn StorageFile, base: u64) -> io::Result<()> {
    file.set_len(0)?;
    file.write_all_at(&frame::segment_header(base), 0)?;
    file.sync_data()
}

fn check_sealed_header(storage: &dyn Storage, dir: &Path, base: u64) -> Result<(), LogError> {
    let path = segment_path(dir, base);
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(LogError::io("open", &path))?;
    let mut header = [0; HEADER_LEN as usize];
    let read = file
        .read_at(&mut header, 0)
        .map_err(LogError::io("read", &path))?;
    check_header(&path, &header[..read], base)
}

fn check_header(path: &Path, header: &[u8], base: u64) -> Result<(), LogError> {
    match frame::parse_segment_header(header) {
        Ok(found) if found == base => Ok(()),
        Ok(found) => Err(LogError::Corrupt {
            file: path.to_path_buf(),
            position: 0,
            kind: CorruptKind::BadHeader(format!(
                "the header says the segment starts at offset {found}"
            )),
        }),
        Err(HeaderError::NotASegment(reason)) => Err(LogError::NotALogFile {
            path: path.to_path_buf(),
            reason,
        }),
        Err(HeaderError::Damaged(reason)) => Err(LogError::Corrupt {
            file: path.to_path_buf(),
            position: 0,
            kind: CorruptKind::BadHeader(reason),
        }),
    }
}

/// Recovers the last segment: cuts a torn tail, refuses damage to synced data,
/// repairs the index, and makes what remains durable (rewriting the part that
/// was never known to be synced).
fn recover_active(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    mark: Option<Mark>,
    options: &LogOptions,
) -> Result<(Arc<Active>, Writer), LogError> {
    let path = segment_path(dir, base);
    let file = storage
        .open(&path, OpenMode::Write)
        .map_err(LogError::io("open", &path))?;
    let io_err = |action| LogError::io(action, path.clone());
    let mut len = file.size().map_err(io_err("read"))?;
    let mut header = [0; HEADER_LEN as usize];
    let read = file.read_at(&mut header, 0).map_err(io_err("read"))?;
    let synced_to = match mark {
        Some(mark) if mark.key == base => mark.position,
        _ => HEADER_LEN,
    };
    if let Err(refused) = check_header(&path, &header[..read], base) {
        // A crash while the segment was being created leaves zeros or a part
        // of its header; anything else is refused.
        if len > HEADER_LEN || !is_interrupted_write(&header[..read], &frame::segment_header(base))
        {
            return Err(refused);
        }
        if synced_to > HEADER_LEN {
            return Err(LogError::Corrupt {
                file: path,
                position: 0,
                kind: CorruptKind::SyncedDataLost {
                    synced: synced_to,
                    valid_end: 0,
                },
            });
        }
        write_header(&*file, base).map_err(io_err("write"))?;
        len = HEADER_LEN;
    }

    let index_file_path = index_path(dir, base);
    let index_file = storage
        .open(&index_file_path, OpenMode::Create)
        .map_err(LogError::io("open", &index_file_path))?;
    let stored_index = index_file
        .read_all()
        .map_err(LogError::io("read", &index_file_path))?;
    let (mut entries, _) = index::decode(&stored_index, len);

    // Start from the last index entry inside the synced part that agrees with
    // the segment; everything after it is scanned.
    entries.truncate(entries.partition_point(|e| u64::from(e.pos) < synced_to));
    while let Some(last) = entries.last() {
        let mut frame_header = [0; 16];
        let read = file
            .read_at(&mut frame_header, u64::from(last.pos))
            .map_err(io_err("read"))?;
        if frame::claimed_offset(&frame_header[..read], 0) == Some(base + u64::from(last.rel)) {
            break;
        }
        entries.pop();
    }
    let (start_rel, start_pos) = index::seek(&entries, u64::MAX);
    let mut tail = vec![0; (len - start_pos) as usize];
    file.read_exact_at(&mut tail, start_pos)
        .map_err(io_err("read"))?;
    let mut indexer = Indexer::new(options.index_interval_bytes, start_pos);
    let scan = frame::scan(&tail, 0, base + start_rel, |offset, pos| {
        entries.extend(indexer.offer(offset - base, start_pos + pos as u64));
    });
    let valid_end = start_pos + scan.end as u64;
    if valid_end < synced_to {
        return Err(LogError::Corrupt {
            file: path,
            position: valid_end,
            kind: scan.error.unwrap_or(CorruptKind::SyncedDataLost {
                synced: synced_to,
                valid_end,
            }),
        });
    }
    if valid_end < len {
        tracing::warn!(
            segment = %path.display(),
            position = valid_end,
            bytes = len - valid_end,
            reason = %scan.error.as_ref().map_or(String::new(), ToString::to_string),
            "cutting off a torn tail left by a crash"
        );
        file.set_len(valid_end).map_err(io_err("truncate"))?;
    }
    // After a failed fsync, Linux may keep pages that never reached the disk
    // in the page cache, marked clean: a reader sees them, an fsync skips them.
    // Writing the unsynced part again makes the fsync below really flush it.
    let unsynced = (synced_to - start_pos) as usize..(valid_end - start_pos) as usize;
    file.write_all_at(&tail[unsynced], synced_to)
        .map_err(io_err("rewrite"))?;
    file.sync_data().map_err(io_err("fsync"))?;

    let mut index_bytes = Vec::with_capacity(entries.len() * index::ENTRY_LEN);
    for entry in &entries {
        entry.encode(&mut index_bytes);
    }
    // Entries inside the synced part are trusted from now on, so the repaired
    // index must be durable: stale entries must not come back after a crash.
    if index_bytes != stored_index {
        index_file
            .set_len(0)
            .and_then(|()| index_file.write_all_at(&index_bytes, 0))
            .and_then(|()| index_file.sync_data())
            .map_err(LogError::io("rewrite", &index_file_path))?;
    }
    let (active, mut writer) = new_active(dir, base, file, index_file, entries, options)?;
    active.len.store(valid_end, Ordering::Relaxed);
    writer.next_offset = scan.next_offset;
    writer.indexer = indexer;
    Ok((active, writer))
}

/// The active segment and writer for a segment whose first `HEADER_LEN`
/// bytes are written, with `entries` already indexed.
fn new_active(
    dir: &Path,
    base: u64,
    file: SharedFile,
    index_file: SharedFile,
    entries: Vec<IndexEntry>,
    options: &LogOptions,
) -> Result<(Arc<Active>, Writer), LogError> {
    let path = segment_path(dir, base);
    let capacity = options
        .segment_bytes
        .max(file.size().map_err(LogError::io("read", &path))?);
    let mapping = file.map(capacity).map_err(LogError::io("map", &path))?;
    let index_len = (entries.len() * index::ENTRY_LEN) as u64;
    let active = Arc::new(Active {
        base,
        path,
        file,
        len: AtomicU64::new(HEADER_LEN),
        map: RwLock::new(ActiveMap { mapping, capacity }),
        index: RwLock::new(entries),
    });
    let writer = Writer {
        active: Arc::clone(&active),
        index_file,
        index_len,
        indexer: Indexer::new(options.index_interval_bytes, HEADER_LEN),
        next_offset: base,
        frames: Vec::new(),
        index_bytes: Vec::new(),
        index_entries: Vec::new(),
    };
    Ok((active, writer))
}

/// Turns an error from a helper shared with `open` into the I/O error that
/// poisons the log.
fn into_io(error: LogError) -> io::Error {
    let kind = match &error {
        LogError::Io { source, .. } => source.kind(),
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, error.to_string())
}
