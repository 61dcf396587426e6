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
