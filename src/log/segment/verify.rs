//! A read-only check of a whole segment log: every header, every frame's
//! checksum and place, every index entry, and the seams between segments.

use std::io;
use std::path::Path;

use super::frame::{self, HEADER_LEN};
use super::{Listing, SYNCED_FILE, index, index_path, segment_path};
use crate::log::storage::{EntryKind, OpenMode, Storage};
use crate::log::{CorruptKind, Damage, LogError, VerifyReport, synced};

/// Checks the segment log in `dir` without changing anything; see
/// [`SegmentLog::verify`](super::SegmentLog::verify).
pub fn verify(dir: &Path, storage: &dyn Storage) -> Result<VerifyReport, LogError> {
    match storage.kind(dir).map_err(LogError::io("inspect", dir))? {
        Some(EntryKind::Dir) => {}
        Some(EntryKind::File) => {
            return Err(LogError::WrongKind {
                path: dir.to_path_buf(),
                expected: "directory",
                found: "file",
            });
        }
        None => return Err(LogError::io("open", dir)(io::ErrorKind::NotFound.into())),
    }
    let listing = Listing::read(storage, dir)?;
    if let (true, Some(example)) = (
        listing.segments.is_empty() && !listing.ours,
        listing.foreign.first(),
    ) {
        return Err(LogError::ForeignDirectory {
            dir: dir.to_path_buf(),
            example: example.clone(),
        });
    }
    let mut report = VerifyReport::default();
    for name in &listing.foreign {
        report
            .notes
            .push(format!("{name} is not part of the log and is ignored"));
    }
    for path in &listing.leftovers {
        report.notes.push(format!(
            "{} is left over and is removed when the log is opened",
            path.display()
        ));
    }
    let mark = synced::peek(storage, &dir.join(SYNCED_FILE))?;
    let start = listing.segments.first().copied().unwrap_or(0);
    report.offsets = start..start;

    for (i, &base) in listing.segments.iter().enumerate() {
        let next_base = listing.segments.get(i + 1).copied();
        let path = segment_path(dir, base);
        report.files += 1;
        let file = storage
            .open(&path, OpenMode::Read)
            .map_err(LogError::io("open", &path))?;
        let len = file.size().map_err(LogError::io("read", &path))?;
        let data = file
            .map(len)
            .map_err(LogError::io("map", &path))?
            .bytes(len as usize);
        let damage = |position, kind| Damage {
            file: path.clone(),
            position,
            kind,
        };
        match frame::parse_segment_header(&data) {
            Ok(found) if found == base => {}
            Ok(found) => {
                report.damage.push(damage(
                    0,
                    CorruptKind::BadHeader(format!("the header says offset {found}")),
                ));
                continue;
            }
            Err(frame::HeaderError::NotASegment(why) | frame::HeaderError::Damaged(why)) => {
                report.damage.push(damage(0, CorruptKind::BadHeader(why)));
                continue;
            }
        }

        let index_file = index_path(dir, base);
        let (entries, index_ok) = match storage.open(&index_file, OpenMode::Read) {
            Ok(file) => {
                let bytes = file.read_all().map_err(LogError::io("read", &index_file))?;
                index::decode(&bytes, len)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), false),
            Err(e) => return Err(LogError::io("open", index_file)(e)),
        };
        let mut unchecked = entries.iter().peekable();
        let mut index_matches = index_ok;
        let scan = frame::scan(&data, HEADER_LEN as usize, base, |offset, pos| {
            while let Some(entry) = unchecked.next_if(|e| e.pos as usize <= pos) {
                index_matches &= entry.pos as usize == pos && base + u64::from(entry.rel) == offset;
            }
        });
        index_matches &= unchecked.next().is_none();
        if !index_matches {
            report.notes.push(format!(
                "the index {} is missing or does not match its segment; it is rebuilt when needed",
                index_file.display()
            ));
        }

        report.records += scan.next_offset - base;
        report.offsets.end = scan.next_offset;
        let end = scan.end as u64;
        match (next_base, scan.error) {
            // The active segment: damage past the synced mark is a torn tail.
            (None, Some(kind)) => {
                let synced_to = mark
                    .filter(|m| m.key == base)
                    .map_or(HEADER_LEN, |m| m.position);
                if end >= synced_to {
                    report.torn_tail = Some(damage(end, kind));
                } else {
                    report.damage.push(damage(end, kind));
                }
            }
            (None, None) => {
                if let Some(mark) = mark.filter(|m| m.key == base && m.position > end) {
                    report.damage.push(damage(
                        end,
                        CorruptKind::SyncedDataLost {
                            synced: mark.position,
                            valid_end: end,
                        },
                    ));
                }
            }
            (Some(_), Some(kind)) => report.damage.push(damage(end, kind)),
            (Some(next_base), None) if scan.next_offset != next_base => {
                report.damage.push(damage(
                    end,
                    CorruptKind::MissingRecords {
                        expected_end: next_base,
                        found_end: scan.next_offset,
                    },
                ));
            }
            (Some(_), None) => {}
        }
    }
    Ok(report)
}
