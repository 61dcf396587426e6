//! Group commit for the task layer: the writes of every submitter and
//! worker task of a process are combined into as few backend calls as the
//! backend allows, one batch while the previous one is written.
//!
//! A write is a set of entries to add, run states to record and entries to
//! acknowledge, done in that order, so a caller that adds a task's next home
//! and acknowledges its old one in one write can never lose it: after a
//! crash it is in both places or the old one only. A batch's
//! acknowledgements are written alongside the next batch's adds and states
//! (two stages, each in order).

use std::sync::{Arc, Weak};

use foldhash::{HashMap, HashMapExt};
use smallvec::{SmallVec, smallvec};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use crate::record::StreamId;
use crate::statekeeper::{RunState, STATES};
use crate::streams::{Fields, StreamError, Streams};

use super::Inner;

/// The most writes combined into one batch.
const MAX_BATCH: usize = 4096;

/// What one caller writes at once. Most writes are a task's end, one state
/// and one acknowledgement: those are kept inline, so that the writer, on
/// another thread, has no allocation of the caller's to free (the
/// allocator's locks are contended when threads free each other's memory).
#[derive(Default)]
pub(crate) struct Write {
    /// Entries to add, with their streams.
    pub(crate) adds: Vec<(String, Fields)>,
    /// States to record, after the adds.
    pub(crate) states: SmallVec<[RunState; 1]>,
    /// Entries to acknowledge (stream, group, id), after the states.
    pub(crate) acks: SmallVec<[(Arc<str>, &'static str, StreamId); 1]>,
    /// A worker's slot, freed once this write is done, whatever its
    /// outcome: a worker fetches no faster than its tasks' ends are written.
    pub(crate) slot: Option<OwnedSemaphorePermit>,
}

impl Write {
    /// A write of one state.
    pub(crate) fn state(state: RunState) -> Write {
        Write {
            states: smallvec![state],
            ..Write::default()
        }
    }
}

/// Where a write's outcome goes, if anyone waits for it.
type Reply = Option<oneshot::Sender<Result<(), StreamError>>>;

/// The sending side; the combining task ends when it is dropped.
pub(crate) struct Writer {
    writes: mpsc::UnboundedSender<(Write, Reply)>,
}

impl Writer {
    /// Starts the tasks that write for `inner`. They hold `inner` only while
    /// they write a batch.
    pub(crate) fn start(inner: Weak<Inner>) -> (Writer, impl Future<Output = ()> + Send) {
        let (writes, receiver) = mpsc::unbounded_channel();
        let (recorded, to_ack) = mpsc::unbounded_channel();
        let run = async move {
            tokio::join!(
                combine(inner.clone(), receiver, recorded),
                acknowledge(inner, to_ack)
            );
        };
        (Writer { writes }, run)
    }

    /// Writes `write` durably (as the backend's fsync policy defines it),
    /// within the next batch. It is sent at once, so the future holds only
    /// the reply's receiver (a worker keeps one in each task's future, which
    /// is allocated and moved per task).
    pub(crate) fn write(&self, write: Write) -> impl Future<Output = Result<(), StreamError>> {
        let (reply, done) = oneshot::channel();
        // If the combining task is gone, so is `reply`: `done` reports it.
        let _ = self.writes.send((write, Some(reply)));
        async move {
            let gone = || StreamError::Reply("ERR the task backend is closed".into());
            done.await.map_err(|_| gone())?
        }
    }

    /// Queues `write` for the next batch, not waiting for its outcome (a
    /// failure is logged). Each stage of a write (adds, states, acks) is
    /// done in the order the writes were sent.
    pub(crate) fn send(&self, write: Write) {
        let _ = self.writes.send((write, None));
    }
}

/// Adds and records the states of a batch, then hands its acknowledgements
/// to `recorded`: they are written while the next batch is, which takes
/// an fsync off the way of a submission sent while a task ends.
async fn combine(
    inner: Weak<Inner>,
    mut receiver: mpsc::UnboundedReceiver<(Write, Reply)>,
    recorded: mpsc::UnboundedSender<Vec<(Write, Reply)>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match add_and_record(&inner, &mut batch).await {
            Ok(()) => {
                let mut to_ack = Vec::new();
                for (write, reply) in batch.drain(..) {
                    if write.acks.is_empty() {
                        answer(reply, &Ok(()));
                    } else {
                        to_ack.push((write, reply));
                    }
                }
                if !to_ack.is_empty() {
                    let _ = recorded.send(to_ack);
                }
            }
            // A task whose end or move was in it stays pending, and is
            // delivered again.
            Err(error) => fail(std::mem::take(&mut batch), &error),
        }
    }
}

/// Acknowledges the entries of the recorded batches, one call per stream
/// and group for all the batches waiting.
async fn acknowledge(
    inner: Weak<Inner>,
    mut receiver: mpsc::UnboundedReceiver<Vec<(Write, Reply)>>,
) {
    let mut batches = Vec::new();
    while receiver.recv_many(&mut batches, MAX_BATCH).await > 0 {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut acks: HashMap<(Arc<str>, &'static str), Vec<StreamId>> = HashMap::new();
        for (write, _) in batches.iter_mut().flatten() {
            for (stream, group, id) in write.acks.drain(..) {
                acks.entry((stream, group)).or_default().push(id);
            }
        }
        let mut acked = Ok(());
        for ((stream, group), ids) in acks {
            if let Err(error) = inner.streams.ack(&stream, group, &ids).await {
                acked = Err(Arc::new(error));
                break;
            }
        }
        match acked {
            Ok(()) => batches
                .drain(..)
                .flatten()
                .for_each(|(_, reply)| answer(reply, &Ok(()))),
            // The tasks stay pending: delivered again, they are seen to
            // have ended.
            Err(error) => fail(batches.drain(..).flatten().collect(), &error),
        }
    }
}

/// Logs a failed batch and answers its writes with the error.
fn fail(writes: Vec<(Write, Reply)>, error: &Arc<StreamError>) {
    tracing::warn!(%error, writes = writes.len(), "a batch of task writes failed");
    for (_, reply) in writes {
        answer(reply, &Err(Arc::clone(error)));
    }
}

fn answer(reply: Reply, result: &Result<(), Arc<StreamError>>) {
    if let Some(reply) = reply {
        let _ = reply.send(result.clone().map_err(StreamError::Batch));
    }
}

/// Adds, then records: every caller's writes in order, one call per
/// stream and stage.
async fn add_and_record(
    inner: &Inner,
    batch: &mut [(Write, Reply)],
) -> Result<(), Arc<StreamError>> {
    let mut adds: HashMap<String, Vec<Fields>> = HashMap::new();
    let mut states = Vec::with_capacity(batch.iter().map(|(write, _)| write.states.len()).sum());
    for (write, _) in batch.iter_mut() {
        for (stream, fields) in write.adds.drain(..) {
            adds.entry(stream).or_default().push(fields);
        }
        states.extend(write.states.drain(..));
    }
    let streams = &inner.streams;
    for (stream, entries) in adds {
        streams.add_batch(&stream, entries).await?;
    }
    if !states.is_empty() {
        // On the embedded backends the states go to the state keeper as
        // their events are written: it need not read them back.
        let note = |ids: &[StreamId], states| inner.states.wrote(states, ids);
        let (ids, mut unnoted) = streams.add_batch_noting(STATES, states, note).await?;
        // Empty if the state keeper took them; on Redis they are here.
        if unnoted.is_empty() {
            inner.states.apply_written(&ids);
        } else {
            for (state, id) in unnoted.iter_mut().zip(ids) {
                state.recorded_by(id);
            }
            inner.states.apply(unnoted);
        }
    }
    Ok(())
}
