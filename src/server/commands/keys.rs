//! The keyspace commands. Every key here is a stream, so TYPE answers
//! `stream` or `none`, and there is one database.

use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;
use globset::{Glob, GlobMatcher};

use super::{Args, CommandResult, integer, is, syntax_error, text};
use crate::server::resp::Reply;
use crate::streams::{Embedded, LogStore};

pub(super) fn run<S: LogStore>(streams: &Embedded<S>, name: &str, args: &Args) -> CommandResult {
    match name {
        "dbsize" => Ok(Reply::Int(streams.names()?.len() as i64)),
        "del" | "unlink" => {
            let mut removed = 0;
            for key in &args[1..] {
                removed += streams.remove(text(key)?)? as i64;
            }
            Ok(Reply::Int(removed))
        }
        "exists" => {
            let mut found = 0;
            for key in &args[1..] {
                found += streams.exists(text(key)?)? as i64;
            }
            Ok(Reply::Int(found))
        }
        "type" => Ok(Reply::status(if streams.exists(text(&args[1])?)? {
            "stream"
        } else {
            "none"
        })),
        "keys" => {
            let pattern = pattern(&args[1])?;
            let names = streams.names()?.into_iter();
            Ok(Reply::Array(
                names
                    .filter(|name| pattern.is_match(name))
                    .map(Reply::text)
                    .collect(),
            ))
        }
        "scan" => scan(streams, args),
        "flushdb" | "flushall" => {
            match args.get(1) {
                None => {}
                Some(mode) if args.len() == 2 && (is(mode, "ASYNC") || is(mode, "SYNC")) => {}
                Some(_) => return Err(syntax_error()),
            }
            for name in streams.names()? {
                streams.remove(&name)?;
            }
            Ok(Reply::OK)
        }
        _ => unreachable!("commands::run sends only keyspace commands here"),
    }
}

/// A Redis glob pattern: `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`.
pub(super) fn pattern(arg: &Bytes) -> Result<GlobMatcher, Reply> {
    let pattern = text(arg)?.replace("[^", "[!");
    Glob::new(&pattern)
        .map(|glob| glob.compile_matcher())
        .map_err(|e| Reply::error(format!("ERR invalid pattern: {e}")))
}

/// Where a stream falls in SCAN's order: by a hash of its name, never 0
/// (the cursor that starts and ends a scan). A cursor is the position of
/// the next stream to return, so a scan returns every stream that exists
/// throughout it, whatever is added or deleted meanwhile.
fn scan_position(name: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish() | 1
}

fn scan<S: LogStore>(streams: &Embedded<S>, args: &Args) -> CommandResult {
    let cursor = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| Reply::error("ERR invalid cursor"))?;
    let mut count = 10;
    let mut matcher = None;
    let mut only_streams = true;
    let mut at = 2;
    while at < args.len() {
        let Some(value) = args.get(at + 1) else {
            return Err(syntax_error());
        };
        if is(&args[at], "COUNT") {
            count = integer(value)?;
            if count < 1 {
                return Err(syntax_error());
            }
        } else if is(&args[at], "MATCH") {
            matcher = Some(pattern(value)?);
        } else if is(&args[at], "TYPE") {
            only_streams = is(value, "stream");
        } else {
            return Err(syntax_error());
        }
        at += 2;
    }
    let mut names: Vec<(u64, String)> = streams
        .names()?
        .into_iter()
        .map(|name| (scan_position(&name), name))
        .filter(|(position, _)| *position >= cursor)
        .collect();
    names.sort_unstable();
    // Streams at one position are returned together, so none is skipped.
    let mut end = names.len().min(count as usize);
    while end > 0 && end < names.len() && names[end].0 == names[end - 1].0 {
        end += 1;
    }
    let next = names.get(end).map_or(0, |(position, _)| *position);
    let keys = names[..end]
        .iter()
        .filter(|_| only_streams)
        .filter(|(_, name)| matcher.as_ref().is_none_or(|m| m.is_match(name)))
        .map(|(_, name)| Reply::text(name.clone()))
        .collect();
    Ok(Reply::Array(vec![
        Reply::text(next.to_string()),
        Reply::Array(keys),
    ]))
}
