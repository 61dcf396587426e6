//! Consumer groups: the state of one group of a stream, in memory.
//!
//! A group has a cursor (the last entry delivered to it, and the offset of
//! the entry after it in the stream's entry log), a pending entries list
//! (PEL: every delivered entry not yet acknowledged, with its consumer, last
//! delivery time and delivery count) and its consumers.
//!
//! This module holds state and answers questions about it; it never does
//! I/O and never reads the clock. Changes arrive as journal events (see
//! `stream::journal`), applied the same way live and on recovery, so a
//! recovered group is exactly the group that was written.
//!
//! Memory: a pending entry is a 16-byte id and a 16-byte [`Nack`] in a
//! B-tree, about 55 bytes in all; consumers are referred to by a 4-byte
//! number rather than by name.

use std::collections::BTreeMap;

use foldhash::HashMap;

use crate::record::StreamId;

/// A consumer's number within its group.
pub(crate) type ConsumerId = u32;

/// A pending entry: delivered and not yet acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Nack {
    /// When it was last delivered, in milliseconds since the epoch.
    pub(crate) delivered_ms: u64,
    /// How many times it was delivered.
    pub(crate) count: u32,
    /// To whom.
    pub(crate) consumer: ConsumerId,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Consumer {
    pub(crate) name: String,
    /// Last attempt to read or claim.
    pub(crate) seen_ms: u64,
    /// Last successful read or claim; `None` if never.
    pub(crate) active_ms: Option<u64>,
    /// How many entries are pending for it.
    pub(crate) pending: u64,
}

/// Where a group stands in its stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The last entry delivered to the group (`0-0` if none).
    pub(crate) last_id: StreamId,
    /// The offset in the entry log of the first entry after `last_id`.
    pub(crate) offset: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) cursor: Cursor,
    pub(crate) pel: BTreeMap<StreamId, Nack>,
    consumers: HashMap<ConsumerId, Consumer>,
    /// Consumer numbers by name, in name order (XINFO CONSUMERS lists them so).
    by_name: BTreeMap<String, ConsumerId>,
    next_consumer: ConsumerId,
}

impl Group {
    pub(crate) fn new(cursor: Cursor) -> Self {
        Group {
            cursor,
            ..Group::default()
        }
    }

    pub(crate) fn consumer_id(&self, name: &str) -> Option<ConsumerId> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn consumer(&self, id: ConsumerId) -> &Consumer {
        &self.consumers[&id]
    }

    /// The consumers, by name.
    pub(crate) fn consumers(&self) -> impl Iterator<Item = &Consumer> {
        self.by_name.values().map(|id| &self.consumers[id])
    }

    pub(crate) fn consumer_count(&self) -> u64 {
        self.by_name.len() as u64
    }

    /// The consumer called `name`, created (seen at `now_ms`) if missing.
    pub(crate) fn ensure_consumer(&mut self, name: &str, now_ms: u64) -> ConsumerId {
        if let Some(id) = self.consumer_id(name) {
            return id;
        }
        let id = self.next_consumer;
        self.next_consumer += 1;
        self.by_name.insert(name.to_string(), id);
        self.consumers.insert(
            id,
            Consumer {
                name: name.to_string(),
                seen_ms: now_ms,
                active_ms: None,
                pending: 0,
            },
        );
        id
    }

    /// Records a consumer's last attempt and success.
    pub(crate) fn touch(&mut self, name: &str, seen_ms: u64, active_ms: Option<u64>) {
        let id = self.ensure_consumer(name, seen_ms);
        let consumer = self.consumers.get_mut(&id).expect("just ensured");
        consumer.seen_ms = consumer.seen_ms.max(seen_ms);
        if let Some(active) = active_ms {
            consumer.active_ms = Some(consumer.active_ms.map_or(active, |a| a.max(active)));
        }
    }

    /// Removes a consumer and its pending entries; returns how many were pending.
    pub(crate) fn delete_consumer(&mut self, name: &str) -> u64 {
        let Some(id) = self.by_name.remove(name) else {
            return 0;
        };
        let consumer = self
            .consumers
            .remove(&id)
            .expect("consumers and names agree");
        if consumer.pending > 0 {
            self.pel.retain(|_, nack| nack.consumer != id);
        }
        consumer.pending
    }

    /// Makes `id` pending for `consumer` (replacing any earlier owner).
    pub(crate) fn set_pending(
        &mut self,
        id: StreamId,
        consumer: ConsumerId,
        delivered_ms: u64,
        count: u32,
    ) {
        let nack = Nack {
            delivered_ms,
            count,
            consumer,
        };
        if let Some(previous) = self.pel.insert(id, nack) {
            self.consumer_mut(previous.consumer).pending -= 1;
        }
        self.consumer_mut(consumer).pending += 1;
    }

    /// Removes `id` from the pending list; true if it was there.
    pub(crate) fn remove_pending(&mut self, id: StreamId) -> bool {
        match self.pel.remove(&id) {
            Some(nack) => {
                self.consumer_mut(nack.consumer).pending -= 1;
                true
            }
            None => false,
        }
    }

    fn consumer_mut(&mut self, id: ConsumerId) -> &mut Consumer {
        self.consumers
            .get_mut(&id)
            .expect("pending entries belong to existing consumers")
    }

    /// The pending entries of `consumer` with ids in `after..`, at most `count`.
    pub(crate) fn pending_of(
        &self,
        consumer: ConsumerId,
        after: StreamId,
        count: usize,
    ) -> Vec<(StreamId, Nack)> {
        self.pel
            .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .filter(|(_, nack)| nack.consumer == consumer)
            .take(count)
            .map(|(&id, &nack)| (id, nack))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> StreamId {
        StreamId::new(n, 0)
    }

    #[test]
    fn pending_counts_follow_their_owners() {
        let mut group = Group::new(Cursor::default());
        let alice = group.ensure_consumer("alice", 1);
        let bob = group.ensure_consumer("bob", 1);
        group.set_pending(id(1), alice, 10, 1);
        group.set_pending(id(2), alice, 10, 1);
        group.set_pending(id(1), bob, 20, 2);
        assert_eq!(group.consumer(alice).pending, 1);
        assert_eq!(group.consumer(bob).pending, 1);
        assert!(group.remove_pending(id(1)));
        assert!(!group.remove_pending(id(1)));
        assert_eq!(group.consumer(bob).pending, 0);
        assert_eq!(group.delete_consumer("alice"), 1);
        assert!(group.pel.is_empty());
        assert_eq!(group.consumer_id("alice"), None);
    }

    #[test]
    fn a_consumers_own_pending_entries_come_in_order_after_an_id() {
        let mut group = Group::new(Cursor::default());
        let alice = group.ensure_consumer("alice", 1);
        let bob = group.ensure_consumer("bob", 1);
        for n in 1..=6 {
            group.set_pending(id(n), if n % 2 == 0 { bob } else { alice }, 5, 1);
        }
        let ids: Vec<_> = group
            .pending_of(alice, id(1), 2)
            .iter()
            .map(|(id, _)| id.ms)
            .collect();
        assert_eq!(ids, vec![3, 5]);
    }

    #[test]
    fn consumers_list_in_name_order_and_times_only_move_forward() {
        let mut group = Group::new(Cursor::default());
        group.ensure_consumer("zed", 1);
        group.touch("amy", 5, Some(5));
        group.touch("amy", 3, Some(4));
        let names: Vec<_> = group.consumers().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["amy", "zed"]);
        let amy = group.consumer(group.consumer_id("amy").unwrap());
        assert_eq!((amy.seen_ms, amy.active_ms), (5, Some(5)));
    }
}
