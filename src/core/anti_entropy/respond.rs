//! The answering side of a round, and of the purge's steps.

use super::{
    AeReply, AeRequest, BUCKETS, DIGESTS_MAX, KEYS_BUDGET, SETS_BUDGET, Scope, SegmentView,
    SharedDigests, Step, approx_bytes, bucket_digests, bucket_of, shared_keys, shares,
};
use crate::core::ids::{Key, NodeId};
use crate::core::purge::{held_digest, purge_agreed};
use crate::core::ring::Ring;
use crate::core::store::{SEGMENTS, Store};
use crate::core::version::VersionSet;

/// Bytes of bucket digests a segment's listing may use instead (about 9 per digest).
const DIRECT_LISTING_BYTES: usize = BUCKETS * 9;

/// One node's side of a round: its data, its view of the ring, and what it shares with the
/// peer at the other end.
pub struct Replica<'a> {
    /// The stored data.
    pub store: &'a Store,
    /// This node's ring.
    pub ring: &'a Ring,
    /// Replicas per key.
    pub n: usize,
    /// This node.
    pub me: &'a NodeId,
    /// The digests shared with the peer, refreshed for this step.
    pub digests: &'a SharedDigests,
    /// Whether this node keeps hints of a key (a purge waits for them to be delivered).
    pub hinted: &'a dyn Fn(&[u8]) -> bool,
    /// Wall-clock milliseconds, recorded with purges.
    pub now_ms: u64,
}

impl Replica<'_> {
    pub(super) fn peer(&self) -> &NodeId {
        self.digests.peer()
    }

    pub(super) fn scope(&self) -> Scope {
        Scope::of(self.ring, self.n)
    }

    pub(super) fn shares(&self, key: &[u8]) -> bool {
        shares(self.ring, self.n, self.me, self.peer(), key)
    }

    pub(super) fn shared_keys(&self, segment: usize) -> Vec<(Key, u64)> {
        shared_keys(self.store, self.ring, self.n, self.me, self.peer(), segment)
    }

    // Merges a set received from the peer; true when it changed something (not when the
    // engine failed: the next round tries again).
    pub(super) fn take(&self, key: &Key, set: &VersionSet) -> bool {
        self.store.merge(key, set).is_ok_and(|o| o.changed)
    }
}

/// What answering a request did here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The reply to send.
    pub reply: AeReply,
    /// Keys whose set changed here.
    pub repaired: usize,
    /// Keys purged here.
    pub purged: usize,
}

/// Answers a request from the peer `replica.digests` is about (the request's sender).
pub fn respond(replica: &Replica<'_>, request: AeRequest) -> Answer {
    let answer = |reply| Answer {
        reply,
        repaired: 0,
        purged: 0,
    };
    // The purge steps name keys explicitly; they need no agreement on the ring.
    match request.step {
        Step::Digests { keys } => answer(AeReply::Digests(
            keys.iter()
                .take(DIGESTS_MAX)
                .map(|k| held_digest(replica.store, k, (replica.hinted)(k)))
                .collect(),
        )),
        Step::Purge { keys } => {
            let purged = keys
                .iter()
                .filter(|(k, d)| {
                    purge_agreed(replica.store, k, *d, (replica.hinted)(k), replica.now_ms)
                })
                .count();
            Answer {
                reply: AeReply::Purged(u32::try_from(purged).unwrap_or(u32::MAX)),
                repaired: 0,
                purged,
            }
        }
        _ if request.scope != replica.scope() => answer(AeReply::ScopeMismatch),
        Step::Root { root } if root == replica.digests.root() => answer(AeReply::InSync),
        Step::Root { .. } => answer(AeReply::Groups(replica.digests.groups())),
        Step::Segments { segments } => answer(answer_segments(replica, &segments)),
        Step::Keys { buckets } => answer(answer_keys(replica, &buckets)),
        Step::Exchange { push, want, purge } => answer_exchange(replica, push, &want, &purge),
    }
}

// Each segment is answered once, so that however many entries a request carries, the answer
// lists at most every segment.
fn answer_segments(replica: &Replica<'_>, segments: &[(u16, u64)]) -> AeReply {
    let mut seen = vec![false; SEGMENTS];
    let differing = segments
        .iter()
        .filter(|&&(segment, theirs)| {
            let first = seen
                .get_mut(usize::from(segment))
                .is_some_and(|seen| !std::mem::replace(seen, true));
            first && replica.digests.segment(segment.into()) != theirs
        })
        .map(|&(segment, _)| {
            let keys = replica.shared_keys(segment.into());
            let listing: usize = keys.iter().map(|(k, _)| k.len() + 10).sum();
            let view = if listing <= DIRECT_LISTING_BYTES {
                SegmentView::Keys(keys)
            } else {
                SegmentView::Digests(bucket_digests(&keys))
            };
            (segment, view)
        })
        .collect();
    AeReply::Buckets(differing)
}

fn answer_keys(replica: &Replica<'_>, buckets: &[(u16, u8)]) -> AeReply {
    let mut listed = 0u32;
    let mut keys = Vec::new();
    let mut bytes = 0usize;
    // Consecutive buckets of one segment share one listing of it.
    let mut listing: Option<(u16, Vec<(Key, u64)>)> = None;
    for &(segment, bucket) in buckets {
        if bytes >= KEYS_BUDGET {
            break;
        }
        listed += 1;
        if usize::from(segment) >= SEGMENTS {
            continue;
        }
        if listing.as_ref().is_none_or(|(s, _)| *s != segment) {
            listing = Some((segment, replica.shared_keys(segment.into())));
        }
        let Some((_, segment_keys)) = &listing else {
            continue;
        };
        for (key, digest) in segment_keys {
            if bucket_of(key) == usize::from(bucket) {
                bytes += key.len() + 8;
                keys.push((key.clone(), *digest));
            }
        }
    }
    AeReply::Keys { listed, keys }
}

fn answer_exchange(
    replica: &Replica<'_>,
    push: Vec<(Key, VersionSet)>,
    want: &[Key],
    purge: &[(Key, u64)],
) -> Answer {
    let mut repaired = 0;
    let mut purged = 0;
    let mut purge_back = Vec::new();
    for (key, set) in push {
        if !replica.shares(&key) {
            continue;
        }
        let digest = set.digest();
        if replica.store.digest(&key) == 0 && replica.store.purged_as(&key, digest) {
            // Purged here with exactly that set: the sender missed the purge order.
            purge_back.push((key, digest));
            continue;
        }
        if let Some(purged) = replica.store.purged_tombstones_in(&key, &set) {
            // Purged here, but the sender holds them beside a later write.
            purge_back.push((key.clone(), purged));
        }
        if replica.take(&key, &set) {
            repaired += 1;
        }
    }
    for (key, digest) in purge {
        if replica.shares(key) && replica.store.purge_tombstones(key, *digest, replica.now_ms) {
            purged += 1;
        }
    }
    let mut served = 0u32;
    let mut sets = Vec::new();
    let mut bytes = 0usize;
    for key in want {
        if bytes >= SETS_BUDGET {
            break;
        }
        served += 1;
        if !replica.shares(key) {
            continue;
        }
        let set = replica.store.get(key);
        if set.is_empty() {
            continue;
        }
        bytes += approx_bytes(key, &set);
        sets.push((key.clone(), set));
    }
    Answer {
        reply: AeReply::Sets {
            served,
            sets,
            purge: purge_back,
        },
        repaired,
        purged,
    }
}
