//! Durability bookkeeping shared by every backend: how far a log is written,
//! durable and visible, who waits for what, and the syncer thread that runs
//! the fsync policy.
//!
//! Invariants: `visible <= written`, `durable <= written`, and under a policy
//! that waits for durability `visible == durable`, except for records shown
//! early (see [`Committer::show_early`]). All three only grow.
//!
//! Group commit needs no batching logic of its own: the syncer takes every
//! request waiting when it starts an fsync, and everything written before that
//! fsync starts is covered by it. Appends that arrive while it runs wait for
//! the next one, which covers all of them at once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard};
use tokio::sync::Notify;

use super::{FsyncPolicy, LogError};

/// The part of a backend the syncer drives.
pub(crate) trait SyncTarget: Send + Sync + 'static {
    /// Makes everything written so far durable; returns the end offset that
    /// is durable now.
    fn sync_written(&self) -> io::Result<u64>;
}

/// How long fsyncs take, over every log of the process, for metrics.
#[derive(Debug)]
pub struct FsyncLatency {
    /// Fsyncs that took at most `BOUNDS[i]` (and more than the bound
    /// before); the last, those that took longer than every bound.
    buckets: [AtomicU64; FsyncLatency::BOUNDS.len() + 1],
    total_nanos: AtomicU64,
}

static FSYNCS: FsyncLatency = FsyncLatency {
    buckets: [const { AtomicU64::new(0) }; FsyncLatency::BOUNDS.len() + 1],
    total_nanos: AtomicU64::new(0),
};

impl FsyncLatency {
    /// The upper bounds of the buckets, in seconds.
    pub const BOUNDS: [f64; 12] = [
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
    ];

    /// The fsyncs of this process so far.
    pub fn get() -> &'static FsyncLatency {
        &FSYNCS
    }

    fn record(&self, took: std::time::Duration) {
        let seconds = took.as_secs_f64();
        let bucket = Self::BOUNDS.partition_point(|&bound| bound < seconds);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.total_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// How many fsyncs fell in each bucket: `(upper bound in seconds,
    /// count)`, the last bucket's bound infinite.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let bounds = Self::BOUNDS.into_iter().chain([f64::INFINITY]);
        bounds
            .zip(&self.buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect()
    }

    /// The time spent in fsyncs, in seconds.
    pub fn total_seconds(&self) -> f64 {
        self.total_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

pub(crate) struct Committer {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
}

struct Shared {
    policy: FsyncPolicy,
    state: Mutex<State>,
    wake_syncer: Condvar,
    /// Copy of the visible end, so readers need no lock.
    visible: AtomicU64,
    /// Wakes every async waiter whenever the state changes.
    changed: Notify,
}

struct State {
    written: u64,
    durable: u64,
    /// Ends that waiters need durable, smallest first.
    requests: BinaryHeap<Reverse<u64>>,
    poisoned: Option<Arc<io::Error>>,
    shutdown: bool,
}

impl Committer {
    /// Bookkeeping for a log with nothing to sync: everything is durable once written.
    pub(crate) fn in_memory() -> Self {
        Committer {
            shared: Shared::new(FsyncPolicy::Never, 0),
            syncer: None,
        }
    }

    /// Starts bookkeeping, and the syncer thread, for a log whose first `end`
    /// offsets are durable.
    pub(crate) fn start(
        policy: FsyncPolicy,
        end: u64,
        target: Arc<dyn SyncTarget>,
    ) -> io::Result<Self> {
        let shared = Shared::new(policy, end);
        let for_thread = Arc::clone(&shared);
        let syncer = std::thread::Builder::new()
            .name("orcastra-fsync".into())
            .spawn(move || run_syncer(&for_thread, &*target))?;
        Ok(Committer {
            shared,
            syncer: Some(syncer),
        })
    }

    /// The end of what readers may see.
    pub(crate) fn visible(&self) -> u64 {
        self.shared.visible.load(Ordering::Acquire)
    }

    /// Errors if the log is poisoned.
    pub(crate) fn check(&self) -> Result<(), LogError> {
        match &self.shared.state.lock().poisoned {
            Some(cause) => Err(poisoned(cause)),
            None => Ok(()),
        }
    }

    /// Records that everything before `end` is written. Under a policy that
    /// waits for durability this also asks for the fsync, so the records
    /// become durable and visible even if nobody waits for them.
    pub(crate) fn written(&self, end: u64) {
        let mut state = self.shared.state.lock();
        state.written = end;
        if self.shared.policy.waits() {
            state.requests.push(Reverse(end));
            self.shared.wake_syncer.notify_one();
        } else {
            self.shared.publish(end);
        }
    }

    /// Makes the records `start..end`, written and handed to the OS, visible
    /// before they are durable, if every record before them is visible
    /// already (it only grows, so they stay so); otherwise they become
    /// visible with their fsync, as usual.
    pub(crate) fn show_early(&self, start: u64, end: u64) {
        if self.shared.visible.load(Ordering::Acquire) == start {
            self.shared.publish(end);
        }
    }

    /// Asks the syncer for an fsync of everything written, without waiting.
    pub(crate) fn request_sync(&self) {
        let mut state = self.shared.state.lock();
        let end = state.written;
        state.requests.push(Reverse(end));
        self.shared.wake_syncer.notify_one();
    }

    /// Records that everything before `end` is durable (a sealed segment, a
    /// rewritten file).
    pub(crate) fn made_durable(&self, end: u64) {
        let mut state = self.shared.state.lock();
        self.shared.mark_durable(&mut state, end);
    }

    /// Refuses all further writes because of `cause`, and wakes every waiter.
    /// Returns the error for the failing call to report.
    pub(crate) fn poison(&self, cause: io::Error) -> Arc<io::Error> {
        let mut state = self.shared.state.lock();
        self.shared.poison(&mut state, cause)
    }

    /// Resolves once everything before `end` is durable, if the policy waits
    /// for that (the fsync was requested when it was written).
    pub(crate) async fn wait_durable(&self, end: u64) -> Result<(), LogError> {
        if self.shared.policy.waits() {
            self.wait_until_durable(end).await
        } else {
            Ok(())
        }
    }

    /// Fsyncs everything written so far, whatever the policy.
    pub(crate) async fn sync(&self) -> Result<(), LogError> {
        self.check()?;
        if self.syncer.is_none() {
            return Ok(());
        }
        let end = {
            let mut state = self.shared.state.lock();
            let end = state.written;
            if end > state.durable {
                state.requests.push(Reverse(end));
                self.shared.wake_syncer.notify_one();
            }
            end
        };
        self.wait_until_durable(end).await
    }

    /// Resolves once `offset` is visible.
    pub(crate) async fn wait_visible(&self, offset: u64) -> Result<(), LogError> {
        self.wait_until(|shared, state| {
            if shared.visible.load(Ordering::Acquire) > offset {
                Some(Ok(()))
            } else {
                state.poisoned.as_ref().map(|cause| Err(poisoned(cause)))
            }
        })
        .await
    }

    async fn wait_until_durable(&self, end: u64) -> Result<(), LogError> {
        self.wait_until(|_, state| {
            if state.durable >= end {
                Some(Ok(()))
            } else {
                state.poisoned.as_ref().map(|cause| Err(poisoned(cause)))
            }
        })
        .await
    }

    async fn wait_until(
        &self,
        ready: impl Fn(&Shared, &State) -> Option<Result<(), LogError>>,
    ) -> Result<(), LogError> {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a change in between is not missed.
            notified.as_mut().enable();
            let outcome = ready(&self.shared, &self.shared.state.lock());
            if let Some(result) = outcome {
                return result;
            }
            notified.await;
        }
    }
}

impl Committer {
    /// Stops the syncer thread, waiting for an fsync in progress to finish.
    pub(crate) fn stop(&mut self) {
        self.shared.state.lock().shutdown = true;
        self.shared.wake_syncer.notify_one();
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn new(policy: FsyncPolicy, end: u64) -> Arc<Self> {
        Arc::new(Shared {
            policy,
            state: Mutex::new(State {
                written: end,
                durable: end,
                requests: BinaryHeap::new(),
                poisoned: None,
                shutdown: false,
            }),
            wake_syncer: Condvar::new(),
            visible: AtomicU64::new(end),
            changed: Notify::new(),
        })
    }

    fn publish(&self, visible: u64) {
        self.visible.fetch_max(visible, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    fn mark_durable(&self, state: &mut State, end: u64) {
        state.durable = state.durable.max(end);
        if self.policy.waits() {
            self.publish(state.durable);
        } else {
            self.changed.notify_waiters();
        }
    }

    fn poison(&self, state: &mut State, cause: io::Error) -> Arc<io::Error> {
        let cause = Arc::clone(state.poisoned.get_or_insert_with(|| {
            tracing::error!(error = %cause, "log poisoned: refusing writes until reopened");
            Arc::new(cause)
        }));
        self.changed.notify_waiters();
        cause
    }
}

fn poisoned(cause: &Arc<io::Error>) -> LogError {
    LogError::Poisoned {
        cause: Arc::clone(cause),
    }
}

fn run_syncer(shared: &Shared, target: &dyn SyncTarget) {
    let interval = match shared.policy {
        FsyncPolicy::Interval(every) => Some(every),
        _ => None,
    };
    let mut next_tick = interval.map(|every| Instant::now() + every);
    let mut state = shared.state.lock();
    loop {
        if state.shutdown {
            return;
        }
        while state
            .requests
            .peek()
            .is_some_and(|&Reverse(end)| end <= state.durable)
        {
            state.requests.pop();
        }
        let tick_due = next_tick.is_some_and(|tick| Instant::now() >= tick);
        if state.poisoned.is_some() || (state.requests.is_empty() && !tick_due) {
            wait_for_work(shared, &mut state, next_tick);
            continue;
        }
        if let (true, Some(every)) = (tick_due, interval) {
            next_tick = Some(Instant::now() + every);
            if state.requests.is_empty() && state.written <= state.durable {
                continue;
            }
        }
        // Under `Always` an fsync answers only the oldest request; otherwise it
        // answers everyone waiting.
        let limit = if shared.policy == FsyncPolicy::Always {
            state.requests.pop().map(|Reverse(end)| end)
        } else {
            state.requests.clear();
            None
        };
        let result = MutexGuard::unlocked(&mut state, || {
            let started = Instant::now();
            let result = target.sync_written();
            FSYNCS.record(started.elapsed());
            result
        });
        match result {
            Ok(end) => {
                let end = limit.map_or(end, |limit| limit.min(end));
                shared.mark_durable(&mut state, end);
            }
            Err(cause) => {
                shared.poison(&mut state, cause);
            }
        }
    }
}

fn wait_for_work(shared: &Shared, state: &mut MutexGuard<'_, State>, next_tick: Option<Instant>) {
    match next_tick {
        Some(tick) if state.poisoned.is_none() => {
            shared.wake_syncer.wait_until(state, tick);
        }
        _ => shared.wake_syncer.wait(state),
    }
}
