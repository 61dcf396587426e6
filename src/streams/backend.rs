//! [`Backend`]: the [`Streams`] implementation a URL names, so that one
//! program runs on the segment log, in memory, on text files or on Redis by
//! configuration alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{
    AddOptions, AutoClaim, AutoClaimed, Bound, ClaimOptions, ConsumerInfo, Embedded, Entry, Fields,
    FileStore, GroupEntry, GroupInfo, GroupRead, GroupStart, MemoryStore, PendingEntry,
    PendingQuery, PendingSummary, ReadFrom, ReadGroupOptions, StreamError, StreamInfo, Streams,
    Trim,
};
use crate::log::{LogOptions, SegmentLog, TextLog};
use crate::record::{NewEntry, StreamId};
use crate::stream::Shown;

/// Streams on the backend a URL names:
///
/// | URL | backend |
/// |---|---|
/// | `./data`, `segment:./data` | the segment log in directory `./data` (the default) |
/// | `memory://` | memory, gone with the process |
/// | `text:./data` | one text file per log in directory `./data` |
/// | `redis://…` | a Redis server (feature `redis`) |
///
/// ```
/// use orcastra::streams::{AddOptions, Backend, Streams};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), orcastra::streams::StreamError> {
/// let streams = Backend::open("memory://", Default::default()).await?;
/// streams.add("jobs", vec![("n".into(), "1".into())], AddOptions::default()).await?;
/// assert_eq!(streams.len("jobs").await?, 1);
/// # Ok(())
/// # }
/// ```
///
/// The embedded engines are shared (`Arc`), so that one engine can serve
/// tasks and, say, the Redis-protocol server of the same process.
pub enum Backend {
    /// The segment log.
    Segment(Arc<Embedded<FileStore<SegmentLog>>>),
    /// Memory.
    Memory(Arc<Embedded<MemoryStore>>),
    /// Text files.
    Text(Arc<Embedded<FileStore<TextLog>>>),
    /// A Redis server.
    #[cfg(feature = "redis")]
    Redis(Box<super::RedisStreams>),
}

impl Backend {
    /// Opens the backend `url` names; file backends use `options` for their
    /// logs (fsync policy, segment size).
    pub async fn open(url: &str, options: LogOptions) -> Result<Backend, StreamError> {
        if url == "memory://" {
            return Ok(Backend::Memory(Arc::new(Embedded::memory())));
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            #[cfg(feature = "redis")]
            return Ok(Backend::Redis(Box::new(
                super::RedisStreams::connect(url).await?,
            )));
            #[cfg(not(feature = "redis"))]
            return Err(StreamError::Unavailable {
                server: url.split('@').next_back().unwrap_or(url).to_string(),
                reason: "this build has no Redis support: enable the `redis` feature".into(),
            });
        }
        if let Some(dir) = url.strip_prefix("text:") {
            let store = FileStore::<TextLog>::new(directory(dir)?, options);
            return Ok(Backend::Text(Arc::new(Embedded::open(store))));
        }
        let dir = url.strip_prefix("segment:").unwrap_or(url);
        if dir.contains("://") {
            return Err(StreamError::Reply(format!(
                "ERR unknown backend URL '{url}': expected a directory, segment:DIR, text:DIR, \
                 memory:// or redis://…"
            )));
        }
        let store = FileStore::<SegmentLog>::new(directory(dir)?, options);
        Ok(Backend::Segment(Arc::new(Embedded::open(store))))
    }

    /// [`Embedded::read_skipping`] on the embedded backends, where one
    /// append's entries are consecutive; `None` on Redis.
    pub(crate) async fn read_skipping(
        &self,
        stream: &str,
        after: StreamId,
        count: usize,
        block: Option<Duration>,
        skip: &mut (dyn FnMut(StreamId) -> bool + Send),
    ) -> Option<Result<Vec<Entry>, StreamError>> {
        Some(match self {
            Backend::Segment(s) => s.read_skipping(stream, after, count, block, skip).await,
            Backend::Memory(s) => s.read_skipping(stream, after, count, block, skip).await,
            Backend::Text(s) => s.read_skipping(stream, after, count, block, skip).await,
            #[cfg(feature = "redis")]
            Backend::Redis(_) => return None,
        })
    }

    /// [`Embedded::add_batch_noting`] on the embedded backends, which hand
    /// every entry to `note` and return none; on Redis, where other
    /// clients' entries may come between those of one batch, a plain
    /// `add_batch` that does not call `note` and returns the entries.
    pub(crate) async fn add_batch_noting<E: NewEntry>(
        &self,
        stream: &str,
        entries: Vec<E>,
        note: impl FnOnce(&[StreamId], Vec<E>),
    ) -> Result<(Vec<StreamId>, Vec<E>), StreamError> {
        let durable = Shown::Durable;
        let ids = match self {
            Backend::Segment(s) => s.add_batch_noting(stream, entries, durable, note).await?,
            Backend::Memory(s) => s.add_batch_noting(stream, entries, durable, note).await?,
            Backend::Text(s) => s.add_batch_noting(stream, entries, durable, note).await?,
            #[cfg(feature = "redis")]
            Backend::Redis(s) => {
                let fields = entries.iter().map(NewEntry::to_fields).collect();
                return Ok((s.add_batch(stream, fields).await?, entries));
            }
        };
        Ok((ids, Vec::new()))
    }

    /// Adds `entries`, copies of entries durable elsewhere, to `stream`
    /// like `add_batch`, except that readers may see them before they are
    /// durable (see [`Shown::Early`]; Redis shows every entry at once).
    pub(crate) async fn add_copies(
        &self,
        stream: &str,
        entries: Vec<Fields>,
    ) -> Result<Vec<StreamId>, StreamError> {
        let (early, none) = (Shown::Early, |_: &[StreamId], _| {});
        match self {
            Backend::Segment(s) => s.add_batch_noting(stream, entries, early, none).await,
            Backend::Memory(s) => s.add_batch_noting(stream, entries, early, none).await,
            Backend::Text(s) => s.add_batch_noting(stream, entries, early, none).await,
            #[cfg(feature = "redis")]
            Backend::Redis(s) => s.add_batch(stream, entries).await,
        }
    }
}

fn directory(dir: &str) -> Result<PathBuf, StreamError> {
    if dir.is_empty() {
        return Err(StreamError::Reply(
            "ERR a file backend needs a directory".into(),
        ));
    }
    Ok(PathBuf::from(dir))
}

/// Implements `Streams` for `Backend` by handing each call to the backend.
macro_rules! delegate {
    ($(fn $method:ident(&self $(, $arg:ident: $ty:ty)*) -> $output:ty;)*) => {
        impl Streams for Backend {
            $(
                async fn $method(&self $(, $arg: $ty)*) -> Result<$output, StreamError> {
                    match self {
                        Backend::Segment(s) => s.$method($($arg),*).await,
                        Backend::Memory(s) => s.$method($($arg),*).await,
                        Backend::Text(s) => s.$method($($arg),*).await,
                        #[cfg(feature = "redis")]
                        Backend::Redis(s) => s.$method($($arg),*).await,
                    }
                }
            )*
        }
    };
}

delegate! {
    fn add(&self, stream: &str, fields: Fields, options: AddOptions) -> Option<StreamId>;
    fn add_batch(&self, stream: &str, entries: Vec<Fields>) -> Vec<StreamId>;
    fn range(&self, stream: &str, start: Bound, end: Bound, count: Option<usize>) -> Vec<Entry>;
    fn rev_range(&self, stream: &str, end: Bound, start: Bound, count: Option<usize>) -> Vec<Entry>;
    fn len(&self, stream: &str) -> u64;
    fn delete(&self, stream: &str, ids: &[StreamId]) -> u64;
    fn trim(&self, stream: &str, trim: Trim) -> u64;
    fn read(
        &self,
        streams: &[(&str, ReadFrom)],
        count: Option<usize>,
        block: Option<Duration>
    ) -> Vec<(String, Vec<Entry>)>;
    fn set_last_id(
        &self,
        stream: &str,
        last_id: StreamId,
        entries_added: Option<u64>,
        max_deleted: Option<StreamId>
    ) -> ();
    fn info(&self, stream: &str) -> StreamInfo;
    fn create_group(&self, stream: &str, group: &str, start: GroupStart, mkstream: bool) -> ();
    fn destroy_group(&self, stream: &str, group: &str) -> bool;
    fn set_group_id(&self, stream: &str, group: &str, start: GroupStart) -> ();
    fn create_consumer(&self, stream: &str, group: &str, consumer: &str) -> bool;
    fn delete_consumer(&self, stream: &str, group: &str, consumer: &str) -> u64;
    fn read_group(
        &self,
        group: &str,
        consumer: &str,
        streams: &[(&str, GroupRead)],
        options: ReadGroupOptions
    ) -> Vec<(String, Vec<GroupEntry>)>;
    fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> u64;
    fn pending_summary(&self, stream: &str, group: &str) -> PendingSummary;
    fn pending(&self, stream: &str, group: &str, query: &PendingQuery) -> Vec<PendingEntry>;
    fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
        options: ClaimOptions
    ) -> Vec<Entry>;
    fn auto_claim(&self, stream: &str, group: &str, consumer: &str, options: AutoClaim) -> AutoClaimed;
    fn groups(&self, stream: &str) -> Vec<GroupInfo>;
    fn consumers(&self, stream: &str, group: &str) -> Vec<ConsumerInfo>;
}
