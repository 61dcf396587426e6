//! The commands that talk to a running `orcastra serve` over its HTTP and
//! WebSocket API: submit, status, queues, tail, groups, pending, dead.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Where the server's HTTP API is.
#[derive(Args)]
pub struct ServerArg {
    /// The server's HTTP API.
    #[arg(long, env = "ORCASTRA_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
}

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The task's registered name.
    name: String,
    /// Its arguments, as a JSON array.
    #[arg(default_value = "[]")]
    args: String,
    /// The queue.
    #[arg(long, default_value = "default")]
    queue: String,
    /// Run no sooner than this many milliseconds from now.
    #[arg(long)]
    delay_ms: Option<u64>,
    /// 0 (the default) to 3, the highest.
    #[arg(long)]
    priority: Option<u8>,
    /// Retries after a failure.
    #[arg(long)]
    retries: Option<u32>,
    /// An idempotency key: while a task with it is unfinished, submitting
    /// again returns that task.
    #[arg(long)]
    unique_key: Option<String>,
    /// Follow the task's states until it ends; exit 1 unless it succeeds.
    #[arg(long)]
    wait: bool,
}

#[derive(Args)]
pub struct TailArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Follow the state events of this task…
    #[arg(long, conflicts_with_all = ["queue", "stream"])]
    task: Option<String>,
    /// …or of every task of this queue…
    #[arg(long, conflicts_with = "stream")]
    queue: Option<String>,
    /// …or the entries of this stream (from `--from`, default: new ones).
    #[arg(long)]
    stream: Option<String>,
    /// With `--stream`: start after this id (`0` for the whole stream).
    #[arg(long)]
    from: Option<String>,
}

#[derive(Subcommand)]
pub enum DeadCommand {
    /// List a queue's dead letters, oldest first.
    List {
        #[command(flatten)]
        server: ServerArg,
        queue: String,
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// Put dead letters back in their queue for one more attempt.
    Requeue(DeadEntries),
    /// Delete dead letters.
    Drop(DeadEntries),
}

#[derive(Args)]
pub struct DeadEntries {
    #[command(flatten)]
    server: ServerArg,
    queue: String,
    /// The dead-letter entries (ids from `dead list`).
    #[arg(required_unless_present = "all")]
    entries: Vec<String>,
    /// Every dead letter of the queue.
    #[arg(long, conflicts_with = "entries")]
    all: bool,
}

/// A client of the API at `server`.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(server: &ServerArg) -> Api {
        Api {
            base: server.server.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// Sends a request and returns the JSON reply, or the server's error.
    async fn call(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let reply = request
            .send()
            .await
            .with_context(|| format!("cannot reach orcastra serve at {}", self.base))?;
        let status = reply.status();
        let body: Value = reply.json().await.context("a reply that is not JSON")?;
        if !status.is_success() {
            let message = body["error"].as_str().unwrap_or("no error message");
            bail!("{status}: {message}");
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.http.post(format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.call(request).await
    }

    fn websocket(&self, path: &str) -> String {
        let base = self.base.replacen("https://", "wss://", 1);
        format!("{}{path}", base.replacen("http://", "ws://", 1))
    }
}

fn print(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON prints")
    );
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.server);
    let task_args: Value = serde_json::from_str(&args.args)
        .with_context(|| format!("the arguments are not JSON: {}", args.args))?;
    let body = json!({
        "name": args.name,
        "queue": args.queue,
        "args": task_args,
        "delay_ms": args.delay_ms,
        "priority": args.priority,
        "retries": args.retries,
        "unique_key": args.unique_key,
    });
    let reply = api.post("/tasks", Some(body)).await?;
    let id = reply["id"]
        .as_str()
        .context("no id in the reply")?
        .to_string();
    println!("{id}");
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let state = follow(&api, &format!("/events?task={id}"), &id).await?;
    print(&state);
    Ok(if state["state"] == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Shows a task's states on stderr as they come, until it ends; returns
/// the last.
async fn follow(api: &Api, path: &str, id: &str) -> anyhow::Result<Value> {
    let (mut socket, _) = tokio_tungstenite::connect_async(api.websocket(path))
        .await
        .context("cannot open the state event WebSocket")?;
    // The task may have ended before the socket opened.
    let current = api.get(&format!("/tasks/{id}")).await?;
    if is_final(&current) {
        return Ok(current);
    }
    while let Some(message) = socket.next().await {
        let message = message.context("the state event WebSocket broke")?;
        let Ok(text) = message.to_text() else {
            continue;
        };
        let event: Value = serde_json::from_str(text).context("a state event that is not JSON")?;
        eprintln!(
            "{} {}",
            event["state"].as_str().unwrap_or("?"),
            event["updated_ms"]
        );
        if is_final(&event) {
            return Ok(event);
        }
    }
    bail!("the server closed the state event WebSocket")
}

fn is_final(state: &Value) -> bool {
    matches!(
        state["state"].as_str(),
        Some("succeeded" | "failed" | "dead" | "cancelled")
    )
}

pub async fn status(server: ServerArg, id: String) -> anyhow::Result<ExitCode> {
    print(&Api::new(&server).get(&format!("/tasks/{id}")).await?);
    Ok(ExitCode::SUCCESS)
}

pub async fn queues(server: ServerArg) -> anyhow::Result<ExitCode> {
    let queues = Api::new(&server).get("/queues").await?;
    println!(
        "{:<24} {:>10} {:>10} {:>10}",
        "QUEUE", "QUEUED", "PENDING", "DEAD"
    );
    for queue in queues.as_array().into_iter().flatten() {
        let count = |field: &str| queue[field].as_u64().unwrap_or(0);
        println!(
            "{:<24} {:>10} {:>10} {:>10}",
            queue["name"].as_str().unwrap_or("?"),
            count("queued"),
            count("pending"),
            count("dead")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn groups(server: ServerArg, stream: String) -> anyhow::Result<ExitCode> {
    print(
        &Api::new(&server)
            .get(&format!("/streams/{stream}/groups"))
            .await?,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn pending(
    server: ServerArg,
    stream: String,
    group: String,
    count: usize,
) -> anyhow::Result<ExitCode> {
    let path = format!("/streams/{stream}/groups/{group}/pending?count={count}");
    print(&Api::new(&server).get(&path).await?);
    Ok(ExitCode::SUCCESS)
}

/// Prints each event or entry as one line of JSON, until interrupted.
pub async fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.server);
    if let Some(stream) = &args.stream {
        let mut after = match &args.from {
            Some(from) => from.clone(),
            None => last_id(&api, stream).await?,
        };
        loop {
            let path = format!("/streams/{stream}/entries?after={after}&block_ms=10000&count=1000");
            let entries = api.get(&path).await?;
            for entry in entries.as_array().into_iter().flatten() {
                println!("{entry}");
                after = entry["id"].as_str().context("an entry without id")?.into();
            }
        }
    }
    let path = match (&args.task, &args.queue) {
        (Some(task), _) => format!("/events?task={task}"),
        (None, Some(queue)) => format!("/events?queue={queue}"),
        (None, None) => "/events".to_string(),
    };
    let (mut socket, _) = tokio_tungstenite::connect_async(api.websocket(&path))
        .await
        .context("cannot open the state event WebSocket")?;
    while let Some(message) = socket.next().await {
        if let Ok(text) = message
            .context("the state event WebSocket broke")?
            .to_text()
        {
            println!("{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The id of a stream's last entry, to tail only new ones.
async fn last_id(api: &Api, stream: &str) -> anyhow::Result<String> {
    let mut after = "0".to_string();
    loop {
        let path = format!("/streams/{stream}/entries?after={after}&count=10000");
        let entries = api.get(&path).await?;
        match entries.as_array().and_then(|entries| entries.last()) {
            Some(last) => after = last["id"].as_str().context("an entry without id")?.into(),
            None => return Ok(after),
        }
    }
}

pub async fn dead(command: DeadCommand) -> anyhow::Result<ExitCode> {
    let (entries, requeue) = match command {
        DeadCommand::List {
            server,
            queue,
            count,
        } => {
            let path = format!("/queues/{queue}/dead?count={count}");
            print(&Api::new(&server).get(&path).await?);
            return Ok(ExitCode::SUCCESS);
        }
        DeadCommand::Requeue(entries) => (entries, true),
        DeadCommand::Drop(entries) => (entries, false),
    };
    let api = Api::new(&entries.server);
    let queue = &entries.queue;
    let ids = if entries.all {
        let letters = api
            .get(&format!("/queues/{queue}/dead?count=1000000"))
            .await?;
        letters
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|letter| letter["entry"].as_str().map(str::to_string))
            .collect()
    } else {
        entries.entries
    };
    let (verb, total) = (if requeue { "requeued" } else { "dropped" }, ids.len());
    let mut last_report = std::time::Instant::now();
    for (done, entry) in ids.iter().enumerate() {
        if requeue {
            api.post(&format!("/queues/{queue}/dead/{entry}/requeue"), None)
                .await?;
        } else {
            let url = format!("{}/queues/{queue}/dead/{entry}", api.base);
            api.call(api.http.delete(url)).await?;
        }
        if last_report.elapsed() > Duration::from_millis(500) {
            eprintln!("{verb} {}/{total}", done + 1);
            last_report = std::time::Instant::now();
        }
    }
    eprintln!("{verb} {total} dead letters of queue {queue}");
    Ok(ExitCode::SUCCESS)
}
