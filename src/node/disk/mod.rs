//! The durable engine: a node's sets in [fjall](https://docs.rs/fjall), under `--data-dir`.
//!
//! fjall is an LSM tree with one journal shared by its keyspaces. The `data` keyspace
//! persists its journal by hand: an insert lands in fjall's journal buffer, and what hands
//! the buffer to the OS depends on `--fsync`. With `never`, [`Engine::sync`] hands it over,
//! and the node acknowledges a write only once a call that began after it returned (one per
//! runtime turn for every write answered in it, `crate::node::hand_over`; a call finds nothing
//! to do when another one since covered its changes), so a process kill loses nothing
//! acknowledged. With `always`, a write is
//! acknowledged only after an fsync (shared with the writes in flight by the node's group
//! commit, `crate::node::syncer`, which calls [`Engine::sync`] here), and each sync hands the
//! buffer over first: one system call per fsync instead of one per change, made on the fsync
//! thread instead of by the writer, which would hold fjall's journal lock meanwhile. A change
//! that nothing waits for (a repair) reaches the OS with the next sync or when the buffer
//! fills; none is acknowledged before.
//!
//! Layout: keyspace `data` maps `[segment: u16 BE][key]` to a record (see `record.rs`), so one
//! anti-entropy segment is one prefix scan; each segment's recent records are also kept in
//! memory under the segment's lock (`cache.rs`); keyspace `hints` holds the hints kept for other
//! nodes (`hints.rs`). The store's named entries (actor id, counter lease, clean-stop marker,
//! membership) live in a status file beside the database (`status.rs`), out of reach of what
//! can go wrong in its journal.
//! Writes are refused with [`EngineError::DiskFull`] while the file system has less than the
//! reserve free, before the engine itself runs out of space and stops writing for good.

mod cache;
pub(crate) mod hints;
mod journal_sync;
pub(crate) mod record;
pub(crate) mod status;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Slice};

use cache::SegmentCache;
pub use hints::DiskHints;
use journal_sync::JournalSync;
use status::StatusFile;

use crate::config::Fsync;
use crate::core::encoded_set::EncodedSet;
use crate::core::engine::{Engine, EngineError, Segment, Summary};
use crate::core::ids::Key;
use crate::core::segments::SEGMENTS;
use crate::core::version::VersionSet;

/// Why a data directory could not be opened. Each is a start-up failure (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum OpenDiskError {
    /// Another process holds the directory.
    #[error("{0} is in use by another process (its lock is held)")]
    Locked(PathBuf),
    /// The directory (or a file in it) cannot be read or written.
    #[error("{path} cannot be used: {source}")]
    Unusable {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The directory holds data the engine cannot read back.
    #[error("{path} holds corrupt or foreign data: {why}")]
    Corrupt {
        /// The directory.
        path: PathBuf,
        /// What the engine said.
        why: String,
    },
}

/// A node's sets and metadata in one fjall database.
pub struct DiskEngine {
    // Held for the engine's life: the database's lock and its flush and compaction workers.
    db: Database,
    data: Keyspace,
    hints: Keyspace,
    status: Mutex<StatusFile>,
    journals: JournalSync,
    // One lock per segment, over the segment's cached records.
    locks: Box<[Mutex<SegmentCache>]>,
    fsync: Fsync,
    // Changes made to the data so far, and how many of them the OS surely has: under
    // `--fsync never` a hand-over covers every change made before it began.
    changes: AtomicU64,
    handed: AtomicU64,
    full: Arc<AtomicBool>,
    path: PathBuf,
}

impl DiskEngine {
    /// Opens (or creates) the database in `dir`, whose writes are made durable as `fsync`
    /// says, and which refuses writes while fewer than `reserve` bytes are free.
    pub fn open(dir: &Path, fsync: Fsync, reserve: u64) -> Result<Self, OpenDiskError> {
        let unusable = |source| OpenDiskError::Unusable {
            path: dir.to_path_buf(),
            source,
        };
        create_durably(dir).map_err(unusable)?;
        // fjall would take a non-empty directory of other files as a new database beside
        // them; a directory of someone else's files is not ours to write into.
        let foreign = std::fs::read_dir(dir)
            .map_err(unusable)?
            .filter_map(Result::ok)
            .any(|entry| !is_fjall_entry(&entry.file_name().to_string_lossy()));
        let corrupt = |why: String| OpenDiskError::Corrupt {
            path: dir.to_path_buf(),
            why,
        };
        if foreign && !dir.join("version").exists() {
            return Err(corrupt(
                "the directory holds files that are not a dynamo-node database".into(),
            ));
        }
        let status = match StatusFile::read(dir).map_err(&corrupt)? {
            Some(status) => status,
            // A database without its status file lost what keeps its dots unique.
            None if dir.join("version").exists() => {
                return Err(corrupt(format!(
                    "the database's {} file is missing",
                    status::FILE
                )));
            }
            None => StatusFile::create(dir).map_err(&corrupt)?,
        };
        // fjall asserts on some damage it finds while replaying; that is a corrupt directory,
        // not a reason to take the process down with a backtrace.
        // fjall's block cache gets its default 32 MiB less what the record cache may hold, so
        // that a node's fixed memory stays what it was before that cache.
        let block_cache = (32 << 20) - cache::CACHE_BYTES as u64;
        let opened =
            std::panic::catch_unwind(|| Database::builder(dir).cache_size(block_cache).open());
        let db = match opened {
            Ok(db) => db.map_err(|e| open_error(dir, e))?,
            Err(_) => return Err(corrupt("the engine failed reading its files".into())),
        };
        // Memtables of 16 MiB (fjall's default is 64): resident memory stays a small fixed
        // amount beside the block cache, whatever the data's size. Hints are rare and always
        // reach the OS at once (carrying any buffered data with them). fjall keeps these
        // options from the keyspace's creation: a directory made before the data journal was
        // persisted by hand still hands every change over itself, which is only slower.
        let keyspace = |name: &str, memtable: u64, manual: bool| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(memtable)
                    .manual_journal_persist(manual)
            })
            .map_err(|e| open_error(dir, e))
        };
        let data = keyspace("data", 16 << 20, true)?;
        let hints = keyspace("hints", 4 << 20, false)?;
        let low = free_bytes(dir).is_some_and(|free| free < reserve);
        let full = Arc::new(AtomicBool::new(low));
        watch_free_space(dir.to_path_buf(), reserve, Arc::downgrade(&full));
        Ok(DiskEngine {
            db,
            data,
            hints,
            status: Mutex::new(status),
            journals: JournalSync::new(dir.to_path_buf()),
            locks: (0..SEGMENTS)
                .map(|_| Mutex::new(SegmentCache::default()))
                .collect(),
            fsync,
            changes: AtomicU64::new(0),
            handed: AtomicU64::new(0),
            full,
            path: dir.to_path_buf(),
        })
    }

    /// The engine's hint journal.
    pub fn hints(&self) -> DiskHints {
        DiskHints {
            keyspace: self.hints.clone(),
            full: Arc::clone(&self.full),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of fsyncs of the journal made so far.
    pub fn fsyncs(&self) -> u64 {
        self.journals.syncs()
    }

    // The journal buffer handed to the OS, then one fsync of the journal; sharing it between
    // writers is the caller's (the node's group commit). Concurrent calls queue behind each
    // other, each covering what was written before it began.
    fn persist(&self) -> Result<(), EngineError> {
        self.db.persist(PersistMode::Buffer).map_err(failed)?;
        self.journals.sync().map_err(EngineError::Failed)
    }

    // Under `--fsync never` a change must reach the OS before it is acknowledged, to survive
    // a process kill. One write of fjall's journal buffer hands over every change buffered
    // before it, so the node makes it once for the acknowledgements of a runtime turn rather
    // than once per change, and not at all when another caller's write since covered this
    // caller's changes: a write of a few hundred bytes into the page cache costs more than the
    // change itself.
    fn hand_over(&self) -> Result<(), EngineError> {
        // A failed fsync (of a status entry's data, under this policy) is final here too: the
        // kernel may have dropped pages it could not write, handed over or not.
        if let Some(why) = self.journals.failure() {
            return Err(EngineError::Failed(why));
        }
        let upto = self.changes.load(Ordering::Acquire);
        if self.handed.load(Ordering::Acquire) >= upto {
            return Ok(());
        }
        self.db.persist(PersistMode::Buffer).map_err(failed)?;
        self.handed.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    // Counted once fjall holds the change (in its journal buffer at least).
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    fn lock_status(&self) -> MutexGuard<'_, StatusFile> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    // Every key of one segment with its digest, in key order: one prefix scan.
    fn each_in_segment(
        &self,
        segment: u16,
        f: &mut dyn FnMut(&[u8], u64),
    ) -> Result<(), EngineError> {
        for item in self.data.prefix(segment.to_be_bytes()) {
            let (disk_key, bytes) = item.into_inner().map_err(failed)?;
            f(
                record::user_key(&disk_key)?,
                record::summary(&bytes)?.digest,
            );
        }
        Ok(())
    }

    fn check_space(&self) -> Result<(), EngineError> {
        if self.full.load(Ordering::Relaxed) {
            return Err(EngineError::DiskFull(format!(
                "less than the reserve is free under {}",
                self.path.display()
            )));
        }
        Ok(())
    }
}

struct DiskSegment<'a> {
    engine: &'a DiskEngine,
    segment: u16,
    // Held while the segment is in use: no other change of its keys meanwhile. A read
    // updates the cache too, through a shared reference.
    cache: RefCell<MutexGuard<'a, SegmentCache>>,
}

impl DiskSegment<'_> {
    fn disk_key(&self, key: &[u8]) -> Vec<u8> {
        record::disk_key(self.segment, key)
    }

    fn stored(&self, key: &[u8]) -> Result<Option<Slice>, EngineError> {
        if let Some(record) = self.cache.borrow_mut().get(key) {
            return Ok(Some(record));
        }
        let stored = self.engine.data.get(self.disk_key(key)).map_err(failed)?;
        if let Some(record) = &stored {
            self.cache.borrow_mut().put(key, record.clone());
        }
        Ok(stored)
    }
}

impl Segment for DiskSegment<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<(u64, VersionSet)>, EngineError> {
        self.stored(key)?
            .map(|bytes| record::decode(&bytes))
            .transpose()
    }

    fn get_encoded(&self, key: &[u8]) -> Result<Option<EncodedSet>, EngineError> {
        // A replica read answers with the record's versions as they are stored, which are
        // the set's encoding: no decoding and encoding again.
        self.stored(key)?
            .map(|bytes| {
                record::encoded_versions(&bytes)
                    .map(|versions| EncodedSet::from_stored(Bytes::copy_from_slice(versions)))
            })
            .transpose()
    }

    fn digest(&self, key: &[u8]) -> Result<u64, EngineError> {
        Ok(match self.stored(key)? {
            Some(bytes) => record::summary(&bytes)?.digest,
            None => 0,
        })
    }

    fn put(
        &mut self,
        key: &[u8],
        digest: u64,
        set: &VersionSet,
        versions: &EncodedSet,
    ) -> Result<(), EngineError> {
        self.engine.check_space()?;
        let encoded = Slice::from(record::encode(digest, set, versions.as_bytes()));
        let disk_key = self.disk_key(key);
        let cache = self.cache.get_mut();
        // Dropped first: whatever fjall makes of a failed insert, the cache claims nothing.
        cache.forget(key);
        self.engine
            .data
            .insert(disk_key, encoded.clone())
            .map_err(failed)?;
        cache.put(key, encoded);
        self.engine.changed();
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), EngineError> {
        // A removal frees space in the end, but writes a tombstone first.
        self.engine.check_space()?;
        self.cache.get_mut().forget(key);
        self.engine
            .data
            .remove(self.disk_key(key))
            .map_err(failed)?;
        self.engine.changed();
        Ok(())
    }

    fn for_each_key(&self, f: &mut dyn FnMut(&[u8], u64)) -> Result<(), EngineError> {
        self.engine.each_in_segment(self.segment, f)
    }
}

impl Engine for DiskEngine {
    fn locked(&self, segment: usize, f: &mut dyn FnMut(&mut dyn Segment)) {
        let (Some(lock), Ok(number)) = (self.locks.get(segment), u16::try_from(segment)) else {
            return;
        };
        f(&mut DiskSegment {
            engine: self,
            segment: number,
            cache: RefCell::new(lock.lock().unwrap_or_else(|p| p.into_inner())),
        });
    }

    fn keys_in_segment(&self, segment: usize) -> Result<Vec<(Key, u64)>, EngineError> {
        let Ok(number) = u16::try_from(segment) else {
            return Ok(Vec::new());
        };
        let mut keys = Vec::new();
        self.each_in_segment(number, &mut |key, digest| {
            keys.push((Bytes::copy_from_slice(key), digest));
        })?;
        Ok(keys)
    }

    fn scan(&self, f: &mut dyn FnMut(&[u8], Summary)) -> Result<(), EngineError> {
        for item in self.data.iter() {
            let (disk_key, bytes) = item.into_inner().map_err(failed)?;
            f(record::user_key(&disk_key)?, record::summary(&bytes)?);
        }
        Ok(())
    }

    fn meta(&self, name: &str) -> Result<Option<Bytes>, EngineError> {
        Ok(self.lock_status().get(name))
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), EngineError> {
        // The data written so far first: an entry (a clean-stop marker) may describe it.
        self.persist()?;
        // Whatever the fsync policy: a lease that went back would reissue dots.
        self.lock_status()
            .set(name, value)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::StorageFull => EngineError::DiskFull(e.to_string()),
                _ => EngineError::Failed(format!("{}: {e}", status::FILE)),
            })
    }

    fn sync(&self) -> Result<(), EngineError> {
        match self.fsync {
            Fsync::Always => self.persist(),
            Fsync::Never => self.hand_over(),
        }
    }

    fn durable(&self) -> bool {
        true
    }

    fn disk_bytes(&self) -> u64 {
        // Not fjall's figure (`Database::disk_space`): that counts a journal at its
        // preallocated length, 64 MiB, while the file stays sparse until written, which would
        // swamp the bytes per key of all but the largest stores. The blocks the files hold are
        // what the disk really gives up.
        let mut bytes = 0u64;
        let mut dirs = vec![self.path.clone()];
        while let Some(dir) = dirs.pop() {
            // Files come and go under compaction; one that vanished meanwhile takes nothing.
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    dirs.push(entry.path());
                } else {
                    bytes = bytes.saturating_add(meta.blocks().saturating_mul(512));
                }
            }
        }
        bytes
    }

    fn fsyncs(&self) -> u64 {
        DiskEngine::fsyncs(self)
    }
}

// The files fjall keeps in its directory.
fn is_fjall_entry(name: &str) -> bool {
    matches!(
        name,
        "version" | "lock" | "journals" | "keyspaces" | "lsm" | "meta"
    ) || name.starts_with(status::FILE)
        || name.ends_with(".jnl")
        || name.starts_with('.')
}

/// Creates `dir` and any missing parent, and fsyncs the directory above each one created: a
/// crash soon after must not lose the directory, and with it the status file written into it.
fn create_durably(dir: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|at| !at.exists()).collect();
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn open_error(dir: &Path, e: fjall::Error) -> OpenDiskError {
    match e {
        fjall::Error::Locked => OpenDiskError::Locked(dir.to_path_buf()),
        fjall::Error::Io(source) => OpenDiskError::Unusable {
            path: dir.to_path_buf(),
            source,
        },
        other => OpenDiskError::Corrupt {
            path: dir.to_path_buf(),
            why: format!("{other:?}"),
        },
    }
}

fn failed(e: fjall::Error) -> EngineError {
    match e {
        fjall::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            EngineError::DiskFull(io.to_string())
        }
        fjall::Error::Poisoned => EngineError::Failed(
            "an earlier write to the disk failed; the node must be restarted".into(),
        ),
        other => EngineError::Failed(format!("{other:?}")),
    }
}

// Checks the free space under `dir` every quarter second while the engine lives.
fn watch_free_space(dir: PathBuf, reserve: u64, full: Weak<AtomicBool>) {
    let check = move || {
        while let Some(full) = full.upgrade() {
            if let Some(free) = free_bytes(&dir) {
                full.store(free < reserve, Ordering::Relaxed);
            }
            drop(full);
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    // Without the watcher writes go on until the engine's own write fails: still refused.
    let _ = std::thread::Builder::new()
        .name("disk-space".into())
        .spawn(check);
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
}
