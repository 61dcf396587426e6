//! Group commit for the task layer: the writes of every submitter and
//! worker task of a process are combined into as few backend calls as the
//! backend allows, one batch while the previous one is written.
//!
//! A write is a set of entries to add, run states to record and entries to
//! acknowledge, done in that order, so a caller that adds a task's next home
//! and acknowledges its old one in one write can never lose it: after a
//! crash it is in both places or the old one only.
//!
//! Each of the three is a stage of its own: while one batch's states are
//! recorded, the next batch's entries are added, and so on. A submission
//! sent while a task ends so waits for no fsync of that task's. The first
//! stage also appends the next batches while one waits for its fsync.

use std::sync::{Arc, Weak};

use foldhash::{HashMap, HashMapExt};
use futures_util::StreamExt;
use futures_util::future::try_join_all;
use futures_util::stream::FuturesOrdered;
use smallvec::{SmallVec, smallvec};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use crate::record::StreamId;
use crate::statekeeper::{RunState, STATES, StateEvent};
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
    pub(crate) adds: Vec<(Arc<str>, Fields)>,
    /// States to record, after the adds, as events (see
    /// [`StateEvent::add`]).
    pub(crate) states: SmallVec<[StateEvent; 1]>,
    /// Entries to acknowledge (stream, group, id), after the states.
    pub(crate) acks: SmallVec<[(Arc<str>, &'static str, StreamId); 1]>,
    /// A worker's slot, freed as this write's states start to be written
    /// (or once it failed): meanwhile the worker runs other tasks, whose
    /// ends wait for the next batch. So a worker runs at most its
    /// concurrency of tasks, and has at most as many more ended whose ends
    /// are not durable yet: it never runs further ahead of the disk. (A
    /// task whose end is durable and not its acknowledgement is passed over
    /// if delivered again.)
    pub(crate) slot: Option<OwnedSemaphorePermit>,
    /// A submission's: answered once its entries are durable, its states
    /// taken in by this process's state keeper at once and recorded after
    /// (a crash between leaves the tasks queued with no state yet, as a
    /// crash of the submitter just after its answer would).
    pub(crate) answered_once_added: bool,
    /// Passes every stage, with nothing to write there: done once every
    /// write sent before it is.
    pub(crate) barrier: bool,
    /// Its adds are copies of entries it acknowledges, durable where they
    /// are (a timekeeper's due tasks): readers may see them before they
    /// are durable, so that a due task waits for no fsync. A power loss
    /// may take them, not the originals, acknowledged only once the copies
    /// are durable.
    pub(crate) copies: bool,
}

impl Write {
    /// A write of one state.
    pub(crate) fn state(state: RunState) -> Write {
        Write {
            states: smallvec![state.into()],
            ..Write::default()
        }
    }

    /// Adds `state` to the states to record.
    pub(crate) fn record(&mut self, state: RunState) {
        StateEvent::add(&mut self.states, state.into());
    }

    /// A write of nothing, done once every write sent before it is (each
    /// stage takes the writes in the order they were sent).
    pub(crate) fn barrier() -> Write {
        Write {
            barrier: true,
            ..Write::default()
        }
    }
}

/// Where a write's outcome goes, if anyone waits for it.
type Reply = Option<oneshot::Sender<Result<(), StreamError>>>;

/// The sending side; the writing tasks end when it is dropped.
pub(crate) struct Writer {
    writes: mpsc::UnboundedSender<(Write, Reply)>,
}

/// A batch: the writes sent since the last one, in order. Writes are large
/// (a state is kept inline), so a batch moves from stage to stage whole.
type Batch = Vec<(Write, Reply)>;

impl Writer {
    /// Starts the tasks that write for `inner`, one per stage. They hold
    /// `inner` only while they write a batch.
    pub(crate) fn start(inner: Weak<Inner>) -> (Writer, impl Future<Output = ()> + Send) {
        let (writes, to_add) = mpsc::unbounded_channel();
        let (added, to_record) = mpsc::unbounded_channel();
        let (recorded, to_ack) = mpsc::unbounded_channel();
        let run = async move {
            tokio::join!(
                run_stage(
                    Stage::Add,
                    inner.clone(),
                    Incoming::Writes(to_add),
                    Some(added)
                ),
                run_stage(
                    Stage::Record,
                    inner.clone(),
                    Incoming::Batches(to_record),
                    Some(recorded)
                ),
                run_stage(Stage::Acknowledge, inner, Incoming::Batches(to_ack), None),
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
        // If the writing tasks are gone, so is `reply`: `done` reports it.
        let _ = self.writes.send((write, Some(reply)));
        async move {
            let gone = || StreamError::Reply("ERR the task backend is closed".into());
            done.await.map_err(|_| gone())?
        }
    }

    /// Queues `write` for the next batch, not waiting for its outcome (a
    /// failure is logged). Each stage of a write is done in the order the
    /// writes were sent.
    pub(crate) fn send(&self, write: Write) {
        let _ = self.writes.send((write, None));
    }
}

/// What a stage writes of each write in a batch.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// Its entries.
    Add,
    /// Its states.
    Record,
    /// Its acknowledgements.
    Acknowledge,
}

impl Stage {
    /// Whether a later stage has something to write of `write`.
    fn leaves_more(self, write: &Write) -> bool {
        match self {
            Stage::Add => !write.states.is_empty() || !write.acks.is_empty() || write.barrier,
            Stage::Record => !write.acks.is_empty() || write.barrier,
            Stage::Acknowledge => false,
        }
    }

    /// How many batches the stage writes at once. Only the first overlaps
    /// them (the state keeper applies the states this process recorded once
    /// durable, all it wrote up to them), enough that what arrives while an
    /// fsync runs rarely waits to be appended: 2 measured the same as 8.
    fn most_in_flight(self) -> usize {
        match self {
            Stage::Add => 8,
            Stage::Record | Stage::Acknowledge => 1,
        }
    }
}

/// What a stage takes its work from: the callers' writes (the first
/// stage), or the batches the stage before passed on.
enum Incoming {
    Writes(mpsc::UnboundedReceiver<(Write, Reply)>),
    Batches(mpsc::UnboundedReceiver<Batch>),
}

impl Incoming {
    /// Waits for work and adds all there is to `batches`; `false` once the
    /// senders are gone.
    async fn receive(&mut self, batches: &mut Vec<Batch>) -> bool {
        match self {
            Incoming::Writes(writes) => {
                let Some(first) = writes.recv().await else {
                    return false;
                };
                // Sized to all that waits: a batch grown as it fills copied
                // its large writes over and over.
                let most = 1 + writes.len().min(MAX_BATCH - 1);
                let mut batch = Vec::with_capacity(most);
                batch.push(first);
                while batch.len() < most {
                    match writes.try_recv() {
                        Ok(write) => batch.push(write),
                        Err(_) => break,
                    }
                }
                batches.push(batch);
                true
            }
            Incoming::Batches(incoming) => incoming.recv_many(batches, MAX_BATCH).await > 0,
        }
    }
}

/// Runs `stage` on all the batches waiting at once, then answers the
/// writes it finished and passes the batches on to `next`. The first stage
/// adds the next batches while earlier ones wait for their fsync, so the
/// log's next fsync covers them as soon as the one before ends; the
/// batches are finished in the order they came.
async fn run_stage(
    stage: Stage,
    inner: Weak<Inner>,
    mut incoming: Incoming,
    next: Option<mpsc::UnboundedSender<Batch>>,
) {
    let mut writing = FuturesOrdered::new();
    let mut open = true;
    while open || !writing.is_empty() {
        let mut batches = Vec::new();
        tokio::select! {
            biased;
            Some((done, written)) = writing.next() => {
                pass_on(stage, done, written, next.as_ref());
            }
            received = incoming.receive(&mut batches),
                if open && writing.len() < stage.most_in_flight() =>
            {
                open = received;
                if !open {
                    continue;
                }
                if matches!(stage, Stage::Record) {
                    // Their states are about to be written: the workers run
                    // other tasks meanwhile (see `Write::slot`).
                    for (write, _) in batches.iter_mut().flatten() {
                        write.slot = None;
                    }
                }
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                writing.push_back(async move {
                    let written = match stage {
                        Stage::Add => add(&inner, &mut batches).await,
                        Stage::Record => record(&inner, &mut batches).await,
                        Stage::Acknowledge => acknowledge(&inner, &mut batches).await,
                    };
                    (batches, written)
                });
            }
        }
    }
}

/// Answers the writes `stage` finished in `batches`, and passes the
/// batches with more to write on to `next`.
fn pass_on(
    stage: Stage,
    batches: Vec<Batch>,
    written: Result<(), Arc<StreamError>>,
    next: Option<&mpsc::UnboundedSender<Batch>>,
) {
    for mut batch in batches {
        if let Err(error) = &written {
            // A task whose end or move was in it stays pending, and is
            // delivered again.
            tracing::warn!(%error, ?stage, writes = batch.len(), "a batch of task writes failed");
            for (_, reply) in batch {
                answer(reply, Err(StreamError::Batch(Arc::clone(error))));
            }
            continue;
        }
        let mut more = false;
        for (write, reply) in &mut batch {
            if stage.leaves_more(write) {
                more = true;
                if matches!(stage, Stage::Add) && write.answered_once_added {
                    answer(reply.take(), Ok(()));
                }
            } else {
                answer(reply.take(), Ok(()));
                write.slot = None;
            }
        }
        if let Some(next) = next.filter(|_| more) {
            let _ = next.send(batch);
        }
    }
}

fn answer(reply: Reply, result: Result<(), StreamError>) {
    if let Some(reply) = reply {
        let _ = reply.send(result);
    }
}

/// Adds the entries of the batches' writes, one call per stream (and
/// two if some are copies and some not).
async fn add(inner: &Inner, batches: &mut [Batch]) -> Result<(), Arc<StreamError>> {
    let mut adds: HashMap<(Arc<str>, bool), Vec<Fields>> = HashMap::new();
    for (write, _) in batches.iter_mut().flatten() {
        for (stream, fields) in write.adds.drain(..) {
            adds.entry((stream, write.copies)).or_default().push(fields);
        }
    }
    // All are appended as the join first polls them, before any waits for
    // its fsync: a later batch, appended while this one waits, comes after
    // it in every stream.
    let appends = adds
        .into_iter()
        .map(|((stream, copies), entries)| async move {
            if copies {
                inner.streams.add_copies(&stream, entries).await
            } else {
                inner.streams.add_batch(&stream, entries).await
            }
        });
    try_join_all(appends).await?;
    let now = inner.clock.now_ms();
    for (write, _) in batches.iter().flatten() {
        if write.answered_once_added {
            inner.states.submitted(&write.states, now);
        }
    }
    Ok(())
}

/// Records the states of the batches' writes, in one call (consecutive ones
/// that are the same but for the task as one event).
async fn record(inner: &Inner, batches: &mut [Batch]) -> Result<(), Arc<StreamError>> {
    let mut events = SmallVec::new();
    for (write, _) in batches.iter_mut().flatten() {
        for event in write.states.drain(..) {
            StateEvent::add(&mut events, event);
        }
    }
    if events.is_empty() {
        return Ok(());
    }
    // On the embedded backends the states go to the state keeper as their
    // events are written: it need not read them back.
    let note = |ids: &[StreamId], events| inner.states.wrote(events, ids);
    let (ids, unnoted) = inner
        .streams
        .add_batch_noting(STATES, events.into_vec(), note)
        .await?;
    // Empty if the state keeper took them; on Redis they are here.
    if unnoted.is_empty() {
        inner.states.apply_written(&ids);
    } else {
        let events = unnoted.into_iter().zip(ids).map(|(mut event, id)| {
            event.recorded_by(id);
            event
        });
        inner.states.apply(events);
    }
    Ok(())
}

/// Acknowledges the entries of the batches' writes, one call per stream
/// and group.
async fn acknowledge(inner: &Inner, batches: &mut [Batch]) -> Result<(), Arc<StreamError>> {
    let mut acks: HashMap<(Arc<str>, &'static str), Vec<StreamId>> = HashMap::new();
    for (write, _) in batches.iter_mut().flatten() {
        for (stream, group, id) in write.acks.drain(..) {
            acks.entry((stream, group)).or_default().push(id);
        }
    }
    for ((stream, group), ids) in acks {
        inner.streams.ack(&stream, group, &ids).await?;
    }
    Ok(())
}
