//! Tombstone purges: removing a deleted key every holder agreed on, and remembering it.
//!
//! The keys whose set holds only tombstones (the purge candidates) are indexed apart, in key
//! order, so that a purge pass pages through them without listing the store. A purge is
//! remembered for a while ([`PURGE_MEMORY_TTL_MS`], [`PURGE_MEMORY_CAPACITY`]) and every merge
//! strips what it removed from incoming sets: a late copy of a purged delete, or of the value
//! it deleted, is dropped instead of coming back (see [`crate::core::purged`]).

use std::ops::Bound;
use std::sync::atomic::Ordering;

use super::{Store, lock};
use crate::core::ids::Key;
use crate::core::version::VersionSet;

/// How long a purge is remembered, and how many at most (see [`crate::core::purged`]).
pub const PURGE_MEMORY_TTL_MS: u64 = 10 * 60 * 1000;
/// Most purges remembered at once.
pub const PURGE_MEMORY_CAPACITY: usize = 100_000;

impl Store {
    /// Removes `key` if its set is still exactly the one with digest `expected` and holds only
    /// tombstones, and remembers the purge. The caller must know that every node that may
    /// hold a copy of the key holds exactly these tombstones (or nothing).
    ///
    /// When the set is now those tombstones plus versions written since the agreement (a
    /// write that did not see the delete, taken between the purge check and this order), only
    /// the tombstones go, and the purge is remembered: the set becomes exactly what a node
    /// that purged first holds once that write reaches it (its memory of the purge strips
    /// the tombstones from the incoming set). Otherwise the owners would never agree again:
    /// the ones that purged strip the tombstones from every copy they are sent, forever.
    pub fn purge_tombstones(&self, key: &Key, expected: u64, now_ms: u64) -> bool {
        let removed = self.remove_if(key, |set, digest| {
            if digest != expected || !set.is_all_tombstones() {
                return Ok(false);
            }
            self.remember_purge(key, set, now_ms);
            Ok(true)
        });
        removed || self.purge_tombstones_beside_writes(key, expected, now_ms)
    }

    // The second case of `purge_tombstones`: strips the set's tombstones when exactly they
    // were agreed on.
    pub(super) fn purge_tombstones_beside_writes(
        &self,
        key: &Key,
        expected: u64,
        now_ms: u64,
    ) -> bool {
        let stripped = self.update(key, |set| {
            let (tombstones, rest) = split_tombstones(set);
            if tombstones.is_empty() || rest.is_empty() || tombstones.digest() != expected {
                return Ok(false);
            }
            self.remember_purge(key, &tombstones, now_ms);
            *set = rest;
            Ok(true)
        });
        stripped.is_ok_and(|(stripped, _)| stripped)
    }

    pub(super) fn remember_purge(&self, key: &Key, set: &VersionSet, now_ms: u64) {
        let mut purged = lock(&self.purged);
        purged.record(key.clone(), set, now_ms);
        self.purged_len.store(purged.len(), Ordering::Release);
    }

    /// When `set` holds, beside values, only tombstones a purge remembered here covers (all
    /// the purged ones, or those a later write did not replace), their digest: its holder
    /// missed the purge order (or took a write before it came), and should purge them too
    /// (see [`Store::purge_tombstones`]).
    pub fn purged_tombstones_in(&self, key: &[u8], set: &VersionSet) -> Option<u64> {
        if self.purged_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let (tombstones, rest) = split_tombstones(set);
        if tombstones.is_empty() || rest.is_empty() {
            return None;
        }
        let covered = lock(&self.purged).covers(key, &tombstones);
        covered.then(|| tombstones.digest())
    }

    /// The context of the set this store last purged of `key`, while it remembers it.
    #[cfg(test)]
    pub fn purged_context(&self, key: &[u8]) -> Option<crate::core::vclock::VClock> {
        if self.purged_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        lock(&self.purged).context_of(key).cloned()
    }

    /// True when `key` was purged here, recently, with exactly the set of digest `digest`.
    pub fn purged_as(&self, key: &[u8], digest: u64) -> bool {
        self.purged_len.load(Ordering::Acquire) > 0 && lock(&self.purged).purged_as(key, digest)
    }

    /// `versions` of `key` without those a recent purge here deleted: what a hint kept here
    /// may hold, so that a copy in flight when the purge ran brings nothing back through it.
    pub fn without_purged(&self, key: &[u8], versions: VersionSet) -> VersionSet {
        self.strip_purged(key, &versions).unwrap_or(versions)
    }

    pub(super) fn strip_purged(&self, key: &[u8], incoming: &VersionSet) -> Option<VersionSet> {
        if self.purged_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        lock(&self.purged).strip(key, incoming)
    }

    /// Up to `limit` keys whose set holds only tombstones, in key order, after `after` (from
    /// the first when `None`), so that a caller can page through them.
    pub fn tombstone_candidates(&self, after: Option<&[u8]>, limit: usize) -> Vec<Key> {
        let candidates = lock(&self.tombstones);
        let start = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        candidates
            .range::<[u8], _>((start, Bound::Unbounded))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Number of keys whose set holds only tombstones.
    pub fn tombstone_count(&self) -> usize {
        lock(&self.tombstones).len()
    }
}

// The tombstones of `set`, and its other versions.
pub(super) fn split_tombstones(set: &VersionSet) -> (VersionSet, VersionSet) {
    let (tombstones, rest): (Vec<_>, Vec<_>) = set
        .versions()
        .iter()
        .cloned()
        .partition(|v| v.is_tombstone());
    (
        VersionSet::from_versions(tombstones),
        VersionSet::from_versions(rest),
    )
}
