//! The file layer under the file-backed logs.
//!
//! The segment and text logs never touch `std::fs` directly: every file
//! operation goes through [`Storage`], so that tests can run the same code over
//! [`SimStorage`], which remembers what a power loss would keep and injects
//! write and fsync errors. [`OsStorage`] is the real thing.
//!
//! The traits are small on purpose: positional reads and writes, `fdatasync`,
//! `set_len`, directory listing and fsync, an exclusive lock, and a read-only
//! view of a file's written prefix (a memory map for real files).

mod mmap;
mod sim;

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

pub use sim::SimStorage;

/// What a path names, as far as the logs care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// How [`Storage::open`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Reading only; the file must exist.
    Read,
    /// Reading and writing; the file must exist.
    Write,
    /// Reading and writing; the file is created empty if it does not exist.
    Create,
}

/// An open file, shared between the writer, readers and the fsync thread.
pub type SharedFile = Arc<dyn StorageFile>;

/// Held while a process owns a directory; dropping it releases the lock.
pub type LockGuard = Box<dyn Send + Sync>;

/// Directory-level file operations. See the [module docs](self).
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Creates `path` and its missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// What `path` is, or `None` if nothing is there.
    fn kind(&self, path: &Path) -> io::Result<Option<EntryKind>>;
    /// The names of the entries of directory `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Opens the file at `path`.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<SharedFile>;
    /// Removes the file at `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Removes the empty directory at `path`.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the creations, removals and renames in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the file at `path` (creating it), held until
    /// the guard is dropped. Fails with [`io::ErrorKind::WouldBlock`] if another
    /// owner holds it, in this process or another.
    fn lock(&self, path: &Path) -> io::Result<LockGuard>;
}

/// An open file. All offsets are absolute byte positions.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// The file's current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Reads into `buf` from `pos`; returns how many bytes were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes `buf` at `pos`; may write less than all of it.
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize>;
    /// Writes `bufs` one after the other at `pos` (`pwritev`); may write less
    /// than all of them. At most [`MAX_IO_SLICES`] slices are passed.
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], pos: u64) -> io::Result<usize>;
    /// Makes the file's data and length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// A read-only view able to show up to `capacity` bytes of the file as it
    /// grows. `capacity` may exceed the current length: only the written
    /// prefix is ever shown (see [`Mapping::bytes`]).
    fn map(&self, capacity: u64) -> io::Result<Arc<dyn Mapping>>;

    /// Writes all of `buf` at `pos`, continuing after short writes.
    fn write_all_at(&self, mut buf: &[u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, pos) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `bufs` one after the other at `pos`, continuing after
    /// short writes.
    fn write_all_vectored_at(&self, mut bufs: &mut [IoSlice<'_>], mut pos: u64) -> io::Result<()> {
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            match self.write_vectored_at(&bufs[..bufs.len().min(MAX_IO_SLICES)], pos) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    pos += n as u64;
                    IoSlice::advance_slices(&mut bufs, n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes from `pos`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, pos) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads the whole file.
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.size()?).map_err(io::Error::other)?;
        let mut buf = vec![0; len];
        self.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// The most slices one vectored write takes (Linux's `IOV_MAX`).
pub const MAX_IO_SLICES: usize = 1024;

/// A read-only view of a file's written prefix.
pub trait Mapping: Send + Sync {
    /// The file's first `len` bytes, without copying where the storage allows.
    ///
    /// `len` must not exceed the mapping's capacity nor what has been written
    /// to the file; the bytes it covers never change afterwards because the
    /// logs only append (see the `mmap` module for the full contract).
    fn bytes(&self, len: usize) -> Bytes;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsStorage;

impl Storage for OsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(Some(EntryKind::Dir)),
            Ok(_) => Ok(Some(EntryKind::File)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<SharedFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(mode != OpenMode::Read)
            .create(mode == OpenMode::Create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(OsFile(file)))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

#[derive(Debug)]
struct OsFile(File);

impl StorageFile for OsFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.read_at(buf, pos)
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        self.0.write_at(buf, pos)
    }

    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], pos: u64) -> io::Result<usize> {
        Ok(rustix::io::pwritev(&self.0, bufs, pos)?)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn map(&self, capacity: u64) -> io::Result<Arc<dyn Mapping>> {
        Ok(Arc::new(mmap::MmapView::new(&self.0, capacity)?))
    }
}
