//! The arguments and replies of the [`Streams`](super::Streams) API, named
//! after the Redis commands and options they stand for.

use std::time::Duration;

use bytes::Bytes;

use crate::record::StreamId;

/// An entry's field/value pairs, in order.
pub type Fields = Vec<(Bytes, Bytes)>;

/// The value of the first field called `name`.
///
/// ```
/// use orcastra::streams::field;
///
/// let fields = vec![("task".into(), "resize".into())];
/// assert_eq!(field(&fields, "task").map(|v| &v[..]), Some(&b"resize"[..]));
/// assert_eq!(field(&fields, "other"), None);
/// ```
pub fn field<'a>(fields: &'a [(Bytes, Bytes)], name: &str) -> Option<&'a Bytes> {
    fields
        .iter()
        .find(|(key, _)| key == name.as_bytes())
        .map(|(_, value)| value)
}

/// A stream entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its id.
    pub id: StreamId,
    /// Its fields.
    pub fields: Fields,
}

/// An entry read by a consumer group: `fields` is `None` when the entry was
/// deleted or trimmed after it was delivered (Redis replies `[id, nil]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry {
    /// Its id.
    pub id: StreamId,
    /// Its fields, if it still exists.
    pub fields: Option<Fields>,
}

/// How XADD picks the new entry's id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AddId {
    /// `*`: the current time, or one past the last id if the clock is behind.
    #[default]
    Auto,
    /// `<ms>-*`: the given time with the next sequence number.
    AutoSeq(u64),
    /// `<ms>-<seq>`: exactly this id, which must be greater than the last one.
    Explicit(StreamId),
}

/// How far XTRIM (or the trim of an XADD) cuts a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrimTo {
    /// `MAXLEN n`: keep the `n` newest entries.
    MaxLen(u64),
    /// `MINID id`: drop the entries with smaller ids.
    MinId(StreamId),
}

/// A trim: where to, and whether it may stop short (`~`) to save work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trim {
    /// Where to trim to.
    pub to: TrimTo,
    /// `~`: trimming may keep more entries than asked. (The embedded engine
    /// trims exactly either way.)
    pub approximate: bool,
    /// `LIMIT n`: with `~`, evict at most this many entries (0: no limit).
    pub limit: Option<u64>,
}

impl Trim {
    /// `MAXLEN = n`.
    pub fn max_len(n: u64) -> Self {
        Trim {
            to: TrimTo::MaxLen(n),
            approximate: false,
            limit: None,
        }
    }

    /// `MINID = id`.
    pub fn min_id(id: StreamId) -> Self {
        Trim {
            to: TrimTo::MinId(id),
            approximate: false,
            limit: None,
        }
    }
}

/// The options of XADD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddOptions {
    /// The id to give the entry.
    pub id: AddId,
    /// `NOMKSTREAM`: do nothing if the stream does not exist.
    pub no_mkstream: bool,
    /// Trim the stream after adding.
    pub trim: Option<Trim>,
}

impl AddOptions {
    /// Adds with exactly this id.
    pub fn with_id(id: StreamId) -> Self {
        AddOptions {
            id: AddId::Explicit(id),
            ..AddOptions::default()
        }
    }
}

/// One end of an XRANGE, XREVRANGE or XPENDING range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// `-`: the smallest id.
    Min,
    /// `+`: the largest id.
    Max,
    /// `<id>`: including this id.
    Included(StreamId),
    /// `(<id>`: excluding this id.
    Excluded(StreamId),
}

/// Where XREAD starts in one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// Entries with ids greater than this one.
    After(StreamId),
    /// `$`: only entries added from now on.
    End,
}

/// Where XGROUP CREATE or XGROUP SETID puts a group's cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupStart {
    /// After this id: `0` to deliver the whole stream.
    After(StreamId),
    /// `$`: after the stream's last entry.
    End,
}

/// What XREADGROUP reads from one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupRead {
    /// `>`: entries never delivered to the group.
    New,
    /// `<id>`: the consumer's own pending entries with greater ids.
    Pending(StreamId),
}

/// The options of XREADGROUP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadGroupOptions {
    /// `COUNT n`: at most this many entries per stream.
    pub count: Option<usize>,
    /// `BLOCK ms`: wait this long for new entries if there are none
    /// (`Duration::ZERO` waits forever).
    pub block: Option<Duration>,
    /// `NOACK`: deliver without adding to the pending list.
    pub no_ack: bool,
    /// Not a Redis option: return new entries once their delivery is
    /// written, without waiting for the fsync that makes it durable (the
    /// embedded backends under fsync `batch` or `always`; the others ignore
    /// it). A crash of the process keeps the delivery; a power loss may
    /// forget it, and the entries are then delivered again as new, their
    /// delivery counts started over. Task workers read this way, as a task
    /// runs at least once anyway: it takes an fsync off the way from
    /// submitting a task to its start.
    pub unsynced_delivery: bool,
}

/// The reply of XPENDING without a range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingSummary {
    /// How many entries are pending.
    pub count: u64,
    /// The smallest and largest pending ids.
    pub min: Option<StreamId>,
    /// The largest pending id.
    pub max: Option<StreamId>,
    /// The consumers that have pending entries, with how many each, by name.
    pub consumers: Vec<(String, u64)>,
}

/// The range form of XPENDING.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingQuery {
    /// Where the range starts.
    pub start: Bound,
    /// Where the range ends.
    pub end: Bound,
    /// At most this many entries.
    pub count: usize,
    /// Only this consumer's entries.
    pub consumer: Option<String>,
    /// `IDLE ms`: only entries idle at least this long.
    pub min_idle: Option<Duration>,
}

impl PendingQuery {
    /// The first `count` pending entries of the group.
    pub fn first(count: usize) -> Self {
        PendingQuery {
            start: Bound::Min,
            end: Bound::Max,
            count,
            consumer: None,
            min_idle: None,
        }
    }
}

/// One pending entry, as the range form of XPENDING reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEntry {
    /// The entry's id.
    pub id: StreamId,
    /// The consumer it was delivered to.
    pub consumer: String,
    /// Time since its last delivery.
    pub idle: Duration,
    /// How many times it was delivered.
    pub deliveries: u64,
}

/// The options of XCLAIM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClaimOptions {
    /// `IDLE ms`: set the entries' idle time instead of resetting it.
    pub idle: Option<Duration>,
    /// `TIME ms`: set their last delivery time (milliseconds since the epoch).
    pub time_ms: Option<u64>,
    /// `RETRYCOUNT n`: set their delivery count instead of incrementing it.
    pub retry_count: Option<u64>,
    /// `FORCE`: claim entries that exist but are not pending.
    pub force: bool,
    /// `JUSTID`: reply with ids only and leave the delivery counts alone.
    pub just_id: bool,
    /// `LASTID id`: move the group's last delivered id up to this one.
    pub last_id: Option<StreamId>,
}

/// The reply of XAUTOCLAIM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoClaimed {
    /// Where the next call should start; `0-0` when the scan is complete.
    pub next: StreamId,
    /// The claimed entries (with no fields under `JUSTID`).
    pub claimed: Vec<Entry>,
    /// Pending ids whose entries no longer exist; they were removed.
    pub deleted: Vec<StreamId>,
}

/// The reply of XINFO STREAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Live entries.
    pub length: u64,
    /// The last id given to an entry (it may have been deleted since).
    pub last_generated_id: StreamId,
    /// The largest id ever deleted.
    pub max_deleted_entry_id: StreamId,
    /// Entries added over the stream's lifetime.
    pub entries_added: u64,
    /// The id of the first live entry, or `0-0`.
    pub recorded_first_entry_id: StreamId,
    /// How many consumer groups the stream has.
    pub groups: u64,
    /// The first live entry.
    pub first_entry: Option<Entry>,
    /// The last live entry.
    pub last_entry: Option<Entry>,
}

/// One group, as XINFO GROUPS reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// How many consumers it has.
    pub consumers: u64,
    /// How many entries are pending.
    pub pending: u64,
    /// The last entry delivered to the group.
    pub last_delivered_id: StreamId,
    /// How many of the stream's entries the group has read past, or `None`
    /// when it cannot be known (Redis; the embedded engine always knows).
    pub entries_read: Option<u64>,
    /// How many live entries are still to be delivered, or `None` when it
    /// cannot be known (Redis; the embedded engine always knows).
    pub lag: Option<u64>,
}

/// One consumer, as XINFO CONSUMERS reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// The consumer's name.
    pub name: String,
    /// How many entries are pending for it.
    pub pending: u64,
    /// Time since it last tried to read or claim.
    pub idle: Duration,
    /// Time since it last read or claimed something, or `None` if never.
    pub inactive: Option<Duration>,
}
