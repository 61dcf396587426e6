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

/// The root struct of a message, read straight from its bytes, for the
/// messages read most (an entry's id for every record a scan passes over,
/// every record read, a task's envelope for every run), where Cap'n
/// Proto's reader took thousands of instructions. It reads only messages
/// of the shape written here: one segment that fills the bytes, pointers
/// with forward offsets to objects inside it, text ending in NUL. For
/// anything else each method says `None`, and the caller reads the message
/// through Cap'n Proto, which reads the same wherever this reads anything
/// (the tests hold it).
pub(crate) struct Root<'a> {
    /// The segment, without the table.
    segment: &'a [u8],
    /// Where the struct starts, in words.
    start: usize,
    data: usize,
    pointers: usize,
    /// Words still to be read: Cap'n Proto stops a message that reads more
    /// than a few times its size (by pointing many pointers at one blob);
    /// this reads at most its size once, well within that limit.
    budget: usize,
}

impl<'a> Root<'a> {
    /// The root struct of the message that is all of `bytes`.
    pub(crate) fn of(bytes: &'a [u8]) -> Option<Self> {
        let table = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let segment = &bytes[8..];
        let words = segment.len() / 8;
        if !segment.len().is_multiple_of(8) || table as u32 != 0 || (table >> 32) as usize != words
        {
            return None;
        }
        let mut root = Root {
            segment,
            start: 0,
            data: 0,
            pointers: 1,
            budget: words,
        };
        // An empty segment has no root pointer.
        root.take(0, 1)?;
        let (target, upper) = root.pointer(0, 0)?;
        let (data, pointers) = ((upper & 0xffff) as usize, (upper >> 16) as usize);
        root.take(target, data + pointers)?;
        Some(Root {
            start: target,
            data,
            pointers,
            ..root
        })
    }

    /// Data word `i`, if the struct has it.
    pub(crate) fn data(&self, i: usize) -> Option<u64> {
        (i < self.data).then(|| self.word(self.start + i))
    }

    /// Pointer `i` as a `blob` (empty if null), if it is a byte list.
    pub(crate) fn blob(&mut self, i: usize, blob: Blob) -> Option<&'a [u8]> {
        self.pointer_word(i)?;
        self.blob_at(self.start + self.data + i, blob)
    }

    /// Pointer `i` as a list of structs of two `blob` pointers (a record's
    /// fields or headers), each pair as `each` makes it; empty if null.
    pub(crate) fn pairs<T>(
        &mut self,
        i: usize,
        blob: Blob,
        mut each: impl FnMut(&'a [u8], &'a [u8]) -> T,
    ) -> Option<Vec<T>> {
        if self.pointer_word(i)? == 0 {
            return Some(Vec::new());
        }
        const INLINE_COMPOSITE: u32 = 7;
        let (target, upper) = self.pointer(self.start + self.data + i, 1)?;
        let words = (upper >> 3) as usize;
        if upper & 7 != INLINE_COMPOSITE {
            return None;
        }
        self.take(target, 1 + words)?;
        // The tag: a struct pointer whose offset is the element count, each
        // element of no data words and two pointers.
        let tag = self.word(target);
        let count = (tag as u32 >> 2) as usize;
        if tag as u32 & 3 != 0 || (tag >> 32) as u32 != 2 << 16 || 2 * count != words {
            return None;
        }
        // Sized exactly (`count` is within the checked words): a collected
        // `Option<Vec>` starts at four pairs, a 256-byte block that glibc
        // frees under its arena's lock, where one pair's block is freed
        // without one (the fields are freed on another thread, by a worker).
        let mut pairs = Vec::with_capacity(count);
        for element in 0..count {
            let at = target + 1 + 2 * element;
            pairs.push(each(self.blob_at(at, blob)?, self.blob_at(at + 1, blob)?));
        }
        Some(pairs)
    }

    /// The pointer at word `at` as a `blob` (empty if null), if it is a
    /// byte list.
    fn blob_at(&mut self, at: usize, blob: Blob) -> Option<&'a [u8]> {
        if self.word(at) == 0 {
            return Some(&[]);
        }
        const BYTE: u32 = 2;
        let (target, upper) = self.pointer(at, 1)?;
        let count = (upper >> 3) as usize;
        if upper & 7 != BYTE {
            return None;
        }
        self.take(target, count.div_ceil(8))?;
        let bytes = &self.segment[8 * target..8 * target + count];
        match blob {
            Blob::Data => Some(bytes),
            Blob::Text => match bytes.split_last() {
                Some((0, text)) => Some(text),
                _ => None,
            },
        }
    }

    /// Whether pointer `i` is a list with no elements (or null); `None` if
    /// it is anything else.
    pub(crate) fn empty_list(&mut self, i: usize) -> Option<()> {
        if self.pointer_word(i)? == 0 {
            return Some(());
        }
        const INLINE_COMPOSITE: u32 = 7;
        let (target, upper) = self.pointer(self.start + self.data + i, 1)?;
        // A list of structs of no words: just its tag, a struct pointer
        // whose offset is the element count (zero).
        if upper != INLINE_COMPOSITE {
            return None;
        }
        self.take(target, 1)?;
        (self.word(target) as u32 == 0).then_some(())
    }

    fn word(&self, at: usize) -> u64 {
        u64::from_le_bytes(
            self.segment[8 * at..8 * at + 8]
                .try_into()
                .expect("8 bytes"),
        )
    }

    fn pointer_word(&self, i: usize) -> Option<u64> {
        (i < self.pointers).then(|| self.word(self.start + self.data + i))
    }

    /// The pointer at word `at`, if it is of `kind` with a forward offset:
    /// where it points and its upper half.
    fn pointer(&self, at: usize, kind: u32) -> Option<(usize, u32)> {
        let pointer = self.word(at);
        let (lower, upper) = (pointer as u32, (pointer >> 32) as u32);
        if lower & 3 != kind || (lower as i32) < 0 {
            return None;
        }
        Some((at + 1 + (lower >> 2) as usize, upper))
    }

    /// Reads `words` words at `target`, if they are inside the segment and
    /// the budget allows.
    fn take(&mut self, target: usize, words: usize) -> Option<()> {
        let inside = target.checked_add(words)? <= self.segment.len() / 8;
        self.budget = self.budget.checked_sub(words).filter(|_| inside)?;
        Some(())
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

/// Every single damage of a message, for the tests that hold the direct
/// reads to Cap'n Proto: each byte changed by `bits`, each word zeroed,
/// each shorter length.
#[cfg(test)]
pub(crate) fn single_damages(bytes: &[u8], bits: u8) -> impl Iterator<Item = Vec<u8>> + '_ {
    let damaged = |damage: &dyn Fn(&mut Vec<u8>)| {
        let mut copy = bytes.to_vec();
        damage(&mut copy);
        copy
    };
    let changed = (0..bytes.len()).map(move |at| damaged(&|b| b[at] ^= bits));
    let zeroed = (0..bytes.len() / 8).map(move |w| damaged(&|b| b[8 * w..8 * w + 8].fill(0)));
    let cut = (0..bytes.len() / 8).map(move |w| bytes[..8 * w].to_vec());
    changed.chain(zeroed).chain(cut)
}
