//! The sparse offset index of a segment.
//!
//! ```text
//! index = entry*
//! entry = relative offset u32 | byte position u32 | crc u32    (little-endian, 12 bytes)
//! ```
//!
//! An entry is added for the first frame that starts at least
//! `index_interval_bytes` after the previous entry (or after the header), so
//! a lookup binary-searches the entries and then walks at most about one
//! interval of frames. The first frame of a segment is never indexed: its
//! place is implicit. Entries therefore strictly increase in both fields and
//! are never zero, which makes a zero-filled or stale tail easy to reject.
//!
//! The index is a cache. It is written as frames are appended, never
//! fsynced except when its segment is sealed or recovered, and rebuilt from
//! the segment whenever it is missing or does not match. Each entry carries
//! the CRC-32 of its first 8 bytes, because an unsynced entry can be torn by
//! a crash into one that looks plausible (a zero-filled tail of a position).

use super::frame::{self, HEADER_LEN};

pub(crate) const ENTRY_LEN: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Offset minus the segment's base.
    pub(crate) rel: u32,
    /// Byte position of the frame in the segment.
    pub(crate) pos: u32,
}

impl IndexEntry {
    pub(crate) fn encode(self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.rel.to_le_bytes());
        out.extend_from_slice(&self.pos.to_le_bytes());
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
}

/// Decides which frames get an index entry.
#[derive(Clone, Debug)]
pub(crate) struct Indexer {
    interval: u64,
    last_pos: u64,
}

impl Indexer {
    /// An indexer for a segment whose last indexed frame is at `last_pos`.
    pub(crate) fn new(interval: u64, last_pos: u64) -> Self {
        Indexer { interval, last_pos }
    }

    /// The entry for the frame of relative offset `rel` at `pos`, if it gets one.
    pub(crate) fn offer(&mut self, rel: u64, pos: u64) -> Option<IndexEntry> {
        if pos < self.last_pos + self.interval {
            return None;
        }
        self.last_pos = pos;
        Some(IndexEntry {
            rel: u32::try_from(rel).expect("a segment holds fewer than 2^32 records"),
            pos: u32::try_from(pos).expect("a segment is smaller than 4 GiB"),
        })
    }
}

/// The longest prefix of `bytes` that is a well-formed index: whole entries
/// with valid checksums, strictly increasing, pointing inside a segment of
/// `segment_len` bytes.
/// The flag says whether that prefix is all of `bytes`.
pub(crate) fn decode(bytes: &[u8], segment_len: u64) -> (Vec<IndexEntry>, bool) {
    let mut entries: Vec<IndexEntry> = Vec::with_capacity(bytes.len() / ENTRY_LEN);
    for chunk in bytes.chunks(ENTRY_LEN) {
        let Ok(chunk) = <[u8; ENTRY_LEN]>::try_from(chunk) else {
            return (entries, false);
        };
        let word = |at: usize| u32::from_le_bytes(chunk[at..at + 4].try_into().expect("4 bytes"));
        if word(8) != crc32fast::hash(&chunk[..8]) {
            return (entries, false);
        }
        let entry = IndexEntry {
            rel: word(0),
            pos: word(4),
        };
        let after_previous = entries.last().map_or(
            entry.rel > 0 && u64::from(entry.pos) >= HEADER_LEN,
            |prev| entry.rel > prev.rel && entry.pos > prev.pos,
        );
        if !after_previous || u64::from(entry.pos) >= segment_len {
            return (entries, false);
        }
        entries.push(entry);
    }
    (entries, true)
}

/// Whether every entry points at a frame header that claims the entry's offset.
pub(crate) fn matches(entries: &[IndexEntry], data: &[u8], base: u64) -> bool {
    entries.iter().all(|entry| {
        frame::claimed_offset(data, entry.pos as usize) == Some(base + u64::from(entry.rel))
    })
}

/// Whether `entries` reach the end of `data`: no frame after the last entry
/// starts a whole interval past it, as a complete index would have indexed it.
pub(crate) fn covers(entries: &[IndexEntry], data: &[u8], interval: u64) -> bool {
    let last = entries.last().map_or(HEADER_LEN, |e| u64::from(e.pos));
    let mut pos = last;
    while pos < data.len() as u64 {
        if pos >= last + interval {
            return false;
        }
        match frame::claimed_len(data, pos as usize) {
            Some(len) => pos += frame::frame_len(len) as u64,
            None => return false,
        }
    }
    true
}

/// Where to start walking to reach relative offset `rel`: the last entry at or
/// before it, or the first frame.
pub(crate) fn seek(entries: &[IndexEntry], rel: u64) -> (u64, u64) {
    let after = entries.partition_point(|e| u64::from(e.rel) <= rel);
    match after.checked_sub(1) {
        Some(i) => (u64::from(entries[i].rel), u64::from(entries[i].pos)),
        None => (0, HEADER_LEN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_all(entries: &[IndexEntry]) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in entries {
            entry.encode(&mut out);
        }
        out
    }

    fn entry(rel: u32, pos: u32) -> IndexEntry {
        IndexEntry { rel, pos }
    }

    #[test]
    fn indexer_adds_an_entry_once_per_interval() {
        let mut indexer = Indexer::new(100, HEADER_LEN);
        let offered: Vec<_> = (0..20)
            .filter_map(|i| indexer.offer(i, HEADER_LEN + i * 40))
            .collect();
        assert_eq!(
            offered,
            vec![
                entry(3, 152),
                entry(6, 272),
                entry(9, 392),
                entry(12, 512),
                entry(15, 632),
                entry(18, 752)
            ]
        );
    }

    #[test]
    fn decode_keeps_the_well_formed_prefix() {
        let good = [entry(3, 152), entry(6, 272)];
        assert_eq!(decode(&encode_all(&good), 1000), (good.to_vec(), true));

        let mut torn = encode_all(&good);
        torn.extend_from_slice(&[1, 2, 3]);
        assert_eq!(decode(&torn, 1000), (good.to_vec(), false));

        let mut zeroed = encode_all(&good);
        zeroed.extend_from_slice(&[0; 24]);
        assert_eq!(decode(&zeroed, 1000), (good.to_vec(), false));

        // A torn entry whose position was zero-filled looks plausible but for its CRC.
        let mut torn_entry = encode_all(&good);
        let mut next = Vec::new();
        entry(9, 0x120).encode(&mut next);
        next[5..].fill(0);
        torn_entry.extend_from_slice(&next);
        assert_eq!(decode(&torn_entry, 1000), (good.to_vec(), false));

        assert_eq!(decode(&encode_all(&good), 200), (vec![good[0]], false));
        assert_eq!(decode(&[0; ENTRY_LEN], 1000), (vec![], false));
    }

    #[test]
    fn seek_finds_the_last_entry_at_or_before() {
        let entries = [entry(3, 152), entry(6, 272)];
        assert_eq!(seek(&entries, 0), (0, HEADER_LEN));
        assert_eq!(seek(&entries, 2), (0, HEADER_LEN));
        assert_eq!(seek(&entries, 3), (3, 152));
        assert_eq!(seek(&entries, 5), (3, 152));
        assert_eq!(seek(&entries, 100), (6, 272));
    }
}
