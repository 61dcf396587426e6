//! `orcastra serve` killed with SIGKILL under load, then restarted on the
//! same data directory: every XADD it acknowledged is there with its
//! fields, every XACK it acknowledged stays acknowledged, and every entry
//! delivered but not acknowledged is still pending.
//!
//! `ORCASTRA_SERVE_CRASH_ITERATIONS` sets the number of kills (default 3).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

mod common;
use common::resp::Client;

/// A running `orcastra serve`.
struct Served {
    child: Child,
    addr: SocketAddr,
}

/// A failed check must not leave the server running (it would hold the
/// test's output open).
impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orcastra"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "off",
            "--fsync",
            "batch",
            "--data",
        ])
        .arg(data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("orcastra serve exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("orcastra serve: listening on ") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep reading, so the server never blocks on a full stderr pipe.
    thread::spawn(move || lines.for_each(drop));
    Served { child, addr }
}

/// Whether a line of a raw reply is an entry id (values here never look
/// like ids).
fn is_id(line: &str) -> bool {
    line.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit())
    })
}

/// The entry ids in a raw reply.
fn ids_in(reply: &str) -> Vec<String> {
    reply
        .lines()
        .filter(|line| is_id(line))
        .map(str::to_string)
        .collect()
}

/// Every entry of stream `s`, id → value, read in pages: one call per
/// check, not one per entry, so long soaks stay linear.
fn entries(client: &mut Client) -> BTreeMap<String, String> {
    let mut stored = BTreeMap::new();
    let mut from = "-".to_string();
    loop {
        let reply = client.call(&["XRANGE", "s", &from, "+", "COUNT", "10000"]);
        // Each entry is `$n id *2 $1 v $m value`, one line each.
        let lines: Vec<&str> = reply.split("\r\n").collect();
        let mut last = None;
        for (i, line) in lines.iter().enumerate().filter(|(_, line)| is_id(line)) {
            stored.insert(line.to_string(), lines[i + 5].to_string());
            last = Some(line);
        }
        let Some(last) = last else {
            return stored;
        };
        from = format!("({last}");
    }
}

#[derive(Default)]
struct Acknowledged {
    /// XADDs: id → value.
    adds: BTreeMap<String, String>,
    /// Delivered to the group: `Some(false)` not acknowledged yet, `None`
    /// an XACK sent without a reply (killed meanwhile), `Some(true)` an
    /// XACK acknowledged.
    delivered: BTreeMap<String, Option<bool>>,
}

fn check(addr: SocketAddr, acknowledged: &Acknowledged) {
    let mut client = Client::connect(addr);
    let stored = entries(&mut client);
    for (id, value) in &acknowledged.adds {
        assert_eq!(
            stored.get(id),
            Some(value),
            "acknowledged XADD {id} = {value} lost"
        );
    }
    let pending: BTreeSet<String> =
        ids_in(&client.call(&["XPENDING", "s", "g", "-", "+", "100000000"]))
            .into_iter()
            .collect();
    for (id, acked) in &acknowledged.delivered {
        match acked {
            Some(true) => assert!(!pending.contains(id), "acknowledged XACK of {id} undone"),
            Some(false) => assert!(pending.contains(id), "delivered {id} no longer pending"),
            None => {}
        }
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_of_the_server() {
    let iterations: u32 = std::env::var("ORCASTRA_SERVE_CRASH_ITERATIONS")
        .map(|n| n.parse().expect("a number of kills"))
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    for round in 0..iterations {
        let mut server = serve(dir.path());
        let mut admin = Client::connect(server.addr);
        if round == 0 {
            let created = admin.call(&["XGROUP", "CREATE", "s", "g", "0", "MKSTREAM"]);
            assert_eq!(created, "+OK\r\n");
        }
        check(server.addr, &acknowledged.lock().unwrap());

        let killed = Arc::new(AtomicBool::new(false));
        let mut load = Vec::new();
        for producer in 0..4 {
            let (acknowledged, killed) = (Arc::clone(&acknowledged), Arc::clone(&killed));
            let addr = server.addr;
            load.push(thread::spawn(move || {
                let mut client = Client::connect(addr);
                for i in 0.. {
                    let value = format!("p{producer}r{round}i{i}");
                    match client.try_call(&["XADD", "s", "*", "v", &value]) {
                        Ok(reply) => {
                            let id = ids_in(&reply).pop().expect("XADD replies an id");
                            acknowledged.lock().unwrap().adds.insert(id, value);
                        }
                        Err(_) if killed.load(Ordering::SeqCst) => return,
                        Err(e) => panic!("the server failed before it was killed: {e}"),
                    }
                }
            }));
        }
        let (consumer_acks, consumer_killed) = (Arc::clone(&acknowledged), Arc::clone(&killed));
        let addr = server.addr;
        load.push(thread::spawn(move || {
            let mut client = Client::connect(addr);
            let read = [
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "COUNT",
                "20",
                "STREAMS",
                "s",
                ">",
            ];
            for batch in 0.. {
                let outcome = client.try_call(&read).and_then(|reply| {
                    let ids = ids_in(&reply);
                    let mut state = consumer_acks.lock().unwrap();
                    for id in &ids {
                        state.delivered.insert(id.clone(), Some(false));
                    }
                    // Every third batch stays pending.
                    if ids.is_empty() || batch % 3 == 0 {
                        return Ok(());
                    }
                    for id in &ids {
                        state.delivered.insert(id.clone(), None);
                    }
                    drop(state);
                    let mut ack = vec!["XACK", "s", "g"];
                    ack.extend(ids.iter().map(String::as_str));
                    client.try_call(&ack)?;
                    let mut state = consumer_acks.lock().unwrap();
                    for id in ids {
                        state.delivered.insert(id, Some(true));
                    }
                    Ok(())
                });
                match outcome {
                    Ok(()) => {}
                    Err(_) if consumer_killed.load(Ordering::SeqCst) => return,
                    Err(e) => panic!("the server failed before it was killed: {e}"),
                }
            }
        }));
        thread::sleep(Duration::from_millis(200 + fastrand::u64(0..400)));
        killed.store(true, Ordering::SeqCst);
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        for thread in load {
            thread.join().unwrap();
        }
    }
    let server = serve(dir.path());
    let acknowledged = acknowledged.lock().unwrap();
    assert!(
        acknowledged.adds.len() > 100
            && acknowledged
                .delivered
                .values()
                .any(|acked| *acked == Some(true))
            && acknowledged
                .delivered
                .values()
                .any(|acked| *acked == Some(false)),
        "too little load to test anything: {} adds",
        acknowledged.adds.len()
    );
    check(server.addr, &acknowledged);
}
