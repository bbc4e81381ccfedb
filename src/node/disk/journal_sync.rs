//! Fsyncs fjall's journal files from descriptors of our own.
//!
//! fjall's `persist` holds its journal lock during the fsync, so every write of the node
//! waits for every fsync: group commit would still share fsyncs, but writers could not queue
//! behind one. fjall hands each write to the OS as it is made (`manual_journal_persist` off),
//! and an fsync makes a file's written pages durable whoever wrote them, so syncing the
//! journal files through descriptors opened here lets writes go on during the fsync. A write
//! that returned before a sync began sits in a journal file that exists when the sync lists
//! them; a journal file that appeared since the last sync has its directory entry synced too.
//!
//! After a failed fsync the kernel may have dropped the dirty pages it could not write and
//! report the next fsync clean (PostgreSQL's "fsyncgate"), so a failure is final here: every
//! later sync fails too and no write is acknowledged again until a restart.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

/// The journal files of one fjall database, opened for fsync.
pub struct JournalSync {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    files: BTreeMap<OsString, File>,
    failed: Option<String>,
}

impl JournalSync {
    /// Syncs the journals of the database in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        JournalSync {
            dir,
            state: Mutex::new(State::default()),
        }
    }

    /// Makes every write handed to the OS before this call durable.
    pub fn sync(&self) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &state.failed {
            return Err(why.clone());
        }
        let outcome = self.sync_files(&mut state);
        if let Err(why) = &outcome {
            state.failed = Some(format!("an fsync failed earlier: {why}"));
        }
        outcome
    }

    fn sync_files(&self, state: &mut State) -> Result<(), String> {
        let listed = std::fs::read_dir(&self.dir).map_err(|e| e.to_string())?;
        let mut present = Vec::new();
        let mut appeared = false;
        for entry in listed {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name();
            if !name.to_string_lossy().ends_with(".jnl") {
                continue;
            }
            if !state.files.contains_key(&name) {
                match File::open(entry.path()) {
                    Ok(file) => {
                        state.files.insert(name.clone(), file);
                        appeared = true;
                    }
                    // Deleted since the listing: fjall flushed it into tables first.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
            present.push(name);
        }
        state.files.retain(|name, _| present.contains(name));
        for file in state.files.values() {
            file.sync_data().map_err(|e| e.to_string())?;
        }
        if appeared {
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
