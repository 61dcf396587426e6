//! Read-only memory maps of log files: the only `unsafe` code in Orcastra.
//!
//! Reading a mapped file is only sound while nobody changes or truncates the
//! mapped bytes: a truncated page raises `SIGBUS`, and a changed byte breaks
//! the promise of an `&[u8]`. The rest of the crate keeps this contract:
//!
//! 1. **One owner.** A log holds an exclusive lock on its directory (or text
//!    file) for as long as it is open, so no other Orcastra process writes to
//!    the files it maps. Other programs must leave the directory alone.
//! 2. **Append only.** Bytes that were shown through [`MmapView::bytes`] are
//!    never written again: the active segment only grows, sealed segments are
//!    never rewritten, and retention removes whole files (unlinking keeps a
//!    mapped file alive until its last map is gone).
//! 3. **Truncation before mapping.** Recovery cuts a torn tail before the file
//!    is mapped. It only ever cuts bytes that were never shown to a reader, so
//!    maps left over from an earlier, poisoned instance stay in bounds.
//! 4. **Shown means written.** `bytes(len)` is only called with a `len` the
//!    writer has already written, so no reader touches a page past the end of
//!    the file, even though the map itself may reach further (a map may be
//!    larger than its file; only touching such pages would fault).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};

use super::Mapping;

/// A read-only map of up to `capacity` bytes of a file.
pub(super) struct MmapView {
    /// `None` for a zero-length map, which `mmap(2)` refuses.
    raw: Option<Arc<MmapRaw>>,
}

impl MmapView {
    pub(super) fn new(file: &File, capacity: u64) -> io::Result<Self> {
        if capacity == 0 {
            return Ok(MmapView { raw: None });
        }
        let len = usize::try_from(capacity).map_err(io::Error::other)?;
        let raw = MmapOptions::new().len(len).map_raw_read_only(file)?;
        Ok(MmapView {
            raw: Some(Arc::new(raw)),
        })
    }
}

impl Mapping for MmapView {
    fn bytes(&self, len: usize) -> Bytes {
        match &self.raw {
            None => {
                assert_eq!(len, 0, "read past the capacity of a map");
                Bytes::new()
            }
            Some(raw) => {
                assert!(len <= raw.len(), "read past the capacity of a map");
                Bytes::from_owner(Prefix {
                    raw: Arc::clone(raw),
                    len,
                })
            }
        }
    }
}

/// The first `len` bytes of a map; keeps the map alive while any `Bytes` of it is.
struct Prefix {
    raw: Arc<MmapRaw>,
    len: usize,
}

impl AsRef<[u8]> for Prefix {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len` is within the map (checked in `bytes`), the map lives as
        // long as `self` (it holds the `Arc`), and by contract 4 and 2 above these
        // bytes are written and never change or disappear while mapped.
        unsafe { std::slice::from_raw_parts(self.raw.as_ptr(), self.len) }
    }
}
