//! What the task layer no longer needs goes: state events older than the
//! time results are kept (and, from memory, the final states they
//! recorded), and, every second, the entries of the queues and of the
//! schedule that every group has delivered and acknowledged.
//!
//! Every handle sweeps; sweeps of several processes trim to the same
//! points, so they do not conflict.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::record::StreamId;
use crate::statekeeper::STATES;
use crate::streams::{StreamError, Streams, Trim};
use crate::timekeeper::SCHEDULED;

use super::{BACKEND_RETRY, Inner, WORKERS};

/// The longest time between sweeps of the state events.
const STATES_MOST_BETWEEN: Duration = Duration::from_secs(60);

/// The time between trims of the queues: a busy queue keeps about this
/// long's worth of finished tasks (a second at 300 k tasks/s is some
/// hundred megabytes in `memory://`), not the minute between sweeps of the
/// state events. A trim with nothing to drop costs a few lookups.
const QUEUES_EVERY: Duration = Duration::from_secs(1);

/// Sweeps until the handle is gone.
pub(crate) async fn run(inner: Weak<Inner>) {
    let mut failures = 0u32;
    let mut states_due = Instant::now();
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        // Holds the handle only while it sweeps, or the handle would never
        // go; a new keep time wakes it, even one set during the sweep.
        let keep_changed = Arc::clone(&strong.keep_changed);
        let changed = keep_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = Instant::now();
        let states = now >= states_due;
        let pause = match sweep(&strong, states).await {
            Ok(()) => {
                failures = 0;
                if states {
                    states_due = now + (strong.keep_results() / 4).min(STATES_MOST_BETWEEN);
                }
                QUEUES_EVERY.min(states_due.saturating_duration_since(Instant::now()))
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = BACKEND_RETRY.delay(failures - 1, fastrand::f64());
                tracing::warn!(%error, ?delay, "housekeeping failed; retrying");
                delay
            }
        };
        drop(strong);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = changed => states_due = Instant::now(),
        }
    }
}

/// Trims the queues and the schedule, and with `states` the state events.
async fn sweep(inner: &Inner, states: bool) -> Result<(), StreamError> {
    let streams = &inner.streams;
    if states {
        let keep = u64::try_from(inner.keep_results().as_millis()).unwrap_or(u64::MAX);
        let oldest_kept = inner.clock.now_ms().saturating_sub(keep);
        streams
            .trim(STATES, Trim::min_id(StreamId::new(oldest_kept, 0)))
            .await?;
        inner.states.forget_finished_before(oldest_kept);
    }
    // The queues (served by workers) and the schedule.
    let served: Vec<String> = (inner.groups.lock().iter())
        .filter(|(stream, groups)| *stream == SCHEDULED || groups.contains(WORKERS))
        .map(|(stream, _)| stream.clone())
        .collect();
    for stream in served {
        trim_done(inner, &stream).await?;
    }
    Ok(())
}

/// Drops the entries of `stream` that every group has delivered and
/// acknowledged: those before its oldest pending or undelivered entry.
async fn trim_done(inner: &Inner, stream: &str) -> Result<(), StreamError> {
    let streams = &inner.streams;
    let mut first_needed: Option<StreamId> = None;
    for group in streams.groups(stream).await? {
        let needed = if group.pending > 0 {
            streams.pending_summary(stream, &group.name).await?.min
        } else {
            group.last_delivered_id.next()
        };
        let Some(needed) = needed else {
            return Ok(());
        };
        first_needed = Some(first_needed.map_or(needed, |first| first.min(needed)));
    }
    if let Some(first) = first_needed {
        streams.trim(stream, Trim::min_id(first)).await?;
    }
    Ok(())
}
