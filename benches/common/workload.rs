//! The stream workloads the benchmarks run, over any `Streams`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use orcastra::StreamId;
use orcastra::streams::{Fields, GroupRead, ReadGroupOptions, Streams};

/// Entries per batched add, and per read of one consumer.
pub const BATCH: usize = 1024;

/// One entry: a 100-byte payload.
pub fn entry() -> Fields {
    vec![(Bytes::from_static(b"payload"), Bytes::from(vec![b'x'; 100]))]
}

/// Adds `count` entries (rounded up to whole batches).
pub async fn fill<S: Streams>(s: &S, stream: &str, count: usize) {
    for _ in 0..count.div_ceil(BATCH) {
        s.add_batch(stream, vec![entry(); BATCH]).await.unwrap();
    }
}

/// Reads up to `count` new entries for `consumer` and acks them; returns how many.
pub async fn read_ack<S: Streams>(
    s: &S,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
) -> usize {
    let options = ReadGroupOptions {
        count: Some(count),
        ..ReadGroupOptions::default()
    };
    let reply = s
        .read_group(group, consumer, &[(stream, GroupRead::New)], options)
        .await
        .unwrap();
    let ids: Vec<StreamId> = reply
        .iter()
        .flat_map(|(_, e)| e.iter().map(|e| e.id))
        .collect();
    if !ids.is_empty() {
        s.ack(stream, group, &ids).await.unwrap();
    }
    ids.len()
}

/// How many entries of `stream` wait for `group`.
pub async fn lag<S: Streams>(s: &S, stream: &str, group: &str) -> u64 {
    s.groups(stream)
        .await
        .unwrap()
        .iter()
        .find(|g| g.name == group)
        .unwrap()
        .lag
        .expect("the lag is known: the benchmarks never delete entries")
}

/// Tops `stream` up to `needed` waiting entries (untimed), then times
/// `consumers` concurrent consumers of `group` reading and acking them.
pub async fn consume<S: Streams>(
    s: &Arc<S>,
    stream: &'static str,
    group: &'static str,
    consumers: usize,
    needed: usize,
) -> Duration {
    let waiting = lag(&**s, stream, group).await as usize;
    fill(&**s, stream, needed.saturating_sub(waiting)).await;
    let start = Instant::now();
    let mut done = 0;
    while done < needed {
        let mut readers = tokio::task::JoinSet::new();
        for i in 0..consumers {
            let s = Arc::clone(s);
            readers.spawn(async move {
                read_ack(&*s, stream, group, &format!("c{i}"), BATCH / consumers).await
            });
        }
        while let Some(read) = readers.join_next().await {
            done += read.unwrap();
        }
    }
    start.elapsed()
}
