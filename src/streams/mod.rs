//! The [`Streams`] API: Redis Streams and consumer groups as async Rust.
//!
//! Everything above the storage engine (the task layer, the Redis protocol
//! server) uses streams through this trait, and two types implement it:
//! [`Embedded`], the engine in this process over any [`Log`](crate::Log),
//! and, with the `redis` feature, `RedisStreams`, a client of a Redis server.
//!
//! The methods are the Redis commands, typed: `add` is XADD, `read_group` is
//! XREADGROUP, and so on; each method's documentation names its command.
//! Errors are the errors Redis gives ([`StreamError`]); an operation that
//! fails changes nothing. Where the embedded engine knows more than Redis
//! (it counts `entries-read` and `lag` exactly, where Redis sometimes
//! answers nil) the difference is noted on the field.
//!
//! ```
//! use orcastra::streams::{AddOptions, Embedded, GroupRead, GroupStart, ReadGroupOptions, Streams};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), orcastra::streams::StreamError> {
//! let streams = Embedded::memory();
//! let fields = vec![("url".into(), "https://example.com".into())];
//! let id = streams.add("jobs", fields, AddOptions::default()).await?.unwrap();
//!
//! streams.create_group("jobs", "workers", GroupStart::After(Default::default()), false).await?;
//! let read = streams
//!     .read_group("workers", "w1", &[("jobs", GroupRead::New)], ReadGroupOptions::default())
//!     .await?;
//! assert_eq!(read[0].1[0].id, id);
//! assert_eq!(streams.ack("jobs", "workers", &[id]).await?, 1);
//! # Ok(())
//! # }
//! ```

mod backend;
mod embedded;
mod error;
#[cfg(feature = "redis")]
mod redis;
mod types;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(feature = "redis")]
pub use self::redis::RedisStreams;
pub use backend::Backend;
pub use embedded::{Embedded, FileLog, FileStore, LogStore, MemoryStore, StreamLogs};
pub use error::StreamError;
pub use types::{
    AddId, AddOptions, AutoClaimed, Bound, ClaimOptions, ConsumerInfo, Entry, Fields, GroupEntry,
    GroupInfo, GroupRead, GroupStart, PendingEntry, PendingQuery, PendingSummary, ReadFrom,
    ReadGroupOptions, StreamInfo, Trim, TrimTo, field,
};

use crate::record::StreamId;

/// Streams and consumer groups with Redis Streams semantics. See the
/// [module docs](self).
pub trait Streams: Send + Sync + 'static {
    /// XADD: appends an entry and returns its id once it is durable; `None`
    /// if the stream does not exist and `options.no_mkstream` is set.
    fn add(
        &self,
        stream: &str,
        fields: Fields,
        options: AddOptions,
    ) -> impl Future<Output = Result<Option<StreamId>, StreamError>> + Send;

    /// Adds several entries in one go, with ids chosen as XADD `*` would; a
    /// Redis server gets them as one pipeline of XADDs. Creates the stream.
    fn add_batch(
        &self,
        stream: &str,
        entries: Vec<Fields>,
    ) -> impl Future<Output = Result<Vec<StreamId>, StreamError>> + Send;

    /// XRANGE: entries with ids from `start` to `end`, oldest first.
    fn range(
        &self,
        stream: &str,
        start: Bound,
        end: Bound,
        count: Option<usize>,
    ) -> impl Future<Output = Result<Vec<Entry>, StreamError>> + Send;

    /// XREVRANGE: entries with ids from `end` down to `start`, newest first.
    fn rev_range(
        &self,
        stream: &str,
        end: Bound,
        start: Bound,
        count: Option<usize>,
    ) -> impl Future<Output = Result<Vec<Entry>, StreamError>> + Send;

    /// XLEN: the number of live entries (0 for a missing stream).
    fn len(&self, stream: &str) -> impl Future<Output = Result<u64, StreamError>> + Send;

    /// XDEL: deletes entries; returns how many existed.
    fn delete(
        &self,
        stream: &str,
        ids: &[StreamId],
    ) -> impl Future<Output = Result<u64, StreamError>> + Send;

    /// XTRIM: trims the stream; returns how many entries it removed.
    fn trim(
        &self,
        stream: &str,
        trim: Trim,
    ) -> impl Future<Output = Result<u64, StreamError>> + Send;

    /// XREAD: entries after a position in each stream; streams with none are
    /// left out. With `block`, waits that long for an entry if there is none
    /// (`Duration::ZERO`: forever); empty on timeout.
    fn read(
        &self,
        streams: &[(&str, ReadFrom)],
        count: Option<usize>,
        block: Option<Duration>,
    ) -> impl Future<Output = Result<Vec<(String, Vec<Entry>)>, StreamError>> + Send;

    /// XSETID: sets the stream's last id (and optionally its entries-added
    /// count and largest deleted id).
    fn set_last_id(
        &self,
        stream: &str,
        last_id: StreamId,
        entries_added: Option<u64>,
        max_deleted: Option<StreamId>,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// XINFO STREAM.
    fn info(&self, stream: &str) -> impl Future<Output = Result<StreamInfo, StreamError>> + Send;

    /// XGROUP CREATE: creates a group; `mkstream` creates the stream too.
    fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
        mkstream: bool,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// XGROUP DESTROY: true if the group existed.
    fn destroy_group(
        &self,
        stream: &str,
        group: &str,
    ) -> impl Future<Output = Result<bool, StreamError>> + Send;

    /// XGROUP SETID: moves the group's cursor.
    fn set_group_id(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// XGROUP CREATECONSUMER: true if the consumer was created.
    fn create_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> impl Future<Output = Result<bool, StreamError>> + Send;

    /// XGROUP DELCONSUMER: removes a consumer and its pending entries;
    /// returns how many were pending.
    fn delete_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> impl Future<Output = Result<u64, StreamError>> + Send;

    /// XREADGROUP. For [`GroupRead::New`], streams without new entries are
    /// left out, and `options.block` waits for one; for
    /// [`GroupRead::Pending`], every stream is in the reply. A wait ends in
    /// [`StreamError::StreamGoneWhileBlocked`] if a stream is deleted, and
    /// in [`StreamError::GroupGoneWhileBlocked`] if the group is destroyed.
    fn read_group(
        &self,
        group: &str,
        consumer: &str,
        streams: &[(&str, GroupRead)],
        options: ReadGroupOptions,
    ) -> impl Future<Output = Result<Vec<(String, Vec<GroupEntry>)>, StreamError>> + Send;

    /// XACK: returns how many of the ids were pending.
    fn ack(
        &self,
        stream: &str,
        group: &str,
        ids: &[StreamId],
    ) -> impl Future<Output = Result<u64, StreamError>> + Send;

    /// XPENDING without a range.
    fn pending_summary(
        &self,
        stream: &str,
        group: &str,
    ) -> impl Future<Output = Result<PendingSummary, StreamError>> + Send;

    /// XPENDING with a range.
    fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> impl Future<Output = Result<Vec<PendingEntry>, StreamError>> + Send;

    /// XCLAIM: gives `consumer` the pending entries idle at least
    /// `min_idle`; pending entries that no longer exist are removed.
    fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
        options: ClaimOptions,
    ) -> impl Future<Output = Result<Vec<Entry>, StreamError>> + Send;

    /// XAUTOCLAIM: claims pending entries idle at least `min_idle`, scanning
    /// from `start`.
    fn auto_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: AutoClaim,
    ) -> impl Future<Output = Result<AutoClaimed, StreamError>> + Send;

    /// XINFO GROUPS.
    fn groups(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<Vec<GroupInfo>, StreamError>> + Send;

    /// XINFO CONSUMERS.
    fn consumers(
        &self,
        stream: &str,
        group: &str,
    ) -> impl Future<Output = Result<Vec<ConsumerInfo>, StreamError>> + Send;
}

/// The arguments of XAUTOCLAIM after the consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoClaim {
    /// Claim entries idle at least this long.
    pub min_idle: Duration,
    /// Start scanning the pending list here.
    pub start: StreamId,
    /// Claim at most this many (Redis's default is 100; 0 is an error).
    pub count: usize,
    /// `JUSTID`.
    pub just_id: bool,
}

/// Limits that trim a stream automatically as entries are added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many entries.
    pub max_len: Option<u64>,
    /// Drop entries whose id's time part is older than this.
    pub max_age: Option<Duration>,
    /// Never drop an entry that a group has not yet delivered, or that is
    /// still pending in a group, whatever the limits above say.
    pub keep_unacked: bool,
}

/// Where the embedded engine reads the time (ids, idle times).
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// The time since the Unix epoch, finer than a millisecond where the
    /// clock can tell: for waiting until a time, not past it.
    fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms())
    }
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.now().as_millis() as u64
    }

    fn now(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// A clock that moves only when told to: for tests of idle times and ids.
///
/// ```
/// use orcastra::streams::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(1_000);
/// clock.advance(Duration::from_millis(500));
/// assert_eq!(clock.now_ms(), 1_500);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        ManualClock(AtomicU64::new(now_ms))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock, forward or back.
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock> Clock for std::sync::Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }

    fn now(&self) -> Duration {
        (**self).now()
    }
}
