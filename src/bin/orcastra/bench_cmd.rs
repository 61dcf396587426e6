//! `orcastra bench`: the same workloads against `orcastra serve` and a
//! `redis-server`, in one run, the servers taking turns; prints each side's
//! median and their ratio, with each side's durability.
//!
//! Workloads: XADD (clients sending pipelines of XADDs), XREADGROUP + XACK
//! (clients reading a prefilled stream in a group and acknowledging what
//! they read), and end-to-end no-op tasks (submitted in batches, run by a
//! worker of concurrency 64, each result awaited) through the task layer
//! over `redis://`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::future::try_join_all;
use orcastra::prelude::*;
use orcastra::{Orcastra, SubmitOptions};
use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::Fsync;

#[derive(Args)]
pub struct BenchArgs {
    /// A running `orcastra serve` (RESP address); by default one is started
    /// on a temporary directory with `--fsync`.
    #[arg(long)]
    orcastra: Option<SocketAddr>,
    /// A running `redis-server`; by default one is started from PATH with
    /// the `appendfsync` that matches `--fsync`.
    #[arg(long)]
    redis: Option<SocketAddr>,
    /// The fsync policy of the servers started: `batch` against Redis's
    /// `always`, `interval` against `everysec`, `never` against `no`.
    #[arg(long, value_enum, default_value_t = Fsync::Batch)]
    fsync: Fsync,
    /// Concurrent clients.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Requests each client sends at once.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// XADDs (and entries read) per run.
    #[arg(long, default_value_t = 200_000)]
    requests: usize,
    /// No-op tasks per run.
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// Runs of each workload on each side; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// A server the bench started, stopped when dropped.
struct Started {
    child: Child,
    dir: PathBuf,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("orcastra-bench-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_orcastra(fsync: Fsync) -> anyhow::Result<(SocketAddr, Started)> {
    let dir = scratch_dir("orcastra")?;
    let port = free_port()?;
    let fsync = format!("{fsync:?}").to_lowercase();
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--http", "off", "--fsync", &fsync, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start orcastra serve")?;
    Ok((
        SocketAddr::from(([127, 0, 0, 1], port)),
        Started { child, dir },
    ))
}

fn start_redis(fsync: Fsync) -> anyhow::Result<(SocketAddr, Started)> {
    let dir = scratch_dir("redis")?;
    let port = free_port()?;
    let appendfsync = match fsync {
        Fsync::Always | Fsync::Batch => "always",
        Fsync::Interval => "everysec",
        Fsync::Never => "no",
    };
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
        .args(["--appendfsync", appendfsync, "--port", &port.to_string()])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start redis-server from PATH (Debian: apt-get install redis-server)")?;
    Ok((
        SocketAddr::from(([127, 0, 0, 1], port)),
        Started { child, dir },
    ))
}

async fn connect(addr: SocketAddr) -> anyhow::Result<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}"))?;
    for _ in 0..200 {
        if let Ok(connection) = client.get_multiplexed_async_connection().await {
            return Ok(connection);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no server answers at {addr}")
}

/// How a server makes writes durable, in its own words.
async fn durability(addr: SocketAddr) -> anyhow::Result<String> {
    let mut connection = connect(addr).await?;
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query_async(&mut connection)
        .await?;
    Ok(format!(
        "appendfsync {}",
        config.get(1).map_or("?", String::as_str)
    ))
}

/// One side of the comparison.
struct Side {
    name: &'static str,
    addr: SocketAddr,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let mut started = Vec::new();
    let ours = match args.orcastra {
        Some(addr) => addr,
        None => {
            let (addr, server) = start_orcastra(args.fsync)?;
            started.push(server);
            addr
        }
    };
    let theirs = match args.redis {
        Some(addr) => addr,
        None => {
            let (addr, server) = start_redis(args.fsync)?;
            started.push(server);
            addr
        }
    };
    let sides = [
        Side {
            name: "orcastra serve",
            addr: ours,
        },
        Side {
            name: "redis-server",
            addr: theirs,
        },
    ];
    println!(
        "{} clients, pipelines of {}, median of {} runs, the servers taking turns",
        args.clients, args.pipeline, args.runs
    );
    for side in &sides {
        println!(
            "{}: {} ({})",
            side.name,
            side.addr,
            durability(side.addr).await?
        );
    }
    println!();
    println!("| workload | orcastra serve | redis-server | orcastra / redis |");
    println!("|---|---:|---:|---:|");
    let workloads: [(&str, Workload); 3] = [
        ("XADD (requests/s)", Workload::Add),
        ("XREADGROUP + XACK (entries/s)", Workload::ReadAck),
        ("no-op tasks end to end (tasks/s)", Workload::Tasks),
    ];
    for (label, workload) in workloads {
        let mut rates = [Vec::new(), Vec::new()];
        for run in 0..args.runs {
            for (side, rates) in sides.iter().zip(&mut rates) {
                eprint!(
                    "\r{label}: run {}/{} on {}          ",
                    run + 1,
                    args.runs,
                    side.name
                );
                rates.push(workload.run(&args, side.addr, run).await?);
            }
        }
        eprint!("\r{:80}\r", "");
        let [ours, theirs] = rates.map(median);
        println!(
            "| {label} | {ours:.0} | {theirs:.0} | {:.2}x |",
            ours / theirs
        );
    }
    drop(started);
    Ok(ExitCode::SUCCESS)
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

#[derive(Clone, Copy)]
enum Workload {
    Add,
    ReadAck,
    Tasks,
}

impl Workload {
    /// Runs once against `addr`; returns operations per second.
    async fn run(self, args: &BenchArgs, addr: SocketAddr, run: usize) -> anyhow::Result<f64> {
        match self {
            Workload::Add => {
                let stream = format!("bench:add:{run}");
                let clients = connections(addr, args.clients).await?;
                let started = Instant::now();
                add(&clients, &stream, args.requests, args.pipeline).await?;
                Ok(args.requests as f64 / started.elapsed().as_secs_f64())
            }
            Workload::ReadAck => {
                let stream = format!("bench:read:{run}");
                let clients = connections(addr, args.clients).await?;
                let mut admin = clients[0].clone();
                let _: () = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg("g")
                    .arg("$")
                    .arg("MKSTREAM")
                    .query_async(&mut admin)
                    .await?;
                add(&clients, &stream, args.requests, 256).await?;
                let started = Instant::now();
                let reads = clients.into_iter().enumerate().map(|(n, connection)| {
                    read_and_ack(connection, stream.clone(), format!("c{n}"), args.pipeline)
                });
                let read: usize = try_join_all(reads).await?.into_iter().sum();
                Ok(read as f64 / started.elapsed().as_secs_f64())
            }
            Workload::Tasks => tasks(addr, args.tasks).await,
        }
    }
}

async fn connections(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<MultiplexedConnection>> {
    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        connections.push(connect(addr).await?);
    }
    Ok(connections)
}

/// `total` XADDs to `stream`, spread over the clients, `pipeline` at a time.
async fn add(
    clients: &[MultiplexedConnection],
    stream: &str,
    total: usize,
    pipeline: usize,
) -> anyhow::Result<()> {
    let per_client = total.div_ceil(clients.len());
    let senders = clients.iter().enumerate().map(|(n, connection)| {
        let mut connection = connection.clone();
        let count = per_client.min(total.saturating_sub(n * per_client));
        async move {
            let mut sent = 0;
            while sent < count {
                let batch = pipeline.min(count - sent);
                let mut pipe = redis::pipe();
                for i in 0..batch {
                    pipe.cmd("XADD").arg(stream).arg("*").arg("n").arg(sent + i);
                }
                let _: Vec<Value> = pipe.query_async(&mut connection).await?;
                sent += batch;
            }
            anyhow::Ok(())
        }
    });
    try_join_all(senders).await?;
    Ok(())
}

/// Reads `count` new entries at a time and acknowledges them, until the
/// group has none left; returns how many it read.
async fn read_and_ack(
    mut connection: MultiplexedConnection,
    stream: String,
    consumer: String,
    count: usize,
) -> anyhow::Result<usize> {
    let mut read = 0;
    loop {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg(&consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut connection)
            .await?;
        let ids = entry_ids(&reply);
        if ids.is_empty() {
            return Ok(read);
        }
        read += ids.len();
        let _: u64 = redis::cmd("XACK")
            .arg(&stream)
            .arg("g")
            .arg(&ids)
            .query_async(&mut connection)
            .await?;
    }
}

/// The ids in an XREADGROUP reply, in RESP2 (arrays) or RESP3 (a map).
fn entry_ids(reply: &Value) -> Vec<String> {
    let per_stream: Vec<&Value> = match reply {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|pair| match pair {
                Value::Array(pair) => pair.get(1),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.iter().map(|(_, entries)| entries).collect(),
        _ => Vec::new(),
    };
    per_stream
        .into_iter()
        .filter_map(|entries| match entries {
            Value::Array(entries) => Some(entries),
            _ => None,
        })
        .flatten()
        .filter_map(|entry| match entry {
            Value::Array(entry) => match entry.first() {
                Some(Value::BulkString(id)) => Some(String::from_utf8_lossy(id).into_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[orca_task(queue = "bench")]
async fn noop() {}

/// `count` no-op tasks through the task layer over `redis://addr`.
async fn tasks(addr: SocketAddr, count: usize) -> anyhow::Result<f64> {
    let orca = Orcastra::open(&format!("redis://{addr}")).await?;
    let worker = orca
        .worker()
        .concurrency(64)
        .register(noop::task())
        .start()
        .await?;
    let started = Instant::now();
    let mut handles = Vec::with_capacity(count);
    while handles.len() < count {
        let batch = (count - handles.len()).min(500);
        let args = std::iter::repeat_n([], batch);
        handles.extend(
            orca.submit_many_with(noop::task(), args, SubmitOptions::default())
                .await?,
        );
    }
    for handle in handles {
        handle.result().await??;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    worker.stop().await;
    Ok(rate)
}
