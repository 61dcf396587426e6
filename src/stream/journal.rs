//! The journal of a stream: every change to its metadata and groups as an
//! event (schema: `schema/journal.capnp`), and snapshots of the whole state
//! so that recovery reads only the last snapshot and the events after it.

use std::collections::BTreeMap;

use capnp::message::Builder;
use capnp::serialize;

use super::journal_capnp as schema;
use super::state::{Meta, State};
use crate::group::{Cursor, Group, Nack};
use crate::record::{StreamId, builder, read_message};

/// At most this many ids go in one journal record (events and snapshots),
/// keeping records far below the log's size limit.
const SNAPSHOT_CHUNK: usize = 50_000;

/// One change to a stream's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Meta(Meta),
    Deleted(Vec<u64>),
    GroupSet {
        group: String,
        cursor: Cursor,
    },
    GroupDestroyed(String),
    ConsumerSet {
        group: String,
        consumer: String,
        seen_ms: u64,
        active_ms: Option<u64>,
    },
    ConsumerDeleted {
        group: String,
        consumer: String,
    },
    /// Entries that became pending for `consumer` with these delivery counts.
    Pending {
        group: String,
        consumer: String,
        delivered_ms: u64,
        entries: Vec<(StreamId, u32)>,
        cursor: Option<Cursor>,
    },
    Acked {
        group: String,
        ids: Vec<StreamId>,
    },
}

impl Event {
    /// About the size of the encoded event, in words.
    fn words(&self) -> usize {
        let names =
            |names: &[&String]| names.iter().map(|n| n.len().div_ceil(8) + 1).sum::<usize>();
        32 + match self {
            Event::Meta(_) => 0,
            Event::Deleted(offsets) => offsets.len(),
            Event::GroupSet { group, .. } | Event::GroupDestroyed(group) => names(&[group]),
            Event::ConsumerSet {
                group, consumer, ..
            }
            | Event::ConsumerDeleted { group, consumer } => names(&[group, consumer]),
            Event::Pending {
                group,
                consumer,
                entries,
                ..
            } => names(&[group, consumer]) + 3 * entries.len(),
            Event::Acked { group, ids } => names(&[group]) + 2 * ids.len(),
        }
    }

    /// The event as journal records: one, or several for an event with more
    /// ids than fit in a record. Applying the parts in order has the same
    /// effect as applying the whole (a group's cursor moves with the last).
    pub(crate) fn records(&self) -> Vec<Vec<u8>> {
        match self {
            Event::Pending {
                group,
                consumer,
                delivered_ms,
                entries,
                cursor,
            } if entries.len() > SNAPSHOT_CHUNK => {
                let chunks: Vec<_> = entries.chunks(SNAPSHOT_CHUNK).collect();
                let last = chunks.len() - 1;
                chunks
                    .into_iter()
                    .enumerate()
                    .map(|(i, chunk)| {
                        Event::Pending {
                            group: group.clone(),
                            consumer: consumer.clone(),
                            delivered_ms: *delivered_ms,
                            entries: chunk.to_vec(),
                            cursor: if i == last { *cursor } else { None },
                        }
                        .encode()
                    })
                    .collect()
            }
            Event::Acked { group, ids } if ids.len() > SNAPSHOT_CHUNK => ids
                .chunks(SNAPSHOT_CHUNK)
                .map(|chunk| {
                    Event::Acked {
                        group: group.clone(),
                        ids: chunk.to_vec(),
                    }
                    .encode()
                })
                .collect(),
            Event::Deleted(offsets) if offsets.len() > SNAPSHOT_CHUNK => offsets
                .chunks(SNAPSHOT_CHUNK)
                .map(|chunk| Event::Deleted(chunk.to_vec()).encode())
                .collect(),
            _ => vec![self.encode()],
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut message = builder(self.words());
        let event = message.init_root::<schema::event::Builder<'_>>();
        match self {
            Event::Meta(meta) => write_meta(event.init_meta(), meta),
            Event::Deleted(offsets) => {
                let mut list = event.init_deleted(len32(offsets.len()));
                for (i, &offset) in offsets.iter().enumerate() {
                    list.set(i as u32, offset);
                }
            }
            Event::GroupSet { group, cursor } => write_group(event.init_group_set(), group, cursor),
            Event::GroupDestroyed(group) => event
                .init_group_destroyed(len32(group.len()))
                .copy_from_slice(group.as_bytes()),
            Event::ConsumerSet {
                group,
                consumer,
                seen_ms,
                active_ms,
            } => write_consumer(
                event.init_consumer_set(),
                group,
                consumer,
                *seen_ms,
                *active_ms,
            ),
            Event::ConsumerDeleted { group, consumer } => {
                let mut at = event.init_consumer_deleted();
                at.set_group(group.as_bytes());
                at.set_name(consumer.as_bytes());
            }
            Event::Pending {
                group,
                consumer,
                delivered_ms,
                entries,
                cursor,
            } => {
                let mut pending = event.init_pending();
                write_pending_head(pending.reborrow(), group, consumer, *delivered_ms);
                let mut ids = pending.reborrow().init_ids(len32(entries.len()));
                for (i, (id, _)) in entries.iter().enumerate() {
                    write_id(ids.reborrow().get(i as u32), *id);
                }
                let mut counts = pending.reborrow().init_counts(len32(entries.len()));
                for (i, (_, count)) in entries.iter().enumerate() {
                    counts.set(i as u32, *count);
                }
                if let Some(cursor) = cursor {
                    pending.set_moved(true);
                    write_cursor(pending.init_cursor(), cursor);
                }
            }
            Event::Acked { group, ids } => {
                let mut acked = event.init_acked();
                acked.set_group(group.as_bytes());
                let mut list = acked.init_ids(len32(ids.len()));
                for (i, &id) in ids.iter().enumerate() {
                    write_id(list.reborrow().get(i as u32), id);
                }
            }
        }
        serialize::write_message_to_words(&message)
    }
}

/// The records of a snapshot of `state`: begin, pending chunks, end.
pub(crate) fn snapshot(state: &State) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    let mut message = Builder::new_default();
    {
        let mut begin = message
            .init_root::<schema::event::Builder<'_>>()
            .init_snapshot_begin();
        write_meta(begin.reborrow().init_meta(), &state.meta);
        let mut deleted = begin.reborrow().init_deleted(len32(state.deleted.len()));
        for (i, &offset) in state.deleted.iter().enumerate() {
            deleted.set(i as u32, offset);
        }
        let mut groups = begin.reborrow().init_groups(len32(state.groups.len()));
        for (i, (name, group)) in state.groups.iter().enumerate() {
            write_group(groups.reborrow().get(i as u32), name, &group.cursor);
        }
        let consumers: Vec<_> = state
            .groups
            .iter()
            .flat_map(|(name, group)| group.consumers().map(move |c| (name, c)))
            .collect();
        let mut list = begin.init_consumers(len32(consumers.len()));
        for (i, (group, consumer)) in consumers.into_iter().enumerate() {
            write_consumer(
                list.reborrow().get(i as u32),
                group,
                &consumer.name,
                consumer.seen_ms,
                consumer.active_ms,
            );
        }
    }
    records.push(serialize::write_message_to_words(&message));

    for (name, group) in &state.groups {
        // One consumer's entries per record, since a record names one consumer.
        let mut by_consumer: BTreeMap<u32, Vec<(StreamId, Nack)>> = BTreeMap::new();
        for (&id, &nack) in &group.pel {
            by_consumer
                .entry(nack.consumer)
                .or_default()
                .push((id, nack));
        }
        for (consumer, entries) in by_consumer {
            let consumer = &group.consumer(consumer).name;
            for chunk in entries.chunks(SNAPSHOT_CHUNK) {
                let mut message = Builder::new_default();
                let mut pending = message
                    .init_root::<schema::event::Builder<'_>>()
                    .init_snapshot_pending();
                write_pending_head(pending.reborrow(), name, consumer, 0);
                let mut ids = pending.reborrow().init_ids(len32(chunk.len()));
                for (i, (id, _)) in chunk.iter().enumerate() {
                    write_id(ids.reborrow().get(i as u32), *id);
                }
                let mut counts = pending.reborrow().init_counts(len32(chunk.len()));
                for (i, (_, nack)) in chunk.iter().enumerate() {
                    counts.set(i as u32, nack.count);
                }
                let mut times = pending.init_times(len32(chunk.len()));
                for (i, (_, nack)) in chunk.iter().enumerate() {
                    times.set(i as u32, nack.delivered_ms);
                }
                records.push(serialize::write_message_to_words(&message));
            }
        }
    }

    let mut message = Builder::new_default();
    message
        .init_root::<schema::event::Builder<'_>>()
        .set_snapshot_end(());
    records.push(serialize::write_message_to_words(&message));
    records
}

/// Rebuilds a state from journal records read in order.
#[derive(Default)]
pub(crate) struct Replay {
    state: State,
    /// A snapshot being read; it replaces `state` once its end is read.
    snapshot: Option<State>,
}

impl Replay {
    /// Applies one journal record.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        read_message(bytes, |message| {
            let event = message.get_root::<schema::event::Reader<'_>>()?;
            match event.which()? {
                schema::event::SnapshotBegin(begin) => {
                    self.snapshot = Some(read_snapshot(begin?)?);
                }
                schema::event::SnapshotPending(pending) => {
                    let pending = pending?;
                    let Some(snapshot) = self.snapshot.as_mut() else {
                        return Ok(());
                    };
                    let (group, consumer) = read_ref(pending.get_consumer()?)?;
                    let Some(group) = snapshot.groups.get_mut(&group) else {
                        return Ok(());
                    };
                    let consumer = group.ensure_consumer(&consumer, 0);
                    let (ids, counts, times) = (
                        pending.get_ids()?,
                        pending.get_counts()?,
                        pending.get_times()?,
                    );
                    for i in 0..ids.len() {
                        group.set_pending(
                            read_id(ids.get(i)),
                            consumer,
                            times.get(i),
                            counts.get(i),
                        );
                    }
                }
                schema::event::SnapshotEnd(()) => {
                    if let Some(snapshot) = self.snapshot.take() {
                        self.state = snapshot;
                    }
                }
                _ => {
                    let event = decode_event(event)?;
                    self.state.apply(&event);
                }
            }
            Ok(())
        })
        .map_err(|e| e.to_string())
    }

    /// The state the records describe. A snapshot without its end (a crash
    /// while it was written) is ignored: the events before it still hold.
    pub(crate) fn finish(self) -> State {
        self.state
    }
}

fn decode_event(event: schema::event::Reader<'_>) -> capnp::Result<Event> {
    Ok(match event.which()? {
        schema::event::Meta(meta) => Event::Meta(read_meta(meta?)?),
        schema::event::Deleted(offsets) => Event::Deleted(offsets?.iter().collect()),
        schema::event::GroupSet(set) => {
            let set = set?;
            Event::GroupSet {
                group: text(set.get_name()?)?,
                cursor: read_cursor(set.get_cursor()?)?,
            }
        }
        schema::event::GroupDestroyed(group) => Event::GroupDestroyed(text(group?)?),
        schema::event::ConsumerSet(set) => {
            let set = set?;
            let (group, consumer) = read_ref(set.get_consumer()?)?;
            Event::ConsumerSet {
                group,
                consumer,
                seen_ms: set.get_seen_ms(),
                active_ms: Some(set.get_active_ms()).filter(|&ms| ms != 0),
            }
        }
        schema::event::ConsumerDeleted(at) => {
            let (group, consumer) = read_ref(at?)?;
            Event::ConsumerDeleted { group, consumer }
        }
        schema::event::Pending(pending) => {
            let pending = pending?;
            let (group, consumer) = read_ref(pending.get_consumer()?)?;
            let (ids, counts) = (pending.get_ids()?, pending.get_counts()?);
            if ids.len() != counts.len() {
                return Err(capnp::Error::failed(
                    "pending ids and counts differ in length".into(),
                ));
            }
            Event::Pending {
                group,
                consumer,
                delivered_ms: pending.get_delivered_ms(),
                entries: (0..ids.len())
                    .map(|i| (read_id(ids.get(i)), counts.get(i)))
                    .collect(),
                cursor: match pending.get_moved() {
                    true => Some(read_cursor(pending.get_cursor()?)?),
                    false => None,
                },
            }
        }
        schema::event::Acked(acked) => {
            let acked = acked?;
            Event::Acked {
                group: text(acked.get_group()?)?,
                ids: acked.get_ids()?.iter().map(read_id).collect(),
            }
        }
        schema::event::SnapshotBegin(_)
        | schema::event::SnapshotPending(_)
        | schema::event::SnapshotEnd(()) => {
            return Err(capnp::Error::failed("not an event".into()));
        }
    })
}

fn read_snapshot(begin: schema::snapshot::Reader<'_>) -> capnp::Result<State> {
    let mut state = State {
        meta: read_meta(begin.get_meta()?)?,
        deleted: begin.get_deleted()?.iter().collect(),
        groups: BTreeMap::new(),
    };
    for set in begin.get_groups()? {
        state.groups.insert(
            text(set.get_name()?)?,
            Group::new(read_cursor(set.get_cursor()?)?),
        );
    }
    for set in begin.get_consumers()? {
        let (group, consumer) = read_ref(set.get_consumer()?)?;
        if let Some(group) = state.groups.get_mut(&group) {
            let active = Some(set.get_active_ms()).filter(|&ms| ms != 0);
            group.touch(&consumer, set.get_seen_ms(), active);
        }
    }
    Ok(state)
}

fn len32(len: usize) -> u32 {
    u32::try_from(len).expect("journal lists are far shorter than 2^32")
}

fn write_id(mut at: schema::entry_id::Builder<'_>, id: StreamId) {
    at.set_ms(id.ms);
    at.set_seq(id.seq);
}

fn read_id(at: schema::entry_id::Reader<'_>) -> StreamId {
    StreamId::new(at.get_ms(), at.get_seq())
}

fn write_cursor(mut at: schema::cursor::Builder<'_>, cursor: &Cursor) {
    write_id(at.reborrow().init_last_id(), cursor.last_id);
    at.set_offset(cursor.offset);
}

fn read_cursor(at: schema::cursor::Reader<'_>) -> capnp::Result<Cursor> {
    Ok(Cursor {
        last_id: read_id(at.get_last_id()?),
        offset: at.get_offset(),
    })
}

fn write_meta(mut at: schema::meta::Builder<'_>, meta: &Meta) {
    write_id(at.reborrow().init_last_id(), meta.last_id);
    write_id(at.reborrow().init_max_deleted_id(), meta.max_deleted);
    at.set_first_offset(meta.first_offset);
    at.set_added_beyond_log(meta.added_beyond_log);
}

fn read_meta(at: schema::meta::Reader<'_>) -> capnp::Result<Meta> {
    Ok(Meta {
        last_id: read_id(at.get_last_id()?),
        max_deleted: read_id(at.get_max_deleted_id()?),
        first_offset: at.get_first_offset(),
        added_beyond_log: at.get_added_beyond_log(),
    })
}

fn write_group(mut at: schema::group_set::Builder<'_>, name: &str, cursor: &Cursor) {
    at.set_name(name.as_bytes());
    write_cursor(at.init_cursor(), cursor);
}

fn write_consumer(
    mut at: schema::consumer_set::Builder<'_>,
    group: &str,
    consumer: &str,
    seen_ms: u64,
    active_ms: Option<u64>,
) {
    let mut name = at.reborrow().init_consumer();
    name.set_group(group.as_bytes());
    name.set_name(consumer.as_bytes());
    at.set_seen_ms(seen_ms);
    at.set_active_ms(active_ms.unwrap_or(0));
}

fn write_pending_head(
    mut at: schema::pending::Builder<'_>,
    group: &str,
    consumer: &str,
    delivered_ms: u64,
) {
    let mut name = at.reborrow().init_consumer();
    name.set_group(group.as_bytes());
    name.set_name(consumer.as_bytes());
    at.set_delivered_ms(delivered_ms);
}

fn read_ref(at: schema::consumer_ref::Reader<'_>) -> capnp::Result<(String, String)> {
    Ok((text(at.get_group()?)?, text(at.get_name()?)?))
}

fn text(bytes: &[u8]) -> capnp::Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| capnp::Error::failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::state::describe;

    fn id(n: u64) -> StreamId {
        StreamId::new(n, 1)
    }

    fn events() -> Vec<Event> {
        let cursor = Cursor {
            last_id: id(2),
            offset: 2,
        };
        vec![
            Event::Meta(Meta {
                last_id: id(9),
                max_deleted: id(4),
                first_offset: 1,
                added_beyond_log: 3,
            }),
            Event::Deleted(vec![3, 4, 0]),
            Event::GroupSet {
                group: "g".into(),
                cursor: Cursor::default(),
            },
            Event::ConsumerSet {
                group: "g".into(),
                consumer: "idle".into(),
                seen_ms: 5,
                active_ms: None,
            },
            Event::Pending {
                group: "g".into(),
                consumer: "alice".into(),
                delivered_ms: 10,
                entries: vec![(id(1), 1), (id(2), 1)],
                cursor: Some(cursor),
            },
            Event::Pending {
                group: "g".into(),
                consumer: "bob".into(),
                delivered_ms: 20,
                entries: vec![(id(1), 7)],
                cursor: None,
            },
            Event::Acked {
                group: "g".into(),
                ids: vec![id(2)],
            },
            Event::GroupSet {
                group: "other".into(),
                cursor,
            },
            Event::ConsumerSet {
                group: "other".into(),
                consumer: "carol".into(),
                seen_ms: 1,
                active_ms: Some(1),
            },
            Event::ConsumerDeleted {
                group: "other".into(),
                consumer: "carol".into(),
            },
            Event::GroupSet {
                group: "gone".into(),
                cursor,
            },
            Event::GroupDestroyed("gone".into()),
        ]
    }

    #[test]
    fn events_round_trip() {
        for event in events() {
            let mut decoded = None;
            read_message(&event.encode(), |message| {
                decoded = Some(decode_event(message.get_root()?)?);
                Ok(())
            })
            .unwrap();
            assert_eq!(decoded.unwrap(), event);
        }
    }

    #[test]
    fn a_replay_rebuilds_the_state_and_a_snapshot_replaces_it() {
        let mut live = State::default();
        let mut replay = Replay::default();
        for event in events() {
            live.apply(&event);
            replay.feed(&event.encode()).unwrap();
        }
        let replayed = replay.finish();
        assert_eq!(describe(&replayed), describe(&live));
        assert_eq!(live.deleted.iter().copied().collect::<Vec<_>>(), vec![3, 4]);

        let mut from_snapshot = Replay::default();
        from_snapshot
            .feed(&Event::GroupDestroyed("g".into()).encode())
            .unwrap();
        for record in snapshot(&live) {
            from_snapshot.feed(&record).unwrap();
        }
        assert_eq!(describe(&from_snapshot.finish()), describe(&live));
    }

    #[test]
    fn a_snapshot_without_its_end_is_ignored() {
        let mut live = State::default();
        for event in events() {
            live.apply(&event);
        }
        let mut replay = Replay::default();
        let first = Event::GroupSet {
            group: "before".into(),
            cursor: Cursor::default(),
        };
        replay.feed(&first.encode()).unwrap();
        let records = snapshot(&live);
        for record in &records[..records.len() - 1] {
            replay.feed(record).unwrap();
        }
        let state = replay.finish();
        assert_eq!(state.groups.keys().collect::<Vec<_>>(), vec!["before"]);
    }

    #[test]
    fn large_pending_lists_are_split_across_records() {
        let mut state = State::default();
        state.apply(&Event::GroupSet {
            group: "g".into(),
            cursor: Cursor::default(),
        });
        let entries = (1..=(SNAPSHOT_CHUNK as u64 * 2 + 5))
            .map(|n| (id(n), 1))
            .collect();
        state.apply(&Event::Pending {
            group: "g".into(),
            consumer: "c".into(),
            delivered_ms: 3,
            entries,
            cursor: None,
        });
        let records = snapshot(&state);
        assert_eq!(records.len(), 5);
        let mut replay = Replay::default();
        for record in &records {
            replay.feed(record).unwrap();
        }
        assert_eq!(describe(&replay.finish()), describe(&state));
    }

    #[test]
    fn events_with_many_ids_span_records() {
        let cursor = Cursor {
            last_id: id(99),
            offset: 7,
        };
        let big = Event::Pending {
            group: "g".into(),
            consumer: "c".into(),
            delivered_ms: 4,
            entries: (1..=(SNAPSHOT_CHUNK as u64 + 3))
                .map(|n| (id(n), 1))
                .collect(),
            cursor: Some(cursor),
        };
        let records = big.records();
        assert_eq!(records.len(), 2);
        let mut whole = State::default();
        whole.apply(&Event::GroupSet {
            group: "g".into(),
            cursor: Cursor::default(),
        });
        let mut parts = Replay::default();
        parts
            .feed(
                &Event::GroupSet {
                    group: "g".into(),
                    cursor: Cursor::default(),
                }
                .encode(),
            )
            .unwrap();
        whole.apply(&big);
        for record in &records {
            parts.feed(record).unwrap();
        }
        assert_eq!(describe(&parts.finish()), describe(&whole));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut replay = Replay::default();
        assert!(replay.feed(b"not a journal record at all!").is_err());
        assert!(replay.feed(&[0; 64]).is_err());
    }
}
