//! A simulated file system for crash and fault tests.
//!
//! Each file keeps two images: the *live* one that reads see, and the
//! *durable* one that a power loss leaves behind. Writes and length changes
//! go to the live image and are remembered as unsynced changes until
//! `sync_data`. Creations, removals and renames are likewise unsynced until
//! the directory is synced.
//!
//! [`SimStorage::power_loss`] then keeps a random part of the unsynced work:
//! each unsynced write survives whole, torn (a prefix, or a zero-filled
//! region where the length grew but the data did not) or not at all, and
//! each unsynced directory change survives or not. Every handle opened
//! before the loss fails from then on, as if its process had died.
//!
//! Faults: [`SimStorage::fail_next_write`], [`SimStorage::short_next_write`],
//! [`SimStorage::fail_next_sync`] (which, like Linux, may also forget the
//! unsynced writes it failed to flush), [`SimStorage::set_disk_full`],
//! [`SimStorage::set_read_only`] and [`SimStorage::stall_syncs_under`].
//!
//! Directories themselves are durable as soon as they are created.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{EntryKind, LockGuard, Mapping, OpenMode, SharedFile, Storage, StorageFile};

/// An in-memory [`Storage`] that can lose power. Clones share one file system.
///
/// ```
/// use orcastra::log::storage::{OpenMode, SimStorage, Storage};
/// use std::path::Path;
///
/// let sim = SimStorage::new(7);
/// sim.create_dir_all(Path::new("/data"))?;
/// let file = sim.open(Path::new("/data/f"), OpenMode::Create)?;
/// file.write_all_at(b"synced", 0)?;
/// file.sync_data()?;
/// sim.sync_dir(Path::new("/data"))?;
/// file.write_all_at(b" and not", 6)?;
/// sim.power_loss();
///
/// let file = sim.open(Path::new("/data/f"), OpenMode::Read)?;
/// assert!(file.read_all()?.starts_with(b"synced"));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct SimStorage {
    fs: Arc<Mutex<SimFs>>,
}

struct SimFs {
    /// File contents by inode number.
    inodes: Vec<Inode>,
    live_names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    /// Name changes not yet made durable by a directory sync, oldest first.
    unsynced_names: Vec<NameChange>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    /// Bumped by every crash; handles of an older generation are dead.
    generation: u64,
    faults: Faults,
    rng: fastrand::Rng,
}

#[derive(Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Change>,
}

enum Change {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

enum NameChange {
    Link { path: PathBuf, inode: usize },
    Unlink { path: PathBuf },
    Rename { from: PathBuf, to: PathBuf },
}

#[derive(Default)]
struct Faults {
    fail_next_write: Option<io::ErrorKind>,
    short_next_write: bool,
    fail_next_sync: Option<io::ErrorKind>,
    disk_full: bool,
    read_only: bool,
    /// Syncs of files opened under this directory wait.
    stalled: Option<PathBuf>,
}

impl SimStorage {
    /// An empty file system whose random choices all follow from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut dirs = BTreeSet::new();
        dirs.insert(PathBuf::from("/"));
        SimStorage {
            fs: Arc::new(Mutex::new(SimFs {
                inodes: Vec::new(),
                live_names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                unsynced_names: Vec::new(),
                dirs,
                locks: BTreeSet::new(),
                generation: 0,
                faults: Faults::default(),
                rng: fastrand::Rng::with_seed(seed),
            })),
        }
    }

    /// Cuts the power: keeps a random part of everything not yet synced,
    /// releases all locks and kills every open handle.
    pub fn power_loss(&self) {
        let mut fs = self.fs.lock();
        let SimFs {
            inodes,
            live_names,
            durable_names,
            unsynced_names,
            rng,
            ..
        } = &mut *fs;
        for inode in inodes.iter_mut() {
            for change in std::mem::take(&mut inode.unsynced) {
                match change {
                    Change::Write { pos, data } => match rng.u8(0..4) {
                        0 => {}
                        1 => {
                            let torn = rng.usize(0..=data.len());
                            write_into(&mut inode.durable, pos, &data[..torn]);
                        }
                        2 => {
                            // The length grew but the data never reached the disk.
                            let end = pos as usize + data.len();
                            if end > inode.durable.len() {
                                inode.durable.resize(end, 0);
                            }
                        }
                        _ => write_into(&mut inode.durable, pos, &data),
                    },
                    Change::SetLen(len) => {
                        if rng.bool() {
                            Change::SetLen(len).apply(&mut inode.durable);
                        }
                    }
                }
            }
            inode.live = inode.durable.clone();
        }
        for change in std::mem::take(unsynced_names) {
            if rng.bool() {
                apply_name_change(durable_names, change);
            }
        }
        *live_names = durable_names.clone();
        self.after_crash(&mut fs);
    }

    /// Kills the process without losing power: what was written stays, as it
    /// does in the page cache after `kill -9`. Locks are released and every
    /// open handle dies.
    pub fn process_crash(&self) {
        let mut fs = self.fs.lock();
        self.after_crash(&mut fs);
    }

    fn after_crash(&self, fs: &mut SimFs) {
        fs.generation += 1;
        fs.locks.clear();
        fs.faults.stalled = None;
    }

    /// The next write fails with `kind` and writes nothing.
    pub fn fail_next_write(&self, kind: io::ErrorKind) {
        self.fs.lock().faults.fail_next_write = Some(kind);
    }

    /// The next write stores only a random part of its bytes and reports it.
    pub fn short_next_write(&self) {
        self.fs.lock().faults.short_next_write = true;
    }

    /// The next `sync_data` fails with `kind`. Like Linux after a failed
    /// writeback, the writes it did not flush are forgotten: they never become
    /// durable, and reads may still see them or may see what the disk has.
    pub fn fail_next_sync(&self, kind: io::ErrorKind) {
        self.fs.lock().faults.fail_next_sync = Some(kind);
    }

    /// While set, writes that would grow a file fail with
    /// [`io::ErrorKind::StorageFull`] after storing what fits, and no file can
    /// be created.
    pub fn set_disk_full(&self, full: bool) {
        self.fs.lock().faults.disk_full = full;
    }

    /// While set, every change fails with [`io::ErrorKind::ReadOnlyFilesystem`].
    pub fn set_read_only(&self, read_only: bool) {
        self.fs.lock().faults.read_only = read_only;
    }

    /// While set, `sync_data` of a file opened under `dir` waits, as on a
    /// disk that stalls, until this is cleared (`None`) or a crash ends it
    /// (and clears it). Writes and reads go on.
    pub fn stall_syncs_under(&self, dir: Option<&Path>) {
        self.fs.lock().faults.stalled = dir.map(Path::to_path_buf);
    }

    /// Clears every injected fault.
    pub fn clear_faults(&self) {
        self.fs.lock().faults = Faults::default();
    }

    /// Overwrites the live image of the file at `path` as a test fixture, making
    /// it durable at once (as if the damage had been on disk all along).
    pub fn set_contents(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let mut fs = self.fs.lock();
        let ino = *fs.live_names.get(path).ok_or(io::ErrorKind::NotFound)?;
        let inode = &mut fs.inodes[ino];
        inode.live = contents.to_vec();
        inode.durable = contents.to_vec();
        inode.unsynced.clear();
        Ok(())
    }

    /// The live contents of the file at `path`.
    pub fn contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        let fs = self.fs.lock();
        let ino = *fs.live_names.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(fs.inodes[ino].live.clone())
    }
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fs = self.fs.lock();
        f.debug_struct("SimStorage")
            .field("files", &fs.live_names.keys().collect::<Vec<_>>())
            .field("generation", &fs.generation)
            .finish()
    }
}

impl Change {
    fn apply(self, image: &mut Vec<u8>) {
        match self {
            Change::Write { pos, data } => write_into(image, pos, &data),
            Change::SetLen(len) => image.resize(len as usize, 0),
        }
    }
}

fn write_into(image: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let pos = pos as usize;
    if image.len() < pos + data.len() {
        image.resize(pos + data.len(), 0);
    }
    image[pos..pos + data.len()].copy_from_slice(data);
}

fn apply_name_change(names: &mut BTreeMap<PathBuf, usize>, change: NameChange) {
    match change {
        NameChange::Link { path, inode } => {
            names.insert(path, inode);
        }
        NameChange::Unlink { path } => {
            names.remove(&path);
        }
        NameChange::Rename { from, to } => {
            if let Some(inode) = names.remove(&from) {
                names.insert(to, inode);
            }
        }
    }
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().unwrap_or(Path::new("/")).to_path_buf()
}

fn read_only_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ReadOnlyFilesystem,
        "simulated read-only file system",
    )
}

fn full_error() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "simulated full disk")
}

impl SimFs {
    fn check_writable(&self) -> io::Result<()> {
        if self.faults.read_only {
            return Err(read_only_error());
        }
        Ok(())
    }

    fn check_parent(&self, path: &Path) -> io::Result<()> {
        if self.dirs.contains(&parent_of(path)) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", parent_of(path).display()),
            ))
        }
    }

    fn create(&mut self, path: &Path) -> io::Result<usize> {
        self.check_writable()?;
        self.check_parent(path)?;
        if self.dirs.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        if self.faults.disk_full {
            return Err(full_error());
        }
        let inode = self.inodes.len();
        self.inodes.push(Inode::default());
        self.live_names.insert(path.to_path_buf(), inode);
        self.unsynced_names.push(NameChange::Link {
            path: path.to_path_buf(),
            inode,
        });
        Ok(inode)
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.fs.lock();
        let missing: Vec<PathBuf> = path
            .ancestors()
            .filter(|dir| !dir.as_os_str().is_empty() && !fs.dirs.contains(*dir))
            .map(Path::to_path_buf)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        fs.check_writable()?;
        if let Some(file) = missing.iter().find(|d| fs.live_names.contains_key(*d)) {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is a file", file.display()),
            ));
        }
        fs.dirs.extend(missing);
        Ok(())
    }

    fn kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        let fs = self.fs.lock();
        Ok(if fs.dirs.contains(path) {
            Some(EntryKind::Dir)
        } else if fs.live_names.contains_key(path) {
            Some(EntryKind::File)
        } else {
            None
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let fs = self.fs.lock();
        if !fs.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let files = fs.live_names.keys().map(PathBuf::as_path);
        let subdirs = fs.dirs.iter().map(PathBuf::as_path);
        Ok(files
            .chain(subdirs)
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(OsString::from))
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<SharedFile> {
        let mut fs = self.fs.lock();
        let inode = match fs.live_names.get(path) {
            Some(&inode) => {
                if mode != OpenMode::Read {
                    fs.check_writable()?;
                }
                inode
            }
            None if mode == OpenMode::Create => fs.create(path)?,
            None => return Err(io::ErrorKind::NotFound.into()),
        };
        Ok(Arc::new(SimFile {
            fs: Arc::clone(&self.fs),
            path: path.to_path_buf(),
            inode,
            generation: fs.generation,
            writable: mode != OpenMode::Read,
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.fs.lock();
        fs.check_writable()?;
        fs.live_names.remove(path).ok_or(io::ErrorKind::NotFound)?;
        fs.unsynced_names.push(NameChange::Unlink {
            path: path.to_path_buf(),
        });
        Ok(())
    }

    /// Directories are created and removed durably at once, like
    /// `create_dir_all`: the simulation is about files and their names.
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.fs.lock();
        fs.check_writable()?;
        if !fs.dirs.contains(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let names = fs.live_names.keys().chain(fs.durable_names.keys());
        let subdirs = fs.dirs.iter().filter(|d| d.as_path() != path);
        if names.chain(subdirs).any(|p| p.starts_with(path)) {
            return Err(io::ErrorKind::DirectoryNotEmpty.into());
        }
        fs.dirs.remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = self.fs.lock();
        fs.check_writable()?;
        fs.check_parent(to)?;
        let inode = fs.live_names.remove(from).ok_or(io::ErrorKind::NotFound)?;
        fs.live_names.insert(to.to_path_buf(), inode);
        fs.unsynced_names.push(NameChange::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut fs = self.fs.lock();
        if !fs.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let SimFs {
            unsynced_names,
            durable_names,
            ..
        } = &mut *fs;
        let (here, elsewhere): (Vec<_>, Vec<_>) = std::mem::take(unsynced_names)
            .into_iter()
            .partition(|change| match change {
                NameChange::Link { path, .. } | NameChange::Unlink { path } => {
                    path.parent() == Some(dir)
                }
                NameChange::Rename { from, to } => {
                    from.parent() == Some(dir) || to.parent() == Some(dir)
                }
            });
        for change in here {
            apply_name_change(durable_names, change);
        }
        *unsynced_names = elsewhere;
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let generation = {
            let mut fs = self.fs.lock();
            if fs.locks.contains(path) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if !fs.live_names.contains_key(path) {
                fs.create(path)?;
            }
            fs.locks.insert(path.to_path_buf());
            fs.generation
        };
        Ok(Box::new(SimLock {
            fs: Arc::clone(&self.fs),
            path: path.to_path_buf(),
            generation,
        }))
    }
}

struct SimLock {
    fs: Arc<Mutex<SimFs>>,
    path: PathBuf,
    generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut fs = self.fs.lock();
        if fs.generation == self.generation {
            fs.locks.remove(&self.path);
        }
    }
}

struct SimFile {
    fs: Arc<Mutex<SimFs>>,
    /// Where it was opened.
    path: PathBuf,
    inode: usize,
    generation: u64,
    writable: bool,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimFile(inode {})", self.inode)
    }
}

impl SimFile {
    /// Locks the file system, failing if this handle died in a crash.
    fn alive(&self) -> io::Result<parking_lot::MutexGuard<'_, SimFs>> {
        let fs = self.fs.lock();
        if fs.generation != self.generation {
            return Err(io::Error::other(
                "simulated crash: this handle belongs to a dead process",
            ));
        }
        Ok(fs)
    }

    fn alive_for_writing(&self) -> io::Result<parking_lot::MutexGuard<'_, SimFs>> {
        let fs = self.alive()?;
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ));
        }
        fs.check_writable()?;
        Ok(fs)
    }
}

impl StorageFile for SimFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.alive()?.inodes[self.inode].live.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let fs = self.alive()?;
        let live = &fs.inodes[self.inode].live;
        let start = (pos as usize).min(live.len());
        let n = buf.len().min(live.len() - start);
        buf[..n].copy_from_slice(&live[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        let mut guard = self.alive_for_writing()?;
        let fs = &mut *guard;
        if let Some(kind) = fs.faults.fail_next_write.take() {
            return Err(io::Error::new(kind, "simulated write error"));
        }
        let mut n = buf.len();
        if std::mem::take(&mut fs.faults.short_next_write) && n > 1 {
            n = fs.rng.usize(1..n);
        }
        if fs.faults.disk_full {
            let room = (fs.inodes[self.inode].live.len() as u64).saturating_sub(pos);
            n = n.min(room as usize);
            if n == 0 {
                return Err(full_error());
            }
        }
        let inode = &mut fs.inodes[self.inode];
        write_into(&mut inode.live, pos, &buf[..n]);
        inode.unsynced.push(Change::Write {
            pos,
            data: buf[..n].to_vec(),
        });
        Ok(n)
    }

    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], pos: u64) -> io::Result<usize> {
        let joined: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
        self.write_at(&joined, pos)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut guard = self.alive_for_writing()?;
        while guard
            .faults
            .stalled
            .as_ref()
            .is_some_and(|dir| self.path.starts_with(dir))
        {
            drop(guard);
            std::thread::sleep(std::time::Duration::from_millis(1));
            guard = self.alive_for_writing()?;
        }
        let fs = &mut *guard;
        if let Some(kind) = fs.faults.fail_next_sync.take() {
            let evicted = fs.rng.bool();
            let inode = &mut fs.inodes[self.inode];
            inode.unsynced.clear();
            if evicted {
                // The pages were dropped and read back from the disk: the length
                // stays, the contents are what the disk has (zeros past its end).
                let len = inode.live.len();
                inode.live = inode.durable.clone();
                inode.live.resize(len, 0);
            }
            return Err(io::Error::new(kind, "simulated fsync error"));
        }
        // Only what was written since the last sync reaches the disk: writes
        // forgotten by a failed sync stay in the live image alone.
        let inode = &mut fs.inodes[self.inode];
        for change in std::mem::take(&mut inode.unsynced) {
            change.apply(&mut inode.durable);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut guard = self.alive_for_writing()?;
        let fs = &mut *guard;
        if fs.faults.disk_full && len > fs.inodes[self.inode].live.len() as u64 {
            return Err(full_error());
        }
        let inode = &mut fs.inodes[self.inode];
        inode.live.resize(len as usize, 0);
        inode.unsynced.push(Change::SetLen(len));
        Ok(())
    }

    fn map(&self, _capacity: u64) -> io::Result<Arc<dyn Mapping>> {
        drop(self.alive()?);
        Ok(Arc::new(SimMapping {
            fs: Arc::clone(&self.fs),
            inode: self.inode,
        }))
    }
}

/// Shows a copy of the live image: the simulation favours clarity over speed.
struct SimMapping {
    fs: Arc<Mutex<SimFs>>,
    inode: usize,
}

impl Mapping for SimMapping {
    fn bytes(&self, len: usize) -> Bytes {
        let fs = self.fs.lock();
        let live = &fs.inodes[self.inode].live;
        Bytes::copy_from_slice(&live[..len.min(live.len())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> &'static Path {
        Path::new("/d")
    }

    fn setup(seed: u64) -> (SimStorage, SharedFile) {
        let sim = SimStorage::new(seed);
        sim.create_dir_all(dir()).unwrap();
        let file = sim.open(&dir().join("f"), OpenMode::Create).unwrap();
        (sim, file)
    }

    #[test]
    fn synced_data_and_names_survive_power_loss() {
        for seed in 0..50 {
            let (sim, file) = setup(seed);
            file.write_all_at(b"durable", 0).unwrap();
            file.sync_data().unwrap();
            sim.sync_dir(dir()).unwrap();
            file.write_all_at(b"-maybe", 7).unwrap();
            sim.power_loss();
            let after = sim.open(&dir().join("f"), OpenMode::Read).unwrap();
            let contents = after.read_all().unwrap();
            assert!(
                contents.starts_with(b"durable"),
                "seed {seed}: {contents:?}"
            );
            assert!(contents.len() <= 13);
        }
    }

    #[test]
    fn unsynced_creation_can_vanish_and_unsynced_writes_can_tear() {
        let mut vanished = false;
        let mut torn = false;
        for seed in 0..200 {
            let (sim, file) = setup(seed);
            file.write_all_at(&[7; 100], 0).unwrap();
            file.sync_data().unwrap();
            sim.power_loss();
            match sim.open(&dir().join("f"), OpenMode::Read) {
                Err(_) => vanished = true,
                Ok(f) => assert_eq!(f.read_all().unwrap(), vec![7; 100]),
            }
            let (sim, file) = setup(seed);
            sim.sync_dir(dir()).unwrap();
            file.write_all_at(&[7; 100], 0).unwrap();
            sim.power_loss();
            let contents = sim.contents(&dir().join("f")).unwrap();
            torn |= !contents.is_empty() && contents != vec![7; 100];
        }
        assert!(vanished, "an unsynced file creation never got lost");
        assert!(torn, "an unsynced write never got torn");
    }

    #[test]
    fn handles_die_with_the_process_and_locks_are_released() {
        let (sim, file) = setup(1);
        let _lock = sim.lock(&dir().join("LOCK")).unwrap();
        assert_eq!(
            sim.lock(&dir().join("LOCK")).err().unwrap().kind(),
            io::ErrorKind::WouldBlock
        );
        file.write_all_at(b"x", 0).unwrap();
        sim.process_crash();
        assert!(file.write_all_at(b"y", 1).is_err());
        assert!(sim.lock(&dir().join("LOCK")).is_ok());
        assert_eq!(sim.contents(&dir().join("f")).unwrap(), b"x");
    }

    #[test]
    fn failed_sync_forgets_the_unflushed_writes() {
        for seed in 0..20 {
            let (sim, file) = setup(seed);
            sim.sync_dir(dir()).unwrap();
            file.write_all_at(b"lost", 0).unwrap();
            sim.fail_next_sync(io::ErrorKind::Other);
            assert!(file.sync_data().is_err());
            // A later fsync succeeds, but the failed writes are not on disk.
            file.sync_data().unwrap();
            sim.power_loss();
            assert_eq!(sim.contents(&dir().join("f")).unwrap(), b"");
        }
    }

    #[test]
    fn full_disk_stores_what_fits_then_fails() {
        let (sim, file) = setup(3);
        file.write_all_at(b"abcd", 0).unwrap();
        sim.set_disk_full(true);
        assert_eq!(file.write_at(b"XYZW", 2).unwrap(), 2);
        let err = file.write_all_at(b"more", 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(sim.contents(&dir().join("f")).unwrap(), b"abXY");
        sim.set_disk_full(false);
        file.write_all_at(b"more", 4).unwrap();
    }

    #[test]
    fn read_only_refuses_every_change() {
        let (sim, file) = setup(4);
        sim.set_read_only(true);
        let kind = |r: io::Result<()>| r.unwrap_err().kind();
        assert_eq!(
            kind(file.write_all_at(b"x", 0)),
            io::ErrorKind::ReadOnlyFilesystem
        );
        assert_eq!(
            kind(sim.open(&dir().join("g"), OpenMode::Create).map(|_| ())),
            io::ErrorKind::ReadOnlyFilesystem
        );
        assert!(sim.open(&dir().join("f"), OpenMode::Read).is_ok());
    }
}
