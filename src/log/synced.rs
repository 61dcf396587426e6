//! The synced mark: how far a log file is known to be durable.
//!
//! Recovery has to tell a torn tail (an unsynced write cut short by a crash,
//! to be cut off) from damage to data that was acknowledged (to be reported,
//! never cut). After every fsync the log overwrites this small file with the
//! position the fsync covered; only data past that position may be cut.
//!
//! ```text
//! mark = key u64 | position u64 | crc u32 | zero u32     (24 bytes, little-endian)
//! ```
//!
//! `key` names the file the position belongs to (a segment's base offset, a
//! text log's start offset), so a mark left over from a replaced file is
//! ignored. The mark is written after its fsync completes and is itself never
//! fsynced: if it is lost or torn (its CRC fails) recovery falls back to an
//! older or no mark, which protects less but never cuts acknowledged data.

use std::io;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::LogError;
use super::storage::{OpenMode, SharedFile, Storage, StorageFile};

const LEN: usize = 24;

/// A durable position in the file identified by `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) key: u64,
    pub(crate) position: u64,
}

/// The open mark file of a log.
#[derive(Debug)]
pub(crate) struct SyncedMark {
    file: Mutex<SharedFile>,
}

impl SyncedMark {
    /// Opens (creating if needed) the mark file at `path` and returns the mark
    /// it holds, if it holds a valid one.
    pub(crate) fn open(
        storage: &dyn Storage,
        path: &Path,
    ) -> Result<(Self, Option<Mark>), LogError> {
        let file = storage
            .open(path, OpenMode::Create)
            .map_err(LogError::io("open", path))?;
        let mark = read_mark(&*file).map_err(LogError::io("read", path))?;
        Ok((
            SyncedMark {
                file: Mutex::new(file),
            },
            mark,
        ))
    }

    /// Records that `key`'s file is durable up to `position`.
    pub(crate) fn store(&self, mark: Mark) -> io::Result<()> {
        let mut bytes = [0; LEN];
        bytes[..8].copy_from_slice(&mark.key.to_le_bytes());
        bytes[8..16].copy_from_slice(&mark.position.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..16]);
        bytes[16..20].copy_from_slice(&crc.to_le_bytes());
        self.file.lock().write_all_at(&bytes, 0)
    }
}

/// Reads the mark at `path` without creating or changing anything.
pub(crate) fn peek(storage: &dyn Storage, path: &Path) -> Result<Option<Mark>, LogError> {
    match storage.open(path, OpenMode::Read) {
        Ok(file) => read_mark(&*file).map_err(LogError::io("read", path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io("open", PathBuf::from(path))(e)),
    }
}

fn read_mark(file: &dyn StorageFile) -> io::Result<Option<Mark>> {
    let mut bytes = [0; LEN];
    match file.read_exact_at(&mut bytes, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    if crc != crc32fast::hash(&bytes[..16]) {
        return Ok(None);
    }
    Ok(Some(Mark {
        key: u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
        position: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::storage::SimStorage;

    #[test]
    fn marks_round_trip_and_damage_reads_as_no_mark() {
        let sim = SimStorage::new(1);
        sim.create_dir_all(Path::new("/d")).unwrap();
        let path = Path::new("/d/SYNCED");
        let (mark, found) = SyncedMark::open(&sim, path).unwrap();
        assert_eq!(found, None);
        mark.store(Mark {
            key: 7,
            position: 4096,
        })
        .unwrap();
        assert_eq!(
            peek(&sim, path).unwrap(),
            Some(Mark {
                key: 7,
                position: 4096
            })
        );
        let mut bytes = sim.contents(path).unwrap();
        bytes[9] ^= 1;
        sim.set_contents(path, &bytes).unwrap();
        assert_eq!(peek(&sim, path).unwrap(), None);
    }
}
