//! A stream's state besides its entries: metadata, deletions and groups.
//! It changes only by applying journal events, live and on recovery alike.

use std::collections::{BTreeMap, BTreeSet};

use super::journal::Event;
use crate::group::Group;
use crate::record::StreamId;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    /// The last id given to an entry (or set by XSETID).
    pub(crate) last_id: StreamId,
    /// The largest id deleted by XDEL.
    pub(crate) max_deleted: StreamId,
    /// The offset of the first entry not trimmed away.
    pub(crate) first_offset: u64,
    /// Entries counted as added beyond those in the entry log (XSETID).
    pub(crate) added_beyond_log: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct State {
    pub(crate) meta: Meta,
    /// Offsets (at or after `first_offset`) of entries removed by XDEL.
    pub(crate) deleted: BTreeSet<u64>,
    pub(crate) groups: BTreeMap<String, Group>,
}

impl State {
    pub(crate) fn apply(&mut self, event: &Event) {
        match event {
            Event::Meta(meta) => {
                self.meta = *meta;
                self.deleted = self.deleted.split_off(&meta.first_offset);
            }
            Event::Deleted(offsets) => {
                let first = self.meta.first_offset;
                self.deleted.extend(offsets.iter().filter(|&&o| o >= first));
            }
            Event::GroupSet { group, cursor } => {
                self.groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(*cursor))
                    .cursor = *cursor;
            }
            Event::GroupDestroyed(group) => {
                self.groups.remove(group);
            }
            Event::ConsumerSet {
                group,
                consumer,
                seen_ms,
                active_ms,
            } => {
                if let Some(group) = self.groups.get_mut(group) {
                    group.touch(consumer, *seen_ms, *active_ms);
                }
            }
            Event::ConsumerDeleted { group, consumer } => {
                if let Some(group) = self.groups.get_mut(group) {
                    group.delete_consumer(consumer);
                }
            }
            Event::Pending {
                group,
                consumer,
                delivered_ms,
                entries,
                cursor,
            } => {
                if let Some(group) = self.groups.get_mut(group) {
                    group.touch(consumer, *delivered_ms, Some(*delivered_ms));
                    let id = group.consumer_id(consumer).expect("just touched");
                    for &(entry, count) in entries {
                        group.set_pending(entry, id, *delivered_ms, count);
                    }
                    if let Some(cursor) = cursor {
                        group.cursor = *cursor;
                    }
                }
            }
            Event::Acked { group, ids } => {
                if let Some(group) = self.groups.get_mut(group) {
                    for &id in ids {
                        group.remove_pending(id);
                    }
                }
            }
        }
    }

    /// Live entries with offsets in `from..end`.
    pub(crate) fn live_between(&self, from: u64, end: u64) -> u64 {
        let from = from.max(self.meta.first_offset);
        if from >= end {
            return 0;
        }
        end - from - self.deleted.range(from..end).count() as u64
    }
}

/// Everything about a state that its readers can observe, with consumers
/// named rather than numbered: two states that describe alike are alike.
#[cfg(test)]
pub(crate) fn describe(state: &State) -> String {
    use std::fmt::Write;
    let mut out = format!("{:?} deleted {:?}\n", state.meta, state.deleted);
    for (name, group) in &state.groups {
        let _ = writeln!(out, "group {name} {:?}", group.cursor);
        for consumer in group.consumers() {
            let _ = writeln!(
                out,
                "  consumer {} seen {} active {:?} pending {}",
                consumer.name, consumer.seen_ms, consumer.active_ms, consumer.pending
            );
        }
        for (id, nack) in &group.pel {
            let owner = &group.consumer(nack.consumer).name;
            let _ = writeln!(out, "  {id} {owner} {} {}", nack.delivered_ms, nack.count);
        }
    }
    out
}
