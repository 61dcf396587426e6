//! `orcastra serve`: the data directory's streams over the Redis protocol.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clap::builder::TypedValueParser;
use orcastra::log::LogOptions;
use orcastra::log::SegmentLog;
use orcastra::server::{Server, ServerOptions};
use orcastra::streams::{Embedded, FileStore};

use crate::Fsync;

#[derive(Args)]
pub struct ServeArgs {
    /// The data directory (created if missing).
    #[arg(long, default_value = "./orcastra-data")]
    data: PathBuf,
    /// Where to accept Redis-protocol clients. Loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:6380")]
    listen: SocketAddr,
    /// Require this password (AUTH) before any other command.
    #[arg(long, env = "ORCASTRA_REQUIREPASS", hide_env_values = true)]
    requirepass: Option<String>,
    /// When writes reach the disk before they are acknowledged: `batch`
    /// (group commit: every acknowledged write is durable, concurrent writes
    /// share fsyncs), `always` (one fsync per write, shared with nobody),
    /// `interval` (in the background; a crash loses up to an interval), `never`.
    #[arg(long, value_enum, default_value_t = Fsync::Batch)]
    fsync: Fsync,
    /// The interval of `--fsync interval`, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    fsync_interval_ms: u64,
    /// The most clients connected at once.
    #[arg(long, default_value_t = 10_000)]
    max_clients: usize,
    /// Threads serving clients (default: one per CPU). With 1, everything
    /// runs on one thread, as Redis does: no handing over between threads.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub threads: Option<usize>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let log_options = LogOptions::default().fsync(args.fsync.policy(args.fsync_interval_ms));
    let streams = Embedded::open(FileStore::<SegmentLog>::new(&args.data, log_options));
    let open_to_all = args.requirepass.is_none();
    let options = ServerOptions {
        listen: args.listen,
        requirepass: args.requirepass,
        max_clients: args.max_clients,
        appendfsync: match args.fsync {
            Fsync::Always | Fsync::Batch => "always",
            Fsync::Interval => "everysec",
            Fsync::Never => "no",
        },
        ..ServerOptions::default()
    };
    let (server, listener) = Server::bind(streams, options)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    if !address.ip().is_loopback() && open_to_all {
        tracing::warn!(%address, "listening beyond loopback without --requirepass");
    }
    // Tests and scripts read this line to learn the port.
    eprintln!(
        "orcastra serve: listening on {address} (data {}, fsync {:?})",
        args.data.display(),
        args.fsync
    );
    server.serve(listener, shutdown_signal()).await?;
    eprintln!("orcastra serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
