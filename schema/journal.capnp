@0xd9f46a7f7e5ca1c3;

# The journal of a stream: one event per record of the stream's journal log.
# Replaying the events in order, starting from the last complete snapshot,
# rebuilds the stream's metadata and its consumer groups exactly.

struct EntryId {
  ms @0 :UInt64;
  seq @1 :UInt64;
}

# Where a group stands: the last entry delivered to it and the offset of the
# entry after it in the stream's entry log.
struct Cursor {
  lastId @0 :EntryId;
  offset @1 :UInt64;
}

struct Event {
  union {
    # The stream's metadata after XTRIM, XSETID or a trim on XADD.
    meta @0 :Meta;
    # The offsets in the entry log of entries removed by XDEL.
    deleted @1 :List(UInt64);
    # A group created (XGROUP CREATE) or moved (XGROUP SETID, a read of new
    # entries with NOACK).
    groupSet @2 :GroupSet;
    groupDestroyed @3 :Data;
    consumerSet @4 :ConsumerSet;
    consumerDeleted @5 :ConsumerRef;
    # Entries that became pending for a consumer (delivered, redelivered or
    # claimed), with their delivery counts, and where the group's cursor
    # moved to if new entries were delivered.
    pending @6 :Pending;
    # Entries no longer pending (acknowledged, or removed because the entry
    # was deleted).
    acked @7 :Acked;
    # A snapshot: begin, any number of pending chunks, end. A snapshot
    # replaces all state before it; one without its end is ignored.
    snapshotBegin @8 :Snapshot;
    snapshotPending @9 :Pending;
    snapshotEnd @10 :Void;
  }
}

struct Meta {
  lastId @0 :EntryId;
  maxDeletedId @1 :EntryId;
  # The offset of the first entry still in the stream.
  firstOffset @2 :UInt64;
  # Entries added beyond those in the entry log (set by XSETID ENTRIESADDED).
  addedBeyondLog @3 :UInt64;
}

struct GroupSet {
  name @0 :Data;
  cursor @1 :Cursor;
}

struct ConsumerRef {
  group @0 :Data;
  name @1 :Data;
}

struct ConsumerSet {
  consumer @0 :ConsumerRef;
  # Milliseconds since the epoch of the last attempt and the last success.
  seenMs @1 :UInt64;
  activeMs @2 :UInt64;
}

struct Pending {
  consumer @0 :ConsumerRef;
  deliveredMs @1 :UInt64;
  ids @2 :List(EntryId);
  # The delivery count of each id, in the same order.
  counts @3 :List(UInt32);
  # Where the group's cursor moved, when new entries were delivered.
  cursor @4 :Cursor;
  moved @5 :Bool;
  # In snapshots: each id's own delivery time, overriding `deliveredMs`.
  times @6 :List(UInt64);
}

struct Acked {
  group @0 :Data;
  ids @1 :List(EntryId);
}

struct Snapshot {
  meta @0 :Meta;
  deleted @1 :List(UInt64);
  groups @2 :List(GroupSet);
  consumers @3 :List(ConsumerSet);
}
