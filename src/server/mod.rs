//! The Redis-protocol server behind `orcastra serve`: the embedded engine's
//! streams, spoken to in RESP2 or RESP3 by any Redis client, `redis-cli`,
//! `redis-benchmark` or Orcastra's own Redis adapter.
//!
//! Each client has a task of its own. It reads requests as they come
//! ([`resp::RequestReader`]), runs them in order and sends the replies of
//! every request that arrived together in one write, so pipelines cost one
//! system call each way. A blocking read sends the replies before it, then
//! waits without holding anyone else up; if the client goes away meanwhile,
//! the read is dropped. Replies are sent only once the engine has made the
//! change durable under the data directory's fsync policy, so with `always`
//! (group commit) or `batch` an acknowledged XADD survives a crash.
//!
//! Limits: [`ServerOptions::max_clients`] connections (more are refused
//! with Redis's error), [`resp::Limits`] on requests (a frame that breaks
//! them or the protocol gets an error and its connection is closed; other
//! clients are not affected), and [`ServerOptions::max_output`] bytes of
//! replies waiting for one client (a client that reads too slowly is
//! disconnected, as Redis does with `client-output-buffer-limit`).
//!
//! ```
//! use orcastra::server::{Server, ServerOptions};
//! use orcastra::streams::Embedded;
//! use std::sync::Arc;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let options = ServerOptions { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
//! let (server, listener) = Server::bind(Arc::new(Embedded::memory()), options).await?;
//! let address = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = tokio::spawn(server.serve(listener, async { stopped.await.ok(); }));
//!
//! let mut client = tokio::net::TcpStream::connect(address).await?;
//! client.write_all(b"XADD jobs 1-1 url https://example.com\r\nXLEN jobs\r\n").await?;
//! let mut reply = [0; 13];
//! client.read_exact(&mut reply).await?;
//! assert_eq!(&reply, b"$3\r\n1-1\r\n:1\r\n");
//! # drop(stop);
//! # serving.await.unwrap();
//! # Ok(())
//! # }
//! ```

mod adds;
mod commands;
pub mod http;
pub mod resp;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use parking_lot::{Mutex, RwLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub use commands::Session;
use resp::{Limits, Reply, RequestReader};

use crate::streams::{Embedded, LogStore};

/// The Redis version the server reports (HELLO, INFO): the one whose
/// stream commands and replies it reproduces. Clients read it to decide
/// which commands they may send.
pub const REDIS_VERSION: &str = "7.2.0";

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Where to listen; loopback by default.
    pub listen: SocketAddr,
    /// The password clients must give (AUTH or HELLO … AUTH) before any
    /// other command; none by default.
    pub requirepass: Option<String>,
    /// The most clients connected at once (Redis's `maxclients`).
    pub max_clients: usize,
    /// Limits on requests.
    pub limits: Limits,
    /// The most reply bytes waiting for one client before it is
    /// disconnected.
    pub max_output: usize,
    /// The fsync policy of the data, in Redis's words (`always`,
    /// `everysec`, `no`), for INFO and CONFIG GET appendfsync.
    pub appendfsync: &'static str,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 6380)),
            requirepass: None,
            max_clients: 10_000,
            limits: Limits::default(),
            max_output: 1 << 30,
            appendfsync: "always",
        }
    }
}

/// The server: the streams, the clients and the counters INFO reports.
pub struct Server<S: LogStore> {
    streams: Arc<Embedded<S>>,
    /// Where plain XADDs go to be written together.
    adds: adds::Adds,
    options: ServerOptions,
    /// Changed by CONFIG SET requirepass.
    requirepass: RwLock<Option<String>>,
    /// Changed by CONFIG SET maxclients.
    max_clients: AtomicUsize,
    /// Every connected client, for CLIENT LIST and the client limit.
    clients: Mutex<BTreeMap<u64, ClientView>>,
    next_client_id: AtomicU64,
    stats: Stats,
    started: Instant,
}

/// What other connections may see of a client.
#[derive(Debug)]
struct ClientView {
    addr: SocketAddr,
    connected: Instant,
    name: Option<String>,
    lib_name: String,
    lib_ver: String,
    resp3: bool,
}

/// Counters for INFO.
#[derive(Debug, Default)]
struct Stats {
    connections: AtomicU64,
    commands: AtomicU64,
    rejected: AtomicU64,
    /// Clients waiting in a blocking read now.
    blocked: AtomicI64,
}

impl Stats {
    /// CONFIG RESETSTAT: the totals start again (the current state stays).
    fn reset(&self) {
        self.connections.store(0, Ordering::Relaxed);
        self.commands.store(0, Ordering::Relaxed);
        self.rejected.store(0, Ordering::Relaxed);
    }
}

impl<S: LogStore> Server<S> {
    /// Binds `options.listen` (port 0 picks a free port; the options then
    /// show the real one) and returns the server, ready to
    /// [`serve`](Self::serve).
    pub async fn bind(
        streams: Arc<Embedded<S>>,
        mut options: ServerOptions,
    ) -> io::Result<(Arc<Self>, TcpListener)> {
        let listener = TcpListener::bind(options.listen).await?;
        options.listen = listener.local_addr()?;
        let server = Server {
            adds: adds::Adds::start(Arc::clone(&streams)),
            streams,
            requirepass: RwLock::new(options.requirepass.clone()),
            max_clients: AtomicUsize::new(options.max_clients),
            options,
            clients: Mutex::new(BTreeMap::new()),
            next_client_id: AtomicU64::new(1),
            stats: Stats::default(),
            started: Instant::now(),
        };
        Ok((Arc::new(server), listener))
    }

    /// The streams the server serves.
    pub fn streams(&self) -> &Embedded<S> {
        &self.streams
    }

    fn max_clients(&self) -> usize {
        self.max_clients.load(Ordering::Relaxed)
    }

    fn update_client(&self, id: u64, change: impl FnOnce(&mut ClientView)) {
        if let Some(client) = self.clients.lock().get_mut(&id) {
            change(client);
        }
    }

    /// Accepts clients until `shutdown` completes, then closes every
    /// connection (replies already sent stay sent; a request in progress is
    /// dropped, as if the server had stopped just before it).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, addr)) => {
                        if let Some(client) = self.admit(socket, addr) {
                            connections.spawn(client);
                        }
                    }
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: the listener itself is fine.
                    Err(error) => {
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
        Ok(())
    }

    /// Registers a new client, or refuses it when there are too many.
    fn admit(
        self: &Arc<Self>,
        socket: TcpStream,
        addr: SocketAddr,
    ) -> Option<impl Future<Output = ()> + use<S>> {
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut clients = self.clients.lock();
            if clients.len() >= self.max_clients() {
                drop(clients);
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut socket = socket;
                    let _ = socket
                        .write_all(b"-ERR max number of clients reached\r\n")
                        .await;
                });
                return None;
            }
            clients.insert(
                id,
                ClientView {
                    addr,
                    connected: Instant::now(),
                    name: None,
                    lib_name: String::new(),
                    lib_ver: String::new(),
                    resp3: false,
                },
            );
        }
        let server = Arc::clone(self);
        Some(async move {
            let registered = Registered {
                clients: &server.clients,
                id,
            };
            server.client(socket, id, addr).await;
            drop(registered);
        })
    }

    /// Serves one client until it leaves or breaks the protocol.
    async fn client(&self, socket: TcpStream, id: u64, addr: SocketAddr) {
        let _ = socket.set_nodelay(true);
        let (mut reader, mut writer) = socket.into_split();
        let mut input = BytesMut::with_capacity(16 << 10);
        let mut output = BytesMut::with_capacity(16 << 10);
        let mut requests = RequestReader::default();
        let mut session = Session::new(id, addr, self.requirepass.read().is_none());
        loop {
            let limits = if session.authenticated {
                self.options.limits
            } else {
                Limits::unauthenticated()
            };
            let (mut batch, broken) = take_batch(&mut requests, &mut input, &limits);
            if batch.is_empty() && broken.is_none() {
                if send(&mut writer, &mut output).await.is_err() {
                    return;
                }
                match reader.read_buf(&mut input).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
            // Only the last request of a batch can block (see `take_batch`);
            // in a transaction it is queued like any other.
            let blocking = if session.in_transaction() {
                None
            } else {
                batch.pop_if(|args| commands::may_block(args))
            };
            for reply in self.execute_batch(&mut session, batch).await {
                reply.encode(session.resp3, &mut output);
            }
            if let Some(args) = blocking {
                if send(&mut writer, &mut output).await.is_err() {
                    return;
                }
                self.stats.blocked.fetch_add(1, Ordering::Relaxed);
                let reply = tokio::select! {
                    reply = self.execute(&mut session, args) => Some(reply),
                    () = wait_for_close(&mut reader, &mut input, &limits) => None,
                };
                self.stats.blocked.fetch_sub(1, Ordering::Relaxed);
                match reply {
                    Some(reply) => reply.encode(session.resp3, &mut output),
                    None => return,
                }
            }
            if let Some(error) = broken {
                tracing::debug!(client = id, %addr, %error, "protocol error; closing");
                Reply::error(error).encode(session.resp3, &mut output);
                session.closing = true;
            }
            if session.closing {
                let _ = writer.write_all(&output).await;
                return;
            }
            if output.len() > self.options.max_output {
                tracing::warn!(
                    client = id,
                    %addr,
                    limit = self.options.max_output,
                    "closing a client whose unread replies passed the output limit"
                );
                return;
            }
        }
    }
}

/// The complete requests at the front of `input`, up to and including the
/// first that is not an XADD: a run of XADDs may be written together, and
/// whatever else comes next (AUTH changes the limits, QUIT ends the
/// connection, a blocking read waits) is run on its own before more is
/// read. A broken frame ends the batch; its error goes after the replies.
fn take_batch(
    requests: &mut RequestReader,
    input: &mut BytesMut,
    limits: &Limits,
) -> (Vec<Vec<bytes::Bytes>>, Option<resp::ProtocolError>) {
    let mut batch = Vec::new();
    loop {
        match requests.next(input, limits) {
            Ok(Some(args)) => {
                let more = commands::is_xadd(&args);
                batch.push(args);
                if !more {
                    return (batch, None);
                }
            }
            Ok(None) => return (batch, None),
            Err(error) => return (batch, Some(error)),
        }
    }
}

/// Removes a client from the registry when its task ends, however it ends.
struct Registered<'a> {
    clients: &'a Mutex<BTreeMap<u64, ClientView>>,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.id);
    }
}

async fn send(writer: &mut OwnedWriteHalf, output: &mut BytesMut) -> io::Result<()> {
    if !output.is_empty() {
        writer.write_all(output).await?;
        output.clear();
    }
    Ok(())
}

/// Completes when the client closes its connection. What it sends
/// meanwhile is kept for after the blocked command, up to a request's
/// worth; then the client is left to wait.
async fn wait_for_close(reader: &mut OwnedReadHalf, input: &mut BytesMut, limits: &Limits) {
    while input.len() <= limits.max_bulk.max(limits.max_inline) {
        match reader.read_buf(input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    std::future::pending().await
}
