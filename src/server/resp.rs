//! RESP, the Redis protocol: requests in, replies out.
//!
//! A client sends each command as an array of bulk strings
//! (`*2\r\n$4\r\nXLEN\r\n$4\r\njobs\r\n`) or, typing by hand, as an inline
//! line (`XLEN jobs\r\n`). [`RequestReader`] takes complete arguments off the
//! front of the connection's buffer as they arrive, so a large request costs
//! one pass however many reads it takes, and checks every length against
//! [`Limits`] before buffering what it announces. The errors are the ones
//! Redis sends before it closes the connection.
//!
//! [`Reply`] is what a command answers, written in RESP2 or RESP3 (after
//! `HELLO 3`); the two differ in nulls, maps, sets and verbatim text.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::{Buf, Bytes, BytesMut};

/// How large a request may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest bulk string (Redis's `proto-max-bulk-len`).
    pub max_bulk: usize,
    /// The most arguments in one request.
    pub max_args: usize,
    /// The longest inline request or length line.
    pub max_inline: usize,
}

impl Default for Limits {
    /// Redis's defaults.
    fn default() -> Self {
        Limits {
            max_bulk: 512 << 20,
            max_args: 1 << 20,
            max_inline: 64 << 10,
        }
    }
}

impl Limits {
    /// The limits for a client that has not authenticated yet, as in Redis:
    /// enough for `AUTH` and `HELLO`, too little to make the server buffer
    /// much for a stranger.
    pub fn unauthenticated() -> Self {
        Limits {
            max_bulk: 16 << 10,
            max_args: 10,
            max_inline: 64 << 10,
        }
    }
}

/// A request that breaks the protocol; the connection is closed after the
/// error is sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The argument count is not a number, or too large.
    #[error("ERR Protocol error: invalid multibulk length")]
    MultibulkLength,
    /// A bulk length is not a number, or too large.
    #[error("ERR Protocol error: invalid bulk length")]
    BulkLength,
    /// An argument does not start with `$`.
    #[error("ERR Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// The argument count line is longer than the inline limit.
    #[error("ERR Protocol error: too big mbulk count string")]
    MultibulkLine,
    /// A bulk length line is longer than the inline limit.
    #[error("ERR Protocol error: too big bulk count string")]
    BulkLine,
    /// An inline request is longer than the inline limit.
    #[error("ERR Protocol error: too big inline request")]
    InlineTooBig,
    /// An inline request with an unclosed quote.
    #[error("ERR Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// Reads requests off a connection's buffer. See the [module docs](self).
#[derive(Debug, Default)]
pub struct RequestReader {
    /// The arguments of the request being read.
    args: Vec<Bytes>,
    /// How many arguments of it are still to come (0: between requests).
    args_left: usize,
}

impl RequestReader {
    /// The next complete request at the front of `buf`, consumed; `None` if
    /// more bytes are needed. Empty requests are skipped, as Redis does.
    pub fn next(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            if self.args_left == 0 {
                let Some(&first) = buf.first() else {
                    return Ok(None);
                };
                if first != b'*' {
                    match inline(buf, limits)? {
                        None => return Ok(None),
                        Some(args) if args.is_empty() => continue,
                        Some(args) => return Ok(Some(args)),
                    }
                }
                let Some(count) = line(buf, limits, ProtocolError::MultibulkLine)? else {
                    return Ok(None);
                };
                let count = number(&count[1..]).ok_or(ProtocolError::MultibulkLength)?;
                if count > limits.max_args as i64 {
                    return Err(ProtocolError::MultibulkLength);
                }
                if count <= 0 {
                    continue;
                }
                self.args_left = count as usize;
                self.args = Vec::with_capacity(self.args_left.min(1024));
            }
            while self.args_left > 0 {
                let Some(end) = find_crlf(buf) else {
                    if buf.len() > limits.max_inline {
                        return Err(ProtocolError::BulkLine);
                    }
                    return Ok(None);
                };
                if buf[0] != b'$' {
                    return Err(ProtocolError::ExpectedBulk(buf[0] as char));
                }
                let len = number(&buf[1..end]).ok_or(ProtocolError::BulkLength)?;
                if len < 0 || len > limits.max_bulk as i64 {
                    return Err(ProtocolError::BulkLength);
                }
                let len = len as usize;
                if buf.len() < end + 2 + len + 2 {
                    return Ok(None);
                }
                buf.advance(end + 2);
                self.args.push(buf.split_to(len).freeze());
                buf.advance(2);
                self.args_left -= 1;
            }
            return Ok(Some(std::mem::take(&mut self.args)));
        }
    }
}

/// The position of the first `\r\n` in `buf`.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|pair| pair == b"\r\n")
}

/// Takes a `\r\n`-terminated line off `buf`, without the terminator.
fn line(
    buf: &mut BytesMut,
    limits: &Limits,
    too_long: ProtocolError,
) -> Result<Option<BytesMut>, ProtocolError> {
    match find_crlf(buf) {
        Some(end) => {
            let line = buf.split_to(end);
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > limits.max_inline => Err(too_long),
        None => Ok(None),
    }
}

/// A decimal integer, as Redis's `string2ll` reads it (no `+`, no spaces).
fn number(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    if text.starts_with('+') {
        return None;
    }
    text.parse().ok()
}

/// An inline request: a line split into arguments at spaces, with `"…"`
/// (backslash escapes) and `'…'` quoting as `redis-cli` understands them.
fn inline(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline {
            return Err(ProtocolError::InlineTooBig);
        }
        return Ok(None);
    };
    if end > limits.max_inline {
        return Err(ProtocolError::InlineTooBig);
    }
    let line = buf.split_to(end + 1);
    let text = line.strip_suffix(b"\n").unwrap_or(&line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let args = split_inline(text)?;
    if args.len() > limits.max_args {
        return Err(ProtocolError::MultibulkLength);
    }
    Ok(Some(args))
}

fn split_inline(mut text: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    loop {
        text = text.trim_ascii_start();
        let Some(&first) = text.first() else {
            return Ok(args);
        };
        let arg = match first {
            b'"' | b'\'' => {
                let (arg, rest) = quoted(&text[1..], first)?;
                text = rest;
                arg
            }
            _ => {
                let end = text
                    .iter()
                    .position(u8::is_ascii_whitespace)
                    .unwrap_or(text.len());
                let arg = text[..end].to_vec();
                text = &text[end..];
                arg
            }
        };
        args.push(Bytes::from(arg));
    }
}

/// A quoted argument after its opening `quote`, and what follows it. In
/// double quotes backslash escapes work (`\n`, `\x41`, …); in single
/// quotes only `\'`.
fn quoted(mut rest: &[u8], quote: u8) -> Result<(Vec<u8>, &[u8]), ProtocolError> {
    let escapes = quote == b'"';
    let mut arg = Vec::new();
    loop {
        match rest {
            [b'\\', b'x', hi, lo, tail @ ..]
                if escapes && hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() =>
            {
                let hex = [*hi, *lo];
                let hex = std::str::from_utf8(&hex).expect("hex digits are ASCII");
                arg.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                rest = tail;
            }
            [b'\\', escaped, tail @ ..] if escapes => {
                arg.push(match escaped {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 8,
                    b'a' => 7,
                    other => *other,
                });
                rest = tail;
            }
            [b'\\', b'\'', tail @ ..] => {
                arg.push(b'\'');
                rest = tail;
            }
            [byte, tail @ ..] if *byte == quote => return Ok((arg, closed(tail)?)),
            [byte, tail @ ..] => {
                arg.push(*byte);
                rest = tail;
            }
            [] => return Err(ProtocolError::UnbalancedQuotes),
        }
    }
}

/// After a closing quote there must be a space or the end of the line.
fn closed(rest: &[u8]) -> Result<&[u8], ProtocolError> {
    match rest.first() {
        Some(byte) if !byte.is_ascii_whitespace() => Err(ProtocolError::UnbalancedQuotes),
        _ => Ok(rest),
    }
}

/// A reply, written in either protocol version.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Status(Cow<'static, str>),
    /// `-ERR …`: the message starts with its error code.
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$5\r\nhello`.
    Bulk(Bytes),
    /// A missing value: `$-1` in RESP2.
    Null,
    /// A missing array: `*-1` in RESP2 (XREAD's timeout).
    NullArray,
    /// `*n`.
    Array(Vec<Reply>),
    /// A map in RESP3, a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A map in RESP3, an array of key-value arrays in RESP2 (XREAD).
    Pairs(Vec<(Reply, Reply)>),
    /// A set in RESP3, an array in RESP2.
    Set(Vec<Reply>),
    /// Text in RESP3 verbatim form (`=…txt:`), a bulk string in RESP2.
    Verbatim(String),
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Status(Cow::Borrowed("OK"));

    /// A status line.
    pub fn status(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply::Status(text.into())
    }

    /// A bulk string of text.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(text.into()))
    }

    /// A map with text keys, the shape of most informational replies.
    pub fn fields(fields: impl IntoIterator<Item = (&'static str, Reply)>) -> Reply {
        Reply::Map(
            fields
                .into_iter()
                .map(|(key, value)| (Reply::Bulk(Bytes::from_static(key.as_bytes())), value))
                .collect(),
        )
    }

    /// An error reply from its message (which starts with the error code).
    pub fn error(message: impl std::fmt::Display) -> Reply {
        Reply::Error(message.to_string())
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the reply to `out`, in RESP3 if `resp3`, else in RESP2.
    pub fn encode(&self, resp3: bool, out: &mut BytesMut) {
        match self {
            Reply::Status(text) => {
                out.extend_from_slice(b"+");
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(message) => {
                // A line break would end the error early and desynchronise the client.
                out.extend_from_slice(b"-");
                for byte in message.bytes() {
                    out.extend_from_slice(&[if byte == b'\r' || byte == b'\n' {
                        b' '
                    } else {
                        byte
                    }]);
                }
                out.extend_from_slice(b"\r\n");
            }
            Reply::Int(n) => header(out, b':', *n as i128),
            Reply::Bulk(bytes) => {
                header(out, b'$', bytes.len() as i128);
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                header(out, b'*', items.len() as i128);
                items.iter().for_each(|item| item.encode(resp3, out));
            }
            Reply::Set(items) => {
                header(out, if resp3 { b'~' } else { b'*' }, items.len() as i128);
                items.iter().for_each(|item| item.encode(resp3, out));
            }
            Reply::Map(pairs) => {
                if resp3 {
                    header(out, b'%', pairs.len() as i128);
                } else {
                    header(out, b'*', 2 * pairs.len() as i128);
                }
                for (key, value) in pairs {
                    key.encode(resp3, out);
                    value.encode(resp3, out);
                }
            }
            Reply::Pairs(pairs) if resp3 => {
                header(out, b'%', pairs.len() as i128);
                for (key, value) in pairs {
                    key.encode(resp3, out);
                    value.encode(resp3, out);
                }
            }
            Reply::Pairs(pairs) => {
                header(out, b'*', pairs.len() as i128);
                for (key, value) in pairs {
                    header(out, b'*', 2);
                    key.encode(resp3, out);
                    value.encode(resp3, out);
                }
            }
            Reply::Verbatim(text) if resp3 => {
                header(out, b'=', text.len() as i128 + 4);
                out.extend_from_slice(b"txt:");
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Verbatim(text) => Reply::text(text.clone()).encode(resp3, out),
        }
    }
}

fn header(out: &mut BytesMut, kind: u8, n: i128) {
    out.extend_from_slice(&[kind]);
    let _ = write!(out, "{n}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(input: &[u8], limits: &Limits) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut reader = RequestReader::default();
        let mut buf = BytesMut::from(input);
        let mut requests = Vec::new();
        while let Some(request) = reader.next(&mut buf, limits)? {
            requests.push(request);
        }
        Ok(requests)
    }

    fn encode_request(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn reads_pipelined_and_inline_requests() {
        let input =
            b"*2\r\n$4\r\nXLEN\r\n$4\r\njobs\r\nPING\r\n\r\n*0\r\nECHO \"a b\\x41\" 'c\\'d'\n";
        let requests = read_all(input, &Limits::default()).unwrap();
        let expected: Vec<Vec<&[u8]>> = vec![
            vec![b"XLEN", b"jobs"],
            vec![b"PING"],
            vec![b"ECHO", b"a bA", b"c'd"],
        ];
        assert_eq!(requests, expected);
    }

    #[test]
    fn bad_frames_get_the_errors_redis_sends() {
        let limits = Limits::default();
        let cases: [(&[u8], ProtocolError); 7] = [
            (b"*x\r\n", ProtocolError::MultibulkLength),
            (b"*2\r\n$-3\r\n", ProtocolError::BulkLength),
            (b"*1\r\n$999999999999\r\n", ProtocolError::BulkLength),
            (b"*1\r\n:4\r\n", ProtocolError::ExpectedBulk(':')),
            (b"*9999999999\r\n", ProtocolError::MultibulkLength),
            (b"ECHO \"open\n", ProtocolError::UnbalancedQuotes),
            (b"ECHO \"a\"b\n", ProtocolError::UnbalancedQuotes),
        ];
        for (input, error) in cases {
            assert_eq!(read_all(input, &limits), Err(error), "{input:?}");
        }
        let tiny = Limits {
            max_inline: 8,
            ..limits
        };
        assert_eq!(
            read_all(b"PING PING PING", &tiny),
            Err(ProtocolError::InlineTooBig)
        );
        assert_eq!(
            read_all(b"*1\r\n$100000000000", &tiny),
            Err(ProtocolError::BulkLine)
        );
        let strict = Limits::unauthenticated();
        assert_eq!(
            read_all(b"*11\r\n", &strict),
            Err(ProtocolError::MultibulkLength)
        );
        assert_eq!(
            read_all(b"*1\r\n$20000\r\n", &strict),
            Err(ProtocolError::BulkLength)
        );
    }

    #[test]
    fn replies_take_the_shape_of_each_protocol() {
        let reply = Reply::Array(vec![
            Reply::fields([("a", Reply::Int(1)), ("b", Reply::Null)]),
            Reply::NullArray,
            Reply::Set(vec![Reply::OK]),
            Reply::Verbatim("x".into()),
            Reply::error("ERR bad\r\nline"),
        ]);
        let mut resp2 = BytesMut::new();
        reply.encode(false, &mut resp2);
        assert_eq!(
            &resp2[..],
            b"*5\r\n*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n$-1\r\n*-1\r\n*1\r\n+OK\r\n$1\r\nx\r\n-ERR bad  line\r\n"
        );
        let mut resp3 = BytesMut::new();
        reply.encode(true, &mut resp3);
        assert_eq!(
            &resp3[..],
            b"*5\r\n%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n_\r\n_\r\n~1\r\n+OK\r\n=5\r\ntxt:x\r\n-ERR bad  line\r\n"
        );
    }

    proptest! {
        /// Any requests, cut into any pieces, read back as they were sent.
        #[test]
        fn requests_survive_any_split(
            requests in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6),
                1..5,
            ),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let input: Vec<u8> = requests.iter().flat_map(|r| encode_request(r)).collect();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            cuts.push(input.len());
            cuts.sort_unstable();
            let mut reader = RequestReader::default();
            let mut buf = BytesMut::new();
            let mut read = Vec::new();
            let mut from = 0;
            for cut in cuts {
                buf.extend_from_slice(&input[from..cut]);
                from = cut;
                while let Some(request) = reader.next(&mut buf, &Limits::default()).unwrap() {
                    read.push(request.into_iter().map(|a| a.to_vec()).collect::<Vec<_>>());
                }
            }
            prop_assert_eq!(read, requests);
            prop_assert!(buf.is_empty());
        }

        /// Arbitrary bytes give requests or a protocol error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = read_all(&input, &Limits::unauthenticated());
        }
    }
}
