//! [`RedisStreams`]: the [`Streams`] API on a Redis server, through native
//! stream commands. Built with the `redis` feature.
//!
//! Commands share one multiplexed connection that reconnects by itself, with
//! exponential backoff, after the server goes away. Blocking reads
//! (`XREAD`/`XREADGROUP` with `BLOCK`) each take a connection of their own
//! from a small pool, so a consumer waiting for work never delays anyone
//! else's commands.
//!
//! Replies are decoded from [`redis::Value`] here rather than with the
//! crate's stream types, which keep fields in a hash map and so lose their
//! order.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::{AsyncConnectionConfig, Client, Cmd, ErrorKind, RedisError, Value};
use bytes::Bytes;
use parking_lot::Mutex;

use super::{
    AddId, AddOptions, AutoClaim, AutoClaimed, Bound, ClaimOptions, ConsumerInfo, Entry, Fields,
    GroupEntry, GroupInfo, GroupRead, GroupStart, PendingEntry, PendingQuery, PendingSummary,
    ReadFrom, ReadGroupOptions, StreamError, StreamInfo, Streams, Trim, TrimTo,
};
use crate::record::StreamId;

/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may wait for its reply; blocking reads wait longer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept for blocking reads.
const BLOCKING_POOL: usize = 16;
/// The oldest Redis with every command and reply this adapter uses
/// (XAUTOCLAIM's deleted ids, `entries-read` and `lag`).
const MIN_MAJOR_VERSION: u32 = 7;

/// Streams and consumer groups on a Redis server. See the
/// [module docs](self).
///
/// ```no_run
/// use orcastra::streams::{AddOptions, RedisStreams, Streams};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), orcastra::streams::StreamError> {
/// let streams = RedisStreams::connect("redis://:secret@127.0.0.1:6379/0").await?;
/// let fields = vec![("url".into(), "https://example.com".into())];
/// streams.add("jobs", fields, AddOptions::default()).await?;
/// # Ok(())
/// # }
/// ```
pub struct RedisStreams {
    client: Client,
    /// `host:port`, for errors: never the password.
    server: String,
    commands: ConnectionManager,
    blocking: Mutex<Vec<MultiplexedConnection>>,
}

impl RedisStreams {
    /// Connects to the server at `url` (`redis://[:password@]host:port[/db]`,
    /// or `redis://user:password@…` with ACLs) and checks that it is Redis 7
    /// or later. Fails at once, naming the address tried, if the server
    /// cannot be reached or is not Redis.
    pub async fn connect(url: &str) -> Result<Self, StreamError> {
        let client = Client::open(url).map_err(|e| StreamError::Unavailable {
            server: redact(url),
            reason: format!("not a valid Redis URL: {e}"),
        })?;
        let server = client.get_connection_info().addr().to_string();
        check_version(&client, &server).await?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(8);
        let commands = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| unavailable(&server, &e))?;
        Ok(RedisStreams {
            client,
            server,
            commands,
            blocking: Mutex::new(Vec::new()),
        })
    }

    /// Sends one command on the shared connection.
    async fn query(&self, command: &Cmd, context: Context<'_>) -> Result<Value, StreamError> {
        let mut connection = self.commands.clone();
        command
            .query_async(&mut connection)
            .await
            .map_err(|e| self.error(e, context))
    }

    /// Sends one command that may block on a connection of its own, which
    /// goes back to the pool only if the command completed.
    async fn query_blocking(
        &self,
        command: &Cmd,
        context: Context<'_>,
    ) -> Result<Value, StreamError> {
        let pooled = self.blocking.lock().pop();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => blocking_connection(&self.client, &self.server).await?,
        };
        let reply = command.query_async(&mut connection).await;
        if connection_usable(&reply) {
            let mut pool = self.blocking.lock();
            if pool.len() < BLOCKING_POOL {
                pool.push(connection);
            }
        }
        reply.map_err(|e| self.error(e, context))
    }

    fn error(&self, error: RedisError, context: Context<'_>) -> StreamError {
        match error.code() {
            Some(code) if !error.is_io_error() => {
                server_error(code, error.detail().unwrap_or(""), context)
            }
            _ => unavailable(&self.server, &error),
        }
    }

    fn unexpected(&self, command: &'static str, reply: &Value) -> StreamError {
        let mut reply = format!("{reply:?}");
        if reply.len() > 200 {
            let mut end = 200;
            while !reply.is_char_boundary(end) {
                end -= 1;
            }
            reply.truncate(end);
            reply.push('…');
        }
        StreamError::UnexpectedReply {
            server: self.server.clone(),
            command,
            reply,
        }
    }

    /// Decodes a reply with `decode`, or reports its shape as unexpected.
    fn decode<T>(
        &self,
        command: &'static str,
        reply: Value,
        decode: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<T, StreamError> {
        decode(&reply).ok_or_else(|| self.unexpected(command, &reply))
    }
}

impl Streams for RedisStreams {
    async fn add(
        &self,
        stream: &str,
        fields: Fields,
        options: AddOptions,
    ) -> Result<Option<StreamId>, StreamError> {
        let mut command = ::redis::cmd("XADD");
        command.arg(stream);
        if options.no_mkstream {
            command.arg("NOMKSTREAM");
        }
        if let Some(trim) = &options.trim {
            trim_args(&mut command, trim);
        }
        command.arg(match options.id {
            AddId::Auto => "*".to_string(),
            AddId::AutoSeq(ms) => format!("{ms}-*"),
            AddId::Explicit(id) => id.to_string(),
        });
        for (name, value) in &fields {
            command.arg(&name[..]).arg(&value[..]);
        }
        let reply = self.query(&command, Context::default()).await?;
        self.decode("XADD", reply, optional_id)
    }

    async fn add_batch(
        &self,
        stream: &str,
        entries: Vec<Fields>,
    ) -> Result<Vec<StreamId>, StreamError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipeline = ::redis::pipe();
        for fields in &entries {
            let command = pipeline.cmd("XADD").arg(stream).arg("*");
            for (name, value) in fields {
                command.arg(&name[..]).arg(&value[..]);
            }
        }
        let mut connection = self.commands.clone();
        let replies: Vec<Value> = pipeline
            .query_async(&mut connection)
            .await
            .map_err(|e| self.error(e, Context::default()))?;
        replies
            .iter()
            .map(|reply| id(reply).ok_or_else(|| self.unexpected("XADD", reply)))
            .collect()
    }

    async fn range(
        &self,
        stream: &str,
        start: Bound,
        end: Bound,
        count: Option<usize>,
    ) -> Result<Vec<Entry>, StreamError> {
        let mut command = ::redis::cmd("XRANGE");
        command.arg(stream).arg(bound(start)).arg(bound(end));
        if let Some(n) = count {
            command.arg("COUNT").arg(self::count(n));
        }
        let reply = self.query(&command, Context::default()).await?;
        self.decode("XRANGE", reply, entries)
    }

    async fn rev_range(
        &self,
        stream: &str,
        end: Bound,
        start: Bound,
        count: Option<usize>,
    ) -> Result<Vec<Entry>, StreamError> {
        let mut command = ::redis::cmd("XREVRANGE");
        command.arg(stream).arg(bound(end)).arg(bound(start));
        if let Some(n) = count {
            command.arg("COUNT").arg(self::count(n));
        }
        let reply = self.query(&command, Context::default()).await?;
        self.decode("XREVRANGE", reply, entries)
    }

    async fn len(&self, stream: &str) -> Result<u64, StreamError> {
        let reply = self
            .query(::redis::cmd("XLEN").arg(stream), Context::default())
            .await?;
        self.decode("XLEN", reply, uint)
    }

    async fn delete(&self, stream: &str, ids: &[StreamId]) -> Result<u64, StreamError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut command = ::redis::cmd("XDEL");
        command.arg(stream);
        for id in ids {
            command.arg(id.to_string());
        }
        let reply = self.query(&command, Context::default()).await?;
        self.decode("XDEL", reply, uint)
    }

    async fn trim(&self, stream: &str, trim: Trim) -> Result<u64, StreamError> {
        let mut command = ::redis::cmd("XTRIM");
        command.arg(stream);
        trim_args(&mut command, &trim);
        let reply = self.query(&command, Context::default()).await?;
        self.decode("XTRIM", reply, uint)
    }

    async fn read(
        &self,
        streams: &[(&str, ReadFrom)],
        count: Option<usize>,
        block: Option<Duration>,
    ) -> Result<Vec<(String, Vec<Entry>)>, StreamError> {
        let mut command = ::redis::cmd("XREAD");
        if let Some(n) = count {
            command.arg("COUNT").arg(self::count(n));
        }
        if let Some(block) = block {
            command.arg("BLOCK").arg(millis(block));
        }
        command.arg("STREAMS");
        for (name, _) in streams {
            command.arg(*name);
        }
        for (_, from) in streams {
            command.arg(match from {
                ReadFrom::After(id) => id.to_string(),
                ReadFrom::End => "$".to_string(),
            });
        }
        let reply = if block.is_some() {
            self.query_blocking(&command, Context::default()).await?
        } else {
            self.query(&command, Context::default()).await?
        };
        self.decode("XREAD", reply, |reply| per_stream(reply, entry))
    }

    async fn set_last_id(
        &self,
        stream: &str,
        last_id: StreamId,
        entries_added: Option<u64>,
        max_deleted: Option<StreamId>,
    ) -> Result<(), StreamError> {
        let mut command = ::redis::cmd("XSETID");
        command.arg(stream).arg(last_id.to_string());
        if let Some(n) = entries_added {
            command.arg("ENTRIESADDED").arg(n);
        }
        if let Some(id) = max_deleted {
            command.arg("MAXDELETEDID").arg(id.to_string());
        }
        self.query(&command, Context::default()).await?;
        Ok(())
    }

    async fn info(&self, stream: &str) -> Result<StreamInfo, StreamError> {
        let command = ::redis::cmd("XINFO").arg("STREAM").arg(stream).clone();
        let reply = self.query(&command, Context::default()).await?;
        self.decode("XINFO STREAM", reply, stream_info)
    }

    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
        mkstream: bool,
    ) -> Result<(), StreamError> {
        let mut command = ::redis::cmd("XGROUP");
        command
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg(group_start(start));
        if mkstream {
            command.arg("MKSTREAM");
        }
        self.query(&command, Context::new(&[stream], group)).await?;
        Ok(())
    }

    async fn destroy_group(&self, stream: &str, group: &str) -> Result<bool, StreamError> {
        let command = ::redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(stream)
            .arg(group)
            .clone();
        let reply = self.query(&command, Context::new(&[stream], group)).await?;
        self.decode("XGROUP DESTROY", reply, |reply| Some(uint(reply)? > 0))
    }

    async fn set_group_id(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> Result<(), StreamError> {
        let command = ::redis::cmd("XGROUP")
            .arg("SETID")
            .arg(stream)
            .arg(group)
            .arg(group_start(start))
            .clone();
        self.query(&command, Context::new(&[stream], group)).await?;
        Ok(())
    }

    async fn create_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> Result<bool, StreamError> {
        let command = ::redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .clone();
        let reply = self.query(&command, Context::new(&[stream], group)).await?;
        self.decode("XGROUP CREATECONSUMER", reply, |reply| {
            Some(uint(reply)? > 0)
        })
    }

    async fn delete_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> Result<u64, StreamError> {
        let command = ::redis::cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .clone();
        let reply = self.query(&command, Context::new(&[stream], group)).await?;
        self.decode("XGROUP DELCONSUMER", reply, uint)
    }

    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        streams: &[(&str, GroupRead)],
        options: ReadGroupOptions,
    ) -> Result<Vec<(String, Vec<GroupEntry>)>, StreamError> {
        let mut command = ::redis::cmd("XREADGROUP");
        command.arg("GROUP").arg(group).arg(consumer);
        if let Some(n) = options.count {
            command.arg("COUNT").arg(self::count(n));
        }
        // Redis ignores BLOCK unless every stream reads new entries.
        let blocks = options.block.is_some() && streams.iter().all(|(_, r)| *r == GroupRead::New);
        if let Some(block) = options.block {
            command.arg("BLOCK").arg(millis(block));
        }
        if options.no_ack {
            command.arg("NOACK");
        }
        command.arg("STREAMS");
        for (name, _) in streams {
            command.arg(*name);
        }
        for (_, read) in streams {
            command.arg(match read {
                GroupRead::New => ">".to_string(),
                GroupRead::Pending(id) => id.to_string(),
            });
        }
        let names: Vec<&str> = streams.iter().map(|(name, _)| *name).collect();
        let context = Context::new(&names, group);
        let reply = if blocks {
            self.query_blocking(&command, context).await?
        } else {
            self.query(&command, context).await?
        };
        self.decode("XREADGROUP", reply, |reply| per_stream(reply, group_entry))
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64, StreamError> {
        let mut command = ::redis::cmd("XACK");
        command.arg(stream).arg(group);
        for id in ids {
            command.arg(id.to_string());
        }
        let reply = self.query(&command, Context::new(&[stream], group)).await?;
        self.decode("XACK", reply, uint)
    }

    async fn pending_summary(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<PendingSummary, StreamError> {
        let command = ::redis::cmd("XPENDING").arg(stream).arg(group).clone();
        let reply = self.query(&command, Context::new(&[stream], group)).await?;
        self.decode("XPENDING", reply, pending_summary)
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> Result<Vec<PendingEntry>, StreamError> {
        let mut command = ::redis::cmd("XPENDING");
        command.arg(stream).arg(group);
        if let Some(idle) = query.min_idle {
            command.arg("IDLE").arg(millis(idle));
        }
        command
            .arg(bound(query.start))
            .arg(bound(query.end))
            .arg(count(query.count));
        if let Some(consumer) = &query.consumer {
            command.arg(consumer);
        }
        let reply = self.query(&command, Context::new(&[stream], group)).await?;
        self.decode("XPENDING", reply, |reply| {
            list(reply)?.iter().map(pending_entry).collect()
        })
    }

    async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
        options: ClaimOptions,
    ) -> Result<Vec<Entry>, StreamError> {
        let mut command = ::redis::cmd("XCLAIM");
        command
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(millis(min_idle));
        for id in ids {
            command.arg(id.to_string());
        }
        if let Some(idle) = options.idle {
            command.arg("IDLE").arg(millis(idle));
        }
        if let Some(time) = options.time_ms {
            command.arg("TIME").arg(time);
        }
        if let Some(retries) = options.retry_count {
            command.arg("RETRYCOUNT").arg(retries);
        }
        if options.force {
            command.arg("FORCE");
        }
        if options.just_id {
            command.arg("JUSTID");
        }
        if let Some(id) = options.last_id {
            command.arg("LASTID").arg(id.to_string());
        }
        let reply = self.query(&command, Context::new(&[stream], group)).await?;
        self.decode("XCLAIM", reply, |reply| claimed(reply, options.just_id))
    }

    async fn auto_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: AutoClaim,
    ) -> Result<AutoClaimed, StreamError> {
        let mut command = ::redis::cmd("XAUTOCLAIM");
        command
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(millis(options.min_idle))
            .arg(options.start.to_string())
            .arg("COUNT")
            .arg(count(options.count));
        if options.just_id {
            command.arg("JUSTID");
        }
        let reply = self.query(&command, Context::new(&[stream], group)).await?;
        self.decode("XAUTOCLAIM", reply, |reply| {
            auto_claimed(reply, options.just_id)
        })
    }

    async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>, StreamError> {
        let command = ::redis::cmd("XINFO").arg("GROUPS").arg(stream).clone();
        let reply = self.query(&command, Context::default()).await?;
        self.decode("XINFO GROUPS", reply, |reply| {
            list(reply)?.iter().map(group_info).collect()
        })
    }

    async fn consumers(&self, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>, StreamError> {
        let command = ::redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg(group)
            .clone();
        let reply = self.query(&command, Context::new(&[stream], group)).await?;
        self.decode("XINFO CONSUMERS", reply, |reply| {
            list(reply)?.iter().map(consumer_info).collect()
        })
    }
}

/// Whether a command's outcome leaves its connection fit for the next one:
/// an error reply does, a broken or timed-out connection does not.
fn connection_usable(reply: &Result<Value, RedisError>) -> bool {
    match reply {
        Ok(_) => true,
        Err(e) => e.code().is_some() && !e.is_io_error() && !e.is_timeout(),
    }
}

/// The stream and group a command was about, to rebuild NOGROUP errors.
#[derive(Clone, Copy, Default)]
struct Context<'a> {
    streams: &'a [&'a str],
    group: &'a str,
}

impl<'a> Context<'a> {
    fn new(streams: &'a [&'a str], group: &'a str) -> Self {
        Context { streams, group }
    }
}

async fn blocking_connection(
    client: &Client,
    server: &str,
) -> Result<MultiplexedConnection, StreamError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| unavailable(server, &e))
}

/// Refuses a server that is not Redis 7 or later, on a connection of its
/// own that waits a bounded time for replies (a silent server is an error,
/// not a hang).
async fn check_version(client: &Client, server: &str) -> Result<(), StreamError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(CONNECT_TIMEOUT));
    let refused = |e: RedisError| {
        let mut error = unavailable(server, &e);
        if let (ErrorKind::Parse, StreamError::Unavailable { reason, .. }) = (e.kind(), &mut error)
        {
            reason.push_str(" (the server does not speak the Redis protocol)");
        }
        error
    };
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(refused)?;
    let info: Value = ::redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await
        .map_err(refused)?;
    let not_redis = |reply: String| StreamError::UnexpectedReply {
        server: server.to_string(),
        command: "INFO",
        reply,
    };
    let text = text(&info).ok_or_else(|| not_redis(format!("{info:?}")))?;
    let version = text
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .ok_or_else(|| not_redis("no redis_version in INFO server".into()))?
        .trim();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .ok_or_else(|| not_redis(format!("redis_version {version}")))?;
    if major < MIN_MAJOR_VERSION {
        return Err(not_redis(format!(
            "Redis {version}; Orcastra needs Redis {MIN_MAJOR_VERSION} or later"
        )));
    }
    Ok(())
}

fn unavailable(server: &str, error: &RedisError) -> StreamError {
    StreamError::Unavailable {
        server: server.to_string(),
        reason: error.to_string(),
    }
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The [`StreamError`] for an error reply: the same variant the embedded
/// engine gives for the same mistake where there is one.
fn server_error(code: &str, detail: &str, context: Context<'_>) -> StreamError {
    let message = format!("{code} {detail}");
    const KNOWN: [StreamError; 13] = [
        StreamError::IdNotGreater,
        StreamError::ZeroId,
        StreamError::IdsExhausted,
        StreamError::SetIdTooSmall,
        StreamError::EntriesAddedTooSmall,
        StreamError::MaxDeletedTooLarge,
        StreamError::NoSuchKey,
        StreamError::GroupNeedsStream,
        StreamError::BusyGroup,
        StreamError::GroupGoneWhileBlocked,
        StreamError::StreamGoneWhileBlocked,
        StreamError::CountNotPositive,
        StreamError::WrongType,
    ];
    if let Some(known) = KNOWN.into_iter().find(|e| e.to_string() == message) {
        return known;
    }
    for &stream in context.streams {
        let candidates = [
            StreamError::NoGroup {
                stream: stream.to_string(),
                group: context.group.to_string(),
                suffix: "",
            },
            StreamError::NoGroup {
                stream: stream.to_string(),
                group: context.group.to_string(),
                suffix: READ_SUFFIX,
            },
            StreamError::NoSuchGroup {
                stream: stream.to_string(),
                group: context.group.to_string(),
            },
        ];
        if let Some(known) = candidates.into_iter().find(|e| e.to_string() == message) {
            return known;
        }
    }
    StreamError::Reply(message)
}

const READ_SUFFIX: &str = " in XREADGROUP with GROUP option";

// ---- Arguments ----

fn trim_args(command: &mut Cmd, trim: &Trim) {
    match trim.to {
        TrimTo::MaxLen(_) => command.arg("MAXLEN"),
        TrimTo::MinId(_) => command.arg("MINID"),
    };
    command.arg(if trim.approximate { "~" } else { "=" });
    match trim.to {
        TrimTo::MaxLen(n) => command.arg(n),
        TrimTo::MinId(id) => command.arg(id.to_string()),
    };
    if let Some(limit) = trim.limit {
        command.arg("LIMIT").arg(limit);
    }
}

fn bound(bound: Bound) -> String {
    match bound {
        Bound::Min => "-".to_string(),
        Bound::Max => "+".to_string(),
        Bound::Included(id) => id.to_string(),
        Bound::Excluded(id) => format!("({id}"),
    }
}

fn group_start(start: GroupStart) -> String {
    match start {
        GroupStart::After(id) => id.to_string(),
        GroupStart::End => "$".to_string(),
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Redis takes counts as signed 64-bit numbers.
fn count(n: usize) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

// ---- Replies ----

fn bytes(value: &Value) -> Option<Bytes> {
    match value {
        Value::BulkString(bytes) => Some(Bytes::copy_from_slice(bytes)),
        Value::SimpleString(text) => Some(Bytes::copy_from_slice(text.as_bytes())),
        Value::VerbatimString { text, .. } => Some(Bytes::copy_from_slice(text.as_bytes())),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    String::from_utf8(bytes(value)?.to_vec()).ok()
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        // RESP2 sends some counts (XPENDING's per consumer) as strings.
        other => text(other)?.parse().ok(),
    }
}

fn uint(value: &Value) -> Option<u64> {
    int(value)?.try_into().ok()
}

fn id(value: &Value) -> Option<StreamId> {
    text(value)?.parse().ok()
}

fn list(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// A flat `[key, value, …]` array (RESP2) or a map (RESP3) as pairs.
fn pairs(value: &Value) -> Option<Vec<(&Value, &Value)>> {
    match value {
        Value::Map(pairs) => Some(pairs.iter().map(|(k, v)| (k, v)).collect()),
        Value::Array(items) if items.len() % 2 == 0 => {
            Some(items.chunks(2).map(|pair| (&pair[0], &pair[1])).collect())
        }
        _ => None,
    }
}

/// The value of `key` in an XINFO reply.
fn field<'v>(pairs: &[(&'v Value, &'v Value)], key: &str) -> Option<&'v Value> {
    pairs
        .iter()
        .find(|(k, _)| text(k).as_deref() == Some(key))
        .map(|(_, v)| *v)
}

fn fields(value: &Value) -> Option<Fields> {
    pairs(value)?
        .into_iter()
        .map(|(name, value)| Some((bytes(name)?, bytes(value)?)))
        .collect()
}

/// `[id, [field, value, …]]`; the fields are nil for an entry that was
/// deleted after it was delivered.
fn group_entry(value: &Value) -> Option<GroupEntry> {
    let [id_value, fields_value] = list(value)? else {
        return None;
    };
    Some(GroupEntry {
        id: id(id_value)?,
        fields: match fields_value {
            Value::Nil => None,
            other => Some(fields(other)?),
        },
    })
}

fn entry(value: &Value) -> Option<Entry> {
    let GroupEntry { id, fields } = group_entry(value)?;
    Some(Entry {
        id,
        fields: fields?,
    })
}

/// XRANGE's reply; Redis answers `COUNT 0` with nil.
fn entries(value: &Value) -> Option<Vec<Entry>> {
    match value {
        Value::Nil => Some(Vec::new()),
        other => list(other)?.iter().map(entry).collect(),
    }
}

/// An XREAD or XREADGROUP reply: nil, `[[stream, entries], …]` or a map.
fn per_stream<T>(
    value: &Value,
    decode: impl Fn(&Value) -> Option<T>,
) -> Option<Vec<(String, Vec<T>)>> {
    let streams: Vec<(&Value, &Value)> = match value {
        Value::Nil => return Some(Vec::new()),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| match list(item)? {
                [name, entries] => Some((name, entries)),
                _ => None,
            })
            .collect::<Option<_>>()?,
        _ => return None,
    };
    streams
        .into_iter()
        .map(|(name, entries)| {
            let entries = list(entries)?.iter().map(&decode).collect::<Option<_>>()?;
            Some((text(name)?, entries))
        })
        .collect()
}

fn optional_id(value: &Value) -> Option<Option<StreamId>> {
    match value {
        Value::Nil => Some(None),
        other => id(other).map(Some),
    }
}

fn optional_entry(value: &Value) -> Option<Option<Entry>> {
    match value {
        Value::Nil => Some(None),
        other => entry(other).map(Some),
    }
}

/// A count that Redis may answer as nil when it cannot know it.
fn optional_uint(value: &Value) -> Option<Option<u64>> {
    match value {
        Value::Nil => Some(None),
        other => uint(other).map(Some),
    }
}

fn stream_info(value: &Value) -> Option<StreamInfo> {
    let info = pairs(value)?;
    let get = |key| field(&info, key);
    Some(StreamInfo {
        length: uint(get("length")?)?,
        last_generated_id: id(get("last-generated-id")?)?,
        max_deleted_entry_id: id(get("max-deleted-entry-id")?)?,
        entries_added: uint(get("entries-added")?)?,
        recorded_first_entry_id: id(get("recorded-first-entry-id")?)?,
        groups: uint(get("groups")?)?,
        first_entry: optional_entry(get("first-entry")?)?,
        last_entry: optional_entry(get("last-entry")?)?,
    })
}

fn group_info(value: &Value) -> Option<GroupInfo> {
    let info = pairs(value)?;
    let get = |key| field(&info, key);
    Some(GroupInfo {
        name: text(get("name")?)?,
        consumers: uint(get("consumers")?)?,
        pending: uint(get("pending")?)?,
        last_delivered_id: id(get("last-delivered-id")?)?,
        entries_read: optional_uint(get("entries-read")?)?,
        lag: optional_uint(get("lag")?)?,
    })
}

fn consumer_info(value: &Value) -> Option<ConsumerInfo> {
    let info = pairs(value)?;
    let get = |key| field(&info, key);
    let idle = uint(get("idle")?)?;
    // Redis 7.2 added `inactive` (-1: never active); 7.0 has only `idle`.
    let inactive = match get("inactive") {
        Some(value) => u64::try_from(int(value)?).ok().map(Duration::from_millis),
        None => None,
    };
    Some(ConsumerInfo {
        name: text(get("name")?)?,
        pending: uint(get("pending")?)?,
        idle: Duration::from_millis(idle),
        inactive,
    })
}

fn pending_summary(value: &Value) -> Option<PendingSummary> {
    let [count, min, max, consumers] = list(value)? else {
        return None;
    };
    let consumers = match consumers {
        Value::Nil => Vec::new(),
        list_value => list(list_value)?
            .iter()
            .map(|pair| match list(pair)? {
                [name, count] => Some((text(name)?, uint(count)?)),
                _ => None,
            })
            .collect::<Option<_>>()?,
    };
    Some(PendingSummary {
        count: uint(count)?,
        min: optional_id(min)?,
        max: optional_id(max)?,
        consumers,
    })
}

fn pending_entry(value: &Value) -> Option<PendingEntry> {
    let [id_value, consumer, idle, deliveries] = list(value)? else {
        return None;
    };
    Some(PendingEntry {
        id: id(id_value)?,
        consumer: text(consumer)?,
        idle: Duration::from_millis(uint(idle)?),
        deliveries: uint(deliveries)?,
    })
}

/// XCLAIM's reply: entries, or ids under JUSTID. Redis 7 leaves out the
/// entries that no longer exist; older servers sent nil for them.
fn claimed(value: &Value, just_id: bool) -> Option<Vec<Entry>> {
    list(value)?
        .iter()
        .filter(|item| !matches!(item, Value::Nil))
        .map(|item| {
            if just_id {
                Some(Entry {
                    id: id(item)?,
                    fields: Vec::new(),
                })
            } else {
                entry(item)
            }
        })
        .collect()
}

fn auto_claimed(value: &Value, just_id: bool) -> Option<AutoClaimed> {
    let [next, claimed_value, deleted] = list(value)? else {
        return None;
    };
    Some(AutoClaimed {
        next: id(next)?,
        claimed: claimed(claimed_value, just_id)?,
        deleted: list(deleted)?.iter().map(id).collect::<Option<_>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_errors() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn error_replies_become_the_embedded_engines_errors() {
        let context = Context::new(&["a", "jobs"], "workers");
        assert!(matches!(
            server_error("BUSYGROUP", "Consumer Group name already exists", context),
            StreamError::BusyGroup
        ));
        let detail =
            "No such key 'jobs' or consumer group 'workers' in XREADGROUP with GROUP option";
        match server_error("NOGROUP", detail, context) {
            StreamError::NoGroup {
                stream,
                group,
                suffix,
            } => assert_eq!(
                (&*stream, &*group, suffix),
                ("jobs", "workers", READ_SUFFIX)
            ),
            other => panic!("{other:?}"),
        }
        match server_error("ERR", "something new", context) {
            StreamError::Reply(message) => assert_eq!(message, "ERR something new"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replies_decode_in_both_protocols() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![bulk("name"), bulk("g"), bulk("lag"), Value::Nil]);
        let resp3 = Value::Map(vec![(bulk("name"), bulk("g")), (bulk("lag"), Value::Nil)]);
        for reply in [resp2, resp3] {
            let pairs = pairs(&reply).unwrap();
            assert_eq!(text(field(&pairs, "name").unwrap()).unwrap(), "g");
            assert_eq!(optional_uint(field(&pairs, "lag").unwrap()), Some(None));
        }
        let deleted = Value::Array(vec![bulk("5-1"), Value::Nil]);
        assert_eq!(
            group_entry(&deleted),
            Some(GroupEntry {
                id: StreamId::new(5, 1),
                fields: None
            })
        );
        assert_eq!(entries(&Value::Nil), Some(Vec::new()));
        assert_eq!(id(&bulk("not-an-id")), None);
    }
}
