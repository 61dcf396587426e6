//! A read-only check of a whole segment log: every header, every frame's
//! checksum and place, every index entry, and the seams between segments.
//! It judges damage as recovery does: past the synced mark it is a torn tail.

use std::io;
use std::path::{Path, PathBuf};

use super::files::{
    Listing, SYNCED_FILE, header_never_written, index_path, not_a_directory, segment_path,
};
use super::frame::{self, HEADER_LEN, HeaderError};
use super::{index, recovery};
use crate::log::storage::{EntryKind, OpenMode, Storage};
use crate::log::{CorruptKind, Damage, LogError, VerifyReport, synced};

/// Checks the segment log in `dir` without changing anything; see
/// [`SegmentLog::verify`](super::SegmentLog::verify).
pub(super) fn verify(dir: &Path, storage: &dyn Storage) -> Result<VerifyReport, LogError> {
    match storage.kind(dir).map_err(LogError::io("inspect", dir))? {
        Some(EntryKind::Dir) => {}
        Some(EntryKind::File) => return Err(not_a_directory(dir)),
        None => return Err(LogError::io("open", dir)(io::ErrorKind::NotFound.into())),
    }
    let listing = Listing::read(storage, dir)?;
    listing.check_ours(dir)?;
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
    let bases = &listing.segments;
    let mark = synced::peek(storage, &dir.join(SYNCED_FILE))?;
    let first_unsynced = match recovery::first_unsynced(dir, bases, mark) {
        Ok(i) => i,
        Err(LogError::Corrupt {
            file,
            position,
            kind,
        }) => {
            report.damage.push(Damage {
                file,
                position,
                kind,
            });
            bases.len()
        }
        Err(e) => return Err(e),
    };
    let start = bases.first().copied().unwrap_or(0);
    report.offsets = start..start;

    // Where the previous segment's records ended: (file, byte, offset, may it tear?)
    let mut previous: Option<(PathBuf, u64, u64, bool)> = None;
    for (i, &base) in bases.iter().enumerate() {
        let path = segment_path(dir, base);
        // From the marked segment on, damage past the mark is a torn tail.
        let may_tear = i >= first_unsynced;
        let synced_to = mark.filter(|m| m.key == base).map(|m| m.position);
        let later = bases.get(i + 1).map(|&next| segment_path(dir, next));
        let torn_tail = |report: &mut VerifyReport, damage: Damage, from: Option<&PathBuf>| {
            if let Some(from) = from {
                report.notes.push(format!(
                    "the segments from {} on follow the torn tail and are removed when the log is opened",
                    from.display()
                ));
            }
            report.torn_tail = Some(damage);
        };
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

        let header_problem = match frame::parse_segment_header(&data) {
            Ok(found) if found == base => None,
            Ok(found) => Some(format!("the header says offset {found}")),
            Err(HeaderError::NotASegment(why) | HeaderError::Damaged(why)) => Some(why),
        };
        if let Some(why) = header_problem {
            if may_tear && synced_to.is_none() && header_never_written(&data, base) {
                torn_tail(
                    &mut report,
                    damage(0, CorruptKind::BadHeader(why)),
                    later.as_ref(),
                );
                break;
            }
            report.damage.push(damage(0, CorruptKind::BadHeader(why)));
            previous = None;
            continue;
        }
        if let Some((file, position, end, tears)) = previous.take()
            && end != base
        {
            if tears {
                let gap = CorruptKind::WrongOffset {
                    expected: end,
                    found: base,
                };
                torn_tail(&mut report, damage(0, gap), later.as_ref());
                break;
            }
            report.damage.push(Damage {
                file,
                position,
                kind: CorruptKind::MissingRecords {
                    expected_end: base,
                    found_end: end,
                },
            });
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
        if let Some(kind) = scan.error {
            if may_tear && end >= synced_to.unwrap_or(HEADER_LEN) {
                torn_tail(&mut report, damage(end, kind), later.as_ref());
                break;
            }
            report.damage.push(damage(end, kind));
            continue;
        }
        if let Some(synced) = synced_to.filter(|&synced| synced > end) {
            report.damage.push(damage(
                end,
                CorruptKind::SyncedDataLost {
                    synced,
                    valid_end: end,
                },
            ));
        }
        previous = Some((path, end, scan.next_offset, may_tear));
    }
    Ok(report)
}
