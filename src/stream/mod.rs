//! A stream with Redis Streams semantics over any [`Log`], with its
//! consumer groups.
//!
//! A stream is two logs. The **entry log** holds the entries, one
//! [`Record`] per entry; entry ids grow with log offsets, so an id is found
//! by binary search and the engine keeps no index of its own. The
//! **journal** holds everything else as events (see `journal`): deletions,
//! trims, XSETID, and every change to a consumer group. The state those
//! events build (`state::State`) lives in memory; recovery replays the last
//! snapshot and the events after it, never the whole history, because a
//! snapshot is written whenever the events since the last one outgrow it.
//!
//! Every change is applied and written to the journal under the stream's
//! lock, so the journal's order is the order of the changes; the reply waits
//! for the journal to be durable under its fsync policy, outside the lock.
//!
//! Entries are deleted and trimmed logically: XDEL records the entry's
//! offset, a trim moves the first offset. The log drops whole segments below
//! the first offset (or, with [`Retention::keep_unacked`], below the oldest
//! entry a group still needs).

mod journal;
#[rustfmt::skip]
#[allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
pub(crate) mod journal_capnp;
mod state;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use self::journal::{Event, Replay};
use self::state::{Meta, State};
use crate::group::{Cursor, Group};
use crate::log::{Log, LogError, MAX_RECORD_BYTES, Offset};
use crate::record::{Encoder, NewEntry, Record, StreamId};
use crate::streams::{
    AddId, AutoClaim, AutoClaimed, Bound, ClaimOptions, Clock, ConsumerInfo, Entry, Fields,
    GroupEntry, GroupInfo, GroupStart, PendingEntry, PendingQuery, PendingSummary, Retention,
    StreamError, StreamInfo, StreamLogs, Trim, TrimTo,
};

/// How many records a range scan reads from the log at a time.
const SCAN_BATCH: usize = 256;
/// An append's encoder that grew past this many bytes is not kept.
const KEPT_ENCODER_BYTES: usize = 4 << 20;
/// XAUTOCLAIM examines at most this many pending entries per entry it may claim.
const AUTOCLAIM_ATTEMPTS: usize = 10;

/// When readers see the entries of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shown {
    /// Once they are durable under the fsync policy, like every entry.
    Durable,
    /// As soon as they are written, if every entry before them is seen
    /// (see [`Log::show_early`]): for copies of entries durable elsewhere,
    /// which a power loss may take without harm.
    Early,
}

/// One stream: its entry log, its journal, and the state the journal builds.
pub(crate) struct Stream<L: Log> {
    name: String,
    /// Shared with the blocking threads that remove their old segments.
    entries: Arc<L>,
    journal: Arc<L>,
    inner: Mutex<Inner>,
    /// The journal records a snapshot made unneeded. Removed only once the
    /// snapshot is durable: before, a power loss could take the snapshot
    /// and leave no record of what they said.
    old_journal: Removal,
    /// The entries a trim cut off, removed once the trim is durable.
    old_entries: Removal,
    snapshot_bytes: u64,
    retention: Retention,
    /// Wakes the readers blocked on this stream when a group goes or the
    /// stream is deleted; new entries wake them through `new_entries`.
    pub(crate) changed: Notify,
    /// The id and offset of the last entry a forward scan read. Offsets
    /// never move and ids only grow, so it stays true.
    last_read: Mutex<Option<(StreamId, u64)>>,
}

struct Inner {
    state: State,
    /// Reused by each append, so that its buffers are not grown anew for
    /// every batch.
    encoder: Encoder,
    /// Journal bytes written since the last snapshot, and that snapshot's size.
    since_snapshot: u64,
    last_snapshot: u64,
}

/// A reply, and the journal offset to wait for before giving it.
type Committed<T> = (T, Offset);

impl<L: Log> Stream<L> {
    /// Opens a stream from its two logs, replaying the journal.
    pub(crate) fn open(
        name: &str,
        logs: StreamLogs<L>,
        snapshot_bytes: u64,
        retention: Retention,
    ) -> Result<Self, StreamError> {
        let StreamLogs { entries, journal } = logs;
        let corrupt = |reason: String| StreamError::Corrupt {
            what: format!("the journal of stream '{name}'"),
            reason,
        };
        let mut replay = Replay::default();
        let mut replayed = 0u64;
        let mut at = journal.start_offset();
        while at < journal.next_offset() {
            let records = journal.read(at, SCAN_BATCH)?;
            for record in &records {
                replay.feed(record).map_err(corrupt)?;
                replayed += record.len() as u64;
            }
            at = at + records.len() as u64;
        }
        let mut state = replay.finish();
        let stream = Stream {
            name: name.to_string(),
            entries: Arc::new(entries),
            journal: Arc::new(journal),
            old_journal: Removal::default(),
            old_entries: Removal::default(),
            inner: Mutex::new(Inner {
                state: State::default(),
                encoder: Encoder::default(),
                since_snapshot: replayed,
                last_snapshot: 0,
            }),
            snapshot_bytes,
            retention,
            changed: Notify::new(),
            last_read: Mutex::new(None),
        };
        stream.reconcile(&mut state)?;
        stream.inner.lock().state = state;
        Ok(stream)
    }

    /// Fits a replayed state to the entry log: ids added since the journal's
    /// last word, entries lost with an unsynced tail (`FsyncPolicy::Never`).
    fn reconcile(&self, state: &mut State) -> Result<(), StreamError> {
        let end = self.end();
        let start = self.entries.start_offset().0;
        state.meta.first_offset = state.meta.first_offset.clamp(start, end.max(start));
        if end > start {
            state.meta.last_id = state.meta.last_id.max(self.id_at(end - 1)?);
        }
        state.deleted.retain(|&offset| offset < end);
        for group in state.groups.values_mut() {
            if group.cursor.offset > end {
                group.cursor.offset = end;
            }
        }
        Ok(())
    }

    /// Resolves once entries past those visible now become visible. The
    /// log itself wakes it, so that under an fsync policy that waits a
    /// blocked reader wakes when the fsync ends, not only once the appender
    /// has been scheduled and could tell it. Never resolves on a poisoned
    /// log, which takes no more entries.
    pub(crate) fn new_entries(&self) -> impl Future<Output = ()> + Send + '_ {
        let end = Offset(self.end());
        async move {
            if self.entries.wait_for(end).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The offset after the last visible entry.
    fn end(&self) -> u64 {
        self.entries.next_offset().0
    }

    fn corrupt(&self, reason: impl ToString) -> StreamError {
        StreamError::Corrupt {
            what: format!("the entries of stream '{}'", self.name),
            reason: reason.to_string(),
        }
    }

    fn id_at(&self, offset: u64) -> Result<StreamId, StreamError> {
        let records = self.entries.read(Offset(offset), 1)?;
        let record = records
            .first()
            .ok_or_else(|| self.corrupt(format!("no entry at offset {offset}")))?;
        Record::read_id(record).map_err(|e| self.corrupt(e))
    }

    /// The first offset in `lo..hi` whose id is at least `id` (`hi` if none).
    fn lower_bound(&self, id: StreamId, mut lo: u64, mut hi: u64) -> Result<u64, StreamError> {
        // A reader that comes back for what follows its last entry finds it
        // right after that entry (ids only grow), reading no record; one
        // that looks near it searches one side only.
        if let Some((read, offset)) = *self.last_read.lock()
            && (lo..hi).contains(&offset)
        {
            if read.next() == Some(id) {
                return Ok(offset + 1);
            } else if read < id {
                lo = offset + 1;
            } else {
                hi = offset;
            }
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.id_at(mid)? < id {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The offset of the live entry `id`, if it exists.
    fn offset_of(&self, state: &State, id: StreamId) -> Result<Option<u64>, StreamError> {
        let end = self.end();
        let offset = self.lower_bound(id, state.meta.first_offset, end)?;
        Ok(
            (offset < end && !state.deleted.contains(&offset) && self.id_at(offset)? == id)
                .then_some(offset),
        )
    }

    /// The first offset after all entries with ids up to `id`.
    fn offset_after(&self, state: &State, id: StreamId) -> Result<u64, StreamError> {
        match id.next() {
            Some(next) => self.lower_bound(next, state.meta.first_offset, self.end()),
            None => Ok(self.end()),
        }
    }

    fn decode(&self, bytes: Bytes) -> Result<Record, StreamError> {
        Record::decode(bytes).map_err(|e| self.corrupt(e))
    }

    /// Live entries from `from`, in order, while `keep` accepts their ids;
    /// at most `count`. Entries whose ids `skip` accepts are passed over
    /// without being decoded, but count towards `count`.
    fn scan_forward(
        &self,
        state: &State,
        from: u64,
        count: usize,
        keep: impl Fn(StreamId) -> bool,
        mut skip: Option<&mut dyn FnMut(StreamId) -> bool>,
    ) -> Result<Vec<(u64, Entry)>, StreamError> {
        let end = self.end();
        let mut at = from.max(state.meta.first_offset);
        // Room for one read's worth at once: a worker's fetch of a
        // thousand tasks, grown entry by entry, was reallocated eight
        // times.
        let left = usize::try_from(end.saturating_sub(at)).unwrap_or(usize::MAX);
        let mut found = Vec::with_capacity(count.min(left).min(SCAN_BATCH));
        let mut skipped = 0;
        let mut last_read = None;
        'scan: while at < end && found.len() + skipped < count {
            // No more than asked for: every record read is checksummed.
            let want = (count - found.len() - skipped).min(SCAN_BATCH);
            let batch = self.entries.read(Offset(at), want)?;
            for bytes in batch {
                let offset = at;
                at += 1;
                if state.deleted.contains(&offset) {
                    continue;
                }
                if let Some(skip) = skip.as_mut() {
                    let id = Record::read_id(&bytes).map_err(|e| self.corrupt(e))?;
                    last_read = Some((id, offset));
                    if skip(id) {
                        skipped += 1;
                        continue;
                    }
                }
                let record = self.decode(bytes)?;
                last_read = Some((record.id, offset));
                if !keep(record.id) {
                    break 'scan;
                }
                found.push((offset, entry(record)));
                if found.len() == count {
                    break;
                }
            }
        }
        if last_read.is_some() {
            *self.last_read.lock() = last_read;
        }
        Ok(found)
    }

    /// Live entries before `to`, newest first, while `keep` accepts their
    /// ids; at most `count`.
    fn scan_backward(
        &self,
        state: &State,
        to: u64,
        count: usize,
        keep: impl Fn(StreamId) -> bool,
    ) -> Result<Vec<Entry>, StreamError> {
        let first = state.meta.first_offset;
        let mut at = to;
        let mut found = Vec::new();
        while at > first && found.len() < count {
            let want = (count - found.len()).min(SCAN_BATCH) as u64;
            let from = at.saturating_sub(want).max(first);
            let batch = self.entries.read(Offset(from), (at - from) as usize)?;
            for (i, bytes) in batch.into_iter().enumerate().rev() {
                if state.deleted.contains(&(from + i as u64)) {
                    continue;
                }
                let record = self.decode(bytes)?;
                if !keep(record.id) {
                    return Ok(found);
                }
                found.push(entry(record));
                if found.len() == count {
                    break;
                }
            }
            at = from;
        }
        Ok(found)
    }

    /// Applies `events`, writes them to the journal (with a snapshot when the
    /// journal has grown enough since the last), and returns the offset to
    /// wait for.
    fn commit(&self, inner: &mut Inner, events: &[Event]) -> Result<Offset, StreamError> {
        if events.is_empty() {
            return Ok(Offset(0));
        }
        let records: Vec<Vec<u8>> = events.iter().flat_map(Event::records).collect();
        let mut end = self.journal.append_nowait(&records)?.end;
        for event in events {
            inner.state.apply(event);
        }
        inner.since_snapshot += records.iter().map(|r| r.len() as u64).sum::<u64>();
        if inner.since_snapshot > self.snapshot_bytes.max(2 * inner.last_snapshot) {
            let snapshot = journal::snapshot(&inner.state);
            let written = self.journal.append_nowait(&snapshot)?;
            inner.last_snapshot = snapshot.iter().map(|r| r.len() as u64).sum();
            inner.since_snapshot = 0;
            self.old_journal.after(written.start, written.end);
            end = written.end;
        }
        Ok(end)
    }

    async fn wait(&self, offset: Offset) -> Result<(), StreamError> {
        self.journal.wait_durable(offset).await?;
        for (removal, log) in [
            (&self.old_journal, &self.journal),
            (&self.old_entries, &self.entries),
        ] {
            if let Some(before) = removal.due(offset) {
                remove_before(log, before, &self.name).await;
            }
        }
        Ok(())
    }

    /// XADD: appends an entry and waits for it to be durable.
    pub(crate) async fn add(
        &self,
        fields: Fields,
        id: AddId,
        clock: &dyn Clock,
    ) -> Result<StreamId, StreamError> {
        let ids = self
            .append(vec![fields], id, clock, Shown::Durable, |_, _| {})
            .await?;
        Ok(ids[0])
    }

    /// Appends entries, the first with an id chosen by `id` and the rest as
    /// `*` would, and waits for them to be durable; readers see them when
    /// `shown` says. `note` gets the ids and the entries as soon as they
    /// are written, before any reader can see them.
    pub(crate) async fn append<E: NewEntry>(
        &self,
        batch: Vec<E>,
        id: AddId,
        clock: &dyn Clock,
        shown: Shown,
        note: impl FnOnce(&[StreamId], Vec<E>),
    ) -> Result<Vec<StreamId>, StreamError> {
        let (ids, end) = {
            let mut inner = self.inner.lock();
            let now = clock.now_ms();
            let mut last = inner.state.meta.last_id;
            let mut ids = Vec::with_capacity(batch.len());
            let inner = &mut *inner;
            let records = &mut inner.encoder;
            records.clear(KEPT_ENCODER_BYTES);
            for (i, entry) in batch.iter().enumerate() {
                let next = next_id(last, if i == 0 { id } else { AddId::Auto }, now)?;
                entry.encode(next, now, records);
                ids.push(next);
                last = next;
            }
            if let Some(size) = records.too_large() {
                // Larger than any log takes: refused before it is written.
                let max = MAX_RECORD_BYTES;
                return Err(LogError::RecordTooLarge { size, max }.into());
            }
            let offsets = self.entries.append_nowait(&records.records())?;
            note(&ids, batch);
            inner.state.meta.last_id = last;
            let end = offsets.end;
            if shown == Shown::Early {
                self.entries.show_early(offsets)?;
            }
            (ids, end)
        };
        self.entries.wait_durable(end).await?;
        Ok(ids)
    }

    /// XRANGE (forward) and XREVRANGE (`reverse`), `start <= end` by id.
    pub(crate) fn range(
        &self,
        start: Bound,
        end: Bound,
        count: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<Entry>, StreamError> {
        let count = count.unwrap_or(usize::MAX);
        let inner = self.inner.lock();
        let state = &inner.state;
        let first = state.meta.first_offset;
        let above = |id: StreamId| match start {
            Bound::Min => true,
            Bound::Max => false,
            Bound::Included(start) => id >= start,
            Bound::Excluded(start) => id > start,
        };
        let below = |id: StreamId| match end {
            Bound::Min => false,
            Bound::Max => true,
            Bound::Included(end) => id <= end,
            Bound::Excluded(end) => id < end,
        };
        if count == 0 {
            return Ok(Vec::new());
        }
        if reverse {
            let to = match end {
                Bound::Min => first,
                Bound::Max => self.end(),
                Bound::Included(id) => self.offset_after(state, id)?,
                Bound::Excluded(id) => self.lower_bound(id, first, self.end())?,
            };
            self.scan_backward(state, to, count, above)
        } else {
            let from = match start {
                Bound::Min => first,
                Bound::Max => self.end(),
                Bound::Included(id) => self.lower_bound(id, first, self.end())?,
                Bound::Excluded(id) => self.offset_after(state, id)?,
            };
            let found = self.scan_forward(state, from, count, below, None)?;
            Ok(found.into_iter().map(|(_, entry)| entry).collect())
        }
    }

    /// Entries after `after`, for XREAD: at most `count`, counting those
    /// passed over because `skip` accepts their ids.
    pub(crate) fn read_after(
        &self,
        after: StreamId,
        count: usize,
        skip: Option<&mut dyn FnMut(StreamId) -> bool>,
    ) -> Result<Vec<Entry>, StreamError> {
        let inner = self.inner.lock();
        let from = self.offset_after(&inner.state, after)?;
        let found = self.scan_forward(&inner.state, from, count, |_| true, skip)?;
        Ok(found.into_iter().map(|(_, entry)| entry).collect())
    }

    pub(crate) fn last_id(&self) -> StreamId {
        self.inner.lock().state.meta.last_id
    }

    /// XLEN.
    pub(crate) fn len(&self) -> u64 {
        let inner = self.inner.lock();
        inner.state.live_between(0, self.end())
    }

    /// XDEL.
    pub(crate) async fn delete(&self, ids: &[StreamId]) -> Result<u64, StreamError> {
        let (deleted, wait) = {
            let mut inner = self.inner.lock();
            let mut offsets = Vec::new();
            let mut max = inner.state.meta.max_deleted;
            for &id in ids {
                if let Some(offset) = self.offset_of(&inner.state, id)?
                    && !offsets.contains(&offset)
                {
                    offsets.push(offset);
                    max = max.max(id);
                }
            }
            if offsets.is_empty() {
                return Ok(0);
            }
            let meta = Meta {
                max_deleted: max,
                ..inner.state.meta
            };
            let count = offsets.len() as u64;
            let events = [Event::Deleted(offsets), Event::Meta(meta)];
            (count, self.commit(&mut inner, &events)?)
        };
        self.wait(wait).await?;
        Ok(deleted)
    }

    /// XTRIM, and the trim of XADD.
    pub(crate) async fn trim(&self, trim: Trim) -> Result<u64, StreamError> {
        let (removed, wait) = {
            let mut inner = self.inner.lock();
            let state = &inner.state;
            let first = state.meta.first_offset;
            let end = self.end();
            let excess = match trim.to {
                TrimTo::MaxLen(keep) => state.live_between(first, end).saturating_sub(keep),
                TrimTo::MinId(min) => state.live_between(first, self.lower_bound(min, first, end)?),
            };
            let limit = match (trim.approximate, trim.limit) {
                (true, Some(limit)) if limit > 0 => limit,
                _ => u64::MAX,
            };
            let to = past_live(state, excess.min(limit));
            self.cut(&mut inner, to)?
        };
        self.wait(wait).await?;
        Ok(removed)
    }

    /// Applies the retention limits: trims the entries beyond `max_len` or
    /// older than `max_age`, but with `keep_unacked` never one that a group
    /// has not delivered or has not had acknowledged.
    pub(crate) async fn enforce_retention(&self, now_ms: u64) -> Result<u64, StreamError> {
        let retention = self.retention;
        let (removed, wait) = {
            let mut inner = self.inner.lock();
            let state = &inner.state;
            let (first, end) = (state.meta.first_offset, self.end());
            let mut to = first;
            if let Some(max_len) = retention.max_len {
                to = to.max(past_live(
                    state,
                    state.live_between(first, end).saturating_sub(max_len),
                ));
            }
            if let Some(max_age) = retention.max_age {
                let oldest = now_ms.saturating_sub(max_age.as_millis() as u64);
                to = to.max(self.lower_bound(StreamId::new(oldest, 0), first, end)?);
            }
            if retention.keep_unacked {
                to = to.min(self.group_floor(state)?);
            }
            self.cut(&mut inner, to)?
        };
        self.wait(wait).await?;
        Ok(removed)
    }

    /// Moves the first offset up to `to`, the log segments below it to be
    /// removed once that is durable; returns how many live entries that
    /// removed.
    fn cut(&self, inner: &mut Inner, to: u64) -> Result<Committed<u64>, StreamError> {
        let first = inner.state.meta.first_offset;
        if to <= first {
            return Ok((0, Offset(0)));
        }
        let removed = inner.state.live_between(first, to);
        let meta = Meta {
            first_offset: to,
            ..inner.state.meta
        };
        let wait = self.commit(inner, &[Event::Meta(meta)])?;
        self.old_entries.after(Offset(to), wait);
        Ok((removed, wait))
    }

    /// The oldest offset a group still needs: its cursor or its oldest pending entry.
    fn group_floor(&self, state: &State) -> Result<u64, StreamError> {
        let mut floor = self.end();
        for group in state.groups.values() {
            floor = floor.min(group.cursor.offset);
            if let Some((&oldest, _)) = group.pel.iter().next() {
                floor = floor.min(self.lower_bound(oldest, state.meta.first_offset, floor)?);
            }
        }
        Ok(floor)
    }

    /// XSETID.
    pub(crate) async fn set_last_id(
        &self,
        last_id: StreamId,
        entries_added: Option<u64>,
        max_deleted: Option<StreamId>,
    ) -> Result<(), StreamError> {
        let wait = {
            let mut inner = self.inner.lock();
            let end = self.end();
            let state = &inner.state;
            if state.live_between(0, end) > 0 && last_id < self.id_at(end - 1)? {
                return Err(StreamError::SetIdTooSmall);
            }
            let mut meta = state.meta;
            if let Some(added) = entries_added {
                if added < state.live_between(0, end) {
                    return Err(StreamError::EntriesAddedTooSmall);
                }
                meta.added_beyond_log = added.saturating_sub(end);
            }
            if let Some(max) = max_deleted {
                if last_id < max {
                    return Err(StreamError::MaxDeletedTooLarge);
                }
                meta.max_deleted = max;
            }
            meta.last_id = last_id;
            self.commit(&mut inner, &[Event::Meta(meta)])?
        };
        self.wait(wait).await
    }

    /// XINFO STREAM.
    pub(crate) fn info(&self) -> Result<StreamInfo, StreamError> {
        let inner = self.inner.lock();
        let state = &inner.state;
        let end = self.end();
        let first = self
            .scan_forward(state, 0, 1, |_| true, None)?
            .pop()
            .map(|(_, e)| e);
        let last = self.scan_backward(state, end, 1, |_| true)?.pop();
        Ok(StreamInfo {
            length: state.live_between(0, end),
            last_generated_id: state.meta.last_id,
            max_deleted_entry_id: state.meta.max_deleted,
            entries_added: end + state.meta.added_beyond_log,
            recorded_first_entry_id: first.as_ref().map_or(StreamId::MIN, |e| e.id),
            groups: state.groups.len() as u64,
            first_entry: first,
            last_entry: last,
        })
    }

    fn cursor_for(&self, state: &State, start: GroupStart) -> Result<Cursor, StreamError> {
        Ok(match start {
            GroupStart::End => Cursor {
                last_id: state.meta.last_id,
                offset: self.end(),
            },
            GroupStart::After(id) => Cursor {
                last_id: id,
                offset: self.offset_after(state, id)?,
            },
        })
    }

    /// XGROUP CREATE on an existing stream.
    pub(crate) async fn create_group(
        &self,
        group: &str,
        start: GroupStart,
    ) -> Result<(), StreamError> {
        let wait = {
            let mut inner = self.inner.lock();
            if inner.state.groups.contains_key(group) {
                return Err(StreamError::BusyGroup);
            }
            let cursor = self.cursor_for(&inner.state, start)?;
            let event = Event::GroupSet {
                group: group.to_string(),
                cursor,
            };
            self.commit(&mut inner, &[event])?
        };
        self.wait(wait).await
    }

    /// XGROUP DESTROY.
    pub(crate) async fn destroy_group(&self, group: &str) -> Result<bool, StreamError> {
        let wait = {
            let mut inner = self.inner.lock();
            if !inner.state.groups.contains_key(group) {
                return Ok(false);
            }
            self.commit(&mut inner, &[Event::GroupDestroyed(group.to_string())])?
        };
        self.wait(wait).await?;
        Ok(true)
    }

    fn no_such_group(&self, group: &str) -> StreamError {
        StreamError::NoSuchGroup {
            stream: self.name.clone(),
            group: group.to_string(),
        }
    }

    /// The named group, or NOGROUP with the command's `suffix`.
    fn group<'a>(
        &self,
        state: &'a State,
        group: &str,
        suffix: &'static str,
    ) -> Result<&'a Group, StreamError> {
        state.groups.get(group).ok_or_else(|| StreamError::NoGroup {
            stream: self.name.clone(),
            group: group.to_string(),
            suffix,
        })
    }

    /// XGROUP SETID.
    pub(crate) async fn set_group_id(
        &self,
        group: &str,
        start: GroupStart,
    ) -> Result<(), StreamError> {
        let wait = {
            let mut inner = self.inner.lock();
            if !inner.state.groups.contains_key(group) {
                return Err(self.no_such_group(group));
            }
            let cursor = self.cursor_for(&inner.state, start)?;
            let event = Event::GroupSet {
                group: group.to_string(),
                cursor,
            };
            self.commit(&mut inner, &[event])?
        };
        self.wait(wait).await
    }

    /// XGROUP CREATECONSUMER.
    pub(crate) async fn create_consumer(
        &self,
        group: &str,
        consumer: &str,
        now_ms: u64,
    ) -> Result<bool, StreamError> {
        let wait = {
            let mut inner = self.inner.lock();
            let existing = inner
                .state
                .groups
                .get(group)
                .ok_or_else(|| self.no_such_group(group))?;
            if existing.consumer_id(consumer).is_some() {
                return Ok(false);
            }
            let event = consumer_set(group, consumer, now_ms, None);
            self.commit(&mut inner, &[event])?
        };
        self.wait(wait).await?;
        Ok(true)
    }

    /// XGROUP DELCONSUMER: returns how many entries were pending for it.
    pub(crate) async fn delete_consumer(
        &self,
        group: &str,
        consumer: &str,
    ) -> Result<u64, StreamError> {
        let (pending, wait) = {
            let mut inner = self.inner.lock();
            let existing = inner
                .state
                .groups
                .get(group)
                .ok_or_else(|| self.no_such_group(group))?;
            let Some(id) = existing.consumer_id(consumer) else {
                return Ok(0);
            };
            let pending = existing.consumer(id).pending;
            let event = Event::ConsumerDeleted {
                group: group.to_string(),
                consumer: consumer.to_string(),
            };
            (pending, self.commit(&mut inner, &[event])?)
        };
        self.wait(wait).await?;
        Ok(pending)
    }

    /// XREADGROUP with `>`: delivers up to `count` new entries. Empty if there
    /// are none (the caller may block and try again). `unsynced`: see
    /// `ReadGroupOptions::unsynced_delivery`.
    pub(crate) async fn read_new(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
        no_ack: bool,
        unsynced: bool,
        now_ms: u64,
    ) -> Result<Vec<GroupEntry>, StreamError> {
        let (entries, wait) = {
            let mut inner = self.inner.lock();
            let state = &inner.state;
            let existing = self.group(state, group, READ_SUFFIX)?;
            let found = self.scan_forward(state, existing.cursor.offset, count, |_| true, None)?;
            let mut events = Vec::new();
            if existing.consumer_id(consumer).is_none() || (no_ack && !found.is_empty()) {
                let active = (!found.is_empty()).then_some(now_ms);
                events.push(consumer_set(group, consumer, now_ms, active));
            }
            if let Some(&(offset, ref last)) = found.last() {
                let cursor = Cursor {
                    last_id: last.id,
                    offset: offset + 1,
                };
                events.push(if no_ack {
                    Event::GroupSet {
                        group: group.to_string(),
                        cursor,
                    }
                } else {
                    Event::Pending {
                        group: group.to_string(),
                        consumer: consumer.to_string(),
                        delivered_ms: now_ms,
                        entries: found.iter().map(|(_, entry)| (entry.id, 1)).collect(),
                        cursor: Some(cursor),
                    }
                });
            }
            let wait = self.commit(&mut inner, &events)?;
            let entries = found
                .into_iter()
                .map(|(_, entry)| GroupEntry {
                    id: entry.id,
                    fields: Some(entry.fields),
                })
                .collect();
            (entries, wait)
        };
        if !unsynced {
            self.wait(wait).await?;
        } else if wait != Offset(0) {
            // A crash of the process must keep the delivery.
            self.journal.flush()?;
        }
        Ok(entries)
    }

    /// XREADGROUP with an id: the consumer's own pending entries after it,
    /// delivered again.
    pub(crate) async fn read_pending(
        &self,
        group: &str,
        consumer: &str,
        after: StreamId,
        count: usize,
        now_ms: u64,
    ) -> Result<Vec<GroupEntry>, StreamError> {
        let (entries, wait) = {
            let mut inner = self.inner.lock();
            let state = &inner.state;
            let existing = self.group(state, group, READ_SUFFIX)?;
            let pending = match existing.consumer_id(consumer) {
                Some(id) => existing.pending_of(id, after, count),
                None => Vec::new(),
            };
            let created = existing.consumer_id(consumer).is_none();
            let mut entries = Vec::with_capacity(pending.len());
            for &(id, _) in &pending {
                entries.push(GroupEntry {
                    id,
                    fields: self.fields_of(state, id)?,
                });
            }
            let event = if created {
                consumer_set(group, consumer, now_ms, None)
            } else {
                Event::Pending {
                    group: group.to_string(),
                    consumer: consumer.to_string(),
                    delivered_ms: now_ms,
                    entries: pending
                        .iter()
                        .map(|(id, nack)| (*id, nack.count.saturating_add(1)))
                        .collect(),
                    cursor: None,
                }
            };
            let wait = if created || !pending.is_empty() {
                self.commit(&mut inner, &[event])?
            } else {
                Offset(0)
            };
            (entries, wait)
        };
        self.wait(wait).await?;
        Ok(entries)
    }

    /// The fields of live entry `id`, or `None` if it was deleted or trimmed.
    fn fields_of(&self, state: &State, id: StreamId) -> Result<Option<Fields>, StreamError> {
        match self.offset_of(state, id)? {
            Some(offset) => {
                let bytes = self
                    .entries
                    .read(Offset(offset), 1)?
                    .pop()
                    .ok_or_else(|| self.corrupt("entry vanished"))?;
                Ok(Some(self.decode(bytes)?.fields))
            }
            None => Ok(None),
        }
    }

    /// XACK.
    pub(crate) async fn ack(&self, group: &str, ids: &[StreamId]) -> Result<u64, StreamError> {
        let (acked, wait) = {
            let mut inner = self.inner.lock();
            let Some(existing) = inner.state.groups.get(group) else {
                return Ok(0);
            };
            let mut acked: Vec<StreamId> = ids
                .iter()
                .copied()
                .filter(|id| existing.pel.contains_key(id))
                .collect();
            acked.sort_unstable();
            acked.dedup();
            if acked.is_empty() {
                return Ok(0);
            }
            let count = acked.len() as u64;
            let event = Event::Acked {
                group: group.to_string(),
                ids: acked,
            };
            (count, self.commit(&mut inner, &[event])?)
        };
        self.wait(wait).await?;
        Ok(acked)
    }

    fn with_group<T>(
        &self,
        group: &str,
        read: impl FnOnce(&State, &Group) -> Result<T, StreamError>,
    ) -> Result<T, StreamError> {
        let inner = self.inner.lock();
        let existing = self.group(&inner.state, group, "")?;
        read(&inner.state, existing)
    }

    /// XPENDING without a range.
    pub(crate) fn pending_summary(&self, group: &str) -> Result<PendingSummary, StreamError> {
        self.with_group(group, |_, group| {
            Ok(PendingSummary {
                count: group.pel.len() as u64,
                min: group.pel.keys().next().copied(),
                max: group.pel.keys().next_back().copied(),
                consumers: group
                    .consumers()
                    .filter(|c| c.pending > 0)
                    .map(|c| (c.name.clone(), c.pending))
                    .collect(),
            })
        })
    }

    /// XPENDING with a range.
    pub(crate) fn pending(
        &self,
        group: &str,
        query: &PendingQuery,
        now_ms: u64,
    ) -> Result<Vec<PendingEntry>, StreamError> {
        self.with_group(group, |_, group| {
            let owner = match &query.consumer {
                Some(name) => match group.consumer_id(name) {
                    Some(id) => Some(id),
                    None => return Ok(Vec::new()),
                },
                None => None,
            };
            let min_idle = query.min_idle.map_or(0, |idle| idle.as_millis() as u64);
            let Some(range) = id_range(query.start, query.end) else {
                return Ok(Vec::new());
            };
            Ok(group
                .pel
                .range(range)
                .filter(|(_, nack)| owner.is_none_or(|owner| nack.consumer == owner))
                .filter(|(_, nack)| now_ms.saturating_sub(nack.delivered_ms) >= min_idle)
                .take(query.count)
                .map(|(&id, nack)| PendingEntry {
                    id,
                    consumer: group.consumer(nack.consumer).name.clone(),
                    idle: Duration::from_millis(now_ms.saturating_sub(nack.delivered_ms)),
                    deliveries: u64::from(nack.count),
                })
                .collect())
        })
    }

    /// XCLAIM.
    pub(crate) async fn claim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
        options: ClaimOptions,
        now_ms: u64,
    ) -> Result<Vec<Entry>, StreamError> {
        let (claimed, wait) = {
            let mut inner = self.inner.lock();
            let state = &inner.state;
            let existing = self.group(state, group, "")?;
            let min_idle = min_idle.as_millis() as u64;
            let delivered_ms = match (options.idle, options.time_ms) {
                (Some(idle), _) => now_ms.saturating_sub(idle.as_millis() as u64),
                (None, Some(time)) => time.min(now_ms),
                (None, None) => now_ms,
            };
            let mut gone = Vec::new();
            let mut claimed: Vec<(StreamId, u32, Option<Fields>)> = Vec::new();
            for &id in ids {
                if claimed.iter().any(|(c, _, _)| *c == id) || gone.contains(&id) {
                    continue;
                }
                let fields = self.fields_of(state, id)?;
                let nack = existing.pel.get(&id).copied();
                let Some(fields) = fields else {
                    if nack.is_some() {
                        gone.push(id);
                    }
                    continue;
                };
                let (count, since) = match nack {
                    Some(nack) => (nack.count, nack.delivered_ms),
                    None if options.force => (0, now_ms),
                    None => continue,
                };
                if min_idle > 0 && now_ms.saturating_sub(since) < min_idle {
                    continue;
                }
                let count = match options.retry_count {
                    Some(retry) => u32::try_from(retry).unwrap_or(u32::MAX),
                    None if options.just_id => count,
                    None => count.saturating_add(1),
                };
                claimed.push((id, count, Some(fields)));
            }
            let mut events = Vec::new();
            if !gone.is_empty() {
                events.push(Event::Acked {
                    group: group.to_string(),
                    ids: gone,
                });
            }
            if !claimed.is_empty() {
                events.push(Event::Pending {
                    group: group.to_string(),
                    consumer: consumer.to_string(),
                    delivered_ms,
                    entries: claimed.iter().map(|(id, count, _)| (*id, *count)).collect(),
                    cursor: None,
                });
            }
            let active = (!claimed.is_empty()).then_some(now_ms);
            if existing.consumer_id(consumer).is_none() || active.is_some() {
                events.push(consumer_set(group, consumer, now_ms, active));
            }
            if let Some(last) = options.last_id
                && last > existing.cursor.last_id
            {
                let cursor = Cursor {
                    last_id: last,
                    offset: self.offset_after(state, last)?,
                };
                events.push(Event::GroupSet {
                    group: group.to_string(),
                    cursor,
                });
            }
            let wait = self.commit(&mut inner, &events)?;
            let claimed = claimed
                .into_iter()
                .map(|(id, _, fields)| Entry {
                    id,
                    fields: if options.just_id {
                        Vec::new()
                    } else {
                        fields.unwrap_or_default()
                    },
                })
                .collect();
            (claimed, wait)
        };
        self.wait(wait).await?;
        Ok(claimed)
    }

    /// XAUTOCLAIM.
    pub(crate) async fn auto_claim(
        &self,
        group: &str,
        consumer: &str,
        options: AutoClaim,
        now_ms: u64,
    ) -> Result<AutoClaimed, StreamError> {
        let AutoClaim {
            min_idle,
            start,
            count,
            just_id,
        } = options;
        if count == 0 {
            return Err(StreamError::CountNotPositive);
        }
        let (reply, wait) = {
            let mut inner = self.inner.lock();
            let state = &inner.state;
            let existing = self.group(state, group, "")?;
            let min_idle = min_idle.as_millis() as u64;
            let mut attempts = count.saturating_mul(AUTOCLAIM_ATTEMPTS);
            let mut reply = AutoClaimed::default();
            let mut counts = Vec::new();
            let mut pending = existing.pel.range(start..).peekable();
            while attempts > 0 && reply.claimed.len() + reply.deleted.len() < count {
                let Some((&id, nack)) = pending.next() else {
                    break;
                };
                attempts -= 1;
                let Some(fields) = self.fields_of(state, id)? else {
                    reply.deleted.push(id);
                    continue;
                };
                if now_ms.saturating_sub(nack.delivered_ms) < min_idle {
                    continue;
                }
                counts.push((
                    id,
                    if just_id {
                        nack.count
                    } else {
                        nack.count.saturating_add(1)
                    },
                ));
                reply.claimed.push(Entry {
                    id,
                    fields: if just_id { Vec::new() } else { fields },
                });
            }
            reply.next = pending.next().map_or(StreamId::MIN, |(&id, _)| id);
            let mut events = Vec::new();
            if !reply.deleted.is_empty() {
                events.push(Event::Acked {
                    group: group.to_string(),
                    ids: reply.deleted.clone(),
                });
            }
            if !counts.is_empty() {
                events.push(Event::Pending {
                    group: group.to_string(),
                    consumer: consumer.to_string(),
                    delivered_ms: now_ms,
                    entries: counts,
                    cursor: None,
                });
            } else if existing.consumer_id(consumer).is_none() {
                events.push(consumer_set(group, consumer, now_ms, None));
            }
            let wait = self.commit(&mut inner, &events)?;
            (reply, wait)
        };
        self.wait(wait).await?;
        Ok(reply)
    }

    /// XINFO GROUPS.
    pub(crate) fn groups(&self) -> Vec<GroupInfo> {
        let inner = self.inner.lock();
        let end = self.end();
        inner
            .state
            .groups
            .iter()
            .map(|(name, group)| GroupInfo {
                name: name.clone(),
                consumers: group.consumer_count(),
                pending: group.pel.len() as u64,
                last_delivered_id: group.cursor.last_id,
                entries_read: Some(group.cursor.offset),
                lag: Some(inner.state.live_between(group.cursor.offset, end)),
            })
            .collect()
    }

    /// XINFO CONSUMERS.
    pub(crate) fn consumers(
        &self,
        group: &str,
        now_ms: u64,
    ) -> Result<Vec<ConsumerInfo>, StreamError> {
        let inner = self.inner.lock();
        let existing = inner
            .state
            .groups
            .get(group)
            .ok_or_else(|| self.no_such_group(group))?;
        Ok(existing
            .consumers()
            .map(|c| ConsumerInfo {
                name: c.name.clone(),
                pending: c.pending,
                idle: Duration::from_millis(now_ms.saturating_sub(c.seen_ms)),
                inactive: c
                    .active_ms
                    .map(|active| Duration::from_millis(now_ms.saturating_sub(active))),
            })
            .collect())
    }

    /// Whether `group` exists.
    pub(crate) fn has_group(&self, group: &str) -> bool {
        self.inner.lock().state.groups.contains_key(group)
    }
}

const READ_SUFFIX: &str = " in XREADGROUP with GROUP option";

/// The id XADD gives an entry after `last`, at time `now_ms`.
fn next_id(last: StreamId, id: AddId, now_ms: u64) -> Result<StreamId, StreamError> {
    let next = match id {
        AddId::Auto if now_ms > last.ms => StreamId::new(now_ms, 0),
        AddId::Auto => last.next().ok_or(StreamError::IdsExhausted)?,
        AddId::AutoSeq(ms) if ms > last.ms => StreamId::new(ms, 0),
        AddId::AutoSeq(ms) if ms == last.ms => last
            .next()
            .filter(|next| next.ms == ms)
            .ok_or(StreamError::IdNotGreater)?,
        AddId::AutoSeq(_) => return Err(StreamError::IdNotGreater),
        AddId::Explicit(StreamId::MIN) => return Err(StreamError::ZeroId),
        AddId::Explicit(id) if id <= last => return Err(StreamError::IdNotGreater),
        AddId::Explicit(id) => id,
    };
    // `0-*` on an empty stream: the smallest valid id.
    Ok(if next == StreamId::MIN {
        StreamId::new(0, 1)
    } else {
        next
    })
}

/// Records of a log to remove once the journal is durable up to a point:
/// `(before, once)`. Removing deletes segment files and syncs their
/// directory, tens of milliseconds (90 ms for a trim of a million tasks'
/// queue entries) that neither the stream's lock nor a runtime thread may
/// wait for: the first caller whose wait reaches `once` does it, on a
/// blocking thread.
#[derive(Default)]
struct Removal(Mutex<Option<(Offset, Offset)>>);

impl Removal {
    /// Records before `before` are to go once the journal is durable up
    /// to `once`; added to a removal not done yet.
    fn after(&self, before: Offset, once: Offset) {
        let mut removal = self.0.lock();
        *removal = Some(match *removal {
            Some((b, o)) => (b.max(before), o.max(once)),
            None => (before, once),
        });
    }

    /// What is to go, if the journal durable up to `durable` allows it.
    fn due(&self, durable: Offset) -> Option<Offset> {
        let mut removal = self.0.lock();
        removal
            .take_if(|&mut (_, once)| once <= durable)
            .map(|(before, _)| before)
    }
}

/// Removes the records of `log` before `before`, on a blocking thread. A
/// failure leaves them to the next removal, which takes every segment below
/// its own point: it is logged, not returned to a caller whose change is
/// durable.
async fn remove_before<L: Log>(log: &Arc<L>, before: Offset, stream: &str) {
    let log = Arc::clone(log);
    let removed = tokio::task::spawn_blocking(move || log.drop_before(before)).await;
    let error = match removed {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    tracing::warn!(%stream, %error, "cannot remove old log segments; the next removal tries again");
}

/// The offset just past the first `count` live entries of the stream.
fn past_live(state: &State, count: u64) -> u64 {
    let first = state.meta.first_offset;
    let mut at = first + count;
    for &deleted in state.deleted.range(first..) {
        if deleted >= at {
            break;
        }
        at += 1;
    }
    at
}

fn consumer_set(group: &str, consumer: &str, seen_ms: u64, active_ms: Option<u64>) -> Event {
    Event::ConsumerSet {
        group: group.to_string(),
        consumer: consumer.to_string(),
        seen_ms,
        active_ms,
    }
}

fn entry(record: Record) -> Entry {
    Entry {
        id: record.id,
        fields: record.fields,
    }
}

/// The ids between two bounds, as a B-tree range; `None` if the range is
/// empty (a B-tree range with its ends crossed would panic).
fn id_range(
    start: Bound,
    end: Bound,
) -> Option<(std::ops::Bound<StreamId>, std::ops::Bound<StreamId>)> {
    use std::ops::Bound as B;
    let convert = |bound: Bound| match bound {
        Bound::Min => B::Included(StreamId::MIN),
        Bound::Max => B::Included(StreamId::MAX),
        Bound::Included(id) => B::Included(id),
        Bound::Excluded(id) => B::Excluded(id),
    };
    let (lo, hi) = (convert(start), convert(end));
    let (B::Included(a) | B::Excluded(a), B::Included(b) | B::Excluded(b)) = (lo, hi) else {
        unreachable!("both ends are bounded")
    };
    let crossed =
        a > b || (a == b && (matches!(lo, B::Excluded(_)) || matches!(hi, B::Excluded(_))));
    (!crossed).then_some((lo, hi))
}
