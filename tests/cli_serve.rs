//! The client commands of the `orcastra` binary (submit, status, queues,
//! tail, groups, pending, dead) against a real `orcastra serve`, run as a
//! user would run them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

mod common;
use common::resp::Client;

/// A running `orcastra serve` with its two addresses.
struct Served {
    child: Child,
    resp: SocketAddr,
    http: String,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_orcastra"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--data")
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut resp = None;
    let http = loop {
        let line = lines.next().expect("orcastra serve exited").unwrap();
        if let Some(rest) = line.strip_prefix("orcastra serve: listening on ") {
            resp = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
        }
        if let Some(addr) = line.strip_prefix("orcastra serve: http on ") {
            break format!("http://{addr}");
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Served {
        child,
        resp: resp.expect("the RESP address comes first"),
        http,
        _dir: dir,
    }
}

fn orcastra(server: &Served, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orcastra"))
        .args(args)
        .env("ORCASTRA_SERVER", &server.http)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).unwrap()
}

fn error(output: &Output) -> String {
    assert!(!output.status.success(), "{output:?}");
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn client_commands_work_against_a_running_server() {
    let server = serve();
    let id = stdout(&orcastra(
        &server,
        &["submit", "resize", r#"["cat.png", 200]"#, "--queue", "img"],
    ));
    let id = id.trim();
    let state = json(&orcastra(&server, &["status", id]));
    assert_eq!(state["state"], "queued");
    assert_eq!(state["name"], "resize");

    let queues = stdout(&orcastra(&server, &["queues"]));
    let row: Vec<&str> = queues.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["img", "1", "0", "0"]);

    let groups = json(&orcastra(&server, &["groups", "orca:queue:img"]));
    assert_eq!(groups[0]["name"], "workers");
    assert_eq!(groups[0]["lag"], 1);
    let pending = json(&orcastra(
        &server,
        &["pending", "orca:queue:img", "workers"],
    ));
    assert_eq!(pending, Value::Array(Vec::new()));

    // Two dead letters written as a worker would; one requeued, one dropped.
    let mut redis = Client::connect(server.resp);
    for reason in ["first", "second"] {
        let added = redis.call(&[
            "XADD",
            "orca:dead:img",
            "*",
            "task",
            "garbage",
            "reason",
            reason,
        ]);
        assert!(added.starts_with('$'), "{added}");
    }
    let dead = json(&orcastra(&server, &["dead", "list", "img"]));
    assert_eq!(dead[0]["reason"], "first");
    assert_eq!(dead[1]["reason"], "second");
    let first = dead[0]["entry"].as_str().unwrap();
    let requeued = orcastra(&server, &["dead", "requeue", "img", first]);
    assert!(error_free(&requeued).contains("requeued 1 dead letters of queue img"));
    let dropped = orcastra(&server, &["dead", "drop", "img", "--all"]);
    assert!(error_free(&dropped).contains("dropped 1 dead letters of queue img"));
    assert_eq!(
        json(&orcastra(&server, &["dead", "list", "img"])),
        Value::Array(Vec::new())
    );

    // The requeued letter is back in the queue as it came.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_orcastra"))
        .args(["tail", "--stream", "orca:queue:img", "--from", "0"])
        .env("ORCASTRA_SERVER", &server.http)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let entries: Vec<Value> = (0..2)
        .map(|_| serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap())
        .collect();
    tail.kill().unwrap();
    tail.wait().unwrap();
    assert!(entries[0]["fields"]["task"].is_string());
    assert_eq!(entries[1]["fields"]["task"], "garbage");
    assert!(entries[1]["fields"].get("reason").is_none());

    // Bad input: clear errors, exit status 1.
    assert!(error(&orcastra(&server, &["submit", "resize", "[oops"])).contains("not JSON"));
    assert!(error(&orcastra(&server, &["submit", "resize", "{}"])).contains("JSON array"));
    assert!(error(&orcastra(&server, &["status", "nope"])).contains("not a task id: nope"));
    assert!(error(&orcastra(&server, &["groups", "missing"])).contains("no stream missing"));
    let unreachable = Command::new(env!("CARGO_BIN_EXE_orcastra"))
        .args(["queues", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(error(&unreachable).contains("cannot reach orcastra serve"));
}

#[test]
fn submit_wait_follows_the_task_to_its_end() {
    let server = serve();
    let mut waiting = Command::new(env!("CARGO_BIN_EXE_orcastra"))
        .args(["submit", "later", "[]", "--delay-ms", "600000", "--wait"])
        .env("ORCASTRA_SERVER", &server.http)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(waiting.stdout.take().unwrap());
    let mut id = String::new();
    stdout.read_line(&mut id).unwrap();
    let cancelled = cancel_over_http(&server.http, id.trim());
    assert!(cancelled, "the task could not be cancelled");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let last: Value = serde_json::from_str(&rest).unwrap();
    assert_eq!(last["state"], "cancelled");
    // Not succeeded: exit status 1.
    assert_eq!(waiting.wait().unwrap().code(), Some(1));
}

fn error_free(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Cancels a task over the HTTP API from a synchronous test.
fn cancel_over_http(base: &str, id: &str) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("{base}/tasks/{id}/cancel");
        // The server may not have seen the task's state yet.
        for _ in 0..500 {
            let reply = reqwest::Client::new().post(&url).send().await.unwrap();
            if reply.status() == 200 {
                let body: Value = reply.json().await.unwrap();
                return body["cancelled"] == true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    })
}

/// A short `orcastra bench`: both servers started, every workload measured
/// on both, each row with its ratio.
#[cfg(feature = "redis")]
#[test]
fn bench_compares_both_servers() {
    let output = Command::new(env!("CARGO_BIN_EXE_orcastra"))
        .args([
            "bench",
            "--runs",
            "1",
            "--requests",
            "2000",
            "--tasks",
            "200",
        ])
        .args(["--clients", "4", "--fsync", "interval"])
        .output()
        .unwrap();
    let table = stdout(&output);
    assert!(table.contains("orcastra serve: 127.0.0.1:"), "{table}");
    assert!(table.contains("(appendfsync everysec)"), "{table}");
    for workload in ["XADD", "XREADGROUP + XACK", "no-op tasks end to end"] {
        let row = table
            .lines()
            .find(|line| line.starts_with(&format!("| {workload}")))
            .unwrap_or_else(|| panic!("no {workload} row in\n{table}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cells[2].parse::<f64>().unwrap() > 0.0, "{row}");
        assert!(cells[3].parse::<f64>().unwrap() > 0.0, "{row}");
        assert!(cells[4].ends_with('x'), "{row}");
    }
}
