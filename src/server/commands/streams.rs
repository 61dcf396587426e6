//! The stream commands: each parses its arguments as Redis 7 does (same
//! options, same errors, in the same order where it matters), calls the
//! [`Streams`] API, and shapes the reply as Redis does.

use std::time::Duration;

use bytes::Bytes;

use super::{Args, CommandResult, integer, is, syntax_error, text};
use crate::StreamId;
use crate::server::resp::Reply;
use crate::streams::{
    AddId, AddOptions, AutoClaim, Bound, ClaimOptions, Clock, ConsumerInfo, Embedded, Entry,
    GroupEntry, GroupInfo, GroupRead, GroupStart, LogStore, PendingQuery, ReadFrom,
    ReadGroupOptions, StreamInfo, Streams, SystemClock, Trim, TrimTo,
};

const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";

/// A complete id: `<ms>-<seq>`, or `<ms>` for `<ms>-0`.
fn strict_id(arg: &[u8]) -> Result<StreamId, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| Reply::error(INVALID_ID))
}

/// An id whose sequence may be left out, standing for `missing_seq`.
fn id_or_partial(arg: &[u8], missing_seq: u64) -> Result<StreamId, Reply> {
    let id = strict_id(arg)?;
    if arg.contains(&b'-') {
        Ok(id)
    } else {
        Ok(StreamId::new(id.ms, missing_seq))
    }
}

/// One end of a range: `-`, `+`, `<id>` or `(<id>`.
fn bound(arg: &[u8], start: bool) -> Result<Bound, Reply> {
    match arg {
        b"-" => Ok(Bound::Min),
        b"+" => Ok(Bound::Max),
        [b'(', id @ ..] => {
            let missing_seq = if start { 0 } else { u64::MAX };
            let id = id_or_partial(id, missing_seq)?;
            let (edge, message) = if start {
                (StreamId::MAX, "ERR invalid start ID for the interval")
            } else {
                (StreamId::MIN, "ERR invalid end ID for the interval")
            };
            if id == edge {
                return Err(Reply::error(message));
            }
            Ok(Bound::Excluded(id))
        }
        _ => Ok(Bound::Included(id_or_partial(
            arg,
            if start { 0 } else { u64::MAX },
        )?)),
    }
}

fn id_reply(id: StreamId) -> Reply {
    Reply::text(id.to_string())
}

fn entry_reply(entry: Entry) -> Reply {
    let fields = entry
        .fields
        .into_iter()
        .flat_map(|(name, value)| [Reply::Bulk(name), Reply::Bulk(value)])
        .collect();
    Reply::Array(vec![id_reply(entry.id), Reply::Array(fields)])
}

fn entries_reply(entries: Vec<Entry>) -> Reply {
    Reply::Array(entries.into_iter().map(entry_reply).collect())
}

fn group_entry_reply(entry: GroupEntry) -> Reply {
    match entry.fields {
        Some(fields) => entry_reply(Entry {
            id: entry.id,
            fields,
        }),
        None => Reply::Array(vec![id_reply(entry.id), Reply::NullArray]),
    }
}

fn ids_reply(ids: impl IntoIterator<Item = StreamId>) -> Reply {
    Reply::Array(ids.into_iter().map(id_reply).collect())
}

/// A non-negative count where Redis treats a negative one as 0.
fn count(arg: &[u8]) -> Result<usize, Reply> {
    Ok(integer(arg)?.max(0) as usize)
}

/// The trim options of XADD and XTRIM, from `args[at..]`: stops at the
/// first argument that is not one (XADD's id). Returns them and where it stopped.
fn trim_options(args: &Args, mut at: usize, xadd: bool) -> Result<(AddOptions, usize), Reply> {
    let mut options = AddOptions::default();
    let mut to = None;
    let mut approximate = false;
    let mut limit = None;
    while at < args.len() {
        let more = args.len() - 1 - at;
        let arg = &args[at];
        if xadd && is(arg, "NOMKSTREAM") {
            options.no_mkstream = true;
        } else if more >= 1 && (is(arg, "MAXLEN") || is(arg, "MINID")) {
            if to.is_some() {
                return Err(Reply::error(
                    "ERR syntax error, MAXLEN and MINID options at the same time are not compatible",
                ));
            }
            let mut value = &args[at + 1];
            if (&value[..] == b"~" || &value[..] == b"=") && more >= 2 {
                approximate = &value[..] == b"~";
                at += 1;
                value = &args[at + 1];
            }
            to = Some(if is(arg, "MAXLEN") {
                let max = integer(value)?;
                if max < 0 {
                    return Err(Reply::error("ERR The MAXLEN argument must be >= 0."));
                }
                TrimTo::MaxLen(max as u64)
            } else {
                TrimTo::MinId(id_or_partial(value, 0)?)
            });
            at += 1;
        } else if more >= 1 && is(arg, "LIMIT") {
            let value = integer(&args[at + 1])?;
            if value < 0 {
                return Err(Reply::error("ERR The LIMIT argument must be >= 0."));
            }
            limit = Some(value as u64);
            at += 1;
        } else if xadd {
            break;
        } else {
            return Err(syntax_error());
        }
        at += 1;
    }
    if limit.is_some() && to.is_none() {
        return Err(Reply::error(
            "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy",
        ));
    }
    if !xadd && to.is_none() {
        return Err(Reply::error(
            "ERR syntax error, XTRIM must be called with a trimming strategy",
        ));
    }
    if limit.is_some() && !approximate {
        return Err(Reply::error(
            "ERR syntax error, LIMIT cannot be used without the special ~ option",
        ));
    }
    options.trim = to.map(|to| Trim {
        to,
        approximate,
        limit,
    });
    Ok((options, at))
}

pub(super) async fn xadd<S: LogStore>(streams: &Embedded<S>, args: &Args) -> CommandResult {
    let (mut options, at) = trim_options(args, 2, true)?;
    let fields = &args[at + 1..];
    if at >= args.len() || fields.is_empty() || fields.len() % 2 == 1 {
        return Err(super::arity_error("xadd"));
    }
    let id = &args[at];
    options.id = if &id[..] == b"*" {
        AddId::Auto
    } else if let Some(ms) = id.strip_suffix(b"-*") {
        if ms.contains(&b'-') {
            return Err(Reply::error(INVALID_ID));
        }
        AddId::AutoSeq(strict_id(ms)?.ms)
    } else {
        AddId::Explicit(strict_id(id)?)
    };
    let fields = fields
        .chunks_exact(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect();
    Ok(match streams.add(text(&args[1])?, fields, options).await? {
        Some(id) => id_reply(id),
        None => Reply::Null,
    })
}

pub(super) async fn xtrim<S: LogStore>(streams: &Embedded<S>, args: &Args) -> CommandResult {
    let (options, _) = trim_options(args, 2, false)?;
    let trim = options.trim.expect("XTRIM's options always trim");
    Ok(Reply::Int(
        streams.trim(text(&args[1])?, trim).await? as i64,
    ))
}

pub(super) async fn xrange<S: LogStore>(
    streams: &Embedded<S>,
    args: &Args,
    reverse: bool,
) -> CommandResult {
    let (start, end) = if reverse {
        (bound(&args[3], true)?, bound(&args[2], false)?)
    } else {
        (bound(&args[2], true)?, bound(&args[3], false)?)
    };
    let mut limit = None;
    let mut at = 4;
    while at < args.len() {
        if is(&args[at], "COUNT") && at + 1 < args.len() {
            limit = Some(count(&args[at + 1])?);
            at += 2;
        } else {
            return Err(syntax_error());
        }
    }
    if limit == Some(0) {
        return Ok(Reply::NullArray);
    }
    let stream = text(&args[1])?;
    let entries = if reverse {
        streams.rev_range(stream, end, start, limit).await?
    } else {
        streams.range(stream, start, end, limit).await?
    };
    Ok(entries_reply(entries))
}

pub(super) async fn xlen<S: LogStore>(streams: &Embedded<S>, args: &Args) -> CommandResult {
    Ok(Reply::Int(streams.len(text(&args[1])?).await? as i64))
}

pub(super) async fn xdel<S: LogStore>(streams: &Embedded<S>, args: &Args) -> CommandResult {
    let ids = args[2..]
        .iter()
        .map(|arg| strict_id(arg))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Reply::Int(
        streams.delete(text(&args[1])?, &ids).await? as i64,
    ))
}

/// The parsed arguments of XREAD and XREADGROUP.
struct ReadArgs<'a> {
    count: Option<usize>,
    block: Option<Duration>,
    group: Option<(&'a str, &'a str)>,
    no_ack: bool,
    keys: &'a [Bytes],
    ids: &'a [Bytes],
}

fn read_args<'a>(args: &'a Args, grouped: bool) -> Result<ReadArgs<'a>, Reply> {
    let mut parsed = ReadArgs {
        count: None,
        block: None,
        group: None,
        no_ack: false,
        keys: &[],
        ids: &[],
    };
    let mut at = 1;
    let mut found_streams = false;
    while at < args.len() {
        let more = args.len() - 1 - at;
        let arg = &args[at];
        if is(arg, "BLOCK") && more >= 1 {
            let ms = super::integer_or(
                &args[at + 1],
                "ERR timeout is not an integer or out of range",
            )?;
            if ms < 0 {
                return Err(Reply::error("ERR timeout is negative"));
            }
            parsed.block = Some(Duration::from_millis(ms as u64));
            at += 1;
        } else if is(arg, "COUNT") && more >= 1 {
            parsed.count = Some(count(&args[at + 1])?).filter(|&n| n > 0);
            at += 1;
        } else if is(arg, "STREAMS") && more >= 1 {
            let rest = &args[at + 1..];
            if !rest.len().is_multiple_of(2) {
                // Redis names XREAD here for both commands.
                return Err(Reply::error(
                    "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' \
                     must be specified.",
                ));
            }
            (parsed.keys, parsed.ids) = rest.split_at(rest.len() / 2);
            found_streams = true;
            break;
        } else if grouped && is(arg, "GROUP") && more >= 2 {
            parsed.group = Some((text(&args[at + 1])?, text(&args[at + 2])?));
            at += 2;
        } else if grouped && is(arg, "NOACK") {
            parsed.no_ack = true;
        } else {
            return Err(syntax_error());
        }
        at += 1;
    }
    if !found_streams {
        return Err(syntax_error());
    }
    if grouped && parsed.group.is_none() {
        return Err(Reply::error("ERR Missing GROUP option for XREADGROUP"));
    }
    Ok(parsed)
}

/// The reply to XREAD and XREADGROUP: a map from stream to entries, or a
/// null array when nothing was read.
fn read_reply(read: Vec<(String, Vec<Reply>)>) -> Reply {
    if read.is_empty() {
        return Reply::NullArray;
    }
    Reply::Pairs(
        read.into_iter()
            .map(|(stream, entries)| (Reply::text(stream), Reply::Array(entries)))
            .collect(),
    )
}

pub(super) async fn xread<S: LogStore>(
    streams: &Embedded<S>,
    args: &Args,
    may_block: bool,
) -> CommandResult {
    let parsed = read_args(args, false)?;
    let mut from = Vec::with_capacity(parsed.keys.len());
    for (key, id) in parsed.keys.iter().zip(parsed.ids) {
        let start = match &id[..] {
            b"$" => ReadFrom::End,
            b">" => {
                return Err(Reply::error(
                    "ERR The > ID can be specified only when calling XREADGROUP using the GROUP \
                     <group> <consumer> option.",
                ));
            }
            _ => ReadFrom::After(id_or_partial(id, 0)?),
        };
        from.push((text(key)?, start));
    }
    let block = parsed.block.filter(|_| may_block);
    let read = streams.read(&from, parsed.count, block).await?;
    Ok(read_reply(
        read.into_iter()
            .map(|(stream, entries)| (stream, entries.into_iter().map(entry_reply).collect()))
            .collect(),
    ))
}

pub(super) async fn xreadgroup<S: LogStore>(
    streams: &Embedded<S>,
    args: &Args,
    may_block: bool,
) -> CommandResult {
    let parsed = read_args(args, true)?;
    let (group, consumer) = parsed.group.expect("read_args demands GROUP");
    let mut from = Vec::with_capacity(parsed.keys.len());
    for (key, id) in parsed.keys.iter().zip(parsed.ids) {
        let start = match &id[..] {
            b">" => GroupRead::New,
            b"$" => {
                return Err(Reply::error(
                    "ERR The $ ID is meaningless in the context of XREADGROUP: you want to read \
                     the history of this consumer by specifying a proper ID, or use the > ID to \
                     get new messages. The $ ID would just return an empty result set.",
                ));
            }
            _ => GroupRead::Pending(id_or_partial(id, 0)?),
        };
        from.push((text(key)?, start));
    }
    let options = ReadGroupOptions {
        count: parsed.count,
        block: parsed.block.filter(|_| may_block),
        no_ack: parsed.no_ack,
        ..ReadGroupOptions::default()
    };
    let read = streams.read_group(group, consumer, &from, options).await?;
    Ok(read_reply(
        read.into_iter()
            .map(|(stream, entries)| {
                let entries = entries.into_iter().map(group_entry_reply).collect();
                (stream, entries)
            })
            .collect(),
    ))
}

pub(super) async fn xack<S: LogStore>(streams: &Embedded<S>, args: &Args) -> CommandResult {
    let ids = args[3..]
        .iter()
        .map(|arg| strict_id(arg))
        .collect::<Result<Vec<_>, _>>()?;
    let acked = streams.ack(text(&args[1])?, text(&args[2])?, &ids).await?;
    Ok(Reply::Int(acked as i64))
}

pub(super) async fn xpending<S: LogStore>(streams: &Embedded<S>, args: &Args) -> CommandResult {
    let (stream, group) = (text(&args[1])?, text(&args[2])?);
    if args.len() == 3 {
        let summary = streams.pending_summary(stream, group).await?;
        if summary.count == 0 {
            return Ok(Reply::Array(vec![
                Reply::Int(0),
                Reply::Null,
                Reply::Null,
                Reply::NullArray,
            ]));
        }
        let consumers = summary
            .consumers
            .into_iter()
            .map(|(name, n)| Reply::Array(vec![Reply::text(name), Reply::text(n.to_string())]))
            .collect();
        return Ok(Reply::Array(vec![
            Reply::Int(summary.count as i64),
            summary.min.map_or(Reply::Null, id_reply),
            summary.max.map_or(Reply::Null, id_reply),
            Reply::Array(consumers),
        ]));
    }
    if args.len() < 6 || args.len() > 9 {
        return Err(syntax_error());
    }
    let mut at = 3;
    let mut min_idle = None;
    if is(&args[3], "IDLE") {
        min_idle = Some(Duration::from_millis(integer(&args[4])?.max(0) as u64));
        if args.len() < 8 {
            return Err(syntax_error());
        }
        at += 2;
    }
    let count = count(&args[at + 2])?;
    let start = bound(&args[at], true)?;
    let end = bound(&args[at + 1], false)?;
    let consumer = args.get(at + 3).map(|c| text(c)).transpose()?;
    let query = PendingQuery {
        start,
        end,
        count,
        consumer: consumer.map(str::to_string),
        min_idle,
    };
    let pending = streams.pending(stream, group, &query).await?;
    Ok(Reply::Array(
        pending
            .into_iter()
            .map(|entry| {
                Reply::Array(vec![
                    id_reply(entry.id),
                    Reply::text(entry.consumer),
                    Reply::Int(entry.idle.as_millis() as i64),
                    Reply::Int(entry.deliveries as i64),
                ])
            })
            .collect(),
    ))
}

pub(super) async fn xclaim<S: LogStore>(streams: &Embedded<S>, args: &Args) -> CommandResult {
    let min_idle = super::integer_or(&args[4], "ERR Invalid min-idle-time argument for XCLAIM")?;
    let mut at = 5;
    let mut ids = Vec::new();
    while let Some(id) = args.get(at).and_then(|arg| strict_id(arg).ok()) {
        ids.push(id);
        at += 1;
    }
    let mut options = ClaimOptions::default();
    while at < args.len() {
        let more = args.len() - 1 - at;
        let arg = &args[at];
        let value = |message: &str| super::integer_or(&args[at + 1], message);
        if is(arg, "FORCE") {
            options.force = true;
        } else if is(arg, "JUSTID") {
            options.just_id = true;
        } else if is(arg, "IDLE") && more >= 1 {
            let ms = value("ERR Invalid IDLE option argument for XCLAIM")?;
            options.idle = Some(Duration::from_millis(ms.max(0) as u64));
            at += 1;
        } else if is(arg, "TIME") && more >= 1 {
            let ms = value("ERR Invalid TIME option argument for XCLAIM")?;
            options.time_ms = Some(ms.max(0) as u64);
            at += 1;
        } else if is(arg, "RETRYCOUNT") && more >= 1 {
            let n = value("ERR Invalid RETRYCOUNT option argument for XCLAIM")?;
            options.retry_count = Some(n.max(0) as u64);
            at += 1;
        } else if is(arg, "LASTID") && more >= 1 {
            options.last_id = Some(strict_id(&args[at + 1])?);
            at += 1;
        } else {
            return Err(Reply::error(format!(
                "ERR Unrecognized XCLAIM option '{}'",
                String::from_utf8_lossy(arg)
            )));
        }
        at += 1;
    }
    let claimed = streams
        .claim(
            text(&args[1])?,
            text(&args[2])?,
            text(&args[3])?,
            Duration::from_millis(min_idle.max(0) as u64),
            &ids,
            options,
        )
        .await?;
    Ok(if options.just_id {
        ids_reply(claimed.into_iter().map(|entry| entry.id))
    } else {
        entries_reply(claimed)
    })
}

pub(super) async fn xautoclaim<S: LogStore>(streams: &Embedded<S>, args: &Args) -> CommandResult {
    let min_idle = super::integer_or(
        &args[4],
        "ERR Invalid min-idle-time argument for XAUTOCLAIM",
    )?;
    let start = match bound(&args[5], true)? {
        Bound::Min => StreamId::MIN,
        Bound::Max => StreamId::MAX,
        Bound::Included(id) => id,
        Bound::Excluded(id) => id.next().expect("bound refuses an exclusive MAX"),
    };
    let mut options = AutoClaim {
        min_idle: Duration::from_millis(min_idle.max(0) as u64),
        start,
        count: 100,
        just_id: false,
    };
    let mut at = 6;
    while at < args.len() {
        let more = args.len() - 1 - at;
        if is(&args[at], "COUNT") && more >= 1 {
            let n = super::integer_or(&args[at + 1], "ERR COUNT must be > 0")?;
            if !(1..=i64::MAX / 10).contains(&n) {
                return Err(Reply::error("ERR COUNT must be > 0"));
            }
            options.count = n as usize;
            at += 1;
        } else if is(&args[at], "JUSTID") {
            options.just_id = true;
        } else {
            return Err(syntax_error());
        }
        at += 1;
    }
    let claimed = streams
        .auto_claim(text(&args[1])?, text(&args[2])?, text(&args[3])?, options)
        .await?;
    let entries = if options.just_id {
        ids_reply(claimed.claimed.into_iter().map(|entry| entry.id))
    } else {
        entries_reply(claimed.claimed)
    };
    Ok(Reply::Array(vec![
        id_reply(claimed.next),
        entries,
        ids_reply(claimed.deleted),
    ]))
}

pub(super) async fn xsetid<S: LogStore>(streams: &Embedded<S>, args: &Args) -> CommandResult {
    let last_id = strict_id(&args[2])?;
    let mut entries_added = None;
    let mut max_deleted = None;
    let mut at = 3;
    while at < args.len() {
        let more = args.len() - 1 - at;
        if is(&args[at], "ENTRIESADDED") && more >= 1 {
            let n = integer(&args[at + 1])?;
            if n < 0 {
                return Err(Reply::error("ERR entries_added must be positive"));
            }
            entries_added = Some(n as u64);
            at += 2;
        } else if is(&args[at], "MAXDELETEDID") && more >= 1 {
            let id = strict_id(&args[at + 1])?;
            if last_id < id {
                return Err(Reply::error(
                    "ERR The ID specified in XSETID is smaller than the provided max_deleted_entry_id",
                ));
            }
            max_deleted = Some(id);
            at += 2;
        } else {
            return Err(syntax_error());
        }
    }
    streams
        .set_last_id(text(&args[1])?, last_id, entries_added, max_deleted)
        .await?;
    Ok(Reply::OK)
}

/// Where XGROUP CREATE and SETID put the cursor, and their ENTRIESREAD
/// option, which is checked but not needed: the engine counts entries read
/// exactly.
fn group_start(args: &Args) -> Result<GroupStart, Reply> {
    let start = match &args[4][..] {
        b"$" => GroupStart::End,
        id => GroupStart::After(id_or_partial(id, 0)?),
    };
    Ok(start)
}

fn entries_read_option(args: &Args, at: usize) -> Result<(), Reply> {
    let n = integer(&args[at + 1])?;
    if n < 0 && n != -1 {
        return Err(Reply::error(
            "ERR value for ENTRIESREAD must be positive or -1",
        ));
    }
    Ok(())
}

pub(super) async fn xgroup<S: LogStore>(
    streams: &Embedded<S>,
    sub: &str,
    args: &Args,
) -> CommandResult {
    let (stream, group) = (text(&args[2])?, text(&args[3])?);
    match sub {
        "create" => {
            let start = group_start(args)?;
            let mut mkstream = false;
            let mut at = 5;
            while at < args.len() {
                if is(&args[at], "MKSTREAM") {
                    mkstream = true;
                    at += 1;
                } else if is(&args[at], "ENTRIESREAD") && at + 1 < args.len() {
                    entries_read_option(args, at)?;
                    at += 2;
                } else {
                    return Err(bad_subcommand_arguments(&args[1]));
                }
            }
            streams.create_group(stream, group, start, mkstream).await?;
            Ok(Reply::OK)
        }
        "setid" => {
            let start = group_start(args)?;
            match args.len() {
                5 => {}
                7 if is(&args[5], "ENTRIESREAD") => entries_read_option(args, 5)?,
                _ => return Err(bad_subcommand_arguments(&args[1])),
            }
            streams.set_group_id(stream, group, start).await?;
            Ok(Reply::OK)
        }
        "destroy" => Ok(Reply::Int(
            streams.destroy_group(stream, group).await? as i64,
        )),
        "createconsumer" => {
            let created = streams
                .create_consumer(stream, group, text(&args[4])?)
                .await?;
            Ok(Reply::Int(created as i64))
        }
        "delconsumer" => {
            let pending = streams
                .delete_consumer(stream, group, text(&args[4])?)
                .await?;
            Ok(Reply::Int(pending as i64))
        }
        _ => unreachable!("the command table lists XGROUP's subcommands"),
    }
}

/// Redis's error for options an XGROUP subcommand does not take.
fn bad_subcommand_arguments(sub: &[u8]) -> Reply {
    Reply::error(format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try XGROUP HELP.",
        String::from_utf8_lossy(sub)
    ))
}

fn group_info_reply(group: GroupInfo) -> Reply {
    Reply::fields([
        ("name", Reply::text(group.name)),
        ("consumers", Reply::Int(group.consumers as i64)),
        ("pending", Reply::Int(group.pending as i64)),
        ("last-delivered-id", id_reply(group.last_delivered_id)),
        ("entries-read", count_or_null(group.entries_read)),
        ("lag", count_or_null(group.lag)),
    ])
}

/// A count Redis may not know (nil then).
fn count_or_null(count: Option<u64>) -> Reply {
    count.map_or(Reply::Null, |n| Reply::Int(n as i64))
}

fn consumer_info_reply(consumer: ConsumerInfo) -> Reply {
    let inactive = consumer
        .inactive
        .map_or(-1, |inactive| inactive.as_millis() as i64);
    Reply::fields([
        ("name", Reply::text(consumer.name)),
        ("pending", Reply::Int(consumer.pending as i64)),
        ("idle", Reply::Int(consumer.idle.as_millis() as i64)),
        ("inactive", Reply::Int(inactive)),
    ])
}

pub(super) async fn xinfo<S: LogStore>(
    streams: &Embedded<S>,
    sub: &str,
    args: &Args,
) -> CommandResult {
    let stream = text(&args[2])?;
    match sub {
        "stream" => {
            match args.len() {
                3 => {}
                _ if is(&args[3], "FULL") => return xinfo_full(streams, stream, args).await,
                _ => return Err(syntax_error()),
            }
            let info = streams.info(stream).await?;
            let groups = info.groups;
            let (first, last) = (info.first_entry.clone(), info.last_entry.clone());
            let mut fields = stream_fields(info);
            fields.extend([
                ("groups", Reply::Int(groups as i64)),
                ("first-entry", first.map_or(Reply::Null, entry_reply)),
                ("last-entry", last.map_or(Reply::Null, entry_reply)),
            ]);
            Ok(Reply::fields(fields))
        }
        "groups" => {
            let groups = streams.groups(stream).await?;
            Ok(Reply::Array(
                groups.into_iter().map(group_info_reply).collect(),
            ))
        }
        "consumers" => {
            let consumers = streams.consumers(stream, text(&args[3])?).await?;
            Ok(Reply::Array(
                consumers.into_iter().map(consumer_info_reply).collect(),
            ))
        }
        _ => unreachable!("the command table lists XINFO's subcommands"),
    }
}

/// XINFO STREAM key FULL [COUNT n]: the stream with its entries (10 by
/// default, all with COUNT 0) and every group with its pending entries
/// and consumers.
async fn xinfo_full<S: LogStore>(
    streams: &Embedded<S>,
    stream: &str,
    args: &Args,
) -> CommandResult {
    let mut limit = Some(10);
    match args.len() {
        4 => {}
        6 if is(&args[4], "COUNT") => {
            limit = Some(count(&args[5])?).filter(|&n| n > 0);
        }
        _ => return Err(syntax_error()),
    }
    let info = streams.info(stream).await?;
    let entries = streams.range(stream, Bound::Min, Bound::Max, limit).await?;
    let now_ms = SystemClock.now_ms() as i64;
    let mut groups = Vec::new();
    for group in streams.groups(stream).await? {
        let pending = streams
            .pending(
                stream,
                &group.name,
                &PendingQuery::first(limit.unwrap_or(usize::MAX)),
            )
            .await?;
        let consumers = streams.consumers(stream, &group.name).await?;
        let delivered_at = |idle: Duration| Reply::Int(now_ms - idle.as_millis() as i64);
        let group_pending = pending
            .iter()
            .map(|entry| {
                Reply::Array(vec![
                    id_reply(entry.id),
                    Reply::text(entry.consumer.clone()),
                    delivered_at(entry.idle),
                    Reply::Int(entry.deliveries as i64),
                ])
            })
            .collect();
        let consumers = consumers
            .into_iter()
            .map(|consumer| {
                let own = pending
                    .iter()
                    .filter(|entry| entry.consumer == consumer.name)
                    .map(|entry| {
                        Reply::Array(vec![
                            id_reply(entry.id),
                            delivered_at(entry.idle),
                            Reply::Int(entry.deliveries as i64),
                        ])
                    })
                    .collect();
                let active = consumer.inactive.map_or(Reply::Int(-1), &delivered_at);
                Reply::fields([
                    ("name", Reply::text(consumer.name)),
                    ("seen-time", delivered_at(consumer.idle)),
                    ("active-time", active),
                    ("pel-count", Reply::Int(consumer.pending as i64)),
                    ("pending", Reply::Array(own)),
                ])
            })
            .collect();
        groups.push(Reply::fields([
            ("name", Reply::text(group.name)),
            ("last-delivered-id", id_reply(group.last_delivered_id)),
            ("entries-read", count_or_null(group.entries_read)),
            ("lag", count_or_null(group.lag)),
            ("pel-count", Reply::Int(group.pending as i64)),
            ("pending", Reply::Array(group_pending)),
            ("consumers", Reply::Array(consumers)),
        ]));
    }
    let mut fields = stream_fields(info);
    fields.extend([
        ("entries", entries_reply(entries)),
        ("groups", Reply::Array(groups)),
    ]);
    Ok(Reply::fields(fields))
}

/// The fields XINFO STREAM starts with, with and without FULL. Redis's
/// radix tree packs up to 100 entries per node; these are its sizes for
/// the same stream, for tools that chart them.
fn stream_fields(info: StreamInfo) -> Vec<(&'static str, Reply)> {
    let nodes = info.length.div_ceil(100) as i64;
    vec![
        ("length", Reply::Int(info.length as i64)),
        ("radix-tree-keys", Reply::Int(nodes)),
        ("radix-tree-nodes", Reply::Int(nodes + 1)),
        ("last-generated-id", id_reply(info.last_generated_id)),
        ("max-deleted-entry-id", id_reply(info.max_deleted_entry_id)),
        ("entries-added", Reply::Int(info.entries_added as i64)),
        (
            "recorded-first-entry-id",
            id_reply(info.recorded_first_entry_id),
        ),
    ]
}
