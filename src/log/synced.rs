//! The synced mark: how far a log is known to be durable.
//!
//! Recovery has to tell a torn tail (an unsynced write cut short by a crash,
//! to be cut off) from damage to data that was acknowledged (to be reported,
//! never cut). After every fsync the log records in this small file the
//! position the fsync covered; only data past that position may be cut.
//!
//! ```text
//! mark = slot slot
//! slot = key u64 | position u64 | sequence u64 | crc u32 | zero u32     (32 bytes)
//! ```
//!
//! `key` names the file the position belongs to (a segment's base offset, a
//! text log's start offset). Writes alternate between the two slots and the
//! valid slot with the higher sequence wins, so a write torn by a crash leaves
//! the previous mark readable. The mark is written after its fsync completes
//! and is itself never fsynced: if the newest mark is lost, recovery uses an
//! older one, which protects less but never cuts acknowledged data.

use std::io;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::LogError;
use super::storage::{OpenMode, SharedFile, Storage, StorageFile};

const SLOT: usize = 32;

/// A durable position in the file identified by `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) key: u64,
    pub(crate) position: u64,
}

/// The open mark file of a log.
#[derive(Debug)]
pub(crate) struct SyncedMark {
    /// The file and the sequence number of the newest mark in it.
    file: Mutex<(SharedFile, u64)>,
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
        let newest = read_slots(&*file).map_err(LogError::io("read", path))?;
        let sequence = newest.map_or(0, |(_, sequence)| sequence);
        Ok((
            SyncedMark {
                file: Mutex::new((file, sequence)),
            },
            newest.map(|(mark, _)| mark),
        ))
    }

    /// Records that `key`'s file is durable up to `position`.
    pub(crate) fn store(&self, mark: Mark) -> io::Result<()> {
        let mut guard = self.file.lock();
        let (file, sequence) = &mut *guard;
        let next = *sequence + 1;
        let mut slot = [0; SLOT];
        slot[..8].copy_from_slice(&mark.key.to_le_bytes());
        slot[8..16].copy_from_slice(&mark.position.to_le_bytes());
        slot[16..24].copy_from_slice(&next.to_le_bytes());
        let crc = crc32fast::hash(&slot[..24]);
        slot[24..28].copy_from_slice(&crc.to_le_bytes());
        file.write_all_at(&slot, (next % 2) * SLOT as u64)?;
        *sequence = next;
        Ok(())
    }
}

/// Reads the mark at `path` without creating or changing anything.
pub(crate) fn peek(storage: &dyn Storage, path: &Path) -> Result<Option<Mark>, LogError> {
    match storage.open(path, OpenMode::Read) {
        Ok(file) => Ok(read_slots(&*file)
            .map_err(LogError::io("read", path))?
            .map(|(mark, _)| mark)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io("open", PathBuf::from(path))(e)),
    }
}

/// The valid slot with the highest sequence number, and that number.
fn read_slots(file: &dyn StorageFile) -> io::Result<Option<(Mark, u64)>> {
    let mut bytes = [0; 2 * SLOT];
    let mut read = 0;
    while read < bytes.len() {
        match file.read_at(&mut bytes[read..], read as u64)? {
            0 => break,
            n => read += n,
        }
    }
    let word =
        |slot: &[u8], at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().expect("8 bytes"));
    Ok(bytes[..read]
        .chunks_exact(SLOT)
        .filter(|slot| {
            let crc = u32::from_le_bytes(slot[24..28].try_into().expect("4 bytes"));
            crc == crc32fast::hash(&slot[..24])
        })
        .map(|slot| {
            let mark = Mark {
                key: word(slot, 0),
                position: word(slot, 8),
            };
            (mark, word(slot, 16))
        })
        .max_by_key(|&(_, sequence)| sequence))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::storage::SimStorage;

    #[test]
    fn the_newest_intact_mark_wins() {
        let sim = SimStorage::new(1);
        sim.create_dir_all(Path::new("/d")).unwrap();
        let path = Path::new("/d/SYNCED");
        let (mark, found) = SyncedMark::open(&sim, path).unwrap();
        assert_eq!(found, None);
        for position in 1..=5 {
            mark.store(Mark { key: 7, position }).unwrap();
        }
        assert_eq!(
            peek(&sim, path).unwrap(),
            Some(Mark {
                key: 7,
                position: 5
            })
        );
        drop(mark);
        // Reopened, it goes on from the newest sequence number.
        let (mark, found) = SyncedMark::open(&sim, path).unwrap();
        assert_eq!(
            found,
            Some(Mark {
                key: 7,
                position: 5
            })
        );
        mark.store(Mark {
            key: 8,
            position: 32,
        })
        .unwrap();
        assert_eq!(
            peek(&sim, path).unwrap(),
            Some(Mark {
                key: 8,
                position: 32
            })
        );

        // A torn write of the newest slot (sequence 6, in slot 0) leaves the
        // one before it.
        let mut bytes = sim.contents(path).unwrap();
        bytes[9] ^= 1;
        sim.set_contents(path, &bytes).unwrap();
        assert_eq!(
            peek(&sim, path).unwrap(),
            Some(Mark {
                key: 7,
                position: 5
            })
        );
    }
}
