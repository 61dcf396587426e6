//! Workers: fetch tasks from their queues, run them, record how they ended
//! and acknowledge them.
//!
//! A worker fetches only as many tasks as it has free slots, runs them side
//! by side on Tokio tasks it keeps for the purpose (a panic in a task is
//! caught as a failure, not a crash), enforces timeouts, and acknowledges a
//! task only after its final state is recorded. Tasks that can never run
//! (an undecodable envelope or arguments, a name no registered task has) go
//! to the queue's dead letters with the reason; they never stop the worker
//! or block the queue.
//!
//! A delivered task is leased to its worker: the worker renews the lease
//! (resetting the entry's idle time in the group) while the task runs, and
//! every worker reclaims entries idle longer than a lease, whoever had
//! them. So a worker that dies loses its tasks to the others after one
//! lease, based on idle time, not heartbeats. Every delivery counts, crash
//! redeliveries included: a task delivered more than its `max_deliveries`
//! goes to the dead letters instead of crash-looping the workers. A worker
//! reads new tasks with `unsynced_delivery`: the delivery is handed to the
//! operating system before the task starts (a crash of the process keeps
//! it) but not waited for on disk, which only a power loss can undo.

use std::any::{Any, TypeId};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};
use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::orca::{BACKEND_RETRY, Orcastra, RELEASED_AT_MS, WORKERS, Write, dead_stream};
use crate::record::StreamId;
use crate::statekeeper::{RunState, State};
use crate::streams::{
    AutoClaim, Bound, ClaimOptions, Fields, GroupEntry, GroupRead, PendingQuery, ReadGroupOptions,
    StreamError, Streams, field,
};
use crate::task::{
    Envelope, Name, Progress, Retry, Task, TaskContext, TaskError, TaskId, TaskOptions, decode_args,
};
use crate::timekeeper::{self, Timekeeper};

mod schedule;
use schedule::Schedule;

/// How a run ended.
enum Outcome {
    Succeeded(Bytes),
    Failed(TaskError),
    /// It can never run as it is.
    Dead(String),
    /// Abandoned unfinished as the worker stopped.
    Released,
}

/// A run; it borrows its worker's release token.
type Run<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// A registered task with its types erased: runs from JSON arguments.
trait Runnable: Send + Sync {
    fn options(&self) -> TaskOptions;
    /// The run, guarded as [`guarded`] says, in one allocation.
    fn run<'a>(
        &self,
        args: &[u8],
        context: TaskContext,
        timeout: Option<Duration>,
        release: &'a CancellationToken,
    ) -> Run<'a>;
}

struct Registered<T>(Arc<T>);

impl<T: Task> Runnable for Registered<T> {
    fn options(&self) -> TaskOptions {
        self.0.options()
    }

    fn run<'a>(
        &self,
        args: &[u8],
        context: TaskContext,
        timeout: Option<Duration>,
        release: &'a CancellationToken,
    ) -> Run<'a> {
        let args = match decode_args::<T>(args) {
            Ok(args) => args,
            Err(error) => {
                let reason = error.to_string();
                return Box::pin(async move { Outcome::Dead(reason) });
            }
        };
        let task = Arc::clone(&self.0);
        let run = async move {
            match task.run(args, context).await {
                // Tasks that return nothing are the most common: their
                // states share one `null` instead of each allocating one
                // (freed by another thread, where the allocator's locks are
                // contended).
                Ok(_) if TypeId::of::<T::Output>() == TypeId::of::<()>() => {
                    Outcome::Succeeded(Bytes::from_static(b"null"))
                }
                Ok(output) => match serde_json::to_vec(&output) {
                    Ok(json) => Outcome::Succeeded(Bytes::from(json)),
                    Err(e) => Outcome::Failed(
                        TaskError::new(format!("the result does not encode as JSON: {e}"))
                            .no_retry(),
                    ),
                },
                Err(error) => Outcome::Failed(error),
            }
        };
        Box::pin(guarded(run, timeout, release))
    }
}

/// Configures a worker; [`start`](Self::start) runs it.
pub struct WorkerBuilder {
    orcastra: Orcastra,
    name: String,
    concurrency: usize,
    lease: Duration,
    tasks: HashMap<Name, Arc<dyn Runnable>>,
    /// The queues served, with their weights.
    queues: Vec<(Name, u32)>,
}

impl WorkerBuilder {
    pub(crate) fn new(orcastra: Orcastra) -> Self {
        WorkerBuilder {
            orcastra,
            name: format!("worker-{}", TaskId::new()),
            concurrency: 1,
            lease: Duration::from_secs(30),
            tasks: HashMap::new(),
            queues: Vec::new(),
        }
    }

    /// Runs at most this many tasks at once (at least 1; default 1).
    pub fn concurrency(mut self, tasks: usize) -> Self {
        self.concurrency = tasks.max(1);
        self
    }

    /// How long a delivered task may go without news from its worker
    /// before another worker reclaims it (default 30 s). A worker renews the
    /// lease of the tasks it runs three times per lease, so a long task is
    /// not reclaimed while its worker lives; a worker that dies or stalls
    /// for a whole lease loses its tasks to the others.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// Names the worker: its consumer name in the queues' groups, and what
    /// run states report. Names must be unique among live workers.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Runs tasks of this kind, fetching from its queue.
    pub fn register<T: Task>(mut self, task: T) -> Self {
        let queue = task.options().queue;
        if !self.queues.iter().any(|(q, _)| *q == queue) {
            self.queues.push((Name::from_static(queue), 1));
        }
        self.tasks.insert(
            Name::from_static(T::NAME),
            Arc::new(Registered(Arc::new(task))),
        );
        self
    }

    /// Gives `queue` a weight (at least 1; default 1): among the queues
    /// this worker serves, one of weight 3 is fetched from first three
    /// times as often as one of weight 1, and no queue with tasks waits
    /// more than one round of all weights (priorities included: a queue's
    /// tasks of priority p weigh its weight × 2^p).
    ///
    /// ```
    /// use orcastra::prelude::*;
    ///
    /// #[orca_task(queue = "mail")]
    /// async fn send(to: String) {}
    ///
    /// #[orca_task(queue = "reports")]
    /// async fn report(month: u8) {}
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let orca = Orcastra::open("memory://").await?;
    /// let worker = orca
    ///     .worker()
    ///     .register(send::task())
    ///     .register(report::task())
    ///     .weight("mail", 3)
    ///     .start()
    ///     .await?;
    /// worker.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn weight(mut self, queue: &str, weight: u32) -> Self {
        let weight = weight.max(1);
        match self.queues.iter_mut().find(|(q, _)| *q == queue) {
            Some(served) => served.1 = weight,
            None => self.queues.push((queue.into(), weight)),
        }
        self
    }

    /// Starts fetching and running tasks.
    pub async fn start(self) -> Result<Worker, crate::Error> {
        let schedule = Schedule::new(self.queues);
        for source in schedule.sources() {
            self.orcastra.ensure_group(&source.stream, WORKERS).await?;
        }
        // Know every recorded state before running anything, so that a task
        // that ended before a crash is not run again.
        self.orcastra.catch_up().await?;
        let stop = CancellationToken::new();
        let renewing = CancellationToken::new();
        let shared = Arc::new(Shared {
            orcastra: self.orcastra,
            name: self.name.into(),
            tasks: self.tasks,
            slots: Arc::new(Semaphore::new(self.concurrency)),
            concurrency: self.concurrency,
            lease: self.lease,
            in_flight: Mutex::new(HashMap::new()),
            idle: Mutex::new(Some(Vec::new())),
            release: CancellationToken::new(),
        });
        let fetch = tokio::spawn(Arc::clone(&shared).fetch_loop(schedule, stop.clone()));
        tokio::spawn(Arc::clone(&shared).renew_loop(renewing.clone()));
        tokio::spawn(Arc::clone(&shared).cancel_loop(renewing.clone()));
        let timekeeper = Timekeeper::new(
            shared.orcastra.clone(),
            shared.name.to_string(),
            shared.lease,
        );
        tokio::spawn(timekeeper.run(stop.clone()));
        Ok(Worker {
            shared,
            stop,
            renewing,
            fetch: Some(fetch),
        })
    }
}

/// A running worker. Dropping it is like its process dying: it stops
/// fetching and renewing leases, and the tasks it was running are reclaimed
/// by other workers once their lease runs out. [`stop`](Self::stop) is the
/// graceful way.
pub struct Worker {
    shared: Arc<Shared>,
    stop: CancellationToken,
    renewing: CancellationToken,
    fetch: Option<JoinHandle<()>>,
}

impl Worker {
    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Stops gracefully: no more fetching; the tasks in flight get `grace`
    /// to finish, and the rest are cancelled and released, so that another
    /// worker takes them at once rather than after their lease.
    pub async fn stop_within(mut self, grace: Duration) {
        self.stop.cancel();
        if let Some(fetch) = self.fetch.take() {
            let _ = fetch.await;
        }
        let all = u32::try_from(self.shared.concurrency).unwrap_or(u32::MAX);
        let finished = tokio::time::timeout(grace, self.shared.slots.acquire_many(all)).await;
        self.renewing.cancel();
        if finished.is_err() {
            self.shared.release_in_flight().await;
        }
        // Every end is with the writer: done once each is written and
        // acknowledged.
        if let Err(error) = self.shared.orcastra.write(Write::barrier()).await {
            tracing::warn!(worker = %self.shared.name, %error, "stopped before every finished task was acknowledged; they are passed over when delivered again");
        }
    }

    /// [`stop_within`](Self::stop_within) a grace period of one lease.
    pub async fn stop(self) {
        let grace = self.shared.lease;
        self.stop_within(grace).await
    }

    /// Listens for SIGINT (Ctrl-C) and SIGTERM from now on; the future
    /// returned completes once either came and the worker stopped gracefully
    /// within `grace`. For a worker process's `main`.
    pub fn stop_on_signal(
        self,
        grace: Duration,
    ) -> std::io::Result<impl Future<Output = ()> + Send> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            let received = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!(worker = %self.shared.name, signal = received, "stopping");
            self.stop_within(grace).await;
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.cancel();
        self.renewing.cancel();
    }
}

/// A task being run, keyed by its queue and entry id.
struct InFlight {
    /// The task.
    task: TaskId,
    /// The token the task sees: cancelled when someone cancels the task.
    cancel: CancellationToken,
}

struct Shared {
    orcastra: Orcastra,
    name: Name,
    tasks: HashMap<Name, Arc<dyn Runnable>>,
    /// One permit per free slot.
    slots: Arc<Semaphore>,
    concurrency: usize,
    lease: Duration,
    in_flight: Mutex<HashMap<(Arc<str>, StreamId), InFlight>>,
    /// The runners waiting for a job, the latest last; `None` once the
    /// fetch loop ended.
    idle: Mutex<Option<Vec<Arc<Mailbox>>>>,
    /// Cancelled to abandon every run in flight without recording its end:
    /// their tasks are released to other workers.
    release: CancellationToken,
}

/// A task fetched for running: its queue and stream, its entry, and how
/// many times it has been delivered (new entries: once).
struct Fetched {
    queue: Name,
    stream: Arc<str>,
    entry: GroupEntry,
    deliveries: u64,
}

/// A fetched task and the slot it holds, for a runner.
type Job = (Fetched, OwnedSemaphorePermit);

/// Where a waiting runner gets its next job: each job wakes its own
/// runner, so the jobs of one fetch run side by side on every thread (a
/// lock handed from runner to runner woke them one after another; a
/// channel all runners wait on cost a tenth of the CPU in its list of
/// waiters).
#[derive(Default)]
struct Mailbox {
    job: Mutex<Option<Job>>,
    arrived: Notify,
}

impl Mailbox {
    fn give(&self, job: Job) {
        *self.job.lock() = Some(job);
        self.arrived.notify_one();
    }
}

/// Ends the waiting runners when the fetch loop ends, however it ends;
/// the others end after their job.
struct Closing<'a>(&'a Shared);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        for mailbox in self.0.idle.lock().take().into_iter().flatten() {
            mailbox.arrived.notify_one();
        }
    }
}

/// How long one fetch waits for a task before checking for a stop.
const FETCH_BLOCK: Duration = Duration::from_millis(250);

impl Shared {
    /// Fetches as many tasks as there are free slots, reclaimed ones first,
    /// and runs each; backend errors are logged and retried with backoff,
    /// never the end of the loop.
    async fn fetch_loop(self: Arc<Self>, mut schedule: Schedule, stop: CancellationToken) {
        let _closing = Closing(&self);
        let mut failures = 0u32;
        let mut cursors: HashMap<Arc<str>, StreamId> = HashMap::new();
        let mut next_reclaim = Instant::now();
        while !stop.is_cancelled() {
            // Wait for a free slot.
            let Ok(first) = Arc::clone(&self.slots).acquire_owned().await else {
                return;
            };
            // Let the runs that are ending free their slots, to fetch for
            // them all at once.
            tokio::task::yield_now().await;
            let free = self.slots.available_permits() + 1;
            let fetched = if Instant::now() >= next_reclaim {
                next_reclaim = Instant::now() + self.lease / 4;
                self.reclaim(&schedule, free, &mut cursors).await
            } else {
                Ok(Vec::new())
            };
            let fetched = match fetched {
                Ok(reclaimed) if !reclaimed.is_empty() => Ok(reclaimed),
                Ok(_) => self.fetch_new(&mut schedule, free).await,
                Err(error) => Err(error),
            };
            let fetched = match fetched {
                Ok(fetched) => {
                    failures = 0;
                    fetched
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = BACKEND_RETRY.delay(failures - 1, fastrand::f64());
                    tracing::warn!(worker = %self.name, %error, ?delay, "fetching tasks failed; retrying");
                    drop(first);
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let mut slot = Some(first);
            let mut surplus = Vec::new();
            for task in fetched {
                let permit = match slot.take() {
                    Some(permit) => permit,
                    None => match Arc::clone(&self.slots).try_acquire_owned() {
                        Ok(permit) => permit,
                        Err(_) => {
                            surplus.push((task.stream, task.entry.id));
                            continue;
                        }
                    },
                };
                // A new runner only if none waits: at most one per slot,
                // and one per run ending.
                let idle = self.idle.lock().as_mut().and_then(Vec::pop);
                match idle {
                    Some(mailbox) => mailbox.give((task, permit)),
                    None => {
                        tokio::spawn(Arc::clone(&self).runner((task, permit)));
                    }
                }
            }
            self.release(surplus).await;
        }
    }

    /// Runs `first`, then each job given to it while it waits, until the
    /// fetch loop ends. Started when no runner waits, and kept: a Tokio task
    /// spawned per run would allocate and free its large future each time
    /// (with glibc, under an arena lock the threads contend for).
    async fn runner(self: Arc<Self>, first: Job) {
        let mailbox = Arc::new(Mailbox::default());
        let mut job = first;
        loop {
            let (task, slot) = job;
            self.process(task, slot).await;
            match self.idle.lock().as_mut() {
                Some(idle) => idle.push(Arc::clone(&mailbox)),
                None => return,
            }
            // Woken with a job, or with none once the fetch loop ended.
            mailbox.arrived.notified().await;
            let Some(next) = mailbox.job.lock().take() else {
                return;
            };
            job = next;
        }
    }

    /// New tasks, at most one per free slot: from the sources in the
    /// schedule's order, or, if none has any, from the first to get one
    /// within a moment.
    async fn fetch_new(
        &self,
        schedule: &mut Schedule,
        free: usize,
    ) -> Result<Vec<Fetched>, StreamError> {
        let order = schedule.next();
        let sources = schedule.sources();
        let mut fetched = Vec::new();
        for &i in &order {
            let wanted = free - fetched.len();
            if wanted == 0 {
                return Ok(fetched);
            }
            let source = &sources[i];
            let options = ReadGroupOptions {
                count: Some(wanted),
                block: None,
                no_ack: false,
                unsynced_delivery: true,
            };
            let read = [(&*source.stream, GroupRead::New)];
            self.read_into(&read, options, sources, &mut fetched)
                .await?;
        }
        if fetched.is_empty() {
            // A blocked read may bring a task from each source: more than
            // the free slots are released at once.
            let reads: Vec<(&str, GroupRead)> = order
                .iter()
                .map(|&i| (&*sources[i].stream, GroupRead::New))
                .collect();
            let options = ReadGroupOptions {
                count: Some((free / reads.len()).max(1)),
                block: Some(FETCH_BLOCK),
                no_ack: false,
                unsynced_delivery: true,
            };
            self.read_into(&reads, options, sources, &mut fetched)
                .await?;
        }
        Ok(fetched)
    }

    async fn read_into(
        &self,
        reads: &[(&str, GroupRead)],
        options: ReadGroupOptions,
        sources: &[schedule::Source],
        fetched: &mut Vec<Fetched>,
    ) -> Result<(), StreamError> {
        let read = self
            .orcastra
            .streams()
            .read_group(WORKERS, &self.name, reads, options)
            .await?;
        for (stream, entries) in read {
            let Some(source) = sources.iter().find(|s| *s.stream == stream) else {
                continue;
            };
            fetched.extend(entries.into_iter().map(|entry| Fetched {
                queue: source.queue.clone(),
                stream: Arc::clone(&source.stream),
                entry,
                deliveries: 1,
            }));
        }
        Ok(())
    }

    /// Tasks whose lease ran out (their worker died or stalled), claimed
    /// for this worker, with their delivery counts.
    async fn reclaim(
        &self,
        schedule: &Schedule,
        free: usize,
        cursors: &mut HashMap<Arc<str>, StreamId>,
    ) -> Result<Vec<Fetched>, StreamError> {
        let streams = self.orcastra.streams();
        let mut reclaimed = Vec::new();
        for source in schedule.sources() {
            let wanted = free - reclaimed.len();
            if wanted == 0 {
                break;
            }
            let stream = &source.stream;
            let start = cursors.get(stream).copied().unwrap_or(StreamId::MIN);
            let options = AutoClaim {
                min_idle: self.lease,
                start,
                count: wanted,
                just_id: false,
            };
            let claimed = streams
                .auto_claim(stream, WORKERS, &self.name, options)
                .await?;
            cursors.insert(Arc::clone(stream), claimed.next);
            for entry in claimed.claimed {
                let query = PendingQuery {
                    start: Bound::Included(entry.id),
                    end: Bound::Included(entry.id),
                    count: 1,
                    consumer: None,
                    min_idle: None,
                };
                let deliveries = streams
                    .pending(stream, WORKERS, &query)
                    .await?
                    .first()
                    .map_or(1, |pending| pending.deliveries);
                tracing::info!(worker = %self.name, %stream, id = %entry.id, deliveries, "reclaimed a task whose lease ran out");
                reclaimed.push(Fetched {
                    queue: source.queue.clone(),
                    stream: Arc::clone(stream),
                    entry: GroupEntry {
                        id: entry.id,
                        fields: Some(entry.fields),
                    },
                    deliveries,
                });
            }
        }
        Ok(reclaimed)
    }

    /// Passes cancellation requests (recorded as the state `Cancelled`, by
    /// any process) to the tasks in flight, until `stop`.
    async fn cancel_loop(self: Arc<Self>, stop: CancellationToken) {
        let states = &self.orcastra.inner().states;
        loop {
            let cancellations = states.cancellations();
            tokio::pin!(cancellations);
            cancellations.as_mut().enable();
            for run in self.in_flight.lock().values() {
                self.cancel_if_cancelled(run.task, &run.cancel);
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = cancellations => {}
            }
        }
    }

    /// Tells the run of `task` it was cancelled, if it was.
    fn cancel_if_cancelled(&self, task: TaskId, cancel: &CancellationToken) {
        let states = &self.orcastra.inner().states;
        if states
            .stage(task)
            .is_some_and(|(state, _)| state == State::Cancelled)
        {
            cancel.cancel();
        }
    }

    /// Renews the leases of the tasks in flight, three times per lease,
    /// until cancelled.
    async fn renew_loop(self: Arc<Self>, renewing: CancellationToken) {
        loop {
            tokio::select! {
                () = renewing.cancelled() => return,
                () = tokio::time::sleep(self.lease / 3) => {}
            }
            let mut by_queue: HashMap<Arc<str>, Vec<StreamId>> = HashMap::new();
            for (queue, id) in self.in_flight.lock().keys() {
                by_queue.entry(queue.clone()).or_default().push(*id);
            }
            for (queue, ids) in by_queue {
                // JUSTID resets the idle time without counting a delivery.
                let renew = ClaimOptions {
                    just_id: true,
                    ..ClaimOptions::default()
                };
                let renewed = self
                    .orcastra
                    .streams()
                    .claim(&queue, WORKERS, &self.name, Duration::ZERO, &ids, renew)
                    .await;
                if let Err(error) = renewed {
                    tracing::warn!(worker = %self.name, %queue, %error, "cannot renew task leases");
                }
            }
        }
    }

    /// Abandons the runs still in flight and hands their tasks to the
    /// other workers at once.
    async fn release_in_flight(&self) {
        let released: Vec<(Arc<str>, StreamId)> = {
            // Under the lock: every run that sees it is still listed.
            let in_flight = self.in_flight.lock();
            self.release.cancel();
            in_flight.keys().cloned().collect()
        };
        self.release(released).await;
    }

    /// Hands entries of this worker (stream, id) to the other workers at
    /// once: their next reclaim takes them.
    async fn release(&self, entries: Vec<(Arc<str>, StreamId)>) {
        for (stream, id) in entries {
            let release = ClaimOptions {
                time_ms: Some(RELEASED_AT_MS),
                just_id: true,
                ..ClaimOptions::default()
            };
            let streams = self.orcastra.streams();
            let claimed = streams
                .claim(&stream, WORKERS, &self.name, Duration::ZERO, &[id], release)
                .await;
            match claimed {
                Ok(_) => {
                    tracing::info!(worker = %self.name, %stream, %id, "released a task")
                }
                Err(error) => {
                    tracing::warn!(worker = %self.name, %stream, %id, %error, "cannot release a task; it waits for its lease to run out")
                }
            }
        }
    }

    /// Runs one delivered task to its end and acknowledges it.
    /// The worker's `slot` is freed once the task's end is written.
    async fn process(&self, task: Fetched, slot: OwnedSemaphorePermit) {
        let Fetched {
            queue,
            stream,
            entry,
            deliveries,
        } = task;
        let id = entry.id;
        let Some(fields) = entry.fields else {
            // Deleted from the queue after delivery: nothing to run.
            self.finish(&stream, id, Write::default(), slot);
            return;
        };
        let Some(raw) = field(&fields, "task") else {
            self.dead_letter(
                (&queue, &stream),
                id,
                fields,
                None,
                "the entry has no `task` field".into(),
                slot,
            );
            return;
        };
        let known = |text: &str| match self.tasks.get_key_value(text) {
            Some((name, _)) => Some(name.clone()),
            None => (*queue == *text).then(|| queue.clone()),
        };
        let envelope = match Envelope::decode_sharing(raw, known) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.dead_letter((&queue, &stream), id, fields, None, error.to_string(), slot);
                return;
            }
        };
        let Some(task) = self.tasks.get(&*envelope.name) else {
            let reason = format!(
                "no task named {:?} is registered with worker {}",
                envelope.name, self.name
            );
            self.dead_letter((&queue, &stream), id, fields, Some(&envelope), reason, slot);
            return;
        };
        let cancel = CancellationToken::new();
        let key = (Arc::clone(&stream), id);
        let in_flight = InFlight {
            task: envelope.id,
            cancel: cancel.clone(),
        };
        // In flight before its state is checked: a cancellation recorded
        // after the check finds it there (see `cancel_loop`).
        self.in_flight.lock().insert(key.clone(), in_flight);
        if let Some((state, attempt)) = self.orcastra.inner().states.stage(envelope.id)
            && (state == State::Cancelled
                || attempt > envelope.attempt
                || (attempt == envelope.attempt && state.ends_attempt()))
        {
            // Cancelled, or a copy of a run that already ended (a timekeeper
            // crashed between queueing it and acknowledging the schedule).
            tracing::info!(worker = %self.name, task = %envelope.id, ?state, "skipped a task that must not run");
            self.in_flight.lock().remove(&key);
            self.finish(&stream, id, Write::default(), slot);
            return;
        }
        let options = task.options();
        let max_deliveries = options.max_deliveries;
        if deliveries > u64::from(max_deliveries) {
            let reason = format!(
                "delivered {deliveries} times without finishing (at most {max_deliveries}): \
                 its workers died or stalled each time"
            );
            self.in_flight.lock().remove(&key);
            self.dead_letter((&queue, &stream), id, fields, Some(&envelope), reason, slot);
            return;
        }
        let mut running = RunState::new(
            envelope.id,
            envelope.name.clone(),
            envelope.queue.clone(),
            State::Running,
            envelope.attempt,
        );
        running.worker = Some(self.name.clone());
        running.started_ms = Some(self.orcastra.inner().clock.now_ms());
        let timeout = envelope.timeout.or(options.timeout);
        let progress = Arc::new(Progress::default());
        let context =
            TaskContext::reporting(envelope.id, envelope.attempt, cancel, Arc::clone(&progress));
        // Boxed by `run` (its type is erased), like the rarer awaits below:
        // every runner keeps a future of this function's size.
        let mut run = task.run(&envelope.args, context, timeout, &self.release);
        let outcome = match futures_util::poll!(run.as_mut()) {
            // Ended at once: its end, which names when it started, is the
            // run's one event (one write, where most runs take two).
            Poll::Ready(outcome) => outcome,
            Poll::Pending => {
                // Not waited for: the end of the run is written after it,
                // and if this write fails, so does that one, leaving the
                // task pending.
                self.orcastra.write_later(Write::state(running.clone()));
                let mut recorded = 0;
                loop {
                    tokio::select! {
                        outcome = &mut run => break outcome,
                        () = progress.reported() => {
                            let (reports, latest) = progress.latest();
                            if reports > recorded {
                                recorded = reports;
                                let mut report = running.clone();
                                report.progress = latest;
                                Box::pin(self.record(report)).await;
                            }
                        }
                    }
                }
            }
        };
        // Whether someone cancelled it while it ran.
        let cancelled = self
            .in_flight
            .lock()
            .remove(&key)
            .is_some_and(|run| run.cancel.is_cancelled());
        let mut end = running;
        // The end keeps the progress last reported, even by a run that
        // ended before it was recorded.
        end.progress = progress.latest().1;
        let mut write = Write::default();
        match outcome {
            Outcome::Succeeded(json) => {
                end.state = State::Succeeded;
                end.result = Some(json);
            }
            Outcome::Failed(error) => {
                end.error = Some(error.message().to_string());
                end.state = State::Failed;
                let retries = envelope.max_retries.unwrap_or(options.retries);
                let delay = match error.retry() {
                    Retry::Never => None,
                    Retry::After(delay) => Some(delay),
                    Retry::AsConfigured => {
                        Some(options.backoff.delay(envelope.attempt, fastrand::f64()))
                    }
                };
                if let Some(delay) = delay.filter(|_| envelope.attempt < retries && !cancelled) {
                    let mut next = envelope.clone();
                    next.attempt += 1;
                    let now = self.orcastra.inner().clock.now_ms();
                    next.not_before_ms = timekeeper::due_after(now, delay);
                    if let Err(error) = Box::pin(timekeeper::add_to_schedule(
                        &self.orcastra,
                        &next,
                        &mut write,
                    ))
                    .await
                    {
                        tracing::warn!(worker = %self.name, task = %envelope.id, %error, "cannot schedule a retry; the task stays pending");
                        return;
                    }
                    end.state = State::Retrying;
                }
            }
            Outcome::Dead(reason) => {
                self.dead_letter((&queue, &stream), id, fields, Some(&envelope), reason, slot);
                return;
            }
            // Another worker runs it now.
            Outcome::Released => return,
        }
        write.record(end);
        self.finish(&stream, id, write, slot);
    }

    /// Moves a task that can never run to the dead letters, records it dead
    /// and acknowledges it.
    fn dead_letter(
        &self,
        (queue, stream): (&str, &Arc<str>),
        id: StreamId,
        mut fields: Fields,
        envelope: Option<&Envelope>,
        reason: String,
        slot: OwnedSemaphorePermit,
    ) {
        tracing::warn!(worker = %self.name, %stream, %id, %reason, "task moved to the dead letters");
        fields.push((Bytes::from_static(b"reason"), Bytes::from(reason.clone())));
        let mut write = Write::default();
        write.adds.push((dead_stream(queue).into(), fields));
        if let Some(envelope) = envelope {
            let mut dead = RunState::new(
                envelope.id,
                envelope.name.clone(),
                envelope.queue.clone(),
                State::Dead,
                envelope.attempt,
            );
            dead.worker = Some(self.name.clone());
            dead.error = Some(reason);
            write.record(dead);
        }
        self.finish(stream, id, write, slot);
    }

    /// Writes how a task ended and acknowledges its entry, in one write
    /// (the acknowledgement last), which frees the worker's `slot` as its
    /// states start to be written. Not waited for: if the backend fails,
    /// the writer logs it and the task stays pending, to be delivered
    /// again.
    fn finish(
        &self,
        stream: &Arc<str>,
        id: StreamId,
        mut write: Write,
        slot: OwnedSemaphorePermit,
    ) {
        write.acks.push((Arc::clone(stream), WORKERS, id));
        write.slot = Some(slot);
        self.orcastra.write_later(write);
    }

    /// Records a state of a running task; a failure is logged (the run
    /// goes on, and its end is recorded or it is delivered again).
    async fn record(&self, state: RunState) {
        let task = state.id;
        if let Err(error) = self.orcastra.write(Write::state(state)).await {
            tracing::warn!(worker = %self.name, %task, %error, "cannot record a task state");
        }
    }
}

/// Runs a task, catching its panic as a failure; a timeout or a release
/// drops it at its next await.
async fn guarded(
    run: impl Future<Output = Outcome>,
    timeout: Option<Duration>,
    release: &CancellationToken,
) -> Outcome {
    let caught = AssertUnwindSafe(run).catch_unwind();
    let limited = async {
        match timeout {
            Some(limit) => tokio::time::timeout(limit, caught).await.ok(),
            None => Some(caught.await),
        }
    };
    let ended = tokio::select! {
        // The run first: one that is over is recorded, not released, and
        // one that ends at its first poll never waits for the release.
        biased;
        ended = limited => ended,
        () = release.cancelled() => return Outcome::Released,
    };
    match ended {
        Some(Ok(outcome)) => outcome,
        Some(Err(panic)) => Outcome::Failed(TaskError::new(format!(
            "panicked: {}",
            panic_message(&panic)
        ))),
        None => {
            let limit = timeout.unwrap_or_default();
            Outcome::Failed(TaskError::new(format!("timed out after {limit:?}")))
        }
    }
}

fn panic_message(payload: &Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_that_is_over_is_recorded_even_as_the_worker_releases() {
        let release = CancellationToken::new();
        release.cancel();
        // Were the run and the release polled in random order, about half
        // of these tries would come out released.
        for _ in 0..64 {
            let run = async { Outcome::Succeeded(Bytes::from_static(b"null")) };
            let outcome = guarded(run, None, &release).await;
            assert!(matches!(outcome, Outcome::Succeeded(_)));
        }
        let still_going = guarded(std::future::pending(), None, &release).await;
        assert!(matches!(still_going, Outcome::Released));
    }
}
