//! The embedded engine: many named streams over logs this process owns.

use std::fmt::Write as _;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use foldhash::{HashMap, HashMapExt};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{
    AddOptions, AutoClaim, AutoClaimed, Bound, ClaimOptions, Clock, ConsumerInfo, Entry, Fields,
    GroupEntry, GroupInfo, GroupRead, GroupStart, PendingEntry, PendingQuery, PendingSummary,
    ReadFrom, ReadGroupOptions, Retention, StreamError, StreamInfo, Streams, SystemClock, Trim,
};
use crate::log::storage::EntryKind;
use crate::log::{Log, LogError, LogOptions, MemoryLog, SegmentLog, TextLog};
use crate::record::{NewEntry, StreamId};
use crate::stream::{Shown, Stream};

/// The two logs of a stream.
pub struct StreamLogs<L> {
    /// One record per entry.
    pub entries: L,
    /// The events that change everything else.
    pub journal: L,
}

/// Where the embedded engine keeps the two logs of each stream.
pub trait LogStore: Send + Sync + 'static {
    /// The kind of log.
    type Log: Log;
    /// Opens the logs of stream `name`, creating them if `create`; `None` if
    /// the stream does not exist and `create` is false.
    fn open(&self, name: &str, create: bool) -> Result<Option<StreamLogs<Self::Log>>, LogError>;
    /// The names of the streams kept in the store that are not open.
    fn names(&self) -> Result<Vec<String>, LogError>;
    /// Deletes the logs of stream `name`, durably; false if there were none.
    /// The stream must not be open.
    fn remove(&self, name: &str) -> Result<bool, LogError>;
}

/// Streams in memory, gone with the process.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryStore;

impl LogStore for MemoryStore {
    type Log = MemoryLog;

    fn open(&self, _name: &str, create: bool) -> Result<Option<StreamLogs<MemoryLog>>, LogError> {
        Ok(create.then(|| StreamLogs {
            entries: MemoryLog::new(),
            journal: MemoryLog::new(),
        }))
    }

    /// Memory streams live only while open.
    fn names(&self) -> Result<Vec<String>, LogError> {
        Ok(Vec::new())
    }

    fn remove(&self, _name: &str) -> Result<bool, LogError> {
        Ok(false)
    }
}

/// A log kept in files, which a [`FileStore`] can open by path.
pub trait FileLog: Log + Sized {
    /// The file or directory name of a stream's entry log.
    const ENTRIES: &'static str;
    /// The file or directory name of a stream's journal.
    const JOURNAL: &'static str;
    /// Opens the log at `path`.
    fn open_at(path: &Path, options: LogOptions) -> Result<Self, LogError>;
}

impl FileLog for SegmentLog {
    const ENTRIES: &'static str = "entries";
    const JOURNAL: &'static str = "journal";
    fn open_at(path: &Path, options: LogOptions) -> Result<Self, LogError> {
        SegmentLog::open(path, options)
    }
}

impl FileLog for TextLog {
    const ENTRIES: &'static str = "entries.txt";
    const JOURNAL: &'static str = "journal.txt";
    fn open_at(path: &Path, options: LogOptions) -> Result<Self, LogError> {
        TextLog::open(path, options)
    }
}

/// Streams in a data directory: `DIR/s-<name>/` per stream, holding its
/// entry log and journal (the name percent-encoded, so any name is a safe
/// file name).
///
/// A stream is deleted by first writing a marker file into its directory:
/// a crash while its files are being removed leaves a directory that
/// counts as gone, and is cleared when the name is used again.
pub struct FileStore<L> {
    dir: PathBuf,
    options: LogOptions,
    _log: PhantomData<fn() -> L>,
}

impl<L: FileLog> FileStore<L> {
    /// A store in `dir`, opening logs with `options`.
    pub fn new(dir: impl Into<PathBuf>, options: LogOptions) -> Self {
        FileStore {
            dir: dir.into(),
            options,
            _log: PhantomData,
        }
    }

    fn stream_dir(&self, name: &str) -> PathBuf {
        let mut encoded = String::from("s-");
        for byte in name.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
                encoded.push(byte as char);
            } else {
                let _ = write!(encoded, "%{byte:02X}");
            }
        }
        self.dir.join(encoded)
    }

    /// Whether `dir` holds a stream: a directory neither marked deleted nor
    /// emptied by an unfinished deletion.
    fn holds_stream(&self, dir: &Path) -> Result<bool, LogError> {
        let storage = self.options.storage_ref();
        let is_dir = storage
            .kind(dir)
            .map_err(LogError::io("inspect", dir))?
            .is_some_and(|kind| kind == EntryKind::Dir);
        if !is_dir {
            return Ok(false);
        }
        let names = storage.list(dir).map_err(LogError::io("list", dir))?;
        Ok(!names.is_empty() && !names.iter().any(|n| n == DELETED))
    }

    /// Removes what a deletion left of `dir`: every file under it, then it.
    fn clear(&self, dir: &Path) -> Result<(), LogError> {
        let storage = self.options.storage_ref();
        let mut marked = false;
        for name in storage.list(dir).map_err(LogError::io("list", dir))? {
            let path = dir.join(&name);
            if name == DELETED {
                marked = true;
            } else if storage
                .kind(&path)
                .map_err(LogError::io("inspect", &path))?
                == Some(EntryKind::Dir)
            {
                self.clear(&path)?;
            } else {
                storage
                    .remove(&path)
                    .map_err(LogError::io("remove", &path))?;
            }
        }
        // The removals must be durable before the marker goes.
        storage.sync_dir(dir).map_err(LogError::io("sync", dir))?;
        if marked {
            let marker = dir.join(DELETED);
            storage
                .remove(&marker)
                .map_err(LogError::io("remove", &marker))?;
        }
        storage.remove_dir(dir).map_err(LogError::io("remove", dir))
    }
}

/// The marker file of a stream being deleted.
const DELETED: &str = "deleted";

/// The stream name of a directory name written by `FileStore::stream_dir`.
fn decode_stream_dir(dir_name: &str) -> Option<String> {
    let encoded = dir_name.strip_prefix("s-")?.as_bytes();
    let mut name = Vec::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            name.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            name.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(name).ok()
}

impl<L: FileLog> LogStore for FileStore<L> {
    type Log = L;

    fn open(&self, name: &str, create: bool) -> Result<Option<StreamLogs<L>>, LogError> {
        let dir = self.stream_dir(name);
        if !self.holds_stream(&dir)? {
            if !create {
                return Ok(None);
            }
            if self
                .options
                .storage_ref()
                .kind(&dir)
                .map_err(LogError::io("inspect", &dir))?
                .is_some()
            {
                self.clear(&dir)?;
            }
        }
        let entries = L::open_at(&dir.join(L::ENTRIES), self.options.clone())?;
        // Journal segments stay small, so a snapshot soon frees the ones before it.
        let journal_segments = self.options.segment_bytes_value().min(8 << 20);
        let journal = L::open_at(
            &dir.join(L::JOURNAL),
            self.options.clone().segment_bytes(journal_segments),
        )?;
        Ok(Some(StreamLogs { entries, journal }))
    }

    fn names(&self) -> Result<Vec<String>, LogError> {
        let storage = self.options.storage_ref();
        let entries = match storage.list(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(LogError::io("list", &self.dir)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let Some(name) = entry.to_str().and_then(decode_stream_dir) else {
                continue;
            };
            if self.holds_stream(&self.dir.join(&entry))? {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn remove(&self, name: &str) -> Result<bool, LogError> {
        let dir = self.stream_dir(name);
        if !self.holds_stream(&dir)? {
            return Ok(false);
        }
        let storage = self.options.storage_ref();
        let marker = dir.join(DELETED);
        storage
            .open(&marker, crate::log::storage::OpenMode::Create)
            .map_err(LogError::io("create", &marker))?;
        storage.sync_dir(&dir).map_err(LogError::io("sync", &dir))?;
        self.clear(&dir)?;
        storage
            .sync_dir(&self.dir)
            .map_err(LogError::io("sync", &self.dir))?;
        Ok(true)
    }
}

/// The embedded engine: [`Streams`] over the logs of a [`LogStore`].
///
/// ```
/// use orcastra::log::{FsyncPolicy, LogOptions, SegmentLog};
/// use orcastra::streams::{AddOptions, Embedded, FileStore, Streams};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store = FileStore::<SegmentLog>::new(dir.path(), LogOptions::default());
/// let streams = Embedded::open(store);
/// streams.add("events", vec![("kind".into(), "signup".into())], AddOptions::default()).await?;
/// assert_eq!(streams.len("events").await?, 1);
/// # Ok(())
/// # }
/// ```
pub struct Embedded<S: LogStore> {
    store: S,
    /// Open streams by name; opening happens under this lock, once per stream.
    streams: Mutex<HashMap<String, Arc<Stream<S::Log>>>>,
    /// Wakes blocked readers when a stream opens or is deleted: each
    /// otherwise waits only on the streams it found when it looked.
    opened_or_removed: Notify,
    clock: Arc<dyn Clock>,
    snapshot_bytes: u64,
    retention: Retention,
    adds: AtomicU64,
}

/// Retention limits are checked on every this many adds.
const RETENTION_EVERY: u64 = 64;

impl Embedded<MemoryStore> {
    /// Streams in memory.
    pub fn memory() -> Self {
        Self::open(MemoryStore)
    }
}

impl<S: LogStore> Embedded<S> {
    /// Adds `entries` to `stream`, as one append: their ids are
    /// consecutive in the stream. Readers see them when `shown` says;
    /// `note` gets their ids, and the entries themselves, before any
    /// reader can see the entries.
    pub(crate) async fn add_batch_noting<E: NewEntry>(
        &self,
        stream: &str,
        entries: Vec<E>,
        shown: Shown,
        note: impl FnOnce(&[StreamId], Vec<E>),
    ) -> Result<Vec<StreamId>, StreamError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let target = self.stream(stream, true)?.expect("create makes the stream");
        target
            .append(entries, super::AddId::Auto, &*self.clock, shown, note)
            .await
    }

    /// The entries of `stream` after `after`, like XREAD, without
    /// decoding those whose ids `skip` accepts (they count towards `count`,
    /// and end the wait like any entry): for the task layer, which need not
    /// read back the state events it wrote.
    pub(crate) async fn read_skipping(
        &self,
        stream: &str,
        after: StreamId,
        count: usize,
        block: Option<Duration>,
        skip: &mut (dyn FnMut(StreamId) -> bool + Send),
    ) -> Result<Vec<Entry>, StreamError> {
        let streams = [(stream, ReadFrom::After(after))];
        let read = self.read_streams(&streams, Some(count), block, Some(skip));
        Ok(read
            .await?
            .into_iter()
            .flat_map(|(_, entries)| entries)
            .collect())
    }

    /// XREAD, passing over the entries `skip` accepts.
    async fn read_streams(
        &self,
        streams: &[(&str, ReadFrom)],
        count: Option<usize>,
        block: Option<Duration>,
        mut skip: Option<&mut (dyn FnMut(StreamId) -> bool + Send)>,
    ) -> Result<Vec<(String, Vec<Entry>)>, StreamError> {
        let count = count.unwrap_or(usize::MAX);
        // `$` means after the last id as of the call.
        let mut after = Vec::with_capacity(streams.len());
        for &(name, from) in streams {
            after.push(match from {
                ReadFrom::After(id) => id,
                ReadFrom::End => self
                    .stream(name, false)?
                    .map_or(StreamId::MIN, |s| s.last_id()),
            });
        }
        let deadline = deadline(block);
        loop {
            // A read that may wait listens before it looks, so that no
            // change between the two is missed (a stream deleted after it
            // was found, a stream made after it was missing).
            let mut targets = Vec::with_capacity(streams.len());
            let mut changes = Vec::new();
            if deadline.is_some() {
                changes.push(listen(&self.opened_or_removed));
            }
            for &(name, _) in streams {
                targets.push(self.stream(name, false)?);
            }
            if deadline.is_some() {
                changes.extend(targets.iter().flatten().flat_map(|t| listen_to(t)));
            }
            let mut reply = Vec::new();
            let mut skipped = false;
            for ((&(name, _), &after), target) in streams.iter().zip(&after).zip(&targets) {
                if let Some(target) = target {
                    let skipping = skip.is_some();
                    let mut noting = |id| {
                        let passed = skip.as_mut().is_some_and(|skip| skip(id));
                        skipped |= passed;
                        passed
                    };
                    let noting =
                        skipping.then_some(&mut noting as &mut dyn FnMut(StreamId) -> bool);
                    let entries = target.read_after(after, count, noting)?;
                    if !entries.is_empty() {
                        reply.push((name.to_string(), entries));
                    }
                }
            }
            let Some(deadline) = deadline else {
                return Ok(reply);
            };
            if !reply.is_empty() || skipped || !wait_for_change(changes, deadline).await {
                return Ok(reply);
            }
        }
    }

    /// The engine over `store`, with the system clock, snapshots every 8 MiB
    /// of journal, and no retention limits.
    pub fn open(store: S) -> Self {
        Embedded {
            store,
            streams: Mutex::new(HashMap::new()),
            opened_or_removed: Notify::new(),
            clock: Arc::new(SystemClock),
            snapshot_bytes: 8 << 20,
            retention: Retention::default(),
            adds: AtomicU64::new(0),
        }
    }

    /// Reads the time from `clock` (for tests of idle times and ids).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Writes a journal snapshot once this many bytes of events follow the
    /// last one (or twice the last snapshot's size, if larger).
    pub fn with_snapshot_bytes(mut self, bytes: u64) -> Self {
        self.snapshot_bytes = bytes;
        self
    }

    /// Trims streams automatically as they grow.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The stream `name`, opened if needed; `None` if it does not exist and
    /// `create` is false.
    fn stream(&self, name: &str, create: bool) -> Result<Option<Arc<Stream<S::Log>>>, StreamError> {
        let mut streams = self.streams.lock();
        if let Some(stream) = streams.get(name) {
            return Ok(Some(Arc::clone(stream)));
        }
        let Some(logs) = self.store.open(name, create)? else {
            return Ok(None);
        };
        let stream = Arc::new(Stream::open(
            name,
            logs,
            self.snapshot_bytes,
            self.retention,
        )?);
        streams.insert(name.to_string(), Arc::clone(&stream));
        self.opened_or_removed.notify_waiters();
        Ok(Some(stream))
    }

    /// The names of every stream, sorted (KEYS, SCAN, DBSIZE).
    pub fn names(&self) -> Result<Vec<String>, StreamError> {
        let open = self.streams.lock().keys().cloned().collect::<Vec<_>>();
        let mut names = self.store.names()?;
        names.extend(open);
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// Whether stream `name` exists (EXISTS).
    pub fn exists(&self, name: &str) -> Result<bool, StreamError> {
        Ok(self.stream(name, false)?.is_some())
    }

    /// Deletes stream `name` with its entries and groups (DEL); false if
    /// it did not exist. Durable when it returns. An operation that
    /// already holds the stream finishes on the deleted stream, as if it
    /// had run just before the deletion.
    pub fn remove(&self, name: &str) -> Result<bool, StreamError> {
        let mut streams = self.streams.lock();
        let open = streams.remove(name);
        let removed = self.store.remove(name)?;
        drop(streams);
        if let Some(stream) = &open {
            stream.changed.notify_waiters();
        }
        self.opened_or_removed.notify_waiters();
        Ok(open.is_some() || removed)
    }

    fn existing(
        &self,
        name: &str,
        missing: impl FnOnce() -> StreamError,
    ) -> Result<Arc<Stream<S::Log>>, StreamError> {
        self.stream(name, false)?.ok_or_else(missing)
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Whether `stream` is still the open stream `name` (not deleted).
    fn is_open(&self, name: &str, stream: &Arc<Stream<S::Log>>) -> bool {
        let streams = self.streams.lock();
        streams
            .get(name)
            .is_some_and(|open| Arc::ptr_eq(open, stream))
    }
}

/// Something a blocked reader waits for.
type Change<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A wake-up from `notify`, counted from now on.
fn listen(notify: &Notify) -> Change<'_> {
    let mut notified = Box::pin(notify.notified());
    notified.as_mut().enable();
    notified
}

/// The wake-ups of a reader blocked on `stream`, counted from now on:
/// new entries visible, a group gone, the stream deleted.
fn listen_to<L: Log>(stream: &Stream<L>) -> [Change<'_>; 2] {
    [Box::pin(stream.new_entries()), listen(&stream.changed)]
}

/// Waits for one of `changes` (an entry, a destroyed group, a stream
/// opening) or the deadline. Returns false once the deadline has passed.
async fn wait_for_change(
    mut changes: Vec<Change<'_>>,
    deadline: Option<tokio::time::Instant>,
) -> bool {
    let any = std::future::poll_fn(|cx| {
        if changes
            .iter_mut()
            .any(|change| change.as_mut().poll(cx).is_ready())
        {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    match deadline {
        None => {
            any.await;
            true
        }
        Some(deadline) => tokio::time::timeout_at(deadline, any).await.is_ok(),
    }
}

fn deadline(block: Option<Duration>) -> Option<Option<tokio::time::Instant>> {
    block.map(|wait| (!wait.is_zero()).then(|| tokio::time::Instant::now() + wait))
}

fn no_group(stream: &str, group: &str, suffix: &'static str) -> StreamError {
    StreamError::NoGroup {
        stream: stream.to_string(),
        group: group.to_string(),
        suffix,
    }
}

impl<S: LogStore> Streams for Embedded<S> {
    async fn add(
        &self,
        stream: &str,
        fields: Fields,
        options: AddOptions,
    ) -> Result<Option<StreamId>, StreamError> {
        // The one id that fails on a new stream: refused before the stream is made.
        if options.id == super::AddId::Explicit(StreamId::MIN) {
            return Err(StreamError::ZeroId);
        }
        let Some(target) = self.stream(stream, !options.no_mkstream)? else {
            return Ok(None);
        };
        let id = target.add(fields, options.id, &*self.clock).await?;
        if let Some(trim) = options.trim {
            target.trim(trim).await?;
        }
        let retention = self.retention;
        if (retention.max_len.is_some() || retention.max_age.is_some())
            && self
                .adds
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(RETENTION_EVERY)
        {
            target.enforce_retention(self.now_ms()).await?;
        }
        Ok(Some(id))
    }

    async fn add_batch(
        &self,
        stream: &str,
        entries: Vec<Fields>,
    ) -> Result<Vec<StreamId>, StreamError> {
        self.add_batch_noting(stream, entries, Shown::Durable, |_, _| {})
            .await
    }

    async fn range(
        &self,
        stream: &str,
        start: Bound,
        end: Bound,
        count: Option<usize>,
    ) -> Result<Vec<Entry>, StreamError> {
        match self.stream(stream, false)? {
            Some(target) => target.range(start, end, count, false),
            None => Ok(Vec::new()),
        }
    }

    async fn rev_range(
        &self,
        stream: &str,
        end: Bound,
        start: Bound,
        count: Option<usize>,
    ) -> Result<Vec<Entry>, StreamError> {
        match self.stream(stream, false)? {
            Some(target) => target.range(start, end, count, true),
            None => Ok(Vec::new()),
        }
    }

    async fn len(&self, stream: &str) -> Result<u64, StreamError> {
        Ok(self.stream(stream, false)?.map_or(0, |target| target.len()))
    }

    async fn delete(&self, stream: &str, ids: &[StreamId]) -> Result<u64, StreamError> {
        match self.stream(stream, false)? {
            Some(target) => target.delete(ids).await,
            None => Ok(0),
        }
    }

    async fn trim(&self, stream: &str, trim: Trim) -> Result<u64, StreamError> {
        match self.stream(stream, false)? {
            Some(target) => target.trim(trim).await,
            None => Ok(0),
        }
    }

    async fn read(
        &self,
        streams: &[(&str, ReadFrom)],
        count: Option<usize>,
        block: Option<Duration>,
    ) -> Result<Vec<(String, Vec<Entry>)>, StreamError> {
        self.read_streams(streams, count, block, None).await
    }

    async fn set_last_id(
        &self,
        stream: &str,
        last_id: StreamId,
        entries_added: Option<u64>,
        max_deleted: Option<StreamId>,
    ) -> Result<(), StreamError> {
        self.existing(stream, || StreamError::NoSuchKey)?
            .set_last_id(last_id, entries_added, max_deleted)
            .await
    }

    async fn info(&self, stream: &str) -> Result<StreamInfo, StreamError> {
        self.existing(stream, || StreamError::NoSuchKey)?.info()
    }

    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
        mkstream: bool,
    ) -> Result<(), StreamError> {
        let target = self
            .stream(stream, mkstream)?
            .ok_or(StreamError::GroupNeedsStream)?;
        target.create_group(group, start).await
    }

    async fn destroy_group(&self, stream: &str, group: &str) -> Result<bool, StreamError> {
        let target = self.existing(stream, || StreamError::GroupNeedsStream)?;
        let destroyed = target.destroy_group(group).await?;
        target.changed.notify_waiters();
        Ok(destroyed)
    }

    async fn set_group_id(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> Result<(), StreamError> {
        self.existing(stream, || StreamError::GroupNeedsStream)?
            .set_group_id(group, start)
            .await
    }

    async fn create_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> Result<bool, StreamError> {
        self.existing(stream, || StreamError::GroupNeedsStream)?
            .create_consumer(group, consumer, self.now_ms())
            .await
    }

    async fn delete_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> Result<u64, StreamError> {
        self.existing(stream, || StreamError::GroupNeedsStream)?
            .delete_consumer(group, consumer)
            .await
    }

    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        streams: &[(&str, GroupRead)],
        options: ReadGroupOptions,
    ) -> Result<Vec<(String, Vec<GroupEntry>)>, StreamError> {
        let count = options.count.filter(|&n| n > 0).unwrap_or(usize::MAX);
        let suffix = " in XREADGROUP with GROUP option";
        let mut targets = Vec::with_capacity(streams.len());
        for &(name, read) in streams {
            targets.push((
                name,
                read,
                self.existing(name, || no_group(name, group, suffix))?,
            ));
        }
        // History reads never block and are always in the reply.
        let blocks = targets.iter().all(|(_, read, _)| *read == GroupRead::New);
        let deadline = if blocks {
            deadline(options.block)
        } else {
            None
        };
        loop {
            let changes = match deadline {
                Some(_) => targets.iter().flat_map(|(_, _, t)| listen_to(t)).collect(),
                None => Vec::new(),
            };
            // A stream deleted since it was found fails a read that would
            // wait, as in Redis; checked once listening, so that a deletion
            // after the check wakes it.
            if deadline.is_some()
                && targets
                    .iter()
                    .any(|(name, _, target)| !self.is_open(name, target))
            {
                return Err(StreamError::StreamGoneWhileBlocked);
            }
            let mut reply = Vec::new();
            for (name, read, target) in &targets {
                let now = self.now_ms();
                let entries = match *read {
                    GroupRead::New => {
                        target
                            .read_new(
                                group,
                                consumer,
                                count,
                                options.no_ack,
                                options.unsynced_delivery,
                                now,
                            )
                            .await?
                    }
                    GroupRead::Pending(after) => {
                        target
                            .read_pending(group, consumer, after, count, now)
                            .await?
                    }
                };
                if !entries.is_empty() || *read != GroupRead::New {
                    reply.push((name.to_string(), entries));
                }
            }
            let Some(deadline) = deadline else {
                return Ok(reply);
            };
            if !reply.is_empty() {
                return Ok(reply);
            }
            if !wait_for_change(changes, deadline).await {
                return Ok(reply);
            }
            // A group destroyed while we waited fails the read, as in Redis.
            if targets
                .iter()
                .any(|(_, _, target)| !target.has_group(group))
            {
                return Err(StreamError::GroupGoneWhileBlocked);
            }
        }
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64, StreamError> {
        match self.stream(stream, false)? {
            Some(target) => target.ack(group, ids).await,
            None => Ok(0),
        }
    }

    async fn pending_summary(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<PendingSummary, StreamError> {
        self.existing(stream, || no_group(stream, group, ""))?
            .pending_summary(group)
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> Result<Vec<PendingEntry>, StreamError> {
        self.existing(stream, || no_group(stream, group, ""))?
            .pending(group, query, self.now_ms())
    }

    async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
        options: ClaimOptions,
    ) -> Result<Vec<Entry>, StreamError> {
        self.existing(stream, || no_group(stream, group, ""))?
            .claim(group, consumer, min_idle, ids, options, self.now_ms())
            .await
    }

    async fn auto_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: AutoClaim,
    ) -> Result<AutoClaimed, StreamError> {
        self.existing(stream, || no_group(stream, group, ""))?
            .auto_claim(group, consumer, options, self.now_ms())
            .await
    }

    async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>, StreamError> {
        Ok(self.existing(stream, || StreamError::NoSuchKey)?.groups())
    }

    async fn consumers(&self, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>, StreamError> {
        self.existing(stream, || StreamError::NoSuchKey)?
            .consumers(group, self.now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read blocked on a stream that is deleted and made again gets the
    /// new stream's entries: it waits on the streams it found and on any
    /// stream opening or going.
    #[tokio::test]
    async fn a_blocked_read_follows_its_stream_through_a_deletion() {
        let engine = Embedded::memory();
        let add = |ms| {
            let fields = vec![("f".into(), "v".into())];
            engine.add("s", fields, AddOptions::with_id(StreamId::new(ms, 0)))
        };
        add(1).await.unwrap();
        let streams = [("s", ReadFrom::After(StreamId::new(1, 0)))];
        let mut read = std::pin::pin!(engine.read(&streams, None, Some(Duration::ZERO)));
        assert!(futures_util::poll!(read.as_mut()).is_pending());
        assert!(engine.remove("s").unwrap());
        assert!(futures_util::poll!(read.as_mut()).is_pending());
        add(5).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("woken by the new stream")
            .unwrap();
        let ids: Vec<StreamId> = reply[0].1.iter().map(|entry| entry.id).collect();
        assert_eq!(ids, [StreamId::new(5, 0)]);
    }

    /// A value Cap'n Proto cannot hold is refused with an error, and the
    /// stream goes on (the server once panicked on a 512 MiB XADD).
    #[tokio::test]
    async fn a_value_too_large_for_any_record_is_an_error() {
        let engine = Embedded::memory();
        // Zeroed by the allocator without being touched: costs no memory.
        let huge = bytes::Bytes::from(vec![0u8; 1 << 29]);
        let fields = vec![("f".into(), "v".into()), ("big".into(), huge)];
        let refused = engine.add("s", fields, AddOptions::default()).await;
        assert!(
            matches!(
                refused,
                Err(StreamError::Log(LogError::RecordTooLarge { size, .. })) if size > 1 << 29
            ),
            "{refused:?}"
        );
        let fields = vec![("f".into(), "v".into())];
        engine
            .add("s", fields, AddOptions::default())
            .await
            .unwrap();
        assert_eq!(engine.len("s").await.unwrap(), 1);
    }
}
