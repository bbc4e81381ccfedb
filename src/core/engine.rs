//! The storage engine boundary: where a node's sets live, in memory or on disk.
//!
//! [`super::store::Store`] keeps every rule (dots, digests, purges, limits) and asks an
//! [`Engine`] only to keep bytes: one record per key, grouped in the same [`SEGMENTS`] ranges
//! that anti-entropy compares, and a few named metadata entries (the actor id, the dot
//! counter's lease, the membership). An engine locks a segment for the length of one
//! read-merge-write, which is what makes every change of a key atomic.
//!
//! The in-memory engine lives here; the durable one (`crate::node::disk`) does I/O, so it
//! lives above `core`.
//!
//! [`SEGMENTS`]: super::segments::SEGMENTS

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use super::encoded_set::EncodedSet;
use super::ids::Key;
use super::record::Record;
use super::segments::SEGMENTS;
use super::version::VersionSet;

/// Why an engine could not read or write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The disk is full: writes fail, reads go on.
    #[error("the disk is full: {0}")]
    DiskFull(String),
    /// Any other failure to read or write (an I/O error, a corrupt record).
    #[error("storage failed: {0}")]
    Failed(String),
}

/// What the store rebuilds its indexes from at open, for one stored key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The digest of the key's set.
    pub digest: u64,
    /// The set's value bytes (siblings included).
    pub value_bytes: u64,
    /// True when the set holds only tombstones.
    pub tombstones_only: bool,
}

impl Summary {
    /// The summary of `set`, whose digest is `digest`.
    pub fn of(digest: u64, set: &VersionSet) -> Self {
        Summary {
            digest,
            value_bytes: set.value_bytes(),
            tombstones_only: set.is_all_tombstones(),
        }
    }
}

/// One locked segment of an engine: reads and changes of its keys.
pub trait Segment {
    /// The digest and set stored for `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<(u64, VersionSet)>, EngineError>;
    /// The set stored for `key` as its encoding, if any: for answering a replica read without
    /// decoding and encoding the set again where the engine keeps it encoded.
    fn get_encoded(&self, key: &[u8]) -> Result<Option<EncodedSet>, EngineError> {
        Ok(self.get(key)?.map(|(_, set)| EncodedSet::encode(&set)))
    }
    /// The digest stored for `key` (0 when absent), without decoding its set.
    fn digest(&self, key: &[u8]) -> Result<u64, EngineError>;
    /// Stores `set` (never empty) for `key`, replacing what was there; `encoded` is its
    /// encoding, made once by the store, for an engine that keeps sets encoded.
    fn put(
        &mut self,
        key: &[u8],
        digest: u64,
        set: &VersionSet,
        encoded: &EncodedSet,
    ) -> Result<(), EngineError>;
    /// Removes `key`.
    fn remove(&mut self, key: &[u8]) -> Result<(), EngineError>;
    /// Calls `f` for every key of the segment with its digest, in no particular order: a
    /// listing no change can interleave with, since the segment is locked.
    fn for_each_key(&self, f: &mut dyn FnMut(&[u8], u64)) -> Result<(), EngineError>;
}

/// Where a store keeps its records and metadata.
pub trait Engine: Send + Sync {
    /// Runs `f` with `segment` locked: no other change of its keys runs meanwhile.
    fn locked(&self, segment: usize, f: &mut dyn FnMut(&mut dyn Segment));
    /// The keys of one segment with their digests, sorted by key.
    fn keys_in_segment(&self, segment: usize) -> Result<Vec<(Key, u64)>, EngineError>;
    /// Calls `f` for every stored key, for the store to rebuild its indexes when it opens.
    fn scan(&self, f: &mut dyn FnMut(&[u8], Summary)) -> Result<(), EngineError>;
    /// A metadata entry.
    fn meta(&self, name: &str) -> Result<Option<Bytes>, EngineError>;
    /// Writes a metadata entry; it is durable when this returns.
    fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), EngineError>;
    /// Makes every change made before the call as durable as the engine promises: on disk
    /// under `--fsync always`, with the OS under `never`, a no-op in memory.
    fn sync(&self) -> Result<(), EngineError>;
    /// True when the engine's data outlives the process.
    fn durable(&self) -> bool;
    /// Bytes the engine's files take on disk; 0 for an engine that keeps nothing there.
    fn disk_bytes(&self) -> u64 {
        0
    }
    /// Fsyncs made so far to make writes durable; 0 for an engine that makes none.
    fn fsyncs(&self) -> u64 {
        0
    }
}

/// The in-memory engine: packed [`Record`]s in one hash set per segment.
pub struct MemoryEngine {
    records: Box<[Mutex<HashSet<Record>>]>,
    meta: Mutex<BTreeMap<String, Bytes>>,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        MemoryEngine {
            records: (0..SEGMENTS).map(|_| Mutex::new(HashSet::new())).collect(),
            meta: Mutex::new(BTreeMap::new()),
        }
    }
}

struct MemorySegment<'a>(MutexGuard<'a, HashSet<Record>>);

impl Segment for MemorySegment<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<(u64, VersionSet)>, EngineError> {
        Ok(self.0.get(key).map(|r| (r.digest(), r.versions())))
    }

    fn get_encoded(&self, key: &[u8]) -> Result<Option<EncodedSet>, EngineError> {
        Ok(self
            .0
            .get(key)
            .map(|r| EncodedSet::from_stored(Bytes::copy_from_slice(r.encoded_versions()))))
    }

    fn digest(&self, key: &[u8]) -> Result<u64, EngineError> {
        Ok(self.0.get(key).map_or(0, Record::digest))
    }

    fn put(
        &mut self,
        key: &[u8],
        digest: u64,
        _set: &VersionSet,
        encoded: &EncodedSet,
    ) -> Result<(), EngineError> {
        self.0
            .replace(Record::with_encoding(key, digest, encoded.as_bytes()));
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), EngineError> {
        self.0.remove(key);
        Ok(())
    }

    fn for_each_key(&self, f: &mut dyn FnMut(&[u8], u64)) -> Result<(), EngineError> {
        for record in self.0.iter() {
            f(record.key(), record.digest());
        }
        Ok(())
    }
}

impl Engine for MemoryEngine {
    fn locked(&self, segment: usize, f: &mut dyn FnMut(&mut dyn Segment)) {
        if let Some(records) = self.records.get(segment) {
            f(&mut MemorySegment(lock(records)));
        }
    }

    fn keys_in_segment(&self, segment: usize) -> Result<Vec<(Key, u64)>, EngineError> {
        let Some(records) = self.records.get(segment) else {
            return Ok(Vec::new());
        };
        let mut keys: Vec<(Key, u64)> = lock(records)
            .iter()
            .map(|r| (Bytes::copy_from_slice(r.key()), r.digest()))
            .collect();
        keys.sort_unstable();
        Ok(keys)
    }

    fn scan(&self, f: &mut dyn FnMut(&[u8], Summary)) -> Result<(), EngineError> {
        for records in self.records.iter() {
            for record in lock(records).iter() {
                f(
                    record.key(),
                    Summary::of(record.digest(), &record.versions()),
                );
            }
        }
        Ok(())
    }

    fn meta(&self, name: &str) -> Result<Option<Bytes>, EngineError> {
        Ok(lock(&self.meta).get(name).cloned())
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), EngineError> {
        lock(&self.meta).insert(name.to_string(), Bytes::copy_from_slice(value));
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn durable(&self) -> bool {
        false
    }
}

// A poisoned lock only means a panic elsewhere between two plain-data steps; keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
