//! Crash test of workers: real worker processes on a segment-log data
//! directory are killed with SIGKILL in the middle of their tasks, again and
//! again; a last worker reclaims and finishes what they left. Then every
//! submitted task (40 per kill) has exactly one final state, `succeeded`
//! with its result: none lost, none finished twice. Then a task that
//! aborts its worker process the moment it runs kills exactly as many
//! workers as its `max_deliveries` allows before one moves it to the dead
//! letters. Then a worker process gets SIGTERM while a task runs: it lets
//! the task finish, acknowledges it and exits cleanly.
//!
//! This file has its own `main` (`harness = false`): run with no arguments
//! it is the test (`ORCASTRA_CRASH_ITERATIONS` sets the number of kills,
//! default 8); `--submit DIR TASKS`, `--work DIR`, `--finish DIR`,
//! `--submit-fatal DIR`, `--fatal DIR` and `--until-signal DIR` are the
//! children.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orcastra::log::{FsyncPolicy, LogOptions};
use orcastra::prelude::*;
use orcastra::streams::{Bound, Streams, field};
use orcastra::task::TaskId;

/// Tasks per kill: enough that every worker is killed mid-work.
const TASKS_PER_KILL: u64 = 40;
const LEASE: Duration = Duration::from_millis(300);

#[orca_task(queue = "crash")]
async fn double(n: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..30))).await;
    n * 2
}

async fn open(dir: &Path) -> Orcastra {
    let options = LogOptions::default().fsync(FsyncPolicy::Batch);
    Orcastra::open_with(dir.to_str().unwrap(), options)
        .await
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = |at: usize| Path::new(&args[at + 1]).to_path_buf();
    if let Some(at) = args.iter().position(|a| a == "--submit") {
        let tasks = args[at + 2].parse().expect("--submit DIR TASKS");
        runtime.block_on(submit(&dir(at), tasks));
    } else if let Some(at) = args.iter().position(|a| a == "--work") {
        runtime.block_on(work(&dir(at)));
    } else if let Some(at) = args.iter().position(|a| a == "--finish") {
        runtime.block_on(finish(&dir(at)));
    } else if let Some(at) = args.iter().position(|a| a == "--submit-fatal") {
        runtime.block_on(submit_fatal(&dir(at)));
    } else if let Some(at) = args.iter().position(|a| a == "--fatal") {
        runtime.block_on(work_fatal(&dir(at)));
    } else if let Some(at) = args.iter().position(|a| a == "--until-signal") {
        runtime.block_on(until_signal(&dir(at)));
    } else if !args.iter().any(|a| a == "--list") {
        let kills = std::env::var("ORCASTRA_CRASH_ITERATIONS")
            .map(|n| n.parse().expect("ORCASTRA_CRASH_ITERATIONS is a number"))
            .unwrap_or(8);
        let tasks = runtime.block_on(parent(kills));
        println!("tasks_crash: {kills} worker kills survived, {tasks} tasks finished once each");
        runtime.block_on(an_aborting_task_kills_max_deliveries_workers());
        println!("tasks_crash: a task that aborts its worker went to the dead letters");
        runtime.block_on(sigterm_stops_gracefully());
        println!("tasks_crash: SIGTERM let the running task finish");
    }
}

/// Submits the tasks and prints their ids.
async fn submit(dir: &Path, tasks: u64) {
    let orca = open(dir).await;
    let mut out = std::io::stdout().lock();
    for n in 0..tasks {
        let handle = double::submit(&orca, n).await.unwrap();
        writeln!(out, "{} {n}", handle.id()).unwrap();
    }
}

/// A worker of the crash test's tasks.
async fn start_worker(orca: &Orcastra) -> orcastra::worker::Worker {
    orca.worker()
        .concurrency(8)
        .lease(LEASE)
        .register(double::task())
        .start()
        .await
        .unwrap()
}

/// Works until killed.
async fn work(dir: &Path) {
    let orca = open(dir).await;
    let _worker = start_worker(&orca).await;
    std::future::pending::<()>().await;
}

/// Works until every task has ended, then stops gracefully.
async fn finish(dir: &Path) {
    let orca = open(dir).await;
    let ids: Vec<TaskId> = std::fs::read_to_string(dir.join("ids"))
        .unwrap()
        .lines()
        .map(|line| line.split(' ').next().unwrap().parse().unwrap())
        .collect();
    let worker = start_worker(&orca).await;
    while !ids
        .iter()
        .all(|&id| orca.state(id).is_some_and(|s| s.state.is_final()))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.stop().await;
}

/// A poison pill that no panic handler catches: it aborts its process.
#[orca_task(queue = "fatal", max_deliveries = 2)]
async fn fatal() {
    std::process::abort();
}

/// Submits `fatal` and writes its id to `DIR/fatal`.
async fn submit_fatal(dir: &Path) {
    let orca = open(dir).await;
    let handle = fatal::submit(&orca).await.unwrap();
    std::fs::write(dir.join("fatal"), handle.id().to_string()).unwrap();
}

/// Works on `fatal` until the task has ended (or the task aborts it).
async fn work_fatal(dir: &Path) {
    let orca = open(dir).await;
    let id: TaskId = std::fs::read_to_string(dir.join("fatal"))
        .unwrap()
        .parse()
        .unwrap();
    let worker = orca
        .worker()
        .lease(LEASE)
        .register(fatal::task())
        .start()
        .await
        .unwrap();
    while !orca.state(id).is_some_and(|s| s.state.is_final()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.stop().await;
}

/// Each delivery of `fatal` kills its worker the moment it starts: every
/// delivery counts all the same (the first is read without waiting for its
/// fsync, but written before the read returns; `streams_durability` pins
/// that), so the third worker finds it delivered three times and moves it
/// to the dead letters.
async fn an_aborting_task_kills_max_deliveries_workers() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    assert!(child("--submit-fatal", dir, &[]).wait().unwrap().success());
    let mut aborted = 0;
    while !child("--fatal", dir, &[]).wait().unwrap().success() {
        aborted += 1;
        assert!(
            aborted <= 2,
            "the task killed {aborted} workers: a crash loop"
        );
    }
    assert_eq!(aborted, 2, "a worker finished before the task killed two");
    let orca = open(dir).await;
    let id = std::fs::read_to_string(dir.join("fatal")).unwrap();
    let ended = orca.handle::<()>(id.parse().unwrap()).result().await;
    let failure = ended.unwrap().unwrap_err();
    assert_eq!(failure.state, State::Dead);
    assert!(
        failure.message.contains("delivered 3 times"),
        "{}",
        failure.message
    );
}

/// A worker that runs until SIGINT or SIGTERM; prints `running` once its
/// task runs, so the parent knows when to signal.
#[orca_task(queue = "signals")]
async fn announced(millis: u64) -> u64 {
    println!("running");
    tokio::time::sleep(Duration::from_millis(millis)).await;
    millis
}

async fn until_signal(dir: &Path) {
    let orca = open(dir).await;
    let worker = orca
        .worker()
        .register(announced::task())
        .start()
        .await
        .unwrap();
    let stopped = worker.stop_on_signal(Duration::from_secs(30)).unwrap();
    announced::submit(&orca, 300).await.unwrap();
    stopped.await;
}

/// SIGTERM while a task runs: the worker stops fetching, lets the task
/// finish, and exits cleanly.
async fn sigterm_stops_gracefully() {
    let temp = tempfile::tempdir().unwrap();
    let mut worker = child("--until-signal", temp.path(), &[]);
    let mut lines = BufReader::new(worker.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "running");
    let sent = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(
        worker.wait().unwrap().success(),
        "the worker did not exit cleanly"
    );
    let orca = open(temp.path()).await;
    let events = orca
        .streams()
        .range("orca:states", Bound::Min, Bound::Max, None)
        .await
        .unwrap();
    let succeeded = events
        .iter()
        .filter(|e| field(&e.fields, "state").is_some_and(|v| v == "succeeded"))
        .count();
    assert_eq!(succeeded, 1, "the running task did not finish");
    let pending = orca
        .streams()
        .pending_summary("orca:queue:signals", "workers");
    assert_eq!(pending.await.unwrap().count, 0, "it exited before its ack");
}

fn child(mode: &str, dir: &Path, extra: &[String]) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .arg(mode)
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Runs the kills; returns how many tasks there were.
async fn parent(kills: usize) -> u64 {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let tasks = TASKS_PER_KILL * kills.max(1) as u64;

    let mut submitter = child("--submit", dir, &[tasks.to_string()]);
    let ids: Vec<(TaskId, u64)> = BufReader::new(submitter.stdout.take().unwrap())
        .lines()
        .map(|line| {
            let line = line.unwrap();
            let (id, n) = line.split_once(' ').unwrap();
            (id.parse().unwrap(), n.parse().unwrap())
        })
        .collect();
    assert!(submitter.wait().unwrap().success());
    assert_eq!(ids.len() as u64, tasks);
    let listing: String = ids.iter().map(|(id, n)| format!("{id} {n}\n")).collect();
    std::fs::write(dir.join("ids"), listing).unwrap();

    let mut rng = fastrand::Rng::new();
    for _ in 0..kills {
        let mut worker = child("--work", dir, &[]);
        std::thread::sleep(Duration::from_millis(rng.u64(100..500)));
        worker.kill().unwrap();
        worker.wait().unwrap();
    }
    let mut finisher = child("--finish", dir, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = finisher.try_wait().unwrap() {
            assert!(status.success(), "the finishing worker failed");
            break;
        }
        if Instant::now() > deadline {
            finisher.kill().unwrap();
            panic!("the finishing worker did not finish every task in 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Every task: exactly one final state, succeeded, with its result.
    let orca = open(dir).await;
    let events = orca
        .streams()
        .range("orca:states", Bound::Min, Bound::Max, None)
        .await
        .unwrap();
    let mut finals: HashMap<String, Vec<(String, Option<String>)>> = HashMap::new();
    let mut runs = 0;
    for event in &events {
        let text =
            |name| field(&event.fields, name).map(|v| String::from_utf8_lossy(v).into_owned());
        let state = text("state").unwrap();
        // An event of several tasks lists them in `ids`.
        let tasks = text("id").or_else(|| text("ids")).unwrap();
        for id in tasks.split(',') {
            runs += usize::from(state == "running");
            if ["succeeded", "failed", "dead", "cancelled"].contains(&state.as_str()) {
                let end = (state.clone(), text("result"));
                finals.entry(id.to_string()).or_default().push(end);
            }
        }
    }
    // The kills interrupted runs, which ran again elsewhere.
    assert!(runs > ids.len(), "no run was interrupted: {runs} runs");
    for (id, n) in &ids {
        let ends = finals.get(&id.to_string()).cloned().unwrap_or_default();
        assert_eq!(
            ends,
            vec![("succeeded".to_string(), Some((n * 2).to_string()))],
            "task {id} ({n})"
        );
    }
    tasks
}
