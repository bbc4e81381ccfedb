//! The local storage map: one [`VersionSet`] per key, merged atomically per key.
//!
//! The map is shared (`Arc<Store>`) rather than owned by the Storage actor, so that a
//! restarted actor finds every stored version again, as an ETS table with an heir would.
//!
//! Each key keeps the digest of its set, and the key space is cut into [`SEGMENTS`] ranges of
//! ring positions whose digests (XOR of per-key hashes) are updated on every write. Anti-entropy
//! compares segment digests first and looks at keys only where they differ, so a cluster in
//! sync exchanges a few bytes of digests and nothing else.
//!
//! The map itself is cut the same way: one set of packed [`Record`]s per segment, under its
//! own lock, so that listing a segment's keys (anti-entropy) reads just that segment and no
//! index has to be kept beside the map. Records keep a key's data in one allocation, which is
//! what holds memory to a small multiple of the raw key and value bytes (see
//! [`super::record`]). The keys whose set holds only tombstones (the purge candidates) are
//! indexed apart. Lock order is always the key's segment first, then the candidates' mutex;
//! readers of the candidates take that mutex alone.

use std::borrow::Cow;
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use super::hash::{stable_hash, stable_hash_parts};
use super::ids::{ActorId, Key};
use super::record::Record;
use super::vclock::{Dot, VClock};
use super::version::VersionSet;

/// Number of digest segments the key space is divided into (by the top bits of ring position).
pub const SEGMENTS: usize = 4096;

/// Errors of the storage map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The write context claims a counter of this node so high that no fresh dot exists.
    #[error("the context's counter for this node is exhausted; write with a fresh read's context")]
    CounterExhausted,
}

/// The result of a coordinated write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinated {
    /// The dot made for the new version.
    pub dot: Dot,
    /// The whole set now stored here: what replicas and hints must receive.
    pub versions: VersionSet,
}

/// What a merge did to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeOutcome {
    /// True when the stored set changed.
    pub changed: bool,
    /// The key's digest after the merge.
    pub digest: u64,
}

/// A node's stored data: key -> sibling set, with per-key and per-segment digests.
pub struct Store {
    actor: ActorId,
    // The records of each segment; a key has a record exactly while its set is non-empty.
    records: Box<[Mutex<HashSet<Record>>]>,
    segments: Box<[AtomicU64]>,
    // Keys whose set holds only tombstones: the candidates of the purge.
    tombstones: Mutex<HashSet<Key>>,
    // One counter for all keys: a dot is never reissued, even after a key's tombstone is purged.
    counter: AtomicU64,
    // Kept in step under the segments' locks, so that a scrape never scans the map.
    keys: AtomicU64,
    key_bytes: AtomicU64,
    value_bytes: AtomicU64,
}

impl Store {
    /// An empty store whose coordinated writes are made as `actor`.
    pub fn new(actor: ActorId) -> Self {
        Store {
            actor,
            records: (0..SEGMENTS).map(|_| Mutex::new(HashSet::new())).collect(),
            segments: (0..SEGMENTS).map(|_| AtomicU64::new(0)).collect(),
            tombstones: Mutex::new(HashSet::new()),
            counter: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            key_bytes: AtomicU64::new(0),
            value_bytes: AtomicU64::new(0),
        }
    }

    /// The actor id this store writes dots as.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// Number of keys stored (tombstoned keys included until purged).
    pub fn len(&self) -> usize {
        usize::try_from(self.keys.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of the lengths of the stored keys (tombstoned keys included until purged).
    pub fn key_bytes(&self) -> u64 {
        self.key_bytes.load(Ordering::Relaxed)
    }

    /// Sum of the lengths of the stored values, siblings included (tombstones hold none).
    pub fn value_bytes(&self) -> u64 {
        self.value_bytes.load(Ordering::Relaxed)
    }

    /// The segment holding `key`: the top bits of its ring position.
    pub fn segment_of(key: &[u8]) -> usize {
        (stable_hash(key) >> (64 - SEGMENTS.trailing_zeros())) as usize
    }

    /// The stored set of `key` (empty when absent).
    pub fn get(&self, key: &[u8]) -> VersionSet {
        self.segment(key)
            .get(key)
            .map(Record::versions)
            .unwrap_or_default()
    }

    /// The digest of `key`'s set (0 when absent).
    pub fn digest(&self, key: &[u8]) -> u64 {
        self.segment(key).get(key).map_or(0, Record::digest)
    }

    /// Merges versions received from a peer (replication, hint, repair, anti-entropy).
    pub fn merge(&self, key: &Key, incoming: &VersionSet) -> MergeOutcome {
        if incoming.is_empty() {
            return MergeOutcome {
                changed: false,
                digest: self.digest(key),
            };
        }
        let (changed, digest) = self.update(key, |set| Ok::<_, Infallible>(set.merge(incoming)));
        let Ok(changed) = changed;
        MergeOutcome { changed, digest }
    }

    /// Coordinates a write: makes a fresh dot and applies it in one step under the key's lock.
    ///
    /// The dot is beyond every counter of this actor that the local set mentions. A context's
    /// claim about this actor beyond the dots it has issued names no version, so it is capped
    /// below the new dot: a forged or stale context can never cover a future write, nor push
    /// the node-wide counter to its end.
    pub fn coordinate(
        &self,
        key: &Key,
        context: &VClock,
        value: Option<Bytes>,
        now_ms: u64,
    ) -> Result<Coordinated, StoreError> {
        // A value can be a slice of a much bigger buffer (an HTTP body is a slice of the
        // connection's read buffer, 8 KiB or more). The record copies it, but the returned
        // set travels on (to replicas, and into hints kept here): a copy of its own keeps
        // that buffer from living as long as a hint.
        let value = value.map(|v| Bytes::copy_from_slice(&v));
        let (result, _) = self.update(key, |set| {
            let counter = self.next_counter(set.max_counter(&self.actor))?;
            let dot = Dot::new(self.actor.clone(), counter);
            // Every dot of this actor on this key is at most `counter - 1` (the local set holds
            // them or their successors), so the cap uncovers no existing version.
            let context = if context.get(&self.actor) >= counter {
                let mut capped = context.clone();
                capped.cap(&self.actor, counter - 1);
                Cow::Owned(capped)
            } else {
                Cow::Borrowed(context)
            };
            set.write(&context, dot.clone(), value, now_ms);
            Ok(Coordinated {
                dot,
                versions: set.clone(),
            })
        });
        result
    }

    /// Removes `key` if its set is still exactly the one with digest `expected` and holds only
    /// tombstones. The caller must know that every owner holds the tombstones.
    pub fn purge_tombstones(&self, key: &Key, expected: u64) -> bool {
        let mut records = self.segment(key);
        let Some(record) = records.get(key.as_ref()) else {
            return false;
        };
        let set = record.versions();
        if record.digest() != expected || !set.is_all_tombstones() {
            return false;
        }
        // The candidates change under the segment's lock, so a concurrent first write of the
        // key cannot be listed before this removal and then lost by it.
        lock(&self.tombstones).remove(key);
        records.remove(key.as_ref());
        self.xor_segment(key, expected, 0);
        self.count(key, false, set.value_bytes(), &VersionSet::new());
        true
    }

    /// The digest of one segment (XOR over its keys).
    pub fn segment_digest(&self, segment: usize) -> u64 {
        self.segments
            .get(segment)
            .map_or(0, |d| d.load(Ordering::Acquire))
    }

    /// All segment digests, in segment order.
    pub fn segment_digests(&self) -> Vec<u64> {
        self.segments
            .iter()
            .map(|d| d.load(Ordering::Acquire))
            .collect()
    }

    /// The keys of one segment with their digests, sorted by key (empty for an out-of-range
    /// segment).
    pub fn keys_in_segment(&self, segment: usize) -> Vec<(Key, u64)> {
        let Some(records) = self.records.get(segment) else {
            return Vec::new();
        };
        let mut keys: Vec<(Key, u64)> = lock(records)
            .iter()
            .map(|r| (Bytes::copy_from_slice(r.key()), r.digest()))
            .collect();
        keys.sort_unstable();
        keys
    }

    /// The keys of one segment, sorted (empty for an out-of-range segment).
    pub fn segment_keys(&self, segment: usize) -> Vec<Key> {
        self.keys_in_segment(segment)
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    }

    /// Up to `limit` keys whose set holds only tombstones, after skipping `skip` of them, in
    /// an order that is stable while the candidates do not change (so a caller can page).
    pub fn tombstone_candidates(&self, skip: usize, limit: usize) -> Vec<Key> {
        lock(&self.tombstones)
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Number of keys whose set holds only tombstones.
    pub fn tombstone_count(&self) -> usize {
        lock(&self.tombstones).len()
    }

    /// What one key adds (by XOR) to its segment's digest; 0 for an absent key.
    pub fn key_element(key: &[u8], digest: u64) -> u64 {
        if digest == 0 {
            0
        } else {
            stable_hash_parts(&[key, &digest.to_le_bytes()])
        }
    }

    fn next_counter(&self, floor: u64) -> Result<u64, StoreError> {
        self.counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                current.max(floor).checked_add(1)
            })
            .map_err(|_| StoreError::CounterExhausted)
            .and_then(|previous| {
                previous
                    .max(floor)
                    .checked_add(1)
                    .ok_or(StoreError::CounterExhausted)
            })
    }

    // The records of `key`'s segment, locked.
    fn segment(&self, key: &[u8]) -> MutexGuard<'_, HashSet<Record>> {
        lock(&self.records[Self::segment_of(key)])
    }

    // Runs `change` on the key's set under its segment's lock and stores the result, keeping
    // the digests, the candidates and the gauges in step. A non-empty set never becomes empty
    // (merges and writes only add or replace), so a key gets its record here and loses it
    // only by a purge; a failed write on an absent key leaves nothing behind.
    fn update<T, E>(
        &self,
        key: &Key,
        change: impl FnOnce(&mut VersionSet) -> Result<T, E>,
    ) -> (Result<T, E>, u64) {
        let mut records = self.segment(key);
        let stored = records.get(key.as_ref());
        let old_digest = stored.map_or(0, Record::digest);
        let mut set = stored.map(Record::versions).unwrap_or_default();
        let was_empty = set.is_empty();
        let was_tombstones = set.is_all_tombstones();
        let old_values = set.value_bytes();
        let result = change(&mut set);
        let digest = set.digest();
        if set.is_empty() {
            if was_empty {
                return (result, 0);
            }
            records.remove(key.as_ref());
        } else {
            let record = Record::new(key, digest, &set);
            if stored.is_some_and(|old| old.same_as(&record)) {
                return (result, digest);
            }
            records.replace(record);
        }
        if digest != old_digest {
            self.xor_segment(key, old_digest, digest);
        }
        let tombstones = set.is_all_tombstones();
        if tombstones != was_tombstones {
            let mut candidates = lock(&self.tombstones);
            if tombstones {
                candidates.insert(key.clone());
            } else {
                candidates.remove(key);
            }
        }
        self.count(key, was_empty, old_values, &set);
        (result, digest)
    }

    // Moves the key count and the payload gauges by what one change of `key`'s set did.
    fn count(&self, key: &[u8], was_empty: bool, old_values: u64, after: &VersionSet) {
        let key_len = key.len() as u64;
        match (was_empty, after.is_empty()) {
            (true, false) => {
                self.keys.fetch_add(1, Ordering::Relaxed);
                self.key_bytes.fetch_add(key_len, Ordering::Relaxed);
            }
            (false, true) => {
                self.keys.fetch_sub(1, Ordering::Relaxed);
                self.key_bytes.fetch_sub(key_len, Ordering::Relaxed);
            }
            _ => {}
        }
        let new_values = after.value_bytes();
        if new_values > old_values {
            self.value_bytes
                .fetch_add(new_values - old_values, Ordering::Relaxed);
        } else if old_values > new_values {
            self.value_bytes
                .fetch_sub(old_values - new_values, Ordering::Relaxed);
        }
    }

    fn xor_segment(&self, key: &[u8], old: u64, new: u64) {
        self.segments[Self::segment_of(key)].fetch_xor(
            Self::key_element(key, old) ^ Self::key_element(key, new),
            Ordering::AcqRel,
        );
    }
}

// A poisoned lock only means a panic elsewhere between two plain-data steps; keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use proptest::prelude::*;

    fn key(s: &str) -> Key {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn val(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn store(name: &str) -> Store {
        Store::new(ActorId::new(name, 7))
    }

    // The payload gauges as a scan of the whole map finds them.
    fn recount(s: &Store) -> (u64, u64) {
        stored_keys(s).iter().fold((0, 0), |(k, v), key| {
            (k + key.len() as u64, v + s.get(key).value_bytes())
        })
    }

    // Every stored key, read segment by segment.
    fn stored_keys(s: &Store) -> Vec<Key> {
        (0..SEGMENTS).flat_map(|seg| s.segment_keys(seg)).collect()
    }

    #[test]
    fn payload_gauges_follow_writes_siblings_deletes_and_purges() {
        let s = store("a");
        let (k1, k2) = (key("k1"), key("key2"));
        s.coordinate(&k1, &VClock::new(), val("abc"), 0).unwrap();
        s.coordinate(&k1, &VClock::new(), val("de"), 0).unwrap();
        assert_eq!((s.key_bytes(), s.value_bytes()), (2, 5), "siblings count");
        s.coordinate(&k2, &VClock::new(), val("x"), 0).unwrap();
        let ctx = s.get(&k1).read().context;
        s.coordinate(&k1, &ctx, val("f"), 1).unwrap();
        assert_eq!((s.key_bytes(), s.value_bytes()), (6, 2));
        let ctx = s.get(&k2).read().context;
        s.coordinate(&k2, &ctx, None, 2).unwrap();
        assert_eq!(
            (s.key_bytes(), s.value_bytes()),
            (6, 1),
            "a tombstone holds no value"
        );
        assert!(s.purge_tombstones(&k2, s.digest(&k2)));
        assert_eq!((s.key_bytes(), s.value_bytes()), (2, 1));
        let replica = store("r");
        replica.merge(&k1, &s.get(&k1));
        replica.merge(&k1, &s.get(&k1));
        assert_eq!((replica.key_bytes(), replica.value_bytes()), (2, 1));
        assert_eq!((s.key_bytes(), s.value_bytes()), recount(&s));
    }

    #[test]
    fn coordinate_then_read_back() {
        let s = store("a");
        let k = key("cart");
        let first = s.coordinate(&k, &VClock::new(), val("x"), 1).unwrap();
        assert_eq!(first.dot, Dot::new(ActorId::new("a", 7), 1));
        let ctx = s.get(&k).read().context;
        let second = s.coordinate(&k, &ctx, val("y"), 2).unwrap();
        assert_eq!(second.versions, s.get(&k));
        assert_eq!(s.get(&k).read().values, vec![Bytes::from("y")]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.digest(&k), s.get(&k).digest());
    }

    #[test]
    fn concurrent_blind_writes_all_survive_with_distinct_dots() {
        let s = Arc::new(store("a"));
        let k = key("hot");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (s, k) = (Arc::clone(&s), k.clone());
                std::thread::spawn(move || {
                    for i in 0..50 {
                        s.coordinate(&k, &VClock::new(), val(&format!("{t}-{i}")), i)
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let set = s.get(&k);
        assert_eq!(
            set.read().values.len(),
            200,
            "a blind write never erases another"
        );
        let mut counters: Vec<u64> = set.versions().iter().map(|v| v.dot.counter).collect();
        counters.dedup();
        assert_eq!(counters.len(), 200);
    }

    #[test]
    fn a_forged_context_cannot_cover_future_writes() {
        let s = store("a");
        let k = key("k");
        let mut forged = VClock::new();
        forged.add_dot(&Dot::new(s.actor().clone(), 1000), 0);
        let w = s.coordinate(&k, &forged, val("x"), 0).unwrap();
        let stored = &w.versions.versions()[0];
        assert!(
            stored.context.get(s.actor()) < w.dot.counter,
            "the stored context claims none of this actor's future dots"
        );
        let later = s.coordinate(&k, &VClock::new(), val("y"), 0).unwrap();
        assert!(later.dot.counter > w.dot.counter);
        assert_eq!(
            s.get(&k).read().values.len(),
            2,
            "a later blind write is not covered by the forged claim"
        );
        let other = s
            .coordinate(&key("other"), &VClock::new(), val("y"), 0)
            .unwrap();
        assert!(
            other.dot.counter > later.dot.counter,
            "counters are never reissued on any key"
        );
    }

    #[test]
    fn a_forged_context_cannot_exhaust_the_counter_of_every_key() {
        // One request with a claim near u64::MAX about the coordinator itself used to push the
        // node-wide counter to its end: every later write on every key then failed.
        let s = store("a");
        let mut forged = VClock::new();
        forged.add_dot(&Dot::new(s.actor().clone(), u64::MAX - 1), 0);
        s.coordinate(&key("k"), &forged, val("x"), 0).unwrap();
        let mut exhausted = VClock::new();
        exhausted.add_dot(&Dot::new(s.actor().clone(), u64::MAX), 0);
        s.coordinate(&key("k"), &exhausted, val("x"), 0).unwrap();
        let next = s.coordinate(&key("other"), &VClock::new(), val("y"), 0);
        assert_eq!(next.map(|c| c.dot.counter), Ok(3));
    }

    #[test]
    fn a_garbled_context_never_claims_the_dot_it_is_written_with() {
        // A context token whose entries are out of order: the claim about "a" sits where a
        // binary search never looks, so it used to escape the counter floor, while the stored
        // context still carried it (and a prune or re-sort could reveal it to cover later writes).
        use serde::Deserialize;
        let garbled = crate::core::vclock::tests::clock_tok(&[
            ("b", 7, 1, 0),
            ("c", 7, 1, 0),
            ("a", 7, 1000, 0),
        ]);
        let ctx = VClock::deserialize(garbled).unwrap();
        let s = store("a");
        let w = s.coordinate(&key("k"), &ctx, val("x"), 0).unwrap();
        for v in w.versions.versions() {
            for (actor, e) in v.context.entries() {
                assert!(
                    actor != s.actor() || e.counter < w.dot.counter,
                    "stored context lists {actor}:{} over its own dot {:?}",
                    e.counter,
                    w.dot
                );
            }
        }
    }

    #[test]
    fn a_planted_claim_fails_only_its_key_and_leaves_no_empty_key() {
        // Limitation: a forged claim about this actor written at ANOTHER coordinator reaches
        // this store as stored data; the next dot must exceed it, which may be impossible
        // (and a claim of u64::MAX - 1 would use up the node-wide counter for every key).
        let s = store("a");
        let k = key("k");
        let mut planted = VersionSet::new();
        let mut claim = VClock::new();
        claim.add_dot(&Dot::new(s.actor().clone(), u64::MAX), 0);
        planted.write(&claim, Dot::new(ActorId::new("b", 1), 1), val("p"), 0);
        s.merge(&k, &planted);
        let before = s.get(&k);
        assert_eq!(
            s.coordinate(&k, &VClock::new(), val("z"), 0),
            Err(StoreError::CounterExhausted)
        );
        assert_eq!(s.get(&k), before);
        assert!(
            s.coordinate(&key("fresh"), &VClock::new(), val("z"), 0)
                .is_ok()
        );
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn segment_digests_stay_exact_under_concurrent_writes_merges_and_purges() {
        // Purge updates its segment after releasing the key's lock; XOR commutes, so the
        // final digests must still be exactly the XOR over the stored keys.
        let s = Arc::new(store("a"));
        let peer = store("p");
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let s = Arc::clone(&s);
                let sets: Vec<(Key, VersionSet)> = (0..4)
                    .map(|i| {
                        let k = key(&format!("k{i}"));
                        let set = peer
                            .coordinate(&k, &VClock::new(), val(&format!("{t}")), 0)
                            .unwrap()
                            .versions;
                        (k, set)
                    })
                    .collect();
                std::thread::spawn(move || {
                    for round in 0..60 {
                        let (k, set) = &sets[round % sets.len()];
                        match (round + t) % 3 {
                            0 => {
                                let ctx = s.get(k).read().context;
                                s.coordinate(k, &ctx, None, 0).unwrap();
                            }
                            1 => {
                                s.merge(k, set);
                            }
                            _ => {
                                s.purge_tombstones(k, s.digest(k));
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for segment in 0..SEGMENTS {
            let expected = s.keys_in_segment(segment).iter().fold(0, |acc, (k, d)| {
                assert_eq!(*d, s.get(k).digest());
                acc ^ stable_hash_parts(&[k, &d.to_le_bytes()])
            });
            assert_eq!(s.segment_digest(segment), expected, "segment {segment}");
        }
        // Every key sits in its own segment, the counts match the listing, and the candidates
        // are exactly the deleted keys.
        for segment in 0..SEGMENTS {
            for k in s.segment_keys(segment) {
                assert_eq!(Store::segment_of(&k), segment);
                assert!(!s.get(&k).is_empty());
            }
        }
        let mut stored = stored_keys(&s);
        stored.sort();
        assert_eq!(stored.len(), s.len());
        assert_eq!((s.key_bytes(), s.value_bytes()), recount(&s));
        let mut candidates = s.tombstone_candidates(0, usize::MAX);
        candidates.sort();
        let deleted: Vec<Key> = stored
            .into_iter()
            .filter(|k| s.get(k).is_all_tombstones())
            .collect();
        assert_eq!(candidates, deleted);
    }

    #[test]
    fn tombstone_candidates_follow_deletes_writes_and_purges() {
        let s = store("a");
        let (k1, k2) = (key("k1"), key("k2"));
        for k in [&k1, &k2] {
            s.coordinate(k, &VClock::new(), val("v"), 0).unwrap();
        }
        assert!(s.tombstone_candidates(0, 10).is_empty());
        for k in [&k1, &k2] {
            let ctx = s.get(k).read().context;
            s.coordinate(k, &ctx, None, 1).unwrap();
        }
        let mut both = s.tombstone_candidates(0, 10);
        both.sort();
        assert_eq!(both, vec![k1.clone(), k2.clone()]);
        assert_eq!(s.tombstone_count(), 2);
        let (first, second) = (s.tombstone_candidates(0, 1), s.tombstone_candidates(1, 1));
        assert_eq!(first.len(), 1, "the limit holds");
        assert_ne!(first, second, "pages do not overlap");
        // A write over the delete makes k1 live again; a purge removes k2 for good.
        let ctx = s.get(&k1).read().context;
        s.coordinate(&k1, &ctx, val("back"), 2).unwrap();
        assert!(s.purge_tombstones(&k2, s.digest(&k2)));
        assert!(s.tombstone_candidates(0, 10).is_empty());
        assert_eq!(s.segment_keys(Store::segment_of(&k2)), Vec::<Key>::new());
        assert_eq!(s.keys_in_segment(Store::segment_of(&k1)).len(), 1);
    }

    #[test]
    fn a_failed_first_write_indexes_nothing() {
        // A claim of u64::MAX - 1 planted on one key uses up the node-wide counter (see the
        // limitation above), so a first write of another key fails and must leave no trace.
        let s = store("a");
        let k = key("k");
        let mut planted = VersionSet::new();
        let mut claim = VClock::new();
        claim.add_dot(&Dot::new(s.actor().clone(), u64::MAX - 1), 0);
        planted.write(&claim, Dot::new(ActorId::new("b", 1), 1), val("p"), 0);
        s.merge(&k, &planted);
        s.coordinate(&k, &VClock::new(), val("last"), 0).unwrap();
        let absent = key("absent");
        assert_eq!(
            s.coordinate(&absent, &VClock::new(), val("z"), 0),
            Err(StoreError::CounterExhausted)
        );
        assert_eq!(s.len(), 1);
        let indexed: Vec<Key> = (0..SEGMENTS).flat_map(|seg| s.segment_keys(seg)).collect();
        assert_eq!(indexed, vec![k]);
    }

    // Design limitations, pinned so that a change of behaviour is noticed.

    #[test]
    fn limitation_a_context_from_another_key_replaces_versions_it_never_saw() {
        // Dots are per node, not per key, so a context only means something for its own key.
        let s = store("a");
        let (k1, k2) = (key("k1"), key("k2"));
        s.coordinate(&k2, &VClock::new(), val("unseen"), 0).unwrap();
        s.coordinate(&k1, &VClock::new(), val("x"), 0).unwrap();
        let ctx_of_k1 = s.get(&k1).read().context;
        s.coordinate(&k2, &ctx_of_k1, val("y"), 0).unwrap();
        assert_eq!(s.get(&k2).read().values, vec![Bytes::from("y")]);
    }

    #[test]
    fn limitation_a_delete_without_context_hides_nothing() {
        let s = store("a");
        let k = key("k");
        s.coordinate(&k, &VClock::new(), val("v"), 0).unwrap();
        s.coordinate(&k, &VClock::new(), None, 1).unwrap();
        assert_eq!(s.get(&k).read().values, vec![Bytes::from("v")]);
    }

    #[test]
    fn limitation_a_purged_delete_comes_back_from_a_stale_copy() {
        // Owners purge the tombstone; a hint or a non-owner coordinator still holds the value.
        let s = store("a");
        let k = key("k");
        let stale = s.coordinate(&k, &VClock::new(), val("v"), 0).unwrap();
        let ctx = s.get(&k).read().context;
        s.coordinate(&k, &ctx, None, 1).unwrap();
        assert!(s.purge_tombstones(&k, s.digest(&k)));
        s.merge(&k, &stale.versions);
        assert_eq!(s.get(&k).read().values, vec![Bytes::from("v")]);
    }

    #[test]
    fn limitation_a_restart_that_keeps_the_actor_but_not_the_counter_reuses_dots() {
        // kv679 by another road: a node that keeps its data (and so its actor id) but starts
        // its counter at 0 reissues the dots of keys whose tombstones it purged.
        let before = store("a");
        let k = key("k");
        let old = before
            .coordinate(&k, &VClock::new(), val("old"), 0)
            .unwrap();
        let ctx = before.get(&k).read().context;
        before.coordinate(&k, &ctx, None, 1).unwrap();
        assert!(before.purge_tombstones(&k, before.digest(&k)));
        let after = store("a");
        let new = after.coordinate(&k, &VClock::new(), val("new"), 2).unwrap();
        assert_eq!(new.dot, old.dot);
        // A replica still holding the old version keeps one of the two: a write is lost.
        let mut replica = old.versions.clone();
        replica.merge(&new.versions);
        assert_eq!(replica.read().values.len(), 1);
    }

    #[test]
    fn merge_of_nothing_creates_nothing() {
        let s = store("a");
        let out = s.merge(&key("k"), &VersionSet::new());
        assert!(!out.changed);
        assert!(s.is_empty());
        assert!(s.segment_digests().iter().all(|d| *d == 0));
    }

    #[test]
    fn purge_removes_only_unchanged_all_tombstone_sets() {
        let s = store("a");
        let k = key("gone");
        s.coordinate(&k, &VClock::new(), val("x"), 0).unwrap();
        assert!(
            !s.purge_tombstones(&k, s.digest(&k)),
            "a live value is never purged"
        );
        let ctx = s.get(&k).read().context;
        s.coordinate(&k, &ctx, None, 1).unwrap();
        let stale_digest = s.digest(&k) ^ 1;
        assert!(!s.purge_tombstones(&k, stale_digest));
        assert!(s.purge_tombstones(&k, s.digest(&k)));
        assert!(s.is_empty());
        assert_eq!(s.segment_digest(Store::segment_of(&k)), 0);
    }

    #[test]
    fn segments_follow_ring_position() {
        let k = key("some key");
        let expected = (stable_hash(&k) >> 52) as usize;
        assert_eq!(Store::segment_of(&k), expected);
        let s = store("a");
        s.coordinate(&k, &VClock::new(), val("v"), 0).unwrap();
        assert_eq!(s.keys_in_segment(expected), vec![(k.clone(), s.digest(&k))]);
        assert_ne!(s.segment_digest(expected), 0);
        assert_eq!(
            s.segment_digest(SEGMENTS),
            0,
            "an out-of-range segment reads as empty"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn digests_agree_whatever_the_delivery_order(
            writes in proptest::collection::vec((0u8..6, 0u8..3, any::<bool>()), 1..30),
            seed in any::<u64>(),
        ) {
            // Three coordinators write to a few keys; two replicas receive all the resulting
            // sets, in two different orders, with redeliveries.
            let coords: Vec<Store> = ["a", "b", "c"].iter().map(|n| store(n)).collect();
            let mut deliveries = Vec::new();
            for (k, c, causal) in &writes {
                let k = key(&format!("k{k}"));
                let coord = &coords[usize::from(*c)];
                let ctx = if *causal { coord.get(&k).read().context } else { VClock::new() };
                let done = coord.coordinate(&k, &ctx, val("v"), 0).unwrap();
                deliveries.push((k, done.versions));
            }
            let (r1, r2) = (store("r1"), store("r2"));
            for (k, set) in &deliveries {
                r1.merge(k, set);
            }
            let mut shuffled = deliveries.clone();
            let n = shuffled.len();
            for i in 0..n {
                let j = (seed.wrapping_mul(i as u64 + 1) % n as u64) as usize;
                shuffled.swap(i, j);
            }
            for (k, set) in shuffled.iter().chain(deliveries.iter().take(3)) {
                r2.merge(k, set);
            }
            prop_assert_eq!(r1.segment_digests(), r2.segment_digests());
            prop_assert_eq!((r1.key_bytes(), r1.value_bytes()), recount(&r1));
            prop_assert_eq!((r2.key_bytes(), r2.value_bytes()), recount(&r2));
            for (k, _) in &deliveries {
                prop_assert_eq!(r1.get(k), r2.get(k));
                prop_assert_eq!(r1.digest(k), r1.get(k).digest());
            }
            // A key one replica lacks shows in its segment digest.
            let extra = key("extra");
            r2.coordinate(&extra, &VClock::new(), val("x"), 0).unwrap();
            let seg = Store::segment_of(&extra);
            prop_assert_ne!(r1.segment_digest(seg), r2.segment_digest(seg));
        }
    }
}
