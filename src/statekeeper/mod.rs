//! Run states: where every task stands, durable as events in the
//! `orca:states` stream and folded into a map per process, which answers
//! lookups by id and wakes whoever awaits a task's end. Any process that
//! shares the backend sees every task's state.

use std::collections::VecDeque;
use std::collections::{BTreeMap, btree_map};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use foldhash::HashMap;
use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio::sync::{Notify, broadcast};

use crate::record::{Encoder, NewEntry, Pairs, StreamId};
use crate::streams::{Backend, Entry, ReadFrom, StreamError, Streams, field};
use crate::task::{Name, TaskId};

/// The stream of state events.
pub(crate) const STATES: &str = "orca:states";

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// In its queue, waiting for a worker.
    Queued,
    /// Waiting for its time (submitted with a delay) before it is queued.
    Scheduled,
    /// A worker runs it.
    Running,
    /// It ran and returned a result.
    Succeeded,
    /// It failed and will be retried: the next attempt is scheduled.
    Retrying,
    /// It failed and will not be retried.
    Failed,
    /// It can never run: its arguments do not decode, no worker knows its
    /// name, or it was delivered too many times. It is in the dead letters.
    Dead,
    /// Someone cancelled it: it will not run (again); if it was running, it
    /// was asked to stop.
    Cancelled,
}

impl State {
    /// Whether the task is finished: no state follows this one.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Succeeded | State::Failed | State::Dead | State::Cancelled
        )
    }

    /// Whether the attempt it belongs to is over (a retry, if any, is the
    /// next attempt).
    pub fn ends_attempt(self) -> bool {
        self.rank() == 2
    }

    /// Its name in state events and the HTTP API: `queued`, `running`, …
    pub fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Scheduled => "scheduled",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Dead => "dead",
            State::Cancelled => "cancelled",
        }
    }

    fn parse(name: &[u8]) -> Option<State> {
        [
            State::Queued,
            State::Scheduled,
            State::Running,
            State::Retrying,
            State::Succeeded,
            State::Failed,
            State::Dead,
            State::Cancelled,
        ]
        .into_iter()
        .find(|state| state.name().as_bytes() == name)
    }

    /// Events of one attempt may be read out of order (a fast worker can
    /// record `running` before the submitter records `queued`): a state
    /// replaces another only if it comes later in a run's life. (A retry is
    /// the next attempt, so it always comes later.)
    fn rank(self) -> u8 {
        match self {
            State::Queued | State::Scheduled => 0,
            State::Running => 1,
            State::Retrying | State::Succeeded | State::Failed | State::Dead | State::Cancelled => {
                2
            }
        }
    }
}

/// A task's run state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunState {
    /// The task.
    pub id: TaskId,
    /// Its registered name.
    pub name: Name,
    /// The queue it was submitted to (empty in events written before
    /// states named their queue).
    pub queue: Name,
    /// Where it stands.
    pub state: State,
    /// How many runs came before the current one.
    pub attempt: u32,
    /// The worker that runs or ran it.
    pub worker: Option<Name>,
    /// When its current run started, in milliseconds since the Unix epoch:
    /// set from `Running` on, until the next attempt.
    pub started_ms: Option<u64>,
    /// The JSON of its result, once it succeeded.
    pub result: Option<Bytes>,
    /// Why it failed or is dead.
    pub error: Option<String>,
    /// The JSON of the progress it last reported while running.
    pub progress: Option<Bytes>,
    /// When this state was recorded, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
    /// The event that recorded it: of two states of one stage of a run, the
    /// later event wins.
    event: StreamId,
}

impl RunState {
    /// A state of task `id`, about to be recorded. Names are shared: a
    /// task's states are made, cloned and kept many times over its life.
    pub(crate) fn new(id: TaskId, name: Name, queue: Name, state: State, attempt: u32) -> Self {
        RunState {
            id,
            name,
            queue,
            state,
            attempt,
            worker: None,
            started_ms: None,
            result: None,
            error: None,
            progress: None,
            updated_ms: 0,
            event: StreamId::MIN,
        }
    }

    /// This state as recorded by event `event`.
    pub(crate) fn recorded_by(&mut self, event: StreamId) {
        self.event = event;
        self.updated_ms = event.ms;
    }

    /// Everything but the task: states equal in this are one event's.
    fn all_but_id(&self) -> impl PartialEq + '_ {
        let RunState {
            id: _,
            name,
            queue,
            state,
            attempt,
            worker,
            started_ms,
            result,
            error,
            progress,
            updated_ms,
            event,
        } = self;
        (
            name, queue, state, attempt, worker, started_ms, result, error, progress, updated_ms,
            event,
        )
    }

    /// This state, of task `id`: states kept for several tasks are one
    /// event's, with the first task's id.
    fn of(&self, id: TaskId) -> RunState {
        RunState { id, ..self.clone() }
    }

    /// The `Running` state this end of a run stands for, if the task's
    /// state so far, `current`, is from before that run: a run that ends at
    /// its first poll is recorded by its end alone, which names when it
    /// started. Subscribers get it before the end.
    fn implied_start(&self, id: TaskId, current: Option<&RunState>) -> Option<RunState> {
        let started = self.started_ms.filter(|_| self.state.ends_attempt())?;
        let before_run = current.is_none_or(|current| {
            (current.attempt, current.state.rank()) < (self.attempt, State::Running.rank())
        });
        before_run.then(|| RunState {
            state: State::Running,
            result: None,
            error: None,
            progress: None,
            updated_ms: started,
            ..self.of(id)
        })
    }
}

/// An event of the `orca:states` stream: the states of one task or more
/// that are the same but for the task, which an event of several lists in
/// one field, `ids`. Consecutive states go together: a submission's
/// `queued` states, and the ends of tasks that one worker ran alike,
/// starting in the same millisecond (a thousand no-op tasks are a handful
/// of events, not two thousand). The state is kept once, however many
/// tasks it is of, in events and in memory.
pub(crate) struct StateEvent {
    /// The state, of the first task.
    state: RunState,
    /// The tasks after the first, in order.
    others: Vec<TaskId>,
}

/// The most tasks one event names: its ids take about 37 KB, well within
/// a record, however many tasks one `submit_many` has.
const MOST_PER_EVENT: usize = 1024;

impl From<RunState> for StateEvent {
    fn from(state: RunState) -> Self {
        StateEvent {
            state,
            others: Vec::new(),
        }
    }
}

impl StateEvent {
    /// Adds `event` to the last of `events` if its state is the same but
    /// for the task (and they name at most `MOST_PER_EVENT` together), else
    /// as an event of its own.
    pub(crate) fn add(events: &mut SmallVec<[StateEvent; 1]>, event: StateEvent) {
        match events.last_mut() {
            Some(last)
                if last.len() + event.len() <= MOST_PER_EVENT
                    && last.state.all_but_id() == event.state.all_but_id() =>
            {
                last.others.push(event.state.id);
                last.others.extend(event.others);
            }
            _ => events.push(event),
        }
    }

    /// How many tasks it is of.
    fn len(&self) -> usize {
        1 + self.others.len()
    }

    /// The tasks, in order.
    fn ids(&self) -> impl Iterator<Item = TaskId> + '_ {
        std::iter::once(self.state.id).chain(self.others.iter().copied())
    }

    /// This event as recorded with id `event`.
    pub(crate) fn recorded_by(&mut self, event: StreamId) {
        self.state.recorded_by(event);
    }

    /// The event an entry of the stream records, or none for an entry that
    /// is not one (it is skipped, never fatal).
    fn from_entry(entry: &Entry) -> Option<StateEvent> {
        let field = |name: &str| field(&entry.fields, name);
        let text = |name: &str| field(name).and_then(|v| std::str::from_utf8(v).ok());
        let ids = text("id").or_else(|| text("ids"))?;
        let mut ids = ids.split(',').map(|id| id.parse::<TaskId>().ok());
        let state = RunState {
            id: ids.next()??,
            name: text("name")?.into(),
            queue: text("queue").unwrap_or_default().into(),
            state: State::parse(field("state")?)?,
            attempt: text("attempt")?.parse().ok()?,
            worker: text("worker").map(Name::from),
            started_ms: text("started").and_then(|ms| ms.parse().ok()),
            result: field("result").cloned(),
            error: text("error").map(str::to_string),
            progress: field("progress").cloned(),
            updated_ms: entry.id.ms,
            event: entry.id,
        };
        let others = ids.collect::<Option<_>>()?;
        Some(StateEvent { state, others })
    }

    /// The event's field names and values, in order; the ids and the
    /// numbers are formatted into the buffers given.
    fn pairs<'a>(&'a self, text: &'a mut TextBuffers) -> impl Pairs<'a> {
        let TextBuffers {
            id,
            ids,
            attempt,
            started,
        } = text;
        let state = &self.state;
        let ids = if self.others.is_empty() {
            (&b"id"[..], state.id.encode(id))
        } else {
            for (i, task) in self.ids().enumerate() {
                if i > 0 {
                    ids.push(b',');
                }
                ids.extend_from_slice(task.encode(id));
            }
            (&b"ids"[..], &ids[..])
        };
        let attempt = attempt.format(state.attempt).as_bytes();
        let started = state.started_ms.map(|ms| started.format(ms).as_bytes());
        [
            (ids.0, Some(ids.1)),
            (b"name", Some(state.name.as_bytes())),
            (b"queue", Some(state.queue.as_bytes())),
            (b"state", Some(state.state.name().as_bytes())),
            (b"attempt", Some(attempt)),
            (b"started", started),
            (b"worker", state.worker.as_deref().map(str::as_bytes)),
            (b"result", state.result.as_deref()),
            (b"error", state.error.as_deref().map(str::as_bytes)),
            (b"progress", state.progress.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }
}

/// Buffers a state event's ids and numbers are formatted into.
struct TextBuffers {
    id: [u8; uuid::fmt::Hyphenated::LENGTH],
    ids: Vec<u8>,
    attempt: itoa::Buffer,
    started: itoa::Buffer,
}

impl TextBuffers {
    fn new() -> Self {
        TextBuffers {
            id: [0; uuid::fmt::Hyphenated::LENGTH],
            ids: Vec::new(),
            attempt: itoa::Buffer::new(),
            started: itoa::Buffer::new(),
        }
    }
}

/// A state is written for every step of every task: its event is encoded
/// straight from its states.
impl NewEntry for StateEvent {
    fn encode(&self, id: StreamId, timestamp_ms: u64, encoder: &mut Encoder) {
        let mut text = TextBuffers::new();
        let pairs = self.pairs(&mut text);
        encoder.push(id, timestamp_ms, pairs, std::iter::empty());
    }

    #[cfg(feature = "redis")]
    fn to_fields(&self) -> crate::streams::Fields {
        let mut text = TextBuffers::new();
        self.pairs(&mut text)
            .map(|(name, value)| (Bytes::copy_from_slice(name), Bytes::copy_from_slice(value)))
            .collect()
    }
}

/// The run states this process has seen, kept current by
/// [`catch_up`](Self::catch_up).
pub(crate) struct StateKeeper {
    /// The latest state of each task, in shards (by task id) under locks of
    /// their own: the writer taking in a batch of states and the workers
    /// and awaiters looking tasks up then rarely wait for each other.
    states: [Mutex<Shard>; SHARDS],
    /// The tasks someone awaits the end of, each with what wakes its
    /// waiters: a state wakes only those who wait for its task.
    awaited: Mutex<HashMap<TaskId, Arc<Notify>>>,
    /// Notified when a task is cancelled, for the workers running it.
    cancelled: Notify,
    /// Every state taken in, for subscribers.
    events: broadcast::Sender<RunState>,
    /// Tasks submitted before this time (ms) that are not in `states` are
    /// forgotten: they ended and their states left memory.
    forgotten_before: AtomicU64,
    /// Finished tasks whose states are in memory, about in the order they
    /// ended: past `max_finished` the oldest leave, except those held.
    finished: Mutex<VecDeque<TaskId>>,
    /// How many finished tasks' states stay in memory, besides held ones.
    max_finished: AtomicUsize,
    /// The last event read.
    seen: Mutex<StreamId>,
    /// The events this process wrote, in order, each kept until it is
    /// applied: by the writer once the event is durable, or by `catch_up`
    /// if it gets there first, in its place among other processes' events.
    /// `catch_up` passes over these events without reading them back. Only
    /// on backends where no reader sees an event before it is here.
    written_here: Mutex<VecDeque<(StreamId, Option<StateEvent>)>>,
}

/// Whether `state` is newer than `current`, the task's state so far. A
/// final state stays, except a dead task requeued for a new attempt
/// (`Orcastra::requeue_dead`); of two states of one stage of a run, the
/// later event wins (a state not recorded yet has the earliest).
fn supersedes(state: &RunState, current: Option<&RunState>) -> bool {
    current.is_none_or(|current| {
        let later = (state.attempt, state.state.rank(), state.event)
            > (current.attempt, current.state.rank(), current.event);
        let revived = current.state == State::Dead && state.attempt > current.attempt;
        (later && !current.state.is_final()) || revived
    })
}

/// The state held by a shard's `entry`, if any: one lookup finds a task's
/// state and where its next one goes.
fn occupant<'a>(entry: &'a btree_map::Entry<'_, TaskId, Arc<RunState>>) -> Option<&'a RunState> {
    match entry {
        btree_map::Entry::Occupied(entry) => Some(entry.get()),
        btree_map::Entry::Vacant(_) => None,
    }
}

/// Puts `state` where `entry` is, replacing the state there.
fn put(entry: btree_map::Entry<'_, TaskId, Arc<RunState>>, state: Arc<RunState>) {
    match entry {
        btree_map::Entry::Occupied(mut entry) => {
            entry.insert(state);
        }
        btree_map::Entry::Vacant(entry) => {
            entry.insert(state);
        }
    }
}

/// The tasks of one shard of the state keeper.
#[derive(Default)]
struct Shard {
    /// The latest state of each task. Ordered, as ids are by submission
    /// time: the states in use (just submitted, running, just ended, the
    /// oldest finished leaving memory) lie near the tree's two ends, which
    /// stay in the caches; a hash map spreads them over all its memory,
    /// some tens of megabytes with the finished ones kept. The tasks of one
    /// event share its state, whose `id` is the first task's.
    states: BTreeMap<TaskId, Arc<RunState>>,
    /// Tasks whose states stay in memory however long ago they finished,
    /// with how many holds: one per task handle.
    held: HashMap<TaskId, usize>,
}

/// About the most events `written_here` holds; past that, the oldest
/// applied ones are dropped and read back like anyone else's (harmless,
/// only slower).
const WRITTEN_HERE: usize = 4096;

/// Shards of the states map.
const SHARDS: usize = 16;

/// How many finished tasks' states stay in memory unless told otherwise:
/// some tens of megabytes.
const DEFAULT_MAX_FINISHED: usize = 100_000;

impl Default for StateKeeper {
    fn default() -> Self {
        StateKeeper {
            states: std::array::from_fn(|_| Mutex::default()),
            awaited: Mutex::default(),
            cancelled: Notify::new(),
            events: broadcast::channel(EVENTS_BEHIND).0,
            forgotten_before: AtomicU64::new(0),
            finished: Mutex::default(),
            max_finished: AtomicUsize::new(DEFAULT_MAX_FINISHED),
            seen: Mutex::default(),
            written_here: Mutex::default(),
        }
    }
}

/// How far a subscriber may fall behind before it loses states.
const EVENTS_BEHIND: usize = 4096;

impl StateKeeper {
    /// The latest state of task `id`, if this process has seen it.
    pub(crate) fn get(&self, id: TaskId) -> Option<RunState> {
        self.shard(id)
            .lock()
            .states
            .get(&id)
            .map(|state| state.of(id))
    }

    /// The shard that holds task `id`'s state.
    fn shard(&self, id: TaskId) -> &Mutex<Shard> {
        let hash = foldhash::fast::FixedState::default().hash_one(id);
        &self.states[hash as usize % SHARDS]
    }

    /// Every state taken in from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<RunState> {
        self.events.subscribe()
    }

    /// Forgets the tasks that finished before `ms` (milliseconds since the
    /// epoch).
    pub(crate) fn forget_finished_before(&self, ms: u64) {
        for shard in &self.states {
            shard
                .lock()
                .states
                .retain(|_, state| !state.state.is_final() || state.updated_ms >= ms);
        }
        self.forgotten_before.fetch_max(ms, Ordering::Relaxed);
        for waiters in self.awaited.lock().values() {
            waiters.notify_waiters();
        }
    }

    /// Keeps the states of at most `max` finished tasks in memory, besides
    /// those held.
    pub(crate) fn keep_finished(&self, max: usize) {
        self.max_finished.store(max, Ordering::Relaxed);
        self.leave_memory(&[]);
    }

    /// Keeps task `id`'s state in memory until [`release`](Self::release).
    pub(crate) fn hold(&self, id: TaskId) {
        *self.shard(id).lock().held.entry(id).or_default() += 1;
    }

    /// Undoes one [`hold`](Self::hold).
    pub(crate) fn release(&self, id: TaskId) {
        let held = &mut self.shard(id).lock().held;
        if let Some(holds) = held.get_mut(&id) {
            *holds -= 1;
            if *holds == 0 {
                held.remove(&id);
            }
        }
    }

    /// Takes note of the tasks that just `ended`, and lets the oldest
    /// finished states past the bound leave memory. A held or awaited one
    /// goes to the back instead; a bounded number are looked at per call,
    /// so that many held ones cost no more than their turn.
    fn leave_memory(&self, ended: &[TaskId]) {
        let max = self.max_finished.load(Ordering::Relaxed);
        let mut finished = self.finished.lock();
        finished.extend(ended.iter().copied());
        if finished.len() <= max {
            return;
        }
        let awaited = self.awaited.lock();
        let mut turns = 2 * ended.len() + 16;
        while finished.len() > max && turns > 0 {
            turns -= 1;
            let id = finished.pop_front().expect("more than max");
            let mut shard = self.shard(id).lock();
            if shard.held.contains_key(&id) || awaited.contains_key(&id) {
                finished.push_back(id);
                continue;
            }
            // Not if it was revived since (a dead task requeued).
            if let btree_map::Entry::Occupied(entry) = shard.states.entry(id)
                && entry.get().state.is_final()
            {
                entry.remove();
                let submitted = id.submitted_ms().unwrap_or(0);
                self.forgotten_before
                    .fetch_max(submitted.saturating_add(1), Ordering::Relaxed);
            }
        }
    }

    /// Where task `id` stands and in which attempt, without copying the
    /// rest of its state.
    pub(crate) fn stage(&self, id: TaskId) -> Option<(State, u32)> {
        self.shard(id)
            .lock()
            .states
            .get(&id)
            .map(|s| (s.state, s.attempt))
    }

    /// Completes when a `Cancelled` state is next taken in.
    pub(crate) fn cancellations(&self) -> tokio::sync::futures::Notified<'_> {
        self.cancelled.notified()
    }

    /// Waits until task `id` reaches a final state; `None` if it is not
    /// known and was submitted before the finished tasks last forgotten, so
    /// its end went with them.
    pub(crate) async fn finished(&self, id: TaskId) -> Option<RunState> {
        // A task awaited after it ended needs no registration.
        if let Some(end) = self.end(id) {
            return end;
        }
        let awaiting = Awaiting::new(self, id);
        loop {
            let notified = awaiting.waiters.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(end) = self.end(id) {
                return end;
            }
            notified.await;
        }
    }

    /// How task `id` ended, `Some(None)` if that is forgotten, `None` while
    /// it has not ended.
    fn end(&self, id: TaskId) -> Option<Option<RunState>> {
        let known = self.shard(id).lock().states.get(&id).map(|state| {
            let over = state.state.is_final();
            over.then(|| state.of(id))
        });
        match known {
            Some(over) => over.map(Some),
            None => {
                let forgotten = self.forgotten_before.load(Ordering::Relaxed);
                id.submitted_ms()
                    .is_some_and(|ms| ms < forgotten)
                    .then_some(None)
            }
        }
    }

    /// Takes in recorded events: the ones this process wrote as soon as
    /// they are written, and every one as it is read (so its own twice: the
    /// second time changes nothing and is not an event).
    pub(crate) fn apply(&self, recorded: impl IntoIterator<Item = impl Into<StateEvent>>) {
        let (mut cancellation, mut ended) = (false, Vec::new());
        for event in recorded {
            let StateEvent { state, others } = event.into();
            let shared = Arc::new(state);
            let state = &*shared;
            for id in std::iter::once(state.id).chain(others) {
                // Events go out under the lock: each task's in order.
                let states = &mut self.shard(id).lock().states;
                let entry = states.entry(id);
                let current = occupant(&entry);
                if supersedes(state, current) {
                    cancellation |= state.state == State::Cancelled;
                    if state.state.is_final() {
                        ended.push(id);
                    }
                    if self.events.receiver_count() > 0 {
                        if let Some(running) = state.implied_start(id, current) {
                            let _ = self.events.send(running);
                        }
                        let _ = self.events.send(state.of(id));
                    }
                    put(entry, Arc::clone(&shared));
                }
            }
        }
        if !ended.is_empty() {
            // While their awaiters are registered, which keeps their
            // states in memory.
            self.leave_memory(&ended);
            // An ended task needs its waiters no more (one that comes
            // later finds the end before it registers). Woken outside the
            // lock, which the awaiters take too.
            let mut awaited = self.awaited.lock();
            let waiters: Vec<Arc<Notify>> =
                ended.iter().filter_map(|id| awaited.remove(id)).collect();
            drop(awaited);
            for waiters in waiters {
                waiters.notify_waiters();
            }
        }
        if cancellation {
            self.cancelled.notify_waiters();
        }
    }

    /// Takes in the states of tasks just submitted, whose entries are
    /// durable and whose events are not yet (`now_ms`: the time): this
    /// process's lookups see them at once, subscribers only once their
    /// events are recorded and replace them.
    pub(crate) fn submitted(&self, events: &[StateEvent], now_ms: u64) {
        for event in events {
            let shared = Arc::new(RunState {
                updated_ms: now_ms,
                ..event.state.clone()
            });
            for id in event.ids() {
                let states = &mut self.shard(id).lock().states;
                let entry = states.entry(id);
                if supersedes(&shared, occupant(&entry)) {
                    put(entry, Arc::clone(&shared));
                }
            }
        }
    }

    /// Takes in `events`, which this process wrote as the events `ids`,
    /// before any reader can see those events.
    pub(crate) fn wrote(&self, events: Vec<StateEvent>, ids: &[StreamId]) {
        let mut written = self.written_here.lock();
        for (mut event, &id) in events.into_iter().zip(ids) {
            event.recorded_by(id);
            written.push_back((id, Some(event)));
        }
        while written.len() > WRITTEN_HERE && written.front().is_some_and(|(_, e)| e.is_none()) {
            written.pop_front();
        }
    }

    /// Applies the events `ids` this process wrote (now durable) that
    /// `catch_up` has not applied yet.
    pub(crate) fn apply_written(&self, ids: &[StreamId]) {
        let Some(&first) = ids.first() else {
            return;
        };
        let mut written = self.written_here.lock();
        let from = written.partition_point(|(id, _)| *id < first);
        let mut events = Vec::with_capacity(written.len() - from);
        events.extend(
            written
                .range_mut(from..)
                .filter_map(|(_, event)| event.take()),
        );
        drop(written);
        self.apply(events);
    }

    /// Reads the state events recorded since the last call, waiting up to
    /// `block` for one if there are none (not at all for zero); returns how
    /// many it read or passed over.
    pub(crate) async fn catch_up(
        &self,
        streams: &Backend,
        block: Duration,
    ) -> Result<usize, StreamError> {
        const COUNT: usize = 4096;
        let after = *self.seen.lock();
        // The events this process wrote are passed over, their states
        // taken in their place among the others' if not applied yet.
        let (mut ours, mut passed, mut passed_to) = (Vec::new(), 0, None);
        let mut skip = |id: StreamId| {
            let mut written = self.written_here.lock();
            // Events before `id` that were never read (trimmed) are passed
            // too.
            let mut ours_here = false;
            while written.front().is_some_and(|&(event, _)| event <= id) {
                let (written_as, event) = written.pop_front().expect("a front");
                ours.extend(event);
                ours_here |= written_as == id;
            }
            if ours_here {
                passed += 1;
                passed_to = Some(id);
            }
            ours_here
        };
        let block = Some(block).filter(|block| !block.is_zero());
        let entries = match streams
            .read_skipping(STATES, after, COUNT, block, &mut skip)
            .await
        {
            Some(entries) => entries?,
            None => {
                let read = streams
                    .read(&[(STATES, ReadFrom::After(after))], Some(COUNT), block)
                    .await?;
                read.into_iter().flat_map(|(_, entries)| entries).collect()
            }
        };
        let mut events: Vec<StateEvent> =
            entries.iter().filter_map(StateEvent::from_entry).collect();
        if let Some(last) = entries.last().map(|entry| entry.id).max(passed_to) {
            *self.seen.lock() = last;
        }
        if !ours.is_empty() {
            events.append(&mut ours);
            events.sort_by_key(|event| event.state.event);
        }
        self.apply(events);
        Ok(entries.len() + passed)
    }
}

/// A wait for the end of a task, registered while it lasts.
struct Awaiting<'a> {
    keeper: &'a StateKeeper,
    id: TaskId,
    waiters: Arc<Notify>,
}

impl<'a> Awaiting<'a> {
    fn new(keeper: &'a StateKeeper, id: TaskId) -> Self {
        let waiters = Arc::clone(keeper.awaited.lock().entry(id).or_default());
        Awaiting {
            keeper,
            id,
            waiters,
        }
    }
}

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        let mut awaited = self.keeper.awaited.lock();
        // Unless the task's end took it out already: the map's and this
        // one, so no one else waits for the task.
        let ours = awaited
            .get(&self.id)
            .is_some_and(|waiters| Arc::ptr_eq(waiters, &self.waiters));
        if ours && Arc::strong_count(&self.waiters) == 2 {
            awaited.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::Poll;

    use super::*;

    fn recorded(id: TaskId, state: State, event: u64) -> RunState {
        let mut recorded = RunState::new(id, "t".into(), "q".into(), state, 0);
        recorded.recorded_by(StreamId::new(event, 0));
        recorded
    }

    #[test]
    fn each_state_is_one_event_however_often_it_is_read() {
        let keeper = StateKeeper::default();
        let mut events = keeper.subscribe();
        let id = TaskId::new();
        let running = recorded(id, State::Running, 2);
        let mut progress = running.clone();
        progress.progress = Some(Bytes::from_static(b"1"));
        progress.recorded_by(StreamId::new(3, 0));
        // Recorded by this process, then each read back from the stream.
        keeper.apply([running.clone(), progress.clone()]);
        keeper.apply([recorded(id, State::Queued, 1), running, progress.clone()]);
        assert_eq!(keeper.get(id), Some(progress));
        let done = recorded(id, State::Succeeded, 4);
        keeper.apply([done.clone(), done]);

        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            seen.push((event.state, event.progress.is_some()));
        }
        let expected = [
            (State::Running, false),
            (State::Running, true),
            (State::Succeeded, false),
        ];
        assert_eq!(seen, expected);
    }

    #[test]
    fn only_a_requeued_dead_task_leaves_its_final_state() {
        let keeper = StateKeeper::default();
        let (dead, cancelled) = (TaskId::new(), TaskId::new());
        keeper.apply([
            recorded(dead, State::Dead, 1),
            recorded(cancelled, State::Cancelled, 2),
        ]);
        let next_attempt = |id, state, event| {
            let mut state = recorded(id, state, event);
            state.attempt = 1;
            state
        };
        keeper.apply([recorded(dead, State::Running, 3)]);
        assert_eq!(keeper.get(dead).map(|s| s.state), Some(State::Dead));
        keeper.apply([
            next_attempt(dead, State::Queued, 4),
            next_attempt(cancelled, State::Queued, 5),
        ]);
        assert_eq!(
            keeper.get(dead).map(|s| (s.state, s.attempt)),
            Some((State::Queued, 1))
        );
        assert_eq!(
            keeper.get(cancelled).map(|s| s.state),
            Some(State::Cancelled)
        );
    }

    #[test]
    fn an_end_that_names_its_start_gives_subscribers_the_running_state_once() {
        let keeper = StateKeeper::default();
        let mut events = keeper.subscribe();
        let (quick, slow) = (TaskId::new(), TaskId::new());
        let ran = |id, state, attempt, event| {
            let mut ran = recorded(id, state, event);
            (ran.attempt, ran.started_ms) = (attempt, Some(event - 1));
            ran
        };
        keeper.apply([recorded(quick, State::Queued, 1)]);
        // Ends at once, attempt after attempt: each run's only event.
        keeper.apply([ran(quick, State::Retrying, 0, 3)]);
        keeper.apply([ran(quick, State::Succeeded, 1, 5)]);
        // Recorded running as it started: nothing implied.
        keeper.apply([ran(slow, State::Running, 0, 6)]);
        keeper.apply([ran(slow, State::Failed, 0, 8)]);
        // Read back: no state twice.
        keeper.apply([
            ran(quick, State::Succeeded, 1, 5),
            ran(slow, State::Failed, 0, 8),
        ]);

        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            let task = if event.id == quick { "quick" } else { "slow" };
            seen.push((task, event.state, event.attempt, event.updated_ms));
        }
        let expected = [
            ("quick", State::Queued, 0, 1),
            ("quick", State::Running, 0, 2),
            ("quick", State::Retrying, 0, 3),
            ("quick", State::Running, 1, 4),
            ("quick", State::Succeeded, 1, 5),
            ("slow", State::Running, 0, 6),
            ("slow", State::Failed, 0, 8),
        ];
        assert_eq!(seen, expected);
        assert_eq!(keeper.get(quick).map(|s| s.state), Some(State::Succeeded));
    }

    /// Wakes counted.
    struct Counter(AtomicU64);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_final_state_wakes_only_those_who_await_its_task() {
        let keeper = StateKeeper::default();
        let (a, b) = (TaskId::new(), TaskId::new());
        keeper.apply([recorded(a, State::Queued, 1), recorded(b, State::Queued, 2)]);
        let counters = [(); 2].map(|()| Arc::new(Counter(AtomicU64::new(0))));
        let wakers = counters.clone().map(std::task::Waker::from);
        let mut waits = [Box::pin(keeper.finished(a)), Box::pin(keeper.finished(b))];
        let mut poll = |i: usize| {
            let mut context = std::task::Context::from_waker(&wakers[i]);
            waits[i].as_mut().poll(&mut context)
        };
        assert!(poll(0).is_pending() && poll(1).is_pending());
        let woken = || counters.each_ref().map(|c| c.0.load(Ordering::SeqCst));

        keeper.apply([recorded(b, State::Running, 3)]);
        assert_eq!(woken(), [0, 0], "not a final state");
        keeper.apply([recorded(a, State::Succeeded, 4)]);
        assert_eq!(woken(), [1, 0]);
        assert!(matches!(poll(0), Poll::Ready(Some(end)) if end.state == State::Succeeded));
        assert!(poll(1).is_pending());
        keeper.apply([recorded(b, State::Failed, 5)]);
        assert_eq!(woken(), [1, 1]);
        assert!(poll(1).is_ready());
        assert!(
            keeper.awaited.lock().is_empty(),
            "ended waits leave nothing"
        );
    }

    #[test]
    fn a_state_event_is_encoded_straight_from_the_state_and_reads_back() {
        let mut state = recorded(TaskId::new(), State::Failed, 0);
        state.attempt = 12;
        state.started_ms = Some(1_700_000_000_123);
        state.worker = Some("w1".into());
        state.result = Some(Bytes::from_static(b"[1]"));
        state.error = Some("boom".into());
        state.progress = Some(Bytes::from_static(b"0.5"));
        let event = StreamId::new(7, 3);
        let mut encoder = Encoder::default();
        let recorded = StateEvent::from(state.clone());
        recorded.encode(event, 7, &mut encoder);
        let records = encoder.records();
        let record = crate::record::Record::decode(Bytes::copy_from_slice(records[0])).unwrap();
        assert_eq!(
            (records.len(), record.id, record.timestamp_ms),
            (1, event, 7)
        );
        let names: Vec<&[u8]> = record.fields.iter().map(|(n, _)| &n[..]).collect();
        let expected: [&[u8]; 10] = [
            b"id",
            b"name",
            b"queue",
            b"state",
            b"attempt",
            b"started",
            b"worker",
            b"result",
            b"error",
            b"progress",
        ];
        assert_eq!(names, expected);
        assert_eq!(field(&record.fields, "attempt").unwrap(), "12");
        assert_eq!(field(&record.fields, "started").unwrap(), "1700000000123");
        assert_eq!(field(&record.fields, "state").unwrap(), "failed");
        #[cfg(feature = "redis")]
        assert_eq!(recorded.to_fields(), record.fields);
        let entry = Entry {
            id: event,
            fields: record.fields,
        };
        state.recorded_by(event);
        let read = StateEvent::from_entry(&entry).unwrap();
        assert_eq!((read.state, read.others), (state, vec![]));
    }

    #[test]
    fn consecutive_states_the_same_but_for_the_task_are_one_event_naming_every_task() {
        let queued = |id| RunState::new(id, "send".into(), "mail".into(), State::Queued, 0);
        let ids = [TaskId::new(), TaskId::new(), TaskId::new()];
        let mut other_attempt = queued(TaskId::new());
        other_attempt.attempt = 1;
        let ended = |id, ms| {
            let mut ended = queued(id);
            (ended.state, ended.started_ms) = (State::Succeeded, Some(ms));
            ended
        };
        let states = [
            queued(ids[0]),
            queued(ids[1]),
            queued(ids[2]),
            other_attempt,
            queued(ids[0]),
            ended(ids[1], 5),
            ended(ids[2], 5),
            ended(ids[0], 6),
        ];
        let mut events = SmallVec::new();
        for state in states.clone() {
            StateEvent::add(&mut events, state.into());
        }
        let tasks: Vec<usize> = events.iter().map(StateEvent::len).collect();
        assert_eq!(
            tasks,
            [3, 1, 1, 2, 1],
            "consecutive states that differ in the task alone"
        );
        // A large submission's states: events of a bounded size.
        let mut large = SmallVec::new();
        for _ in 0..2 * MOST_PER_EVENT + 1 {
            StateEvent::add(&mut large, queued(TaskId::new()).into());
        }
        let tasks: Vec<usize> = large.iter().map(StateEvent::len).collect();
        assert_eq!(tasks, [MOST_PER_EVENT, MOST_PER_EVENT, 1]);
        // Events of several tasks go together, in order, as long as they
        // fit.
        let two = |a, b| {
            let mut events = SmallVec::new();
            StateEvent::add(&mut events, queued(a).into());
            StateEvent::add(&mut events, queued(b).into());
            events.pop().expect("one event")
        };
        let mut joined = SmallVec::new();
        StateEvent::add(&mut joined, two(ids[0], ids[1]));
        StateEvent::add(&mut joined, two(ids[2], ids[0]));
        StateEvent::add(&mut joined, large.swap_remove(1));
        let tasks: Vec<usize> = joined.iter().map(StateEvent::len).collect();
        assert_eq!(tasks, [4, MOST_PER_EVENT]);
        let order: Vec<TaskId> = joined[0].ids().collect();
        assert_eq!(order, [ids[0], ids[1], ids[2], ids[0]]);
        let mut encoder = Encoder::default();
        large[0].encode(StreamId::new(1, 0), 1, &mut encoder);
        assert!(encoder.records()[0].len() < 64 << 10);

        let event = StreamId::new(9, 0);
        let mut encoder = Encoder::default();
        events[0].encode(event, 9, &mut encoder);
        let record = crate::record::Record::decode(Bytes::copy_from_slice(encoder.records()[0]));
        let fields = record.unwrap().fields;
        let names: Vec<&[u8]> = fields.iter().map(|(n, _)| &n[..]).collect();
        let expected: [&[u8]; 5] = [b"ids", b"name", b"queue", b"state", b"attempt"];
        assert_eq!(names, expected);
        let listed = ids.map(|id| id.to_string()).join(",");
        assert_eq!(field(&fields, "ids").unwrap(), listed.as_str());
        #[cfg(feature = "redis")]
        assert_eq!(events[0].to_fields(), fields);
        let read = StateEvent::from_entry(&Entry { id: event, fields }).unwrap();
        let mut expected = states[0].clone();
        expected.recorded_by(event);
        assert_eq!(read.state, expected);
        assert_eq!(read.ids().collect::<Vec<_>>(), ids);
    }

    #[test]
    fn an_event_with_an_id_that_does_not_parse_is_passed_over() {
        let good = TaskId::new().to_string();
        let cases = [
            (good.clone(), 1),
            (format!("{good},{good}"), 2),
            (String::new(), 0),
            (format!("{good},x"), 0),
        ];
        for (ids, tasks) in cases {
            let fields = [
                ("ids", &*ids),
                ("name", "send"),
                ("state", "queued"),
                ("attempt", "0"),
            ];
            let bytes = |text: &str| Bytes::copy_from_slice(text.as_bytes());
            let entry = Entry {
                id: StreamId::new(1, 0),
                fields: fields.iter().map(|(n, v)| (bytes(n), bytes(v))).collect(),
            };
            let read = StateEvent::from_entry(&entry);
            assert_eq!(read.map_or(0, |event| event.len()), tasks, "{ids:?}");
        }
    }

    #[test]
    fn finished_tasks_are_forgotten_after_their_time() {
        let keeper = StateKeeper::default();
        let (old, new, waiting) = (TaskId::new(), TaskId::new(), TaskId::new());
        keeper.apply([
            recorded(old, State::Failed, 10),
            recorded(new, State::Succeeded, 30),
            recorded(waiting, State::Queued, 5),
        ]);
        keeper.forget_finished_before(20);
        assert_eq!(keeper.get(old), None);
        assert!(keeper.get(new).is_some());
        assert!(keeper.get(waiting).is_some(), "not finished: kept");
    }
}
