//! Fsyncs fjall's journal files from descriptors of our own, up to [`LANES`] at a time.
//!
//! fjall's `persist` holds its journal lock during the fsync, so every write of the node
//! waits for every fsync: group commit would still share fsyncs, but writers could not queue
//! behind one. The engine hands fjall's journal buffer to the OS before each sync (see
//! `disk/mod.rs`), and an fsync makes a file's written pages durable whoever wrote them, so
//! syncing the journal files through descriptors opened here lets writes go on during the
//! fsync. A write that returned before a sync began sits in a journal file that exists when
//! the sync lists them; a journal file that appeared since it was last synced has its
//! directory entry synced too before a sync that covers it returns.
//!
//! Two syncs may run at once, each on descriptors of its own lane, so that a sync for writes
//! made while one runs need not wait for it to end. The lanes matter for errors: the kernel
//! reports a failed write-back once per open file description, to the first fsync through it
//! that checks, so two fsyncs through one descriptor could see a failure that concerns the
//! other's writes and leave that one believing it succeeded. Every lane opens a file at the
//! same moment and only one sync at a time uses a lane's descriptors, so each sync hears of
//! every failure since its lane's last sync.
//!
//! Listing the directory on every sync would cost more system calls than the fsync itself.
//! fjall numbers its journals and names the next one `{n + 1}.jnl` when it seals `{n}.jnl`
//! (a test pins this), holding its journal lock, so no write reaches a sealed journal
//! afterwards. A sync therefore lists the directory only when the next journal's name exists
//! (or at the first sync, or when a name is not a number: then always), and a sealed journal
//! is synced until one sync that began after it was sealed succeeded; then it is durable for
//! good and its descriptors are closed. In steady state a sync is one `stat` and one fsync.
//!
//! After a failed fsync the kernel may have dropped the dirty pages it could not write and
//! report the next fsync clean (PostgreSQL's "fsyncgate"), so a failure is final here: every
//! later sync fails too, a sync that ends after another failed fails as well, and no write is
//! acknowledged again until a restart.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

/// Syncs that can run at once, each through descriptors of its own.
pub const LANES: usize = 2;

/// The journal files of one fjall database, opened for fsync.
pub struct JournalSync {
    dir: PathBuf,
    files: Mutex<Files>,
    // Held by the sync using the lane's descriptors.
    lanes: [Mutex<()>; LANES],
    next_lane: AtomicUsize,
    syncs: AtomicU64,
}

#[derive(Default)]
struct Files {
    // The journals that may hold writes not yet known durable, by file name.
    open: BTreeMap<OsString, Arc<Journal>>,
    // Set while every journal is named by its number.
    numbered: Option<Numbered>,
    failed: Option<String>,
}

struct Numbered {
    // The newest journal (the one fjall writes to).
    newest: u64,
    // The name the next journal will have: listing again is due once it exists.
    next: PathBuf,
    // Every journal numbered below this is durable for good.
    clean_below: u64,
}

/// One journal file, opened once per lane.
struct Journal {
    number: Option<u64>,
    lanes: [File; LANES],
    // Whether its directory entry is known to be durable.
    listed: AtomicBool,
}

impl JournalSync {
    /// Syncs the journals of the database in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        JournalSync {
            dir,
            files: Mutex::new(Files::default()),
            lanes: std::array::from_fn(|_| Mutex::new(())),
            next_lane: AtomicUsize::new(0),
            syncs: AtomicU64::new(0),
        }
    }

    /// Makes every write handed to the OS before this call durable.
    pub fn sync(&self) -> Result<(), String> {
        let (lane, _held) = self.take_lane();
        let outcome = self.sync_lane(lane);
        let mut files = self.lock_files();
        match (&files.failed, outcome) {
            (Some(why), _) => Err(why.clone()),
            (None, Err(why)) => {
                files.failed = Some(format!("an fsync failed earlier: {why}"));
                Err(why)
            }
            (None, Ok(synced)) => {
                files.forget_sealed(&synced);
                self.syncs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Number of syncs made so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    // A free lane if there is one, else the next in turn once it is free.
    fn take_lane(&self) -> (usize, MutexGuard<'_, ()>) {
        for (lane, lock) in self.lanes.iter().enumerate() {
            match lock.try_lock() {
                Ok(held) => return (lane, held),
                Err(TryLockError::Poisoned(p)) => return (lane, p.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let lane = self.next_lane.fetch_add(1, Ordering::Relaxed) % LANES;
        (
            lane,
            self.lanes[lane].lock().unwrap_or_else(|p| p.into_inner()),
        )
    }

    // Syncs every journal that may hold a write made before the call; returns what it synced.
    fn sync_lane(&self, lane: usize) -> Result<Synced, String> {
        let synced = self.current()?;
        for journal in &synced.journals {
            journal.lanes[lane].sync_data().map_err(|e| e.to_string())?;
        }
        if synced
            .journals
            .iter()
            .any(|j| !j.listed.load(Ordering::Acquire))
        {
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| e.to_string())?;
            for journal in &synced.journals {
                journal.listed.store(true, Ordering::Release);
            }
        }
        Ok(synced)
    }

    // The journals that may hold writes not yet durable, listing the directory when one may
    // have appeared since the last listing.
    fn current(&self) -> Result<Synced, String> {
        let mut files = self.lock_files();
        if let Some(why) = &files.failed {
            return Err(why.clone());
        }
        let unchanged = files.numbered.as_ref().is_some_and(|numbered| {
            matches!(std::fs::symlink_metadata(&numbered.next),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        });
        if !unchanged {
            self.list(&mut files)?;
        }
        Ok(Synced {
            journals: files.open.values().cloned().collect(),
            newest: files.numbered.as_ref().map(|n| n.newest),
        })
    }

    // Lists the directory: opens (for every lane) the journals that appeared, forgets those
    // that are gone.
    fn list(&self, files: &mut Files) -> Result<(), String> {
        let clean_below = files.numbered.as_ref().map_or(0, |n| n.clean_below);
        let listed = std::fs::read_dir(&self.dir).map_err(|e| e.to_string())?;
        let mut present = Vec::new();
        let mut all_numbered = true;
        for entry in listed {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name();
            if !name.to_string_lossy().ends_with(".jnl") {
                continue;
            }
            let number = name
                .to_str()
                .and_then(|n| n.strip_suffix(".jnl"))
                .and_then(|stem| stem.parse::<u64>().ok());
            all_numbered &= number.is_some();
            if number.is_some_and(|n| n < clean_below) {
                continue;
            }
            if !files.open.contains_key(&name) {
                let opened: std::io::Result<Vec<File>> =
                    (0..LANES).map(|_| File::open(entry.path())).collect();
                let lanes = match opened.map(<[File; LANES]>::try_from) {
                    Ok(Ok(lanes)) => lanes,
                    // Deleted since the listing: fjall flushed it into tables first.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.to_string()),
                    Ok(Err(_)) => return Err("a journal file could not be opened".into()),
                };
                let journal = Journal {
                    number,
                    lanes,
                    listed: AtomicBool::new(false),
                };
                files.open.insert(name.clone(), Arc::new(journal));
            }
            present.push(name);
        }
        files.open.retain(|name, _| present.contains(name));
        let newest = files.open.values().filter_map(|j| j.number).max();
        files.numbered = match (all_numbered, newest) {
            (true, Some(newest)) => Some(Numbered {
                newest,
                next: self.dir.join(format!("{}.jnl", newest.saturating_add(1))),
                clean_below,
            }),
            _ => None,
        };
        Ok(())
    }

    fn lock_files(&self) -> MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one sync covered.
struct Synced {
    journals: Vec<Arc<Journal>>,
    // The newest journal's number when the sync began, if journals are numbered.
    newest: Option<u64>,
}

impl Files {
    // After `synced` succeeded: the journals it synced that were sealed before it began (an
    // older number than the newest) hold no write that is not durable, and never will.
    fn forget_sealed(&mut self, synced: &Synced) {
        let (Some(newest), Some(numbered)) = (synced.newest, self.numbered.as_mut()) else {
            return;
        };
        numbered.clean_below = numbered.clean_below.max(newest);
        let sealed: Vec<&Arc<Journal>> = synced
            .journals
            .iter()
            .filter(|j| j.number.is_some_and(|n| n < newest))
            .collect();
        self.open
            .retain(|_, journal| !sealed.iter().any(|s| Arc::ptr_eq(s, journal)));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::testing::TempDir;

    fn open_names(sync: &JournalSync) -> Vec<String> {
        let files = sync.lock_files();
        files
            .open
            .keys()
            .map(|n| n.to_string_lossy().into_owned())
            .collect()
    }

    fn append(path: &std::path::Path, bytes: &[u8]) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(bytes).unwrap();
    }

    #[test]
    fn a_sealed_journal_is_synced_until_a_sync_begun_after_it_was_sealed_and_new_ones_are_found() {
        let dir = TempDir::new("journal-sync");
        append(&dir.join("0.jnl"), b"first");
        append(&dir.join("other-file"), b"not a journal");
        let sync = JournalSync::new(dir.path().to_path_buf());
        sync.sync().unwrap();
        assert_eq!(open_names(&sync), ["0.jnl"]);

        // fjall seals 0 when it starts 1: the next sync finds 1 and syncs both, after which
        // 0 is durable for good.
        append(&dir.join("1.jnl"), b"second");
        sync.sync().unwrap();
        assert_eq!(open_names(&sync), ["1.jnl"]);
        sync.sync().unwrap();
        assert_eq!(open_names(&sync), ["1.jnl"]);

        // Sealed journals that fjall has not deleted yet are not opened again; a journal
        // whose name is not a number is synced on every sync and the directory listed each
        // time.
        append(&dir.join("2.jnl"), b"third");
        append(&dir.join("odd.jnl"), b"unnumbered");
        sync.sync().unwrap();
        assert_eq!(open_names(&sync), ["1.jnl", "2.jnl", "odd.jnl"]);
        assert!(sync.lock_files().numbered.is_none());
        std::fs::remove_file(dir.join("odd.jnl")).unwrap();
        std::fs::remove_file(dir.join("1.jnl")).unwrap();
        sync.sync().unwrap();
        assert_eq!(open_names(&sync), ["2.jnl"]);
        assert_eq!(sync.syncs(), 5);
    }

    #[test]
    fn fjall_names_the_journal_it_starts_after_the_one_it_seals() {
        // The sync above relies on this to list the directory only when a journal appeared.
        let dir = TempDir::new("journal-names");
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let data = db
            .keyspace("data", || {
                fjall::KeyspaceCreateOptions::default().max_memtable_size(8 << 20)
            })
            .unwrap();
        let journals = || -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".jnl"))
                .collect();
            names.sort();
            names
        };
        assert_eq!(journals(), ["0.jnl"]);
        // fjall seals a journal past 64 MB, when it flushes a memtable.
        let value = vec![7u8; 1 << 20];
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut i = 0u32;
        while !journals().contains(&"1.jnl".to_string()) {
            assert!(
                Instant::now() < deadline,
                "no journal after 0: {:?}",
                journals()
            );
            data.insert(i.to_be_bytes(), value.as_slice()).unwrap();
            i += 1;
        }
        assert!(
            journals().iter().all(|n| n == "0.jnl" || n == "1.jnl"),
            "{:?}",
            journals()
        );
    }
}
