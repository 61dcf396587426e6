//! The commands the server answers: a table of names, arities and flags (it
//! also answers COMMAND), and the dispatch that checks a request against it
//! in Redis's order (unknown command, arity, authentication, transaction)
//! before running it.
//!
//! `streams` holds the stream commands, `connection` the commands about the
//! client and the server, `keys` the keyspace commands over streams.

mod connection;
mod keys;
mod streams;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use super::Server;
use super::resp::Reply;
use crate::streams::LogStore;

/// A request's arguments, the command name first.
pub(super) type Args = [Bytes];

/// A command's reply; `Err` holds an error reply, so that `?` works on
/// argument parsing and on [`StreamError`](crate::streams::StreamError)s,
/// whose messages are Redis's.
type CommandResult = Result<Reply, Reply>;

impl From<crate::streams::StreamError> for Reply {
    fn from(error: crate::streams::StreamError) -> Reply {
        Reply::error(error)
    }
}

/// What a client's connection remembers between commands.
#[derive(Debug)]
pub struct Session {
    /// The client id (CLIENT ID).
    pub id: u64,
    /// The peer's address.
    pub addr: SocketAddr,
    /// When it connected.
    pub connected: Instant,
    /// The name it gave itself (CLIENT SETNAME).
    pub name: Option<String>,
    /// Replies in RESP3 (after `HELLO 3`).
    pub resp3: bool,
    /// Whether it has authenticated (always, without a password).
    pub authenticated: bool,
    /// The commands queued after MULTI, and whether one was refused.
    transaction: Option<Transaction>,
    /// Set by QUIT: close once the reply is sent.
    pub closing: bool,
}

#[derive(Debug, Default)]
struct Transaction {
    queued: Vec<Vec<Bytes>>,
    refused: bool,
}

impl Session {
    /// Whether the client is between MULTI and EXEC.
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// A new client's session.
    pub fn new(id: u64, addr: SocketAddr, authenticated: bool) -> Self {
        Session {
            id,
            addr,
            connected: Instant::now(),
            name: None,
            resp3: false,
            authenticated,
            transaction: None,
            closing: false,
        }
    }
}

/// Flags of a command, as COMMAND reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Reads streams.
    Read,
    /// Changes streams.
    Write,
    /// About the connection or the server; no keys.
    Admin,
}

/// One command or subcommand of the table.
#[derive(Debug)]
struct Spec {
    /// Lower case, as Redis reports names.
    name: &'static str,
    /// Redis's arity: exactly `n` arguments, or at least `-n` if negative,
    /// counting the command name (and the subcommand name).
    arity: i32,
    kind: Kind,
    /// Whether the first argument is a stream name.
    keyed: bool,
    /// Allowed before AUTH.
    no_auth: bool,
    subcommands: &'static [Spec],
}

const fn spec(name: &'static str, arity: i32, kind: Kind, keyed: bool) -> Spec {
    Spec {
        name,
        arity,
        kind,
        keyed,
        no_auth: false,
        subcommands: &[],
    }
}

const fn container(name: &'static str, subcommands: &'static [Spec]) -> Spec {
    Spec {
        name,
        arity: -2,
        kind: Kind::Admin,
        keyed: false,
        no_auth: false,
        subcommands,
    }
}

const fn no_auth(spec: Spec) -> Spec {
    Spec {
        no_auth: true,
        ..spec
    }
}

use Kind::{Admin, Read, Write};

/// Every command, sorted by name (looked up by binary search).
static COMMANDS: &[Spec] = &[
    no_auth(spec("auth", -2, Admin, false)),
    container(
        "client",
        &[
            spec("getname", 2, Admin, false),
            spec("help", 2, Admin, false),
            spec("id", 2, Admin, false),
            spec("info", 2, Admin, false),
            spec("list", -2, Admin, false),
            spec("setinfo", 4, Admin, false),
            spec("setname", 3, Admin, false),
        ],
    ),
    Spec {
        arity: -1,
        ..container(
            "command",
            &[
                spec("count", 2, Admin, false),
                spec("docs", -2, Admin, false),
                spec("help", 2, Admin, false),
                spec("info", -2, Admin, false),
                spec("list", -2, Admin, false),
            ],
        )
    },
    container(
        "config",
        &[
            spec("get", -3, Admin, false),
            spec("help", 2, Admin, false),
            spec("resetstat", 2, Admin, false),
            spec("set", -4, Admin, false),
        ],
    ),
    spec("dbsize", 1, Read, false),
    spec("del", -2, Write, true),
    spec("discard", 1, Admin, false),
    spec("echo", 2, Admin, false),
    spec("exec", 1, Admin, false),
    spec("exists", -2, Read, true),
    spec("flushall", -1, Write, false),
    spec("flushdb", -1, Write, false),
    no_auth(spec("hello", -1, Admin, false)),
    spec("info", -1, Admin, false),
    spec("keys", 2, Read, false),
    spec("multi", 1, Admin, false),
    spec("ping", -1, Admin, false),
    no_auth(spec("quit", -1, Admin, false)),
    no_auth(spec("reset", 1, Admin, false)),
    spec("scan", -2, Read, false),
    spec("select", 2, Admin, false),
    spec("type", 2, Read, true),
    spec("unlink", -2, Write, true),
    spec("xack", -4, Write, true),
    spec("xadd", -5, Write, true),
    spec("xautoclaim", -6, Write, true),
    spec("xclaim", -6, Write, true),
    spec("xdel", -3, Write, true),
    container(
        "xgroup",
        &[
            spec("create", -5, Write, true),
            spec("createconsumer", 5, Write, true),
            spec("delconsumer", 5, Write, true),
            spec("destroy", 4, Write, true),
            spec("help", 2, Admin, false),
            spec("setid", -5, Write, true),
        ],
    ),
    container(
        "xinfo",
        &[
            spec("consumers", 4, Read, true),
            spec("groups", 3, Read, true),
            spec("help", 2, Admin, false),
            spec("stream", -3, Read, true),
        ],
    ),
    spec("xlen", 2, Read, true),
    spec("xpending", -3, Read, true),
    spec("xrange", -4, Read, true),
    spec("xread", -4, Read, false),
    spec("xreadgroup", -7, Write, false),
    spec("xrevrange", -4, Read, true),
    spec("xsetid", -3, Write, true),
    spec("xtrim", -4, Write, true),
];

fn lookup<'a>(table: &'a [Spec], name: &str) -> Option<&'a Spec> {
    table
        .binary_search_by(|spec| spec.name.cmp(name))
        .ok()
        .map(|at| &table[at])
}

fn arity_ok(spec: &Spec, args: usize) -> bool {
    let args = args as i32;
    if spec.arity >= 0 {
        args == spec.arity
    } else {
        args >= -spec.arity
    }
}

/// Whether `arg` is `word`, ignoring case.
fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// An integer argument.
fn integer(arg: &[u8]) -> Result<i64, Reply> {
    integer_or(arg, "ERR value is not an integer or out of range")
}

/// An integer argument, or the error `message`.
fn integer_or(arg: &[u8], message: &str) -> Result<i64, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|text| !text.starts_with('+'))
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| Reply::error(message))
}

/// A stream, group or consumer name. Names are text here (they name files
/// and appear in logs); Redis would take any bytes.
fn text(arg: &Bytes) -> Result<&str, Reply> {
    std::str::from_utf8(arg)
        .map_err(|_| Reply::error("ERR stream, group and consumer names must be UTF-8 text"))
}

fn syntax_error() -> Reply {
    Reply::error("ERR syntax error")
}

fn arity_error(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn lower(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_lowercase()
}

/// Redis's reply to a command it does not know.
fn unknown_command(args: &Args) -> Reply {
    let mut message = format!(
        "ERR unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(&args[0])
    );
    for arg in &args[1..] {
        message.push_str(&format!("'{}' ", String::from_utf8_lossy(arg)));
    }
    Reply::Error(message)
}

/// Whether a request is an XADD.
pub(super) fn is_xadd(args: &Args) -> bool {
    is(&args[0], "XADD")
}

/// The stream of an `XADD key * field value …` without options, which can
/// be written together with the same kind of XADD to the same stream.
fn plain_xadd(args: &Args) -> Option<&Bytes> {
    let plain = args.len() >= 5
        && (args.len() - 3).is_multiple_of(2)
        && is_xadd(args)
        && &args[2][..] == b"*";
    plain.then(|| &args[1])
}

/// Whether a request is a read that may block: the connection sends the
/// replies before it first, and watches for the client leaving meanwhile.
pub(super) fn may_block(args: &Args) -> bool {
    (is(&args[0], "XREAD") || is(&args[0], "XREADGROUP")) && args.iter().any(|arg| is(arg, "BLOCK"))
}

/// The checks Redis makes before running a command: the command and
/// subcommand exist, the arity fits. Returns the command's name as Redis
/// reports it in errors (`xgroup|create`) and its spec.
fn resolve(args: &Args) -> Result<(String, &'static Spec), Reply> {
    let name = lower(&args[0]);
    let Some(spec) = lookup(COMMANDS, &name) else {
        return Err(unknown_command(args));
    };
    if !arity_ok(spec, args.len()) {
        return Err(arity_error(&name));
    }
    if spec.subcommands.is_empty() || args.len() < 2 {
        return Ok((name, spec));
    }
    let sub_name = lower(&args[1]);
    let Some(sub) = lookup(spec.subcommands, &sub_name) else {
        return Err(Reply::error(format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(&args[1]),
            name.to_uppercase()
        )));
    };
    let full = format!("{name}|{sub_name}");
    if !arity_ok(sub, args.len()) {
        return Err(arity_error(&full));
    }
    Ok((full, sub))
}

impl<S: LogStore> Server<S> {
    /// Runs one request for the client of `session`.
    pub(super) async fn execute(&self, session: &mut Session, args: Vec<Bytes>) -> Reply {
        self.stats
            .commands
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resolved = resolve(&args);
        let auth_required = self.auth_required(session);
        if let Some(transaction) = &mut session.transaction {
            let controls = ["exec", "discard", "multi", "quit", "reset"];
            let name = lower(&args[0]);
            if !controls.contains(&name.as_str()) {
                return match resolved {
                    Ok(_) if auth_required => Reply::error(NOAUTH),
                    Ok(_) => {
                        transaction.queued.push(args);
                        Reply::status("QUEUED")
                    }
                    Err(error) => {
                        transaction.refused = true;
                        error
                    }
                };
            }
        }
        let (name, spec) = match resolved {
            Ok(resolved) => resolved,
            Err(error) => return error,
        };
        if !spec.no_auth && auth_required {
            return Reply::error(NOAUTH);
        }
        match name.as_str() {
            "multi" => {
                if session.transaction.is_some() {
                    return Reply::error("ERR MULTI calls can not be nested");
                }
                session.transaction = Some(Transaction::default());
                Reply::OK
            }
            "exec" => {
                let Some(transaction) = session.transaction.take() else {
                    return Reply::error("ERR EXEC without MULTI");
                };
                if transaction.refused {
                    return Reply::error(
                        "EXECABORT Transaction discarded because of previous errors.",
                    );
                }
                let mut replies = Vec::with_capacity(transaction.queued.len());
                for args in transaction.queued {
                    // Queued commands passed `resolve` when they were queued.
                    let reply = match resolve(&args) {
                        Ok((name, _)) => self.run(session, &name, &args, false).await,
                        Err(error) => error,
                    };
                    replies.push(reply);
                }
                Reply::Array(replies)
            }
            "discard" => match session.transaction.take() {
                Some(_) => Reply::OK,
                None => Reply::error("ERR DISCARD without MULTI"),
            },
            _ => self.run(session, &name, &args, true).await,
        }
    }

    /// Runs requests in order and returns their replies. Consecutive plain
    /// XADDs to one stream are one append, combined with other clients'
    /// (see `adds`): same ids as if each were run alone, far fewer writes.
    pub(super) async fn execute_batch(
        &self,
        session: &mut Session,
        batch: Vec<Vec<Bytes>>,
    ) -> Vec<Reply> {
        let mut replies = Vec::with_capacity(batch.len());
        let mut requests = batch.into_iter().peekable();
        while let Some(args) = requests.next() {
            let together = !session.in_transaction() && !self.auth_required(session);
            let Some(stream) = plain_xadd(&args).filter(|_| together).cloned() else {
                replies.push(self.execute(session, args).await);
                continue;
            };
            let mut entries = vec![args];
            while let Some(next) = requests.next_if(|next| plain_xadd(next) == Some(&stream)) {
                entries.push(next);
            }
            replies.extend(self.add_together(&stream, entries).await);
        }
        replies
    }

    async fn add_together(&self, stream: &Bytes, requests: Vec<Vec<Bytes>>) -> Vec<Reply> {
        let count = requests.len();
        self.stats
            .commands
            .fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
        let stream = match text(stream) {
            Ok(stream) => stream.to_string(),
            Err(error) => return vec![error; count],
        };
        let entries = requests
            .into_iter()
            .map(|args| {
                args[3..]
                    .chunks_exact(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect()
            })
            .collect();
        match self.adds.add(stream, entries).await {
            Ok(ids) => ids
                .into_iter()
                .map(|id| Reply::text(id.to_string()))
                .collect(),
            Err(error) => vec![Reply::from(error); count],
        }
    }

    fn auth_required(&self, session: &Session) -> bool {
        !session.authenticated && self.requirepass.read().is_some()
    }

    /// Runs a command that passed the checks of `resolve`. In a transaction
    /// (`may_block` false) blocking reads answer at once, as in Redis.
    async fn run(&self, session: &mut Session, name: &str, args: &Args, may_block: bool) -> Reply {
        let s = &self.streams;
        let result = match name {
            "xadd" => streams::xadd(s, args).await,
            "xrange" => streams::xrange(s, args, false).await,
            "xrevrange" => streams::xrange(s, args, true).await,
            "xlen" => streams::xlen(s, args).await,
            "xdel" => streams::xdel(s, args).await,
            "xtrim" => streams::xtrim(s, args).await,
            "xread" => streams::xread(s, args, may_block).await,
            "xreadgroup" => streams::xreadgroup(s, args, may_block).await,
            "xack" => streams::xack(s, args).await,
            "xpending" => streams::xpending(s, args).await,
            "xclaim" => streams::xclaim(s, args).await,
            "xautoclaim" => streams::xautoclaim(s, args).await,
            "xsetid" => streams::xsetid(s, args).await,
            "xgroup|help" => Ok(help("XGROUP", XGROUP_HELP)),
            "xinfo|help" => Ok(help("XINFO", XINFO_HELP)),
            _ if name.starts_with("xgroup|") => streams::xgroup(s, &name[7..], args).await,
            _ if name.starts_with("xinfo|") => streams::xinfo(s, &name[6..], args).await,
            "dbsize" | "del" | "unlink" | "exists" | "type" | "keys" | "scan" | "flushdb"
            | "flushall" => keys::run(s, name, args),
            _ => self.connection_command(session, name, args),
        };
        result.unwrap_or_else(|error| error)
    }
}

const NOAUTH: &str = "NOAUTH Authentication required.";

const XGROUP_HELP: &[&str] = &[
    "CREATE <key> <groupname> <id|$> [option]",
    "    Create a new consumer group. Options are:",
    "    * MKSTREAM",
    "      Create the empty stream if it does not exist.",
    "    * ENTRIESREAD entries_read",
    "      Accepted for compatibility; the count of entries read is always exact here.",
    "CREATECONSUMER <key> <groupname> <consumer>",
    "    Create a new consumer in the specified group.",
    "DELCONSUMER <key> <groupname> <consumer>",
    "    Remove the specified consumer.",
    "DESTROY <key> <groupname>",
    "    Remove the specified group.",
    "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    "    Set the current group ID.",
];

const XINFO_HELP: &[&str] = &[
    "CONSUMERS <key> <groupname>",
    "    Show consumers of <groupname>.",
    "GROUPS <key>",
    "    Show the stream consumer groups.",
    "STREAM <key> [FULL [COUNT <count>]",
    "    Show information about the stream.",
];

/// The reply of a HELP subcommand.
fn help(command: &str, lines: &[&'static str]) -> Reply {
    let mut reply = vec![Reply::status(format!(
        "{command} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    ))];
    reply.extend(lines.iter().map(|&line| Reply::status(line)));
    reply.push(Reply::status("HELP"));
    reply.push(Reply::status("    Print this help."));
    Reply::Array(reply)
}
