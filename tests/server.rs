//! The Redis-protocol server over real TCP: the same requests sent to a
//! real `redis-server` and to Orcastra's server must get byte-identical
//! replies, in RESP2 and RESP3; then what Redis cannot be compared on:
//! malformed frames, limits, authentication, blocking reads that hold
//! nobody up, and `redis-cli` as a third-party client.

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use orcastra::server::resp::Limits;
use orcastra::server::{Server, ServerOptions};
use orcastra::streams::Embedded;

mod common;
use common::redis_server::RedisServer;
use common::resp::Client;

/// A server of the test's own on a free loopback port, over memory
/// streams, stopped when dropped.
struct Orcastra {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _runtime: tokio::runtime::Runtime,
}

fn orcastra(options: ServerOptions) -> Orcastra {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..options
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = runtime.block_on(async {
        let (server, listener) = Server::bind(std::sync::Arc::new(Embedded::memory()), options)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        addr
    });
    Orcastra {
        addr,
        _stop: stop,
        _runtime: runtime,
    }
}

/// Requests whose replies do not depend on time or on how either server
/// lays out its data, covering every stream command's replies and errors.
const SCRIPT: &[&[&str]] = &[
    &["XADD", "s", "1-1", "a", "1"],
    &["XADD", "s", "1-1", "a", "1"],
    &["XADD", "z", "0-0", "a", "1"],
    &["XADD", "s", "2-*", "b", "2"],
    &["XADD", "s", "3", "c", "3"],
    &["XADD", "s", "MAXLEN", "x", "4-0", "a", "b"],
    &["XADD", "s", "MAXLEN", "-1", "4-0", "a", "b"],
    &["XADD", "s", "MINID", "1", "MAXLEN", "2", "4-0", "a", "b"],
    &["XADD", "s", "LIMIT", "10", "4-0", "a", "b"],
    &["XADD", "s", "4-0", "a"],
    &["XADD", "s", "1-x", "a", "b"],
    &["XADD", "s", "4-0", "a", "b", "c", "d"],
    &["XADD", "missing", "NOMKSTREAM", "5-0", "a", "b"],
    &["XADD", "s", "MAXLEN", "~", "100", "5-0", "e", "5"],
    &["XADD", "s"],
    &["XLEN", "s"],
    &["XLEN", "missing"],
    &["XRANGE", "s", "-", "+"],
    &["XRANGE", "s", "-", "+", "COUNT", "1"],
    &["XRANGE", "s", "-", "+", "COUNT", "0"],
    &["XRANGE", "s", "(1-1", "+"],
    &["XRANGE", "s", "2", "2"],
    &["XRANGE", "s", "-", "+", "FOO"],
    &["XRANGE", "s", "x", "+"],
    &[
        "XRANGE",
        "s",
        "(18446744073709551615-18446744073709551615",
        "+",
    ],
    &["XRANGE", "missing", "-", "+"],
    &["XREVRANGE", "s", "+", "-", "COUNT", "2"],
    &["XREVRANGE", "s", "(4", "-"],
    &["XREAD", "STREAMS", "s", "0"],
    &["XREAD", "COUNT", "1", "STREAMS", "s", "0"],
    &["XREAD", "STREAMS", "s", "missing", "0", "0"],
    &["XREAD", "STREAMS", "s", "$"],
    &["XREAD", "STREAMS", "s", "5-0"],
    &["XREAD", "STREAMS", "s", "t", "0"],
    &["XREAD", "STREAMS", "s", ">"],
    &["XREAD", "BLOCK", "-1", "STREAMS", "s", "0"],
    &["XREAD", "BLOCK", "x", "STREAMS", "s", "0"],
    &["XREAD", "FOO", "STREAMS", "s", "0"],
    &["XREAD", "COUNT", "1", "s", "0"],
    &["XGROUP", "CREATE", "s", "g", "0"],
    &["XGROUP", "CREATE", "s", "g", "0"],
    &["XGROUP", "CREATE", "missing", "g", "0"],
    &["XGROUP", "CREATE", "m2", "g", "$", "MKSTREAM"],
    &["XGROUP", "CREATE", "s", "g2", "0", "FOO"],
    &["XGROUP", "SETID", "s", "g", "0", "FOO"],
    &["XGROUP", "FOO", "s", "g"],
    &["XGROUP", "CREATE", "s"],
    &["XGROUP"],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "COUNT",
        "2",
        "STREAMS",
        "s",
        ">",
    ],
    &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", "0"],
    &["XREADGROUP", "GROUP", "nog", "c", "STREAMS", "s", ">"],
    &["XREADGROUP", "STREAMS", "s", ">"],
    &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", "t", ">"],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "BLOCK",
        "x",
        "STREAMS",
        "s",
        ">",
    ],
    &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", "$"],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "NOACK",
        "STREAMS",
        "s",
        ">",
    ],
    &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"],
    &["XACK", "s", "g", "2-1"],
    &["XACK", "s", "g", "2-1", "9-9"],
    &["XACK", "s", "g", "x"],
    &["XACK", "missing", "g", "1-1"],
    &["XPENDING", "s", "g"],
    &["XPENDING", "s", "nog"],
    &["XPENDING", "s", "g", "-", "+", "x"],
    &["XPENDING", "s", "g", "-"],
    &["XPENDING", "s", "g", "IDLE", "x", "-", "+", "10"],
    &["XCLAIM", "s", "g", "c2", "0", "1-1", "JUSTID"],
    &["XCLAIM", "s", "g", "c2", "x", "1-1"],
    &["XCLAIM", "s", "g", "c2", "0", "1-1", "FOO"],
    &["XCLAIM", "s", "nog", "c2", "0", "1-1"],
    &[
        "XAUTOCLAIM",
        "s",
        "g",
        "c3",
        "0",
        "0",
        "COUNT",
        "10",
        "JUSTID",
    ],
    &["XAUTOCLAIM", "s", "g", "c3", "0", "0", "COUNT", "0"],
    &["XAUTOCLAIM", "s", "g", "c3", "0", "0", "FOO"],
    &["XAUTOCLAIM", "s", "g", "c3", "x", "0"],
    &["XGROUP", "CREATECONSUMER", "s", "g", "c9"],
    &["XGROUP", "CREATECONSUMER", "s", "g", "c9"],
    &["XGROUP", "DELCONSUMER", "s", "g", "c9"],
    &["XGROUP", "SETID", "s", "g", "0"],
    &["XGROUP", "SETID", "s", "nog", "0"],
    &["XGROUP", "DESTROY", "s", "g2"],
    &["XGROUP", "DESTROY", "s", "g"],
    &["XDEL", "s", "1-1", "9-9"],
    &["XDEL", "s", "bad"],
    &["XTRIM", "s", "MAXLEN", "10"],
    &["XTRIM", "s", "MAXLEN", "~", "10", "LIMIT", "5"],
    &["XTRIM", "s"],
    &["XTRIM", "s", "LIMIT", "1"],
    &["XTRIM", "s", "MINID", "3"],
    &["XTRIM", "s", "FOO", "1"],
    &["XTRIM", "s", "MAXLEN", "1", "LIMIT", "1"],
    &["XSETID", "s", "1-0"],
    &["XSETID", "s", "99-0"],
    &["XSETID", "s", "100-0", "ENTRIESADDED", "-1"],
    &["XSETID", "missing", "1-0"],
    &["XRANGE", "s", "-", "+"],
    &["XINFO", "FOO", "s"],
    &["XINFO", "GROUPS", "missing"],
    &["XINFO", "CONSUMERS", "s", "nog"],
    &["XINFO", "STREAM", "s", "FULL", "COUNT", "x"],
    &["XPENDING", "s", "g", "-", "+", "10", "nobody"],
    &["XPENDING", "s", "g", "(9-9", "(1-0", "10"],
    &["XGROUP", "CREATECONSUMER", "s", "nog", "c"],
    &["XGROUP", "DELCONSUMER", "missing", "g", "c"],
    &["XINFO", "STREAM", "missing"],
    &["EXISTS", "s", "m2", "missing", "s"],
    &["TYPE", "s"],
    &["TYPE", "missing"],
    &["DEL", "m2", "missing"],
    &["DBSIZE"],
    &["KEYS", "s*"],
    &["SCAN", "x"],
    &["SELECT", "0"],
    &["SELECT", "x"],
    &["PING"],
    &["PING", "hello"],
    &["PING", "a", "b"],
    &["ECHO", "x"],
    &["MULTI"],
    &["MULTI"],
    &["XLEN", "s"],
    &["XADD", "s", "200-0", "a", "1"],
    &["XADD", "s", "1-0", "a", "1"],
    &["EXEC"],
    &["MULTI"],
    &["NOSUCH", "x"],
    &["XLEN"],
    &["EXEC"],
    &["EXEC"],
    &["DISCARD"],
    &["CLIENT", "SETNAME", "a b"],
    &["CLIENT", "SETNAME", "tester"],
    &["CLIENT", "GETNAME"],
    &["CLIENT", "FOO"],
    &["CONFIG", "GET", "maxmemory-policy"],
    &["CONFIG", "SET", "nosuchparameter", "1"],
    &["AUTH", "secret"],
    &["HELLO", "4"],
    &["HELLO", "x"],
    &["NOSUCH"],
    &["FLUSHDB", "x"],
    &["FLUSHDB"],
    &["DBSIZE"],
    &["KEYS", "*"],
];

fn compare_with_redis(resp3: bool) {
    let redis = RedisServer::start();
    let ours = orcastra(ServerOptions::default());
    let mut theirs = Client::connect(format!("127.0.0.1:{}", redis.port()).parse().unwrap());
    let mut mine = Client::connect(ours.addr);
    if resp3 {
        assert!(theirs.call(&["HELLO", "3"]).starts_with('%'));
        assert!(mine.call(&["HELLO", "3"]).starts_with('%'));
    }
    let mut differences = Vec::new();
    for request in SCRIPT {
        let (expected, got) = (theirs.call(request), mine.call(request));
        if expected != got {
            differences.push(format!(
                "{request:?}\n  redis:    {expected:?}\n  orcastra: {got:?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} replies differ from Redis's:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

#[test]
fn replies_are_redis_replies_in_resp2() {
    compare_with_redis(false);
}

#[test]
fn replies_are_redis_replies_in_resp3() {
    compare_with_redis(true);
}

#[test]
fn pipelined_requests_get_their_replies_in_order() {
    let server = orcastra(ServerOptions::default());
    let mut client = Client::connect(server.addr);
    let mut pipeline = Vec::new();
    for i in 1..=1000 {
        pipeline.extend_from_slice(
            format!(
                "*5\r\n$4\r\nXADD\r\n$1\r\ns\r\n${}\r\n{i}-1\r\n$1\r\nn\r\n$1\r\nv\r\n",
                format!("{i}-1").len()
            )
            .as_bytes(),
        );
    }
    pipeline.extend_from_slice(b"XLEN s\r\n");
    client.send_raw(&pipeline);
    for i in 1..=1000 {
        let id = format!("{i}-1");
        assert_eq!(client.reply(), format!("${}\r\n{id}\r\n", id.len()));
    }
    assert_eq!(client.reply(), ":1000\r\n");
}

/// Plain XADDs are written together, within a pipeline and across
/// clients: each still gets its own increasing id, in its order, and an
/// XADD with options in the middle of a pipeline keeps its place.
#[test]
fn xadds_written_together_keep_their_order_and_ids() {
    let server = orcastra(ServerOptions::default());
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut pipeline = Vec::new();
                for i in 0..300 {
                    let value = format!("{p}-{i}");
                    let args: Vec<&str> = if i == 150 {
                        vec!["XADD", "s", "MAXLEN", "100000", "*", "v", &value]
                    } else {
                        vec!["XADD", "s", "*", "v", &value]
                    };
                    pipeline.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
                    for arg in args {
                        pipeline
                            .extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
                    }
                }
                client.send_raw(&pipeline);
                (0..300).map(|_| client.reply()).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut client = Client::connect(server.addr);
    for (p, producer) in producers.into_iter().enumerate() {
        let ids: Vec<String> = producer
            .join()
            .unwrap()
            .iter()
            .map(|reply| reply.lines().nth(1).unwrap().to_string())
            .collect();
        let parsed: Vec<(u64, u64)> = ids
            .iter()
            .map(|id| {
                let (ms, seq) = id.split_once('-').unwrap();
                (ms.parse().unwrap(), seq.parse().unwrap())
            })
            .collect();
        assert!(
            parsed.windows(2).all(|w| w[0] < w[1]),
            "ids out of order: {ids:?}"
        );
        // Each id holds the value its XADD sent.
        for (i, id) in ids.iter().enumerate().step_by(37) {
            let value = format!("{p}-{i}");
            assert_eq!(
                client.call(&["XRANGE", "s", id, id]),
                format!(
                    "*1\r\n*2\r\n${}\r\n{id}\r\n*2\r\n$1\r\nv\r\n${}\r\n{value}\r\n",
                    id.len(),
                    value.len()
                )
            );
        }
    }
    assert_eq!(client.call(&["XLEN", "s"]), ":1200\r\n");
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let server = orcastra(ServerOptions::default());
    let mut bystander = Client::connect(server.addr);
    assert_eq!(
        bystander.call(&["XADD", "s", "1-1", "a", "b"]),
        "$3\r\n1-1\r\n"
    );
    let cases: &[(&[u8], &str)] = &[
        (
            b"*x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n:1\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"ECHO \"unclosed\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        (
            &[b'A'; 70_000],
            "-ERR Protocol error: too big inline request\r\n",
        ),
    ];
    for (frame, error) in cases {
        let mut client = Client::connect(server.addr);
        client.send_raw(frame);
        assert_eq!(client.reply(), *error);
        assert!(client.closed(), "the connection stays open after {error}");
    }
    assert_eq!(bystander.call(&["XLEN", "s"]), ":1\r\n");
}

#[test]
fn request_limits_are_enforced_with_clear_errors() {
    let limits = Limits {
        max_bulk: 1024,
        max_args: 16,
        max_inline: 256,
    };
    let server = orcastra(ServerOptions {
        limits,
        ..ServerOptions::default()
    });
    let mut client = Client::connect(server.addr);
    let big = "x".repeat(1025);
    client.send(&["XADD", "s", "*", "f", &big]);
    assert_eq!(
        client.reply(),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    assert!(client.closed());

    let mut client = Client::connect(server.addr);
    let many = vec!["a"; 17];
    client.send(&many);
    assert_eq!(
        client.reply(),
        "-ERR Protocol error: invalid multibulk length\r\n"
    );

    let mut client = Client::connect(server.addr);
    let fits = "x".repeat(1024);
    assert_eq!(
        client.call(&["XADD", "s", "1-1", "f", &fits]),
        "$3\r\n1-1\r\n"
    );
}

#[test]
fn clients_beyond_the_limit_are_refused() {
    let server = orcastra(ServerOptions {
        max_clients: 2,
        ..ServerOptions::default()
    });
    let mut first = Client::connect(server.addr);
    let mut second = Client::connect(server.addr);
    assert_eq!(first.call(&["PING"]), "+PONG\r\n");
    assert_eq!(second.call(&["PING"]), "+PONG\r\n");
    let mut third = Client::connect(server.addr);
    assert_eq!(third.reply(), "-ERR max number of clients reached\r\n");
    assert!(third.closed());
    drop(first);
    // The first client's slot frees once the server notices it left.
    let mut fourth = loop {
        let mut client = Client::connect(server.addr);
        client.send(&["PING"]);
        let reply = client.reply();
        if reply == "+PONG\r\n" {
            break client;
        }
        assert_eq!(reply, "-ERR max number of clients reached\r\n");
        std::thread::sleep(Duration::from_millis(10));
    };
    let stats = fourth.call(&["INFO", "stats"]);
    assert!(stats.contains("rejected_connections:"), "{stats}");
    assert!(
        !stats.contains(
            "rejected_connections:0
"
        ),
        "{stats}"
    );
}

#[test]
fn a_password_gates_every_command_but_auth() {
    let server = orcastra(ServerOptions {
        requirepass: Some("s3cret".into()),
        ..ServerOptions::default()
    });
    let mut client = Client::connect(server.addr);
    assert_eq!(
        client.call(&["XLEN", "s"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        client.call(&["MULTI"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert!(
        client
            .call(&["HELLO", "3"])
            .starts_with("-NOAUTH HELLO must be called")
    );
    assert_eq!(
        client.call(&["AUTH", "wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        client.call(&["AUTH", "other", "s3cret"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    // Before AUTH, a request may not be large.
    let mut stranger = Client::connect(server.addr);
    stranger.send(&["AUTH", &"x".repeat(20_000)]);
    assert_eq!(
        stranger.reply(),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    assert_eq!(client.call(&["AUTH", "s3cret"]), "+OK\r\n");
    assert_eq!(client.call(&["XLEN", "s"]), ":0\r\n");

    let mut other = Client::connect(server.addr);
    let hello = other.call(&["HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "w1"]);
    assert!(hello.starts_with("%7\r\n"), "{hello}");
    assert_eq!(other.call(&["CLIENT", "GETNAME"]), "$2\r\nw1\r\n");
    assert_eq!(other.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(
        other.call(&["XLEN", "s"]),
        "-NOAUTH Authentication required.\r\n"
    );
}

#[test]
fn a_blocked_read_holds_nobody_up_and_ends_with_its_client() {
    let server = orcastra(ServerOptions::default());
    let mut waiter = Client::connect(server.addr);
    waiter.send(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
    let mut other = Client::connect(server.addr);
    let blocked = |client: &mut Client| {
        client
            .call(&["INFO", "clients"])
            .contains("blocked_clients:1\r\n")
    };
    while !blocked(&mut other) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(other.call(&["XADD", "s", "7-7", "a", "b"]), "$3\r\n7-7\r\n");
    assert_eq!(
        waiter.reply(),
        "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n7-7\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
    // A client that leaves while blocked is no longer counted.
    waiter.send(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
    while !blocked(&mut other) {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(waiter);
    while blocked(&mut other) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // In a transaction a blocking read answers at once.
    let mut client = Client::connect(server.addr);
    assert_eq!(client.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(
        client.call(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]),
        "+QUEUED\r\n"
    );
    assert_eq!(client.call(&["EXEC"]), "*1\r\n*-1\r\n");
}

/// As in Redis 7: DEL ends a blocked XREADGROUP with an error, while a
/// blocked XREAD goes on waiting and reads the stream made again.
#[test]
fn deleting_a_stream_fails_a_blocked_group_read_but_not_a_plain_one() {
    let server = orcastra(ServerOptions::default());
    let mut other = Client::connect(server.addr);
    assert_eq!(
        other.call(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]),
        "+OK\r\n"
    );
    let mut group_reader = Client::connect(server.addr);
    group_reader.send(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "BLOCK",
        "0",
        "STREAMS",
        "s",
        ">",
    ]);
    let mut reader = Client::connect(server.addr);
    reader.send(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
    while !other
        .call(&["INFO", "clients"])
        .contains("blocked_clients:2\r\n")
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(other.call(&["DEL", "s"]), ":1\r\n");
    assert_eq!(
        group_reader.reply(),
        "-UNBLOCKED the stream key no longer exists\r\n"
    );
    assert_eq!(other.call(&["XADD", "s", "7-7", "a", "b"]), "$3\r\n7-7\r\n");
    assert_eq!(
        reader.reply(),
        "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n7-7\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
}

#[test]
fn redis_cli_works_unchanged() {
    let server = orcastra(ServerOptions::default());
    let cli = |args: &[&str]| {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &server.addr.port().to_string()])
            .args(args)
            .output()
            .expect("redis-cli from redis-tools on PATH");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(cli(&["XADD", "jobs", "1-1", "url", "a b"]), "1-1\n");
    assert!(cli(&["XADD", "jobs", "*", "url", "c"]).ends_with("-0\n"));
    assert_eq!(cli(&["XLEN", "jobs"]), "2\n");
    assert_eq!(cli(&["XRANGE", "jobs", "-", "1-1"]), "1-1\nurl\na b\n");
    assert_eq!(cli(&["XGROUP", "CREATE", "jobs", "g", "0"]), "OK\n");
    assert_eq!(
        cli(&[
            "--no-raw",
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "jobs",
            ">"
        ]),
        "1) 1) \"jobs\"\n   2) 1) 1) \"1-1\"\n         2) 1) \"url\"\n            2) \"a b\"\n"
    );
    assert_eq!(
        cli(&["-3", "XPENDING", "jobs", "g"]).lines().next(),
        Some("1")
    );
    assert!(cli(&["INFO", "server"]).contains("redis_version:7."));
    assert_eq!(
        cli(&["NOSUCH"]).trim_end(),
        "ERR unknown command 'NOSUCH', with args beginning with:"
    );
    // The interactive mode reads commands from stdin, as a person types them.
    let mut child = Command::new("redis-cli")
        .args(["-p", &server.addr.port().to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"XLEN jobs\nDBSIZE\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "2\n1\n");
}

#[test]
fn redis_benchmark_runs_against_the_server() {
    let server = orcastra(ServerOptions::default());
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &server.addr.port().to_string()])
        .args(["-n", "2000", "-c", "4", "-P", "4", "-q"])
        .args(["XADD", "bench", "*", "field", "__rand_int__"])
        .output()
        .expect("redis-benchmark from redis-tools on PATH");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("requests per second"),
        "{output:?}"
    );
    let mut client = Client::connect(server.addr);
    assert_eq!(client.call(&["XLEN", "bench"]), ":2000\r\n");
}

/// Words commands are made of, so that random requests reach deep into
/// argument parsing. (No BLOCK: a random blocking read could wait forever;
/// no QUIT or RESET, which end or reset the session on purpose.)
const WORDS: &[&str] = &[
    "XADD",
    "XRANGE",
    "XREVRANGE",
    "XLEN",
    "XDEL",
    "XTRIM",
    "XREAD",
    "XREADGROUP",
    "XACK",
    "XPENDING",
    "XCLAIM",
    "XAUTOCLAIM",
    "XGROUP",
    "XINFO",
    "XSETID",
    "DEL",
    "EXISTS",
    "TYPE",
    "KEYS",
    "SCAN",
    "DBSIZE",
    "CLIENT",
    "CONFIG",
    "COMMAND",
    "INFO",
    "PING",
    "ECHO",
    "SELECT",
    "HELLO",
    "MULTI",
    "EXEC",
    "DISCARD",
    "CREATE",
    "SETID",
    "DESTROY",
    "CREATECONSUMER",
    "DELCONSUMER",
    "STREAM",
    "GROUPS",
    "CONSUMERS",
    "FULL",
    "COUNT",
    "STREAMS",
    "GROUP",
    "NOACK",
    "MAXLEN",
    "MINID",
    "LIMIT",
    "~",
    "=",
    "*",
    "$",
    ">",
    "-",
    "+",
    "NOMKSTREAM",
    "MKSTREAM",
    "IDLE",
    "TIME",
    "RETRYCOUNT",
    "FORCE",
    "JUSTID",
    "LASTID",
    "ENTRIESREAD",
    "ENTRIESADDED",
    "MAXDELETEDID",
    "MATCH",
    "GET",
    "SET",
    "LIST",
    "ID",
    "SETNAME",
    "GETNAME",
    "HELP",
    "s",
    "t",
    "g",
    "c",
    "0",
    "1",
    "2",
    "3",
    "-1",
    "1-1",
    "5-0",
    "(1-1",
    "0-0",
    "18446744073709551615",
    "18446744073709551615-18446744073709551615",
    "99999999999999999999",
    "x",
    "",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Random requests built from command words: every one gets exactly
    /// one reply and the connection stays usable.
    #[test]
    fn random_requests_get_one_reply_each(
        requests in proptest::collection::vec(
            proptest::collection::vec(proptest::sample::select(WORDS), 1..9),
            1..40,
        )
    ) {
        static SERVER: std::sync::OnceLock<Orcastra> = std::sync::OnceLock::new();
        let server = SERVER.get_or_init(|| orcastra(ServerOptions::default()));
        let mut client = Client::connect(server.addr);
        for request in &requests {
            let reply = client.call(request);
            proptest::prop_assert!(!reply.is_empty());
        }
        client.call(&["DISCARD"]);
        proptest::prop_assert_eq!(client.call(&["PING"]), "+PONG\r\n");
    }
}
