//! The Redis adapter against a real `redis-server` that dies and comes back,
//! and against addresses that are not a usable Redis server: clear errors,
//! reconnection, and nothing acknowledged lost when Redis persists.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use orcastra::StreamId;
use orcastra::streams::{
    AddOptions, Bound, Fields, GroupRead, GroupStart, ReadGroupOptions, RedisStreams, StreamError,
    Streams,
};

mod common;
use common::redis_server::{RedisServer, free_port};

/// A guard against hangs, far longer than any step should take.
const PATIENCE: Duration = Duration::from_secs(60);

fn job(n: u64) -> Fields {
    vec![(Bytes::from_static(b"n"), Bytes::from(n.to_string()))]
}

async fn connect(server: &RedisServer) -> RedisStreams {
    RedisStreams::connect(&server.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `condition` until it holds.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Retries `operation` while Redis is unreachable (the adapter reconnects
/// in the background); any other error fails the test.
async fn retry<T, F: Future<Output = Result<T, StreamError>>>(
    mut operation: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match operation().await {
            Ok(value) => return value,
            Err(StreamError::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_consumer_gets_an_error_when_redis_dies_and_resumes_after_a_restart() {
    let mut server = RedisServer::persistent();
    let s = Arc::new(connect(&server).await);
    s.create_group("jobs", "g", GroupStart::End, true)
        .await
        .unwrap();
    let blocked = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            let options = ReadGroupOptions {
                block: Some(Duration::ZERO),
                ..ReadGroupOptions::default()
            };
            s.read_group("g", "c", &[("jobs", GroupRead::New)], options)
                .await
        })
    };
    wait_until("the read blocks in Redis", || {
        server.command("INFO clients").contains("blocked_clients:1")
    });
    // Other commands go through while the consumer waits.
    assert_eq!(s.len("jobs").await.unwrap(), 0);

    server.kill();
    let failed = tokio::time::timeout(PATIENCE, blocked)
        .await
        .expect("the blocked read ends when the server dies")
        .unwrap();
    match failed {
        Err(StreamError::Unavailable {
            server: address, ..
        }) => {
            assert_eq!(address, format!("127.0.0.1:{}", server.port()));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }

    server.restart();
    let id = retry(|| s.add("jobs", job(1), AddOptions::default()))
        .await
        .unwrap();
    let options = ReadGroupOptions {
        block: Some(PATIENCE),
        ..ReadGroupOptions::default()
    };
    let read = s
        .read_group("g", "c", &[("jobs", GroupRead::New)], options)
        .await
        .unwrap();
    assert_eq!(read[0].1[0].id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_acknowledged_before_a_kill_survive_in_a_persistent_redis() {
    let mut server = RedisServer::persistent();
    let s = Arc::new(connect(&server).await);
    let acked = Arc::new(parking_lot::Mutex::new(Vec::<StreamId>::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let (s, acked, errors, stop) = (
                Arc::clone(&s),
                Arc::clone(&acked),
                Arc::clone(&errors),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                let mut n = p * 1_000_000;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    match s.add("jobs", job(n), AddOptions::default()).await {
                        Ok(id) => acked.lock().push(id.unwrap()),
                        Err(StreamError::Unavailable { .. }) => {
                            errors.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            })
        })
        .collect();

    wait_until("500 adds are acknowledged", || acked.lock().len() >= 500);
    server.kill();
    wait_until("a producer sees the server gone", || {
        errors.load(Ordering::SeqCst) > 0
    });
    server.restart();
    let before_restart = acked.lock().len();
    wait_until("500 more adds are acknowledged", || {
        acked.lock().len() >= before_restart + 500
    });
    stop.store(true, Ordering::SeqCst);
    for producer in producers {
        producer.await.unwrap();
    }

    // Kill once more so that only what reached the disk counts.
    server.kill();
    server.restart();
    let stored: BTreeSet<StreamId> = retry(|| s.range("jobs", Bound::Min, Bound::Max, None))
        .await
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    let acked = acked.lock();
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(lost.is_empty(), "{} acknowledged adds lost", lost.len());
}

#[tokio::test]
async fn a_url_that_is_not_a_redis_url_is_refused_without_its_password() {
    for url in [
        "http://127.0.0.1:6379",
        "redis://:hunter2@127.0.0.1:notaport",
        "",
    ] {
        let error = RedisStreams::connect(url).await.err().unwrap();
        let message = error.to_string();
        assert!(
            matches!(error, StreamError::Unavailable { .. }),
            "{url}: {message}"
        );
        assert!(message.contains("not a valid Redis URL"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}

/// Connects to `port` on loopback, expecting a refusal that names the
/// address; returns its message.
async fn refused(port: u16) -> String {
    let error = tokio::time::timeout(
        PATIENCE,
        RedisStreams::connect(&format!("redis://127.0.0.1:{port}")),
    )
    .await
    .expect("connect gives up")
    .err()
    .unwrap();
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    message
}

#[tokio::test]
async fn an_unreachable_server_fails_at_once_naming_the_address() {
    let message = refused(free_port()).await;
    assert!(message.contains("refused"), "{message}");
}

/// A server on a port that answers like something else, or not at all.
fn impostor(reply: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(reply);
            // Keep the connection open: a silent server must not hang us.
            open.push(stream);
        }
    });
    port
}

#[tokio::test]
async fn a_server_that_is_not_redis_is_refused() {
    for (reply, why) in [
        (
            &b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"[..],
            "does not speak the Redis protocol",
        ),
        (b"", "timed out"),
    ] {
        let message = refused(impostor(reply)).await;
        assert!(message.contains(why), "{message}");
    }
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_the_right_one_accepted() {
    let server = RedisServer::with_args(&["--save", "", "--requirepass", "s3cret"]);
    let port = server.port();
    for url in [
        format!("redis://127.0.0.1:{port}"),
        format!("redis://:wrong@127.0.0.1:{port}"),
    ] {
        let error = RedisStreams::connect(&url).await.err().unwrap();
        assert!(
            matches!(error, StreamError::Unavailable { .. }),
            "{url}: {error}"
        );
    }
    let s = RedisStreams::connect(&format!("redis://:s3cret@127.0.0.1:{port}/0"))
        .await
        .unwrap();
    assert_eq!(s.len("jobs").await.unwrap(), 0);
}

#[tokio::test]
async fn a_key_of_another_type_gives_wrongtype_and_is_left_alone() {
    let server = RedisServer::start();
    let s = connect(&server).await;
    assert_eq!(server.command("SET jobs not-a-stream"), "+OK");
    assert!(matches!(
        s.add("jobs", job(1), AddOptions::default()).await,
        Err(StreamError::WrongType)
    ));
    assert!(matches!(s.len("jobs").await, Err(StreamError::WrongType)));
    assert!(matches!(
        s.create_group("jobs", "g", GroupStart::End, true).await,
        Err(StreamError::WrongType)
    ));
    assert_eq!(server.command("GET jobs"), "not-a-stream");
}
