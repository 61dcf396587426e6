//! The `orcastra` command: parses arguments and calls into the library.

#[cfg(feature = "redis")]
mod bench_cmd;
mod client_cmd;
mod log_cmd;
mod serve_cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use log_cmd::Backend;
use orcastra::FsyncPolicy;
use orcastra::log::LogOptions;

#[derive(Parser)]
#[command(
    name = "orcastra",
    version,
    about = "An embedded, log-structured job queue"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the data directory's streams over the Redis protocol, and its
    /// tasks over HTTP.
    Serve(serve_cmd::ServeArgs),
    /// Submit a task to a running server; print its id.
    Submit(client_cmd::SubmitArgs),
    /// Print a task's state.
    Status {
        #[command(flatten)]
        server: client_cmd::ServerArg,
        /// The task's id.
        id: String,
    },
    /// List the queues with their queued, pending and dead tasks.
    Queues {
        #[command(flatten)]
        server: client_cmd::ServerArg,
    },
    /// Follow task state events (of a task or a queue) or a stream's entries.
    Tail(client_cmd::TailArgs),
    /// List a stream's consumer groups.
    Groups {
        #[command(flatten)]
        server: client_cmd::ServerArg,
        stream: String,
    },
    /// List a consumer group's pending entries.
    Pending {
        #[command(flatten)]
        server: client_cmd::ServerArg,
        stream: String,
        group: String,
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// List, requeue or drop dead letters.
    #[command(subcommand)]
    Dead(client_cmd::DeadCommand),
    /// Run the same workloads against `orcastra serve` and `redis-server`
    /// and compare them (needs the `redis` feature).
    #[cfg(feature = "redis")]
    Bench(bench_cmd::BenchArgs),
    /// Run the same workloads against `orcastra serve` and `redis-server`
    /// and compare them (needs the `redis` feature).
    #[cfg(not(feature = "redis"))]
    Bench,
    /// Work with a log directly.
    #[command(subcommand)]
    Log(LogCommand),
}

#[derive(Subcommand)]
enum LogCommand {
    /// Append each line of stdin as a record; print each record's offset once
    /// it is durable under the fsync policy.
    Append(AppendArgs),
    /// Print `offset<TAB>payload` for every record.
    Dump(DumpArgs),
    /// Check every checksum and index; exit 1 if records are damaged (a torn
    /// tail left by a crash is reported but is not damage).
    Verify(LogArgs),
}

#[derive(Args)]
struct LogArgs {
    /// The log's directory.
    #[arg(long)]
    data: PathBuf,
    /// The storage backend (`text` keeps the log in DATA/log.txt).
    #[arg(long, value_enum, default_value_t = Backend::Segment)]
    backend: Backend,
}

#[derive(Args)]
struct AppendArgs {
    #[command(flatten)]
    log: LogArgs,
    /// When to fsync: `always` fsyncs every line on its own, `batch` every
    /// group of lines read together, `interval` in the background.
    #[arg(long, value_enum, default_value_t = Fsync::Batch)]
    fsync: Fsync,
    /// The interval of `--fsync interval`, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    fsync_interval_ms: u64,
    /// Roll to a new segment file at this size.
    #[arg(long, default_value_t = 64 << 20)]
    segment_bytes: u64,
    /// The longest line accepted, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    max_record_bytes: usize,
}

#[derive(Args)]
struct DumpArgs {
    #[command(flatten)]
    log: LogArgs,
    /// The first offset to print (default: the start of the log).
    #[arg(long)]
    from: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Fsync {
    Always,
    Batch,
    Interval,
    Never,
}

impl Fsync {
    fn policy(self, interval_ms: u64) -> FsyncPolicy {
        match self {
            Fsync::Always => FsyncPolicy::Always,
            Fsync::Batch => FsyncPolicy::Batch,
            Fsync::Interval => FsyncPolicy::Interval(Duration::from_millis(interval_ms)),
            Fsync::Never => FsyncPolicy::Never,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let command = Cli::parse().command;
    let threads = match &command {
        Command::Serve(args) => Some(args.threads),
        _ => None,
    };
    let mut runtime = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(threads) = threads.filter(|&n| n > 1) {
        runtime.worker_threads(threads);
    }
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(run(command)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Serve(args) => serve_cmd::run(args).await,
        Command::Submit(args) => client_cmd::submit(args).await,
        Command::Status { server, id } => client_cmd::status(server, id).await,
        Command::Queues { server } => client_cmd::queues(server).await,
        Command::Tail(args) => client_cmd::tail(args).await,
        Command::Groups { server, stream } => client_cmd::groups(server, stream).await,
        Command::Pending {
            server,
            stream,
            group,
            count,
        } => client_cmd::pending(server, stream, group, count).await,
        Command::Dead(command) => client_cmd::dead(command).await,
        #[cfg(feature = "redis")]
        Command::Bench(args) => bench_cmd::run(args).await,
        #[cfg(not(feature = "redis"))]
        Command::Bench => Err(anyhow::anyhow!(
            "this build has no Redis client: build with `--features redis` to run the benchmark"
        )),
        Command::Log(LogCommand::Append(args)) => {
            let options = LogOptions::default()
                .fsync(args.fsync.policy(args.fsync_interval_ms))
                .segment_bytes(args.segment_bytes)
                .max_record_bytes(args.max_record_bytes);
            let batches = if args.fsync == Fsync::Always {
                log_cmd::Batches::OneLine
            } else {
                log_cmd::Batches::AsRead
            };
            log_cmd::append(
                args.log.backend,
                &args.log.data,
                options,
                args.max_record_bytes,
                batches,
            )
            .await
        }
        Command::Log(LogCommand::Dump(args)) => {
            log_cmd::dump(args.log.backend, &args.log.data, args.from)
        }
        Command::Log(LogCommand::Verify(args)) => log_cmd::verify(args.backend, &args.data),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
