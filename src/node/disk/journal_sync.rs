//! Fsyncs fjall's journal files from descriptors of our own, up to [`LANES`] at a time.
//!
//! fjall's `persist` holds its journal lock during the fsync, so every write of the node
//! waits for every fsync: group commit would still share fsyncs, but writers could not queue
//! behind one. fjall hands each write to the OS as it is made (`manual_journal_persist` off),
//! and an fsync makes a file's written pages durable whoever wrote them, so syncing the
//! journal files through descriptors opened here lets writes go on during the fsync. A write
//! that returned before a sync began sits in a journal file that exists when the sync lists
//! them; a journal file that appeared since it was last synced has its directory entry synced
//! too before a sync that covers it returns.
//!
//! Two syncs may run at once, each on descriptors of its own lane, so that a sync for writes
//! made while one runs need not wait for it to end. The lanes matter for errors: the kernel
//! reports a failed write-back once per open file description, to the first fsync through it
//! that checks, so two fsyncs through one descriptor could see a failure that concerns the
//! other's writes and leave that one believing it succeeded. Every lane opens a file at the
//! same moment and only one sync at a time uses a lane's descriptors, so each sync hears of
//! every failure since its lane's last sync.
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
    by_name: BTreeMap<OsString, Arc<Journal>>,
    failed: Option<String>,
}

/// One journal file, opened once per lane.
struct Journal {
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
            (None, Ok(())) => {
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

    fn sync_lane(&self, lane: usize) -> Result<(), String> {
        let journals = self.list()?;
        for journal in &journals {
            journal.lanes[lane].sync_data().map_err(|e| e.to_string())?;
        }
        if journals.iter().any(|j| !j.listed.load(Ordering::Acquire)) {
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| e.to_string())?;
            for journal in &journals {
                journal.listed.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    // The journal files present now, opening (for every lane) those that appeared.
    fn list(&self) -> Result<Vec<Arc<Journal>>, String> {
        let mut files = self.lock_files();
        if let Some(why) = &files.failed {
            return Err(why.clone());
        }
        let listed = std::fs::read_dir(&self.dir).map_err(|e| e.to_string())?;
        let mut present = Vec::new();
        for entry in listed {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name();
            if !name.to_string_lossy().ends_with(".jnl") {
                continue;
            }
            let journal = match files.by_name.get(&name) {
                Some(journal) => Arc::clone(journal),
                None => {
                    let opened: std::io::Result<Vec<File>> =
                        (0..LANES).map(|_| File::open(entry.path())).collect();
                    let lanes = match opened.map(<[File; LANES]>::try_from) {
                        Ok(Ok(lanes)) => lanes,
                        // Deleted since the listing: fjall flushed it into tables first.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e.to_string()),
                        Ok(Err(_)) => return Err("a journal file could not be opened".into()),
                    };
                    let journal = Arc::new(Journal {
                        lanes,
                        listed: AtomicBool::new(false),
                    });
                    files.by_name.insert(name.clone(), Arc::clone(&journal));
                    journal
                }
            };
            present.push((name, journal));
        }
        files
            .by_name
            .retain(|name, _| present.iter().any(|(kept, _)| kept == name));
        Ok(present.into_iter().map(|(_, journal)| journal).collect())
    }

    fn lock_files(&self) -> MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }
}
