//! Opening a segment log after a crash.
//!
//! The synced mark names the segment that was active at the last fsync and
//! how far it was durable. Every segment before it is durable in full: the
//! fsync thread syncs sealed segments in order before it moves the mark on.
//! So only the marked segment's unsynced part and the segments after it can
//! be torn, and only they are scanned:
//!
//! - a damaged frame before the mark is damage to acknowledged data: opening
//!   fails, naming the segment and byte position;
//! - the first damaged frame past the mark, a segment whose header never
//!   reached the disk, or a segment that does not start where the one before
//!   it ends, is where the log was torn: the log is cut there, and the
//!   segments after it, which hold only unacknowledged records, are removed.
//!
//! What survives is then written again and fsynced (after a failed fsync the
//! page cache may hold pages that never reached the disk, which a plain
//! fsync would skip), and the scanned segments' indexes are rebuilt durably.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::{
    check_header, check_segment_header, header_never_written, index_path, read_header,
    remove_segment, segment_path,
};
use super::frame::{self, HEADER_LEN};
use super::index::{self, IndexEntry, Indexer};
use super::{Active, OpenSegment, Sealed, Writer};
use crate::log::storage::{OpenMode, SharedFile, Storage};
use crate::log::synced::Mark;
use crate::log::{CorruptKind, LogError, LogOptions};

/// A recovered log: its sealed segments, and the active one with its writer.
pub(super) struct Recovered {
    pub(super) sealed: Vec<Sealed>,
    pub(super) active: Arc<Active>,
    pub(super) writer: Writer,
}

/// Recovers the log in `dir` whose segments start at `bases` (ascending; none
/// for a new log) and whose synced mark is `mark`.
pub(super) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    bases: &[u64],
    mark: Option<Mark>,
    options: &LogOptions,
) -> Result<Recovered, LogError> {
    let first_unsynced = first_unsynced(dir, bases, mark)?;
    let mut sealed = Vec::new();
    for (i, &base) in bases.iter().enumerate().take(first_unsynced) {
        check_segment_header(storage, dir, base)?;
        sealed.push(Sealed {
            base,
            end: bases[i + 1],
        });
    }

    // Read (changing nothing) up to where the log was torn.
    let mut kept: Vec<Scanned> = Vec::new();
    let mut cut_from = bases.len();
    for (i, &base) in bases.iter().enumerate().skip(first_unsynced) {
        let synced_to = mark.filter(|m| m.key == base).map(|m| m.position);
        let scanned = Scanned::read(storage, dir, base, synced_to, options)?;
        let continues = kept.last().is_none_or(|last| last.next_offset == base);
        let Some(scanned) = scanned.filter(|_| continues) else {
            cut_from = i;
            break;
        };
        let torn = scanned.torn;
        kept.push(scanned);
        if torn {
            cut_from = i + 1;
            break;
        }
    }
    // Only Orcastra's own segments are ever removed.
    for &base in &bases[cut_from..] {
        check_removable(storage, dir, base)?;
    }

    for &base in &bases[cut_from..] {
        tracing::warn!(
            segment = %segment_path(dir, base).display(),
            "removing a segment that follows a torn tail left by a crash"
        );
        remove_segment(storage, dir, base)?;
    }
    let last = match kept.pop() {
        Some(last) => last,
        // A new log, or its first segment's header never reached the disk.
        None => Scanned::fresh(storage, dir, bases.first().copied().unwrap_or(0), options)?,
    };
    for segment in kept {
        sealed.push(Sealed {
            base: segment.base,
            end: segment.next_offset,
        });
        segment.finish()?;
    }
    let last = last.finish()?;
    let path = last.path.clone();
    let (active, writer) = last.activate(options).map_err(LogError::io("map", path))?;
    Ok(Recovered {
        sealed,
        active,
        writer,
    })
}

/// Refuses to remove a file named like a segment that is not one of ours.
fn check_removable(storage: &dyn Storage, dir: &Path, base: u64) -> Result<(), LogError> {
    let path = segment_path(dir, base);
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(LogError::io("open", &path))?;
    let header = read_header(&*file).map_err(LogError::io("read", &path))?;
    match check_header(&path, &header, base) {
        Err(_) if header_never_written(&header, base) => Ok(()),
        result => result,
    }
}

/// Which of `bases` the mark names: the first one that may be torn.
pub(super) fn first_unsynced(
    dir: &Path,
    bases: &[u64],
    mark: Option<Mark>,
) -> Result<usize, LogError> {
    let Some(mark) = mark else {
        return Ok(0);
    };
    match bases.binary_search(&mark.key) {
        Ok(i) => Ok(i),
        // Retention removed the marked segment: all that is left came after it.
        Err(0) => Ok(0),
        Err(_) => Err(LogError::Corrupt {
            file: segment_path(dir, mark.key),
            position: 0,
            kind: CorruptKind::SyncedDataLost {
                synced: mark.position,
                valid_end: 0,
            },
        }),
    }
}

/// A segment from the unsynced part of the log, read up to its last valid frame.
struct Scanned {
    base: u64,
    path: PathBuf,
    file: SharedFile,
    index_path: PathBuf,
    index_file: SharedFile,
    stored_index: Vec<u8>,
    /// The trusted entries of the stored index, then those of the frames scanned.
    entries: Vec<IndexEntry>,
    indexer: Indexer,
    /// How far the segment was known to be durable.
    synced_to: u64,
    /// The segment's bytes from `start`, where the scan began: the last
    /// trusted index entry, or the first frame.
    tail: Vec<u8>,
    start: u64,
    valid_end: u64,
    /// Whether damage ends the valid frames (rather than the end of the
    /// file or the zeros written ahead of them).
    torn: bool,
    len: u64,
    next_offset: u64,
}

impl Scanned {
    /// Reads the segment at `base`, of which the mark says `synced_to` bytes
    /// are durable (`None` if the mark names another segment). `None` if the
    /// segment's header never reached the disk.
    fn read(
        storage: &dyn Storage,
        dir: &Path,
        base: u64,
        synced_to: Option<u64>,
        options: &LogOptions,
    ) -> Result<Option<Self>, LogError> {
        let path = segment_path(dir, base);
        let io_err = |action| LogError::io(action, path.clone());
        let file = storage
            .open(&path, OpenMode::Write)
            .map_err(io_err("open"))?;
        let len = file.size().map_err(io_err("read"))?;
        let header = read_header(&*file).map_err(io_err("read"))?;
        if let Err(refused) = check_header(&path, &header, base) {
            return match (header_never_written(&header, base), synced_to) {
                (true, None) => Ok(None),
                (true, Some(synced)) => Err(LogError::Corrupt {
                    file: path,
                    position: 0,
                    kind: CorruptKind::SyncedDataLost {
                        synced,
                        valid_end: 0,
                    },
                }),
                (false, _) => Err(refused),
            };
        }

        let synced_to = synced_to.unwrap_or(HEADER_LEN);
        let index_path = index_path(dir, base);
        let index_file = storage
            .open(&index_path, OpenMode::Create)
            .map_err(LogError::io("open", &index_path))?;
        let stored_index = index_file
            .read_all()
            .map_err(LogError::io("read", &index_path))?;
        // Entries inside the synced part are trusted once the last of them
        // agrees with the segment; the rest is scanned.
        let (mut entries, _) = index::decode(&stored_index, len);
        entries.truncate(entries.partition_point(|e| u64::from(e.pos) < synced_to));
        while let Some(last) = entries.last() {
            let mut frame_header = [0; 16];
            let read = file
                .read_at(&mut frame_header, u64::from(last.pos))
                .map_err(io_err("read"))?;
            if frame::claimed_offset(&frame_header[..read], 0) == Some(base + u64::from(last.rel)) {
                break;
            }
            entries.pop();
        }
        let (start_rel, start) = index::seek(&entries, u64::MAX);
        let mut tail = vec![0; (len - start) as usize];
        file.read_exact_at(&mut tail, start)
            .map_err(io_err("read"))?;
        let mut indexer = Indexer::new(options.index_interval_bytes, start);
        let scan = frame::scan(&tail, 0, base + start_rel, |offset, pos| {
            entries.extend(indexer.offer(offset - base, start + pos as u64));
        });
        let valid_end = start + scan.end as u64;
        if valid_end < synced_to {
            return Err(LogError::Corrupt {
                file: path,
                position: valid_end,
                kind: scan.error.unwrap_or(CorruptKind::SyncedDataLost {
                    synced: synced_to,
                    valid_end,
                }),
            });
        }
        if let Some(reason) = &scan.error {
            tracing::warn!(
                segment = %path.display(),
                position = valid_end,
                bytes = len - valid_end,
                %reason,
                "cutting off a torn tail left by a crash"
            );
        }
        Ok(Some(Scanned {
            base,
            path,
            file,
            index_path,
            index_file,
            stored_index,
            entries,
            indexer,
            synced_to,
            tail,
            start,
            valid_end,
            torn: scan.error.is_some(),
            len,
            next_offset: scan.next_offset,
        }))
    }

    /// A new, empty segment at `base`, replacing one whose header was lost
    /// (or starting a new log).
    fn fresh(
        storage: &dyn Storage,
        dir: &Path,
        base: u64,
        options: &LogOptions,
    ) -> Result<Self, LogError> {
        let path = segment_path(dir, base);
        let index_path = index_path(dir, base);
        let (file, index_file) = super::files::create_segment(storage, dir, base)
            .map_err(LogError::io("create", &path))?;
        // Durably empty: an older index of the same name must not come back.
        index_file
            .sync_data()
            .map_err(LogError::io("fsync", &index_path))?;
        Ok(Scanned {
            base,
            path,
            file,
            index_path,
            index_file,
            stored_index: Vec::new(),
            entries: Vec::new(),
            indexer: Indexer::new(options.index_interval_bytes, HEADER_LEN),
            synced_to: 0,
            tail: frame::segment_header(base).to_vec(),
            start: 0,
            valid_end: HEADER_LEN,
            torn: false,
            len: HEADER_LEN,
            next_offset: base,
        })
    }

    /// Cuts the torn tail (or the zeros written ahead), makes the rest
    /// durable and rebuilds the index durably.
    fn finish(self) -> Result<OpenSegment, LogError> {
        let io_err = |action| LogError::io(action, self.path.clone());
        if self.valid_end < self.len {
            self.file
                .set_len(self.valid_end)
                .map_err(io_err("truncate"))?;
        }
        let unsynced_from = self.synced_to.max(self.start);
        let unsynced = &self.tail
            [(unsynced_from - self.start) as usize..(self.valid_end - self.start) as usize];
        self.file
            .write_all_at(unsynced, unsynced_from)
            .and_then(|()| self.file.sync_data())
            .map_err(io_err("rewrite"))?;

        let mut index_bytes = Vec::with_capacity(self.entries.len() * index::ENTRY_LEN);
        for entry in &self.entries {
            entry.encode(&mut index_bytes);
        }
        // Entries inside the synced part are trusted from now on, so the
        // repaired index must be durable: stale entries must not come back.
        if index_bytes != self.stored_index {
            self.index_file
                .set_len(0)
                .and_then(|()| self.index_file.write_all_at(&index_bytes, 0))
                .and_then(|()| self.index_file.sync_data())
                .map_err(LogError::io("rewrite", self.index_path))?;
        }
        Ok(OpenSegment {
            base: self.base,
            path: self.path,
            file: self.file,
            index_file: self.index_file,
            len: self.valid_end,
            entries: self.entries,
            indexer: self.indexer,
            next_offset: self.next_offset,
        })
    }
}
