//! The bytes of a segment file (drawn in `docs/format.md`).
//!
//! ```text
//! segment = header frame*
//! header  = magic "ORCASEG\0" | version u32 | reserved u32 | base u64 | crc u32 | reserved u32   (32 bytes)
//! frame   = len u32 | crc u32 | offset u64 | payload (len bytes) | zero padding to 8 bytes
//! ```
//!
//! All integers are little-endian. A frame's CRC-32 covers its `len`, its
//! `offset` and its payload, so a header of zeros can never be valid: the
//! CRC of twelve zero bytes is not zero (checked in a test), and an all-zero
//! header is refused before the CRC is even computed. Frames start at
//! multiples of 8 and their headers are 16 bytes long, so every payload is
//! 8-byte aligned in a memory map, as Cap'n Proto needs to read in place.

use std::ops::Range;
use std::sync::LazyLock;

use crate::log::CorruptKind;

pub(crate) const MAGIC: [u8; 8] = *b"ORCASEG\0";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER_LEN: u64 = 32;
const FRAME_HEADER_LEN: usize = 16;

/// The header that opens the segment whose first offset is `base`.
pub(crate) fn segment_header(base: u64) -> [u8; HEADER_LEN as usize] {
    let mut header = [0; HEADER_LEN as usize];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32fast::hash(&header[..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Why a segment header was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Too short, or not starting with the magic: not a segment at all.
    NotASegment(String),
    /// A segment header, but damaged or from an unknown version.
    Damaged(String),
}

/// Checks a segment header and returns its base offset.
pub(crate) fn parse_segment_header(bytes: &[u8]) -> Result<u64, HeaderError> {
    if bytes.len() < HEADER_LEN as usize {
        return Err(HeaderError::NotASegment(format!(
            "{} bytes long, shorter than a segment header",
            bytes.len()
        )));
    }
    if bytes[..8] != MAGIC {
        return Err(HeaderError::NotASegment(
            "it does not start with the segment magic".into(),
        ));
    }
    let crc = u32_at(bytes, 24);
    if crc != crc32fast::hash(&bytes[..24]) {
        return Err(HeaderError::Damaged(
            "segment header checksum mismatch".into(),
        ));
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err(HeaderError::Damaged(format!(
            "segment format version {version}, this build reads version {VERSION}"
        )));
    }
    Ok(u64_at(bytes, 16))
}

/// Bytes a record of `payload_len` bytes takes in a segment.
pub(crate) fn frame_len(payload_len: usize) -> usize {
    (FRAME_HEADER_LEN + payload_len).next_multiple_of(8)
}

/// Appends the frame of the record at `offset` to `buf`.
pub(crate) fn push_frame(buf: &mut Vec<u8>, offset: u64, payload: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&header(offset, payload));
    buf.extend_from_slice(payload);
    // The offset and the payload lie together here: one pass over both.
    let crc = frame_crc(&buf[start..start + 4], &[&buf[start + 8..]]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    push_padding(buf, payload.len());
}

/// Appends the header of the frame of `payload` at `offset`, whose payload
/// is written separately.
pub(crate) fn push_header(buf: &mut Vec<u8>, offset: u64, payload: &[u8]) {
    let mut header = header(offset, payload);
    let crc = frame_crc(&header[0..4], &[&header[8..16], payload]);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&header);
}

/// The header of the frame of `payload` at `offset`, but for its checksum.
fn header(offset: u64, payload: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    let len = u32::try_from(payload.len()).expect("record sizes are limited far below 4 GiB");
    let mut header = [0; FRAME_HEADER_LEN];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[8..16].copy_from_slice(&offset.to_le_bytes());
    header
}

/// Appends the zeros that follow a payload of `payload_len` bytes.
pub(crate) fn push_padding(buf: &mut Vec<u8>, payload_len: usize) {
    let padding = frame_len(payload_len) - FRAME_HEADER_LEN - payload_len;
    buf.extend_from_slice(&[0; 8][..padding]);
}

/// The checksum of a frame: of its length field, then of its offset and
/// payload, which follow the checksum field.
fn frame_crc(len: &[u8], offset_and_payload: &[&[u8]]) -> u32 {
    // `Hasher::new` looks up the CPU's features each time.
    static NEW: LazyLock<crc32fast::Hasher> = LazyLock::new(crc32fast::Hasher::new);
    let mut hasher = NEW.clone();
    hasher.update(len);
    for bytes in offset_and_payload {
        hasher.update(bytes);
    }
    hasher.finalize()
}

/// A valid frame found in a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) offset: u64,
    /// Where the payload lies in the data the frame was read from.
    pub(crate) payload: Range<usize>,
    /// Where the next frame starts.
    pub(crate) end: usize,
}

/// Reads and checks the frame at `pos` of `data`.
pub(crate) fn read_frame(data: &[u8], pos: usize) -> Result<Frame, CorruptKind> {
    let header = data
        .get(pos..pos + FRAME_HEADER_LEN)
        .ok_or(CorruptKind::Truncated)?;
    if header.iter().all(|&b| b == 0) {
        return Err(CorruptKind::ZeroedHeader);
    }
    let len = u32_at(header, 0) as usize;
    let payload = pos + FRAME_HEADER_LEN..pos + FRAME_HEADER_LEN + len;
    let end = pos + frame_len(len);
    if end > data.len() {
        return Err(CorruptKind::Truncated);
    }
    let offset_and_payload = &data[pos + 8..payload.end];
    if u32_at(header, 4) != frame_crc(&header[0..4], &[offset_and_payload]) {
        return Err(CorruptKind::ChecksumMismatch);
    }
    Ok(Frame {
        offset: u64_at(header, 8),
        payload,
        end,
    })
}

/// The offset a frame header at `pos` claims, without checking the frame.
/// Used to check that an index entry points at the start of a frame.
pub(crate) fn claimed_offset(data: &[u8], pos: usize) -> Option<u64> {
    data.get(pos..pos + FRAME_HEADER_LEN)
        .map(|header| u64_at(header, 8))
}

/// The payload length a frame header at `pos` claims, without checking the frame.
pub(crate) fn claimed_len(data: &[u8], pos: usize) -> Option<usize> {
    data.get(pos..pos + FRAME_HEADER_LEN)
        .map(|header| u32_at(header, 0) as usize)
}

/// How a walk over consecutive frames ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Where the last valid frame ends.
    pub(crate) end: usize,
    /// The offset after the last valid frame.
    pub(crate) next_offset: u64,
    /// Why the walk stopped before the end of the data, if it did.
    pub(crate) error: Option<CorruptKind>,
}

/// Walks the frames of `data` from `pos`, expecting consecutive offsets from
/// `offset`, and calls `each(offset, pos)` for every valid one. Stops at the
/// end of the data or at the first frame that is damaged or out of place.
/// Nothing but zeros after the last frame is the space the writer fills
/// ahead of its records, not damage: the walk ends there without an error.
pub(crate) fn scan(
    data: &[u8],
    mut pos: usize,
    mut offset: u64,
    mut each: impl FnMut(u64, usize),
) -> Scan {
    while pos < data.len() {
        let error = match read_frame(data, pos) {
            Ok(frame) if frame.offset == offset => {
                each(offset, pos);
                offset += 1;
                pos = frame.end;
                continue;
            }
            Ok(frame) => CorruptKind::WrongOffset {
                expected: offset,
                found: frame.offset,
            },
            Err(_) if data[pos..].iter().all(|&b| b == 0) => break,
            Err(kind) => kind,
        };
        return Scan {
            end: pos,
            next_offset: offset,
            error: Some(error),
        };
    }
    Scan {
        end: pos,
        next_offset: offset,
        error: None,
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(records: &[&[u8]], first: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        for (i, record) in records.iter().enumerate() {
            push_frame(&mut buf, first + i as u64, record);
        }
        buf
    }

    #[test]
    fn frames_round_trip_and_are_padded_to_eight_bytes() {
        let data = frames(&[b"", b"a", b"hello world", &[9; 100]], 40);
        let mut pos = 0;
        for (i, expected) in [&b""[..], b"a", b"hello world", &[9; 100]]
            .iter()
            .enumerate()
        {
            let frame = read_frame(&data, pos).unwrap();
            assert_eq!(frame.offset, 40 + i as u64);
            assert_eq!(&data[frame.payload.clone()], *expected);
            assert_eq!(frame.payload.start % 8, 0);
            assert_eq!(frame.end % 8, 0);
            pos = frame.end;
        }
        assert_eq!(pos, data.len());
    }

    #[test]
    fn zero_filled_space_is_never_a_valid_frame() {
        assert_ne!(crc32fast::hash(&[0; 12]), 0);
        for len in [16, 24, 64, 4096] {
            assert_eq!(read_frame(&vec![0; len], 0), Err(CorruptKind::ZeroedHeader));
        }
        // A header that is zero apart from a valid-looking length is still refused.
        let mut data = vec![0; 64];
        data[0] = 8;
        assert_eq!(read_frame(&data, 0), Err(CorruptKind::ChecksumMismatch));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let data = frames(&[b"some payload bytes"], 7);
        let payload_end = 16 + b"some payload bytes".len();
        for byte in 0..payload_end {
            for bit in 0..8 {
                let mut damaged = data.clone();
                damaged[byte] ^= 1 << bit;
                let result = read_frame(&damaged, 0);
                assert!(
                    result.is_err() || result.as_ref().unwrap().offset != 7,
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let data = frames(&[b"some payload bytes"], 0);
        for len in 0..data.len() {
            assert!(read_frame(&data[..len], 0).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn scan_stops_at_the_first_bad_frame() {
        let mut data = frames(&[b"a", b"b", b"c"], 5);
        let second = frame_len(1);
        data[second + 16] ^= 1;
        let mut seen = Vec::new();
        let scan = scan(&data, 0, 5, |offset, pos| seen.push((offset, pos)));
        assert_eq!(seen, vec![(5, 0)]);
        assert_eq!(
            scan,
            Scan {
                end: second,
                next_offset: 6,
                error: Some(CorruptKind::ChecksumMismatch)
            }
        );
    }

    #[test]
    fn zeros_after_the_last_frame_end_the_scan_cleanly() {
        let mut data = frames(&[b"a", b"b"], 5);
        let end = data.len();
        data.resize(end + 4096, 0);
        let scan_all = |data: &[u8]| scan(data, 0, 5, |_, _| {});
        assert_eq!(
            scan_all(&data),
            Scan {
                end,
                next_offset: 7,
                error: None
            }
        );
        // Anything but zeros after them is a torn or damaged tail.
        data[end + 2048] = 1;
        assert_eq!(scan_all(&data).error, Some(CorruptKind::ZeroedHeader));
        assert_eq!(scan_all(&data).end, end);
    }

    #[test]
    fn scan_refuses_frames_out_of_place() {
        let data = frames(&[b"a", b"b"], 5);
        let scan = scan(&data, 0, 4, |_, _| {});
        assert_eq!(
            scan.error,
            Some(CorruptKind::WrongOffset {
                expected: 4,
                found: 5
            })
        );
    }

    #[test]
    fn segment_headers_round_trip_and_reject_strangers() {
        let header = segment_header(12345);
        assert_eq!(parse_segment_header(&header), Ok(12345));
        assert!(matches!(
            parse_segment_header(b"#!/bin/sh\necho this is a shell script\n"),
            Err(HeaderError::NotASegment(_))
        ));
        assert!(matches!(
            parse_segment_header(&header[..10]),
            Err(HeaderError::NotASegment(_))
        ));
        let mut damaged = header;
        damaged[17] ^= 4;
        assert!(matches!(
            parse_segment_header(&damaged),
            Err(HeaderError::Damaged(_))
        ));
    }
}
