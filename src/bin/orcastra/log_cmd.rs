//! `orcastra log …`: append lines, dump records, verify files.

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use orcastra::log::storage::OsStorage;
use orcastra::log::{FsyncPolicy, Log, LogOptions, Offset, SegmentLog, TextLog};

/// Where the log lives.
#[derive(Clone, Copy, ValueEnum)]
pub enum Backend {
    /// Segment files in the data directory.
    Segment,
    /// One line per record in `log.txt` in the data directory.
    Text,
}

const TEXT_FILE: &str = "log.txt";

/// How `append` groups lines into appends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Batches {
    /// Every line is an append of its own.
    OneLine,
    /// The lines already read when the input pauses form one append (up to a limit).
    AsRead,
}

const BATCH_LINES: usize = 4096;
const BATCH_BYTES: usize = 1 << 20;

/// Appends each line of stdin as a record and prints its offset once the
/// append has returned, i.e. once the record is durable under the policy.
pub async fn append(
    backend: Backend,
    data: &Path,
    options: LogOptions,
    max_record_bytes: usize,
    batches: Batches,
) -> anyhow::Result<ExitCode> {
    let input = BufReader::with_capacity(1 << 18, io::stdin());
    match backend {
        Backend::Segment => {
            let log = SegmentLog::open(data, options)?;
            append_lines(&log, input, max_record_bytes, batches).await
        }
        Backend::Text => {
            let log = TextLog::open(data.join(TEXT_FILE), options)?;
            append_lines(&log, input, max_record_bytes, batches).await
        }
    }
}

async fn append_lines<L: Log>(
    log: &L,
    mut input: BufReader<impl io::Read>,
    max_record_bytes: usize,
    batches: Batches,
) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    // The batch's lines, back to back; `ends[i]` is where line `i` ends.
    let mut lines = Vec::new();
    let mut ends = Vec::new();
    let mut line_number = 0u64;
    loop {
        let read = read_line(&mut input, &mut lines, max_record_bytes);
        if !matches!(read, Ok(true)) {
            // End of input or a bad line: what came before is still appended.
            append_batch(log, &lines, &ends, &mut out).await?;
            return match read {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(e) => Err(e).with_context(|| {
                    format!(
                        "line {}: nothing of it or after it was appended",
                        line_number + 1
                    )
                }),
            };
        }
        line_number += 1;
        ends.push(lines.len());
        // Append before reading on would block, so no line waits for more input.
        let full = batches == Batches::OneLine
            || ends.len() >= BATCH_LINES
            || lines.len() >= BATCH_BYTES
            || input.buffer().is_empty();
        if full {
            append_batch(log, &lines, &ends, &mut out).await?;
            lines.clear();
            ends.clear();
        }
    }
}

/// Reads one line, without its newline, onto the end of `buf`, refusing lines
/// longer than `max` without reading them whole. False at the end of input.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    let start = buf.len();
    let mut read_any = false;
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok(read_any);
        }
        read_any = true;
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(newline) => (&available[..newline], newline + 1, true),
            None => (available, available.len(), false),
        };
        if buf.len() - start + chunk.len() > max {
            buf.truncate(start);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("longer than the record limit of {max} bytes"),
            ));
        }
        buf.extend_from_slice(chunk);
        input.consume(used);
        if done {
            return Ok(true);
        }
    }
}

async fn append_batch<L: Log>(
    log: &L,
    lines: &[u8],
    ends: &[usize],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if ends.is_empty() {
        return Ok(());
    }
    let mut start = 0;
    let records: Vec<&[u8]> = ends
        .iter()
        .map(|&end| {
            let record = &lines[start..end];
            start = end;
            record
        })
        .collect();
    let offsets = log.append(&records).await?;
    for offset in offsets.start.0..offsets.end.0 {
        writeln!(out, "{offset}")?;
    }
    out.flush()?;
    Ok(())
}

/// Prints `offset<TAB>payload` for each record from `from` to the end.
pub fn dump(backend: Backend, data: &Path, from: Option<u64>) -> anyhow::Result<ExitCode> {
    // Reading needs no fsync of its own; recovery syncs what it keeps.
    let options = LogOptions::default().fsync(FsyncPolicy::Never);
    let result = match backend {
        Backend::Segment => dump_records(&SegmentLog::open(data, options)?, from),
        Backend::Text => dump_records(&TextLog::open(data.join(TEXT_FILE), options)?, from),
    };
    match result {
        Err(e)
            if e.downcast_ref::<io::Error>().map(io::Error::kind)
                == Some(io::ErrorKind::BrokenPipe) =>
        {
            Ok(ExitCode::SUCCESS)
        }
        other => other.map(|()| ExitCode::SUCCESS),
    }
}

fn dump_records<L: Log>(log: &L, from: Option<u64>) -> anyhow::Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    let end = log.next_offset();
    let mut at = from.map_or_else(|| log.start_offset(), Offset);
    // An empty read checks `from` against the log's bounds.
    log.read(at, 0)?;
    while at < end {
        for record in log.read(at, 1024)? {
            write!(out, "{at}\t")?;
            out.write_all(&record)?;
            out.write_all(b"\n")?;
            at = at + 1;
        }
    }
    out.flush()?;
    Ok(())
}

/// Checks the log's files and prints what was found; exits 1 on damage.
pub fn verify(backend: Backend, data: &Path) -> anyhow::Result<ExitCode> {
    let report = match backend {
        Backend::Segment => SegmentLog::verify(data, &OsStorage)?,
        Backend::Text => TextLog::verify(data.join(TEXT_FILE), &OsStorage)?,
    };
    println!(
        "checked {} file(s): {} records, offsets {}..{}",
        report.files, report.records, report.offsets.start, report.offsets.end
    );
    for note in &report.notes {
        println!("note: {note}");
    }
    if let Some(torn) = &report.torn_tail {
        println!(
            "torn tail: {torn} (an incomplete write left by a crash; cut off when the log is opened)"
        );
    }
    for damage in &report.damage {
        println!("DAMAGED: {damage}");
    }
    Ok(if report.is_healthy() {
        println!("ok");
        ExitCode::SUCCESS
    } else {
        println!("the log is damaged: restore the damaged files from a backup");
        ExitCode::FAILURE
    })
}
