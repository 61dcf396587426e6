//! The HTTP and WebSocket API of `orcastra serve`, for tools and other
//! languages: submit tasks with JSON arguments, follow their states, see
//! queues, handle dead letters; `/healthz` and Prometheus `/metrics`.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /tasks` | submit: `{"name", "queue", "args": [...], "delay_ms", "priority", "retries", "timeout_ms", "unique_key", "unique_for_ms"}` → `201 {"id"}` |
//! | `GET /tasks/{id}` | the task's state, with its result or error |
//! | `POST /tasks/{id}/cancel` | cancel: `{"cancelled": bool}` |
//! | `GET /queues` | every queue: `[{"name", "queued", "pending", "dead"}]` |
//! | `GET /queues/{queue}/dead?count=n` | its dead letters, oldest first |
//! | `POST /queues/{queue}/dead/{entry}/requeue` | put a dead letter back in its queue |
//! | `DELETE /queues/{queue}/dead/{entry}` | drop a dead letter |
//! | `GET /events?queue=q&task=id` | WebSocket: each state event as JSON, filtered |
//! | `GET /streams/{stream}/entries?after=id&count=n&block_ms=t` | entries after an id (XREAD) |
//! | `GET /streams/{stream}/groups` | its consumer groups (XINFO GROUPS) |
//! | `GET /streams/{stream}/groups/{group}/pending?count=n` | a group's pending entries (XPENDING) |
//! | `GET /healthz` | `ok` while the engine answers |
//! | `GET /metrics` | Prometheus text format |
//!
//! Errors are `{"error": "…"}` with 400 for bad input, 404 for what does
//! not exist, 500 for a failing backend.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::log::FsyncLatency;
use crate::statekeeper::{RunState, State as RunStage};
use crate::streams::{Embedded, LogStore, PendingQuery, ReadFrom, StreamError, Streams};
use crate::task::TaskId;
use crate::{Error, Orcastra, StreamId, SubmitOptions};

/// What every request handler shares.
struct Api<S: LogStore> {
    orca: Orcastra,
    streams: Arc<Embedded<S>>,
    metrics: Arc<Metrics>,
}

/// The router of the API over `orca`, whose backend is `streams` (the
/// server lists queues from the engine's streams). Starts following state
/// events for the metrics.
pub fn router<S: LogStore>(orca: Orcastra, streams: Arc<Embedded<S>>) -> Router {
    let metrics = Arc::new(Metrics::new());
    // Ends when the last handle on `orca`, and so its event sender, goes.
    tokio::spawn(follow_for_metrics(orca.subscribe(), Arc::clone(&metrics)));
    let api = Arc::new(Api {
        orca,
        streams,
        metrics,
    });
    Router::new()
        .route("/tasks", post(submit::<S>))
        .route("/tasks/{id}", get(task_state::<S>))
        .route("/tasks/{id}/cancel", post(cancel::<S>))
        .route("/queues", get(queues::<S>))
        .route("/queues/{queue}/dead", get(dead_letters::<S>))
        .route("/queues/{queue}/dead/{entry}/requeue", post(requeue::<S>))
        .route("/queues/{queue}/dead/{entry}", delete(drop_dead::<S>))
        .route("/events", get(events::<S>))
        .route("/streams/{stream}/entries", get(entries::<S>))
        .route("/streams/{stream}/groups", get(groups::<S>))
        .route(
            "/streams/{stream}/groups/{group}/pending",
            get(pending::<S>),
        )
        .route("/healthz", get(healthz::<S>))
        .route("/metrics", get(prometheus_metrics::<S>))
        .with_state(api)
}

/// An error reply: a status and a message.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        let status = match error {
            Error::Streams(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Failure(status, error.to_string())
    }
}

impl From<crate::streams::StreamError> for Failure {
    fn from(error: crate::streams::StreamError) -> Failure {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

type Reply = Result<Response, Failure>;

fn task_id(text: &str) -> Result<TaskId, Failure> {
    text.parse()
        .map_err(|_| Failure(StatusCode::BAD_REQUEST, format!("not a task id: {text}")))
}

fn entry_id(text: &str) -> Result<StreamId, Failure> {
    text.parse().map_err(|_| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("not a dead-letter entry id: {text}"),
        )
    })
}

/// The body of `POST /tasks`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    name: String,
    #[serde(default = "default_queue")]
    queue: String,
    #[serde(default = "no_args")]
    args: Value,
    delay_ms: Option<u64>,
    priority: Option<u8>,
    retries: Option<u32>,
    timeout_ms: Option<u64>,
    unique_key: Option<String>,
    unique_for_ms: Option<u64>,
}

fn default_queue() -> String {
    "default".into()
}

fn no_args() -> Value {
    Value::Array(Vec::new())
}

async fn submit<S: LogStore>(
    State(api): State<Arc<Api<S>>>,
    body: Result<Json<Submission>, axum::extract::rejection::JsonRejection>,
) -> Reply {
    let Json(submission) = body.map_err(|e| Failure(StatusCode::BAD_REQUEST, e.body_text()))?;
    let options = SubmitOptions {
        delay: submission.delay_ms.map(Duration::from_millis),
        priority: submission.priority,
        retries: submission.retries,
        timeout: submission.timeout_ms.map(Duration::from_millis),
        unique_key: submission.unique_key,
        unique_for: submission.unique_for_ms.map(Duration::from_millis),
        ..SubmitOptions::default()
    };
    let args = serde_json::to_vec(&submission.args).expect("a JSON value encodes");
    let id = api
        .orca
        .submit_json(&submission.name, &submission.queue, &args, options)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id.to_string() }))).into_response())
}

/// A run state as JSON; results and progress are JSON already.
fn state_json(state: &RunState) -> Value {
    let raw = |bytes: &Option<bytes::Bytes>| {
        bytes
            .as_ref()
            .map(|bytes| serde_json::from_slice(bytes).unwrap_or(Value::Null))
    };
    json!({
        "id": state.id.to_string(),
        "name": &*state.name,
        "queue": &*state.queue,
        "state": state.state.name(),
        "attempt": state.attempt,
        "worker": state.worker.as_deref(),
        "result": raw(&state.result),
        "error": state.error,
        "progress": raw(&state.progress),
        "started_ms": state.started_ms,
        "updated_ms": state.updated_ms,
    })
}

async fn task_state<S: LogStore>(State(api): State<Arc<Api<S>>>, Path(id): Path<String>) -> Reply {
    let id = task_id(&id)?;
    match api.orca.state(id) {
        Some(state) => Ok(Json(state_json(&state)).into_response()),
        None => Err(Failure(StatusCode::NOT_FOUND, format!("no task {id}"))),
    }
}

async fn cancel<S: LogStore>(State(api): State<Arc<Api<S>>>, Path(id): Path<String>) -> Reply {
    let id = task_id(&id)?;
    if api.orca.state(id).is_none() {
        return Err(Failure(StatusCode::NOT_FOUND, format!("no task {id}")));
    }
    let cancelled = api.orca.cancel(id).await?;
    Ok(Json(json!({ "cancelled": cancelled })).into_response())
}

/// Every queue with a stream in the engine, by name.
fn queue_names<S: LogStore>(api: &Api<S>) -> Result<Vec<String>, Failure> {
    let mut names: Vec<String> = api
        .streams
        .names()?
        .iter()
        .filter_map(|stream| Orcastra::queue_of(stream).map(str::to_string))
        .collect();
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

async fn queues<S: LogStore>(State(api): State<Arc<Api<S>>>) -> Reply {
    let mut infos = Vec::new();
    for name in queue_names(&api)? {
        infos.push(api.orca.queue_info(&name).await?);
    }
    Ok(Json(infos).into_response())
}

/// `?count=n`.
#[derive(Deserialize)]
struct CountQuery {
    count: Option<usize>,
}

async fn dead_letters<S: LogStore>(
    State(api): State<Arc<Api<S>>>,
    Path(queue): Path<String>,
    Query(query): Query<CountQuery>,
) -> Reply {
    let letters = api
        .orca
        .dead_letters(&queue, query.count.unwrap_or(100))
        .await?;
    Ok(Json(letters).into_response())
}

async fn requeue<S: LogStore>(
    State(api): State<Arc<Api<S>>>,
    Path((queue, entry)): Path<(String, String)>,
) -> Reply {
    if api.orca.requeue_dead(&queue, entry_id(&entry)?).await? {
        Ok(Json(json!({ "requeued": true })).into_response())
    } else {
        Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no dead letter {entry} in queue {queue}"),
        ))
    }
}

async fn drop_dead<S: LogStore>(
    State(api): State<Arc<Api<S>>>,
    Path((queue, entry)): Path<(String, String)>,
) -> Reply {
    if api.orca.drop_dead(&queue, entry_id(&entry)?).await? {
        Ok(Json(json!({ "dropped": true })).into_response())
    } else {
        Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no dead letter {entry} in queue {queue}"),
        ))
    }
}

#[derive(Deserialize)]
struct EventFilter {
    queue: Option<String>,
    task: Option<String>,
}

async fn events<S: LogStore>(
    State(api): State<Arc<Api<S>>>,
    Query(filter): Query<EventFilter>,
    upgrade: WebSocketUpgrade,
) -> Reply {
    let task = filter.task.as_deref().map(task_id).transpose()?;
    let states = api.orca.subscribe();
    Ok(upgrade.on_upgrade(move |socket| send_events(socket, states, filter.queue, task)))
}

/// Sends the state events that pass the filter until the client goes. A
/// client too slow to keep up is told how many events it missed.
async fn send_events(
    mut socket: WebSocket,
    mut states: tokio::sync::broadcast::Receiver<RunState>,
    queue: Option<String>,
    task: Option<TaskId>,
) {
    loop {
        let message = tokio::select! {
            state = states.recv() => match state {
                Ok(state) => {
                    let wanted = queue.as_ref().is_none_or(|q| **q == *state.queue)
                        && task.is_none_or(|id| id == state.id);
                    if !wanted {
                        continue;
                    }
                    state_json(&state).to_string()
                }
                Err(RecvError::Lagged(missed)) => json!({ "missed": missed }).to_string(),
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(_)) => continue,
                _ => return,
            },
        };
        if socket.send(Message::Text(message.into())).await.is_err() {
            return;
        }
    }
}

#[derive(Deserialize)]
struct EntriesQuery {
    after: Option<String>,
    count: Option<usize>,
    block_ms: Option<u64>,
}

/// Entry fields as a JSON object of text (bytes that are not UTF-8 are
/// replaced, as for display).
fn entry_json(entry: &crate::streams::Entry) -> Value {
    let fields: serde_json::Map<String, Value> = entry
        .fields
        .iter()
        .map(|(name, value)| {
            let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
            (text(name), Value::String(text(value)))
        })
        .collect();
    json!({ "id": entry.id.to_string(), "fields": fields })
}

/// The most a long poll for entries may wait.
const MAX_BLOCK: Duration = Duration::from_secs(30);

async fn entries<S: LogStore>(
    State(api): State<Arc<Api<S>>>,
    Path(stream): Path<String>,
    Query(query): Query<EntriesQuery>,
) -> Reply {
    let after = match query.after.as_deref() {
        None | Some("0") => StreamId::MIN,
        Some(id) => entry_id(id)?,
    };
    // Zero would wait forever: a long poll waits at most MAX_BLOCK.
    let block = query
        .block_ms
        .map(|ms| Duration::from_millis(ms).clamp(Duration::from_millis(1), MAX_BLOCK));
    let read = api
        .streams
        .read(
            &[(&stream, ReadFrom::After(after))],
            Some(query.count.unwrap_or(100)),
            block,
        )
        .await?;
    let entries: Vec<Value> = read
        .iter()
        .flat_map(|(_, entries)| entries.iter().map(entry_json))
        .collect();
    Ok(Json(entries).into_response())
}

async fn groups<S: LogStore>(State(api): State<Arc<Api<S>>>, Path(stream): Path<String>) -> Reply {
    let groups = match api.streams.groups(&stream).await {
        Err(StreamError::NoSuchKey) => {
            return Err(Failure(
                StatusCode::NOT_FOUND,
                format!("no stream {stream}"),
            ));
        }
        other => other?,
    };
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|group| {
            json!({
                "name": group.name,
                "consumers": group.consumers,
                "pending": group.pending,
                "last_delivered_id": group.last_delivered_id.to_string(),
                "entries_read": group.entries_read,
                "lag": group.lag,
            })
        })
        .collect();
    Ok(Json(groups).into_response())
}

async fn pending<S: LogStore>(
    State(api): State<Arc<Api<S>>>,
    Path((stream, group)): Path<(String, String)>,
    Query(query): Query<CountQuery>,
) -> Reply {
    let query = PendingQuery::first(query.count.unwrap_or(100));
    let pending = match api.streams.pending(&stream, &group, &query).await {
        Err(error @ StreamError::NoGroup { .. }) => {
            return Err(Failure(StatusCode::NOT_FOUND, error.to_string()));
        }
        other => other?,
    };
    let pending: Vec<Value> = pending
        .into_iter()
        .map(|entry| {
            json!({
                "id": entry.id.to_string(),
                "consumer": entry.consumer,
                "idle_ms": entry.idle.as_millis() as u64,
                "deliveries": entry.deliveries,
            })
        })
        .collect();
    Ok(Json(pending).into_response())
}

async fn healthz<S: LogStore>(State(api): State<Arc<Api<S>>>) -> Reply {
    api.streams.names()?;
    Ok("ok\n".into_response())
}

async fn prometheus_metrics<S: LogStore>(State(api): State<Arc<Api<S>>>) -> Reply {
    for name in queue_names(&api)? {
        let info = api.orca.queue_info(&name).await?;
        for (state, count) in [
            ("queued", info.queued),
            ("pending", info.pending),
            ("dead", info.dead),
        ] {
            let labels = QueueLabels {
                queue: name.clone(),
                state: state.into(),
            };
            api.metrics
                .queue_tasks
                .get_or_create(&labels)
                .set(count as i64);
        }
    }
    let mut text = String::new();
    encode(&mut text, &api.metrics.registry.lock())
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// The server's Prometheus metrics.
struct Metrics {
    registry: Mutex<Registry>,
    /// Tasks per queue and state (queued, pending, dead), read at scrape time.
    queue_tasks: Family<QueueLabels, Gauge>,
    /// State events seen, by state: throughput.
    events: Family<StateLabels, Counter>,
    /// From queued to running, for tasks queued while the server watched.
    start_latency: Histogram,
    /// From running to the end of the run.
    run_time: Histogram,
    /// Runs started again without a state in between: the worker died
    /// and the task was delivered again.
    redeliveries: Counter,
    /// When each task being watched was queued and started, by id (only
    /// unfinished tasks; bounded).
    watched: Mutex<HashMap<TaskId, (u64, Option<u64>)>>,
}

/// Tasks whose timings are watched at once; beyond, new ones are not timed.
const MAX_WATCHED: usize = 100_000;

impl Metrics {
    fn new() -> Metrics {
        let metrics = Metrics {
            registry: Mutex::new(Registry::with_prefix("orcastra")),
            queue_tasks: Family::default(),
            events: Family::default(),
            start_latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            run_time: Histogram::new(exponential_buckets(0.000_1, 2.0, 22)),
            redeliveries: Counter::default(),
            watched: Mutex::new(HashMap::new()),
        };
        {
            let mut registry = metrics.registry.lock();
            registry.register(
                "queue_tasks",
                "Tasks in each queue: queued (waiting), pending (delivered, not finished), dead",
                metrics.queue_tasks.clone(),
            );
            registry.register(
                "task_events",
                "Task state events seen, by state",
                metrics.events.clone(),
            );
            registry.register(
                "task_start_latency_seconds",
                "Time from queued to running",
                metrics.start_latency.clone(),
            );
            registry.register(
                "task_run_seconds",
                "Time from running to the end of the run",
                metrics.run_time.clone(),
            );
            registry.register(
                "task_redeliveries",
                "Runs started again after their worker died",
                metrics.redeliveries.clone(),
            );
            registry.register(
                "fsync_seconds",
                "Time each fsync of the data took",
                FsyncHistogram,
            );
        }
        metrics
    }

    fn observe(&self, state: &RunState) {
        let labels = StateLabels {
            state: state.state.name().into(),
        };
        self.events.get_or_create(&labels).inc();
        let seconds = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1000.0;
        let mut watched = self.watched.lock();
        match state.state {
            RunStage::Queued | RunStage::Retrying if watched.len() < MAX_WATCHED => {
                watched.insert(state.id, (state.updated_ms, None));
            }
            RunStage::Running => match watched.get_mut(&state.id) {
                Some((_, Some(_))) => {
                    self.redeliveries.inc();
                }
                Some((queued, started)) => {
                    self.start_latency
                        .observe(seconds(*queued, state.updated_ms));
                    *started = Some(state.updated_ms);
                }
                None => {}
            },
            stage if stage.ends_attempt() => {
                if let Some((_, Some(started))) = watched.remove(&state.id) {
                    self.run_time.observe(seconds(started, state.updated_ms));
                }
            }
            _ => {}
        }
    }
}

async fn follow_for_metrics(
    mut states: tokio::sync::broadcast::Receiver<RunState>,
    metrics: Arc<Metrics>,
) {
    loop {
        match states.recv().await {
            Ok(state) => metrics.observe(&state),
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "metrics missed state events");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// The process's fsync times ([`FsyncLatency`]) as a Prometheus histogram.
#[derive(Debug)]
struct FsyncHistogram;

impl EncodeMetric for FsyncHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let latency = FsyncLatency::get();
        let buckets: Vec<(f64, u64)> = latency
            .buckets()
            .into_iter()
            .map(|(bound, count)| (if bound.is_finite() { bound } else { f64::MAX }, count))
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        encoder.encode_histogram::<NoLabelSet>(latency.total_seconds(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
