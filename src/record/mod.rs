//! Records: the Cap'n Proto message that the layers above the log store in
//! each log record (schema: `schema/record.capnp`).
//!
//! A record is a stream entry in the Redis model: its [`StreamId`], an
//! ordered list of field/value byte pairs, the time it was created and
//! headers for metadata. Decoding reads the message in place: field names and
//! values come back as slices of the input [`Bytes`], so a record read from a
//! segment log's memory map is never copied.

#[rustfmt::skip]
#[allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
pub(crate) mod record_capnp;

pub(crate) mod layout;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use capnp::message::{Builder, HeapAllocator, ReaderOptions};
use capnp::serialize;

use self::layout::{Blob, MAX_LIST, Segment, struct_pointer};

/// The id of a stream entry, `<ms>-<seq>`: two 64-bit numbers that order as
/// one 128-bit number, milliseconds first.
///
/// ```
/// use orcastra::record::StreamId;
///
/// let id = StreamId::new(1_700_000_000_000, 3);
/// assert_eq!(id.to_string(), "1700000000000-3");
/// assert!(id < StreamId::new(1_700_000_000_001, 0));
/// assert_eq!(id.next(), Some(StreamId::new(1_700_000_000_000, 4)));
/// assert_eq!("1700000000000-3".parse(), Ok(id));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// The time part, usually milliseconds since the Unix epoch.
    pub ms: u64,
    /// The sequence number within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// `0-0`, which no entry can have.
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    /// The largest id.
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// The id `<ms>-<seq>`.
    pub const fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }

    /// The smallest id after this one, if there is one.
    pub fn next(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| StreamId { ms, seq: 0 }),
        }
    }

    /// The largest id before this one, if there is one.
    pub fn prev(self) -> Option<StreamId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self
                .ms
                .checked_sub(1)
                .map(|ms| StreamId { ms, seq: u64::MAX }),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The text is not an entry id: `<ms>-<seq>`, or `<ms>` for `<ms>-0`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Invalid stream ID specified as stream command argument")]
pub struct InvalidStreamId;

impl FromStr for StreamId {
    type Err = InvalidStreamId;

    fn from_str(text: &str) -> Result<Self, InvalidStreamId> {
        let number = |part: &str| {
            // u64's parser takes a leading `+`, which Redis refuses.
            if part.starts_with('+') {
                return Err(InvalidStreamId);
            }
            part.parse::<u64>().map_err(|_| InvalidStreamId)
        };
        match text.split_once('-') {
            Some((ms, seq)) => Ok(StreamId::new(number(ms)?, number(seq)?)),
            None => Ok(StreamId::new(number(text)?, 0)),
        }
    }
}

/// Why bytes could not be decoded as a [`Record`].
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not a valid Cap'n Proto `Record` message.
    #[error("not a valid record: {0}")]
    Decode(#[from] capnp::Error),
    /// A valid message is followed by more bytes.
    #[error("not a valid record: {0} unexpected bytes after the message")]
    TrailingBytes(usize),
}

/// A stream entry with its creation time and headers.
///
/// ```
/// use orcastra::record::Record;
///
/// let record = Record::new(1_700_000_000_000)
///     .field("url", "https://example.com")
///     .field("depth", "2")
///     .header("trace-id", "abc123");
/// let decoded = Record::decode(record.encode().into())?;
/// assert_eq!(decoded, record);
/// # Ok::<(), orcastra::record::RecordError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The entry's id in its stream (`0-0` for records that are not entries).
    pub id: StreamId,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Field/value pairs in order; names may repeat.
    pub fields: Vec<(Bytes, Bytes)>,
    /// Metadata pairs in order.
    pub headers: Vec<(Bytes, Bytes)>,
}

impl Record {
    /// A record with no fields, created at `timestamp_ms`.
    pub fn new(timestamp_ms: u64) -> Self {
        Record {
            timestamp_ms,
            ..Record::default()
        }
    }

    /// Sets the entry id.
    pub fn id(mut self, id: StreamId) -> Self {
        self.id = id;
        self
    }

    /// Adds a field.
    pub fn field(mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The record as a Cap'n Proto message (a multiple of 8 bytes).
    ///
    /// # Panics
    ///
    /// If a name or value is 512 MiB or more, which Cap'n Proto cannot
    /// hold (no log takes such a record either).
    pub fn encode(&self) -> Vec<u8> {
        let mut encoder = Encoder::default();
        encoder.push(
            self.id,
            self.timestamp_ms,
            borrowed(&self.fields),
            borrowed(&self.headers),
        );
        if let Some(size) = encoder.too_large() {
            panic!("a record of {size} bytes has a name or value too large for Cap'n Proto");
        }
        encoder.bytes
    }

    /// Decodes a record, its names and values sharing `bytes`. A record as
    /// written here is read straight from its bytes; any other goes through
    /// Cap'n Proto's reader (which copies `bytes` once unless it is 8-byte
    /// aligned, as records from a segment log are). Any input gives a record
    /// or an error, never a panic.
    pub fn decode(bytes: Bytes) -> Result<Record, RecordError> {
        match direct_record(&bytes) {
            Some(record) => Ok(record),
            None => Record::read_capnp(bytes),
        }
    }

    /// Decodes a record through Cap'n Proto's reader.
    fn read_capnp(bytes: Bytes) -> Result<Record, RecordError> {
        if bytes.as_ptr().align_offset(8) != 0 {
            return Record::read_capnp(aligned_copy(&bytes));
        }
        with_root(&bytes, |root| {
            let pairs = |list: capnp::struct_list::Reader<'_, record_capnp::field::Owned>| {
                list.iter()
                    .map(|field| {
                        Ok((
                            bytes.slice_ref(field.get_name()?),
                            bytes.slice_ref(field.get_value()?),
                        ))
                    })
                    .collect::<Result<Vec<_>, capnp::Error>>()
            };
            Ok(Record {
                id: StreamId::new(root.get_id_ms(), root.get_id_seq()),
                timestamp_ms: root.get_timestamp_ms(),
                fields: pairs(root.get_fields()?)?,
                headers: pairs(root.get_headers()?)?,
            })
        })
    }

    /// The entry id of an encoded record, without decoding its fields.
    pub fn read_id(bytes: &[u8]) -> Result<StreamId, RecordError> {
        if let Some(id) = direct_id(bytes) {
            return Ok(id);
        }
        with_root(bytes, |root| {
            Ok(StreamId::new(root.get_id_ms(), root.get_id_seq()))
        })
    }
}

/// A record read straight from its bytes (see [`layout::Root`]), its names
/// and values shared with them.
fn direct_record(bytes: &Bytes) -> Option<Record> {
    let mut root = layout::Root::of(bytes)?;
    let share = |name, value| (bytes.slice_ref(name), bytes.slice_ref(value));
    Some(Record {
        timestamp_ms: root.data(0)?,
        id: StreamId::new(root.data(1)?, root.data(2)?),
        fields: root.pairs(0, Blob::Data, share)?,
        headers: root.pairs(1, Blob::Data, share)?,
    })
}

/// A record's id read straight from its bytes (see [`layout::Root`]).
fn direct_id(bytes: &[u8]) -> Option<StreamId> {
    let root = layout::Root::of(bytes)?;
    Some(StreamId::new(root.data(1)?, root.data(2)?))
}

/// Name/value pairs as the encoder takes them.
pub(crate) trait Pairs<'a>: Iterator<Item = (&'a [u8], &'a [u8])> + Clone {}

impl<'a, T: Iterator<Item = (&'a [u8], &'a [u8])> + Clone> Pairs<'a> for T {}

/// Owned pairs lent to the encoder.
fn borrowed(pairs: &[(Bytes, Bytes)]) -> impl Pairs<'_> {
    pairs.iter().map(|(name, value)| (&name[..], &value[..]))
}

/// How many pairs there are, the words they take in a message (a name and
/// a value pointer each, and their bytes padded to words), and the length
/// of the longest name or value.
fn measure<'a>(pairs: impl Pairs<'a>) -> (usize, usize, usize) {
    pairs.fold((0, 0, 0), |(count, words, longest), (name, value)| {
        let data = name.len().div_ceil(8) + value.len().div_ceil(8);
        let longest = longest.max(name.len()).max(value.len());
        (count + 1, words + 2 + data, longest)
    })
}

/// An entry about to be appended to a stream, encoded straight from what
/// it is made of: a run state need not become name/value `Bytes` first.
pub(crate) trait NewEntry {
    /// Encodes this entry as the record of entry `id`, made at
    /// `timestamp_ms`.
    fn encode(&self, id: StreamId, timestamp_ms: u64, encoder: &mut Encoder);

    /// Its fields as owned pairs, for backends that take them so (Redis).
    #[cfg(feature = "redis")]
    fn to_fields(&self) -> Vec<(Bytes, Bytes)>;
}

impl NewEntry for Vec<(Bytes, Bytes)> {
    fn encode(&self, id: StreamId, timestamp_ms: u64, encoder: &mut Encoder) {
        encoder.push(id, timestamp_ms, borrowed(self), std::iter::empty());
    }

    #[cfg(feature = "redis")]
    fn to_fields(&self) -> Vec<(Bytes, Bytes)> {
        self.clone()
    }
}

/// Encodes records one after another into one buffer.
#[derive(Default)]
pub(crate) struct Encoder {
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<usize>,
    /// The size of the largest record left out because Cap'n Proto cannot
    /// hold it (a name or value of 512 MiB or more), if any.
    too_large: Option<usize>,
}

impl Encoder {
    /// Encodes a record after the others: that of entry `id`, made at
    /// `timestamp_ms`, with these fields and headers.
    pub(crate) fn push<'a, 'b>(
        &mut self,
        id: StreamId,
        timestamp_ms: u64,
        fields: impl Pairs<'a>,
        headers: impl Pairs<'b>,
    ) {
        match write_record(&mut self.bytes, id, timestamp_ms, fields, headers) {
            Ok(()) => self.ends.push(self.bytes.len()),
            Err(size) => self.too_large = self.too_large.max(Some(size)),
        }
    }

    /// The size of the largest record too large to encode since the last
    /// [`clear`](Self::clear): such a record is left out, and its batch
    /// must not be written.
    pub(crate) fn too_large(&self) -> Option<usize> {
        self.too_large
    }

    /// Forgets the records encoded so far, keeping the buffers for the
    /// next ones unless they grew past `keep` bytes.
    pub(crate) fn clear(&mut self, keep: usize) {
        if self.bytes.capacity() > keep {
            *self = Encoder::default();
        } else {
            self.bytes.clear();
            self.ends.clear();
            self.too_large = None;
        }
    }

    /// The records encoded so far, in order.
    pub(crate) fn records(&self) -> Vec<&[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.bytes[start..end])
            .collect()
    }
}

/// A message builder whose first segment holds `words` words (more are
/// added if the message outgrows it). Cap'n Proto's default first segment
/// is 8 KiB, allocated zeroed, which costs more than encoding a small
/// message: give it about the message's size.
pub(crate) fn builder(words: usize) -> Builder<HeapAllocator> {
    Builder::new(HeapAllocator::new().first_segment_words(u32::try_from(words).unwrap_or(u32::MAX)))
}

/// Runs `read` on the root of the record message in `bytes` (8-byte aligned).
fn with_root<T>(
    bytes: &[u8],
    read: impl FnOnce(record_capnp::record::Reader<'_>) -> Result<T, capnp::Error>,
) -> Result<T, RecordError> {
    read_message(bytes, |message| read(message.get_root()?))
}

/// Runs `read` on the Cap'n Proto message that is all of `bytes`, in place
/// when `bytes` is 8-byte aligned and in an aligned copy otherwise.
pub(crate) fn read_message<T>(
    bytes: &[u8],
    read: impl FnOnce(
        capnp::message::Reader<serialize::NoAllocSliceSegments<'_>>,
    ) -> Result<T, capnp::Error>,
) -> Result<T, RecordError> {
    if bytes.as_ptr().align_offset(8) != 0 {
        return read_message(&aligned_copy(bytes), read);
    }
    let mut rest = bytes;
    let message =
        serialize::read_message_from_flat_slice_no_alloc(&mut rest, options(bytes.len()))?;
    if !rest.is_empty() {
        return Err(RecordError::TrailingBytes(rest.len()));
    }
    Ok(read(message)?)
}

/// Appends the `Record` message of these parts to `out`, laid out word for
/// word as Cap'n Proto's builder lays it out (the tests hold the two to
/// it). Every state of every task is a record: the builder took about
/// 2900 instructions to build one (a quarter of a no-op task's), this
/// takes about 1000.
///
/// The layout, in one segment after its 8-byte table: the root pointer;
/// the root struct (data: timestamp, id ms, id seq; pointers: fields,
/// headers); the fields list (a tag word, then a name and a value pointer
/// per field), each name and value after it in order, padded to words;
/// then the headers the same way, if there are any (none is a null
/// pointer).
///
/// A record Cap'n Proto cannot hold (a name or value, or a list's words,
/// of 2^29 or more) is not written: the error is its size in bytes.
fn write_record<'a, 'b>(
    out: &mut Vec<u8>,
    id: StreamId,
    timestamp_ms: u64,
    fields: impl Pairs<'a>,
    headers: impl Pairs<'b>,
) -> Result<(), usize> {
    let fields_size = measure(fields.clone());
    let headers_size = measure(headers.clone());
    // The root pointer and struct, then each list's tag word and its
    // fields (the fields list is there even if empty, the headers' not).
    let headers_words = match headers_size {
        (0, ..) => 0,
        (_, words, _) => 1 + words,
    };
    let words = 6 + 1 + fields_size.1 + headers_words;
    let longest = fields_size.2.max(headers_size.2);
    if longest >= MAX_LIST || fields_size.1.max(headers_size.1) >= MAX_LIST {
        return Err(8 + 8 * words);
    }
    let mut segment = Segment::append(out, words);
    segment.put(0, struct_pointer(0, 3, 2));
    segment.put(1, timestamp_ms);
    segment.put(2, id.ms);
    segment.put(3, id.seq);
    let next = segment.put_pairs(4, 6, fields_size.0, Blob::Data, fields);
    let end = match headers_size.0 {
        0 => next,
        count => segment.put_pairs(5, next, count, Blob::Data, headers),
    };
    debug_assert_eq!(end, words);
    Ok(())
}

/// Reading a valid record visits each of its words about once, so a hostile
/// message (say, a list of a billion empty structs, which takes no space)
/// is stopped after a few times its own size, bounding time and memory.
fn options(len: usize) -> ReaderOptions {
    *ReaderOptions::new()
        .traversal_limit_in_words(Some(len / 8 * 4 + 64))
        .nesting_limit(16)
}

/// A copy of `bytes` in memory aligned for Cap'n Proto.
fn aligned_copy(bytes: &[u8]) -> Bytes {
    struct Aligned {
        words: Vec<capnp::Word>,
        len: usize,
    }
    impl AsRef<[u8]> for Aligned {
        fn as_ref(&self) -> &[u8] {
            &capnp::Word::words_to_bytes(&self.words)[..self.len]
        }
    }
    let mut words = capnp::Word::allocate_zeroed_vec(bytes.len().div_ceil(8));
    capnp::Word::words_to_bytes_mut(&mut words)[..bytes.len()].copy_from_slice(bytes);
    Bytes::from_owner(Aligned {
        words,
        len: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_as_redis_writes_them() {
        assert_eq!("5-3".parse(), Ok(StreamId::new(5, 3)));
        assert_eq!("5".parse(), Ok(StreamId::new(5, 0)));
        assert_eq!(
            "18446744073709551615-18446744073709551615".parse(),
            Ok(StreamId::MAX)
        );
        for bad in [
            "",
            "-",
            "5-",
            "-3",
            "+5-3",
            "5-+3",
            "5-3-1",
            "a-1",
            "18446744073709551616",
        ] {
            assert_eq!(bad.parse::<StreamId>(), Err(InvalidStreamId), "{bad}");
        }
    }

    fn sample() -> Record {
        Record::new(42)
            .id(StreamId::new(7, 9))
            .field("a", "1")
            .field("a", "")
            .field(Bytes::from_static(&[0, 255]), "binary name")
            .header("h", "v")
    }

    #[test]
    fn records_round_trip_and_share_the_input() {
        let encoded = Bytes::from(sample().encode());
        let decoded = Record::decode(encoded.clone()).unwrap();
        assert_eq!(decoded, sample());
        if encoded.as_ptr().align_offset(8) == 0 {
            let range = encoded.as_ptr_range();
            assert!(range.contains(&decoded.fields[0].1.as_ptr()));
        }
    }

    #[test]
    fn the_id_reads_without_the_fields() {
        let encoded = Bytes::from(sample().encode());
        assert_eq!(Record::read_id(&encoded).unwrap(), StreamId::new(7, 9));
        assert!(Record::read_id(&Bytes::from_static(b"garbage!")).is_err());
    }

    #[test]
    fn ids_step_over_their_parts() {
        assert_eq!(StreamId::new(1, u64::MAX).next(), Some(StreamId::new(2, 0)));
        assert_eq!(StreamId::MAX.next(), None);
        assert_eq!(StreamId::new(2, 0).prev(), Some(StreamId::new(1, u64::MAX)));
        assert_eq!(StreamId::MIN.prev(), None);
    }

    #[test]
    fn unaligned_input_is_decoded() {
        let encoded = sample().encode();
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&encoded);
        let unaligned = Bytes::from(shifted).slice(1..);
        assert_eq!(Record::decode(unaligned.clone()).unwrap(), sample());
        // Cap'n Proto's reader, for other shapes, reads an aligned copy.
        assert_eq!(Record::read_capnp(unaligned).unwrap(), sample());
    }

    #[test]
    fn a_huge_list_of_empty_fields_is_refused_without_allocating_it() {
        // Written by the fuzzer: a field list that claims many elements of
        // zero size, which would decode into gigabytes of empty pairs.
        let hostile =
            include_bytes!("../../fuzz/corpus/decode_record/regression-empty-struct-list");
        assert!(Record::decode(Bytes::from_static(hostile)).is_err());
    }

    #[test]
    fn garbage_and_trailing_bytes_are_errors() {
        assert!(Record::decode(Bytes::from_static(b"definitely not capnp")).is_err());
        assert!(Record::decode(Bytes::new()).is_err());
        // Found by the fuzzer: a segment table naming one empty segment,
        // which has no room for the root pointer.
        let empty_segment = Bytes::from_static(&[0; 8]);
        assert!(Record::decode(empty_segment.clone()).is_err());
        assert!(Record::read_id(&empty_segment).is_err());
        let mut encoded = sample().encode();
        encoded.extend_from_slice(&[0; 8]);
        assert!(matches!(
            Record::decode(encoded.into()),
            Err(RecordError::TrailingBytes(8))
        ));
    }

    /// The message Cap'n Proto's own builder makes of a record: what the
    /// encoder must write, byte for byte.
    fn built_by_capnp(record: &Record) -> Vec<u8> {
        let mut message = builder(1 << 16);
        let mut root = message.init_root::<record_capnp::record::Builder<'_>>();
        root.set_timestamp_ms(record.timestamp_ms);
        root.set_id_ms(record.id.ms);
        root.set_id_seq(record.id.seq);
        let fill = |mut list: capnp::struct_list::Builder<'_, record_capnp::field::Owned>,
                    pairs: &[(Bytes, Bytes)]| {
            for (i, (name, value)) in pairs.iter().enumerate() {
                let mut field = list.reborrow().get(i as u32);
                field.set_name(name);
                field.set_value(value);
            }
        };
        fill(
            root.reborrow().init_fields(record.fields.len() as u32),
            &record.fields,
        );
        if !record.headers.is_empty() {
            fill(
                root.init_headers(record.headers.len() as u32),
                &record.headers,
            );
        }
        serialize::write_message_to_words(&message)
    }

    fn pairs() -> impl proptest::strategy::Strategy<Value = Vec<(Bytes, Bytes)>> {
        use proptest::prelude::*;
        let data = || proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from);
        proptest::collection::vec((data(), data()), 0..6)
    }

    proptest::proptest! {
        /// Where the id is read straight from the bytes (always, for a
        /// record as written here), Cap'n Proto reads the same id, after any
        /// single damage and after random ones.
        #[test]
        fn ids_read_directly_are_those_capnp_reads(
            ms in proptest::prelude::any::<u64>(),
            seq in proptest::prelude::any::<u64>(),
            fields in pairs(),
            flips in proptest::collection::vec(
                (proptest::prelude::any::<bool>(), proptest::prelude::any::<usize>(), 1..=255u8),
                0..4,
            ),
            random in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            bits in 1..=255u8,
        ) {
            let id = StreamId::new(ms, seq);
            let record = Record { id, timestamp_ms: 1, fields, headers: Vec::new() };
            let mut bytes = record.encode();
            proptest::prop_assert_eq!(direct_id(&bytes), Some(id));
            let by_capnp = |bytes: &[u8]| {
                with_root(bytes, |root| Ok(StreamId::new(root.get_id_ms(), root.get_id_seq()))).ok()
            };
            for damaged in layout::single_damages(&bytes, bits) {
                if let Some(id) = direct_id(&damaged) {
                    proptest::prop_assert_eq!(by_capnp(&damaged), Some(id), "{:?}", damaged);
                }
            }
            // Damage, mostly in the segment table and the root pointer.
            for (head, at, bits) in flips {
                let i = at % if head { 16 } else { bytes.len() };
                bytes[i] ^= bits;
            }
            for bytes in [&bytes[..], &bytes[..bytes.len() - 8], &random] {
                if let Some(id) = direct_id(bytes) {
                    proptest::prop_assert_eq!(by_capnp(bytes), Some(id));
                }
            }
        }

        /// Wherever a record is read straight from its bytes (always, for
        /// one as written here), Cap'n Proto reads the same, whatever
        /// single damage the bytes took.
        #[test]
        fn records_read_directly_are_those_capnp_reads(
            ms in proptest::prelude::any::<u64>(),
            timestamp_ms in proptest::prelude::any::<u64>(),
            fields in pairs(),
            headers in pairs(),
            bits in 1..=255u8,
        ) {
            let record = Record { id: StreamId::new(ms, 7), timestamp_ms, fields, headers };
            let bytes = record.encode();
            let read = direct_record(&Bytes::from(bytes.clone()));
            // At their exact size: a worker frees them on another thread,
            // where glibc takes a lock for larger blocks (see `pairs`).
            if let Some(read) = &read {
                proptest::prop_assert_eq!(read.fields.capacity(), read.fields.len());
            }
            proptest::prop_assert_eq!(read, Some(record));
            for damaged in layout::single_damages(&bytes, bits) {
                let damaged = Bytes::from(damaged);
                if let Some(direct) = direct_record(&damaged) {
                    proptest::prop_assert_eq!(Record::read_capnp(damaged).ok(), Some(direct));
                }
            }
        }

        #[test]
        fn records_are_written_as_capnp_builds_them(
            ms in proptest::prelude::any::<u64>(),
            seq in proptest::prelude::any::<u64>(),
            timestamp_ms in proptest::prelude::any::<u64>(),
            fields in pairs(),
            headers in pairs(),
        ) {
            let record = Record { id: StreamId::new(ms, seq), timestamp_ms, fields, headers };
            let encoded = record.encode();
            proptest::prop_assert_eq!(&encoded, &built_by_capnp(&record));
            proptest::prop_assert_eq!(Record::decode(encoded.into()).unwrap(), record);
        }
    }
}
