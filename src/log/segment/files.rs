//! The files of a segment log directory: names, listing, creation, headers.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use super::frame::{self, HEADER_LEN, HeaderError};
use crate::log::storage::{EntryKind, OpenMode, SharedFile, Storage, StorageFile};
use crate::log::{CorruptKind, LogError, is_interrupted_write};

pub(super) const LOCK_FILE: &str = "LOCK";
pub(super) const SYNCED_FILE: &str = "SYNCED";

pub(super) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

pub(super) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

pub(super) fn temp_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index.tmp"))
}

/// Makes `dir` a directory if it is not one yet.
pub(super) fn prepare_dir(storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
    match storage.kind(dir).map_err(LogError::io("inspect", dir))? {
        Some(EntryKind::Dir) => Ok(()),
        Some(EntryKind::File) => Err(not_a_directory(dir)),
        None => storage
            .create_dir_all(dir)
            .map_err(LogError::io("create the directory", dir)),
    }
}

pub(super) fn not_a_directory(dir: &Path) -> LogError {
    LogError::WrongKind {
        path: dir.to_path_buf(),
        expected: "directory",
        found: "file",
    }
}

/// What a log directory holds, by kind.
pub(super) struct Listing {
    /// Segment base offsets, ascending.
    pub(super) segments: Vec<u64>,
    /// Leftovers of an interrupted index rewrite, and indexes without a segment.
    pub(super) leftovers: Vec<PathBuf>,
    /// Names Orcastra does not know.
    pub(super) foreign: Vec<String>,
    /// Whether any file shows that Orcastra used this directory.
    ours: bool,
}

impl Listing {
    pub(super) fn read(storage: &dyn Storage, dir: &Path) -> Result<Self, LogError> {
        let mut segments = BTreeSet::new();
        let mut indexes = BTreeSet::new();
        let mut listing = Listing {
            segments: Vec::new(),
            leftovers: Vec::new(),
            foreign: Vec::new(),
            ours: false,
        };
        for name in storage.list(dir).map_err(LogError::io("list", dir))? {
            match classify(&name) {
                Name::Segment(base) => {
                    segments.insert(base);
                }
                Name::Index(base) => {
                    indexes.insert(base);
                }
                Name::TempIndex => listing.leftovers.push(dir.join(&name)),
                Name::Control => listing.ours = true,
                Name::Foreign => listing.foreign.push(name.to_string_lossy().into_owned()),
            }
        }
        listing.ours |= !segments.is_empty() || !indexes.is_empty();
        listing.leftovers.extend(
            indexes
                .difference(&segments)
                .map(|&base| index_path(dir, base)),
        );
        listing.foreign.sort();
        listing.segments = segments.into_iter().collect();
        Ok(listing)
    }

    /// Refuses a directory that holds only files Orcastra did not write.
    pub(super) fn check_ours(&self, dir: &Path) -> Result<(), LogError> {
        match self.foreign.first() {
            Some(example) if !self.ours => Err(LogError::ForeignDirectory {
                dir: dir.to_path_buf(),
                example: example.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Removes leftovers and reports strays; neither is worth failing over.
    pub(super) fn clean_up(&self, storage: &dyn Storage, dir: &Path) {
        for path in &self.leftovers {
            if let Err(e) = storage.remove(path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a leftover file");
            }
        }
        for name in &self.foreign {
            tracing::warn!(dir = %dir.display(), name, "ignoring a file that is not part of the log");
        }
    }
}

enum Name {
    Segment(u64),
    Index(u64),
    TempIndex,
    Control,
    Foreign,
}

fn classify(name: &OsStr) -> Name {
    let Some(name) = name.to_str() else {
        return Name::Foreign;
    };
    if name == LOCK_FILE || name == SYNCED_FILE {
        return Name::Control;
    }
    let base = |stem: &str| {
        (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse().ok())
            .flatten()
    };
    if let Some(base) = name.strip_suffix(".log").and_then(base) {
        Name::Segment(base)
    } else if let Some(base) = name.strip_suffix(".index").and_then(base) {
        Name::Index(base)
    } else if name.strip_suffix(".index.tmp").and_then(base).is_some() {
        Name::TempIndex
    } else {
        Name::Foreign
    }
}

/// Creates (or empties) the files of the segment at `base` and writes its
/// header. Nothing is fsynced: the fsync thread syncs the segment, its index
/// and the directory before the synced mark may name the segment.
pub(super) fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
) -> io::Result<(SharedFile, SharedFile)> {
    let path = segment_path(dir, base);
    let file = storage.open(&path, OpenMode::Create)?;
    file.set_len(0)?;
    file.write_all_at(&frame::segment_header(base), 0)?;
    // An older index of the same name must not be taken for this one's.
    let index = storage.open(&index_path(dir, base), OpenMode::Create)?;
    index.set_len(0)?;
    Ok((file, index))
}

/// Removes the files of the segment at `base`, the index first so that a
/// crash in between leaves no orphan index.
pub(super) fn remove_segment(storage: &dyn Storage, dir: &Path, base: u64) -> Result<(), LogError> {
    for path in [index_path(dir, base), segment_path(dir, base)] {
        match storage.remove(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(LogError::io("remove", path)(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks that `header` (the first bytes of `path`) opens the segment at `base`.
pub(super) fn check_header(path: &Path, header: &[u8], base: u64) -> Result<(), LogError> {
    match frame::parse_segment_header(header) {
        Ok(found) if found == base => Ok(()),
        Ok(found) => Err(LogError::Corrupt {
            file: path.to_path_buf(),
            position: 0,
            kind: CorruptKind::BadHeader(format!(
                "the header says the segment starts at offset {found}"
            )),
        }),
        Err(HeaderError::NotASegment(reason)) => Err(LogError::NotALogFile {
            path: path.to_path_buf(),
            reason,
        }),
        Err(HeaderError::Damaged(reason)) => Err(LogError::Corrupt {
            file: path.to_path_buf(),
            position: 0,
            kind: CorruptKind::BadHeader(reason),
        }),
    }
}

/// Whether `header` is what a crash can leave of the header of a segment
/// at `base` whose header write never fully reached the disk: a prefix of it,
/// any byte possibly still zero. (The segment's data may have reached it.)
pub(super) fn header_never_written(header: &[u8], base: u64) -> bool {
    let header = &header[..header.len().min(HEADER_LEN as usize)];
    is_interrupted_write(header, &frame::segment_header(base))
}

/// Reads the header of the segment at `base` and checks it.
pub(super) fn check_segment_header(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
) -> Result<(), LogError> {
    let path = segment_path(dir, base);
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(LogError::io("open", &path))?;
    let header = read_header(&*file).map_err(LogError::io("read", &path))?;
    check_header(&path, &header, base)
}

/// Up to the first `HEADER_LEN` bytes of a file.
pub(super) fn read_header(file: &dyn StorageFile) -> io::Result<Vec<u8>> {
    let mut header = vec![0; HEADER_LEN as usize];
    let mut read = 0;
    while read < header.len() {
        match file.read_at(&mut header[read..], read as u64)? {
            0 => break,
            n => read += n,
        }
    }
    header.truncate(read);
    Ok(header)
}
