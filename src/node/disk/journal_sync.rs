//! Fsyncs fjall's journal files from descriptors of our own.
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
//! One sync runs at a time. Two overlapping fsyncs of the journal were tried: the second
//! locks the journal's last page and waits, holding it, for the first one's write of it, and
//! every writer of that page (fjall's, under its journal lock) waits behind them. A sync also
//! runs alone because the kernel reports a failed write-back once per open file, to the first
//! fsync through it that checks: an fsync beside another could miss a failure that concerns
//! its own writes.
//!
//! Listing the directory on every sync would cost more system calls than the fsync itself.
//! fjall numbers its journals and names the next one `{n + 1}.jnl` when it seals `{n}.jnl`
//! (a test pins this), holding its journal lock, so no write reaches a sealed journal
//! afterwards. A sync therefore lists the directory only when the next journal's name exists
//! or the newest journal it knows was deleted (or at the first sync, or when a name is not a
//! number: then always), and a sealed journal is synced until one sync that began after it was
//! sealed succeeded; then it is durable for good and its descriptor is closed. The deletion
//! matters: between two syncs fjall may seal `{n}` and `{n + 1}` and delete both once their
//! data is in tables (it deletes journals oldest first), and the next name alone would then
//! never appear. In steady state a sync is one `stat`, one `fstat` and one fsync.
//!
//! After a failed fsync the kernel may have dropped the dirty pages it could not write and
//! report the next fsync clean (PostgreSQL's "fsyncgate"), so a failure is final here: every
//! later sync fails too and no write is acknowledged again until a restart.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The journal files of one fjall database, opened for fsync.
pub struct JournalSync {
    dir: PathBuf,
    // Held for a whole sync.
    files: Mutex<Files>,
    syncs: AtomicU64,
    // Set once a sync failed, for the checks that must not wait for a running sync.
    broken: AtomicBool,
}

#[derive(Default)]
struct Files {
    // The journals that may hold writes not yet known durable, by file name.
    open: BTreeMap<OsString, Journal>,
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

/// One journal file, opened for fsync.
struct Journal {
    number: Option<u64>,
    file: File,
    // Whether its directory entry is known to be durable.
    listed: bool,
}

impl JournalSync {
    /// Syncs the journals of the database in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        JournalSync {
            dir,
            files: Mutex::new(Files::default()),
            syncs: AtomicU64::new(0),
            broken: AtomicBool::new(false),
        }
    }

    /// Why the journals can no longer be made durable (a sync failed), if they cannot.
    pub fn failure(&self) -> Option<String> {
        if !self.broken.load(Ordering::Acquire) {
            return None;
        }
        self.lock_files().failed.clone()
    }

    /// Fails as a sync whose fsync returned `why` would: every later sync fails too.
    #[cfg(test)]
    pub fn fail(&self, why: &str) {
        self.mark_failed(&mut self.lock_files(), why);
    }

    fn mark_failed(&self, files: &mut Files, why: &str) {
        files.failed = Some(format!("an fsync failed earlier: {why}"));
        self.broken.store(true, Ordering::Release);
    }

    /// Makes every write handed to the OS before this call durable.
    pub fn sync(&self) -> Result<(), String> {
        let mut files = self.lock_files();
        if let Some(why) = &files.failed {
            return Err(why.clone());
        }
        match self.sync_files(&mut files) {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(why) => {
                self.mark_failed(&mut files, &why);
                Err(why)
            }
        }
    }

    /// Number of syncs made so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    fn sync_files(&self, files: &mut Files) -> Result<(), String> {
        let unchanged = files.numbered.as_ref().is_some_and(|numbered| {
            matches!(std::fs::symlink_metadata(&numbered.next),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound)
                && files.newest_is_linked(numbered.newest)
        });
        if !unchanged {
            self.list(files)?;
        }
        for journal in files.open.values() {
            journal.file.sync_data().map_err(|e| e.to_string())?;
        }
        if files.open.values().any(|j| !j.listed) {
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| e.to_string())?;
            for journal in files.open.values_mut() {
                journal.listed = true;
            }
        }
        // The journals sealed before this sync began hold no write that is not durable now,
        // and never will.
        if let Some(numbered) = files.numbered.as_mut() {
            let newest = numbered.newest;
            numbered.clean_below = numbered.clean_below.max(newest);
            files
                .open
                .retain(|_, journal| journal.number.is_none_or(|n| n >= newest));
        }
        Ok(())
    }

    // Lists the directory: opens the journals that appeared, forgets those that are gone.
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
                let file = match File::open(entry.path()) {
                    Ok(file) => file,
                    // Deleted since the listing: fjall flushed it into tables first.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.to_string()),
                };
                let journal = Journal {
                    number,
                    file,
                    listed: false,
                };
                files.open.insert(name.clone(), journal);
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

impl Files {
    // Whether the journal numbered `newest` is open here and still has a name: fjall deletes
    // a journal only after sealing it, so a deleted newest journal means newer ones exist.
    fn newest_is_linked(&self, newest: u64) -> bool {
        self.open
            .values()
            .find(|journal| journal.number == Some(newest))
            .and_then(|journal| journal.file.metadata().ok())
            .is_some_and(|meta| meta.nlink() > 0)
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
    fn journals_sealed_and_deleted_between_two_syncs_do_not_hide_the_newest_one() {
        let dir = TempDir::new("journal-sync-skipped");
        append(&dir.join("0.jnl"), b"first");
        let sync = JournalSync::new(dir.path().to_path_buf());
        sync.sync().unwrap();
        assert_eq!(open_names(&sync), ["0.jnl"]);

        // Between two syncs fjall seals 0 and 1, flushes both into tables and deletes them,
        // oldest first: the name after 0 never shows, and 2 takes the writes.
        append(&dir.join("1.jnl"), b"second");
        append(&dir.join("2.jnl"), b"third");
        std::fs::remove_file(dir.join("0.jnl")).unwrap();
        std::fs::remove_file(dir.join("1.jnl")).unwrap();
        sync.sync().unwrap();
        assert_eq!(
            open_names(&sync),
            ["2.jnl"],
            "the journal fjall writes to is synced"
        );
        append(&dir.join("3.jnl"), b"fourth");
        sync.sync().unwrap();
        assert_eq!(open_names(&sync), ["3.jnl"]);
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
