//! One conformance suite for the `Streams` API: every stream and group
//! behaviour, run against the embedded engine over the memory, segment and
//! text logs and, with the `redis` feature, against a real `redis-server`
//! through `RedisStreams` (each test starts its own server), and through the
//! same adapter against `orcastra serve`'s server. It is written
//! against the trait only.
//!
//! Where Redis and the embedded engine differ (the README lists every
//! difference, under "Where the embedded engine and Redis differ"), the
//! suite names it on `Subject`: `EXACT_COUNTERS` (Redis sometimes answers
//! nil for a group's `entries-read` and `lag`, which the embedded engine
//! always counts) and `wait_until_blocked` (the embedded engine makes a
//! blocked reader a consumer at once, Redis 7.0 only when it delivers).
//! Tests never sleep to make entries idle: they set idle times with XCLAIM's
//! IDLE option.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use orcastra::StreamId;
use orcastra::log::{LogOptions, SegmentLog, TextLog};
use orcastra::streams::{
    AddId, AddOptions, AutoClaim, Bound, ClaimOptions, Embedded, Entry, Fields, FileStore,
    GroupRead, GroupStart, LogStore, PendingQuery, ReadFrom, ReadGroupOptions, StreamError,
    Streams, Trim, TrimTo,
};
use tempfile::TempDir;

mod common;
use common::streams::{history, ms, read_new};

/// An implementation under test.
trait Subject: Send + Sync + 'static {
    type S: Streams;
    /// Whether `entries_read` and `lag` are always known.
    const EXACT_COUNTERS: bool;
    fn streams(&self) -> &Self::S;
    /// Returns once one group read blocks on stream `s`, group `g`.
    async fn wait_until_blocked(&self);
}

struct Local<S: LogStore> {
    streams: Embedded<S>,
    _dir: Option<TempDir>,
}

impl<S: LogStore> Subject for Local<S> {
    type S = Embedded<S>;
    const EXACT_COUNTERS: bool = true;
    fn streams(&self) -> &Embedded<S> {
        &self.streams
    }
    /// The embedded engine makes a blocked reader a consumer at once.
    async fn wait_until_blocked(&self) {
        while self.streams.consumers("s", "g").await.unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
    }
}

fn memory() -> Local<orcastra::streams::MemoryStore> {
    Local {
        streams: Embedded::memory(),
        _dir: None,
    }
}

fn segment() -> Local<FileStore<SegmentLog>> {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::<SegmentLog>::new(dir.path(), LogOptions::default());
    Local {
        streams: Embedded::open(store),
        _dir: Some(dir),
    }
}

fn text() -> Local<FileStore<TextLog>> {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::<TextLog>::new(dir.path(), LogOptions::default());
    Local {
        streams: Embedded::open(store),
        _dir: Some(dir),
    }
}

#[cfg(feature = "redis")]
struct Remote {
    streams: orcastra::streams::RedisStreams,
    server: common::redis_server::RedisServer,
}

#[cfg(feature = "redis")]
impl Subject for Remote {
    type S = orcastra::streams::RedisStreams;
    const EXACT_COUNTERS: bool = false;
    fn streams(&self) -> &Self::S {
        &self.streams
    }
    /// Redis 7.0 creates the consumer only when it delivers; its client
    /// list tells when the read blocks.
    async fn wait_until_blocked(&self) {
        while !self
            .server
            .command("INFO clients")
            .contains("blocked_clients:1")
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A Redis server of the test's own, spoken to in RESP2 (the default) or
/// RESP3, whose replies have other shapes (maps).
#[cfg(feature = "redis")]
async fn remote(url_suffix: &str) -> Remote {
    let server = common::redis_server::RedisServer::start();
    let url = format!("{}{url_suffix}", server.url());
    let streams = orcastra::streams::RedisStreams::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test's redis-server: {e}"));
    Remote { streams, server }
}

/// `orcastra serve`'s server, in this process over memory streams, spoken
/// to through the Redis adapter exactly as a `redis-server` is.
#[cfg(feature = "redis")]
struct Served {
    streams: orcastra::streams::RedisStreams,
    _stop: tokio::sync::oneshot::Sender<()>,
}

#[cfg(feature = "redis")]
impl Subject for Served {
    type S = orcastra::streams::RedisStreams;
    const EXACT_COUNTERS: bool = true;
    fn streams(&self) -> &Self::S {
        &self.streams
    }
    /// The server's engine makes a blocked reader a consumer at once.
    async fn wait_until_blocked(&self) {
        while self.streams.consumers("s", "g").await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[cfg(feature = "redis")]
async fn served(url_suffix: &str) -> Served {
    use orcastra::server::{Server, ServerOptions};
    let options = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerOptions::default()
    };
    let (server, listener) = Server::bind(std::sync::Arc::new(Embedded::memory()), options)
        .await
        .unwrap();
    let url = format!("redis://{}{url_suffix}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let streams = orcastra::streams::RedisStreams::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test's orcastra server: {e}"));
    Served {
        streams,
        _stop: stop,
    }
}

fn id(ms: u64, seq: u64) -> StreamId {
    StreamId::new(ms, seq)
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                Bytes::copy_from_slice(k.as_bytes()),
                Bytes::copy_from_slice(v.as_bytes()),
            )
        })
        .collect()
}

async fn add_at<S: Streams>(s: &S, stream: &str, at: StreamId, value: &str) -> StreamId {
    s.add(stream, fields(&[("f", value)]), AddOptions::with_id(at))
        .await
        .unwrap()
        .unwrap()
}

/// A stream `s` with entries 1-0 .. n-0, each with field `f` = its number.
async fn numbered<S: Streams>(s: &S, n: u64) {
    for i in 1..=n {
        add_at(s, "s", id(i, 0), &i.to_string()).await;
    }
}

fn ids(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.id.ms).collect()
}

const START: GroupStart = GroupStart::After(StreamId::MIN);

/// Makes every pending entry of `group` look idle for `idle`.
async fn make_idle<S: Streams>(s: &S, group: &str, idle: Duration) {
    for entry in s
        .pending("s", group, &PendingQuery::first(usize::MAX))
        .await
        .unwrap()
    {
        let options = ClaimOptions {
            idle: Some(idle),
            just_id: true,
            ..ClaimOptions::default()
        };
        s.claim(
            "s",
            group,
            &entry.consumer,
            Duration::ZERO,
            &[entry.id],
            options,
        )
        .await
        .unwrap();
    }
}

// ---------------------------------------------------------------- XADD

async fn auto_ids_increase<T: Subject>(t: T) {
    let s = t.streams();
    let mut last = StreamId::MIN;
    for _ in 0..50 {
        let next = s
            .add("s", fields(&[("a", "1")]), AddOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert!(next > last);
        last = next;
    }
    assert_eq!(s.len("s").await.unwrap(), 50);
}

async fn explicit_ids_must_grow<T: Subject>(t: T) {
    let s = t.streams();
    assert!(matches!(
        s.add(
            "s",
            fields(&[("a", "1")]),
            AddOptions::with_id(StreamId::MIN)
        )
        .await,
        Err(StreamError::ZeroId)
    ));
    add_at(s, "s", id(5, 5), "x").await;
    for bad in [id(5, 5), id(5, 4), id(1, 0)] {
        assert!(matches!(
            s.add("s", fields(&[("a", "1")]), AddOptions::with_id(bad))
                .await,
            Err(StreamError::IdNotGreater)
        ));
    }
    assert_eq!(s.len("s").await.unwrap(), 1);
    // `<ms>-*`: the next sequence within the top's millisecond, 0 past it.
    for (ms, expected) in [(5, Some(id(5, 6))), (7, Some(id(7, 0))), (6, None)] {
        let options = AddOptions {
            id: AddId::AutoSeq(ms),
            ..AddOptions::default()
        };
        let added = s.add("s", fields(&[("a", "1")]), options).await;
        match expected {
            Some(expected) => assert_eq!(added.unwrap(), Some(expected)),
            None => assert!(matches!(added, Err(StreamError::IdNotGreater))),
        }
    }
}

async fn zero_star_gives_zero_one<T: Subject>(t: T) {
    let s = t.streams();
    let options = AddOptions {
        id: AddId::AutoSeq(0),
        ..AddOptions::default()
    };
    assert_eq!(
        s.add("s", fields(&[("a", "1")]), options).await.unwrap(),
        Some(id(0, 1))
    );
}

async fn the_last_possible_id_exhausts_the_stream<T: Subject>(t: T) {
    let s = t.streams();
    add_at(s, "s", StreamId::MAX, "x").await;
    assert!(matches!(
        s.add("s", fields(&[("a", "1")]), AddOptions::default())
            .await,
        Err(StreamError::IdsExhausted)
    ));
}

async fn a_batch_of_adds_gets_increasing_ids<T: Subject>(t: T) {
    let s = t.streams();
    add_at(s, "s", id(1, 0), "first").await;
    let batch: Vec<Fields> = (0..100).map(|i| fields(&[("n", &i.to_string())])).collect();
    let added = s.add_batch("s", batch.clone()).await.unwrap();
    assert_eq!(added.len(), 100);
    assert!(added.windows(2).all(|w| w[0] < w[1]) && added[0] > id(1, 0));
    let read = s
        .range("s", Bound::Excluded(id(1, 0)), Bound::Max, None)
        .await
        .unwrap();
    assert_eq!(read.iter().map(|e| e.id).collect::<Vec<_>>(), added);
    assert_eq!(
        read.into_iter().map(|e| e.fields).collect::<Vec<_>>(),
        batch
    );
    assert!(s.add_batch("s", Vec::new()).await.unwrap().is_empty());
}

async fn nomkstream_does_not_create<T: Subject>(t: T) {
    let s = t.streams();
    let options = AddOptions {
        no_mkstream: true,
        ..AddOptions::default()
    };
    assert_eq!(
        s.add("s", fields(&[("a", "1")]), options).await.unwrap(),
        None
    );
    assert!(matches!(s.info("s").await, Err(StreamError::NoSuchKey)));
    add_at(s, "s", id(1, 0), "x").await;
    assert!(
        s.add("s", fields(&[("a", "1")]), options)
            .await
            .unwrap()
            .is_some()
    );
}

async fn fields_keep_their_order_and_bytes<T: Subject>(t: T) {
    let s = t.streams();
    let stored: Fields = vec![
        (Bytes::from_static(b"b"), Bytes::from_static(b"2")),
        (Bytes::from_static(b"a"), Bytes::from_static(b"")),
        (
            Bytes::from_static(b"b"),
            Bytes::from_static(&[0, 255, 10, 13]),
        ),
    ];
    let at = s
        .add("s", stored.clone(), AddOptions::default())
        .await
        .unwrap()
        .unwrap();
    let read = s.range("s", Bound::Min, Bound::Max, None).await.unwrap();
    assert_eq!(
        read,
        vec![Entry {
            id: at,
            fields: stored
        }]
    );
}

// ---------------------------------------------------------------- XRANGE

async fn ranges_honour_bounds_and_count<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 10).await;
    let range =
        |start, end, count| async move { ids(&s.range("s", start, end, count).await.unwrap()) };
    assert_eq!(
        range(Bound::Min, Bound::Max, None).await,
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        range(Bound::Included(id(3, 0)), Bound::Included(id(5, 0)), None).await,
        vec![3, 4, 5]
    );
    assert_eq!(
        range(Bound::Excluded(id(3, 0)), Bound::Excluded(id(6, 0)), None).await,
        vec![4, 5]
    );
    assert_eq!(
        range(Bound::Included(id(3, 1)), Bound::Max, Some(2)).await,
        vec![4, 5]
    );
    assert_eq!(
        range(Bound::Min, Bound::Max, Some(0)).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        range(Bound::Included(id(8, 0)), Bound::Included(id(2, 0)), None).await,
        Vec::<u64>::new()
    );
    let rev =
        |end, start, count| async move { ids(&s.rev_range("s", end, start, count).await.unwrap()) };
    assert_eq!(rev(Bound::Max, Bound::Min, Some(3)).await, vec![10, 9, 8]);
    assert_eq!(
        rev(Bound::Included(id(5, 0)), Bound::Excluded(id(2, 0)), None).await,
        vec![5, 4, 3]
    );
    assert_eq!(
        rev(Bound::Excluded(id(5, 0)), Bound::Included(id(4, 0)), None).await,
        vec![4]
    );
    assert!(
        s.range("missing", Bound::Min, Bound::Max, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Whatever was read last (the engine remembers it to find the next read's
/// start), reads and ranges from any id find exactly the entries after it.
async fn reads_from_any_id_follow_any_earlier_read<T: Subject>(t: T) {
    let s = t.streams();
    for ms in (2..=40).step_by(2) {
        add_at(s, "s", id(ms, 0), "v").await;
    }
    for (last, count) in [(0, 3), (10, 1), (21, 5), (38, 10), (40, 1), (7, 100)] {
        let read = [("s", ReadFrom::After(id(last, 0)))];
        let got = s.read(&read, Some(count), None).await.unwrap();
        // A reader that comes back for what follows its last entry.
        if let Some(end) = got.first().and_then(|(_, entries)| ids(entries).pop()) {
            let read = [("s", ReadFrom::After(id(end, 0)))];
            let next = s.read(&read, Some(2), None).await.unwrap();
            let expected: Vec<u64> = (end + 2..=40).step_by(2).take(2).collect();
            assert_eq!(
                next.first().map_or(vec![], |(_, entries)| ids(entries)),
                expected,
                "after {end}, read last"
            );
        }
        for probe in 0..=42 {
            let after: Vec<u64> = (2..=40).step_by(2).filter(|&ms| ms > probe).collect();
            let read = [("s", ReadFrom::After(id(probe, 0)))];
            let got = s.read(&read, None, None).await.unwrap();
            assert_eq!(
                got.first().map_or(vec![], |(_, entries)| ids(entries)),
                after,
                "after {probe}, last read from {last}"
            );
            let from: Vec<u64> = (2..=40).step_by(2).filter(|&ms| ms >= probe).collect();
            let range = s.range("s", Bound::Included(id(probe, 0)), Bound::Max, None);
            assert_eq!(ids(&range.await.unwrap()), from, "from {probe}");
        }
    }
}

async fn large_streams_range_across_batches<T: Subject>(t: T) {
    let s = t.streams();
    for i in 1..=1000 {
        add_at(s, "s", id(i, 0), "x").await;
    }
    assert_eq!(
        ids(&s
            .range("s", Bound::Included(id(300, 0)), Bound::Max, Some(500))
            .await
            .unwrap()),
        (300..800).collect::<Vec<_>>()
    );
    assert_eq!(
        ids(&s
            .rev_range("s", Bound::Included(id(700, 0)), Bound::Min, Some(400))
            .await
            .unwrap()),
        (301..=700).rev().collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------- XDEL, XLEN, XTRIM, XINFO

async fn deleted_entries_vanish<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 5).await;
    assert_eq!(
        s.delete("s", &[id(2, 0), id(4, 0), id(9, 0), id(2, 0)])
            .await
            .unwrap(),
        2
    );
    assert_eq!(s.delete("s", &[id(2, 0)]).await.unwrap(), 0);
    assert_eq!(s.len("s").await.unwrap(), 3);
    assert_eq!(
        ids(&s.range("s", Bound::Min, Bound::Max, None).await.unwrap()),
        vec![1, 3, 5]
    );
    assert_eq!(
        ids(&s
            .rev_range("s", Bound::Max, Bound::Min, None)
            .await
            .unwrap()),
        vec![5, 3, 1]
    );
    let info = s.info("s").await.unwrap();
    assert_eq!(info.max_deleted_entry_id, id(4, 0));
    assert_eq!(info.entries_added, 5);
    assert_eq!(s.delete("missing", &[id(1, 0)]).await.unwrap(), 0);
    assert_eq!(s.len("missing").await.unwrap(), 0);
}

async fn deleting_the_last_entry_keeps_the_last_id<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 3).await;
    s.delete("s", &[id(3, 0)]).await.unwrap();
    let info = s.info("s").await.unwrap();
    assert_eq!(info.last_generated_id, id(3, 0));
    assert_eq!(info.last_entry.unwrap().id, id(2, 0));
    assert!(matches!(
        s.add("s", fields(&[("a", "1")]), AddOptions::with_id(id(3, 0)))
            .await,
        Err(StreamError::IdNotGreater)
    ));
}

async fn trimming_by_length_and_by_id<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 10).await;
    s.delete("s", &[id(2, 0)]).await.unwrap();
    assert_eq!(s.trim("s", Trim::max_len(6)).await.unwrap(), 3);
    assert_eq!(
        ids(&s.range("s", Bound::Min, Bound::Max, None).await.unwrap()),
        vec![5, 6, 7, 8, 9, 10]
    );
    assert_eq!(s.trim("s", Trim::max_len(6)).await.unwrap(), 0);
    assert_eq!(s.trim("s", Trim::min_id(id(8, 0))).await.unwrap(), 3);
    assert_eq!(
        ids(&s.range("s", Bound::Min, Bound::Max, None).await.unwrap()),
        vec![8, 9, 10]
    );
    let info = s.info("s").await.unwrap();
    assert_eq!(info.first_entry.unwrap().id, id(8, 0));
    assert_eq!(info.recorded_first_entry_id, id(8, 0));
    assert_eq!(info.entries_added, 10);
    assert_eq!(s.trim("s", Trim::max_len(0)).await.unwrap(), 3);
    assert_eq!(s.len("s").await.unwrap(), 0);
    assert_eq!(s.info("s").await.unwrap().last_generated_id, id(10, 0));
}

async fn an_approximate_trim_never_removes_more_than_exact<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 100).await;
    let trim = Trim {
        to: TrimTo::MaxLen(10),
        approximate: true,
        limit: Some(20),
    };
    let removed = s.trim("s", trim).await.unwrap();
    assert!(removed <= 20);
    assert_eq!(s.len("s").await.unwrap(), 100 - removed);
}

async fn add_can_trim<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 5).await;
    let options = AddOptions {
        id: AddId::Explicit(id(6, 0)),
        trim: Some(Trim::max_len(2)),
        ..AddOptions::default()
    };
    s.add("s", fields(&[("f", "6")]), options).await.unwrap();
    assert_eq!(
        ids(&s.range("s", Bound::Min, Bound::Max, None).await.unwrap()),
        vec![5, 6]
    );
}

async fn info_describes_the_stream<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 3).await;
    s.create_group("s", "g", START, false).await.unwrap();
    let info = s.info("s").await.unwrap();
    assert_eq!(info.length, 3);
    assert_eq!(info.last_generated_id, id(3, 0));
    assert_eq!(info.entries_added, 3);
    assert_eq!(info.groups, 1);
    assert_eq!(info.first_entry.unwrap().fields, fields(&[("f", "1")]));
    assert_eq!(info.last_entry.unwrap().fields, fields(&[("f", "3")]));
    assert!(matches!(
        s.info("missing").await,
        Err(StreamError::NoSuchKey)
    ));
}

async fn set_last_id_moves_the_top<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 3).await;
    assert!(matches!(
        s.set_last_id("s", id(2, 0), None, None).await,
        Err(StreamError::SetIdTooSmall)
    ));
    s.set_last_id("s", id(50, 0), Some(10), Some(id(40, 0)))
        .await
        .unwrap();
    let info = s.info("s").await.unwrap();
    assert_eq!(
        (
            info.last_generated_id,
            info.entries_added,
            info.max_deleted_entry_id
        ),
        (id(50, 0), 10, id(40, 0))
    );
    assert!(matches!(
        s.add("s", fields(&[("a", "1")]), AddOptions::with_id(id(50, 0)))
            .await,
        Err(StreamError::IdNotGreater)
    ));
    assert!(matches!(
        s.set_last_id("missing", id(1, 0), None, None).await,
        Err(StreamError::NoSuchKey)
    ));
}

// ---------------------------------------------------------------- XREAD

async fn read_returns_entries_after_an_id<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 5).await;
    add_at(s, "other", id(9, 0), "x").await;
    let reply = s
        .read(
            &[
                ("s", ReadFrom::After(id(3, 0))),
                ("other", ReadFrom::After(id(9, 0))),
                ("missing", ReadFrom::After(StreamId::MIN)),
            ],
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].0, "s");
    assert_eq!(ids(&reply[0].1), vec![4, 5]);
    let counted = s
        .read(&[("s", ReadFrom::After(StreamId::MIN))], Some(2), None)
        .await
        .unwrap();
    assert_eq!(ids(&counted[0].1), vec![1, 2]);
    assert!(
        s.read(&[("s", ReadFrom::End)], None, None)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_blocked_read_wakes_on_add<T: Subject>(t: T) {
    let t = Arc::new(t);
    numbered(t.streams(), 1).await;
    let reader = {
        let t = Arc::clone(&t);
        tokio::spawn(async move {
            t.streams()
                .read(
                    &[("s", ReadFrom::After(id(1, 0)))],
                    None,
                    Some(Duration::from_secs(30)),
                )
                .await
                .unwrap()
        })
    };
    add_at(t.streams(), "s", id(2, 0), "woke").await;
    let reply = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&reply[0].1), vec![2]);
}

async fn a_blocked_read_wakes_when_a_missing_stream_gets_an_entry<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 1).await;
    let streams = [
        ("s", ReadFrom::After(id(1, 0))),
        ("new", ReadFrom::After(id(0, 0))),
    ];
    let mut read = std::pin::pin!(s.read(&streams, None, Some(Duration::from_secs(30))));
    assert!(futures_util::poll!(read.as_mut()).is_pending());
    add_at(s, "elsewhere", id(1, 0), "not read").await;
    assert!(futures_util::poll!(read.as_mut()).is_pending());
    add_at(s, "new", id(5, 0), "woke").await;
    let reply = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].0, "new");
    assert_eq!(ids(&reply[0].1), vec![5]);
}

async fn a_blocked_read_times_out_empty<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 1).await;
    let started = std::time::Instant::now();
    let reply = s
        .read(
            &[("s", ReadFrom::End)],
            None,
            Some(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    assert!(reply.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(100));
}

// ---------------------------------------------------------------- XGROUP

async fn groups_are_created_once<T: Subject>(t: T) {
    let s = t.streams();
    assert!(matches!(
        s.create_group("s", "g", START, false).await,
        Err(StreamError::GroupNeedsStream)
    ));
    s.create_group("s", "g", START, true).await.unwrap();
    assert!(matches!(
        s.create_group("s", "g", START, true).await,
        Err(StreamError::BusyGroup)
    ));
    assert_eq!(s.len("s").await.unwrap(), 0);
    assert_eq!(s.groups("s").await.unwrap().len(), 1);
}

async fn a_group_at_the_end_sees_only_new_entries<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 3).await;
    s.create_group("s", "g", GroupStart::End, false)
        .await
        .unwrap();
    assert!(ms(&read_new(s, "g", "c", None).await).is_empty());
    add_at(s, "s", id(4, 0), "4").await;
    assert_eq!(ms(&read_new(s, "g", "c", None).await), vec![4]);
}

async fn a_group_at_an_id_starts_after_it<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 5).await;
    s.create_group("s", "g", GroupStart::After(id(2, 0)), false)
        .await
        .unwrap();
    assert_eq!(ms(&read_new(s, "g", "c", None).await), vec![3, 4, 5]);
}

async fn each_entry_goes_to_one_consumer<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 6).await;
    s.create_group("s", "g", START, false).await.unwrap();
    assert_eq!(ms(&read_new(s, "g", "alice", Some(2)).await), vec![1, 2]);
    assert_eq!(ms(&read_new(s, "g", "bob", Some(3)).await), vec![3, 4, 5]);
    assert_eq!(ms(&read_new(s, "g", "alice", None).await), vec![6]);
    assert!(ms(&read_new(s, "g", "bob", None).await).is_empty());
    let summary = s.pending_summary("s", "g").await.unwrap();
    assert_eq!(summary.count, 6);
    assert_eq!((summary.min, summary.max), (Some(id(1, 0)), Some(id(6, 0))));
    assert_eq!(
        summary.consumers,
        vec![("alice".to_string(), 3), ("bob".to_string(), 3)]
    );
}

async fn noack_reads_leave_nothing_pending<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 3).await;
    s.create_group("s", "g", START, false).await.unwrap();
    let options = ReadGroupOptions {
        no_ack: true,
        ..ReadGroupOptions::default()
    };
    let reply = s
        .read_group("g", "c", &[("s", GroupRead::New)], options)
        .await
        .unwrap();
    assert_eq!(reply[0].1.len(), 3);
    assert_eq!(s.pending_summary("s", "g").await.unwrap().count, 0);
    let consumers = s.consumers("s", "g").await.unwrap();
    assert_eq!(consumers.len(), 1);
    assert_eq!(consumers[0].name, "c");
    assert_eq!(s.groups("s").await.unwrap()[0].last_delivered_id, id(3, 0));
}

async fn history_reads_return_only_the_consumers_own_entries<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 4).await;
    s.create_group("s", "g", START, false).await.unwrap();
    read_new(s, "g", "alice", Some(2)).await;
    read_new(s, "g", "bob", Some(2)).await;
    let history_after = |after: StreamId| async move {
        let reply = s
            .read_group(
                "g",
                "alice",
                &[("s", GroupRead::Pending(after))],
                ReadGroupOptions::default(),
            )
            .await
            .unwrap();
        reply[0].1.iter().map(|e| e.id.ms).collect::<Vec<_>>()
    };
    assert_eq!(ms(&history(s, "g", "alice").await), vec![1, 2]);
    assert_eq!(history_after(id(1, 0)).await, vec![2]);
    let pending = s.pending("s", "g", &PendingQuery::first(10)).await.unwrap();
    let deliveries: Vec<_> = pending.iter().map(|p| (p.id.ms, p.deliveries)).collect();
    assert_eq!(deliveries, vec![(1, 2), (2, 3), (3, 1), (4, 1)]);
    // An empty history still names the stream.
    let empty = s
        .read_group(
            "g",
            "carol",
            &[("s", GroupRead::Pending(StreamId::MIN))],
            ReadGroupOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(empty, vec![("s".to_string(), vec![])]);
}

async fn history_shows_deleted_entries_without_fields<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 3).await;
    s.create_group("s", "g", START, false).await.unwrap();
    read_new(s, "g", "c", None).await;
    s.delete("s", &[id(2, 0)]).await.unwrap();
    s.trim("s", Trim::min_id(id(2, 0))).await.unwrap();
    assert_eq!(
        history(s, "g", "c")
            .await
            .iter()
            .map(|e| (e.id.ms, e.fields.is_some()))
            .collect::<Vec<_>>(),
        vec![(1, false), (2, false), (3, true)]
    );
}

async fn acks_remove_pending_entries_once<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 3).await;
    s.create_group("s", "g", START, false).await.unwrap();
    read_new(s, "g", "c", None).await;
    assert_eq!(
        s.ack("s", "g", &[id(1, 0), id(3, 0), id(3, 0), id(9, 0)])
            .await
            .unwrap(),
        2
    );
    assert_eq!(s.ack("s", "g", &[id(1, 0)]).await.unwrap(), 0);
    assert_eq!(s.pending_summary("s", "g").await.unwrap().count, 1);
    assert_eq!(s.ack("s", "missing", &[id(2, 0)]).await.unwrap(), 0);
    assert_eq!(s.ack("missing", "g", &[id(2, 0)]).await.unwrap(), 0);
}

async fn an_empty_pending_summary<T: Subject>(t: T) {
    let s = t.streams();
    s.create_group("s", "g", START, true).await.unwrap();
    let summary = s.pending_summary("s", "g").await.unwrap();
    assert_eq!(
        (
            summary.count,
            summary.min,
            summary.max,
            summary.consumers.len()
        ),
        (0, None, None, 0)
    );
}

async fn pending_ranges_filter_by_bounds_consumer_and_idle<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 6).await;
    s.create_group("s", "g", START, false).await.unwrap();
    read_new(s, "g", "alice", Some(3)).await;
    read_new(s, "g", "bob", None).await;
    let query = |start, end, count, consumer: Option<&str>, idle: Option<u64>| PendingQuery {
        start,
        end,
        count,
        consumer: consumer.map(str::to_string),
        min_idle: idle.map(Duration::from_millis),
    };
    let got = |q: PendingQuery| async move {
        s.pending("s", "g", &q)
            .await
            .unwrap()
            .iter()
            .map(|p| p.id.ms)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        got(query(Bound::Min, Bound::Max, 10, None, None)).await,
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        got(query(Bound::Excluded(id(2, 0)), Bound::Max, 2, None, None)).await,
        vec![3, 4]
    );
    assert_eq!(
        got(query(Bound::Min, Bound::Max, 10, Some("bob"), None)).await,
        vec![4, 5, 6]
    );
    assert_eq!(
        got(query(Bound::Min, Bound::Max, 10, Some("nobody"), None)).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        got(query(Bound::Min, Bound::Max, 0, None, None)).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        got(query(
            Bound::Included(id(5, 0)),
            Bound::Included(id(2, 0)),
            10,
            None,
            None
        ))
        .await,
        Vec::<u64>::new()
    );
    let idle = ClaimOptions {
        idle: Some(Duration::from_secs(3600)),
        ..ClaimOptions::default()
    };
    s.claim("s", "g", "bob", Duration::ZERO, &[id(2, 0)], idle)
        .await
        .unwrap();
    assert_eq!(
        got(query(Bound::Min, Bound::Max, 10, None, Some(60_000))).await,
        vec![2]
    );
    let entry = &s
        .pending(
            "s",
            "g",
            &query(
                Bound::Included(id(2, 0)),
                Bound::Included(id(2, 0)),
                1,
                None,
                None,
            ),
        )
        .await
        .unwrap()[0];
    assert_eq!(entry.consumer, "bob");
    assert!(entry.idle >= Duration::from_secs(3600));
    assert_eq!(entry.deliveries, 2);
}

async fn claims_respect_min_idle_and_options<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 4).await;
    s.create_group("s", "g", START, false).await.unwrap();
    read_new(s, "g", "alice", None).await;
    // Just delivered: not idle for a minute.
    let minute = Duration::from_secs(60);
    assert!(
        s.claim(
            "s",
            "g",
            "bob",
            minute,
            &[id(1, 0)],
            ClaimOptions::default()
        )
        .await
        .unwrap()
        .is_empty()
    );
    make_idle(s, "g", Duration::from_secs(3600)).await;
    let claimed = s
        .claim(
            "s",
            "g",
            "bob",
            minute,
            &[id(1, 0), id(2, 0), id(9, 0)],
            ClaimOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(ids(&claimed), vec![1, 2]);
    assert_eq!(claimed[0].fields, fields(&[("f", "1")]));
    // A claim resets the idle time, so a second claimer loses.
    assert!(
        s.claim(
            "s",
            "g",
            "carol",
            minute,
            &[id(1, 0)],
            ClaimOptions::default()
        )
        .await
        .unwrap()
        .is_empty()
    );
    let retry = ClaimOptions {
        retry_count: Some(7),
        ..ClaimOptions::default()
    };
    s.claim("s", "g", "carol", Duration::ZERO, &[id(3, 0)], retry)
        .await
        .unwrap();
    let just_id = ClaimOptions {
        just_id: true,
        ..ClaimOptions::default()
    };
    let ids_only = s
        .claim("s", "g", "carol", Duration::ZERO, &[id(4, 0)], just_id)
        .await
        .unwrap();
    assert_eq!(
        ids_only,
        vec![Entry {
            id: id(4, 0),
            fields: vec![]
        }]
    );
    let pending = s.pending("s", "g", &PendingQuery::first(10)).await.unwrap();
    let view: Vec<_> = pending
        .iter()
        .map(|p| (p.id.ms, p.consumer.as_str(), p.deliveries))
        .collect();
    assert_eq!(
        view,
        vec![
            (1, "bob", 2),
            (2, "bob", 2),
            (3, "carol", 7),
            (4, "carol", 1)
        ]
    );
}

async fn force_claims_entries_that_are_not_pending<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 2).await;
    s.create_group("s", "g", START, false).await.unwrap();
    assert!(
        s.claim(
            "s",
            "g",
            "c",
            Duration::ZERO,
            &[id(1, 0)],
            ClaimOptions::default()
        )
        .await
        .unwrap()
        .is_empty()
    );
    let force = ClaimOptions {
        force: true,
        ..ClaimOptions::default()
    };
    let claimed = s
        .claim("s", "g", "c", Duration::ZERO, &[id(1, 0), id(7, 0)], force)
        .await
        .unwrap();
    assert_eq!(ids(&claimed), vec![1]);
    assert_eq!(s.pending_summary("s", "g").await.unwrap().count, 1);
}

async fn claiming_a_deleted_entry_removes_it<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 3).await;
    s.create_group("s", "g", START, false).await.unwrap();
    read_new(s, "g", "alice", None).await;
    s.delete("s", &[id(2, 0)]).await.unwrap();
    let claimed = s
        .claim(
            "s",
            "g",
            "bob",
            Duration::ZERO,
            &[id(2, 0), id(3, 0)],
            ClaimOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(ids(&claimed), vec![3]);
    let left: Vec<_> = s
        .pending("s", "g", &PendingQuery::first(10))
        .await
        .unwrap()
        .iter()
        .map(|p| p.id.ms)
        .collect();
    assert_eq!(left, vec![1, 3]);
}

async fn claim_lastid_moves_the_group_forward<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 5).await;
    s.create_group("s", "g", START, false).await.unwrap();
    read_new(s, "g", "c", Some(1)).await;
    let options = ClaimOptions {
        last_id: Some(id(3, 0)),
        ..ClaimOptions::default()
    };
    s.claim("s", "g", "c", Duration::ZERO, &[id(1, 0)], options)
        .await
        .unwrap();
    assert_eq!(s.groups("s").await.unwrap()[0].last_delivered_id, id(3, 0));
    assert_eq!(ms(&read_new(s, "g", "c", None).await), vec![4, 5]);
}

async fn autoclaim_iterates_and_reports_deleted_entries<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 5).await;
    s.create_group("s", "g", START, false).await.unwrap();
    read_new(s, "g", "alice", None).await;
    make_idle(s, "g", Duration::from_secs(3600)).await;
    s.delete("s", &[id(4, 0)]).await.unwrap();
    let auto = |start: StreamId, count| AutoClaim {
        min_idle: Duration::from_secs(60),
        start,
        count,
        just_id: false,
    };
    let first = s
        .auto_claim("s", "g", "bob", auto(StreamId::MIN, 2))
        .await
        .unwrap();
    assert_eq!(ids(&first.claimed), vec![1, 2]);
    assert_eq!(first.next, id(3, 0));
    assert!(first.deleted.is_empty());
    let rest = s
        .auto_claim("s", "g", "bob", auto(first.next, 10))
        .await
        .unwrap();
    assert_eq!(ids(&rest.claimed), vec![3, 5]);
    assert_eq!(rest.deleted, vec![id(4, 0)]);
    assert_eq!(rest.next, StreamId::MIN);
    // Claimed just now: nothing is idle any more.
    assert!(
        s.auto_claim("s", "g", "carol", auto(StreamId::MIN, 10))
            .await
            .unwrap()
            .claimed
            .is_empty()
    );
    assert!(matches!(
        s.auto_claim("s", "g", "bob", auto(StreamId::MIN, 0)).await,
        Err(StreamError::CountNotPositive)
    ));
    let pending = s.pending("s", "g", &PendingQuery::first(10)).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|p| (p.id.ms, p.deliveries))
            .collect::<Vec<_>>(),
        vec![(1, 2), (2, 2), (3, 2), (5, 2)]
    );
}

async fn setid_rewinds_and_redelivers<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 3).await;
    s.create_group("s", "g", START, false).await.unwrap();
    read_new(s, "g", "alice", None).await;
    s.set_group_id("s", "g", GroupStart::After(id(1, 0)))
        .await
        .unwrap();
    assert_eq!(ms(&read_new(s, "g", "bob", None).await), vec![2, 3]);
    let pending = s.pending("s", "g", &PendingQuery::first(10)).await.unwrap();
    let view: Vec<_> = pending
        .iter()
        .map(|p| (p.id.ms, p.consumer.as_str(), p.deliveries))
        .collect();
    assert_eq!(view, vec![(1, "alice", 1), (2, "bob", 1), (3, "bob", 1)]);
    assert!(matches!(
        s.set_group_id("s", "nope", GroupStart::End).await,
        Err(StreamError::NoSuchGroup { .. })
    ));
    assert!(matches!(
        s.set_group_id("missing", "g", GroupStart::End).await,
        Err(StreamError::GroupNeedsStream)
    ));
}

async fn consumers_are_created_and_deleted<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 3).await;
    s.create_group("s", "g", START, false).await.unwrap();
    assert!(s.create_consumer("s", "g", "c").await.unwrap());
    assert!(!s.create_consumer("s", "g", "c").await.unwrap());
    read_new(s, "g", "c", Some(2)).await;
    assert_eq!(s.delete_consumer("s", "g", "c").await.unwrap(), 2);
    assert_eq!(s.delete_consumer("s", "g", "c").await.unwrap(), 0);
    assert_eq!(s.pending_summary("s", "g").await.unwrap().count, 0);
    assert!(s.consumers("s", "g").await.unwrap().is_empty());
    assert!(matches!(
        s.create_consumer("s", "nope", "c").await,
        Err(StreamError::NoSuchGroup { .. })
    ));
    assert!(matches!(
        s.delete_consumer("missing", "g", "c").await,
        Err(StreamError::GroupNeedsStream)
    ));
}

async fn destroying_a_group<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 1).await;
    s.create_group("s", "g", START, false).await.unwrap();
    assert!(s.destroy_group("s", "g").await.unwrap());
    assert!(!s.destroy_group("s", "g").await.unwrap());
    assert!(s.groups("s").await.unwrap().is_empty());
    assert!(matches!(
        s.destroy_group("missing", "g").await,
        Err(StreamError::GroupNeedsStream)
    ));
}

async fn a_blocked_group_read_wakes_on_add<T: Subject>(t: T) {
    let t = Arc::new(t);
    t.streams()
        .create_group("s", "g", START, true)
        .await
        .unwrap();
    let reader = {
        let t = Arc::clone(&t);
        tokio::spawn(async move {
            let options = ReadGroupOptions {
                block: Some(Duration::from_secs(30)),
                ..ReadGroupOptions::default()
            };
            t.streams()
                .read_group("g", "c", &[("s", GroupRead::New)], options)
                .await
                .unwrap()
        })
    };
    add_at(t.streams(), "s", id(1, 0), "woke").await;
    let reply = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply[0].1[0].id, id(1, 0));
}

async fn a_blocked_group_read_fails_when_the_group_goes<T: Subject>(t: T) {
    let t = Arc::new(t);
    t.streams()
        .create_group("s", "g", START, true)
        .await
        .unwrap();
    let reader = {
        let t = Arc::clone(&t);
        tokio::spawn(async move {
            let options = ReadGroupOptions {
                block: Some(Duration::ZERO),
                ..ReadGroupOptions::default()
            };
            t.streams()
                .read_group("g", "c", &[("s", GroupRead::New)], options)
                .await
        })
    };
    t.wait_until_blocked().await;
    t.streams().destroy_group("s", "g").await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(result, Err(StreamError::GroupGoneWhileBlocked)),
        "{result:?}"
    );
}

async fn missing_groups_give_redis_errors<T: Subject>(t: T) {
    let s = t.streams();
    for stream in ["s", "missing"] {
        if stream == "s" {
            numbered(s, 1).await;
        }
        let read = s
            .read_group(
                "g",
                "c",
                &[(stream, GroupRead::New)],
                ReadGroupOptions::default(),
            )
            .await;
        assert!(
            matches!(&read, Err(StreamError::NoGroup { .. })),
            "{read:?}"
        );
        assert!(
            read.unwrap_err()
                .to_string()
                .ends_with("in XREADGROUP with GROUP option")
        );
        assert!(matches!(
            s.pending_summary(stream, "g").await,
            Err(StreamError::NoGroup { .. })
        ));
        assert!(matches!(
            s.pending(stream, "g", &PendingQuery::first(1)).await,
            Err(StreamError::NoGroup { .. })
        ));
        assert!(matches!(
            s.claim(
                stream,
                "g",
                "c",
                Duration::ZERO,
                &[id(1, 0)],
                ClaimOptions::default()
            )
            .await,
            Err(StreamError::NoGroup { .. })
        ));
    }
    assert!(matches!(
        s.consumers("s", "g").await,
        Err(StreamError::NoSuchGroup { .. })
    ));
    assert!(matches!(
        s.consumers("missing", "g").await,
        Err(StreamError::NoSuchKey)
    ));
    assert!(matches!(
        s.groups("missing").await,
        Err(StreamError::NoSuchKey)
    ));
}

async fn group_info_counts_reads_and_lag<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 5).await;
    s.create_group("s", "g", START, false).await.unwrap();
    let group = || async { s.groups("s").await.unwrap().remove(0) };
    let fresh = group().await;
    assert_eq!(
        (fresh.consumers, fresh.pending, fresh.last_delivered_id),
        (0, 0, StreamId::MIN)
    );
    if T::EXACT_COUNTERS {
        assert_eq!((fresh.entries_read, fresh.lag), (Some(0), Some(5)));
    }
    assert_eq!(fresh.lag.unwrap_or(5), 5);
    read_new(s, "g", "c", Some(2)).await;
    s.delete("s", &[id(4, 0)]).await.unwrap();
    let midway = group().await;
    assert_eq!(
        (midway.consumers, midway.pending, midway.last_delivered_id),
        (1, 2, id(2, 0))
    );
    assert_eq!(midway.entries_read, Some(2));
    if T::EXACT_COUNTERS {
        assert_eq!(midway.lag, Some(2));
    }
    read_new(s, "g", "c", None).await;
    let done = group().await;
    assert_eq!((done.entries_read, done.lag), (Some(5), Some(0)));
}

async fn consumer_info_counts_pending<T: Subject>(t: T) {
    let s = t.streams();
    numbered(s, 3).await;
    s.create_group("s", "g", START, false).await.unwrap();
    read_new(s, "g", "bob", Some(1)).await;
    read_new(s, "g", "alice", None).await;
    let consumers = s.consumers("s", "g").await.unwrap();
    let view: Vec<_> = consumers
        .iter()
        .map(|c| (c.name.as_str(), c.pending))
        .collect();
    assert_eq!(view, vec![("alice", 2), ("bob", 1)]);
    assert!(consumers.iter().all(|c| c.idle < Duration::from_secs(60)));
}

async fn many_consumers_never_share_an_entry<T: Subject>(t: T) {
    let t = Arc::new(t);
    let total = 400u64;
    for i in 1..=total {
        add_at(t.streams(), "s", id(i, 0), "x").await;
    }
    t.streams()
        .create_group("s", "g", START, false)
        .await
        .unwrap();
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let t = Arc::clone(&t);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = ms(&read_new(t.streams(), "g", &format!("w{worker}"), Some(7)).await);
                    if got.is_empty() {
                        return mine;
                    }
                    let acks: Vec<_> = got.iter().map(|&ms| id(ms, 0)).collect();
                    t.streams().ack("s", "g", &acks).await.unwrap();
                    mine.extend(got);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    assert_eq!(
        t.streams().pending_summary("s", "g").await.unwrap().count,
        0
    );
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::memory()).await })*
        }
        mod segment {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::segment()).await })*
        }
        mod text {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::text()).await })*
        }
        #[cfg(feature = "redis")]
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::remote("").await).await })*
        }
        #[cfg(feature = "redis")]
        mod redis_resp3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::remote("?protocol=resp3").await).await })*
        }
        #[cfg(feature = "redis")]
        mod served {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::served("").await).await })*
        }
        #[cfg(feature = "redis")]
        mod served_resp3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::served("?protocol=resp3").await).await })*
        }
    };
}

suite!(
    auto_ids_increase,
    explicit_ids_must_grow,
    zero_star_gives_zero_one,
    the_last_possible_id_exhausts_the_stream,
    a_batch_of_adds_gets_increasing_ids,
    nomkstream_does_not_create,
    fields_keep_their_order_and_bytes,
    ranges_honour_bounds_and_count,
    large_streams_range_across_batches,
    reads_from_any_id_follow_any_earlier_read,
    deleted_entries_vanish,
    deleting_the_last_entry_keeps_the_last_id,
    trimming_by_length_and_by_id,
    an_approximate_trim_never_removes_more_than_exact,
    add_can_trim,
    info_describes_the_stream,
    set_last_id_moves_the_top,
    read_returns_entries_after_an_id,
    a_blocked_read_wakes_on_add,
    a_blocked_read_wakes_when_a_missing_stream_gets_an_entry,
    a_blocked_read_times_out_empty,
    groups_are_created_once,
    a_group_at_the_end_sees_only_new_entries,
    a_group_at_an_id_starts_after_it,
    each_entry_goes_to_one_consumer,
    noack_reads_leave_nothing_pending,
    history_reads_return_only_the_consumers_own_entries,
    history_shows_deleted_entries_without_fields,
    acks_remove_pending_entries_once,
    an_empty_pending_summary,
    pending_ranges_filter_by_bounds_consumer_and_idle,
    claims_respect_min_idle_and_options,
    force_claims_entries_that_are_not_pending,
    claiming_a_deleted_entry_removes_it,
    claim_lastid_moves_the_group_forward,
    autoclaim_iterates_and_reports_deleted_entries,
    setid_rewinds_and_redelivers,
    consumers_are_created_and_deleted,
    destroying_a_group,
    a_blocked_group_read_wakes_on_add,
    a_blocked_group_read_fails_when_the_group_goes,
    missing_groups_give_redis_errors,
    group_info_counts_reads_and_lag,
    consumer_info_counts_pending,
    many_consumers_never_share_an_entry,
);
