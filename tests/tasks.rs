//! Tasks end to end: submit, run on a worker, record the state, await the
//! result, over the memory and segment backends, and Redis with the `redis`
//! feature (a server of each test's own).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use orcastra::log::storage::SimStorage;
use orcastra::log::{FsyncPolicy, LogOptions};
use orcastra::prelude::*;
use orcastra::streams::{AddOptions, Bound, Clock, GroupStart, Streams, field};
use orcastra::task::{Envelope, TaskId};
use orcastra::{Orcastra, StreamId, TaskFailure};
use tempfile::TempDir;
use tokio::sync::Semaphore;

mod common;

#[orca_task(queue = "math", retries = 2, backoff = "10ms")]
async fn divide(a: i64, b: i64) -> Result<i64, String> {
    if b == 0 {
        return Err(format!("cannot divide {a} by zero"));
    }
    Ok(a / b)
}

#[orca_task(queue = "math", retries = 0)]
async fn explode(message: String) -> u32 {
    panic!("{message}");
}

#[orca_task(queue = "math", timeout = "50ms", retries = 0)]
async fn sleepy(millis: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    millis
}

/// Runs until the test lets it go; counts how many run at once.
static GATE: Semaphore = Semaphore::const_new(0);
static RUNNING: AtomicUsize = AtomicUsize::new(0);

#[orca_task(queue = "gated")]
async fn gated(n: u32) -> u32 {
    RUNNING.fetch_add(1, Ordering::SeqCst);
    GATE.acquire().await.unwrap().forget();
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    n
}

/// Calls of the tasks below, by key: each test uses keys of its own.
static CALLS: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Default::default);

fn calls(key: &str) -> usize {
    CALLS.lock().unwrap().get(key).copied().unwrap_or(0)
}

fn count_call(key: &str) -> usize {
    let mut calls = CALLS.lock().unwrap();
    let n = calls.entry(key.to_string()).or_default();
    *n += 1;
    *n
}

/// Hangs (as if its worker died) on its first `hangs` calls; then returns
/// which call it was.
#[orca_task(queue = "leases")]
async fn stubborn(key: String, hangs: usize) -> usize {
    let call = count_call(&key);
    if call <= hangs {
        std::future::pending::<()>().await;
    }
    call
}

#[orca_task(queue = "leases")]
async fn slow(key: String, millis: u64) -> usize {
    let call = count_call(&key);
    tokio::time::sleep(Duration::from_millis(millis)).await;
    call
}

#[orca_task(queue = "leases", max_deliveries = 2)]
async fn poison(key: String) {
    count_call(&key);
    std::future::pending::<()>().await;
}

/// When each call of a key began.
static STARTS: LazyLock<Mutex<HashMap<String, Vec<Instant>>>> = LazyLock::new(Default::default);

fn starts(key: &str) -> Vec<Instant> {
    STARTS.lock().unwrap().get(key).cloned().unwrap_or_default()
}

/// Fails its first `failures` calls, then returns which call it was.
#[orca_task(queue = "timing", retries = 3, backoff = "40ms")]
async fn flaky(key: String, failures: usize) -> Result<usize, String> {
    STARTS
        .lock()
        .unwrap()
        .entry(key.clone())
        .or_default()
        .push(Instant::now());
    let call = count_call(&key);
    if call <= failures {
        return Err(format!("failure {call}"));
    }
    Ok(call)
}

/// Waits to be cancelled, and says so.
#[orca_task(queue = "timing")]
async fn patient(key: String, context: TaskContext) -> Result<(), String> {
    count_call(&key);
    context.cancelled().await;
    count_call(&format!("{key}-saw-cancel"));
    Err("stopped".into())
}

/// Reports progress, then waits for the gate.
static PROGRESS_GATE: Semaphore = Semaphore::const_new(0);

#[orca_task(queue = "timing")]
async fn reporting(steps: u32, context: TaskContext) -> u32 {
    context
        .report_progress(&serde_json::json!({"done": 1, "of": steps}))
        .unwrap();
    PROGRESS_GATE.acquire().await.unwrap().forget();
    steps
}

/// The order tasks ran in, by key: each records its tag.
static ORDER: LazyLock<Mutex<HashMap<String, Vec<String>>>> = LazyLock::new(Default::default);

fn order(key: &str) -> Vec<String> {
    ORDER.lock().unwrap().get(key).cloned().unwrap_or_default()
}

fn record_order(key: String, tag: String) {
    ORDER.lock().unwrap().entry(key).or_default().push(tag);
}

#[orca_task(queue = "ranked")]
async fn ranked(key: String, tag: String) {
    record_order(key, tag);
}

#[orca_task(queue = "heavy")]
async fn heavy(key: String) {
    record_order(key, "heavy".into());
}

#[orca_task(queue = "light")]
async fn light(key: String) {
    record_order(key, "light".into());
}

/// Gates of the `held` task, by key.
static HOLDS: LazyLock<Mutex<HashMap<String, std::sync::Arc<Semaphore>>>> =
    LazyLock::new(Default::default);

fn hold(key: &str) -> std::sync::Arc<Semaphore> {
    let mut holds = HOLDS.lock().unwrap();
    let gate = holds.entry(key.to_string());
    std::sync::Arc::clone(gate.or_insert_with(|| std::sync::Arc::new(Semaphore::new(0))))
}

/// Runs until the test lets its key go; returns which call it was.
#[orca_task(queue = "held")]
async fn held(key: String) -> usize {
    let call = count_call(&key);
    hold(&key).acquire().await.unwrap().forget();
    call
}

/// When each call of a key began, on Tokio's clock (paused in a test).
static TOKIO_STARTS: LazyLock<Mutex<HashMap<String, Vec<tokio::time::Instant>>>> =
    LazyLock::new(Default::default);

/// Fails its first `failures` calls; retried after minutes.
#[orca_task(queue = "patient-retries", retries = 3, backoff = "1m")]
async fn reluctant(key: String, failures: usize) -> Result<usize, String> {
    let now = tokio::time::Instant::now();
    TOKIO_STARTS
        .lock()
        .unwrap()
        .entry(key.clone())
        .or_default()
        .push(now);
    let call = count_call(&key);
    if call <= failures {
        return Err(format!("failure {call}"));
    }
    Ok(call)
}

/// Wall-clock time that moves with Tokio's clock, paused or not.
struct TokioClock {
    start_ms: u64,
    start: tokio::time::Instant,
}

impl orcastra::streams::Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.start_ms + self.start.elapsed().as_millis() as u64
    }
}

/// Polls until `key` has been called `n` times.
async fn called(key: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while calls(key) < n {
        assert!(Instant::now() < deadline, "{key} was not called {n} times");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A worker of one task, with the defaults.
async fn worker_for<T: orcastra::task::Task>(s: &Subject, task: T) -> orcastra::worker::Worker {
    s.orca.worker().register(task).start().await.unwrap()
}

/// A worker of `divide` tasks running `concurrency` at once.
async fn dividers(orca: &Orcastra, concurrency: usize) -> orcastra::worker::Worker {
    orca.worker()
        .concurrency(concurrency)
        .register(divide::task())
        .start()
        .await
        .unwrap()
}

/// A backend under test, and what keeps its files or server alive.
struct Subject {
    orca: Orcastra,
    _dir: Option<TempDir>,
    _server: Option<common::redis_server::RedisServer>,
}

async fn memory() -> Subject {
    Subject {
        orca: Orcastra::open("memory://").await.unwrap(),
        _dir: None,
        _server: None,
    }
}

async fn segment() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let orca = Orcastra::open(dir.path().to_str().unwrap()).await.unwrap();
    Subject {
        orca,
        _dir: Some(dir),
        _server: None,
    }
}

#[cfg(feature = "redis")]
async fn redis() -> Subject {
    let server = common::redis_server::RedisServer::start();
    Subject {
        orca: Orcastra::open(&server.url()).await.unwrap(),
        _dir: None,
        _server: Some(server),
    }
}

async fn failure<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    handle: &orcastra::TaskHandle<T>,
) -> TaskFailure {
    handle.result().await.unwrap().unwrap_err()
}

async fn results_come_back(s: Subject) {
    let worker = dividers(&s.orca, 4).await;
    let handles: Vec<_> = submit_all((1..=20).map(|n| divide::submit(&s.orca, n * 10, 5))).await;
    for (n, handle) in (1..=20).zip(&handles) {
        assert_eq!(handle.result().await.unwrap().unwrap(), n * 2);
        let state = s.orca.state(handle.id()).unwrap();
        assert_eq!(state.state, State::Succeeded);
        assert!(state.worker.is_some());
    }
    worker.stop().await;
}

/// Submits one after another (each returns once queued).
async fn submit_all<F, T>(submits: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = Result<T, orcastra::Error>>,
{
    let mut handles = Vec::new();
    for submit in submits {
        handles.push(submit.await.unwrap());
    }
    handles
}

async fn errors_panics_and_timeouts_fail_the_task(s: Subject) {
    let worker = s
        .orca
        .worker()
        .concurrency(3)
        .register(divide::task())
        .register(explode::task())
        .register(sleepy::task())
        .start()
        .await
        .unwrap();
    let error = divide::submit(&s.orca, 1, 0).await.unwrap();
    let panic = explode::submit(&s.orca, "boom".into()).await.unwrap();
    let slow = sleepy::submit(&s.orca, 60_000).await.unwrap();
    let quick = sleepy::submit(&s.orca, 1).await.unwrap();

    let failed = failure(&error).await;
    assert_eq!(failed.state, State::Failed);
    assert_eq!(failed.message, "cannot divide 1 by zero");
    // Tried three times: the first run and its two retries.
    assert_eq!(s.orca.state(error.id()).unwrap().attempt, 2);
    let failed = failure(&panic).await;
    assert_eq!(failed.state, State::Failed);
    assert!(
        failed.message.contains("panicked: boom"),
        "{}",
        failed.message
    );
    let failed = failure(&slow).await;
    assert!(failed.message.contains("timed out"), "{}", failed.message);
    // The worker goes on after all of them.
    assert_eq!(quick.result().await.unwrap().unwrap(), 1);
    worker.stop().await;
}

async fn tasks_that_cannot_run_go_to_the_dead_letters(s: Subject) {
    // A worker that knows only `divide` gets a task it does not know,
    // arguments that do not decode, and an entry that is not a task.
    let worker = worker_for(&s, divide::task()).await;
    let unknown = explode::submit(&s.orca, "never".into()).await.unwrap();
    let streams = s.orca.streams();
    let bad_args = Envelope::new("divide", "math", &br#"["ten", 2]"#[..], 1);
    streams
        .add(
            "orca:queue:math",
            vec![(Bytes::from_static(b"task"), Bytes::from(bad_args.encode()))],
            AddOptions::default(),
        )
        .await
        .unwrap();
    // Garbage, and (found by the fuzzer) a message of one empty segment.
    for garbage in [&b"garbage"[..], &[0; 8]] {
        let fields = vec![(Bytes::from_static(b"task"), Bytes::from_static(garbage))];
        let added = streams.add("orca:queue:math", fields, AddOptions::default());
        added.await.unwrap();
    }
    let after = divide::submit(&s.orca, 9, 3).await.unwrap();
    assert_eq!(after.result().await.unwrap().unwrap(), 3);

    let failed = failure(&unknown).await;
    assert_eq!(failed.state, State::Dead);
    assert!(
        failed.message.contains("no task named \"explode\""),
        "{}",
        failed.message
    );
    let dead = streams
        .range("orca:dead:math", Bound::Min, Bound::Max, None)
        .await
        .unwrap();
    let reasons: Vec<String> = dead
        .iter()
        .map(|e| String::from_utf8_lossy(field(&e.fields, "reason").unwrap()).into_owned())
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("no task named"), "{reasons:?}");
    assert!(
        reasons[1].contains("arguments of task divide"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("not a task envelope"), "{reasons:?}");
    assert!(reasons[3].contains("not a task envelope"), "{reasons:?}");
    // Everything was acknowledged (a stopped worker has finished its runs):
    // nothing is left pending.
    worker.stop().await;
    let pending = streams
        .pending_summary("orca:queue:math", "workers")
        .await
        .unwrap();
    assert_eq!(pending.count, 0);
}

async fn a_worker_fetches_no_more_than_its_free_slots(s: Subject) {
    let worker = s
        .orca
        .worker()
        .concurrency(2)
        .register(gated::task())
        .start()
        .await
        .unwrap();
    let mut handles = Vec::new();
    for n in 0..5 {
        handles.push(gated::submit(&s.orca, n).await.unwrap());
    }
    let streams = s.orca.streams();
    // Two run and are pending; three wait in the queue, undelivered.
    while RUNNING.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    let pending = streams
        .pending_summary("orca:queue:gated", "workers")
        .await
        .unwrap();
    assert_eq!(pending.count, 2);
    GATE.add_permits(5);
    for (n, handle) in (0..).zip(&handles) {
        assert_eq!(handle.result().await.unwrap().unwrap(), n);
    }
    worker.stop().await;
}

fn leases(s: &Subject, lease_ms: u64) -> orcastra::worker::WorkerBuilder {
    s.orca
        .worker()
        .concurrency(4)
        .lease(Duration::from_millis(lease_ms))
        .register(stubborn::task())
        .register(slow::task())
        .register(poison::task())
}

async fn a_dead_workers_task_is_reclaimed_and_finished(s: Subject) {
    let key = format!("reclaimed-{}", TaskId::new());
    let first = leases(&s, 200).start().await.unwrap();
    let handle = stubborn::submit(&s.orca, key.clone(), 1).await.unwrap();
    called(&key, 1).await;
    drop(first); // dies: no more renewals
    let second = leases(&s, 200).start().await.unwrap();
    assert_eq!(handle.result().await.unwrap().unwrap(), 2);
    let state = s.orca.state(handle.id()).unwrap();
    assert_eq!(state.worker.as_deref(), Some(second.name()));
    second.stop().await;
}

async fn a_long_task_keeps_its_lease(s: Subject) {
    let key = format!("leased-{}", TaskId::new());
    let a = leases(&s, 300).start().await.unwrap();
    let b = leases(&s, 300).start().await.unwrap();
    // Four leases long: without renewals the other worker would run it too.
    let handle = slow::submit(&s.orca, key.clone(), 1200).await.unwrap();
    assert_eq!(handle.result().await.unwrap().unwrap(), 1);
    assert_eq!(calls(&key), 1);
    a.stop().await;
    b.stop().await;
}

async fn a_poison_pill_goes_to_the_dead_letters(s: Subject) {
    let key = format!("poison-{}", TaskId::new());
    let handle = poison::submit(&s.orca, key.clone()).await.unwrap();
    // Each worker takes it and dies with it.
    for delivery in 1..=2 {
        let worker = leases(&s, 100).start().await.unwrap();
        called(&key, delivery).await;
        drop(worker);
    }
    let last = leases(&s, 100).start().await.unwrap();
    let failed = failure(&handle).await;
    assert_eq!(failed.state, State::Dead);
    assert!(
        failed.message.contains("delivered 3 times"),
        "{}",
        failed.message
    );
    assert_eq!(calls(&key), 2);
    last.stop().await;
}

async fn stopping_releases_unfinished_tasks_at_once(s: Subject) {
    let key = format!("released-{}", TaskId::new());
    // Leases so long that only a release can hand the task over in time.
    let first = leases(&s, 60_000).start().await.unwrap();
    let handle = stubborn::submit(&s.orca, key.clone(), 1).await.unwrap();
    called(&key, 1).await;
    first.stop_within(Duration::from_millis(20)).await;
    let second = leases(&s, 60_000).start().await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), handle.result())
        .await
        .expect("the released task is taken over at once");
    assert_eq!(result.unwrap().unwrap(), 2);
    second.stop_within(Duration::ZERO).await;
}

async fn failures_are_retried_after_a_backoff(s: Subject) {
    let key = format!("flaky-{}", TaskId::new());
    let worker = worker_for(&s, flaky::task()).await;
    let handle = flaky::submit(&s.orca, key.clone(), 2).await.unwrap();
    assert_eq!(handle.result().await.unwrap().unwrap(), 3);
    assert_eq!(s.orca.state(handle.id()).unwrap().attempt, 2);
    // Retry n waits at least half of 40 ms × 2ⁿ.
    let starts = starts(&key);
    assert!(
        starts[1] - starts[0] >= Duration::from_millis(20),
        "{starts:?}"
    );
    assert!(
        starts[2] - starts[1] >= Duration::from_millis(40),
        "{starts:?}"
    );

    // Retries run out: the task fails with the last error.
    let key = format!("flaky-{}", TaskId::new());
    let handle = flaky::submit(&s.orca, key.clone(), 10).await.unwrap();
    let failed = failure(&handle).await;
    assert_eq!(
        (failed.state, failed.message.as_str()),
        (State::Failed, "failure 4")
    );
    worker.stop().await;
}

async fn delayed_tasks_run_on_time_and_once(s: Subject) {
    let key = format!("delayed-{}", TaskId::new());
    // Two workers, so that a task leased early or queued twice would run twice.
    let a = worker_for(&s, flaky::task()).await;
    let b = worker_for(&s, flaky::task()).await;
    let delay = Duration::from_millis(300);
    let submitted = Instant::now();
    let later = orcastra::SubmitOptions {
        delay: Some(delay),
        ..Default::default()
    };
    let handle = s
        .orca
        .submit_with(flaky::task(), (key.clone(), 0), later)
        .await
        .unwrap();
    assert_eq!(s.orca.state(handle.id()).unwrap().state, State::Scheduled);
    // Not in its queue, so no worker can take it early.
    assert_eq!(s.orca.streams().len("orca:queue:timing").await.unwrap(), 0);
    assert_eq!(handle.result().await.unwrap().unwrap(), 1);
    assert!(starts(&key)[0] - submitted >= delay);
    a.stop().await;
    b.stop().await;
    assert_eq!(calls(&key), 1);
}

async fn cancelled_tasks_never_run_and_running_ones_are_told(s: Subject) {
    let queued = format!("queued-{}", TaskId::new());
    let delayed = format!("delayed-{}", TaskId::new());
    let marker = format!("marker-{}", TaskId::new());
    let later = |ms| orcastra::SubmitOptions {
        delay: Some(Duration::from_millis(ms)),
        ..Default::default()
    };
    // Cancelled while queued (no worker yet) and while waiting for its time.
    let first = flaky::submit(&s.orca, queued.clone(), 0).await.unwrap();
    let second = s
        .orca
        .submit_with(flaky::task(), (delayed.clone(), 0), later(100))
        .await
        .unwrap();
    assert!(s.orca.cancel(first.id()).await.unwrap());
    assert!(s.orca.cancel(second.id()).await.unwrap());
    let worker = s
        .orca
        .worker()
        .concurrency(2)
        .register(flaky::task())
        .register(patient::task())
        .start()
        .await
        .unwrap();
    // Due after both: once it has run, they would have.
    let after = s
        .orca
        .submit_with(flaky::task(), (marker.clone(), 0), later(150))
        .await
        .unwrap();
    assert_eq!(after.result().await.unwrap().unwrap(), 1);
    for (handle, key) in [(&first, &queued), (&second, &delayed)] {
        assert_eq!(failure(handle).await.state, State::Cancelled);
        assert_eq!(calls(key), 0, "{key} ran");
    }
    assert!(!s.orca.cancel(after.id()).await.unwrap(), "it has ended");

    // Cancelled while running: the task sees it and ends cancelled.
    let key = format!("patient-{}", TaskId::new());
    let running = patient::submit(&s.orca, key.clone()).await.unwrap();
    called(&key, 1).await;
    assert!(s.orca.cancel(running.id()).await.unwrap());
    assert_eq!(failure(&running).await.state, State::Cancelled);
    called(&format!("{key}-saw-cancel"), 1).await;
    worker.stop().await;
    // Not retried, though it has retries left: its run ended `failed`.
    let states: Vec<String> = recorded_states(&s, running.id())
        .await
        .into_iter()
        .map(|(state, _)| state)
        .collect();
    let ended = |state: &str| states.iter().any(|s| s == state);
    assert!(ended("failed") && !ended("retrying"), "{states:?}");
}

/// The events of task `id` in `orca:states`: each state's name, and
/// whether it names when the run started.
async fn recorded_states(s: &Subject, id: TaskId) -> Vec<(String, bool)> {
    let events = s.orca.streams();
    let events = events.range("orca:states", Bound::Min, Bound::Max, None);
    let text = |fields: &[(Bytes, Bytes)], name| {
        field(fields, name).map(|value| String::from_utf8_lossy(value).into_owned())
    };
    (events.await.unwrap().into_iter())
        .filter(|event| {
            // An event of several tasks lists them in `ids`.
            let ids = text(&event.fields, "id").or_else(|| text(&event.fields, "ids"));
            ids.unwrap()
                .split(',')
                .any(|listed| listed == id.to_string())
        })
        .map(|event| {
            let state = text(&event.fields, "state").unwrap();
            (state, field(&event.fields, "started").is_some())
        })
        .collect()
}

async fn running_tasks_report_progress(s: Subject) {
    let worker = worker_for(&s, reporting::task()).await;
    let handle = reporting::submit(&s.orca, 4).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = s.orca.state(handle.id());
        if let Some(progress) = state.as_ref().and_then(|s| s.progress.clone()) {
            assert_eq!(state.unwrap().state, State::Running);
            assert_eq!(&progress[..], br#"{"done":1,"of":4}"#);
            break;
        }
        assert!(Instant::now() < deadline, "no progress reported");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    PROGRESS_GATE.add_permits(1);
    assert_eq!(handle.result().await.unwrap().unwrap(), 4);
    // The end keeps the last progress reported.
    let end = s.orca.state(handle.id()).unwrap();
    assert_eq!(end.progress.as_deref(), Some(&br#"{"done":1,"of":4}"#[..]));
    worker.stop().await;
    // A run that waits is recorded running as it starts.
    let events = recorded_states(&s, handle.id()).await;
    let expected = [
        ("queued", false),
        ("running", true),
        ("running", true),
        ("succeeded", true),
    ];
    assert_eq!(
        events,
        expected.map(|(state, started)| (state.into(), started))
    );
}

async fn priorities_come_first_but_never_starve_the_rest(s: Subject) {
    let key = format!("ranked-{}", TaskId::new());
    let at = |priority| orcastra::SubmitOptions {
        priority: Some(priority),
        ..Default::default()
    };
    // Queued before the worker starts: every fetch has all priorities to
    // choose from.
    let low = (0..5).map(|_| (key.clone(), "low".to_string()));
    let mut handles = s
        .orca
        .submit_many_with(ranked::task(), low, at(0))
        .await
        .unwrap();
    let high = (0..45).map(|_| (key.clone(), "high".to_string()));
    handles.extend(
        s.orca
            .submit_many_with(ranked::task(), high, at(3))
            .await
            .unwrap(),
    );
    let refused = s
        .orca
        .submit_with(ranked::task(), (key.clone(), "x".into()), at(4));
    assert!(matches!(refused.await, Err(orcastra::Error::Priority(4))));

    let worker = worker_for(&s, ranked::task()).await;
    for handle in &handles {
        handle.result().await.unwrap().unwrap();
    }
    let order = order(&key);
    assert_eq!(order.len(), 50);
    assert_eq!(order[0], "high");
    // The bound (worker::schedule): the lowest priority of a queue is
    // fetched first once in every 15 fetches, however many higher wait.
    for window in order[..45].chunks(15) {
        let lows = window.iter().filter(|tag| *tag == "low").count();
        assert_eq!(lows, 1, "{order:?}");
    }
    worker.stop().await;
}

async fn queues_are_served_by_weight(s: Subject) {
    let key = format!("weights-{}", TaskId::new());
    let options = orcastra::SubmitOptions::default();
    let heavies = (0..40).map(|_| (key.clone(),));
    let lights = (0..40).map(|_| (key.clone(),));
    s.orca
        .submit_many_with(heavy::task(), heavies, options.clone())
        .await
        .unwrap();
    s.orca
        .submit_many_with(light::task(), lights, options)
        .await
        .unwrap();
    let worker = s
        .orca
        .worker()
        .register(heavy::task())
        .register(light::task())
        .weight("heavy", 3)
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while order(&key).len() < 80 {
        assert!(Instant::now() < deadline, "{:?}", order(&key));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let order = order(&key);
    let heavy_first = order[..40].iter().filter(|tag| *tag == "heavy").count();
    assert_eq!(heavy_first, 30, "{order:?}");
    worker.stop().await;
}

async fn state_events_reach_subscribers_and_results_go_after_their_time(s: Subject) {
    let mut events = s.orca.subscribe();
    let worker = worker_for(&s, divide::task()).await;
    let handle = divide::submit(&s.orca, 9, 3).await.unwrap();
    assert_eq!(handle.result().await.unwrap().unwrap(), 3);
    let mut seen = Vec::new();
    while seen.last() != Some(&State::Succeeded) {
        let event = events.recv().await.unwrap();
        if event.id == handle.id() {
            seen.push(event.state);
        }
    }
    assert_eq!(seen, [State::Queued, State::Running, State::Succeeded]);
    // A run that ends at its first poll is recorded by its end alone, which
    // names when it started; subscribers got the running state it implies.
    let events = recorded_states(&s, handle.id()).await;
    let expected = [("queued".to_string(), false), ("succeeded".into(), true)];
    assert_eq!(events, expected);

    // Results kept for a moment only: the state events, the finished state
    // and the queue entries every worker is done with go.
    s.orca.keep_results(Duration::from_millis(200));
    let streams = s.orca.streams();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = streams.len("orca:states").await.unwrap();
        let queued = streams.len("orca:queue:math").await.unwrap();
        if s.orca.state(handle.id()).is_none() && states == 0 && queued == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{states} events, {queued} queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        handle.result().await,
        Err(orcastra::Error::Forgotten(id)) if id == handle.id()
    ));
    worker.stop().await;
}

/// However long results are kept (a day by default), the queue entries
/// every worker is done with go within seconds: a busy queue holds no more
/// than about a second of finished tasks.
async fn finished_tasks_leave_their_queue_within_seconds(s: Subject) {
    let worker = worker_for(&s, divide::task()).await;
    let options = orcastra::SubmitOptions::default();
    let handles = s
        .orca
        .submit_many_with(divide::task(), (0..50).map(|i| (i, 1)), options)
        .await
        .unwrap();
    for handle in &handles {
        handle.result().await.unwrap().unwrap();
    }
    let streams = s.orca.streams();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let queued = streams.len("orca:queue:math").await.unwrap();
        if queued == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{queued} still queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Their results stay.
    assert_eq!(handles[7].result().await.unwrap().unwrap(), 7);
    worker.stop().await;
}

async fn unique_tasks_are_one_task_while_unfinished(s: Subject) {
    let key = format!("unique-{}", TaskId::new());
    let mut unique = orcastra::SubmitOptions {
        unique_key: Some(key.clone()),
        ..Default::default()
    };
    let worker = s
        .orca
        .worker()
        .concurrency(4)
        .register(held::task())
        .start()
        .await
        .unwrap();
    // Concurrent submissions with one key are one task.
    let submits: Vec<_> = (0..8)
        .map(|_| {
            let (orca, unique, key) = (s.orca.clone(), unique.clone(), key.clone());
            tokio::spawn(async move { orca.submit_with(held::task(), (key,), unique).await })
        })
        .collect();
    let mut ids = Vec::new();
    for submit in submits {
        ids.push(submit.await.unwrap().unwrap().id());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    called(&key, 1).await;
    // Also while it runs.
    let running = s
        .orca
        .submit_with(held::task(), (key.clone(),), unique.clone())
        .await
        .unwrap();
    assert_eq!(running.id(), ids[0]);
    hold(&key).add_permits(1);
    assert_eq!(running.result().await.unwrap().unwrap(), 1);

    // Finished: the key is free, a submission is a new task.
    let second = s
        .orca
        .submit_with(held::task(), (key.clone(),), unique.clone())
        .await
        .unwrap();
    assert_ne!(second.id(), ids[0]);
    hold(&key).add_permits(1);
    assert_eq!(second.result().await.unwrap().unwrap(), 2);

    // Within a window after it finished, the finished task still answers.
    unique.unique_for = Some(Duration::from_secs(3600));
    let within = s
        .orca
        .submit_with(held::task(), (key.clone(),), unique)
        .await
        .unwrap();
    assert_eq!(within.id(), second.id());
    assert_eq!(within.result().await.unwrap().unwrap(), 2);
    assert_eq!(calls(&key), 2);
    worker.stop().await;
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::memory().await).await })*
        }
        mod segment {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::segment().await).await })*
        }
        #[cfg(feature = "redis")]
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::redis().await).await })*
        }
    };
}

suite!(
    results_come_back,
    errors_panics_and_timeouts_fail_the_task,
    tasks_that_cannot_run_go_to_the_dead_letters,
    a_dead_workers_task_is_reclaimed_and_finished,
    a_long_task_keeps_its_lease,
    a_poison_pill_goes_to_the_dead_letters,
    stopping_releases_unfinished_tasks_at_once,
    failures_are_retried_after_a_backoff,
    delayed_tasks_run_on_time_and_once,
    cancelled_tasks_never_run_and_running_ones_are_told,
    running_tasks_report_progress,
    priorities_come_first_but_never_starve_the_rest,
    queues_are_served_by_weight,
    state_events_reach_subscribers_and_results_go_after_their_time,
    finished_tasks_leave_their_queue_within_seconds,
    unique_tasks_are_one_task_while_unfinished,
);

// One at a time: it counts the gated tasks running in the whole process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_fetches_no_more_than_its_free_slots_in_memory() {
    a_worker_fetches_no_more_than_its_free_slots(memory().await).await;
}

/// Backoffs of minutes, on paused time: the test takes no real minutes, and
/// shows each retry waits its backoff (half to all of 1 min × 2ⁿ) and no
/// less.
#[tokio::test(start_paused = true)]
async fn retries_wait_their_backoff_on_paused_time() {
    let backend = orcastra::streams::Backend::open("memory://", Default::default())
        .await
        .unwrap();
    let clock = TokioClock {
        start_ms: orcastra::streams::SystemClock.now_ms(),
        start: tokio::time::Instant::now(),
    };
    let orca = Orcastra::on_with_clock(backend, clock);
    let key = format!("reluctant-{}", TaskId::new());
    let worker = orca
        .worker()
        .register(reluctant::task())
        .start()
        .await
        .unwrap();
    let handle = reluctant::submit(&orca, key.clone(), 2).await.unwrap();
    assert_eq!(handle.result().await.unwrap().unwrap(), 3);
    let starts = TOKIO_STARTS.lock().unwrap()[&key].clone();
    let seconds = Duration::from_secs;
    let (first, second) = (starts[1] - starts[0], starts[2] - starts[1]);
    assert!(first >= seconds(30) && first <= seconds(61), "{first:?}");
    assert!(
        second >= seconds(60) && second <= seconds(121),
        "{second:?}"
    );
    assert_eq!(orca.state(handle.id()).unwrap().attempt, 2);
    worker.stop().await;
}

/// A delayed task waits in the data directory through a restart, runs
/// after it once, and not before its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_tasks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_string();
    let key = format!("restarted-{}", TaskId::new());
    let delay = Duration::from_millis(1500);
    let submitted = Instant::now();
    let id = {
        let orca = Orcastra::open(&url).await.unwrap();
        let later = orcastra::SubmitOptions {
            delay: Some(delay),
            ..Default::default()
        };
        let handle = orca
            .submit_with(flaky::task(), (key.clone(), 0), later)
            .await
            .unwrap();
        handle.id()
    };
    // The first handle's tasks let the logs go within a second or so.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (orca, worker) = loop {
        let reopened = async {
            let orca = Orcastra::open(&url).await?;
            let worker = orca.worker().register(flaky::task()).start().await?;
            Ok::<_, orcastra::Error>((orca, worker))
        };
        match reopened.await {
            Ok(opened) => break opened,
            Err(error) => assert!(Instant::now() < deadline, "{error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let state = orca.state(id).unwrap();
    assert!(
        matches!(
            state.state,
            State::Scheduled | State::Queued | State::Running | State::Succeeded
        ),
        "{state:?}"
    );
    let handle = orca.handle::<usize>(id);
    assert_eq!(handle.result().await.unwrap().unwrap(), 1);
    assert!(starts(&key)[0] - submitted >= delay);
    worker.stop().await;
    assert_eq!(calls(&key), 1);
}

/// The queued states of the tasks of one `submit_many` are one event,
/// which names them all and is read back as theirs after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submissions_queued_states_are_one_event_read_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_string();
    let ids: Vec<TaskId> = {
        let orca = Orcastra::open(&url).await.unwrap();
        let args = (1..=300).map(|n| (n, 1));
        let handles = orca
            .submit_many_with(divide::task(), args, orcastra::SubmitOptions::default())
            .await
            .unwrap();
        // Recorded after the submission returns: the one event comes.
        let deadline = Instant::now() + Duration::from_secs(30);
        while orca.streams().len("orca:states").await.unwrap() == 0 {
            assert!(Instant::now() < deadline, "no state event");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let events = orca
            .streams()
            .range("orca:states", Bound::Min, Bound::Max, None);
        let events = events.await.unwrap();
        assert_eq!(events.len(), 1);
        let ids: Vec<TaskId> = handles.iter().map(|handle| handle.id()).collect();
        let listed: Vec<String> = ids.iter().map(TaskId::to_string).collect();
        assert_eq!(
            field(&events[0].fields, "ids").unwrap(),
            listed.join(",").as_str()
        );
        ids
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let orca = loop {
        match Orcastra::open(&url).await {
            Ok(orca) => break orca,
            Err(error) => assert!(Instant::now() < deadline, "{error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Read as the handle follows the events.
    let deadline = Instant::now() + Duration::from_secs(30);
    while orca.state(ids[299]).is_none() {
        assert!(Instant::now() < deadline, "the event was not read back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in ids {
        let state = orca.state(id).expect("read back with the others");
        assert_eq!(
            (state.state, &*state.name, &*state.queue),
            (State::Queued, "divide", "math")
        );
    }
}

/// The backend of the power-loss tests: a segment log under fsync `batch`
/// on the simulated file layer.
async fn open_simulated(sim: &SimStorage) -> Result<Orcastra, orcastra::Error> {
    let options = LogOptions::default()
        .fsync(FsyncPolicy::Batch)
        .storage(sim.clone());
    Orcastra::open_with("/data/tasks", options).await
}

/// Reopens the simulated backend after a power loss and runs `use_it` on
/// it, again until it works: the dead handle's tasks may hold a stream they
/// opened after the power loss for a moment.
async fn after_power_loss<T, F>(sim: &SimStorage, use_it: impl Fn(Orcastra) -> F) -> T
where
    F: std::future::Future<Output = Result<T, orcastra::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reopened = async { use_it(open_simulated(sim).await?).await };
        match reopened.await {
            Ok(used) => return used,
            Err(error) => assert!(Instant::now() < deadline, "{error}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A submission returns once its task is durable, and sees it queued at
/// once. A power loss right after, which may take the `queued` state (it is
/// recorded without the submitter waiting), leaves the task to run, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_submitted_before_a_power_loss_runs_after_it() {
    let mut stateless = 0;
    for seed in 0..20 {
        let sim = SimStorage::new(seed);
        let orca = open_simulated(&sim).await.unwrap();
        let key = format!("power-{seed}-{}", TaskId::new());
        let id = flaky::submit(&orca, key.clone(), 0).await.unwrap().id();
        assert_eq!(orca.state(id).map(|s| s.state), Some(State::Queued));
        sim.power_loss();
        drop(orca);
        let (orca, states, worker) = after_power_loss(&sim, |orca| async move {
            let states = orca.streams().len("orca:states").await?;
            let worker = orca.worker().register(flaky::task()).start().await?;
            Ok((orca, states, worker))
        })
        .await;
        stateless += usize::from(states == 0);
        let result =
            tokio::time::timeout(Duration::from_secs(10), orca.handle::<usize>(id).result()).await;
        assert_eq!(result.expect("the task ran").unwrap(), Ok(1), "seed {seed}");
        worker.stop().await;
        assert_eq!(calls(&key), 1, "seed {seed}");
    }
    println!("{stateless} of 20 power losses took the queued state");
}

/// A due task is queued as a copy of its scheduled entry, which workers
/// see before it is durable: it starts on time even while its queue's disk
/// stalls. A power loss then may take the copy, not the task: it is moved
/// again after it and reaches its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_task_starts_while_its_queues_disk_stalls() {
    let lease = Duration::from_millis(300);
    let delay = Duration::from_millis(200);
    for seed in 0..5 {
        let sim = SimStorage::new(seed);
        let orca = open_simulated(&sim).await.unwrap();
        let worker = orca.worker().lease(lease).register(flaky::task());
        let worker = worker.start().await.unwrap();
        let queue = "orca:queue:timing";
        settle(&orca, queue).await;
        let key = format!("stalled-{seed}-{}", TaskId::new());
        let later = orcastra::SubmitOptions {
            delay: Some(delay),
            ..Default::default()
        };
        let submitted = Instant::now();
        let handle = orca.submit_with(flaky::task(), (key.clone(), 0), later);
        let id = handle.await.unwrap().id();
        let queue_dir = std::path::Path::new("/data/tasks/s-orca%3Aqueue%3Atiming");
        sim.stall_syncs_under(Some(queue_dir));
        let started = async {
            while calls(&key) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let started = tokio::time::timeout(Duration::from_secs(10), started).await;
        // Before any assertion: a stalled fsync thread ends with the power.
        sim.power_loss();
        assert!(started.is_ok(), "not started while the disk stalled");
        assert!(starts(&key)[0] - submitted >= delay, "started early");
        drop((worker, orca));
        let (orca, worker) = after_power_loss(&sim, |orca| async move {
            let worker = orca.worker().lease(lease).register(flaky::task());
            Ok((orca.clone(), worker.start().await?))
        })
        .await;
        let result =
            tokio::time::timeout(Duration::from_secs(10), orca.handle::<usize>(id).result()).await;
        // Its result names the run that ended it, after the power loss or,
        // if its end was durable, before.
        let run = result.expect("the task ended").unwrap().unwrap();
        assert!((1..=calls(&key)).contains(&run), "seed {seed}: run {run}");
        assert_eq!(orca.state(id).unwrap().state, State::Succeeded);
        worker.stop().await;
    }
}

/// Waits until every record in `queue`'s log is durable, the worker's
/// registration as a consumer included: its first read writes it, late on a
/// loaded machine. Records are seen in order, so one left waiting for a
/// stalled fsync would hide everything after it.
async fn settle(orca: &Orcastra, queue: &str) {
    let streams = orca.streams();
    let deadline = Instant::now() + Duration::from_secs(10);
    while streams
        .groups(queue)
        .await
        .unwrap()
        .iter()
        .all(|g| g.consumers == 0)
    {
        assert!(Instant::now() < deadline, "the worker never read {queue}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Each waits for an fsync, which covers every record before it.
    let start = GroupStart::After(StreamId::MIN);
    streams
        .create_group(queue, "settle", start, false)
        .await
        .unwrap();
    streams.destroy_group(queue, "settle").await.unwrap();
}

/// A worker frees a slot as its task's end starts to be written, before
/// it is durable and before its acknowledgement is; stopping waits for
/// those, so a power loss right after a stop amid a flow of tasks leaves
/// none of them pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_has_acknowledged_its_tasks_durably() {
    for seed in 0..10 {
        let sim = SimStorage::new(seed);
        let orca = open_simulated(&sim).await.unwrap();
        let args = (1..=2000).map(|n| (n, 1));
        let handles = orca
            .submit_many_with(divide::task(), args, orcastra::SubmitOptions::default())
            .await
            .unwrap();
        let worker = dividers(&orca, 8).await;
        handles[100].result().await.unwrap().unwrap();
        worker.stop().await;
        sim.power_loss();
        drop(orca);
        let pending = after_power_loss(&sim, |orca| async move {
            let pending = orca.streams().pending_summary("orca:queue:math", "workers");
            Ok(pending.await?.count)
        })
        .await;
        assert_eq!(pending, 0, "seed {seed}");
    }
}

/// A stopped worker lets go of the backend: the Tokio tasks that ran its
/// tasks end with it, so once the handle is dropped nothing holds the
/// engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_lets_go_of_the_backend() {
    let engine = std::sync::Arc::new(orcastra::streams::Embedded::memory());
    {
        let orca = Orcastra::on(orcastra::streams::Backend::Memory(engine.clone()));
        let worker = dividers(&orca, 8).await;
        let args = (1..=64).map(|n| (n * 2, 2));
        let handles = orca
            .submit_many_with(divide::task(), args, orcastra::SubmitOptions::default())
            .await
            .unwrap();
        for (n, handle) in (1..).zip(&handles) {
            assert_eq!(handle.result().await.unwrap().unwrap(), n);
        }
        worker.stop().await;
    }
    // The handle's own tasks let go within a second or so.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::sync::Arc::strong_count(&engine) > 1 {
        assert!(Instant::now() < deadline, "the engine is still held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Past the bound, finished tasks' states leave memory, oldest first,
/// except those a handle holds; awaiting one that left finds it forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_states_past_the_bound_leave_memory_unless_a_handle_holds_them() {
    let orca = Orcastra::open("memory://").await.unwrap();
    orca.keep_results_in_memory(8);
    let worker = dividers(&orca, 4).await;
    let submit = |n: i64| divide::submit(&orca, n * 2, 2);
    // Held: all 20 results are there to await, past the bound of 8.
    let mut held = Vec::new();
    for n in 1..=20 {
        held.push(submit(n).await.unwrap());
    }
    for (n, handle) in (1..).zip(&held) {
        assert_eq!(handle.result().await.unwrap().unwrap(), n);
    }
    let early: Vec<TaskId> = held.iter().map(|handle| handle.id()).collect();
    drop(held);
    // Twenty more, each awaited and let go.
    let mut late = Vec::new();
    for n in 21..=40 {
        let handle = submit(n).await.unwrap();
        assert_eq!(handle.result().await.unwrap().unwrap(), n);
        late.push(handle.id());
    }
    let in_memory = |ids: &[TaskId]| ids.iter().filter(|&&id| orca.state(id).is_some()).count();
    // The last end may be taken in just after its result was seen.
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_memory(&late) > 8 {
        assert!(Instant::now() < deadline, "finished states stay in memory");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(in_memory(&early), 0, "the early ones left once let go");
    assert_eq!(in_memory(&late), 8, "the latest eight stay");
    assert_eq!(
        orca.state(late[19]).map(|s| s.state),
        Some(State::Succeeded)
    );
    let gone = orca.handle::<i64>(early[0]).result().await;
    assert!(matches!(gone, Err(orcastra::Error::Forgotten(id)) if id == early[0]));
    worker.stop().await;
}

/// Two handles on one embedded engine: each passes over the state events
/// it wrote (applied as it wrote them) and reads the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_on_one_engine_see_their_own_and_each_others_states() {
    let engine = std::sync::Arc::new(orcastra::streams::Embedded::memory());
    let on_engine = || Orcastra::on(orcastra::streams::Backend::Memory(engine.clone()));
    let (producer, consumer) = (on_engine(), on_engine());
    let mut events = producer.subscribe();
    let args = (1..=200).map(|n| (n * 2, 2));
    let handles = producer
        .submit_many_with(divide::task(), args, orcastra::SubmitOptions::default())
        .await
        .unwrap();
    // Recorded by the producer: known to it once the submission returns.
    for handle in &handles {
        assert!(producer.state(handle.id()).is_some());
    }
    // Read by the consumer, all from the submission's one event.
    let queued = |handle: &TaskHandle<i64>| consumer.state(handle.id()).map(|s| s.state);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !handles.iter().all(|h| queued(h) == Some(State::Queued)) {
        assert!(Instant::now() < deadline, "the queued states were not read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let worker = dividers(&consumer, 16).await;
    for (n, handle) in (1..).zip(&handles) {
        // Recorded by the consumer: read by the producer.
        let result = tokio::time::timeout(Duration::from_secs(30), handle.result());
        assert_eq!(result.await.expect("the result").unwrap().unwrap(), n);
    }
    // Recorded by the consumer itself, before its worker stopped.
    worker.stop().await;
    for handle in &handles {
        assert_eq!(consumer.state(handle.id()).unwrap().state, State::Succeeded);
    }
    // The producer's subscriber saw each task's states once each, its end last.
    let mut seen: HashMap<_, Vec<State>> = HashMap::new();
    while seen
        .values()
        .filter(|s| s.contains(&State::Succeeded))
        .count()
        < handles.len()
    {
        let event = events.recv().await.unwrap();
        seen.entry(event.id).or_default().push(event.state);
    }
    for handle in &handles {
        let states = &seen[&handle.id()];
        assert_eq!(states.last(), Some(&State::Succeeded), "{states:?}");
        let mut unique = states.clone();
        unique.dedup();
        assert_eq!(&unique, states);
    }
}

/// Two handles on one Redis stand for two processes: the worker of one runs
/// what the other submits, and the submitter sees the result.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_reaches_another_handle_on_the_same_backend() {
    let server = common::redis_server::RedisServer::start();
    let producer = Orcastra::open(&server.url()).await.unwrap();
    let consumer = Orcastra::open(&server.url()).await.unwrap();
    let worker = consumer
        .worker()
        .register(divide::task())
        .start()
        .await
        .unwrap();
    let handle = divide::submit(&producer, 8, 2).await.unwrap();
    assert_eq!(handle.result().await.unwrap().unwrap(), 4);
    let state = producer.state(handle.id()).unwrap();
    assert_eq!(state.state, State::Succeeded);
    worker.stop().await;
}
