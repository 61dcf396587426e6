//! Tasks: ordinary async functions that run durably through a queue.
//!
//! Mark a function with [`orca_task`] and it stays callable as it was; next
//! to it the attribute puts a module of the same name whose `Task` type
//! implements [`Task`]: the name workers know it by, its argument and output
//! types, its [`TaskOptions`], and how to run it. The function must be an
//! item of a module (the generated module calls it as `super::name`), not
//! declared inside another function.
//!
//! ```
//! use orcastra::task::{orca_task, Task, TaskError};
//! use std::time::Duration;
//!
//! #[orca_task(queue = "crawl", retries = 5, timeout = "30s")]
//! async fn fetch_page(url: String, depth: i32) -> Result<String, TaskError> {
//!     if depth < 0 {
//!         return Err(TaskError::new("negative depth").no_retry());
//!     }
//!     Ok(format!("<html>{url}</html>"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Still an ordinary function:
//! assert_eq!(fetch_page("a".into(), 1).await.unwrap(), "<html>a</html>");
//!
//! // And a task:
//! let task = fetch_page::task();
//! assert_eq!(fetch_page::Task::NAME, "fetch_page");
//! assert_eq!(task.options().queue, "crawl");
//! assert_eq!(task.options().timeout, Some(Duration::from_secs(30)));
//! # }
//! ```
//!
//! # Arguments and results on the wire
//!
//! A task's arguments travel as a JSON array with one element per argument,
//! in order, each as `serde_json` writes its type (a task without arguments
//! takes `[]`); results are the JSON of the output value. Any language, the
//! command line or an HTTP client can therefore submit a task; see
//! [`encode_args`] and [`decode_args`].

mod envelope;
mod name;
#[rustfmt::skip]
#[allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
pub(crate) mod task_capnp;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use envelope::{Envelope, EnvelopeError, TaskId};
pub use name::Name;
pub use orcastra_macros::orca_task;

/// A task: what [`orca_task`] derives from an async function.
pub trait Task: Send + Sync + 'static {
    /// The name a worker looks the task up by; keep it stable while tasks
    /// of this kind may be queued.
    const NAME: &'static str;
    /// The arguments, as a tuple (`[(); 0]` when there are none).
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// What a successful run returns.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// How the task is queued, retried and limited.
    fn options(&self) -> TaskOptions;

    /// Runs the task once.
    fn run(
        &self,
        args: Self::Args,
        context: TaskContext,
    ) -> impl Future<Output = Result<Self::Output, TaskError>> + Send;
}

/// How a task is queued, retried and limited: the options of
/// `#[orca_task(...)]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskOptions {
    /// The queue it goes to (`queue = "…"`; default `"default"`).
    pub queue: &'static str,
    /// How many times a failed run is retried (`retries = N`; default 3).
    pub retries: u32,
    /// The delay before each retry (`backoff = "1s"` sets its first step).
    pub backoff: Backoff,
    /// How long one run may take (`timeout = "30s"`; default none).
    pub timeout: Option<Duration>,
    /// Higher runs first among tasks of one queue (`priority = N`; default 0).
    pub priority: u8,
    /// How many times one run may be delivered, counting redeliveries after
    /// a worker died, before the task goes to the dead letters as a poison
    /// pill (`max_deliveries = N`; default 5).
    pub max_deliveries: u32,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            queue: "default",
            retries: 3,
            backoff: Backoff::default(),
            timeout: None,
            priority: 0,
            max_deliveries: 5,
        }
    }
}

/// Exponential backoff with jitter: before retry `n` (from 0) a task waits
/// between half and all of `first × 2ⁿ`, at most `max`.
///
/// ```
/// use orcastra::task::Backoff;
/// use std::time::Duration;
///
/// let backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(60) };
/// let third = backoff.delay(2, 0.5);
/// assert_eq!(third, Duration::from_secs(3)); // 4 s, jittered to 3 s
/// assert_eq!(backoff.delay(20, 1.0), Duration::from_secs(60));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The longest delay before the first retry.
    pub first: Duration,
    /// No delay is longer than this.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay before retry `retry` (0 for the first), with `jitter` in
    /// `[0, 1]` choosing where in the upper half of the step it falls.
    /// Jitter keeps tasks that failed together from retrying together.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let step = self
            .first
            .checked_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        step / 2 + step.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
    }
}

/// Why a run failed, and what the task asks for next.
///
/// A task returns `Err` of its error type; anything that converts into a
/// `TaskError` works (`String`, `&str`, and boxed errors convert).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    message: String,
    retry: Retry,
}

/// What a failed run asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Retry with the task's backoff while retries remain.
    AsConfigured,
    /// Retry after this delay (counting as a retry).
    After(Duration),
    /// Do not retry: the task fails now.
    Never,
}

impl TaskError {
    /// A failure that is retried as the task's options say.
    pub fn new(message: impl Into<String>) -> Self {
        TaskError {
            message: message.into(),
            retry: Retry::AsConfigured,
        }
    }

    /// Asks for the next retry after `delay` instead of the backoff.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry = Retry::After(delay);
        self
    }

    /// Asks not to be retried.
    pub fn no_retry(mut self) -> Self {
        self.retry = Retry::Never;
        self
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What the task asks for next.
    pub fn retry(&self) -> Retry {
        self.retry
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

impl From<String> for TaskError {
    fn from(message: String) -> Self {
        TaskError::new(message)
    }
}

impl From<&str> for TaskError {
    fn from(message: &str) -> Self {
        TaskError::new(message)
    }
}

impl From<Box<dyn std::error::Error + Send + Sync>> for TaskError {
    fn from(error: Box<dyn std::error::Error + Send + Sync>) -> Self {
        TaskError::new(error.to_string())
    }
}

/// What a running task knows about its run, and how it reports progress. A
/// task receives it by taking a `TaskContext` argument.
#[derive(Clone, Debug)]
pub struct TaskContext {
    id: TaskId,
    attempt: u32,
    cancel: CancellationToken,
    progress: Option<Arc<Progress>>,
}

/// The progress a run reported last, for its worker to record. (A
/// `watch` channel per run cost a large allocation and, as its sender
/// dropped, a wake-up of eight lists of waiters.)
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// The latest report, and how many came so far.
    latest: Mutex<(u64, Option<Bytes>)>,
    /// Has a permit for the worker once a report came.
    reported: Notify,
}

impl Progress {
    fn report(&self, json: Bytes) {
        let mut latest = self.latest.lock();
        *latest = (latest.0 + 1, Some(json));
        drop(latest);
        self.reported.notify_one();
    }

    /// The latest report and its number (0 before the first).
    pub(crate) fn latest(&self) -> (u64, Option<Bytes>) {
        self.latest.lock().clone()
    }

    /// Completes once a report came since the last time it completed (at
    /// once if one did): reports that come meanwhile are one wake-up.
    pub(crate) async fn reported(&self) {
        self.reported.notified().await
    }
}

impl TaskContext {
    /// The context of run `attempt` (0 for the first) of task `id`, for
    /// running a task by hand: its progress reports go nowhere.
    pub fn new(id: TaskId, attempt: u32, cancel: CancellationToken) -> Self {
        TaskContext {
            id,
            attempt,
            cancel,
            progress: None,
        }
    }

    /// A worker's context, whose progress reports reach `progress`.
    pub(crate) fn reporting(
        id: TaskId,
        attempt: u32,
        cancel: CancellationToken,
        progress: Arc<Progress>,
    ) -> Self {
        TaskContext {
            progress: Some(progress),
            ..TaskContext::new(id, attempt, cancel)
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// How many runs came before this one.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether cancellation was requested: a long task should check, or
    /// await [`cancelled`](Self::cancelled), and stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when cancellation is requested.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Reports progress (any value that serializes to JSON), recorded with
    /// the task's run state for everyone to see. Reports that come faster
    /// than they are recorded are coalesced: the latest one wins.
    pub fn report_progress(&self, progress: &impl Serialize) -> Result<(), serde_json::Error> {
        let json = Bytes::from(serde_json::to_vec(progress)?);
        if let Some(progress) = &self.progress {
            progress.report(json);
        }
        Ok(())
    }
}

/// Arguments that do not encode as JSON, or do not decode as the task's
/// argument types.
#[derive(Debug, thiserror::Error)]
#[error("arguments of task {task}: {reason}")]
pub struct ArgsError {
    /// The task's name.
    pub task: &'static str,
    /// What serde said.
    pub reason: String,
}

/// The JSON array a task's arguments travel as.
///
/// ```
/// use orcastra::task::{decode_args, encode_args, orca_task};
///
/// #[orca_task]
/// async fn resize(image: String, width: u32) {}
///
/// # fn main() -> Result<(), orcastra::task::ArgsError> {
/// let json = encode_args::<resize::Task>(&("cat.png".to_string(), 200))?;
/// assert_eq!(json, br#"["cat.png",200]"#);
/// let (image, width) = decode_args::<resize::Task>(&json)?;
/// assert_eq!((image.as_str(), width), ("cat.png", 200));
/// assert!(decode_args::<resize::Task>(br#"["cat.png"]"#).is_err());
/// # Ok(())
/// # }
/// ```
pub fn encode_args<T: Task>(args: &T::Args) -> Result<Vec<u8>, ArgsError> {
    let mut json = Vec::new();
    encode_args_into::<T>(args, &mut json)?;
    Ok(json)
}

/// [`encode_args`], appended to `out`.
pub(crate) fn encode_args_into<T: Task>(
    args: &T::Args,
    out: &mut Vec<u8>,
) -> Result<(), ArgsError> {
    serde_json::to_writer(out, args).map_err(|e| ArgsError {
        task: T::NAME,
        reason: e.to_string(),
    })
}

/// Decodes arguments written by [`encode_args`] or by hand.
pub fn decode_args<T: Task>(json: &[u8]) -> Result<T::Args, ArgsError> {
    serde_json::from_slice(json).map_err(|e| ArgsError {
        task: T::NAME,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Waker};

    use super::*;

    #[test]
    fn progress_reports_made_meanwhile_are_one_wake_up_and_the_latest_wins() {
        let progress = Arc::new(Progress::default());
        let context = TaskContext::reporting(
            TaskId::new(),
            0,
            CancellationToken::new(),
            Arc::clone(&progress),
        );
        let poll = || {
            let reported = pin!(progress.reported());
            reported.poll(&mut Context::from_waker(Waker::noop()))
        };
        assert!(poll().is_pending(), "nothing reported yet");
        assert_eq!(progress.latest(), (0, None));
        context.report_progress(&1).unwrap();
        context.clone().report_progress(&2).unwrap();
        assert!(poll().is_ready());
        assert!(poll().is_pending(), "two reports, one wake-up");
        assert_eq!(progress.latest(), (2, Some(Bytes::from_static(b"2"))));
        // A context of a run by hand reports nowhere.
        let by_hand = TaskContext::new(TaskId::new(), 0, CancellationToken::new());
        by_hand.report_progress(&3).unwrap();
        assert_eq!(progress.latest().0, 2);
    }
}
