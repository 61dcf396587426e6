@0xa008aa05d19c8001;

# The payload that the layers above the log store in each log record: a stream
# entry in the Redis model (an ordered list of field/value byte pairs), the time
# it was added, and headers for metadata that is not part of the entry itself
# (trace context, producer ids, ...). The log itself stores opaque bytes; see
# docs/format.md for the frame around this message.

struct Record {
  # Milliseconds since the Unix epoch when the record was created.
  timestampMs @0 :UInt64;

  # The entry's fields, in the order they were given. Names may repeat.
  fields @1 :List(Field);

  # Metadata about the entry, in the same shape as the fields.
  headers @2 :List(Field);

  # The entry's stream id `<idMs>-<idSeq>`, for records that are stream
  # entries; ids increase with offsets, so a stream can binary-search them.
  idMs @3 :UInt64;
  idSeq @4 :UInt64;
}

struct Field {
  name @0 :Data;
  value @1 :Data;
}
