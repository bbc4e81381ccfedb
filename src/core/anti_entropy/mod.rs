//! Anti-entropy between two replicas: every decision, no I/O.
//!
//! # What is compared
//!
//! Two nodes A and B compare only the keys they both own: keys whose first N nodes on the
//! current ring include both. The store keeps, per segment of ring positions (see
//! [`crate::core::store`]), the XOR of `key_element(key, key digest)` over all its keys,
//! updated on every write. From it each node derives, per peer, the *shared* digest of every
//! segment (the same XOR over the shared keys only), cached in [`SharedDigests`] with the raw
//! segment digest it was computed from: while no write touches a segment and the ring and N
//! stay the same, nothing is recomputed. Segments form [`GROUPS`] groups; a group digest hashes
//! its segments' digests, the root hashes the group digests.
//!
//! # A round (A initiates, B answers; [`Initiator`] and [`respond`](fn@respond))
//!
//! 1. A sends its root (8 bytes). Equal: the round ends. That is the whole cost of a round in
//!    sync: one request of about 30 bytes and a one-byte answer.
//! 2. Otherwise B answers with its group digests (64); A sends its segment digests of the
//!    groups that differ (64 per group); B answers, for each segment that differs, with its
//!    [`BUCKETS`] bucket digests (a bucket: the keys of the segment whose ring positions share
//!    the next 4 bits). A asks for the keys of the buckets that differ; B answers with
//!    (key, key digest) of its shared keys there, up to [`KEYS_BUDGET`] bytes of keys (the
//!    rest in a later step). At a million keys a bucket holds about 15, so one differing key
//!    costs about 2 KB of digests and listings, whatever the store's size.
//! 3. A compares those keys with its own: it sends the sets B lacks or holds differently, and
//!    names the keys it lacks or holds differently; B merges what it got and answers with the
//!    sets asked for, up to [`SETS_BUDGET`] bytes per message (the rest in later steps). A
//!    merges them. Both now hold the merge of both sets for every key that differed.
//!
//! Every request carries the sender's [`Scope`] (ring fingerprint and N): nodes with different
//! views of the ring would filter different keys, so they skip the round instead of shipping
//! keys over a transient disagreement. Keys a node holds but no longer owns are not handed
//! off by anti-entropy (that is the handoff's work, [`crate::core::handoff`]).
//!
//! # Purged tombstones
//!
//! The purge itself is [`crate::core::purge`]; the same messages carry its steps. An owner
//! that purged a key remembers it ([`crate::core::purged`]): anti-entropy never takes that
//! exact set back from a peer; instead it asks the peer to purge it too (the peer does so only
//! if it still holds exactly that all-tombstone set), so owners that missed the purge order
//! catch up instead of spreading the tombstone again. A peer that holds those tombstones (or
//! what of them a later write did not replace) beside a later write (one that did not see
//! the delete, taken before the order reached it) is asked the same, and drops just the
//! tombstones, which is what the owners that purged hold once that write reached them;
//! without it the owners would differ forever. A peer that holds them beside a later
//! *delete* (two tombstone sets no order can tell apart) sends them on instead: a node that
//! purged takes its purged tombstones back beside newer tombstones
//! ([`crate::core::purged::PurgedKeys::strip`]), the owners converge on the one all-tombstone
//! set, and the next purge takes it whole.
//!
//! This file holds the tree's shape, the [`Scope`], the errors and which keys two nodes share;
//! the digests shared with each peer are in `digests`, the messages in `messages`, the
//! initiating side and the choice of its peer in `initiator`, the answering side in `respond`.

mod digests;
mod initiator;
mod messages;
mod respond;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::hash::stable_hash;
use super::ids::{Key, NodeId};
use super::ring::Ring;
use super::store::{CELLS, SEGMENTS, Store};
use super::version::VersionSet;

pub use digests::SharedDigests;
pub use initiator::{Initiator, RoundStats, pick_peer};
pub use messages::{AeReply, AeRequest, SegmentView, Step};
pub use respond::{Answer, Replica, respond};

/// Groups of segments in the top level of the digest tree.
pub const GROUPS: usize = 64;
/// Segments per group.
pub const SEGMENTS_PER_GROUP: usize = SEGMENTS / GROUPS;
/// Buckets per segment, in the lowest level of the digest tree: the store's cells.
pub const BUCKETS: usize = CELLS / SEGMENTS;
/// Most bytes of keys one answer with key digests carries (at least one bucket always goes).
pub const KEYS_BUDGET: usize = 1 << 20;
/// Most keys a purge check asks the digests of in one request; an answer to more covers only
/// these, which confirms nothing (the asker wants one digest per key).
pub const DIGESTS_MAX: usize = 4096;
/// Most bytes of version sets one message carries (at least one set always goes). With the
/// largest set a write may make (8 MiB) a message stays far below the frame limit.
pub const SETS_BUDGET: usize = 4 << 20;

/// Why a round stopped early.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AeError {
    /// This node's ring or N changed during the round.
    #[error("the ring or N changed during the round")]
    ScopeChanged,
    /// The peer's answer does not fit the question.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
    /// The peer answered a question that was not asked.
    #[error("unexpected answer to a {0} request")]
    Unexpected(&'static str),
    /// An exchange step moved nothing, so further steps would not either.
    #[error("the exchange made no progress")]
    NoProgress,
}

/// The view under which keys are filtered: the ring's layout and N.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    /// Fingerprint of the ring's members and their vnode counts.
    pub ring: u64,
    /// Replicas per key.
    pub n: u32,
}

impl Scope {
    /// The scope of `ring` with `n` replicas per key.
    pub fn of(ring: &Ring, n: usize) -> Scope {
        let mut layout = Vec::new();
        for node in ring.nodes() {
            let name = node.as_str().as_bytes();
            layout.extend_from_slice(&(name.len() as u64).to_le_bytes());
            layout.extend_from_slice(name);
            layout.extend_from_slice(&ring.vnodes_of(node).unwrap_or(0).to_le_bytes());
        }
        Scope {
            ring: xxh3_64(&layout),
            n: u32::try_from(n).unwrap_or(u32::MAX),
        }
    }
}

/// True when both `a` and `b` are among the first `n` owners of `key`.
pub fn shares(ring: &Ring, n: usize, a: &NodeId, b: &NodeId, key: &[u8]) -> bool {
    shares_at(ring, n, a, b, Ring::key_position(key))
}

/// True when both `a` and `b` are among the first `n` owners of ring position `position`.
pub fn shares_at(ring: &Ring, n: usize, a: &NodeId, b: &NodeId, position: u64) -> bool {
    let Ok(list) = ring.preference_list_at(position) else {
        return false;
    };
    let (mut has_a, mut has_b) = (false, false);
    for node in list.take(n) {
        has_a |= node == a;
        has_b |= node == b;
    }
    has_a && has_b
}

/// The keys of `segment` that `me` and `peer` both own, with their digests, sorted.
pub fn shared_keys(
    store: &Store,
    ring: &Ring,
    n: usize,
    me: &NodeId,
    peer: &NodeId,
    segment: usize,
) -> Vec<(Key, u64)> {
    store
        .keys_in_segment(segment)
        .into_iter()
        .filter(|(key, _)| shares(ring, n, me, peer, key))
        .collect()
}

/// The bucket of `key` within its segment: the 4 bits of its ring position after the
/// segment's, which make its cell in the store.
pub fn bucket_of(key: &[u8]) -> usize {
    crate::core::segments::cell_at(stable_hash(key)) % BUCKETS
}

/// The bucket digests of one segment's `keys` (with their key digests).
pub fn bucket_digests(keys: &[(Key, u64)]) -> Vec<u64> {
    let mut buckets = vec![0u64; BUCKETS];
    for (key, digest) in keys {
        buckets[bucket_of(key)] ^= Store::key_element(key, *digest);
    }
    buckets
}

/// A rough size of a (key, set) on the wire, for batching only.
pub fn approx_bytes(key: &[u8], set: &VersionSet) -> usize {
    key.len()
        + set
            .versions()
            .iter()
            .map(|v| v.value.as_ref().map_or(0, |b| b.len()) + 48 + 40 * v.context.len())
            .sum::<usize>()
}

#[cfg(test)]
mod tests;
