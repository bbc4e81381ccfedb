//! The records of one segment read or written lately, kept in memory beside fjall.
//!
//! Every write is a read-merge-write, and a point read in fjall walks a skip list of every
//! version still in its memtable, then the tables below it: a few microseconds each, the
//! largest part of what a write costs on disk beyond memory. A segment's recent records are
//! kept here (RocksDB's row cache does the same for it), as the bytes fjall holds, so a hit
//! costs a short scan under the segment's lock. Each segment keeps at most
//! [`BYTES_PER_SEGMENT`], least recently used out first: a bound on the whole cache whatever
//! the data's size, so that values still live on disk.
//!
//! The cache is only ever a copy: the segment's lock is held for every change of the
//! segment's keys in fjall, and an entry is dropped before its key changes in fjall and put
//! back only once fjall took the change.

use fjall::Slice;
use xxhash_rust::xxh3::xxh3_64;

use crate::core::segments::SEGMENTS;

/// What one segment may keep: 8 MiB over all segments.
pub const BYTES_PER_SEGMENT: usize = CACHE_BYTES / SEGMENTS;

/// The whole cache's bound.
pub const CACHE_BYTES: usize = 8 << 20;

// What an entry costs beside its key and record bytes (its slot, the key's allocation, the
// record's header in fjall's buffer).
pub const ENTRY_OVERHEAD: usize = 64;

/// One segment's cached records, least recently used first.
#[derive(Default)]
pub struct SegmentCache {
    // The keys' hashes, in the entries' order, apart from them: a lookup reads this one
    // short array (a cache line for 8 keys) and then only the entry it found. Scanning the
    // entries themselves cost a cache miss every few entries, and comparing keys (all of a
    // workload's have the same length, often) one per entry.
    hashes: Vec<u64>,
    entries: Vec<Entry>,
    bytes: usize,
}

struct Entry {
    key: Box<[u8]>,
    record: Slice,
}

impl Entry {
    fn cost(&self) -> usize {
        cost(&self.key, &self.record)
    }
}

impl SegmentCache {
    /// The cached record of `key`, now the most recently used.
    pub fn get(&mut self, key: &[u8]) -> Option<Slice> {
        let hash = xxh3_64(key);
        let at = self.position(hash, key)?;
        let entry = self.take(at);
        let record = entry.record.clone();
        self.push(hash, entry);
        Some(record)
    }

    /// Keeps `record` as `key`'s, evicting the least recently used beyond the bound.
    pub fn put(&mut self, key: &[u8], record: Slice) {
        let hash = xxh3_64(key);
        if let Some(at) = self.position(hash, key) {
            self.take(at);
        }
        let entry = Entry {
            key: key.into(),
            record,
        };
        let cost = entry.cost();
        if cost > BYTES_PER_SEGMENT {
            return;
        }
        while self.bytes + cost > BYTES_PER_SEGMENT && !self.entries.is_empty() {
            self.take(0);
        }
        self.push(hash, entry);
    }

    /// Drops `key`'s record, if cached.
    pub fn forget(&mut self, key: &[u8]) {
        if let Some(at) = self.position(xxh3_64(key), key) {
            self.take(at);
        }
    }

    fn position(&self, hash: u64, key: &[u8]) -> Option<usize> {
        self.hashes
            .iter()
            .enumerate()
            .filter(|&(_, &h)| h == hash)
            .map(|(at, _)| at)
            .find(|&at| self.entries.get(at).is_some_and(|entry| *entry.key == *key))
    }

    fn take(&mut self, at: usize) -> Entry {
        self.hashes.remove(at);
        let entry = self.entries.remove(at);
        self.bytes -= entry.cost();
        entry
    }

    fn push(&mut self, hash: u64, entry: Entry) {
        self.bytes += entry.cost();
        self.hashes.push(hash);
        self.entries.push(entry);
    }
}

fn cost(key: &[u8], record: &Slice) -> usize {
    key.len() + record.len() + ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: usize, fill: u8) -> Slice {
        Slice::from(vec![fill; len])
    }

    #[test]
    fn records_are_kept_replaced_forgotten_and_evicted_least_recently_used_first() {
        let mut cache = SegmentCache::default();
        assert_eq!(cache.get(b"a"), None);
        cache.put(b"a", record(10, 1));
        cache.put(b"b", record(10, 2));
        assert_eq!(cache.get(b"a"), Some(record(10, 1)));
        cache.put(b"a", record(12, 3));
        assert_eq!(cache.get(b"a"), Some(record(12, 3)), "replaced");
        cache.forget(b"a");
        assert_eq!(cache.get(b"a"), None);
        assert_eq!(cache.get(b"b"), Some(record(10, 2)));

        // Fill the segment: the ones used least recently go first, and the bound holds.
        let big = BYTES_PER_SEGMENT / 4;
        cache.put(b"c", record(big, 4));
        cache.put(b"d", record(big, 5));
        assert!(cache.get(b"c").is_some());
        cache.put(b"e", record(big, 6));
        cache.put(b"f", record(big, 7));
        assert!(cache.bytes <= BYTES_PER_SEGMENT);
        assert_eq!(cache.get(b"b"), None, "least recently used");
        assert_eq!(cache.get(b"d"), None, "not used since it was put");
        for key in [b"c", b"e", b"f"] {
            assert!(cache.get(key).is_some());
        }

        // A record larger than the bound is not kept, and does not empty the segment.
        cache.put(b"g", record(BYTES_PER_SEGMENT, 8));
        assert_eq!(cache.get(b"g"), None);
        assert!(cache.get(b"f").is_some());
        let sum: usize = cache.entries.iter().map(Entry::cost).sum();
        assert_eq!(cache.bytes, sum, "the byte count follows the entries");
        assert_eq!(
            cache.hashes.len(),
            cache.entries.len(),
            "one hash per entry"
        );
    }
}
