//! Workers: fetch tasks from their queues, run them, record how they ended
//! and acknowledge them.
//!
//! A worker fetches only as many tasks as it has free slots, runs each in a
//! Tokio task of its own (so a panic is a failure, not a crash), enforces
//! timeouts, and acknowledges a task only after its final state is
//! recorded: a worker that dies leaves its tasks pending in the queue's
//! group. Tasks that can never run (an undecodable envelope or arguments, a
//! name no registered task has) go to the queue's dead letters with the
//! reason; they never stop the worker or block the queue.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::orca::{BACKEND_RETRY, Orcastra, WORKERS, dead_stream, queue_stream};
use crate::record::StreamId;
use crate::statekeeper::{RunState, State, StateKeeper};
use crate::streams::{AddOptions, Fields, GroupEntry, GroupRead, ReadGroupOptions, Streams};
use crate::task::{Envelope, Task, TaskContext, TaskError, TaskId, TaskOptions, decode_args};

/// How a run ended.
enum Outcome {
    Succeeded(Bytes),
    Failed(TaskError),
    /// It can never run as it is.
    Dead(String),
}

type Run = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A registered task with its types erased: runs from JSON arguments.
trait Runnable: Send + Sync {
    fn options(&self) -> TaskOptions;
    fn run(&self, args: &[u8], context: TaskContext) -> Run;
}

struct Registered<T>(Arc<T>);

impl<T: Task> Runnable for Registered<T> {
    fn options(&self) -> TaskOptions {
        self.0.options()
    }

    fn run(&self, args: &[u8], context: TaskContext) -> Run {
        let args = match decode_args::<T>(args) {
            Ok(args) => args,
            Err(error) => {
                let reason = error.to_string();
                return Box::pin(async move { Outcome::Dead(reason) });
            }
        };
        let task = Arc::clone(&self.0);
        Box::pin(async move {
            match task.run(args, context).await {
                Ok(output) => match serde_json::to_vec(&output) {
                    Ok(json) => Outcome::Succeeded(Bytes::from(json)),
                    Err(e) => Outcome::Failed(
                        TaskError::new(format!("the result does not encode as JSON: {e}"))
                            .no_retry(),
                    ),
                },
                Err(error) => Outcome::Failed(error),
            }
        })
    }
}

/// Configures a worker; [`start`](Self::start) runs it.
pub struct WorkerBuilder {
    orcastra: Orcastra,
    name: String,
    concurrency: usize,
    tasks: HashMap<&'static str, Arc<dyn Runnable>>,
    queues: Vec<&'static str>,
}

impl WorkerBuilder {
    pub(crate) fn new(orcastra: Orcastra) -> Self {
        WorkerBuilder {
            orcastra,
            name: format!("worker-{}", TaskId::new()),
            concurrency: 1,
            tasks: HashMap::new(),
            queues: Vec::new(),
        }
    }

    /// Runs at most this many tasks at once (at least 1; default 1).
    pub fn concurrency(mut self, tasks: usize) -> Self {
        self.concurrency = tasks.max(1);
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
        if !self.queues.contains(&queue) {
            self.queues.push(queue);
        }
        self.tasks
            .insert(T::NAME, Arc::new(Registered(Arc::new(task))));
        self
    }

    /// Starts fetching and running tasks.
    pub async fn start(self) -> Result<Worker, crate::Error> {
        let queues: Vec<String> = self.queues.iter().map(|q| queue_stream(q)).collect();
        for queue in &queues {
            self.orcastra.ensure_queue(queue).await?;
        }
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            orcastra: self.orcastra,
            name: self.name,
            tasks: self.tasks,
            slots: Arc::new(Semaphore::new(self.concurrency)),
            concurrency: self.concurrency,
        });
        let fetch = tokio::spawn(Arc::clone(&shared).fetch_loop(queues, stop.clone()));
        Ok(Worker {
            shared,
            stop,
            fetch: Some(fetch),
        })
    }
}

/// A running worker. Dropping it stops fetching; [`stop`](Self::stop) also
/// waits for the tasks in flight.
pub struct Worker {
    shared: Arc<Shared>,
    stop: CancellationToken,
    fetch: Option<JoinHandle<()>>,
}

impl Worker {
    /// Stops fetching and waits for the tasks in flight to end.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(fetch) = self.fetch.take() {
            let _ = fetch.await;
        }
        let all = u32::try_from(self.shared.concurrency).unwrap_or(u32::MAX);
        let _ = self.shared.slots.acquire_many(all).await;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Shared {
    orcastra: Orcastra,
    name: String,
    tasks: HashMap<&'static str, Arc<dyn Runnable>>,
    /// One permit per free slot.
    slots: Arc<Semaphore>,
    concurrency: usize,
}

/// How long one fetch waits for a task before checking for a stop.
const FETCH_BLOCK: Duration = Duration::from_millis(250);

impl Shared {
    /// Fetches as many tasks as there are free slots and runs each; backend
    /// errors are logged and retried with backoff, never the end of the loop.
    async fn fetch_loop(self: Arc<Self>, queues: Vec<String>, stop: CancellationToken) {
        let mut failures = 0u32;
        let mut next_queue = 0;
        while !stop.is_cancelled() {
            // Wait for a free slot.
            let Ok(first) = Arc::clone(&self.slots).acquire_owned().await else {
                return;
            };
            let free = self.slots.available_permits() + 1;
            // At most one task per queue per slot, from the next queues in turn.
            let count = queues.len().min(free);
            let reads: Vec<(&str, GroupRead)> = (0..count)
                .map(|i| {
                    (
                        queues[(next_queue + i) % queues.len()].as_str(),
                        GroupRead::New,
                    )
                })
                .collect();
            next_queue = (next_queue + 1) % queues.len();
            let per_queue = free / reads.len();
            let options = ReadGroupOptions {
                count: Some(per_queue),
                block: Some(FETCH_BLOCK),
                no_ack: false,
            };
            let read = self
                .orcastra
                .inner()
                .streams
                .read_group(WORKERS, &self.name, &reads, options)
                .await;
            let fetched = match read {
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
            for (queue, entries) in fetched {
                for entry in entries {
                    let permit = match slot.take() {
                        Some(permit) => permit,
                        None => match Arc::clone(&self.slots).try_acquire_owned() {
                            Ok(permit) => permit,
                            // Never: a fetch takes no more than the free slots.
                            Err(_) => break,
                        },
                    };
                    let this = Arc::clone(&self);
                    let queue = queue.clone();
                    tokio::spawn(async move {
                        this.process(&queue, entry).await;
                        drop(permit);
                    });
                }
            }
        }
    }

    /// Runs one delivered task to its end and acknowledges it.
    async fn process(&self, queue: &str, entry: GroupEntry) {
        let id = entry.id;
        let Some(fields) = entry.fields else {
            // Deleted from the queue after delivery: nothing to run.
            self.ack(queue, id).await;
            return;
        };
        let Some(raw) = field(&fields, "task") else {
            self.dead_letter(
                queue,
                id,
                fields,
                None,
                "the entry has no `task` field".into(),
            )
            .await;
            return;
        };
        let envelope = match Envelope::decode(&raw) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.dead_letter(queue, id, fields, None, error.to_string())
                    .await;
                return;
            }
        };
        let Some(task) = self.tasks.get(envelope.name.as_str()) else {
            let reason = format!(
                "no task named {:?} is registered with worker {}",
                envelope.name, self.name
            );
            self.dead_letter(queue, id, fields, Some(&envelope), reason)
                .await;
            return;
        };
        let mut running = RunState::new(
            envelope.id,
            &envelope.name,
            State::Running,
            envelope.attempt,
        );
        running.worker = Some(self.name.clone());
        if !self.record(&running).await {
            return;
        }
        let options = task.options();
        let timeout = envelope.timeout.or(options.timeout);
        let cancel = CancellationToken::new();
        let context = TaskContext::new(envelope.id, envelope.attempt, cancel.clone());
        let outcome = run(task.run(&envelope.args, context), timeout).await;
        cancel.cancel();
        let mut end = running;
        match outcome {
            Outcome::Succeeded(json) => {
                end.state = State::Succeeded;
                end.result = Some(json);
            }
            Outcome::Failed(error) => {
                end.state = State::Failed;
                end.error = Some(error.message().to_string());
            }
            Outcome::Dead(reason) => {
                self.dead_letter(queue, id, fields, Some(&envelope), reason)
                    .await;
                return;
            }
        }
        if self.record(&end).await {
            self.ack(queue, id).await;
        }
    }

    /// Moves a task that can never run to the dead letters, records it dead
    /// and acknowledges it.
    async fn dead_letter(
        &self,
        queue: &str,
        id: StreamId,
        mut fields: Fields,
        envelope: Option<&Envelope>,
        reason: String,
    ) {
        tracing::warn!(worker = %self.name, %queue, %id, %reason, "task moved to the dead letters");
        let name = queue.strip_prefix("orca:queue:").unwrap_or(queue);
        fields.push((Bytes::from_static(b"reason"), Bytes::from(reason.clone())));
        let added = self
            .orcastra
            .inner()
            .streams
            .add(&dead_stream(name), fields, AddOptions::default())
            .await;
        if let Err(error) = added {
            tracing::warn!(worker = %self.name, %error, "cannot write a dead letter; the task stays pending");
            return;
        }
        if let Some(envelope) = envelope {
            let mut dead =
                RunState::new(envelope.id, &envelope.name, State::Dead, envelope.attempt);
            dead.worker = Some(self.name.clone());
            dead.error = Some(reason);
            if !self.record(&dead).await {
                return;
            }
        }
        self.ack(queue, id).await;
    }

    /// Records a state; false (logged) if the backend failed, in which case
    /// the task stays pending and is delivered again.
    async fn record(&self, state: &RunState) -> bool {
        match StateKeeper::record(&self.orcastra.inner().streams, state).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(worker = %self.name, task = %state.id, %error, "cannot record a task state");
                false
            }
        }
    }

    async fn ack(&self, queue: &str, id: StreamId) {
        if let Err(error) = self
            .orcastra
            .inner()
            .streams
            .ack(queue, WORKERS, &[id])
            .await
        {
            tracing::warn!(worker = %self.name, %queue, %id, %error, "cannot acknowledge a task");
        }
    }
}

fn field(fields: &Fields, name: &str) -> Option<Bytes> {
    fields
        .iter()
        .find(|(key, _)| key == name.as_bytes())
        .map(|(_, value)| value.clone())
}

/// Runs a task in a Tokio task of its own, so that a panic is a failure and
/// a timeout can abort it.
async fn run(run: Run, timeout: Option<Duration>) -> Outcome {
    let mut handle = tokio::spawn(run);
    let joined = match timeout {
        None => (&mut handle).await,
        Some(limit) => match tokio::time::timeout(limit, &mut handle).await {
            Ok(joined) => joined,
            Err(_) => {
                handle.abort();
                return Outcome::Failed(TaskError::new(format!("timed out after {limit:?}")));
            }
        },
    };
    match joined {
        Ok(outcome) => outcome,
        Err(error) if error.is_panic() => Outcome::Failed(TaskError::new(format!(
            "panicked: {}",
            panic_message(&error.into_panic())
        ))),
        Err(error) => Outcome::Failed(TaskError::new(format!("did not finish: {error}"))),
    }
}

fn panic_message(payload: &Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".into())
}
