//! A log kept in memory: for tests, benchmarks and throwaway queues.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;

use super::commit::Committer;
use super::{Log, LogError, LogOptions, Offset, check_record_sizes, read_bounds};

/// Dropping at least this many records frees them on a thread of its own.
const FREED_ELSEWHERE: usize = 4096;

/// Records are copied into chunks that start this large and double up to
/// `MAX_CHUNK_BYTES` (a small log stays small).
const MIN_CHUNK_BYTES: usize = 4 << 10;
const MAX_CHUNK_BYTES: usize = 1 << 20;

/// A [`Log`] in memory. Nothing survives the process; every append is
/// "durable" at once.
///
/// ```
/// use orcastra::log::{Log, MemoryLog, Offset};
///
/// let log = MemoryLog::new();
/// log.append_nowait(&[b"a".as_slice(), b"b"])?;
/// assert_eq!(log.next_offset(), Offset(2));
/// # Ok::<(), orcastra::log::LogError>(())
/// ```
pub struct MemoryLog {
    records: RwLock<Records>,
    commit: Committer,
    max_record_bytes: usize,
}

struct Records {
    start: u64,
    items: VecDeque<Bytes>,
    /// The rest of the chunk the next records are copied into. Records are
    /// slices of large chunks, not allocations of their own: dropping a
    /// million small allocations filled glibc's fast bins, and the next
    /// large allocation in that arena consolidated them for about 20 ms,
    /// under whatever lock its caller held.
    chunk: BytesMut,
    /// The size of the next chunk.
    next_chunk: usize,
}

impl MemoryLog {
    /// An empty log with the default options.
    pub fn new() -> Self {
        Self::with_options(&LogOptions::default())
    }

    /// An empty log; of the options only `max_record_bytes` applies.
    pub fn with_options(options: &LogOptions) -> Self {
        MemoryLog {
            records: RwLock::new(Records {
                start: 0,
                items: VecDeque::new(),
                chunk: BytesMut::new(),
                next_chunk: MIN_CHUNK_BYTES,
            }),
            commit: Committer::in_memory(),
            max_record_bytes: options.max_record_bytes,
        }
    }
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new()
    }
}

impl Log for MemoryLog {
    fn append_nowait<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Range<Offset>, LogError> {
        check_record_sizes(records, self.max_record_bytes)?;
        let mut log = self.records.write();
        let first = log.start + log.items.len() as u64;
        for record in records {
            let record = record.as_ref();
            if log.chunk.capacity() < record.len() {
                log.chunk = BytesMut::with_capacity(log.next_chunk.max(record.len()));
                log.next_chunk = (2 * log.next_chunk).min(MAX_CHUNK_BYTES);
            }
            log.chunk.extend_from_slice(record);
            let record = log.chunk.split().freeze();
            log.items.push_back(record);
        }
        let end = log.start + log.items.len() as u64;
        self.commit.written(end);
        Ok(Offset(first)..Offset(end))
    }

    async fn wait_durable(&self, _end: Offset) -> Result<(), LogError> {
        Ok(())
    }

    async fn sync(&self) -> Result<(), LogError> {
        Ok(())
    }

    fn read(&self, from: Offset, max_records: usize) -> Result<Vec<bytes::Bytes>, LogError> {
        let log = self.records.read();
        let end = Offset(log.start + log.items.len() as u64);
        let Some(stop) = read_bounds(from, max_records, Offset(log.start), end)? else {
            return Ok(Vec::new());
        };
        let range = (from.0 - log.start) as usize..(stop.0 - log.start) as usize;
        Ok(log.items.range(range).cloned().collect())
    }

    fn start_offset(&self) -> Offset {
        Offset(self.records.read().start)
    }

    fn next_offset(&self) -> Offset {
        Offset(self.commit.visible())
    }

    fn drop_before(&self, offset: Offset) -> Result<(), LogError> {
        let dropped = {
            let mut log = self.records.write();
            let end = log.start + log.items.len() as u64;
            let new_start = offset.0.clamp(log.start, end);
            let count = (new_start - log.start) as usize;
            log.start = new_start;
            // Moving the smaller part: under the lock it costs no more than
            // what stays or what goes, whichever is less.
            if count <= log.items.len() / 2 {
                log.items.drain(..count).collect()
            } else {
                let kept = log.items.split_off(count);
                std::mem::replace(&mut log.items, kept)
            }
        };
        // Freed outside the lock, and, if many, on a thread of their own:
        // tens of thousands of records take milliseconds to free (a million
        // tens of milliseconds), which appends and reads would wait for,
        // and so would the operation that made them unneeded (see
        // `Stream::wait`). If no thread can start, they are freed here.
        if dropped.len() >= FREED_ELSEWHERE {
            let _ = std::thread::Builder::new()
                .name("orcastra-free".into())
                .spawn(move || drop::<VecDeque<Bytes>>(dropped));
        }
        Ok(())
    }

    async fn wait_for(&self, offset: Offset) -> Result<(), LogError> {
        self.commit.wait_visible(offset.0).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Empty records, records larger than what is left of a chunk, and one
    /// larger than any chunk read back as written.
    #[test]
    fn records_of_every_size_read_back_whole() {
        let log = MemoryLog::new();
        let sizes = [0, 3000, MIN_CHUNK_BYTES, 10, 0, 2 * MAX_CHUNK_BYTES, 5000];
        let records: Vec<Vec<u8>> = sizes
            .iter()
            .zip(1u8..)
            .map(|(&len, byte)| vec![byte; len])
            .collect();
        log.append_nowait(&records[..3]).unwrap();
        log.append_nowait(&records[3..]).unwrap();
        assert_eq!(log.read(Offset(0), records.len()).unwrap(), records);
    }
}
