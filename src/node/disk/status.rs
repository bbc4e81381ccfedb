//! The status file: the few entries that must survive whatever happens to the database.
//!
//! The store's metadata (node name, actor id, dot counter lease, clean-stop marker) and the
//! membership live in `STATUS` beside the fjall database, not in its journal: fjall replays a
//! damaged journal up to the damage and drops the rest without an error, and a lease lost
//! that way would reissue dots peers already hold (Riak's kv679). The file is replaced whole
//! on every change: written to a temporary file, fsynced, renamed over the old one, and the
//! directory fsynced, so a crash leaves the old version or the new one, never a mix. A
//! checksum tells a damaged file from a valid one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

/// The file's name inside the data directory.
pub const FILE: &str = "STATUS";
const TEMPORARY: &str = "STATUS.tmp";
const MAGIC: &[u8; 8] = b"DYNSTAT1";

/// The entries, and where they are kept.
pub struct StatusFile {
    dir: PathBuf,
    entries: BTreeMap<String, Bytes>,
}

impl StatusFile {
    /// Reads the status file of `dir`; `None` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Self>, String> {
        let bytes = match std::fs::read(dir.join(FILE)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{FILE} cannot be read: {e}")),
        };
        let entries = decode(&bytes).ok_or_else(|| format!("{FILE} is damaged"))?;
        Ok(Some(StatusFile {
            dir: dir.to_path_buf(),
            entries,
        }))
    }

    /// A new, empty status file for `dir`, written at once.
    pub fn create(dir: &Path) -> Result<Self, String> {
        let file = StatusFile {
            dir: dir.to_path_buf(),
            entries: BTreeMap::new(),
        };
        file.write()
            .map_err(|e| format!("{FILE} cannot be written: {e}"))?;
        Ok(file)
    }

    /// An entry.
    pub fn get(&self, name: &str) -> Option<Bytes> {
        self.entries.get(name).cloned()
    }

    /// Sets an entry and writes the file; durable when this returns.
    pub fn set(&mut self, name: &str, value: &[u8]) -> std::io::Result<()> {
        let previous = self
            .entries
            .insert(name.to_string(), Bytes::copy_from_slice(value));
        let written = self.write();
        if written.is_err() {
            match previous {
                Some(old) => self.entries.insert(name.to_string(), old),
                None => self.entries.remove(name),
            };
        }
        written
    }

    fn write(&self) -> std::io::Result<()> {
        let temporary = self.dir.join(TEMPORARY);
        let mut file = File::create(&temporary)?;
        file.write_all(&encode(&self.entries))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, self.dir.join(FILE))?;
        // The rename is durable only once the directory is.
        File::open(&self.dir)?.sync_all()
    }
}

// `[magic][checksum of the body: u64 LE][body: postcard of the entries]`.
pub(crate) fn encode(entries: &BTreeMap<String, Bytes>) -> Vec<u8> {
    // Strings and byte strings: no failure case.
    let body = postcard::to_allocvec(entries).unwrap_or_default();
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&xxh3_64(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The entries of a status file's bytes; `None` when they are damaged.
pub(crate) fn decode(bytes: &[u8]) -> Option<BTreeMap<String, Bytes>> {
    let (magic, rest) = bytes.split_at_checked(MAGIC.len())?;
    let (checksum, body) = rest.split_at_checked(8)?;
    if magic != MAGIC || xxh3_64(body).to_le_bytes() != checksum {
        return None;
    }
    postcard::from_bytes(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_and_any_damage_is_detected() {
        let mut entries = BTreeMap::new();
        entries.insert("actor".to_string(), Bytes::from_static(b"a.1"));
        entries.insert("lease".to_string(), Bytes::from_static(&[1, 2, 3]));
        let bytes = encode(&entries);
        assert_eq!(decode(&bytes), Some(entries));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert_eq!(decode(&damaged), None, "a flip at {at}");
            assert_eq!(decode(&bytes[..at]), None, "a cut at {at}");
        }
    }
}
