//! The digests of the keys a node shares with one peer, kept up to date cheaply.

use xxhash_rust::xxh3::xxh3_64;

use super::{GROUPS, SEGMENTS_PER_GROUP, Scope, shared_keys};
use crate::core::ids::NodeId;
use crate::core::ring::Ring;
use crate::core::store::{SEGMENTS, Store};

#[derive(Clone, Copy)]
struct Cached {
    raw: u64,
    shared: u64,
}

/// The digests of the keys this node shares with one peer, per segment, kept up to date
/// cheaply: a segment is recomputed only when its raw digest moved, and a group (and the
/// root) only when one of its segments did.
pub struct SharedDigests {
    me: NodeId,
    peer: NodeId,
    scope: Option<Scope>,
    segments: Vec<Option<Cached>>,
    groups: Vec<u64>,
    root: u64,
    // The store's fingerprint at the last refresh: unchanged means no segment moved.
    fingerprint: Option<u64>,
}

impl SharedDigests {
    /// An empty cache of what `me` shares with `peer`.
    pub fn new(me: NodeId, peer: NodeId) -> Self {
        let mut digests = SharedDigests {
            me,
            peer,
            scope: None,
            segments: vec![None; SEGMENTS],
            groups: vec![0; GROUPS],
            root: 0,
            fingerprint: None,
        };
        digests.rehash((0..GROUPS).collect());
        digests
    }

    /// The peer these digests are for.
    pub fn peer(&self) -> &NodeId {
        &self.peer
    }

    /// Brings every segment up to date with `store` under `ring` and `n`; returns how many
    /// segments had to be recomputed (0 in steady state).
    pub fn refresh(&mut self, store: &Store, ring: &Ring, n: usize) -> usize {
        let scope = Scope::of(ring, n);
        // Read before listing, as the segments are: a write in between moves it again.
        let fingerprint = store.fingerprint();
        if self.scope == Some(scope) && self.fingerprint == Some(fingerprint) {
            return 0;
        }
        self.fingerprint = Some(fingerprint);
        let mut stale_groups = Vec::new();
        if self.scope != Some(scope) {
            self.segments.fill(None);
            self.scope = Some(scope);
        }
        let mut recomputed = 0;
        for (segment, cached) in self.segments.iter_mut().enumerate() {
            // Read before listing: the listing is then at least as new as `raw`, and a write
            // in between leaves `raw` behind the store, so the next refresh recomputes.
            let raw = store.segment_digest(segment);
            if cached.is_some_and(|c| c.raw == raw) {
                continue;
            }
            let shared = if raw == 0 {
                0
            } else {
                shared_keys(store, ring, n, &self.me, &self.peer, segment)
                    .iter()
                    .fold(0, |acc, (key, digest)| {
                        acc ^ Store::key_element(key, *digest)
                    })
            };
            if cached.is_none_or(|c| c.shared != shared) {
                let group = segment / SEGMENTS_PER_GROUP;
                if stale_groups.last() != Some(&group) {
                    stale_groups.push(group);
                }
            }
            *cached = Some(Cached { raw, shared });
            recomputed += 1;
        }
        if !stale_groups.is_empty() {
            self.rehash(stale_groups);
        }
        recomputed
    }

    /// Recomputes the digests of `groups`, then the root.
    fn rehash(&mut self, groups: Vec<usize>) {
        for group in groups {
            let start = group * SEGMENTS_PER_GROUP;
            let bytes: Vec<u8> = (start..start + SEGMENTS_PER_GROUP)
                .flat_map(|s| self.segment(s).to_le_bytes())
                .collect();
            self.groups[group] = xxh3_64(&bytes);
        }
        let bytes: Vec<u8> = self.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
        self.root = xxh3_64(&bytes);
    }

    /// The scope of the last refresh.
    pub fn scope(&self) -> Option<Scope> {
        self.scope
    }

    /// The shared digest of one segment (0 if out of range or never refreshed).
    pub fn segment(&self, segment: usize) -> u64 {
        self.segments
            .get(segment)
            .copied()
            .flatten()
            .map_or(0, |c| c.shared)
    }

    /// The digest of one group of segments (0 if out of range).
    pub fn group(&self, group: usize) -> u64 {
        self.groups.get(group).copied().unwrap_or(0)
    }

    /// Every group digest, in order.
    pub fn groups(&self) -> Vec<u64> {
        self.groups.clone()
    }

    /// The digest of everything shared.
    pub fn root(&self) -> u64 {
        self.root
    }
}
