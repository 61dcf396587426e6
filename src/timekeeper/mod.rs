//! Delayed tasks and retries: an envelope with a not-before time waits in
//! the `orca:scheduled` stream, not in its queue, so no worker can lease it
//! early, however long it waits.
//!
//! Every worker runs a timekeeper. Timekeepers share the scheduled entries
//! through the group `timekeepers`: each holds the entries it read, renews
//! their lease while it holds them, and moves each into its queue when it
//! is due, acknowledging the scheduled entry after. A timekeeper that dies
//! leaves its entries pending, and another reclaims them after a lease; one
//! that stops hands them over at once. A crash between moving an entry and
//! acknowledging it queues the task twice: the worker that finds the task
//! already finished skips the copy.
//!
//! Workers see a moved task before the move is durable, so that a due task
//! waits for no fsync (a slow disk would make it late). A power loss may
//! take the move but not the scheduled entry, acknowledged only once the
//! move is durable: the task is moved again after it, and runs again
//! unless its end was durable.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::orca::{BACKEND_RETRY, Orcastra, RELEASED_AT_MS, Write};
use crate::record::StreamId;
use crate::streams::{
    AutoClaim, ClaimOptions, GroupRead, ReadGroupOptions, StreamError, Streams, field,
};
use crate::task::Envelope;

/// The stream of tasks waiting for their time.
pub(crate) const SCHEDULED: &str = "orca:scheduled";
/// Where scheduled entries that are not envelopes go.
const DEAD_SCHEDULED: &str = "orca:dead:scheduled";
const TIMEKEEPERS: &str = "timekeepers";
/// How long a timekeeper with nothing due waits for new entries per read.
const IDLE_BLOCK: Duration = Duration::from_millis(250);
/// The longest wait for a task due soon before looking for new entries.
const SOON_STEP: Duration = Duration::from_millis(5);
/// Ids per lease renewal.
const RENEW_CHUNK: usize = 1000;

/// When a task delayed by `delay` at `now_ms` is due, in whole
/// milliseconds: the clock reads whole milliseconds behind the true time,
/// and a fraction of a millisecond of delay counts as a whole one, so that
/// the task never starts before `delay` has passed.
pub(crate) fn due_after(now_ms: u64, delay: Duration) -> u64 {
    let delay_ms = u64::try_from(delay.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    now_ms.saturating_add(delay_ms).saturating_add(1)
}

/// Stores a task to be queued at its `not_before_ms`, as part of `write`.
pub(crate) async fn add_to_schedule(
    orcastra: &Orcastra,
    envelope: &Envelope,
    write: &mut Write,
) -> Result<(), StreamError> {
    orcastra.ensure_group(SCHEDULED, TIMEKEEPERS).await?;
    let fields = vec![(Bytes::from_static(b"task"), Bytes::from(envelope.encode()))];
    write.adds.push((SCHEDULED.into(), fields));
    Ok(())
}

/// One worker's timekeeper.
pub(crate) struct Timekeeper {
    orcastra: Orcastra,
    name: String,
    lease: Duration,
    /// The entries held, by due time.
    held: BTreeMap<(u64, StreamId), Envelope>,
    next_reclaim: Instant,
    next_renewal: Instant,
}

impl Timekeeper {
    pub(crate) fn new(orcastra: Orcastra, name: String, lease: Duration) -> Self {
        let now = Instant::now();
        Timekeeper {
            orcastra,
            name,
            lease,
            held: BTreeMap::new(),
            next_reclaim: now,
            next_renewal: now + lease / 3,
        }
    }

    /// Runs until `stop`, then hands the entries it holds to the others.
    /// Backend errors are logged and retried with backoff.
    pub(crate) async fn run(mut self, stop: CancellationToken) {
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            let step = tokio::select! {
                step = self.step() => step,
                () = stop.cancelled() => break,
            };
            match step {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = BACKEND_RETRY.delay(failures - 1, fastrand::f64());
                    tracing::warn!(timekeeper = %self.name, %error, ?delay, "scheduling failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        self.release().await;
    }

    /// Moves what is due, reclaims and renews when it is time, and waits
    /// for new entries until the next one is due.
    async fn step(&mut self) -> Result<(), StreamError> {
        self.orcastra.ensure_group(SCHEDULED, TIMEKEEPERS).await?;
        self.move_due().await?;
        if Instant::now() >= self.next_reclaim {
            self.next_reclaim = Instant::now() + self.lease / 4;
            self.reclaim().await?;
        }
        if Instant::now() >= self.next_renewal {
            self.next_renewal = Instant::now() + self.lease / 3;
            self.renew(ClaimOptions {
                just_id: true,
                ..ClaimOptions::default()
            })
            .await?;
        }
        // Timed from the clock's finer reading: whole milliseconds would
        // oversleep by the fraction of the one under way.
        let until_due = self.held.keys().next().map_or(IDLE_BLOCK, |&(due, _)| {
            Duration::from_millis(due).saturating_sub(self.orcastra.inner().clock.now())
        });
        // A server may end a blocked read late (Redis checks timeouts on
        // its 100 ms cron when idle): with a task due soon, look for new
        // entries without blocking and wait on our own timer, a little at
        // a time, so that an entry due even sooner is not missed long.
        let due_soon = until_due < IDLE_BLOCK;
        // Not waiting for the delivery's fsync: a task due soon would wait
        // for it. A power loss may take the delivery; the entries are then
        // delivered again, to this or another timekeeper.
        let options = ReadGroupOptions {
            count: Some(1024),
            block: Some(IDLE_BLOCK).filter(|_| !due_soon),
            unsynced_delivery: true,
            ..ReadGroupOptions::default()
        };
        let read = self
            .orcastra
            .streams()
            .read_group(
                TIMEKEEPERS,
                &self.name,
                &[(SCHEDULED, GroupRead::New)],
                options,
            )
            .await?;
        if due_soon && read.is_empty() {
            tokio::time::sleep(until_due.min(SOON_STEP)).await;
        }
        for (_, entries) in read {
            for entry in entries {
                self.hold(entry.id, entry.fields.unwrap_or_default())
                    .await?;
            }
        }
        Ok(())
    }

    async fn hold(&mut self, id: StreamId, fields: Vec<(Bytes, Bytes)>) -> Result<(), StreamError> {
        let envelope = field(&fields, "task")
            .ok_or_else(|| "the entry has no `task` field".to_string())
            .and_then(|task| Envelope::decode(task).map_err(|e| e.to_string()));
        match envelope {
            Ok(envelope) => {
                self.held.insert((envelope.not_before_ms, id), envelope);
                Ok(())
            }
            Err(reason) => {
                tracing::warn!(timekeeper = %self.name, %id, %reason, "a scheduled entry is not a task");
                let mut fields = fields;
                fields.push((Bytes::from_static(b"reason"), Bytes::from(reason)));
                self.orcastra
                    .write(Write {
                        adds: vec![(DEAD_SCHEDULED.into(), fields)],
                        acks: [(SCHEDULED.into(), TIMEKEEPERS, id)].into(),
                        ..Write::default()
                    })
                    .await
            }
        }
    }

    /// Queues the due tasks and acknowledges their scheduled entries, in
    /// one write. The workers may see the tasks in their queues before
    /// that is durable (they are copies): a due task waits for no fsync.
    async fn move_due(&mut self) -> Result<(), StreamError> {
        let now = self.orcastra.inner().clock.now_ms();
        let mut write = Write {
            copies: true,
            ..Write::default()
        };
        for (&(due, id), envelope) in &self.held {
            if due > now {
                break;
            }
            let stream = self
                .orcastra
                .served_queue(&envelope.queue, envelope.priority);
            Orcastra::add_to_queue(&stream.await?, envelope, &mut write);
            write.acks.push((SCHEDULED.into(), TIMEKEEPERS, id));
        }
        if write.acks.is_empty() {
            return Ok(());
        }
        let moved = write.acks.len();
        self.orcastra.write(write).await?;
        for _ in 0..moved {
            self.held.pop_first();
        }
        Ok(())
    }

    /// Takes the entries of timekeepers that died (idle for a lease).
    async fn reclaim(&mut self) -> Result<(), StreamError> {
        let mut start = StreamId::MIN;
        loop {
            let options = AutoClaim {
                min_idle: self.lease,
                start,
                count: 1024,
                just_id: false,
            };
            let claimed = self
                .orcastra
                .streams()
                .auto_claim(SCHEDULED, TIMEKEEPERS, &self.name, options)
                .await?;
            for entry in claimed.claimed {
                self.hold(entry.id, entry.fields).await?;
            }
            if claimed.next == StreamId::MIN {
                return Ok(());
            }
            start = claimed.next;
        }
    }

    /// Claims the held entries again with `options`: JUSTID renews their
    /// lease; a delivery time at the epoch releases them.
    async fn renew(&self, options: ClaimOptions) -> Result<(), StreamError> {
        let ids: Vec<StreamId> = self.held.keys().map(|&(_, id)| id).collect();
        for chunk in ids.chunks(RENEW_CHUNK) {
            self.orcastra
                .streams()
                .claim(
                    SCHEDULED,
                    TIMEKEEPERS,
                    &self.name,
                    Duration::ZERO,
                    chunk,
                    options,
                )
                .await?;
        }
        Ok(())
    }

    /// Hands the held entries to the other timekeepers at once.
    async fn release(&self) {
        let release = ClaimOptions {
            time_ms: Some(RELEASED_AT_MS),
            just_id: true,
            ..ClaimOptions::default()
        };
        if let Err(error) = self.renew(release).await {
            tracing::warn!(timekeeper = %self.name, %error, "cannot release scheduled tasks; they wait for their lease to run out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_never_due_before_its_delay_has_passed() {
        // The clock reads 1000 from 1000.0 up to 1001.0 ms: due at 1301
        // is at least 300 ms after any of those.
        assert_eq!(due_after(1000, Duration::from_millis(300)), 1301);
        // A fraction of a millisecond counts as a whole one.
        assert_eq!(due_after(1000, Duration::from_micros(300_001)), 1302);
        assert_eq!(due_after(u64::MAX - 1, Duration::MAX), u64::MAX);
    }
}
