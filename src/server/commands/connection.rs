//! The commands about the connection and the server: what clients, tools
//! and client libraries send around the stream commands (handshakes,
//! authentication, introspection, configuration).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use subtle::ConstantTimeEq;

use super::{Args, COMMANDS, CommandResult, Kind, Session, Spec, integer, is, lower, syntax_error};
use crate::server::resp::Reply;
use crate::server::{REDIS_VERSION, Server};
use crate::streams::LogStore;

impl<S: LogStore> Server<S> {
    pub(super) fn connection_command(
        &self,
        session: &mut Session,
        name: &str,
        args: &Args,
    ) -> CommandResult {
        match name {
            "ping" if args.len() > 2 => Err(super::arity_error("ping")),
            "ping" => Ok(match args.get(1) {
                Some(message) => Reply::Bulk(message.clone()),
                None => Reply::status("PONG"),
            }),
            "echo" => Ok(Reply::Bulk(args[1].clone())),
            "quit" => {
                session.closing = true;
                Ok(Reply::OK)
            }
            "reset" => {
                session.transaction = None;
                session.resp3 = false;
                session.authenticated = self.requirepass.read().is_none();
                self.update_client(session.id, |client| {
                    client.name = None;
                    client.resp3 = false;
                });
                Ok(Reply::status("RESET"))
            }
            "select" => match integer(&args[1])? {
                0 => Ok(Reply::OK),
                _ => Err(Reply::error("ERR DB index is out of range")),
            },
            "auth" => {
                let (user, password) = match args.len() {
                    2 => (None, &args[1]),
                    3 => (Some(&args[1]), &args[2]),
                    _ => return Err(syntax_error()),
                };
                if user.is_none() && self.requirepass.read().is_none() {
                    return Err(Reply::error(
                        "ERR AUTH <password> called without any password configured for the \
                         default user. Are you sure your configuration is correct?",
                    ));
                }
                self.authenticate(session, user.map(|u| &u[..]), password)?;
                Ok(Reply::OK)
            }
            "hello" => self.hello(session, args),
            "info" => Ok(Reply::Verbatim(self.info(args))),
            "client|id" => Ok(Reply::Int(session.id as i64)),
            "client|getname" => Ok(self
                .clients
                .lock()
                .get(&session.id)
                .and_then(|client| client.name.clone())
                .map_or(Reply::Null, Reply::text)),
            "client|setname" => {
                let name = client_name(&args[2])?;
                self.update_client(session.id, |client| client.name = name);
                Ok(Reply::OK)
            }
            "client|setinfo" => {
                let value = String::from_utf8_lossy(&args[3]).into_owned();
                if is(&args[2], "LIB-NAME") {
                    self.update_client(session.id, |client| client.lib_name = value);
                } else if is(&args[2], "LIB-VER") {
                    self.update_client(session.id, |client| client.lib_ver = value);
                } else {
                    return Err(Reply::error(format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(&args[2])
                    )));
                }
                Ok(Reply::OK)
            }
            "client|info" => Ok(Reply::Verbatim(self.client_line(session.id))),
            "client|list" => {
                let ids: Vec<u64> = self.clients.lock().keys().copied().collect();
                Ok(Reply::Verbatim(
                    ids.into_iter().map(|id| self.client_line(id)).collect(),
                ))
            }
            "client|help" => Ok(super::help(
                "CLIENT",
                &[
                    "GETNAME",
                    "    Return the name of the current connection.",
                    "ID",
                    "    Return the ID of the current connection.",
                    "INFO",
                    "    Return information about the current client connection.",
                    "LIST",
                    "    Return information about client connections.",
                    "SETINFO <option> <value>",
                    "    Set client meta attr. Options are LIB-NAME and LIB-VER.",
                    "SETNAME <name>",
                    "    Assign the name <name> to the current connection.",
                ],
            )),
            "command" => Ok(Reply::Array(COMMANDS.iter().map(command_info).collect())),
            "command|count" => Ok(Reply::Int(COMMANDS.len() as i64)),
            "command|list" => Ok(Reply::Array(
                COMMANDS.iter().map(|spec| Reply::text(spec.name)).collect(),
            )),
            "command|info" => Ok(Reply::Array(if args.len() == 2 {
                COMMANDS.iter().map(command_info).collect()
            } else {
                args[2..]
                    .iter()
                    .map(|name| {
                        super::lookup(COMMANDS, &lower(name)).map_or(Reply::Null, command_info)
                    })
                    .collect()
            })),
            "command|docs" => {
                let wanted: Vec<String> = args[2..].iter().map(|name| lower(name)).collect();
                Ok(Reply::Map(
                    COMMANDS
                        .iter()
                        .filter(|spec| wanted.is_empty() || wanted.iter().any(|w| w == spec.name))
                        .map(|spec| (Reply::text(spec.name), command_docs(spec)))
                        .collect(),
                ))
            }
            "command|help" => Ok(super::help(
                "COMMAND",
                &[
                    "(no subcommand)",
                    "    Return details about all commands.",
                    "COUNT",
                    "    Return the total number of commands in this server.",
                    "LIST",
                    "    Return a list of all commands in this server.",
                    "INFO [<command-name> ...]",
                    "    Return details about multiple commands.",
                    "DOCS [<command-name> ...]",
                    "    Return documentation details about multiple commands.",
                ],
            )),
            "config|get" => Ok(Reply::Map(self.config_get(&args[2..])?)),
            "config|set" => self.config_set(&args[2..]),
            "config|resetstat" => {
                self.stats.reset();
                Ok(Reply::OK)
            }
            "config|help" => Ok(super::help(
                "CONFIG",
                &[
                    "GET <pattern>",
                    "    Return parameters matching the glob-like <pattern> and their values.",
                    "SET <directive> <value>",
                    "    Set the configuration <directive> to <value>.",
                    "RESETSTAT",
                    "    Reset statistics reported by the INFO command.",
                ],
            )),
            _ => unreachable!("the command table lists every command: {name}"),
        }
    }

    fn authenticate(
        &self,
        session: &mut Session,
        user: Option<&[u8]>,
        password: &[u8],
    ) -> Result<(), Reply> {
        let wrong =
            || Reply::error("WRONGPASS invalid username-password pair or user is disabled.");
        if user.is_some_and(|user| user != b"default") {
            return Err(wrong());
        }
        let matches = match &*self.requirepass.read() {
            Some(secret) => bool::from(secret.as_bytes().ct_eq(password)),
            None => true,
        };
        if !matches {
            return Err(wrong());
        }
        session.authenticated = true;
        Ok(())
    }

    fn hello(&self, session: &mut Session, args: &Args) -> CommandResult {
        let mut resp3 = session.resp3;
        if let Some(version) = args.get(1) {
            resp3 = match integer(version) {
                Ok(2) => false,
                Ok(3) => true,
                Ok(_) => return Err(Reply::error("NOPROTO unsupported protocol version")),
                Err(_) => {
                    return Err(Reply::error(
                        "ERR Protocol version is not an integer or out of range",
                    ));
                }
            };
        }
        let mut name = None;
        let mut at = 2;
        while at < args.len() {
            let more = args.len() - 1 - at;
            if is(&args[at], "AUTH") && more >= 2 {
                self.authenticate(session, Some(&args[at + 1]), &args[at + 2])?;
                at += 3;
            } else if is(&args[at], "SETNAME") && more >= 1 {
                name = Some(client_name(&args[at + 1])?);
                at += 2;
            } else {
                return Err(Reply::error(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[at])
                )));
            }
        }
        if !session.authenticated && self.requirepass.read().is_some() {
            return Err(Reply::error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise \
                 the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the \
                 client and select the RESP protocol version at the same time",
            ));
        }
        session.resp3 = resp3;
        self.update_client(session.id, |client| {
            client.resp3 = resp3;
            if let Some(name) = name {
                client.name = name;
            }
        });
        Ok(Reply::fields([
            ("server", Reply::text("redis")),
            ("version", Reply::text(REDIS_VERSION)),
            ("proto", Reply::Int(if resp3 { 3 } else { 2 })),
            ("id", Reply::Int(session.id as i64)),
            ("mode", Reply::text("standalone")),
            ("role", Reply::text("master")),
            ("modules", Reply::Array(Vec::new())),
        ]))
    }

    fn client_line(&self, id: u64) -> String {
        let clients = self.clients.lock();
        let Some(client) = clients.get(&id) else {
            return String::new();
        };
        format!(
            "id={id} addr={} laddr={} name={} age={} idle=0 flags=N db=0 user=default resp={} \
             lib-name={} lib-ver={}\n",
            client.addr,
            self.options.listen,
            client.name.as_deref().unwrap_or(""),
            client.connected.elapsed().as_secs(),
            if client.resp3 { 3 } else { 2 },
            client.lib_name,
            client.lib_ver,
        )
    }

    /// INFO: the sections asked for (`default`, `all` or `everything` for
    /// all of them), in Redis's `field:value` lines.
    fn info(&self, args: &Args) -> String {
        let wanted: Vec<String> = args[1..].iter().map(|arg| lower(arg)).collect();
        let all = wanted.is_empty()
            || wanted
                .iter()
                .any(|w| w == "all" || w == "default" || w == "everything");
        let mut out = String::new();
        let mut section = |name: &str, fields: Vec<(&str, String)>| {
            if all || wanted.iter().any(|w| w == &name.to_lowercase()) {
                if !out.is_empty() {
                    out.push_str("\r\n");
                }
                let _ = write!(out, "# {name}\r\n");
                for (field, value) in fields {
                    let _ = write!(out, "{field}:{value}\r\n");
                }
            }
        };
        let uptime = self.started.elapsed().as_secs();
        section(
            "Server",
            vec![
                ("redis_version", REDIS_VERSION.into()),
                ("orcastra_version", env!("CARGO_PKG_VERSION").into()),
                ("redis_mode", "standalone".into()),
                ("os", std::env::consts::OS.into()),
                ("arch_bits", (usize::BITS).to_string()),
                ("process_id", std::process::id().to_string()),
                ("tcp_port", self.options.listen.port().to_string()),
                ("uptime_in_seconds", uptime.to_string()),
                ("uptime_in_days", (uptime / 86_400).to_string()),
            ],
        );
        let connected = self.clients.lock().len();
        section(
            "Clients",
            vec![
                ("connected_clients", connected.to_string()),
                ("maxclients", self.max_clients().to_string()),
                (
                    "blocked_clients",
                    self.stats.blocked.load(Ordering::Relaxed).to_string(),
                ),
            ],
        );
        let rss = resident_bytes();
        section(
            "Memory",
            vec![
                ("used_memory", rss.to_string()),
                ("used_memory_human", human_bytes(rss)),
                ("used_memory_rss", rss.to_string()),
                ("maxmemory", "0".into()),
                ("maxmemory_policy", "noeviction".into()),
            ],
        );
        section(
            "Persistence",
            vec![
                ("loading", "0".into()),
                ("aof_enabled", "1".into()),
                ("aof_rewrite_in_progress", "0".into()),
                ("aof_last_write_status", "ok".into()),
                ("rdb_bgsave_in_progress", "0".into()),
                ("rdb_changes_since_last_save", "0".into()),
                ("appendfsync", self.options.appendfsync.into()),
            ],
        );
        section(
            "Stats",
            vec![
                (
                    "total_connections_received",
                    self.stats.connections.load(Ordering::Relaxed).to_string(),
                ),
                (
                    "total_commands_processed",
                    self.stats.commands.load(Ordering::Relaxed).to_string(),
                ),
                (
                    "rejected_connections",
                    self.stats.rejected.load(Ordering::Relaxed).to_string(),
                ),
                ("expired_keys", "0".into()),
                ("evicted_keys", "0".into()),
            ],
        );
        section(
            "Replication",
            vec![("role", "master".into()), ("connected_slaves", "0".into())],
        );
        let keys = self.streams.names().map_or(0, |names| names.len());
        let keyspace = if keys > 0 {
            vec![("db0", format!("keys={keys},expires=0,avg_ttl=0"))]
        } else {
            Vec::new()
        };
        section("Keyspace", keyspace);
        out
    }

    /// The parameters CONFIG GET knows, with their values now.
    fn config(&self) -> Vec<(&'static str, String)> {
        vec![
            ("appendonly", "yes".into()),
            ("appendfsync", self.options.appendfsync.into()),
            ("bind", self.options.listen.ip().to_string()),
            ("databases", "1".into()),
            ("maxclients", self.max_clients().to_string()),
            ("maxmemory", "0".into()),
            ("maxmemory-policy", "noeviction".into()),
            ("port", self.options.listen.port().to_string()),
            (
                "proto-max-bulk-len",
                self.options.limits.max_bulk.to_string(),
            ),
            (
                "requirepass",
                self.requirepass.read().clone().unwrap_or_default(),
            ),
            ("save", String::new()),
            ("timeout", "0".into()),
        ]
    }

    fn config_get(&self, patterns: &[bytes::Bytes]) -> Result<Vec<(Reply, Reply)>, Reply> {
        let matchers = patterns
            .iter()
            .map(super::keys::pattern)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .config()
            .into_iter()
            .filter(|(name, _)| matchers.iter().any(|m| m.is_match(name)))
            .map(|(name, value)| (Reply::text(name), Reply::text(value)))
            .collect())
    }

    fn config_set(&self, pairs: &[bytes::Bytes]) -> CommandResult {
        if !pairs.len().is_multiple_of(2) {
            return Err(super::arity_error("config|set"));
        }
        let known: Vec<&str> = self.config().into_iter().map(|(name, _)| name).collect();
        // Check every pair before changing anything, as Redis does.
        let mut max_clients = None;
        let mut password = None;
        for pair in pairs.chunks_exact(2) {
            let name = lower(&pair[0]);
            let failed = |why: &str| {
                Reply::error(format!(
                    "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
                ))
            };
            match name.as_str() {
                "maxclients" => {
                    let n = integer(&pair[1])
                        .map_err(|_| failed("argument couldn't be parsed into an integer"))?;
                    if n < 1 {
                        return Err(failed(
                            "argument must be between 1 and 4294967295 inclusive",
                        ));
                    }
                    max_clients = Some(n as usize);
                }
                "requirepass" => {
                    let value = String::from_utf8(pair[1].to_vec())
                        .map_err(|_| failed("the password must be UTF-8 text"))?;
                    password = Some((!value.is_empty()).then_some(value));
                }
                _ if known.contains(&name.as_str()) => {
                    return Err(failed("can't set immutable config"));
                }
                _ => {
                    return Err(Reply::error(format!(
                        "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                    )));
                }
            }
        }
        if let Some(n) = max_clients {
            self.max_clients.store(n, Ordering::Relaxed);
        }
        if let Some(password) = password {
            *self.requirepass.write() = password;
        }
        Ok(Reply::OK)
    }
}

/// A name for CLIENT SETNAME or HELLO SETNAME: printable, without spaces;
/// empty clears it.
fn client_name(arg: &[u8]) -> Result<Option<String>, Reply> {
    if arg.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(Reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok((!arg.is_empty()).then(|| String::from_utf8_lossy(arg).into_owned()))
}

/// One command as COMMAND INFO describes it.
fn command_info(spec: &Spec) -> Reply {
    described(spec.name.to_string(), spec)
}

/// A command or subcommand (`xgroup|create`) as COMMAND INFO describes it.
fn described(name: String, spec: &Spec) -> Reply {
    let flags = match spec.kind {
        Kind::Read => vec!["readonly"],
        Kind::Write => vec!["write"],
        Kind::Admin => vec!["fast"],
    };
    let mut flags: Vec<Reply> = flags.into_iter().map(Reply::status).collect();
    if spec.no_auth {
        flags.push(Reply::status("no-auth"));
    }
    if matches!(spec.name, "xread" | "xreadgroup") {
        flags.push(Reply::status("blocking"));
        flags.push(Reply::status("movablekeys"));
    }
    let key = i64::from(spec.keyed);
    Reply::Array(vec![
        Reply::text(name),
        Reply::Int(spec.arity.into()),
        Reply::Set(flags),
        Reply::Int(key),
        Reply::Int(key),
        Reply::Int(key),
        Reply::Set(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(
            spec.subcommands
                .iter()
                .map(|sub| described(format!("{}|{}", spec.name, sub.name), sub))
                .collect(),
        ),
    ])
}

fn command_docs(spec: &Spec) -> Reply {
    let group = match spec.name {
        name if name.starts_with('x') => "stream",
        "dbsize" | "del" | "unlink" | "exists" | "type" | "keys" | "scan" => "generic",
        "flushdb" | "flushall" | "info" | "config" | "command" => "server",
        _ => "connection",
    };
    Reply::fields([("group", Reply::text(group))])
}

/// This process's resident memory, from /proc (0 where there is none).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn human_bytes(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["B", "K", "M", "G"] {
        if value < 1024.0 {
            return format!("{value:.2}{unit}");
        }
        value /= 1024.0;
    }
    format!("{value:.2}T")
}
