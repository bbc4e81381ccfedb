//! The digests of the keys a node shares with one peer, kept up to date cheaply.

use xxhash_rust::xxh3::xxh3_64;

use super::{GROUPS, SEGMENTS_PER_GROUP, Scope, shares_at};
use crate::core::ids::NodeId;
use crate::core::ranges::{RangeDigests, RangePlan};
use crate::core::ring::Ring;
use crate::core::store::Store;

/// The digests of the keys this node shares with one peer, per segment, kept up to date
/// cheaply: a segment is recomputed only when its raw digest moved, from the store's cell
/// digests (O(16) reads, see [`crate::core::ranges`]), and a group (and the root) only when
/// one of its segments moved. The plan of which cells are shared is made once per scope.
pub struct SharedDigests {
    me: NodeId,
    peer: NodeId,
    scope: Option<Scope>,
    shared: Option<RangeDigests>,
    groups: Vec<u64>,
    root: u64,
}

impl SharedDigests {
    /// An empty cache of what `me` shares with `peer`.
    pub fn new(me: NodeId, peer: NodeId) -> Self {
        let mut digests = SharedDigests {
            me,
            peer,
            scope: None,
            shared: None,
            groups: vec![0; GROUPS],
            root: 0,
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
        let shared = match &mut self.shared {
            Some(shared) if self.scope == Some(scope) => shared,
            _ => {
                let (me, peer) = (&self.me, &self.peer);
                let plan = RangePlan::new(ring, |position| shares_at(ring, n, me, peer, position));
                self.scope = Some(scope);
                self.shared.insert(RangeDigests::new(plan))
            }
        };
        let mut stale_groups = Vec::new();
        let recomputed = shared.refresh(store, |segment, _| {
            let group = segment / SEGMENTS_PER_GROUP;
            if stale_groups.last() != Some(&group) {
                stale_groups.push(group);
            }
        });
        if !stale_groups.is_empty() {
            self.rehash(stale_groups);
        }
        recomputed
    }

    /// The shared digests of the buckets of `segment`, read from `store` now (all 0 before
    /// the first refresh; empty out of range).
    pub fn buckets(&self, store: &Store, segment: usize) -> Vec<u64> {
        match &self.shared {
            Some(shared) => shared.cell_digests(store, segment),
            None if segment < crate::core::segments::SEGMENTS => vec![0; super::BUCKETS],
            None => Vec::new(),
        }
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

    /// The shared digest of one segment (0 if out of range or never refreshed).
    pub fn segment(&self, segment: usize) -> u64 {
        self.shared.as_ref().map_or(0, |s| s.segment(segment))
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
