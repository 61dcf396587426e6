@0xd026da49fb9f2cad;

# A task as it travels through a queue: the value of the `task` field of a
# queue stream's entry, and of the dead-letter stream's entries. Arguments
# are JSON (docs/tasks.md), so that any language can submit a task.

struct Envelope {
  # The task's id: a UUID (version 7, time-ordered), 16 bytes.
  id @0 :Data;

  # The registered task name the worker looks up.
  name @1 :Text;

  # The queue it was submitted to.
  queue @2 :Text;

  # The arguments: a JSON array, one element per argument, UTF-8.
  args @3 :Data;

  # How many times it ran before this delivery (0 for the first run).
  attempt @4 :UInt32;

  # Milliseconds since the Unix epoch.
  submittedMs @5 :UInt64;

  # Not to be run before this time (0: as soon as possible).
  notBeforeMs @6 :UInt64;

  # Higher runs first; see the worker's starvation bound.
  priority @7 :UInt8;

  # Tasks with the same key are one task while it is not finished.
  idempotencyKey @8 :Text;

  # The task that submitted this one, and the workflow it belongs to
  # (UUIDs, empty when none).
  parentId @9 :Data;
  workflowId @10 :Data;

  # W3C trace context (`traceparent`, `tracestate`) and other headers.
  trace @11 :List(Header);

  # Overrides of the task's own options for this submission; a negative
  # or zero value keeps the task's option.
  maxRetries @12 :Int32 = -1;
  timeoutMs @13 :UInt64;
}

struct Header {
  name @0 :Text;
  value @1 :Text;
}
