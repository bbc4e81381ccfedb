//! What a node remembers of the tombstones it purged, so that no late copy brings a purged
//! delete back.
//!
//! A purged set is remembered by its causal context (its versions' contexts plus their dots):
//! any version whose dot falls inside it was deleted (or replaced before the delete), so a
//! copy of it that arrives after the purge (a slow replica write, a hint, a handoff or an
//! anti-entropy push sent before the purge) is dropped on arrival. Keys the cluster wrote again
//! after the purge carry fresh dots, outside the remembered context, so they are kept. The
//! purged tombstones come back only beside newer tombstones, never a purged value (see
//! [`PurgedKeys::strip`]).
//!
//! The memory is bounded: entries older than a time to live, and the oldest beyond a capacity,
//! are forgotten. What protects a purge beyond that horizon is the purge rule itself (every
//! node that may hold a copy of the key agreed first; see [`crate::core::purge`]).

use std::collections::{HashMap, VecDeque};

use super::ids::Key;
use super::vclock::{Dot, VClock};
use super::version::{Version, VersionSet};

/// One purge remembered.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    digest: u64,
    context: VClock,
    at_ms: u64,
}

/// Purged keys, by key, with the context and digest of the set that was purged.
#[derive(Debug)]
pub struct PurgedKeys {
    ttl_ms: u64,
    capacity: usize,
    by_key: HashMap<Key, Entry>,
    order: VecDeque<(u64, Key)>,
}

impl PurgedKeys {
    /// A memory keeping purges `ttl_ms` long, at most `capacity` of them.
    pub fn new(ttl_ms: u64, capacity: usize) -> Self {
        PurgedKeys {
            ttl_ms,
            capacity,
            by_key: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Remembers that `key` was purged at `now_ms` while it held `set`.
    pub fn record(&mut self, key: Key, set: &VersionSet, now_ms: u64) {
        let entry = Entry {
            digest: set.digest(),
            context: set.context(),
            at_ms: now_ms,
        };
        self.by_key.insert(key.clone(), entry);
        self.order.push_back((now_ms, key));
        while let Some((at, key)) = self.order.front().cloned() {
            let expired = at.saturating_add(self.ttl_ms) < now_ms;
            if !expired && self.order.len() <= self.capacity {
                break;
            }
            self.order.pop_front();
            // Only the newest record of a key counts; older queue entries just go.
            if self.by_key.get(&key).is_some_and(|e| e.at_ms == at) {
                self.by_key.remove(&key);
            }
        }
    }

    /// The context of the set last purged of `key`, while remembered.
    #[cfg(test)]
    pub fn context_of(&self, key: &[u8]) -> Option<&VClock> {
        self.by_key.get(key).map(|entry| &entry.context)
    }

    /// `incoming` without the versions a purge of `key` deleted; `None` when it loses
    /// nothing (the common case, which allocates nothing).
    ///
    /// The purged tombstones are kept, and only the purged values go, when `incoming` also
    /// holds tombstones the purge did not cover (deletes that did not see it): such a set
    /// needs a purge of its own, which takes the older tombstones with it, and every replica
    /// can converge on it meanwhile. Stripped, they would stay on a replica that missed the
    /// purge (a lost order, a purge a crash undid) with nothing to remove them by: a purge
    /// order names a set by its digest, and no order names the purged tombstones apart from
    /// the newer ones, so those replicas would never agree again.
    pub fn strip(&self, key: &[u8], incoming: &VersionSet) -> Option<VersionSet> {
        let entry = self.by_key.get(key)?;
        let dead = |dot: &Dot| entry.context.contains(dot);
        let versions = incoming.versions();
        let newer_tombstones = versions.iter().any(|v| v.is_tombstone() && !dead(&v.dot));
        let goes = |v: &Version| dead(&v.dot) && !(newer_tombstones && v.is_tombstone());
        if !versions.iter().any(goes) {
            return None;
        }
        Some(VersionSet::from_versions(
            versions.iter().filter(|v| !goes(v)).cloned(),
        ))
    }

    /// True when a purge of `key` remembered here covers every version of `set`: each was
    /// purged, or replaced before the purge by what was.
    pub fn covers(&self, key: &[u8], set: &VersionSet) -> bool {
        self.by_key
            .get(key)
            .is_some_and(|entry| (set.versions().iter()).all(|v| entry.context.contains(&v.dot)))
    }

    /// True when `key` was purged here with exactly the set of digest `digest`.
    pub fn purged_as(&self, key: &[u8], digest: u64) -> bool {
        self.by_key.get(key).is_some_and(|e| e.digest == digest)
    }

    /// Number of purges remembered.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when no purge is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::ids::ActorId;
    use crate::core::vclock::Dot;

    fn write(set: &mut VersionSet, ctx: &VClock, actor: &str, counter: u64, v: Option<&str>) {
        let dot = Dot::new(ActorId::new(actor, 1), counter);
        set.write(ctx, dot, v.map(|v| Bytes::copy_from_slice(v.as_bytes())), 0);
    }

    /// A value of key `k`, its delete, and a memory of that delete purged.
    fn value_deleted_and_purged() -> (VersionSet, VersionSet, PurgedKeys) {
        let mut old = VersionSet::new();
        write(&mut old, &VClock::new(), "a", 1, Some("old"));
        let mut deleted = old.clone();
        write(&mut deleted, &old.context(), "a", 2, None);
        let mut memo = PurgedKeys::new(1_000, 10);
        memo.record(Key::from_static(b"k"), &deleted, 0);
        (old, deleted, memo)
    }

    #[test]
    fn a_late_copy_of_a_deleted_value_is_stripped_and_a_new_write_kept() {
        let (old, deleted, memo) = value_deleted_and_purged();
        assert!(memo.purged_as(b"k", deleted.digest()));
        assert_eq!(memo.strip(b"k", &old), Some(VersionSet::new()));
        assert_eq!(memo.strip(b"k", &deleted), Some(VersionSet::new()));
        let mut fresh = VersionSet::new();
        write(&mut fresh, &VClock::new(), "a", 3, Some("new"));
        assert_eq!(memo.strip(b"k", &fresh), None);
        let mut both = old.clone();
        both.merge(&fresh);
        assert_eq!(memo.strip(b"k", &both), Some(fresh));
        assert_eq!(memo.strip(b"other", &old), None);
    }

    #[test]
    fn purged_tombstones_ride_along_with_newer_tombstones_and_purged_values_never_do() {
        let (old, purged, memo) = value_deleted_and_purged();
        // A replica that missed the purge took a delete that did not see that one.
        let mut newer = VersionSet::new();
        write(&mut newer, &VClock::new(), "b", 1, None);
        let mut missed = purged.clone();
        missed.merge(&newer);
        assert_eq!(missed.versions().len(), 2);
        assert_eq!(
            memo.strip(b"k", &missed),
            None,
            "both tombstones are taken: the set needs a purge of its own"
        );
        // The deleted value still goes, beside a newer tombstone as anywhere.
        let mut stale = old.clone();
        stale.merge(&newer);
        assert_eq!(memo.strip(b"k", &stale), Some(newer.clone()));
        // The purged tombstones beside a new value alone go as before (the holder is asked to
        // purge them: they are all its tombstones).
        let mut fresh = VersionSet::new();
        write(&mut fresh, &VClock::new(), "c", 1, Some("new"));
        let mut beside_value = purged.clone();
        beside_value.merge(&fresh);
        assert_eq!(memo.strip(b"k", &beside_value), Some(fresh));
    }

    #[test]
    fn the_memory_is_bounded_by_age_and_count() {
        let mut set = VersionSet::new();
        write(&mut set, &VClock::new(), "a", 1, None);
        let mut memo = PurgedKeys::new(100, 2);
        for (i, at) in [(0, 0), (1, 10), (2, 20)] {
            memo.record(Key::from(format!("k{i}")), &set, at);
        }
        assert_eq!(memo.len(), 2, "the oldest went past the capacity");
        assert!(!memo.purged_as(b"k0", set.digest()));
        memo.record(Key::from_static(b"k3"), &set, 500);
        assert_eq!(memo.len(), 1, "the others expired");
        assert!(memo.purged_as(b"k3", set.digest()));
    }
}
