//! Helpers shared by the stream test suites, which all work on stream "s".

use orcastra::StreamId;
use orcastra::streams::{GroupEntry, GroupRead, ReadGroupOptions, Streams};

/// Up to `count` new entries of stream "s", delivered to `consumer` of `group`.
pub async fn read_new(
    s: &impl Streams,
    group: &str,
    consumer: &str,
    count: Option<usize>,
) -> Vec<GroupEntry> {
    let options = ReadGroupOptions {
        count,
        ..ReadGroupOptions::default()
    };
    read(s, group, consumer, GroupRead::New, options).await
}

/// `consumer`'s own pending entries of stream "s", as `XREADGROUP ... 0` gives them.
pub async fn history(s: &impl Streams, group: &str, consumer: &str) -> Vec<GroupEntry> {
    let from_start = GroupRead::Pending(StreamId::MIN);
    read(s, group, consumer, from_start, ReadGroupOptions::default()).await
}

/// The millisecond part of each entry's id: the tests number entries by it.
pub fn ms(entries: &[GroupEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.id.ms).collect()
}

async fn read(
    s: &impl Streams,
    group: &str,
    consumer: &str,
    what: GroupRead,
    options: ReadGroupOptions,
) -> Vec<GroupEntry> {
    let reply = s
        .read_group(group, consumer, &[("s", what)], options)
        .await
        .unwrap();
    reply.into_iter().flat_map(|(_, entries)| entries).collect()
}
