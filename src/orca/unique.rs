//! Unique tasks: submissions of one task name with one key are one task
//! while it is not finished, and for a window after.
//!
//! Each use of a key is a *generation*; generation `n`'s task id is derived
//! from the task's name, the key and `n`, so every process knows it. A
//! generation is taken by creating the consumer `n` in the group named
//! after the key on `orca:unique`: creating a consumer that exists fails,
//! whichever process tries, on every backend, which makes it a
//! compare-and-set. Consumers are never deleted, so a generation is taken
//! once.
//!
//! A submission looks at the key's latest generation: while its task is
//! not finished (or finished less than the window ago), it is the answer;
//! otherwise the submission takes the next generation. A generation whose
//! task has no state — its submitter is between taking it and queueing
//! the task, crashed there, or its finished state was forgotten — counts
//! as live for [`CLAIM_GRACE`] after it was taken, and as over after.

use std::time::Duration;

use crate::streams::{StreamError, Streams};
use crate::task::TaskId;

use super::Orcastra;

/// The stream whose groups hold the keys.
const UNIQUE: &str = "orca:unique";

/// How long a taken generation without a recorded state counts as live.
const CLAIM_GRACE: Duration = Duration::from_secs(5);

/// The most generations one submission goes through, racing others.
const MOST_TRIES: usize = 100;

/// What a unique submission found.
pub(crate) enum Claim {
    /// The key is this submission's: queue the task with this id.
    Taken(TaskId),
    /// Task `id` holds the key: it is the answer.
    Held(TaskId),
}

impl Orcastra {
    /// Takes the key `key` of task `name`, or finds the task that holds it
    /// (`window`: how long after it finished it still does).
    pub(crate) async fn claim(
        &self,
        name: &str,
        key: &str,
        window: Duration,
    ) -> Result<Claim, StreamError> {
        let group = format!("{name}:{key}");
        self.ensure_group(UNIQUE, &group).await?;
        let streams = self.streams();
        for _ in 0..MOST_TRIES {
            let consumers = streams.consumers(UNIQUE, &group).await?;
            let latest = consumers
                .iter()
                .filter_map(|c| Some((c.name.parse::<u64>().ok()?, c.idle)))
                .max_by_key(|&(generation, _)| generation);
            let next = match latest {
                None => 0,
                Some((generation, taken_ago)) => {
                    let id = TaskId::unique(name, key, generation);
                    if self.holds(id, taken_ago, window).await? {
                        return Ok(Claim::Held(id));
                    }
                    generation + 1
                }
            };
            if streams
                .create_consumer(UNIQUE, &group, &next.to_string())
                .await?
            {
                return Ok(Claim::Taken(TaskId::unique(name, key, next)));
            }
        }
        Err(StreamError::Reply(format!(
            "ERR key {key:?} of task {name} changed hands {MOST_TRIES} times during one submission"
        )))
    }

    /// Whether task `id`, whose generation was taken `taken_ago`, still
    /// holds its key.
    async fn holds(
        &self,
        id: TaskId,
        taken_ago: Duration,
        window: Duration,
    ) -> Result<bool, StreamError> {
        if self.state(id).is_none() {
            self.catch_up().await?;
        }
        Ok(match self.state(id) {
            None => taken_ago < CLAIM_GRACE,
            Some(state) if !state.state.is_final() => true,
            Some(state) => {
                let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
                self.inner.clock.now_ms() < state.updated_ms.saturating_add(window)
            }
        })
    }
}
