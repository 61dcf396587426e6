//! Cap'n Proto messages written word by word, laid out exactly as the
//! library's builder lays them out, for the two messages on the hot path (a
//! record, a task envelope). Their tests compare the bytes with the
//! builder's; everything else goes through the builder.
//!
//! A message here is one segment after its 8-byte segment table. Each
//! pointed-to object is placed at the next free word, in the order the
//! builder's setters would allocate it.

/// Cap'n Proto's bound on a list's elements (bytes, or words of structs).
pub(crate) const MAX_LIST: usize = 1 << 29;

/// How a byte list is kept.
#[derive(Clone, Copy)]
pub(crate) enum Blob {
    /// `Data`: the bytes.
    Data,
    /// `Text`: the bytes and a NUL.
    Text,
}

impl Blob {
    /// The list's elements for `bytes`.
    pub(crate) fn count(self, bytes: &[u8]) -> usize {
        match self {
            Blob::Data => bytes.len(),
            Blob::Text => bytes.len() + 1,
        }
    }

    /// The words `bytes` take, padded.
    pub(crate) fn words(self, bytes: &[u8]) -> usize {
        self.count(bytes).div_ceil(8)
    }
}

/// A message segment being written, addressed in words.
pub(crate) struct Segment<'a>(&'a mut [u8]);

impl<'a> Segment<'a> {
    /// Appends a zeroed message of one segment of `words` words (under
    /// 2^32) to `out`, and returns that segment.
    pub(crate) fn append(out: &'a mut Vec<u8>, words: usize) -> Self {
        let start = out.len();
        out.resize(start + 8 + 8 * words, 0);
        let message = &mut out[start..];
        message[4..8].copy_from_slice(&(words as u32).to_le_bytes());
        Segment(&mut message[8..])
    }

    /// Writes `value` at word `word`.
    pub(crate) fn put(&mut self, word: usize, value: u64) {
        self.0[8 * word..8 * word + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Writes `bytes` as a `blob` at word `next`, with its pointer at word
    /// `at`; returns the next free word.
    pub(crate) fn put_blob(&mut self, at: usize, next: usize, blob: Blob, bytes: &[u8]) -> usize {
        const BYTE: u32 = 2;
        self.put(at, list_pointer(at, next, BYTE, blob.count(bytes)));
        self.0[8 * next..8 * next + bytes.len()].copy_from_slice(bytes);
        next + blob.words(bytes)
    }

    /// Writes the `count` `pairs` as a list of structs of two `blob`
    /// pointers (a record's `Field`, an envelope's `Header`) starting at
    /// word `next`, with its pointer at word `at`; returns the next free
    /// word.
    pub(crate) fn put_pairs<'p>(
        &mut self,
        at: usize,
        next: usize,
        count: usize,
        blob: Blob,
        pairs: impl Iterator<Item = (&'p [u8], &'p [u8])>,
    ) -> usize {
        const INLINE_COMPOSITE: u32 = 7;
        self.put(at, list_pointer(at, next, INLINE_COMPOSITE, 2 * count));
        // The tag: a struct pointer whose offset is the element count.
        self.put(next, struct_pointer(count, 0, 2));
        let elements = next + 1;
        let mut next = elements + 2 * count;
        for (i, (name, value)) in pairs.enumerate() {
            next = self.put_blob(elements + 2 * i, next, blob, name);
            next = self.put_blob(elements + 2 * i + 1, next, blob, value);
        }
        next
    }
}

/// The first `N` data words of the root struct of the message that is all
/// of `bytes`, read straight from the bytes, if the message has the shape
/// written here: one segment that fills `bytes`, and a root struct pointer
/// with a forward offset to a struct of at least `N` data words inside it.
/// Otherwise `None`, and the caller reads it through Cap'n Proto (which
/// gives the same words where this gives any, the tests hold it): an
/// entry's id is read this way for every record a scan passes over, where
/// the library's reader took about 700 instructions.
pub(crate) fn root_data<const N: usize>(bytes: &[u8]) -> Option<[u64; N]> {
    let word = |i: usize| {
        let bytes = bytes.get(8 * i..8 * i + 8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    };
    let table = word(0)?;
    let words = bytes.len() / 8 - 1;
    if !bytes.len().is_multiple_of(8) || table as u32 != 0 || (table >> 32) as usize != words {
        return None;
    }
    let root = word(1)?;
    let (lower, upper) = (root as u32, (root >> 32) as u32);
    // A struct pointer (kind 0) with a non-negative offset.
    if lower & 3 != 0 || (lower as i32) < 0 {
        return None;
    }
    let start = 1 + (lower >> 2) as usize;
    let (data, pointers) = ((upper & 0xffff) as usize, (upper >> 16) as usize);
    if data < N || start + data + pointers > words {
        return None;
    }
    let mut found = [0; N];
    for (i, value) in found.iter_mut().enumerate() {
        // The segment starts after the table: segment word w is word w + 1.
        *value = word(1 + start + i)?;
    }
    Some(found)
}

/// A struct pointer (kind 0) with `offset` in its offset bits.
pub(crate) fn struct_pointer(offset: usize, data_words: u16, pointers: u16) -> u64 {
    let lower = (offset as u32) << 2;
    let upper = u32::from(data_words) | (u32::from(pointers) << 16);
    u64::from(lower) | (u64::from(upper) << 32)
}

/// A list pointer (kind 1) at word `at` to the list at word `target`, of
/// `count` elements (words, for an inline-composite list) of `size`;
/// `count` is under [`MAX_LIST`].
fn list_pointer(at: usize, target: usize, size: u32, count: usize) -> u64 {
    let lower = (((target - at - 1) as u32) << 2) | 1;
    let upper = ((count as u32) << 3) | size;
    u64::from(lower) | (u64::from(upper) << 32)
}
