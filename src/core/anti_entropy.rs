//! Anti-entropy between two replicas, and the purge of tombstones: every decision, no I/O.
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
//! # A round (A initiates, B answers; [`Initiator`] and [`respond`])
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
//! off by anti-entropy.
//!
//! # Tombstones
//!
//! A delete writes tombstones; a key whose set is only tombstones is purged (removed) when
//! (1) its newest tombstone is older than the grace period AND (2) every one of its N owners
//! holds exactly the same set (same key digest). The first owner of the key checks: it asks
//! the other owners for their digest of the key ([`PurgeRound`]), and if all equal its own it
//! tells each owner to purge, which each does only if its own set is still that one
//! ([`crate::core::store::Store::purge_tombstones`]). The grace is never sufficient alone.
//!
//! Interplay with anti-entropy: an owner that purged keeps the (key, digest) in a
//! [`PurgeMemo`] for a while. Anti-entropy never takes that exact set back from a peer;
//! instead it asks the peer to purge it too (the peer does so only if it still holds exactly
//! that all-tombstone set), so owners that missed the purge order catch up instead of
//! spreading the tombstone again. An older value cannot come back from an owner: every owner
//! held only the tombstones when the purge was agreed, and tombstones replace the versions
//! their context covers.
//!
//! What can still resurrect a purged delete (the price of dropping tombstones at all):
//! - a hint for the key held by a fallback and delivered after the purge;
//! - a read through a fallback still holding an old version (read repair spreads it);
//! - a node that held the key but is not among the owners the checker saw (the ring changed,
//!   or the two nodes' rings disagreed at check time) sending it back later.
//!
//! An owner that lost its data (a restart in memory) answers digest 0, which blocks the purge
//! until anti-entropy has given it the tombstones.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::hash::stable_hash;
use super::ids::{Key, NodeId};
use super::ring::Ring;
use super::store::{SEGMENTS, Store};
use super::version::VersionSet;

/// Groups of segments in the top level of the digest tree.
pub const GROUPS: usize = 64;
/// Segments per group.
pub const SEGMENTS_PER_GROUP: usize = SEGMENTS / GROUPS;
/// Buckets per segment, in the lowest level of the digest tree.
pub const BUCKETS: usize = 16;
/// Most bytes of keys one answer with key digests carries (at least one bucket always goes).
pub const KEYS_BUDGET: usize = 1 << 20;
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
    let Ok(list) = ring.preference_list(key) else {
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

/// The bucket of `key` within its segment: the 4 bits of its ring position after the segment's.
pub fn bucket_of(key: &[u8]) -> usize {
    let segment_bits = SEGMENTS.trailing_zeros();
    let bucket_bits = BUCKETS.trailing_zeros();
    ((stable_hash(key) >> (64 - segment_bits - bucket_bits)) as usize) & (BUCKETS - 1)
}

/// The bucket digests of one segment's `keys` (with their key digests).
pub fn bucket_digests(keys: &[(Key, u64)]) -> Vec<u64> {
    let mut buckets = vec![0u64; BUCKETS];
    for (key, digest) in keys {
        buckets[bucket_of(key)] ^= Store::key_element(key, *digest);
    }
    buckets
}

#[derive(Clone, Copy)]
struct Cached {
    raw: u64,
    shared: u64,
}

/// The digests of the keys this node shares with one peer, per segment, kept up to date
/// cheaply: a segment is recomputed only when its raw digest moved.
pub struct SharedDigests {
    me: NodeId,
    peer: NodeId,
    scope: Option<Scope>,
    segments: Vec<Option<Cached>>,
}

impl SharedDigests {
    /// An empty cache of what `me` shares with `peer`.
    pub fn new(me: NodeId, peer: NodeId) -> Self {
        SharedDigests {
            me,
            peer,
            scope: None,
            segments: vec![None; SEGMENTS],
        }
    }

    /// The peer these digests are for.
    pub fn peer(&self) -> &NodeId {
        &self.peer
    }

    /// Brings every segment up to date with `store` under `ring` and `n`; returns how many
    /// segments had to be recomputed (0 in steady state).
    pub fn refresh(&mut self, store: &Store, ring: &Ring, n: usize) -> usize {
        let scope = Scope::of(ring, n);
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
            *cached = Some(Cached { raw, shared });
            recomputed += 1;
        }
        recomputed
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

    /// The digest of one group of segments.
    pub fn group(&self, group: usize) -> u64 {
        let start = group * SEGMENTS_PER_GROUP;
        let bytes: Vec<u8> = (start..start + SEGMENTS_PER_GROUP)
            .flat_map(|s| self.segment(s).to_le_bytes())
            .collect();
        xxh3_64(&bytes)
    }

    /// Every group digest, in order.
    pub fn groups(&self) -> Vec<u64> {
        (0..GROUPS).map(|g| self.group(g)).collect()
    }

    /// The digest of everything shared.
    pub fn root(&self) -> u64 {
        let bytes: Vec<u8> = self.groups().iter().flat_map(|g| g.to_le_bytes()).collect();
        xxh3_64(&bytes)
    }
}

/// Purged (key, digest) pairs remembered for a while, so that anti-entropy neither takes a
/// purged tombstone back nor lets a peer that missed the purge keep spreading it.
pub struct PurgeMemo {
    ttl_ms: u64,
    capacity: usize,
    inner: Mutex<MemoInner>,
}

#[derive(Default)]
struct MemoInner {
    by_key: HashMap<Key, (u64, u64)>,
    order: VecDeque<(u64, Key)>,
}

impl PurgeMemo {
    /// A memo keeping entries `ttl_ms` long, at most `capacity` of them (oldest dropped first).
    pub fn new(ttl_ms: u64, capacity: usize) -> Self {
        PurgeMemo {
            ttl_ms,
            capacity,
            inner: Mutex::new(MemoInner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemoInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers that `key` was purged while its set had `digest`.
    pub fn record(&self, key: Key, digest: u64, now_ms: u64) {
        let mut inner = self.lock();
        inner.by_key.insert(key.clone(), (digest, now_ms));
        inner.order.push_back((now_ms, key));
        while let Some((at, key)) = inner.order.front().cloned() {
            let expired = at.saturating_add(self.ttl_ms) < now_ms;
            if !expired && inner.order.len() <= self.capacity {
                break;
            }
            inner.order.pop_front();
            // Only the newest record of a key counts; older queue entries just go.
            if inner.by_key.get(&key).is_some_and(|(_, t)| *t == at) {
                inner.by_key.remove(&key);
            }
        }
    }

    /// True when `key` was purged with exactly `digest` less than the TTL ago.
    pub fn holds(&self, key: &[u8], digest: u64, now_ms: u64) -> bool {
        self.lock()
            .by_key
            .get(key)
            .is_some_and(|(d, at)| *d == digest && at.saturating_add(self.ttl_ms) >= now_ms)
    }

    /// Number of remembered purges.
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Purges `key` here if its set is still the all-tombstone set `digest`, and remembers it.
pub fn purge_here(store: &Store, memo: &PurgeMemo, key: &Key, digest: u64, now_ms: u64) -> bool {
    let purged = store.purge_tombstones(key, digest);
    if purged {
        memo.record(key.clone(), digest, now_ms);
    }
    purged
}

/// A request of anti-entropy or of the purge, from one node to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AeRequest {
    /// The sender, whose shared keys the answer is about.
    pub from: NodeId,
    /// The sender's view of the ring and N.
    pub scope: Scope,
    /// What is asked.
    pub step: Step,
}

/// What an [`AeRequest`] asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Compare roots.
    Root {
        /// The sender's root digest.
        root: u64,
    },
    /// Compare these segments' digests; answer with the bucket digests of those that differ.
    Segments {
        /// (segment, the sender's shared digest).
        segments: Vec<(u16, u64)>,
    },
    /// List the shared keys of these buckets.
    Keys {
        /// (segment, bucket), in the order to list them.
        buckets: Vec<(u16, u8)>,
    },
    /// Merge `push`, purge `purge`, answer with the sets of `want`.
    Exchange {
        /// Sets the receiver lacks or holds differently.
        push: Vec<(Key, VersionSet)>,
        /// Keys whose sets the sender asks for.
        want: Vec<Key>,
        /// (key, digest) the sender purged: purge them too if still exactly that set.
        purge: Vec<(Key, u64)>,
    },
    /// Answer with the digest of each key (0 when absent), for a purge check.
    Digests {
        /// The keys.
        keys: Vec<Key>,
    },
    /// Purge each key whose set is still exactly the given all-tombstone one.
    Purge {
        /// (key, digest agreed by every owner).
        keys: Vec<(Key, u64)>,
    },
}

/// The answer to an [`AeRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AeReply {
    /// The receiver's ring or N differs from the sender's: no comparison is meaningful.
    ScopeMismatch,
    /// The roots are equal.
    InSync,
    /// The roots differ: the receiver's group digests.
    Groups(Vec<u64>),
    /// What the receiver holds of each asked segment whose digest differs.
    Buckets(Vec<(u16, SegmentView)>),
    /// The keys of the asked buckets.
    Keys {
        /// How many of the asked buckets were listed (a prefix; the rest is asked again).
        listed: u32,
        /// (key, digest) of the receiver's shared keys in those buckets.
        keys: Vec<(Key, u64)>,
    },
    /// The answer to an exchange.
    Sets {
        /// How many of the wanted keys were served (a prefix; the rest is asked again).
        served: u32,
        /// Sets of the served keys the receiver holds.
        sets: Vec<(Key, VersionSet)>,
        /// Pushed keys the receiver had purged with exactly that set: purge them too.
        purge: Vec<(Key, u64)>,
    },
    /// The digest of each asked key, in order.
    Digests(Vec<u64>),
    /// How many keys were purged.
    Purged(u32),
}

/// One side's view of a segment that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentView {
    /// The [`BUCKETS`] bucket digests, to narrow the difference down further.
    Digests(Vec<u64>),
    /// The shared keys themselves, with their digests, when listing them is no larger than
    /// the bucket digests would be (sparse segments, an empty replica).
    Keys(Vec<(Key, u64)>),
}

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
    /// Recently purged keys.
    pub memo: &'a PurgeMemo,
    /// Wall-clock milliseconds, for the memo.
    pub now_ms: u64,
}

impl Replica<'_> {
    fn peer(&self) -> &NodeId {
        self.digests.peer()
    }

    fn scope(&self) -> Scope {
        Scope::of(self.ring, self.n)
    }

    fn shares(&self, key: &[u8]) -> bool {
        shares(self.ring, self.n, self.me, self.peer(), key)
    }

    fn shared_keys(&self, segment: usize) -> Vec<(Key, u64)> {
        shared_keys(self.store, self.ring, self.n, self.me, self.peer(), segment)
    }

    // Merges a set received from the peer; true when it changed something.
    fn take(&self, key: &Key, set: &VersionSet) -> bool {
        self.store.merge(key, set).changed
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
            keys.iter().map(|k| replica.store.digest(k)).collect(),
        )),
        Step::Purge { keys } => {
            let purged = keys
                .iter()
                .filter(|(k, d)| purge_here(replica.store, replica.memo, k, *d, replica.now_ms))
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

fn answer_segments(replica: &Replica<'_>, segments: &[(u16, u64)]) -> AeReply {
    let differing = segments
        .iter()
        .filter(|&&(segment, theirs)| {
            usize::from(segment) < SEGMENTS && replica.digests.segment(segment.into()) != theirs
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
        if replica.store.digest(&key) == 0 && replica.memo.holds(&key, digest, replica.now_ms) {
            // Purged here with exactly that set: the sender missed the purge order.
            purge_back.push((key, digest));
            continue;
        }
        if replica.take(&key, &set) {
            repaired += 1;
        }
    }
    for (key, digest) in purge {
        if replica.shares(key)
            && purge_here(replica.store, replica.memo, key, *digest, replica.now_ms)
        {
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

/// A rough size of a (key, set) on the wire, for batching only.
pub fn approx_bytes(key: &[u8], set: &VersionSet) -> usize {
    key.len()
        + set
            .versions()
            .iter()
            .map(|v| v.value.as_ref().map_or(0, |b| b.len()) + 48 + 40 * v.context.len())
            .sum::<usize>()
}

/// What one round did, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// Requests sent.
    pub requests: usize,
    /// The roots were equal.
    pub in_sync: bool,
    /// The peer's ring or N differed.
    pub scope_mismatch: bool,
    /// Segments found different.
    pub differing_segments: usize,
    /// Buckets found different.
    pub differing_buckets: usize,
    /// Sets sent to the peer.
    pub sets_sent: usize,
    /// Keys whose set changed here.
    pub repaired: usize,
    /// Keys purged here on the peer's word.
    pub purged: usize,
}

struct Plan {
    push: VecDeque<Key>,
    want: Vec<Key>,
    purge: Vec<(Key, u64)>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.push.is_empty() && self.want.is_empty() && self.purge.is_empty()
    }
}

enum Phase {
    Root,
    Buckets {
        asked: Vec<(u16, u64)>,
    },
    Keys {
        asked: Vec<(u16, u8)>,
    },
    Sets {
        rest: Vec<(u16, u8)>,
        plan: Plan,
        pushed: HashSet<Key>,
        wanted: Vec<Key>,
    },
    Done,
}

/// The initiating side of a round, as a state machine: feed it each reply, send what it
/// returns, until it returns `None`. Every step takes the node's current [`Replica`].
pub struct Initiator {
    from: NodeId,
    scope: Scope,
    phase: Phase,
    stats: RoundStats,
}

impl Initiator {
    /// Starts a round: the first request to send.
    pub fn start(replica: &Replica<'_>) -> (Initiator, AeRequest) {
        let mut initiator = Initiator {
            from: replica.me.clone(),
            scope: replica.scope(),
            phase: Phase::Root,
            stats: RoundStats::default(),
        };
        let request = initiator.request(Step::Root {
            root: replica.digests.root(),
        });
        (initiator, request)
    }

    /// What the round did so far.
    pub fn stats(&self) -> &RoundStats {
        &self.stats
    }

    fn request(&mut self, step: Step) -> AeRequest {
        self.stats.requests += 1;
        AeRequest {
            from: self.from.clone(),
            scope: self.scope,
            step,
        }
    }

    /// Takes the peer's reply to the last request; returns the next request, or `None` when
    /// the round is over.
    pub fn step(
        &mut self,
        replica: &Replica<'_>,
        reply: AeReply,
    ) -> Result<Option<AeRequest>, AeError> {
        if replica.scope() != self.scope {
            self.phase = Phase::Done;
            return Err(AeError::ScopeChanged);
        }
        let asked = match &self.phase {
            Phase::Root => "root",
            Phase::Buckets { .. } => "segments",
            Phase::Keys { .. } => "keys",
            Phase::Sets { .. } => "exchange",
            Phase::Done => "finished round's",
        };
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        match (phase, reply) {
            (Phase::Done, _) => Ok(None),
            (_, AeReply::ScopeMismatch) => {
                self.stats.scope_mismatch = true;
                Ok(None)
            }
            (Phase::Root, AeReply::InSync) => {
                self.stats.in_sync = true;
                Ok(None)
            }
            (Phase::Root, AeReply::Groups(theirs)) => {
                if theirs.len() != GROUPS {
                    return Err(AeError::Malformed("group count"));
                }
                let segments: Vec<(u16, u64)> = (0..GROUPS)
                    .filter(|&g| replica.digests.group(g) != theirs[g])
                    .flat_map(|g| g * SEGMENTS_PER_GROUP..(g + 1) * SEGMENTS_PER_GROUP)
                    .map(|s| (s as u16, replica.digests.segment(s)))
                    .collect();
                if segments.is_empty() {
                    return Ok(None);
                }
                self.phase = Phase::Buckets {
                    asked: segments.clone(),
                };
                Ok(Some(self.request(Step::Segments { segments })))
            }
            (Phase::Buckets { asked }, AeReply::Buckets(theirs)) => {
                let asked: HashSet<u16> = asked.iter().map(|(s, _)| *s).collect();
                let mut buckets = Vec::new();
                let mut listed_buckets = Vec::new();
                let mut listed_keys = Vec::new();
                for (segment, view) in theirs {
                    if !asked.contains(&segment) {
                        return Err(AeError::Malformed("bucket digests"));
                    }
                    self.stats.differing_segments += 1;
                    match view {
                        SegmentView::Digests(digests) if digests.len() == BUCKETS => {
                            let mine = bucket_digests(&replica.shared_keys(segment.into()));
                            buckets.extend(
                                (0..BUCKETS)
                                    .filter(|&b| mine[b] != digests[b])
                                    .map(|b| (segment, b as u8)),
                            );
                        }
                        SegmentView::Digests(_) => {
                            return Err(AeError::Malformed("bucket digests"));
                        }
                        SegmentView::Keys(keys) => {
                            // The whole segment is listed: compare it now.
                            listed_buckets.extend((0..BUCKETS).map(|b| (segment, b as u8)));
                            listed_keys.extend(keys);
                        }
                    }
                }
                self.stats.differing_buckets += buckets.len();
                let plan = make_plan(replica, &listed_buckets, listed_keys);
                Ok(self.next_exchange(replica, buckets, plan))
            }
            (Phase::Keys { asked }, AeReply::Keys { listed, keys }) => {
                let listed = listed as usize;
                if listed == 0 || listed > asked.len() {
                    return Err(AeError::Malformed("listed count"));
                }
                let (looked_at, rest) = asked.split_at(listed);
                let plan = make_plan(replica, looked_at, keys);
                Ok(self.next_exchange(replica, rest.to_vec(), plan))
            }
            (
                Phase::Sets {
                    rest,
                    mut plan,
                    pushed,
                    wanted,
                },
                AeReply::Sets {
                    served,
                    sets,
                    purge,
                },
            ) => {
                let served = served as usize;
                if served > wanted.len() {
                    return Err(AeError::Malformed("served count"));
                }
                if served == 0 && pushed.is_empty() && !wanted.is_empty() {
                    return Err(AeError::NoProgress);
                }
                let asked: HashSet<&Key> = wanted[..served].iter().collect();
                for (key, set) in &sets {
                    if !asked.contains(key) || !replica.shares(key) {
                        continue;
                    }
                    let digest = set.digest();
                    if replica.store.digest(key) == 0
                        && replica.memo.holds(key, digest, replica.now_ms)
                    {
                        plan.purge.push((key.clone(), digest));
                    } else if replica.take(key, set) {
                        self.stats.repaired += 1;
                    }
                }
                for (key, digest) in &purge {
                    if pushed.contains(key)
                        && purge_here(replica.store, replica.memo, key, *digest, replica.now_ms)
                    {
                        self.stats.purged += 1;
                    }
                }
                plan.want = wanted[served..].to_vec();
                Ok(self.next_exchange(replica, rest, plan))
            }
            (_, _) => Err(AeError::Unexpected(asked)),
        }
    }

    fn ask_keys(&mut self, buckets: Vec<(u16, u8)>) -> Option<AeRequest> {
        if buckets.is_empty() {
            return None;
        }
        self.phase = Phase::Keys {
            asked: buckets.clone(),
        };
        Some(self.request(Step::Keys { buckets }))
    }

    fn next_exchange(
        &mut self,
        replica: &Replica<'_>,
        rest: Vec<(u16, u8)>,
        mut plan: Plan,
    ) -> Option<AeRequest> {
        if plan.is_empty() {
            return self.ask_keys(rest);
        }
        let mut push = Vec::new();
        let mut pushed = HashSet::new();
        let mut bytes = 0usize;
        while bytes < SETS_BUDGET {
            let Some(key) = plan.push.pop_front() else {
                break;
            };
            let set = replica.store.get(&key);
            if set.is_empty() {
                continue;
            }
            bytes += approx_bytes(&key, &set);
            pushed.insert(key.clone());
            push.push((key, set));
        }
        self.stats.sets_sent += push.len();
        let wanted = std::mem::take(&mut plan.want);
        let purge = std::mem::take(&mut plan.purge);
        let step = Step::Exchange {
            push,
            want: wanted.clone(),
            purge,
        };
        self.phase = Phase::Sets {
            rest,
            plan,
            pushed,
            wanted,
        };
        Some(self.request(step))
    }
}

// Compares the peer's keys of the listed buckets with ours.
fn make_plan(replica: &Replica<'_>, buckets: &[(u16, u8)], keys: Vec<(Key, u64)>) -> Plan {
    let buckets: HashSet<(usize, usize)> = buckets
        .iter()
        .map(|&(s, b)| (usize::from(s), usize::from(b)))
        .collect();
    let in_listed = |key: &[u8]| buckets.contains(&(Store::segment_of(key), bucket_of(key)));
    let mut theirs: BTreeMap<Key, u64> = keys
        .into_iter()
        .filter(|(k, _)| in_listed(k) && replica.shares(k))
        .collect();
    let mut plan = Plan {
        push: VecDeque::new(),
        want: Vec::new(),
        purge: Vec::new(),
    };
    let segments: BTreeSet<usize> = buckets.iter().map(|(s, _)| *s).collect();
    for segment in segments {
        for (key, mine) in replica.shared_keys(segment) {
            if !in_listed(&key) {
                continue;
            }
            match theirs.remove(&key) {
                Some(d) if d == mine => {}
                Some(_) => {
                    plan.push.push_back(key.clone());
                    plan.want.push(key);
                }
                None => plan.push.push_back(key),
            }
        }
    }
    for (key, digest) in theirs {
        if replica.store.digest(&key) != 0 {
            // Written here since our listing: compare it next round.
            continue;
        }
        if replica.memo.holds(&key, digest, replica.now_ms) {
            plan.purge.push((key, digest));
        } else {
            plan.want.push(key);
        }
    }
    plan
}

/// Whether a set is a purge candidate by age: only tombstones, the newest older than `grace_ms`.
pub fn grace_passed(set: &VersionSet, now_ms: u64, grace_ms: u64) -> bool {
    set.is_all_tombstones()
        && set
            .versions()
            .iter()
            .map(|v| v.timestamp_ms)
            .max()
            .is_some_and(|newest| newest.saturating_add(grace_ms) <= now_ms)
}

/// A key this node may purge once the other owners confirm they hold the same set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeCheck {
    /// The key.
    pub key: Key,
    /// Its digest here.
    pub digest: u64,
    /// The key's other owners, who must all answer `digest`.
    pub others: Vec<NodeId>,
}

/// The purge checks of one pass, and the decision once the owners answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeRound {
    checks: Vec<PurgeCheck>,
}

impl PurgeRound {
    /// Picks, among `candidates`, the keys this node is the first owner of, whose sets are
    /// all tombstones past the grace, and whose other owners are all `live`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &Store,
        ring: &Ring,
        n: usize,
        me: &NodeId,
        candidates: impl IntoIterator<Item = Key>,
        now_ms: u64,
        grace_ms: u64,
        live: impl Fn(&NodeId) -> bool,
    ) -> PurgeRound {
        let mut checks = Vec::new();
        for key in candidates {
            let Ok(list) = ring.preference_list(&key) else {
                continue;
            };
            let owners: Vec<NodeId> = list.take(n).cloned().collect();
            if owners.first() != Some(me) || !owners[1..].iter().all(&live) {
                continue;
            }
            let set = store.get(&key);
            if !grace_passed(&set, now_ms, grace_ms) {
                continue;
            }
            checks.push(PurgeCheck {
                digest: set.digest(),
                key,
                others: owners[1..].to_vec(),
            });
        }
        PurgeRound { checks }
    }

    /// The checks of this pass.
    pub fn checks(&self) -> &[PurgeCheck] {
        &self.checks
    }

    /// For each other owner, the keys to ask it the digest of, in check order.
    pub fn questions(&self) -> Vec<(NodeId, Vec<Key>)> {
        let mut by_node: BTreeMap<NodeId, Vec<Key>> = BTreeMap::new();
        for check in &self.checks {
            for node in &check.others {
                by_node
                    .entry(node.clone())
                    .or_default()
                    .push(check.key.clone());
            }
        }
        by_node.into_iter().collect()
    }

    /// The checks every other owner confirmed: `answers` holds, per node, the digests in the
    /// order of its question; a node that did not answer (or answered a wrong count) confirms
    /// nothing.
    pub fn agreed(&self, answers: &HashMap<NodeId, Vec<u64>>) -> Vec<PurgeCheck> {
        let questions: HashMap<NodeId, Vec<Key>> = self.questions().into_iter().collect();
        let confirmed = |node: &NodeId, check: &PurgeCheck| -> bool {
            let (Some(asked), Some(digests)) = (questions.get(node), answers.get(node)) else {
                return false;
            };
            if asked.len() != digests.len() {
                return false;
            }
            asked
                .iter()
                .zip(digests)
                .any(|(k, d)| *k == check.key && *d == check.digest)
        };
        self.checks
            .iter()
            .filter(|check| check.others.iter().all(|node| confirmed(node, check)))
            .cloned()
            .collect()
    }
}

/// The purge orders to send: for each owner, the agreed (key, digest) pairs it holds.
pub fn purge_orders(agreed: &[PurgeCheck]) -> Vec<(NodeId, Vec<(Key, u64)>)> {
    let mut by_node: BTreeMap<NodeId, Vec<(Key, u64)>> = BTreeMap::new();
    for check in agreed {
        for node in &check.others {
            by_node
                .entry(node.clone())
                .or_default()
                .push((check.key.clone(), check.digest));
        }
    }
    by_node.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::core::ids::ActorId;

    fn key(s: &str) -> Key {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn val(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn ring() -> Ring {
        Ring::build(["a", "b", "c"].map(|n| (NodeId::new(n), 16))).unwrap()
    }

    fn size<T: Serialize>(value: &T) -> usize {
        // What the node sends: a tag byte, then postcard.
        postcard::experimental::serialized_size(value).unwrap() + 1
    }

    /// One simulated node.
    struct Sim {
        me: NodeId,
        store: Store,
        memo: PurgeMemo,
        ring: Ring,
        n: usize,
        caches: HashMap<NodeId, SharedDigests>,
        now_ms: u64,
    }

    impl Sim {
        fn new(name: &str, n: usize) -> Self {
            Sim {
                me: NodeId::new(name),
                store: Store::new(ActorId::new(name, 1)),
                memo: PurgeMemo::new(600_000, 10_000),
                ring: ring(),
                n,
                caches: HashMap::new(),
                now_ms: 1_000,
            }
        }

        fn write(&self, k: &str, v: &str) {
            let k = key(k);
            let ctx = self.store.get(&k).read().context;
            self.store
                .coordinate(&k, &ctx, val(v), self.now_ms)
                .unwrap();
        }

        fn delete(&self, k: &str) {
            let k = key(k);
            let ctx = self.store.get(&k).read().context;
            self.store.coordinate(&k, &ctx, None, self.now_ms).unwrap();
        }

        fn copy_to(&self, other: &Sim, k: &str) {
            let k = key(k);
            other.store.merge(&k, &self.store.get(&k));
        }

        /// Runs `f` with this node's side of a round with `peer`, digests refreshed.
        fn with<T>(&mut self, peer: &NodeId, f: impl FnOnce(&Replica<'_>) -> T) -> T {
            let cache = self
                .caches
                .entry(peer.clone())
                .or_insert_with(|| SharedDigests::new(self.me.clone(), peer.clone()));
            cache.refresh(&self.store, &self.ring, self.n);
            let replica = Replica {
                store: &self.store,
                ring: &self.ring,
                n: self.n,
                me: &self.me,
                digests: cache,
                memo: &self.memo,
                now_ms: self.now_ms,
            };
            f(&replica)
        }

        fn shares(&self, peer: &Sim, k: &Key) -> bool {
            shares(&self.ring, self.n, &self.me, &peer.me, k)
        }
    }

    #[derive(Debug, Default)]
    struct Run {
        stats: RoundStats,
        sent_by_initiator: usize,
        sent_by_responder: usize,
        largest_message: usize,
        repaired_by_responder: usize,
    }

    /// One round, `a` initiating; every message measured as the node measures it.
    fn round(a: &mut Sim, b: &mut Sim) -> Result<Run, AeError> {
        let (pa, pb) = (a.me.clone(), b.me.clone());
        let mut run = Run::default();
        let (mut initiator, mut request) = a.with(&pb, Initiator::start);
        loop {
            let sent = size(&request);
            run.sent_by_initiator += sent;
            run.largest_message = run.largest_message.max(sent);
            let answer = b.with(&pa, |r| respond(r, request));
            let sent = size(&answer.reply);
            run.sent_by_responder += sent;
            run.largest_message = run.largest_message.max(sent);
            run.repaired_by_responder += answer.repaired;
            let next = a.with(&pb, |r| initiator.step(r, answer.reply))?;
            match next {
                Some(next) => request = next,
                None => break,
            }
        }
        run.stats = initiator.stats().clone();
        Ok(run)
    }

    fn assert_shared_equal(a: &Sim, b: &Sim) {
        for segment in 0..SEGMENTS {
            for (k, _) in a
                .store
                .keys_in_segment(segment)
                .into_iter()
                .chain(b.store.keys_in_segment(segment))
            {
                if a.shares(b, &k) {
                    assert_eq!(a.store.get(&k), b.store.get(&k), "{k:?}");
                }
            }
        }
    }

    #[test]
    fn in_sync_replicas_exchange_only_the_root() {
        let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 3));
        for i in 0..500 {
            a.write(&format!("k{i}"), "v");
            a.copy_to(&b, &format!("k{i}"));
        }
        let run = round(&mut a, &mut b).unwrap();
        assert!(run.stats.in_sync);
        assert_eq!(run.stats.requests, 1);
        assert!(run.sent_by_initiator <= 32, "{run:?}");
        assert!(run.sent_by_responder <= 2, "{run:?}");
        // Steady state recomputes nothing; one write recomputes one segment.
        let cache = a.caches.get_mut(&b.me).unwrap();
        assert_eq!(cache.refresh(&a.store, &a.ring, 3), 0);
        a.write("k1", "again");
        let cache = a.caches.get_mut(&b.me).unwrap();
        assert_eq!(cache.refresh(&a.store, &a.ring, 3), 1);
        assert_eq!(cache.refresh(&a.store, &a.ring, 2), SEGMENTS, "N changed");
    }

    #[test]
    fn an_empty_replica_catches_up_in_one_round_with_bytes_proportional_to_the_keys() {
        // Whichever side starts: the empty one pulling, or the full one pushing.
        for empty_starts in [true, false] {
            let mut sent = Vec::new();
            for keys in [100usize, 1000] {
                let (mut full, mut empty) = (Sim::new("a", 3), Sim::new("b", 3));
                for i in 0..keys {
                    full.write(&format!("key-{i:05}"), "value-0123456789");
                }
                let run = if empty_starts {
                    let run = round(&mut empty, &mut full).unwrap();
                    assert_eq!(run.stats.repaired, keys);
                    run
                } else {
                    let run = round(&mut full, &mut empty).unwrap();
                    assert_eq!(run.repaired_by_responder, keys);
                    run
                };
                assert_shared_equal(&full, &empty);
                assert!(round(&mut full, &mut empty).unwrap().stats.in_sync);
                sent.push(run.sent_by_initiator + run.sent_by_responder);
            }
            // Per key: the key (once or twice), its digest, one version, segment digests.
            let per_key = (sent[1] - sent[0]) / 900;
            assert!((40..=200).contains(&per_key), "{sent:?}");
            assert!(sent[0] < 100 * 200 + 64 * 1024, "{sent:?}");
        }
    }

    #[test]
    fn one_differing_key_costs_a_path_down_the_tree_not_a_listing() {
        let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 3));
        let name = |i: usize| format!("key-{i:05}-{}", "p".repeat(30));
        for i in 0..20_000 {
            a.write(&name(i), "v");
            a.copy_to(&b, &name(i));
        }
        // A key in a segment too full to list outright, so the buckets narrow it down.
        let changed = (0..20_000)
            .map(name)
            .find(|k| a.store.segment_keys(Store::segment_of(k.as_bytes())).len() >= 4)
            .unwrap();
        b.write(&changed, "changed on b");
        let run = round(&mut a, &mut b).unwrap();
        assert_shared_equal(&a, &b);
        assert_eq!(run.stats.differing_segments, 1);
        assert_eq!(run.stats.differing_buckets, 1);
        assert_eq!((run.stats.sets_sent, run.stats.repaired), (1, 1));
        // Root, 64 group digests, 64 segment digests, 16 bucket digests, a bucket's keys
        // (about one here, 15 at a million keys), and the two sets.
        let total = run.sent_by_initiator + run.sent_by_responder;
        assert!(total < 2200, "{run:?}");
    }

    #[test]
    fn scope_mismatch_ends_the_round_without_exchanging_keys() {
        let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 2));
        a.write("only-a", "v");
        let run = round(&mut a, &mut b).unwrap();
        assert!(run.stats.scope_mismatch);
        assert_eq!(run.stats.requests, 1);
        assert!(b.store.is_empty());
    }

    #[test]
    fn large_differences_travel_in_bounded_batches() {
        let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 3));
        let big = "x".repeat(1 << 20);
        for i in 0..6 {
            a.write(&format!("big{i}"), &big);
        }
        // Over a MiB of key names, so the listing needs more than one answer.
        let long = "k".repeat(200);
        for i in 0..6000 {
            b.write(&format!("{long}{i}"), "v");
        }
        let run = round(&mut a, &mut b).unwrap();
        assert_shared_equal(&a, &b);
        assert!(run.stats.requests > 4, "{:?}", run.stats);
        assert!(
            run.largest_message < SETS_BUDGET + (2 << 20),
            "{}",
            run.largest_message
        );
        assert_eq!(run.repaired_by_responder, 6);
        assert_eq!(run.stats.repaired, 6000);
    }

    fn replica_parts(sim: &mut Sim, peer: &str) -> SharedDigests {
        let mut cache = SharedDigests::new(sim.me.clone(), NodeId::new(peer));
        cache.refresh(&sim.store, &sim.ring, sim.n);
        cache
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let mut a = Sim::new("a", 3);
        a.write("k", "v");
        let cache = replica_parts(&mut a, "b");
        let replica = Replica {
            store: &a.store,
            ring: &a.ring,
            n: 3,
            me: &a.me,
            digests: &cache,
            memo: &a.memo,
            now_ms: 0,
        };
        let (mut i, _) = Initiator::start(&replica);
        assert_eq!(
            i.step(&replica, AeReply::Groups(vec![0; 3])),
            Err(AeError::Malformed("group count"))
        );
        let (mut i, _) = Initiator::start(&replica);
        assert!(matches!(
            i.step(&replica, AeReply::Digests(vec![])),
            Err(AeError::Unexpected("root"))
        ));
        let (mut i, _) = Initiator::start(&replica);
        let next = i.step(&replica, AeReply::Groups(vec![0; GROUPS])).unwrap();
        assert!(matches!(
            next,
            Some(AeRequest {
                step: Step::Segments { .. },
                ..
            })
        ));
        // Bucket digests of a segment that was not asked, or of the wrong count: only the
        // group of "k" differs, so only its segments are asked.
        let k_segment = Store::segment_of(b"k");
        let k_group = k_segment / SEGMENTS_PER_GROUP;
        let mut theirs = cache.groups();
        theirs[k_group] ^= 1;
        let (mut i, _) = Initiator::start(&replica);
        i.step(&replica, AeReply::Groups(theirs.clone())).unwrap();
        let outside = ((k_group + 1) % GROUPS * SEGMENTS_PER_GROUP) as u16;
        assert_eq!(
            i.step(
                &replica,
                AeReply::Buckets(vec![(outside, SegmentView::Keys(vec![]))])
            ),
            Err(AeError::Malformed("bucket digests"))
        );
        let (mut i, _) = Initiator::start(&replica);
        i.step(&replica, AeReply::Groups(theirs)).unwrap();
        let short = AeReply::Buckets(vec![(k_segment as u16, SegmentView::Digests(vec![0; 3]))]);
        assert_eq!(
            i.step(&replica, short),
            Err(AeError::Malformed("bucket digests"))
        );
        // A key listing that lists nothing, or more than was asked.
        let k_segment = k_segment as u16;
        let (mut i, _) = Initiator::start(&replica);
        i.step(&replica, AeReply::Groups(vec![0; GROUPS])).unwrap();
        let next = i
            .step(
                &replica,
                AeReply::Buckets(vec![(k_segment, SegmentView::Digests(vec![0; BUCKETS]))]),
            )
            .unwrap();
        assert!(matches!(
            next,
            Some(AeRequest {
                step: Step::Keys { .. },
                ..
            })
        ));
        assert_eq!(
            i.step(
                &replica,
                AeReply::Keys {
                    listed: 0,
                    keys: vec![]
                }
            ),
            Err(AeError::Malformed("listed count"))
        );
        // A request for an out-of-range segment is simply not different.
        let b = Sim::new("b", 3);
        let cache_b = SharedDigests::new(b.me.clone(), a.me.clone());
        let replica_b = Replica {
            store: &b.store,
            ring: &b.ring,
            n: 3,
            me: &b.me,
            digests: &cache_b,
            memo: &b.memo,
            now_ms: 0,
        };
        let answer = respond(
            &replica_b,
            AeRequest {
                from: a.me.clone(),
                scope: Scope::of(&b.ring, 3),
                step: Step::Segments {
                    segments: vec![(u16::MAX, 7)],
                },
            },
        );
        assert_eq!(answer.reply, AeReply::Buckets(vec![]));
    }

    #[test]
    fn pushed_keys_the_receiver_does_not_share_are_ignored() {
        // N = 1: a owns nothing together with b.
        let a = Sim::new("a", 1);
        let mut b = Sim::new("b", 1);
        a.write("k", "v");
        let set = a.store.get(&key("k"));
        let answer = b.with(&a.me.clone(), |r| {
            respond(
                r,
                AeRequest {
                    from: NodeId::new("a"),
                    scope: Scope::of(r.ring, 1),
                    step: Step::Exchange {
                        push: vec![(key("k"), set)],
                        want: vec![key("k")],
                        purge: vec![],
                    },
                },
            )
        });
        assert_eq!(answer.repaired, 0);
        assert!(b.store.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn random_differences_converge_after_one_round(
            ops in proptest::collection::vec((0u16..300, 0u8..5), 1..120),
            n in 2usize..=3,
        ) {
            let (mut a, mut b) = (Sim::new("a", n), Sim::new("b", n));
            let c = Sim::new("c", n);
            for (k, op) in &ops {
                let k = format!("k{k}");
                match op {
                    0 => a.write(&k, "a"),
                    1 => b.write(&k, "b"),
                    2 => { a.write(&k, "both"); a.copy_to(&b, &k); }
                    3 => { c.write(&k, "c"); c.copy_to(&a, &k); c.copy_to(&b, &k); }
                    _ => { a.write(&k, "gone"); a.delete(&k); }
                }
            }
            let before: Vec<(Key, VersionSet)> = (0..300)
                .map(|i| key(&format!("k{i}")))
                .filter(|k| !a.shares(&b, k))
                .map(|k| { let s = b.store.get(&k); (k, s) })
                .collect();
            let differing: usize = (0..300)
                .map(|i| key(&format!("k{i}")))
                .filter(|k| a.shares(&b, k) && a.store.digest(k) != b.store.digest(k))
                .count();
            let run = round(&mut a, &mut b).unwrap();
            assert_shared_equal(&a, &b);
            for (k, set) in before {
                prop_assert_eq!(b.store.get(&k), set, "a key b does not share with a");
            }
            prop_assert!(run.stats.sets_sent + run.stats.repaired >= differing);
            prop_assert!(run.stats.sets_sent <= differing && run.stats.repaired <= differing);
            let again = round(&mut b, &mut a).unwrap();
            prop_assert!(again.stats.in_sync, "{:?}", again.stats);
        }
    }

    // The purge.

    fn delete_everywhere(nodes: &[&Sim], k: &str) {
        nodes[0].write(k, "v");
        nodes[0].delete(k);
        for other in &nodes[1..] {
            nodes[0].copy_to(other, k);
        }
    }

    #[test]
    fn grace_is_measured_from_the_newest_tombstone() {
        let a = Sim::new("a", 3);
        delete_everywhere(&[&a], "k");
        let set = a.store.get(&key("k"));
        assert!(!grace_passed(&set, 1_000 + 9_999, 10_000));
        assert!(grace_passed(&set, 1_000 + 10_000, 10_000));
        a.write("live", "v");
        assert!(!grace_passed(&a.store.get(&key("live")), u64::MAX, 0));
        assert!(!grace_passed(&VersionSet::new(), u64::MAX, 0));
    }

    /// A key whose first owner is `first` under `ring()` and N = 3.
    fn key_first_owned_by(first: &str) -> String {
        let ring = ring();
        (0..)
            .map(|i| format!("t{i}"))
            .find(|k| ring.owners(k.as_bytes(), 3).unwrap()[0] == NodeId::new(first))
            .unwrap()
    }

    #[test]
    fn purge_needs_the_first_owner_the_grace_live_owners_and_equal_digests() {
        let (a, b, c) = (Sim::new("a", 3), Sim::new("b", 3), Sim::new("c", 3));
        let mine = key_first_owned_by("a");
        let theirs = key_first_owned_by("b");
        delete_everywhere(&[&a, &b, &c], &mine);
        delete_everywhere(&[&a, &b, &c], &theirs);
        let candidates = || a.store.tombstone_candidates(0, 100);
        let all_live = |_: &NodeId| true;
        let early = PurgeRound::new(
            &a.store,
            &a.ring,
            3,
            &a.me,
            candidates(),
            1_500,
            10_000,
            all_live,
        );
        assert!(early.checks().is_empty(), "the grace has not passed");
        let c_down = |n: &NodeId| n.as_str() != "c";
        let blocked = PurgeRound::new(
            &a.store,
            &a.ring,
            3,
            &a.me,
            candidates(),
            60_000,
            10_000,
            c_down,
        );
        assert!(blocked.checks().is_empty(), "an owner is not live");
        let round = PurgeRound::new(
            &a.store,
            &a.ring,
            3,
            &a.me,
            candidates(),
            60_000,
            10_000,
            all_live,
        );
        assert_eq!(round.checks().len(), 1, "only the key a is first owner of");
        assert_eq!(round.checks()[0].key, key(&mine));
        let questions = round.questions();
        assert_eq!(questions.len(), 2);
        let answer = |sim: &Sim| -> Vec<u64> {
            questions
                .iter()
                .find(|(n, _)| *n == sim.me)
                .map(|(_, keys)| keys.iter().map(|k| sim.store.digest(k)).collect())
                .unwrap()
        };
        let mut answers: HashMap<NodeId, Vec<u64>> =
            [(b.me.clone(), answer(&b)), (c.me.clone(), answer(&c))].into();
        let agreed = round.agreed(&answers);
        assert_eq!(agreed.len(), 1);
        assert_eq!(purge_orders(&agreed).len(), 2);
        // One owner that differs, lacks the key, is silent or answers garbage: no purge.
        answers.insert(c.me.clone(), vec![0]);
        assert!(round.agreed(&answers).is_empty());
        answers.insert(c.me.clone(), vec![]);
        assert!(round.agreed(&answers).is_empty());
        answers.remove(&c.me);
        assert!(round.agreed(&answers).is_empty());
    }

    #[test]
    fn a_purge_is_not_undone_by_anti_entropy_and_spreads_to_an_owner_that_missed_it() {
        let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 3));
        let k = "deleted";
        delete_everywhere(&[&a, &b], k);
        let digest = a.store.digest(&key(k));
        assert!(purge_here(&a.store, &a.memo, &key(k), digest, a.now_ms));
        // b missed the purge order. Whoever starts the round, a does not take the tombstone
        // back, and b purges it.
        let run = round(&mut b, &mut a).unwrap();
        assert_eq!(run.stats.purged, 1, "{run:?}");
        assert!(a.store.is_empty() && b.store.is_empty());
        assert!(round(&mut a, &mut b).unwrap().stats.in_sync);

        let k2 = "deleted-2";
        delete_everywhere(&[&a, &b], k2);
        let digest = a.store.digest(&key(k2));
        assert!(purge_here(&a.store, &a.memo, &key(k2), digest, a.now_ms));
        let run = round(&mut a, &mut b).unwrap();
        assert_eq!(run.repaired_by_responder, 0);
        assert!(a.store.is_empty() && b.store.is_empty(), "{run:?}");
    }

    #[test]
    fn a_rewritten_key_is_not_purged_by_a_stale_order() {
        let (a, b) = (Sim::new("a", 3), Sim::new("b", 3));
        let k = key("k");
        delete_everywhere(&[&a, &b], "k");
        let agreed = a.store.digest(&k);
        b.write("k", "written again");
        assert!(!purge_here(&b.store, &b.memo, &k, agreed, 0));
        assert_eq!(
            b.store.get(&k).read().values,
            vec![Bytes::from("written again")]
        );
        assert!(b.memo.is_empty());
    }

    #[test]
    fn the_memo_forgets_after_its_ttl_and_beyond_its_capacity() {
        let memo = PurgeMemo::new(100, 2);
        memo.record(key("x"), 1, 0);
        assert!(memo.holds(b"x", 1, 100));
        assert!(!memo.holds(b"x", 2, 100), "another set of the key");
        assert!(!memo.holds(b"x", 1, 101));
        memo.record(key("y"), 1, 10);
        memo.record(key("z"), 1, 20);
        assert_eq!(memo.len(), 2, "the oldest went");
        assert!(!memo.holds(b"x", 1, 20));
        memo.record(key("y"), 2, 30);
        assert!(memo.holds(b"y", 2, 30));
        memo.record(key("w"), 1, 500);
        assert_eq!(memo.len(), 1, "expired entries went");
    }
}
