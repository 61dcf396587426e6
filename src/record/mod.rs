//! Records: the Cap'n Proto message that the layers above the log store in
//! each log record (schema: `schema/record.capnp`).
//!
//! A record is a stream entry in the Redis model: an ordered list of
//! field/value byte pairs, plus the time it was created and headers for
//! metadata. Decoding reads the message in place: field names and values
//! come back as slices of the input [`Bytes`], so a record read from a
//! segment log's memory map is never copied.

#[rustfmt::skip]
#[allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
pub(crate) mod record_capnp;

use bytes::Bytes;
use capnp::message::{Builder, ReaderOptions};
use capnp::serialize;

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
    pub fn encode(&self) -> Vec<u8> {
        let mut message = Builder::new_default();
        let mut root = message.init_root::<record_capnp::record::Builder<'_>>();
        root.set_timestamp_ms(self.timestamp_ms);
        let fill = |mut list: capnp::struct_list::Builder<'_, record_capnp::field::Owned>,
                    pairs: &[(Bytes, Bytes)]| {
            for (i, (name, value)) in pairs.iter().enumerate() {
                let mut field = list.reborrow().get(i as u32);
                field.set_name(name);
                field.set_value(value);
            }
        };
        fill(
            root.reborrow().init_fields(list_len(&self.fields)),
            &self.fields,
        );
        fill(root.init_headers(list_len(&self.headers)), &self.headers);
        serialize::write_message_to_words(&message)
    }

    /// Decodes a record, sharing `bytes` for the names and values when it is
    /// 8-byte aligned (as records from a segment log are) and copying it once
    /// otherwise. Any input gives a record or an error, never a panic.
    pub fn decode(bytes: Bytes) -> Result<Record, RecordError> {
        if bytes.as_ptr().align_offset(8) != 0 {
            return Record::decode(aligned_copy(&bytes));
        }
        let mut rest: &[u8] = &bytes;
        let message =
            serialize::read_message_from_flat_slice_no_alloc(&mut rest, options(bytes.len()))?;
        if !rest.is_empty() {
            return Err(RecordError::TrailingBytes(rest.len()));
        }
        let root = message.get_root::<record_capnp::record::Reader<'_>>()?;
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
            timestamp_ms: root.get_timestamp_ms(),
            fields: pairs(root.get_fields()?)?,
            headers: pairs(root.get_headers()?)?,
        })
    }
}

fn list_len(pairs: &[(Bytes, Bytes)]) -> u32 {
    u32::try_from(pairs.len()).expect("fewer than 2^32 fields")
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

    fn sample() -> Record {
        Record::new(42)
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
    fn unaligned_input_is_copied_and_decoded() {
        let encoded = sample().encode();
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&encoded);
        let unaligned = Bytes::from(shifted).slice(1..);
        assert_eq!(Record::decode(unaligned).unwrap(), sample());
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
        let mut encoded = sample().encode();
        encoded.extend_from_slice(&[0; 8]);
        assert!(matches!(
            Record::decode(encoded.into()),
            Err(RecordError::TrailingBytes(8))
        ));
    }
}
