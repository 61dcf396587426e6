//! `orcastra serve`: the data directory's streams over the Redis protocol,
//! and its tasks over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use clap::builder::TypedValueParser;
use orcastra::Orcastra;
use orcastra::log::{LogOptions, SegmentLog};
use orcastra::server::{Server, ServerOptions, http};
use orcastra::streams::{Backend, Embedded, FileStore};
use tokio_util::sync::CancellationToken;

use crate::Fsync;

#[derive(Args)]
pub struct ServeArgs {
    /// The data directory (created if missing).
    #[arg(long, default_value = "./orcastra-data")]
    data: PathBuf,
    /// Where to accept Redis-protocol clients. Loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:6380")]
    listen: SocketAddr,
    /// Where to serve the HTTP and WebSocket API, or `off`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: HttpAddress,
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
    /// Threads serving clients. One, as Redis: serving is mostly waiting
    /// for sockets and fsyncs (which have threads of their own), and
    /// handing requests between threads cost more than it brought in the
    /// benchmarks (README). More may pay with many busy streams on many cores.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub threads: usize,
}

/// `--http`: an address, or `off`.
#[derive(Clone, Copy)]
struct HttpAddress(Option<SocketAddr>);

impl std::str::FromStr for HttpAddress {
    type Err = std::net::AddrParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "off" {
            return Ok(HttpAddress(None));
        }
        text.parse().map(|addr| HttpAddress(Some(addr)))
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let log_options = LogOptions::default().fsync(args.fsync.policy(args.fsync_interval_ms));
    let engine = Arc::new(Embedded::open(FileStore::<SegmentLog>::new(
        &args.data,
        log_options,
    )));
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
    let (server, listener) = Server::bind(Arc::clone(&engine), options)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    if !address.ip().is_loopback() && open_to_all {
        tracing::warn!(%address, "listening beyond loopback without --requirepass");
    }
    let stop = CancellationToken::new();
    let http = match args.http.0 {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve HTTP on {addr}"))?;
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "the HTTP API has no authentication: serving it beyond loopback");
            }
            let http_address = listener.local_addr()?;
            let orca = Orcastra::on(Backend::Segment(Arc::clone(&engine)));
            let app = http::router(orca, Arc::clone(&engine));
            let stopped = stop.clone().cancelled_owned();
            let serving = axum::serve(listener, app).with_graceful_shutdown(stopped);
            Some((http_address, tokio::spawn(serving.into_future())))
        }
        None => None,
    };
    // Tests and scripts read these lines to learn the ports.
    eprintln!(
        "orcastra serve: listening on {address} (data {}, fsync {:?})",
        args.data.display(),
        args.fsync
    );
    if let Some((http_address, _)) = &http {
        eprintln!("orcastra serve: http on {http_address}");
    }
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    server.serve(listener, stop.cancelled_owned()).await?;
    if let Some((_, serving)) = http {
        serving.await??;
    }
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
