//! What operators and other languages do with tasks, besides submitting
//! typed ones: submit by name with JSON arguments, see how full a queue is,
//! and look at, requeue or drop dead letters. The HTTP API and the CLI are
//! built on these.

use bytes::Bytes;

use super::{
    Error, MAX_PRIORITY, Orcastra, SubmitOptions, WORKERS, Write, dead_stream, queue_stream,
};
use crate::record::StreamId;
use crate::streams::{Bound, Fields, StreamError, Streams, field};
use crate::task::{Envelope, TaskId};

/// How full a queue is, over its priorities.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueInfo {
    /// The queue.
    pub name: String,
    /// Tasks waiting for a worker.
    pub queued: u64,
    /// Tasks delivered to a worker and not finished (running, or left by a
    /// worker that died, until another reclaims them).
    pub pending: u64,
    /// Tasks in the dead letters.
    pub dead: u64,
}

/// A task in a queue's dead letters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// The dead-letter entry, to requeue or drop it by.
    pub entry: String,
    /// The task, if its envelope could be read.
    pub id: Option<String>,
    /// The task's name, if its envelope could be read.
    pub name: Option<String>,
    /// Runs before it died.
    pub attempt: Option<u32>,
    /// Why it died.
    pub reason: String,
}

impl Orcastra {
    /// Submits task `name` to `queue` with its arguments as a JSON array, as
    /// the task's own `submit` would encode them (a task with arguments
    /// `(url: String, depth: i32)` takes `["https://example.com", 2]`).
    /// Arguments that do not fit the task are found by the worker, which
    /// dead-letters the task with the reason.
    ///
    /// ```
    /// use orcastra::prelude::*;
    /// use orcastra::SubmitOptions;
    ///
    /// #[orca_task(queue = "math")]
    /// async fn add(a: i64, b: i64) -> i64 {
    ///     a + b
    /// }
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let orca = Orcastra::open("memory://").await?;
    /// let worker = orca.worker().register(add::task()).start().await?;
    /// let id = orca.submit_json("add", "math", b"[2, 3]", SubmitOptions::default()).await?;
    /// assert_eq!(orca.handle::<i64>(id).result().await??, 5);
    /// assert!(orca.submit_json("add", "math", b"{}", SubmitOptions::default()).await.is_err());
    /// worker.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn submit_json(
        &self,
        name: &str,
        queue: &str,
        args: &[u8],
        options: SubmitOptions,
    ) -> Result<TaskId, Error> {
        let invalid = |reason: String| Error::Submission {
            name: name.to_string(),
            reason,
        };
        if name.is_empty() || queue.is_empty() {
            return Err(invalid("a task needs a name and a queue".into()));
        }
        match serde_json::from_slice::<serde_json::Value>(args) {
            Ok(serde_json::Value::Array(_)) => {}
            Ok(_) => return Err(invalid("the arguments must be a JSON array".into())),
            Err(e) => return Err(invalid(format!("the arguments are not JSON: {e}"))),
        }
        let mut ids = self
            .submit_encoded(
                name.into(),
                queue.into(),
                0,
                vec![Bytes::copy_from_slice(args)],
                options,
                false,
            )
            .await?;
        Ok(ids.pop().expect("one id per submission"))
    }

    /// The queue a stream of the task layer belongs to: `orca:queue:<q>`,
    /// `orca:queue+<p>:<q>` and `orca:dead:<q>` belong to `<q>`.
    ///
    /// ```
    /// use orcastra::Orcastra;
    ///
    /// assert_eq!(Orcastra::queue_of("orca:queue+2:mail"), Some("mail"));
    /// assert_eq!(Orcastra::queue_of("orca:dead:mail"), Some("mail"));
    /// assert_eq!(Orcastra::queue_of("orca:states"), None);
    /// ```
    pub fn queue_of(stream: &str) -> Option<&str> {
        if let Some(queue) = stream.strip_prefix("orca:dead:") {
            return Some(queue);
        }
        let rest = stream.strip_prefix("orca:queue")?;
        match rest.strip_prefix(':') {
            Some(queue) => Some(queue),
            None => rest.strip_prefix('+')?.split_once(':').map(|(_, q)| q),
        }
    }

    /// How many tasks of `queue` wait, run and are dead.
    pub async fn queue_info(&self, queue: &str) -> Result<QueueInfo, Error> {
        let streams = &self.inner.streams;
        let mut info = QueueInfo {
            name: queue.to_string(),
            ..QueueInfo::default()
        };
        for priority in 0..=MAX_PRIORITY {
            let groups = match streams.groups(&queue_stream(queue, priority)).await {
                Ok(groups) => groups,
                Err(StreamError::NoSuchKey) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Some(workers) = groups.iter().find(|group| group.name == WORKERS) {
                info.queued += workers.lag.unwrap_or(0);
                info.pending += workers.pending;
            }
        }
        info.dead = streams.len(&dead_stream(queue)).await?;
        Ok(info)
    }

    /// The first `count` dead letters of `queue`, oldest first.
    pub async fn dead_letters(&self, queue: &str, count: usize) -> Result<Vec<DeadLetter>, Error> {
        let entries = self
            .inner
            .streams
            .range(&dead_stream(queue), Bound::Min, Bound::Max, Some(count))
            .await?;
        Ok(entries
            .into_iter()
            .map(|entry| {
                let envelope = field(&entry.fields, "task").and_then(|e| Envelope::decode(e).ok());
                let reason = field(&entry.fields, "reason")
                    .map(|reason| String::from_utf8_lossy(reason).into_owned())
                    .unwrap_or_default();
                DeadLetter {
                    entry: entry.id.to_string(),
                    id: envelope.as_ref().map(|e| e.id.to_string()),
                    name: envelope.as_ref().map(|e| e.name.to_string()),
                    attempt: envelope.as_ref().map(|e| e.attempt),
                    reason,
                }
            })
            .collect())
    }

    /// Puts dead letter `entry` of `queue` back in its queue for one more
    /// attempt, recorded as queued, and removes it from the dead letters;
    /// false if there is no such entry. A crash in between can leave it in both places: it is
    /// requeued at least once.
    pub async fn requeue_dead(&self, queue: &str, entry: StreamId) -> Result<bool, Error> {
        let Some(fields) = self.dead_letter(queue, entry).await? else {
            return Ok(false);
        };
        let mut write = Write::default();
        match field(&fields, "task").and_then(|e| Envelope::decode(e).ok()) {
            // A new attempt, so that its states come after those of its death.
            Some(mut envelope) => {
                envelope.attempt += 1;
                let stream = self.served_queue(&envelope.queue, envelope.priority);
                Orcastra::add_to_queue(&stream.await?, &envelope, &mut write);
            }
            // Back as it came: the worker will say again what is wrong with it.
            None => {
                let stream = self.served_queue(queue, 0).await?;
                let fields = fields.into_iter().filter(|(name, _)| name != "reason");
                write.adds.push((stream, fields.collect()));
            }
        }
        self.write(write).await?;
        self.drop_dead(queue, entry).await
    }

    /// Deletes dead letter `entry` of `queue`; false if there is none.
    pub async fn drop_dead(&self, queue: &str, entry: StreamId) -> Result<bool, Error> {
        let deleted = self
            .inner
            .streams
            .delete(&dead_stream(queue), &[entry])
            .await?;
        Ok(deleted > 0)
    }

    async fn dead_letter(&self, queue: &str, entry: StreamId) -> Result<Option<Fields>, Error> {
        let found = self
            .inner
            .streams
            .range(
                &dead_stream(queue),
                Bound::Included(entry),
                Bound::Included(entry),
                Some(1),
            )
            .await?;
        Ok(found.into_iter().next().map(|entry| entry.fields))
    }
}
