//! [`Orcastra`]: a handle on a task backend, to submit tasks, follow their
//! states and start workers.

mod admin;
mod housekeeping;
mod unique;
mod writer;

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt, HashSet};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;

use crate::log::LogOptions;
use crate::record::StreamId;
use crate::record::layout::MAX_LIST;
use crate::statekeeper::{RunState, State, StateKeeper};
use crate::streams::{Backend, Clock, GroupStart, StreamError, Streams, SystemClock};
use crate::task::{ArgsError, Backoff, Envelope, Name, Task, TaskId, encode_args_into};
use crate::timekeeper;
use crate::worker::WorkerBuilder;

pub use admin::{DeadLetter, QueueInfo};
pub(crate) use writer::Write;
use writer::Writer;

/// The consumer group every worker of a queue belongs to.
pub(crate) const WORKERS: &str = "workers";

/// Priorities run from 0, the default, to this, the highest.
pub const MAX_PRIORITY: u8 = 3;

/// The stream of queue `queue`'s tasks of `priority` (above
/// [`MAX_PRIORITY`] counts as the highest).
pub(crate) fn queue_stream(queue: &str, priority: u8) -> String {
    // Not `format!`: this runs for every submission, and formatting took
    // about 700 instructions.
    match priority.min(MAX_PRIORITY) {
        0 => ["orca:queue:", queue].concat(),
        level => ["orca:queue+", &level.to_string(), ":", queue].concat(),
    }
}

/// The dead letters of queue `queue`.
pub(crate) fn dead_stream(queue: &str) -> String {
    format!("orca:dead:{queue}")
}

/// The delivery time (milliseconds since the epoch) that releases a pending
/// entry: any consumer's next reclaim takes it. (Redis reads an IDLE longer
/// than the time since the epoch as no idle time at all, so TIME it is.)
pub(crate) const RELEASED_AT_MS: u64 = 1;

/// What can go wrong submitting a task or awaiting it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend failed.
    #[error(transparent)]
    Streams(#[from] StreamError),
    /// The arguments do not encode.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// A submission by name ([`Orcastra::submit_json`]) without a name or
    /// queue, or with arguments that are not a JSON array.
    #[error("cannot submit task {name:?}: {reason}")]
    Submission {
        /// The task's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A submission with a priority above [`MAX_PRIORITY`].
    #[error("priority {0} is out of range: 0 (the default) to {MAX_PRIORITY} (the highest)")]
    Priority(u8),
    /// The task finished longer ago than results are kept
    /// ([`Orcastra::keep_results`]), or more finished tasks than are kept in
    /// memory ended after it ([`Orcastra::keep_results_in_memory`]) while
    /// no handle held it: its result is gone.
    #[error("task {0} ended longer ago than results are kept; its result is gone")]
    Forgotten(TaskId),
    /// A result does not decode as the task's output type.
    #[error("the result of task {id} does not decode: {reason}")]
    Output {
        /// The task.
        id: TaskId,
        /// What serde said.
        reason: String,
    },
}

/// Options of one submission; `None` keeps the task's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubmitOptions {
    /// Run no sooner than this long from now.
    pub delay: Option<Duration>,
    /// Run no sooner than this time (milliseconds since the Unix epoch).
    pub not_before_ms: Option<u64>,
    /// Higher runs first: 0 (the default) to [`MAX_PRIORITY`].
    pub priority: Option<u8>,
    /// Retries after a failure.
    pub retries: Option<u32>,
    /// How long one run may take.
    pub timeout: Option<Duration>,
    /// An idempotency key: while a task of this name submitted with this
    /// key has not finished, submitting it again returns that task instead
    /// of a new one.
    pub unique_key: Option<String>,
    /// With `unique_key`: how long after the task finished it still answers
    /// for its key (default: not at all).
    pub unique_for: Option<Duration>,
}

/// A task that ended without a result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("task {id} is {state:?}: {message}")]
pub struct TaskFailure {
    /// The task.
    pub id: TaskId,
    /// How it ended: `Failed` or `Dead`.
    pub state: State,
    /// Why.
    pub message: String,
}

/// A handle on a task backend: submits tasks, reports their states, starts
/// workers. Cheap to clone; every clone shares one backend.
///
/// ```
/// use orcastra::prelude::*;
///
/// #[orca_task]
/// async fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let orca = Orcastra::open("memory://").await?;
/// let worker = orca.worker().register(add::task()).start().await?;
/// let handle = add::submit(&orca, 2, 3).await?;
/// assert_eq!(handle.result().await??, 5);
/// worker.stop().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Orcastra {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) streams: Backend,
    pub(crate) states: StateKeeper,
    writer: Writer,
    /// What due times and backoffs are measured with.
    pub(crate) clock: Arc<dyn Clock>,
    /// How long state events and results are kept, in milliseconds.
    keep_results_ms: AtomicU64,
    /// Wakes the housekeeping when the time results are kept changes.
    keep_changed: Arc<tokio::sync::Notify>,
    /// Groups this process knows to exist, by stream.
    groups: Mutex<HashMap<String, HashSet<String>>>,
}

impl Inner {
    fn keep_results(&self) -> Duration {
        Duration::from_millis(self.keep_results_ms.load(Ordering::Relaxed))
    }
}

impl Orcastra {
    /// Opens the backend `url` names (see [`Backend`]): a directory for the
    /// segment log (the default), `memory://`, `text:DIR`, or `redis://…`.
    pub async fn open(url: &str) -> Result<Orcastra, Error> {
        Self::open_with(url, LogOptions::default()).await
    }

    /// Opens `url` with these options for file-backed logs.
    pub async fn open_with(url: &str, options: LogOptions) -> Result<Orcastra, Error> {
        Ok(Self::on(Backend::open(url, options).await?))
    }

    /// Tasks over `streams`. Must be called within a Tokio runtime: the
    /// handle follows the state events and combines writes in tasks of its
    /// own.
    pub fn on(streams: Backend) -> Orcastra {
        Self::on_with_clock(streams, SystemClock)
    }

    /// Tasks over `streams`, with due times and retry delays measured by
    /// `clock` (the system clock otherwise): a test can run delayed tasks
    /// and backoffs on Tokio's paused time with a clock that follows it.
    pub fn on_with_clock(streams: Backend, clock: impl Clock) -> Orcastra {
        let inner = Arc::new_cyclic(|weak| {
            let (writer, combine) = Writer::start(weak.clone());
            tokio::spawn(combine);
            Inner {
                streams,
                states: StateKeeper::default(),
                writer,
                clock: Arc::new(clock),
                keep_results_ms: AtomicU64::new(DEFAULT_KEEP_RESULTS.as_millis() as u64),
                keep_changed: Arc::default(),
                groups: Mutex::new(HashMap::new()),
            }
        });
        tokio::spawn(housekeeping::run(Arc::downgrade(&inner)));
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut failures = 0u32;
            // Holds the backend only while someone holds the handle.
            while let Some(inner) = weak.upgrade() {
                match inner.states.catch_up(&inner.streams, FOLLOW_BLOCK).await {
                    Ok(_) => failures = 0,
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        let delay = BACKEND_RETRY.delay(failures - 1, fastrand::f64());
                        tracing::warn!(%error, ?delay, "reading task states failed; retrying");
                        drop(inner);
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        });
        Orcastra { inner }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Keeps state events, and so results, for `keep` from when they were
    /// recorded (default one day); older ones are trimmed from the backend
    /// and finished tasks older than that forgotten: awaiting the result of
    /// one fails with [`Error::Forgotten`]. A task that waits longer than
    /// `keep` for its worker has no state in processes that start after
    /// its events went, until it runs.
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    ///
    /// let orca = orcastra::Orcastra::open("memory://").await?;
    /// orca.keep_results(Duration::from_secs(3600));
    /// # Ok(())
    /// # }
    /// ```
    pub fn keep_results(&self, keep: Duration) {
        let ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX).max(1);
        self.inner.keep_results_ms.store(ms, Ordering::Relaxed);
        self.inner.keep_changed.notify_waiters();
    }

    /// Keeps the states of at most `max` finished tasks in memory (default
    /// 100 000), besides those of tasks that a [`TaskHandle`] of this
    /// process holds or that someone awaits: the oldest others leave, and
    /// awaiting or looking one up then finds it forgotten, as if it were
    /// older than [`keep_results`](Self::keep_results) (its events stay in
    /// `orca:states` until then). Memory stays bounded however many tasks
    /// run within the time results are kept.
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let orca = orcastra::Orcastra::open("memory://").await?;
    /// orca.keep_results_in_memory(1_000_000);
    /// # Ok(())
    /// # }
    /// ```
    pub fn keep_results_in_memory(&self, max: usize) {
        self.inner.states.keep_finished(max);
    }

    /// Every state this process records or reads from now on, as it comes
    /// (a receiver that falls more than 4096 states behind loses the
    /// oldest and is told how many): for live views of tasks.
    ///
    /// ```
    /// use orcastra::prelude::*;
    ///
    /// #[orca_task]
    /// async fn ping() {}
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let orca = Orcastra::open("memory://").await?;
    /// let mut events = orca.subscribe();
    /// let worker = orca.worker().register(ping::task()).start().await?;
    /// let handle = ping::submit(&orca).await?;
    /// loop {
    ///     let event = events.recv().await?;
    ///     if event.id == handle.id() && event.state == State::Succeeded {
    ///         break;
    ///     }
    /// }
    /// worker.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RunState> {
        self.inner.states.subscribe()
    }

    /// The streams underneath: the queues (`orca:queue:<name>`, group
    /// `workers`), their dead letters (`orca:dead:<name>`) and the state
    /// events (`orca:states`).
    pub fn streams(&self) -> &Backend {
        &self.inner.streams
    }

    /// Submits a task; returns once it is durably queued. This process
    /// sees it queued at once; its `queued` state event is recorded just
    /// after, without the submission waiting for that fsync (a power loss
    /// in between leaves the task queued, with no state until it runs),
    /// except for a unique submission, which waits for it.
    pub async fn submit<T: Task>(
        &self,
        task: T,
        args: T::Args,
    ) -> Result<TaskHandle<T::Output>, Error> {
        self.submit_with(task, args, SubmitOptions::default()).await
    }

    /// Submits a task with options for this submission (a delay, a
    /// priority, other limits); returns once it is durably queued or
    /// scheduled.
    ///
    /// ```
    /// use orcastra::prelude::*;
    /// use orcastra::SubmitOptions;
    /// use std::time::Duration;
    ///
    /// #[orca_task]
    /// async fn remind(who: String) -> String {
    ///     format!("hello {who}")
    /// }
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let orca = Orcastra::open("memory://").await?;
    /// let worker = orca.worker().register(remind::task()).start().await?;
    /// let later = SubmitOptions { delay: Some(Duration::from_millis(50)), ..Default::default() };
    /// let handle = orca.submit_with(remind::task(), ("ada".into(),), later).await?;
    /// assert_eq!(orca.state(handle.id()).map(|s| s.state), Some(State::Scheduled));
    /// assert_eq!(handle.result().await??, "hello ada");
    /// worker.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn submit_with<T: Task>(
        &self,
        task: T,
        args: T::Args,
        options: SubmitOptions,
    ) -> Result<TaskHandle<T::Output>, Error> {
        let mut handles = self.submit_many_with(task, [args], options).await?;
        Ok(handles.pop().expect("one handle per submission"))
    }

    /// Submits many tasks of one kind in one write: far cheaper per task
    /// than one [`submit`](Self::submit) each; returns once all are
    /// durably queued or scheduled, in the order of `args`.
    ///
    /// ```
    /// use orcastra::prelude::*;
    /// use orcastra::SubmitOptions;
    ///
    /// #[orca_task]
    /// async fn double(n: u64) -> u64 {
    ///     n * 2
    /// }
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let orca = Orcastra::open("memory://").await?;
    /// let worker = orca.worker().concurrency(8).register(double::task()).start().await?;
    /// let args = (1..=100).map(|n| (n,));
    /// let handles = orca.submit_many_with(double::task(), args, SubmitOptions::default()).await?;
    /// assert_eq!(handles[99].result().await??, 200);
    /// worker.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn submit_many_with<T: Task>(
        &self,
        task: T,
        args: impl IntoIterator<Item = T::Args>,
        options: SubmitOptions,
    ) -> Result<Vec<TaskHandle<T::Output>>, Error> {
        let defaults = task.options();
        // One buffer holds every task's arguments, each a slice of it: one
        // allocation per submission, not two per task.
        let (mut json, mut spans) = (Vec::new(), Vec::new());
        for args in args {
            let start = json.len();
            encode_args_into::<T>(&args, &mut json)?;
            spans.push(start..json.len());
        }
        let json = Bytes::from(json);
        let args = spans.into_iter().map(|span| json.slice(span));
        let ids = self
            .submit_encoded(
                Name::from_static(T::NAME),
                Name::from_static(defaults.queue),
                defaults.priority,
                args.collect(),
                options,
                true,
            )
            .await?;
        Ok(ids.into_iter().map(|id| self.held_handle(id)).collect())
    }

    /// Submits tasks of one kind whose arguments are encoded already:
    /// what every way of submitting comes down to. With `hold`, their
    /// states are held in memory from before they can run, for handles
    /// made from the ids (see [`held_handle`](Self::held_handle)).
    async fn submit_encoded(
        &self,
        name: Name,
        queue: Name,
        default_priority: u8,
        args: Vec<Bytes>,
        options: SubmitOptions,
        hold: bool,
    ) -> Result<Vec<TaskId>, Error> {
        let now = self.inner.clock.now_ms();
        let not_before = options.not_before_ms.unwrap_or(0).max(match options.delay {
            Some(delay) if !delay.is_zero() => timekeeper::due_after(now, delay),
            _ => now,
        });
        let priority = options.priority.unwrap_or(default_priority);
        if priority > MAX_PRIORITY {
            return Err(Error::Priority(priority));
        }
        if let Some(size) = args.iter().map(Bytes::len).find(|&size| size >= MAX_LIST) {
            return Err(Error::Submission {
                name: name.to_string(),
                reason: format!("arguments of {size} bytes; an envelope holds less than 512 MiB"),
            });
        }
        // A unique submission waits for its states too: a key whose task
        // has no recorded state counts as free after a while
        // (`unique::CLAIM_GRACE`), so a power loss that took the state
        // could let a second task take it.
        let mut write = Write {
            answered_once_added: options.unique_key.is_none(),
            ..Write::default()
        };
        write.adds.reserve(args.len());
        let mut ids = Vec::with_capacity(args.len());
        let stream = if not_before <= now {
            Some(self.served_queue(&queue, priority).await?)
        } else {
            None
        };
        for args in args {
            let mut envelope = Envelope::new(name.clone(), queue.clone(), args, now);
            if let Some(key) = &options.unique_key {
                let window = options.unique_for.unwrap_or_default();
                match self.claim(&name, key, window).await? {
                    unique::Claim::Held(id) => {
                        ids.push(id);
                        continue;
                    }
                    unique::Claim::Taken(id) => {
                        envelope.id = id;
                        envelope.idempotency_key = Some(key.clone());
                    }
                }
            }
            envelope.priority = priority;
            envelope.max_retries = options.retries;
            envelope.timeout = options.timeout;
            if let Some(stream) = &stream {
                Orcastra::add_to_queue(stream, &envelope, &mut write);
            } else {
                envelope.not_before_ms = not_before;
                timekeeper::add_to_schedule(self, &envelope, &mut write).await?;
                let scheduled = RunState::new(
                    envelope.id,
                    envelope.name.clone(),
                    envelope.queue.clone(),
                    State::Scheduled,
                    0,
                );
                write.record(scheduled);
            }
            ids.push(envelope.id);
        }
        if hold {
            for &id in &ids {
                self.inner.states.hold(id);
            }
        }
        if let Err(error) = self.write(write).await {
            if hold {
                for &id in &ids {
                    self.inner.states.release(id);
                }
            }
            return Err(error.into());
        }
        Ok(ids)
    }

    /// A handle on task `id`, submitted by any process sharing the
    /// backend, to await its result as an `O`.
    ///
    /// ```
    /// use orcastra::prelude::*;
    ///
    /// #[orca_task]
    /// async fn square(n: u64) -> u64 {
    ///     n * n
    /// }
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let orca = Orcastra::open("memory://").await?;
    /// let worker = orca.worker().register(square::task()).start().await?;
    /// let id = square::submit(&orca, 7).await?.id();
    /// // Elsewhere, knowing only the id:
    /// let result: u64 = orca.handle(id).result().await??;
    /// assert_eq!(result, 49);
    /// worker.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn handle<O>(&self, id: TaskId) -> TaskHandle<O> {
        self.inner.states.hold(id);
        self.held_handle(id)
    }

    /// A handle on task `id`, whose state is held for it already.
    fn held_handle<O>(&self, id: TaskId) -> TaskHandle<O> {
        TaskHandle {
            id,
            orcastra: self.clone(),
            _output: PhantomData,
        }
    }

    /// The stream of `queue` at `priority`, its workers' group made sure
    /// of: where [`add_to_queue`](Self::add_to_queue) puts its tasks.
    pub(crate) async fn served_queue(
        &self,
        queue: &str,
        priority: u8,
    ) -> Result<Arc<str>, StreamError> {
        let stream = queue_stream(queue, priority);
        self.ensure_group(&stream, WORKERS).await?;
        Ok(stream.into())
    }

    /// Puts an envelope in `stream`, its queue's (see [`served_queue`](Self::served_queue)),
    /// and records it as queued, as part of `write`.
    pub(crate) fn add_to_queue(stream: &Arc<str>, envelope: &Envelope, write: &mut Write) {
        let fields = vec![(Bytes::from_static(b"task"), Bytes::from(envelope.encode()))];
        write.adds.push((Arc::clone(stream), fields));
        let queued = RunState::new(
            envelope.id,
            envelope.name.clone(),
            envelope.queue.clone(),
            State::Queued,
            envelope.attempt,
        );
        write.record(queued);
    }

    /// Writes within the next batch of this process's writes.
    pub(crate) fn write(&self, write: Write) -> impl Future<Output = Result<(), StreamError>> {
        self.inner.writer.write(write)
    }

    /// Queues a write for the next batch without waiting for it: later
    /// writes of this process are done after it.
    pub(crate) fn write_later(&self, write: Write) {
        self.inner.writer.send(write);
    }

    /// Creates `stream` and its `group` if this process has not seen them
    /// yet.
    pub(crate) async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), StreamError> {
        let known = self
            .inner
            .groups
            .lock()
            .get(stream)
            .is_some_and(|g| g.contains(group));
        if known {
            return Ok(());
        }
        let created = self
            .inner
            .streams
            .create_group(stream, group, GroupStart::After(StreamId::MIN), true)
            .await;
        match created {
            Ok(()) | Err(StreamError::BusyGroup) => {
                let mut groups = self.inner.groups.lock();
                groups
                    .entry(stream.to_string())
                    .or_default()
                    .insert(group.to_string());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads every state recorded so far.
    pub(crate) async fn catch_up(&self) -> Result<(), StreamError> {
        let states = &self.inner.states;
        while states.catch_up(&self.inner.streams, Duration::ZERO).await? > 0 {}
        Ok(())
    }

    /// The latest state of a task, as this process has seen it.
    pub fn state(&self, id: TaskId) -> Option<RunState> {
        self.inner.states.get(id)
    }

    /// Cancels a task: one that waits in its queue or for its time never
    /// runs; a running one sees its [`TaskContext`](crate::task::TaskContext)
    /// cancelled and should stop. Either way it ends `Cancelled`. Returns
    /// false, and changes nothing, if the task has already ended or this
    /// process has not seen it (yet).
    pub async fn cancel(&self, id: TaskId) -> Result<bool, Error> {
        let Some(current) = self.state(id) else {
            return Ok(false);
        };
        if current.state.is_final() {
            return Ok(false);
        }
        let mut cancelled = RunState::new(
            id,
            current.name,
            current.queue,
            State::Cancelled,
            current.attempt,
        );
        cancelled.error = Some("cancelled".into());
        self.write(Write::state(cancelled)).await?;
        Ok(true)
    }

    /// A worker to configure and start.
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder::new(self.clone())
    }
}

/// How long results are kept unless told otherwise.
const DEFAULT_KEEP_RESULTS: Duration = Duration::from_secs(24 * 3600);

/// How long one read of the state events waits for one; the follower stops
/// within this time of the last handle going.
const FOLLOW_BLOCK: Duration = Duration::from_secs(1);

/// Backoff after a backend error, for the loops that must never stop.
pub(crate) const BACKEND_RETRY: Backoff = Backoff {
    first: Duration::from_millis(50),
    max: Duration::from_secs(5),
};

/// A submitted task: its id, and its result once it ends.
pub struct TaskHandle<T> {
    id: TaskId,
    orcastra: Orcastra,
    _output: PhantomData<fn() -> T>,
}

/// A task's state stays in memory while a handle on it exists.
impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        self.orcastra.inner.states.release(self.id);
    }
}

impl<T: DeserializeOwned> TaskHandle<T> {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Waits for the task to end: its output, or why it has none.
    pub async fn result(&self) -> Result<Result<T, TaskFailure>, Error> {
        let Some(end) = self.orcastra.inner.states.finished(self.id).await else {
            return Err(Error::Forgotten(self.id));
        };
        if end.state != State::Succeeded {
            return Ok(Err(TaskFailure {
                id: self.id,
                state: end.state,
                message: end.error.unwrap_or_default(),
            }));
        }
        let json = end.result.unwrap_or_default();
        serde_json::from_slice(&json)
            .map(Ok)
            .map_err(|e| Error::Output {
                id: self.id,
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn arguments_too_large_for_an_envelope_are_refused() {
        let orca = Orcastra::open("memory://").await.unwrap();
        let args = vec![b' '; MAX_LIST];
        let options = SubmitOptions::default();
        let refused = orca
            .submit_encoded("t".into(), "q".into(), 0, vec![args.into()], options, false)
            .await;
        assert!(
            matches!(refused, Err(Error::Submission { .. })),
            "{refused:?}"
        );
    }

    /// The writer appends the next batches while one waits for its fsync:
    /// every stream still takes the writes in the order they were sent,
    /// a write to two streams included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_appended_while_an_fsync_stalls_keep_their_order() {
        use crate::log::storage::SimStorage;
        use crate::log::{FsyncPolicy, LogOptions};
        use crate::streams::Bound;
        let sim = SimStorage::new(0);
        let options = LogOptions::default()
            .fsync(FsyncPolicy::Batch)
            .storage(sim.clone());
        let orca = Orcastra::open_with("/data/order", options).await.unwrap();
        sim.stall_syncs_under(Some(std::path::Path::new("/data/order")));
        const WRITES: usize = 200;
        for i in 0..WRITES {
            let mut write = Write::default();
            for stream in ["a", "b"] {
                let fields = vec![(Bytes::from_static(b"i"), Bytes::from(i.to_string()))];
                write.adds.push((stream.into(), fields));
            }
            orca.write_later(write);
            // Lets the writer take what was sent so far as a batch.
            tokio::task::yield_now().await;
        }
        sim.stall_syncs_under(None);
        orca.write(Write::barrier()).await.unwrap();
        let expected: Vec<String> = (0..WRITES).map(|i| i.to_string()).collect();
        for stream in ["a", "b"] {
            let entries = orca.streams().range(stream, Bound::Min, Bound::Max, None);
            let values: Vec<String> = entries
                .await
                .unwrap()
                .into_iter()
                .map(|entry| String::from_utf8_lossy(&entry.fields[0].1).into_owned())
                .collect();
            assert_eq!(values, expected, "stream {stream}");
        }
    }

    /// Acknowledgements sent before a barrier are done when it is. (Here
    /// the writer's stages all run within one poll; that the barrier waits
    /// for their durability is held by the power-loss test
    /// `a_stopped_worker_has_acknowledged_its_tasks_durably`.)
    #[tokio::test]
    async fn a_barrier_is_done_once_every_write_sent_before_it_is() {
        use crate::streams::{GroupRead, ReadGroupOptions};
        let orca = Orcastra::open("memory://").await.unwrap();
        let streams = orca.streams();
        orca.ensure_group("q", WORKERS).await.unwrap();
        let fields = vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v"))];
        let ids = streams.add_batch("q", vec![fields; 3]).await.unwrap();
        let read = [("q", GroupRead::New)];
        let options = ReadGroupOptions::default();
        streams
            .read_group(WORKERS, "w", &read, options)
            .await
            .unwrap();
        for id in ids {
            let mut write = Write::default();
            write.acks.push(("q".into(), WORKERS, id));
            orca.write_later(write);
        }
        orca.write(Write::barrier()).await.unwrap();
        let pending = streams.pending_summary("q", WORKERS).await.unwrap();
        assert_eq!(pending.count, 0);
    }
}
