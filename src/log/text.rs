//! The text log: one record per line of a plain text file.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::commit::{Committer, SyncTarget};
use super::storage::{EntryKind, LockGuard, OpenMode, SharedFile, Storage, StorageFile};
use super::synced::{self, Mark, SyncedMark};
use super::{
    CorruptKind, Damage, Log, LogError, LogOptions, Offset, VerifyReport, check_record_sizes,
    context, is_interrupted_write, read_bounds,
};

const HEADER_PREFIX: &str = "# orcastra text log v1 start ";

/// A [`Log`] kept in a text file, one record per line.
///
/// It exists to show how little a [`Log`] needs, and it is handy for
/// debugging: the file reads fine with `cat`, `less` and `tail -f`.
///
/// ```text
/// # orcastra text log v1 start 0
/// 0<TAB>hello<TAB>e2327a7f
/// 1<TAB>tab:\t backslash:\\ byte:\x00<TAB>a506e44d
/// ```
///
/// After the header line, each line is the record's offset, a tab, the
/// payload, a tab, and the CRC-32 (8 hex digits) of everything before that
/// second tab. In the payload `\`, tab, newline, carriage return, other
/// control bytes and bytes that are not UTF-8 are escaped (`\\ \t \n \r \xNN`);
/// all other text is kept as it is. A line without its newline or with a
/// wrong CRC is damaged; recovery treats damage past the synced mark
/// as a torn tail and cuts it, and refuses to open otherwise.
///
/// Next to `log.txt` live `log.txt.lock` (ownership) and `log.txt.synced`
/// (the synced mark). Retention rewrites the file without the dropped lines.
///
/// ```
/// use orcastra::log::{Log, LogOptions, Offset, TextLog};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("queue.txt");
/// let log = TextLog::open(&path, LogOptions::default())?;
/// log.append(&["hello"]).await?;
/// assert!(std::fs::read_to_string(&path)?.contains("0\thello\t"));
/// # Ok(())
/// # }
/// ```
pub struct TextLog {
    inner: Arc<Inner>,
    commit: Committer,
}

struct Inner {
    path: PathBuf,
    storage: Arc<dyn Storage>,
    max_record_bytes: usize,
    synced: SyncedMark,
    state: RwLock<State>,
    /// Serializes appends and rewrites; holds the line buffer.
    writer: Mutex<Vec<u8>>,
    _lock: LockGuard,
}

struct State {
    file: SharedFile,
    /// The offset of the first line.
    start: u64,
    /// Where each record's line starts.
    lines: Vec<u64>,
    /// Where the last line ends.
    len: u64,
}

impl TextLog {
    /// Opens the text log at `path` (a file), creating it if needed, and
    /// recovers it after a crash. Only `fsync`, `max_record_bytes` and
    /// `storage` of the options apply.
    pub fn open(path: impl AsRef<Path>, options: LogOptions) -> Result<Self, LogError> {
        options.validate()?;
        let path = path.as_ref().to_path_buf();
        let storage = Arc::clone(&options.storage);
        let parent = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        match storage
            .kind(&path)
            .map_err(LogError::io("inspect", &path))?
        {
            Some(EntryKind::Dir) => {
                return Err(LogError::WrongKind {
                    path,
                    expected: "file",
                    found: "directory",
                });
            }
            Some(EntryKind::File) => {}
            None => storage
                .create_dir_all(&parent)
                .map_err(LogError::io("create the directory", &parent))?,
        }
        let lock = storage
            .lock(&sibling(&path, "lock"))
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock => LogError::Locked { path: path.clone() },
                _ => LogError::io("lock", sibling(&path, "lock"))(e),
            })?;
        let (synced, mark) = SyncedMark::open(&*storage, &sibling(&path, "synced"))?;
        let file = storage
            .open(&path, OpenMode::Create)
            .map_err(LogError::io("open", &path))?;
        let state = recover(&path, file, mark)?;
        synced
            .store(Mark {
                key: state.start,
                position: state.len,
            })
            .map_err(LogError::io("write", sibling(&path, "synced")))?;
        storage
            .sync_dir(&parent)
            .map_err(LogError::io("fsync the directory", &parent))?;

        let end = state.start + state.lines.len() as u64;
        let inner = Arc::new(Inner {
            path,
            storage,
            max_record_bytes: options.max_record_bytes,
            synced,
            state: RwLock::new(state),
            writer: Mutex::new(Vec::new()),
            _lock: lock,
        });
        let commit = Committer::start(options.fsync, end, inner.clone())
            .map_err(LogError::io("start the fsync thread for", &inner.path))?;
        Ok(TextLog { inner, commit })
    }

    /// Checks every line of the text log at `path` without changing anything.
    pub fn verify(path: impl AsRef<Path>, storage: &dyn Storage) -> Result<VerifyReport, LogError> {
        let path = path.as_ref();
        let file = storage
            .open(path, OpenMode::Read)
            .map_err(LogError::io("open", path))?;
        let mark = synced::peek(storage, &sibling(path, "synced"))?;
        let scan = scan_file(path, &*file)?;
        let mut report = VerifyReport {
            files: 1,
            records: scan.lines.len() as u64,
            offsets: scan.start..scan.start + scan.lines.len() as u64,
            ..VerifyReport::default()
        };
        if let Some(kind) = scan.error.clone() {
            let damage = Damage {
                file: path.to_path_buf(),
                position: scan.valid_end,
                kind,
            };
            if scan.is_torn(mark) {
                report.torn_tail = Some(damage);
            } else {
                report.damage.push(damage);
            }
        }
        Ok(report)
    }

    fn fail(&self, cause: io::Error) -> LogError {
        LogError::Poisoned {
            cause: self.commit.poison(cause),
        }
    }
}

fn sibling(path: &Path, extension: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

fn header(start: u64) -> String {
    format!("{HEADER_PREFIX}{start}\n")
}

/// The outcome of reading a text log from its start.
struct Scan {
    start: u64,
    lines: Vec<u64>,
    /// Where the last valid line ends.
    valid_end: u64,
    /// The file's length.
    len: u64,
    /// What is wrong at `valid_end`, if the file goes on past it.
    error: Option<CorruptKind>,
    /// Whether the file held only a part of a header: a crash while creating it.
    interrupted_creation: bool,
}

impl Scan {
    /// How far the file is known to be durable.
    fn synced_to(&self, mark: Option<Mark>) -> u64 {
        match mark {
            Some(mark) if mark.key == self.start => mark.position,
            _ => 0,
        }
    }

    /// Whether the damage lies past the synced part, where a crash may tear writes.
    fn is_torn(&self, mark: Option<Mark>) -> bool {
        self.valid_end >= self.synced_to(mark)
    }
}

fn scan_file(path: &Path, file: &dyn StorageFile) -> Result<Scan, LogError> {
    let len = file.size().map_err(LogError::io("read", path))?;
    let mut reader = BufReader::new(FileReader { file, pos: 0 });
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .map_err(LogError::io("read", path))?;
    if line.len() as u64 == len && is_interrupted_write(&line, header(0).as_bytes()) {
        return Ok(Scan {
            start: 0,
            lines: Vec::new(),
            valid_end: 0,
            len,
            error: None,
            interrupted_creation: true,
        });
    }
    let start = std::str::from_utf8(&line)
        .ok()
        .and_then(|l| {
            l.strip_prefix(HEADER_PREFIX)?
                .strip_suffix('\n')?
                .parse()
                .ok()
        })
        .ok_or_else(|| LogError::NotALogFile {
            path: path.to_path_buf(),
            reason: "its first line is not an Orcastra text log header".into(),
        })?;
    let mut scan = Scan {
        start,
        lines: Vec::new(),
        valid_end: line.len() as u64,
        len,
        error: None,
        interrupted_creation: false,
    };
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(LogError::io("read", path))?;
        if read == 0 {
            return Ok(scan);
        }
        let offset = start + scan.lines.len() as u64;
        if let Err(kind) = parse_line(&line, offset) {
            scan.error = Some(kind);
            return Ok(scan);
        }
        scan.lines.push(scan.valid_end);
        scan.valid_end += read as u64;
    }
}

/// Reads the whole file, cuts a torn tail and refuses damage in synced data.
fn recover(path: &Path, file: SharedFile, mark: Option<Mark>) -> Result<State, LogError> {
    let io_err = |action| LogError::io(action, path);
    let mut scan = scan_file(path, &*file)?;
    if scan.interrupted_creation {
        let header = header(0);
        file.set_len(0)
            .and_then(|()| file.write_all_at(header.as_bytes(), 0))
            .map_err(io_err("write"))?;
        scan.valid_end = header.len() as u64;
        scan.len = scan.valid_end;
    }
    if let Some(kind) = scan.error.clone() {
        if !scan.is_torn(mark) {
            return Err(LogError::Corrupt {
                file: path.to_path_buf(),
                position: scan.valid_end,
                kind,
            });
        }
        tracing::warn!(
            file = %path.display(),
            position = scan.valid_end,
            bytes = scan.len - scan.valid_end,
            reason = %kind,
            "cutting off a torn tail left by a crash"
        );
        file.set_len(scan.valid_end).map_err(io_err("truncate"))?;
    } else if scan.synced_to(mark) > scan.valid_end {
        return Err(LogError::Corrupt {
            file: path.to_path_buf(),
            position: scan.valid_end,
            kind: CorruptKind::SyncedDataLost {
                synced: scan.synced_to(mark),
                valid_end: scan.valid_end,
            },
        });
    }
    // Pages a failed fsync left in the page cache may never reach the disk
    // (see the segment log's recovery): write the unsynced part again.
    let synced_to = scan.synced_to(mark).min(scan.valid_end);
    let mut unsynced = vec![0; (scan.valid_end - synced_to) as usize];
    file.read_exact_at(&mut unsynced, synced_to)
        .and_then(|()| file.write_all_at(&unsynced, synced_to))
        .map_err(io_err("rewrite"))?;
    file.sync_data().map_err(io_err("fsync"))?;
    Ok(State {
        file,
        start: scan.start,
        lines: scan.lines,
        len: scan.valid_end,
    })
}

/// An `io::Read` over a storage file, for buffered line reading.
struct FileReader<'a> {
    file: &'a dyn StorageFile,
    pos: u64,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Appends the line of the record at `offset` to `out`.
fn push_line(out: &mut Vec<u8>, offset: u64, payload: &[u8]) {
    let start = out.len();
    let mut text = format!("{offset}\t");
    for chunk in payload.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '\t' => text.push_str("\\t"),
                '\n' => text.push_str("\\n"),
                '\r' => text.push_str("\\r"),
                c if c.is_control() => {
                    for byte in c.encode_utf8(&mut [0; 4]).bytes() {
                        let _ = write!(text, "\\x{byte:02x}");
                    }
                }
                c => text.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(text, "\\x{byte:02x}");
        }
    }
    out.extend_from_slice(text.as_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(format!("\t{crc:08x}\n").as_bytes());
}

/// Checks one line (with its newline) and returns the payload it holds.
fn parse_line(line: &[u8], offset: u64) -> Result<Vec<u8>, CorruptKind> {
    let line = line.strip_suffix(b"\n").ok_or(CorruptKind::Truncated)?;
    let bad = |why: &str| CorruptKind::BadLine(why.to_string());
    let split = line
        .iter()
        .rposition(|&b| b == b'\t')
        .ok_or_else(|| bad("no checksum"))?;
    let (body, crc) = (&line[..split], &line[split + 1..]);
    let crc = std::str::from_utf8(crc)
        .ok()
        .filter(|hex| hex.len() == 8 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| bad("malformed checksum"))?;
    if crc != crc32fast::hash(body) {
        return Err(CorruptKind::ChecksumMismatch);
    }
    let tab = body
        .iter()
        .position(|&b| b == b'\t')
        .ok_or_else(|| bad("no offset"))?;
    let found: u64 = std::str::from_utf8(&body[..tab])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("malformed offset"))?;
    if found != offset {
        return Err(CorruptKind::WrongOffset {
            expected: offset,
            found,
        });
    }
    unescape(&body[tab + 1..]).ok_or_else(|| bad("malformed escape"))
}

fn unescape(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next()? {
            b'\\' => b'\\',
            b't' => b'\t',
            b'n' => b'\n',
            b'r' => b'\r',
            b'x' => {
                let hex = [*bytes.next()?, *bytes.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            _ => return None,
        });
    }
    Some(out)
}

impl Log for TextLog {
    fn append_nowait<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Range<Offset>, LogError> {
        check_record_sizes(records, self.inner.max_record_bytes)?;
        let mut buf = self.inner.writer.lock();
        self.commit.check()?;
        let (file, first, len) = {
            let state = self.inner.state.read();
            let first = state.start + state.lines.len() as u64;
            (Arc::clone(&state.file), first, state.len)
        };
        buf.clear();
        let mut starts = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            starts.push(len + buf.len() as u64);
            push_line(&mut buf, first + i as u64, record.as_ref());
        }
        file.write_all_at(&buf, len)
            .map_err(context("write to", &self.inner.path))
            .map_err(|e| self.fail(e))?;
        let end = {
            let mut state = self.inner.state.write();
            state.lines.extend(starts);
            state.len += buf.len() as u64;
            state.start + state.lines.len() as u64
        };
        self.commit.written(end);
        Ok(Offset(first)..Offset(end))
    }

    async fn wait_durable(&self, end: Offset) -> Result<(), LogError> {
        self.commit.wait_durable(end.0).await
    }

    async fn sync(&self) -> Result<(), LogError> {
        self.commit.sync().await
    }

    fn show_early(&self, written: Range<Offset>) -> Result<(), LogError> {
        self.commit.check()?;
        self.commit.show_early(written.start.0, written.end.0);
        Ok(())
    }

    fn read(&self, from: Offset, max_records: usize) -> Result<Vec<Bytes>, LogError> {
        let end = Offset(self.commit.visible());
        let (file, start, range) = {
            let state = self.inner.state.read();
            let Some(stop) = read_bounds(from, max_records, Offset(state.start), end)? else {
                return Ok(Vec::new());
            };
            let line_at = |offset: u64| {
                state
                    .lines
                    .get((offset - state.start) as usize)
                    .copied()
                    .unwrap_or(state.len)
            };
            (Arc::clone(&state.file), line_at(from.0), line_at(stop.0))
        };
        let mut text = vec![0; (range - start) as usize];
        file.read_exact_at(&mut text, start)
            .map_err(LogError::io("read", &self.inner.path))?;
        let mut records = Vec::new();
        let mut pos = 0;
        for line in text.split_inclusive(|&b| b == b'\n') {
            let offset = from.0 + records.len() as u64;
            let payload = parse_line(line, offset).map_err(|kind| LogError::Corrupt {
                file: self.inner.path.clone(),
                position: start + pos,
                kind,
            })?;
            records.push(Bytes::from(payload));
            pos += line.len() as u64;
        }
        Ok(records)
    }

    fn start_offset(&self) -> Offset {
        Offset(self.inner.state.read().start)
    }

    fn next_offset(&self) -> Offset {
        Offset(self.commit.visible())
    }

    fn drop_before(&self, offset: Offset) -> Result<(), LogError> {
        let _writer = self.inner.writer.lock();
        // The rewrite copies unsynced lines, which a failed fsync may have lost.
        self.commit.check()?;
        let (file, start, end, keep_from, len) = {
            let state = self.inner.state.read();
            let end = state.start + state.lines.len() as u64;
            let offset = offset.0.min(end);
            if offset <= state.start {
                return Ok(());
            }
            let keep_from = state
                .lines
                .get((offset - state.start) as usize)
                .copied()
                .unwrap_or(state.len);
            (Arc::clone(&state.file), offset, end, keep_from, state.len)
        };
        let path = &self.inner.path;
        let mut contents = header(start).into_bytes();
        let header_len = contents.len() as u64;
        contents.resize(header_len as usize + (len - keep_from) as usize, 0);
        file.read_exact_at(&mut contents[header_len as usize..], keep_from)
            .map_err(LogError::io("read", path))?;
        let new_file = self.inner.rewrite(&contents)?;
        {
            let mut state = self.inner.state.write();
            let dropped = (start - state.start) as usize;
            state.lines.drain(..dropped);
            for line in &mut state.lines {
                *line = *line - keep_from + header_len;
            }
            state.file = new_file;
            state.start = start;
            state.len = contents.len() as u64;
        }
        if let Err(e) = self.inner.synced.store(Mark {
            key: start,
            position: contents.len() as u64,
        }) {
            tracing::warn!(file = %path.display(), error = %e, "could not update the synced mark");
        }
        self.commit.made_durable(end);
        Ok(())
    }

    async fn wait_for(&self, offset: Offset) -> Result<(), LogError> {
        self.commit.wait_visible(offset.0).await
    }
}

impl Inner {
    /// Replaces the file with `contents`, durably, and returns the new file.
    fn rewrite(&self, contents: &[u8]) -> Result<SharedFile, LogError> {
        let temp = sibling(&self.path, "tmp");
        let parent = self.path.parent().unwrap_or(Path::new("."));
        let file = self
            .storage
            .open(&temp, OpenMode::Create)
            .map_err(LogError::io("create", &temp))?;
        file.set_len(0)
            .and_then(|()| file.write_all_at(contents, 0))
            .and_then(|()| file.sync_data())
            .map_err(LogError::io("write", &temp))?;
        self.storage
            .rename(&temp, &self.path)
            .map_err(LogError::io("replace", &self.path))?;
        self.storage
            .sync_dir(parent)
            .map_err(LogError::io("fsync the directory", parent))?;
        Ok(file)
    }
}

impl SyncTarget for Inner {
    fn sync_written(&self) -> io::Result<u64> {
        let (file, mark, end) = {
            let state = self.state.read();
            let mark = Mark {
                key: state.start,
                position: state.len,
            };
            (
                Arc::clone(&state.file),
                mark,
                state.start + state.lines.len() as u64,
            )
        };
        file.sync_data().map_err(context("fsync", &self.path))?;
        self.synced
            .store(mark)
            .map_err(context("write", &sibling(&self.path, "synced")))?;
        Ok(end)
    }
}

impl Drop for TextLog {
    fn drop(&mut self) {
        self.commit.stop();
        if self.commit.check().is_ok()
            && let Err(e) = self.inner.sync_written()
        {
            tracing::warn!(file = %self.inner.path.display(), error = %e, "final fsync failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_any_bytes() {
        let payloads: [&[u8]; 6] = [
            b"",
            b"plain text",
            b"tab\there, newline\nthere, backslash\\",
            "héllo wörld ✓".as_bytes(),
            &[0, 1, 0x7f, 0xff, 0xfe, b'a', 0xc2, 0x83],
            b"\\x41 is not an escape here",
        ];
        for (i, payload) in payloads.iter().enumerate() {
            let mut line = Vec::new();
            push_line(&mut line, i as u64, payload);
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_eq!(parse_line(&line, i as u64).as_deref(), Ok(*payload));
        }
    }

    #[test]
    fn readable_text_stays_readable() {
        let mut line = Vec::new();
        push_line(&mut line, 3, "héllo wörld".as_bytes());
        assert!(
            String::from_utf8(line)
                .unwrap()
                .starts_with("3\théllo wörld\t")
        );
    }

    #[test]
    fn damaged_lines_are_refused() {
        let mut line = Vec::new();
        push_line(&mut line, 5, b"payload");
        assert_eq!(
            parse_line(&line[..line.len() - 1], 5),
            Err(CorruptKind::Truncated)
        );
        assert!(matches!(
            parse_line(&line, 6),
            Err(CorruptKind::WrongOffset {
                expected: 6,
                found: 5
            })
        ));
        for i in 0..line.len() - 1 {
            let mut damaged = line.clone();
            damaged[i] ^= 0x20;
            assert!(parse_line(&damaged, 5).is_err(), "flip at {i}");
        }
    }
}
