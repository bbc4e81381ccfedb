//! Ownership handoff: moving the keys this node holds but no longer owns to their owners.
//!
//! When the ring changes (a node joins, leaves or is removed), keys move between owners. The
//! scan walks the store segment by segment and yields every key whose current owners exclude
//! this node, with the replicas that should take it: the owners, or for an owner that is down
//! a fallback holding a hint, as any write would. Once every one of them acknowledged the set,
//! this node drops its copy, provided the set did not change meanwhile
//! ([`Store::remove_handed`]) and none of them has left or been removed since; a copy kept
//! is handed again on a later pass. Dropping is what keeps a delete deleted: a former owner
//! that kept an old value would send it back to the owners after their purge.
//!
//! # Listing only what holds something to hand off
//!
//! Keys not owned here arrive not only with a ring change: a replica write or a read repair
//! sent by a node whose ring was not yet this one, a handoff from another node's view, a
//! transfer that failed or whose key changed meanwhile, a key whose owners had no live stand-in.
//! So the scan cannot stop after the pass a ring change starts; but walking every key forever
//! (as it once did, a pass every half minute) costs O(data) while nothing is misplaced. The
//! scan keeps instead, per segment, the digest of the keys held here that this node does not
//! own ([`RangeDigests`] over the ring ranges it does not own, made from the store's cell
//! digests, which every write moves): a segment whose digest is 0 holds no such key and is
//! skipped without a listing. Every call brings those digests up to date (one read of the
//! store's fingerprint when no write came; otherwise a read of each segment's raw digest and 16
//! reads for each segment a write moved), so a key that lands outside this node's ranges at
//! any time is picked up by the next call, and a key that could not move yet keeps its segment
//! listed on every pass until it goes (at most the budget of segments per call). In sync, with
//! nothing misplaced, no key is listed at all. (A digest of 0 over keys that exist would take
//! a 64-bit hash collision, the same bet every digest comparison of anti-entropy makes.)
//!
//! A leaving node owns nothing, so the same scan drains it completely. Only a node that is
//! valid or leaving hands off: a joining node does not know its place yet, and a node that
//! left or was removed must not push old data back into the cluster.

use std::collections::HashSet;
use std::fmt;

use super::anti_entropy::Scope;
use super::ids::{Key, NodeId};
use super::quorum::Target;
use super::ranges::{RangeDigests, RangePlan};
use super::store::{SEGMENTS, Store};
use super::version::VersionSet;
use super::view::View;

/// Segments listed per call while the pass a ring change started is under way.
pub const URGENT_SEGMENTS: usize = 512;
/// Segments listed per call otherwise (segments holding nothing to hand off are not listed).
pub const STEADY_SEGMENTS: usize = 64;

/// A key to hand to the replicas that should hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The key.
    pub key: Key,
    /// Its set here when it was picked.
    pub versions: VersionSet,
    /// That set's digest: the copy is dropped only if it still has it.
    pub digest: u64,
    /// Who must acknowledge it: owners, or fallbacks standing in for dead owners.
    pub targets: Vec<Target>,
}

/// Progress of the handoff scan, kept beside the store so that it outlives any one actor.
#[derive(Default)]
pub struct Handoff {
    cursor: usize,
    ring_version: u64,
    urgent: bool,
    in_flight: HashSet<Key>,
    handed: u64,
    // Keys seen not owned here in the pass under way, and in the last complete pass.
    seen: u64,
    last_pass: u64,
    misplaced: Option<Misplaced>,
}

// The segments holding keys this node does not own, known from the digests of those keys.
struct Misplaced {
    // The ring and N the digests are for.
    scope: Scope,
    digests: RangeDigests,
    // A bit per segment whose digest is not 0.
    segments: [u64; SEGMENTS / 64],
}

impl Misplaced {
    fn new(scope: Scope, view: &View<'_>) -> Misplaced {
        let plan = RangePlan::new(view.ring, |position| !view.owns_at(position));
        Misplaced {
            scope,
            digests: RangeDigests::new(plan),
            segments: [0; SEGMENTS / 64],
        }
    }

    fn refresh(&mut self, store: &Store) {
        let segments = &mut self.segments;
        self.digests.refresh(store, |segment, digest| {
            let bit = 1u64 << (segment % 64);
            if digest == 0 {
                segments[segment / 64] &= !bit;
            } else {
                segments[segment / 64] |= bit;
            }
        });
    }

    // The first segment from `from` on that holds keys not owned here.
    fn next_from(&self, from: usize) -> Option<usize> {
        let mut word = from / 64;
        let mut bits = self.segments.get(word)? & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            bits = *self.segments.get(word)?;
        }
    }
}

impl fmt::Debug for Handoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handoff")
            .field("cursor", &self.cursor)
            .field("ring_version", &self.ring_version)
            .field("urgent", &self.urgent)
            .field("in_flight", &self.in_flight.len())
            .field("handed", &self.handed)
            .field("remaining", &self.remaining())
            .finish()
    }
}

impl Handoff {
    /// A scan that has handed nothing off yet.
    pub fn new() -> Self {
        Handoff::default()
    }

    /// Scans the next segments and returns up to about `max` keys to hand off: held here, not
    /// owned by this node on `view`'s ring, and not in flight. A new `ring_version` restarts
    /// the scan from the first segment. Keys whose replicas cannot all be reached now are left
    /// for a later pass. Only segments holding keys not owned here are listed (see the module
    /// doc).
    pub fn scan(
        &mut self,
        store: &Store,
        view: &View<'_>,
        ring_version: u64,
        max: usize,
    ) -> Vec<Transfer> {
        if ring_version != self.ring_version {
            self.ring_version = ring_version;
            self.cursor = 0;
            self.urgent = true;
            self.seen = 0;
        }
        let mut transfers = Vec::new();
        if view.ring.is_empty() {
            return transfers;
        }
        let scope = Scope::of(view.ring, view.n);
        let misplaced = match &mut self.misplaced {
            Some(misplaced) if misplaced.scope == scope => misplaced,
            _ => self.misplaced.insert(Misplaced::new(scope, view)),
        };
        misplaced.refresh(store);
        let budget = if self.urgent {
            URGENT_SEGMENTS
        } else {
            STEADY_SEGMENTS
        };
        // From the cursor to the end of the pass, then round to where this call started.
        let start = self.cursor;
        let mut wrapped = false;
        let mut listed = 0;
        while listed < budget && transfers.len() < max {
            let next = misplaced
                .next_from(self.cursor)
                .filter(|&segment| !wrapped || segment < start);
            match next {
                Some(segment) => {
                    listed += 1;
                    for (key, digest) in store.keys_in_segment(segment) {
                        if digest == 0 || view.owns(&key) {
                            continue;
                        }
                        self.seen += 1;
                        if self.in_flight.contains(&key) || transfers.len() >= max {
                            continue;
                        }
                        let Some(targets) = view.targets_elsewhere(&key) else {
                            continue;
                        };
                        let versions = store.get(&key);
                        let digest = versions.digest();
                        self.in_flight.insert(key.clone());
                        transfers.push(Transfer {
                            key,
                            versions,
                            digest,
                            targets,
                        });
                    }
                    self.cursor = segment + 1;
                }
                None if wrapped => break,
                // Nothing more to hand off in this pass.
                None => self.cursor = SEGMENTS,
            }
            if self.cursor == SEGMENTS {
                self.cursor = 0;
                self.urgent = false;
                self.last_pass = self.seen;
                self.seen = 0;
                wrapped = true;
            }
        }
        transfers
    }

    /// A transfer ended: when every target acknowledged, the copy here is dropped (if it did
    /// not change meanwhile, the ring as `view` sees it now did not give the key back to this
    /// node, and no target is `gone` now: see [`crate::core::drain::settle`] for a target
    /// removed while its write was out). Returns whether it was dropped.
    pub fn finish(
        &mut self,
        store: &Store,
        view: &View<'_>,
        transfer: &Transfer,
        all_acked: bool,
        gone: &dyn Fn(&NodeId) -> bool,
    ) -> bool {
        self.in_flight.remove(&transfer.key);
        if !all_acked
            || transfer.targets.iter().any(|target| gone(&target.node))
            || view.owns(&transfer.key)
            || !store.remove_handed(&transfer.key, transfer.digest)
        {
            return false;
        }
        self.handed += 1;
        // It was counted when scanned: the counts go down as keys leave, rather than wait
        // for the next full pass (half a minute in steady state).
        self.seen = self.seen.saturating_sub(1);
        self.last_pass = self.last_pass.saturating_sub(1);
        true
    }

    /// Keys handed off and dropped here so far.
    pub fn handed(&self) -> u64 {
        self.handed
    }

    /// Keys held here that belong elsewhere, as of the last complete pass (or the pass under
    /// way, when it already saw more).
    pub fn remaining(&self) -> u64 {
        self.last_pass.max(self.seen)
    }

    /// Keys whose handoff is under way.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use bytes::Bytes;

    use super::*;
    use crate::core::engine::{Engine, EngineError, MemoryEngine, Segment, Summary};
    use crate::core::ids::{ActorId, NodeId, nodes};
    use crate::core::ring::Ring;
    use crate::core::store::SetLimits;
    use crate::core::vclock::VClock;

    /// The in-memory engine, counting the segments listed through it: what a scan costs.
    struct Listings {
        engine: MemoryEngine,
        listed: Arc<AtomicU64>,
    }

    impl Engine for Listings {
        fn locked(&self, segment: usize, f: &mut dyn FnMut(&mut dyn Segment)) {
            self.engine.locked(segment, f);
        }
        fn keys_in_segment(&self, segment: usize) -> Result<Vec<(Key, u64)>, EngineError> {
            self.listed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.engine.keys_in_segment(segment)
        }
        fn scan(&self, f: &mut dyn FnMut(&[u8], Summary)) -> Result<(), EngineError> {
            self.engine.scan(f)
        }
        fn meta(&self, name: &str) -> Result<Option<Bytes>, EngineError> {
            self.engine.meta(name)
        }
        fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), EngineError> {
            self.engine.set_meta(name, value)
        }
        fn sync(&self) -> Result<(), EngineError> {
            self.engine.sync()
        }
        fn durable(&self) -> bool {
            self.engine.durable()
        }
    }

    /// A store of node `me` whose engine counts the segments listed; reads the count.
    fn counted_store(me: &str) -> (Store, impl Fn() -> u64) {
        let listed = Arc::new(AtomicU64::new(0));
        let engine = Listings {
            engine: MemoryEngine::default(),
            listed: Arc::clone(&listed),
        };
        let store = Store::open(Box::new(engine), ActorId::new(me, 1), SetLimits::NONE).unwrap();
        (store, move || {
            listed.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Writes `count` keys into a store of node `me`.
    fn store_with(me: &str, count: usize) -> Store {
        store_with_counted(me, count).0
    }

    /// Writes `count` keys into a store of node `me` that counts the segments listed.
    fn store_with_counted(me: &str, count: usize) -> (Store, impl Fn() -> u64) {
        let (store, listed) = counted_store(me);
        for i in 0..count {
            let key = Bytes::from(format!("k{i}"));
            store
                .coordinate(&key, &VClock::new(), Some(Bytes::from("v")), 0)
                .unwrap();
        }
        (store, listed)
    }

    fn full_pass(h: &mut Handoff, store: &Store, view: &View<'_>, version: u64) -> Vec<Transfer> {
        let mut all = Vec::new();
        for _ in 0..(SEGMENTS / STEADY_SEGMENTS + 1) {
            all.extend(h.scan(store, view, version, usize::MAX));
        }
        all
    }

    #[test]
    fn keys_no_longer_owned_are_handed_once_and_dropped_when_all_acked() {
        // n1 held every key on a 3-node ring; n4 and n5 joined.
        let me = NodeId::new("n1");
        let store = store_with("n1", 300);
        let whole = Ring::with_default_vnodes(nodes(&["n1", "n2", "n3", "n4", "n5"])).unwrap();
        let live = |_: &NodeId| true;
        let view = View::n3(&me, &whole, &live);
        let nobody = |_: &NodeId| false;
        let mut h = Handoff::new();
        let transfers = full_pass(&mut h, &store, &view, 2);
        let expected: usize = (0..300)
            .filter(|i| !view.owns(format!("k{i}").as_bytes()))
            .count();
        assert!(expected > 0);
        assert_eq!(
            transfers.len(),
            expected,
            "every key n1 no longer owns, once"
        );
        for t in &transfers {
            let owners: Vec<NodeId> = t.targets.iter().map(|t| t.node.clone()).collect();
            assert_eq!(owners, whole.owners(&t.key, 3).unwrap());
            assert_eq!(t.digest, store.digest(&t.key));
        }
        assert!(
            full_pass(&mut h, &store, &view, 2).is_empty(),
            "in flight: not picked twice"
        );
        assert_eq!(h.remaining(), expected as u64);
        let epochs = store.epoch_changes();
        let before = h.remaining();
        // One failed, one changed meanwhile, the rest acked.
        let (failed, changed, rest) = (&transfers[0], &transfers[1], &transfers[2..]);
        assert!(!h.finish(&store, &view, failed, false, &nobody));
        let ctx = store.get(&changed.key).read().context;
        store
            .coordinate(&changed.key, &ctx, Some(Bytes::from("v2")), 1)
            .unwrap();
        assert!(
            !h.finish(&store, &view, changed, true, &nobody),
            "a changed copy is kept"
        );
        // One target was removed while its write was out, after acking it: kept (the node
        // stops once it hears, and pushes nothing back).
        let (target_removed, rest) = (&rest[0], &rest[1..]);
        let removed = target_removed.targets[0].node.clone();
        assert!(
            !h.finish(&store, &view, target_removed, true, &|n| *n == removed),
            "an ack from a node removed since licenses no drop"
        );
        // The ring gave one back (n4 and n5 left again) before its transfer ended: kept.
        let (given_back, rest) = (&rest[0], &rest[1..]);
        let three = Ring::with_default_vnodes(nodes(&["n1", "n2", "n3"])).unwrap();
        assert!(!h.finish(
            &store,
            &View::n3(&me, &three, &live),
            given_back,
            true,
            &nobody
        ));
        assert!(
            !store.get(&given_back.key).is_empty(),
            "a key owned again stays"
        );
        for t in rest {
            assert!(h.finish(&store, &view, t, true, &nobody));
        }
        assert_eq!(h.handed(), rest.len() as u64);
        assert_eq!(
            h.remaining(),
            before - rest.len() as u64,
            "the count follows the keys handed"
        );
        assert_eq!(store.len(), 300 - rest.len());
        assert!(
            store.epoch_changes() > epochs,
            "dropping our own writes takes a fresh actor epoch"
        );
        let again = full_pass(&mut h, &store, &view, 2);
        let keys: Vec<&Key> = again.iter().map(|t| &t.key).collect();
        // Under the five-node ring again, the key given back is handed off again too.
        assert_eq!(keys.len(), 4);
        for kept in [failed, changed, target_removed, given_back] {
            assert!(keys.contains(&&kept.key));
        }
    }

    #[test]
    fn a_dead_owner_gets_a_fallback_and_without_one_the_key_waits() {
        let me = NodeId::new("n1");
        let store = store_with("n1", 50);
        let ring = Ring::with_default_vnodes(nodes(&["n2", "n3", "n4", "n5"])).unwrap();
        let n5_down = |n: &NodeId| n.as_str() != "n5";
        let view = View::n3(&me, &ring, &n5_down);
        let transfers = full_pass(&mut Handoff::new(), &store, &view, 1);
        assert_eq!(transfers.len(), 50, "n1 is off the ring: it owns nothing");
        for t in &transfers {
            assert_eq!(t.targets.len(), 3);
            assert!(t.targets.iter().all(|t| t.node.as_str() != "n5"));
            assert!(t.targets.iter().all(|t| t.node != me));
        }
        // Only three nodes left and one of them down: no stand-in, nothing moves.
        let small = Ring::with_default_vnodes(nodes(&["n2", "n3", "n5"])).unwrap();
        let view = View::n3(&me, &small, &n5_down);
        assert!(full_pass(&mut Handoff::new(), &store, &view, 1).is_empty());
        let empty = Ring::default();
        let view = View::n3(&me, &empty, &n5_down);
        assert!(Handoff::new().scan(&store, &view, 1, 10).is_empty());
    }

    #[test]
    fn a_ring_change_restarts_the_scan_urgently() {
        // n1 is off the ring: every key it holds goes, over more segments than one call lists.
        let me = NodeId::new("n1");
        let (store, listed) = store_with_counted("n1", 3_000);
        let ring = Ring::with_default_vnodes(nodes(&["n2", "n3", "n4"])).unwrap();
        let live = |_: &NodeId| true;
        let view = View::n3(&me, &ring, &live);
        // Listed by one call, while nothing is handed off (the keys stay in flight).
        let mut h = Handoff::new();
        let call = |h: &mut Handoff, ring_version| {
            let before = listed();
            h.scan(&store, &view, ring_version, usize::MAX);
            listed() - before
        };
        assert_eq!(call(&mut h, 1), URGENT_SEGMENTS as u64, "urgent");
        for _ in 0..SEGMENTS / URGENT_SEGMENTS {
            call(&mut h, 1);
        }
        assert_eq!(
            call(&mut h, 1),
            STEADY_SEGMENTS as u64,
            "a full pass ends the urgency"
        );
        assert_eq!(call(&mut h, 2), URGENT_SEGMENTS as u64, "a new ring");
    }

    #[test]
    fn in_sync_no_key_is_listed_and_a_misplaced_write_is_found_by_the_next_call() {
        let me = NodeId::new("n1");
        let ring = Ring::with_default_vnodes(nodes(&["n1", "n2", "n3", "n4", "n5"])).unwrap();
        let live = |_: &NodeId| true;
        let view = View::n3(&me, &ring, &live);
        // n1 holds exactly what it owns.
        let (store, listed) = counted_store("n1");
        let owned: Vec<Key> = (0..2_000)
            .map(|i| Bytes::from(format!("k{i}")))
            .filter(|k| view.owns(k))
            .collect();
        for k in &owned {
            store
                .coordinate(k, &VClock::new(), Some(Bytes::from("v")), 0)
                .unwrap();
        }
        let mut h = Handoff::new();
        for _ in 0..3 * SEGMENTS / STEADY_SEGMENTS {
            assert!(h.scan(&store, &view, 1, usize::MAX).is_empty());
        }
        assert_eq!(listed(), 0, "nothing misplaced: nothing listed");
        assert_eq!(h.remaining(), 0);
        // Writes go on to owned keys: still nothing listed.
        for k in owned.iter().take(100) {
            let ctx = store.get(k).read().context;
            store
                .coordinate(k, &ctx, Some(Bytes::from("w")), 1)
                .unwrap();
        }
        assert!(h.scan(&store, &view, 1, usize::MAX).is_empty());
        assert_eq!(listed(), 0);
        // A replica write sent under an older ring lands here: the next call hands it off,
        // listing its segment alone.
        let stray = (0..)
            .map(|i| Bytes::from(format!("stray{i}")))
            .find(|k| !view.owns(k))
            .unwrap();
        let elsewhere = store_with("n2", 0);
        let set = elsewhere
            .coordinate(&stray, &VClock::new(), Some(Bytes::from("s")), 0)
            .unwrap()
            .set();
        store.merge(&stray, &set).unwrap();
        let transfers = h.scan(&store, &view, 1, usize::MAX);
        assert_eq!(transfers.len(), 1);
        assert_eq!(transfers[0].key, stray);
        assert_eq!(listed(), 1);
        // Acknowledged and dropped: its segment is not listed again.
        assert!(h.finish(&store, &view, &transfers[0], true, &|_| false));
        for _ in 0..3 {
            assert!(h.scan(&store, &view, 1, usize::MAX).is_empty());
        }
        assert_eq!(listed(), 1);
    }

    #[test]
    fn a_key_that_cannot_move_yet_is_retried_every_pass_until_it_can() {
        let me = NodeId::new("n1");
        let (store, listed) = store_with_counted("n1", 1);
        let ring = Ring::with_default_vnodes(nodes(&["n2", "n3", "n4"])).unwrap();
        let n4_down = |n: &NodeId| n.as_str() != "n4";
        let down = View::n3(&me, &ring, &n4_down);
        let mut h = Handoff::new();
        for _ in 0..3 {
            assert!(h.scan(&store, &down, 1, usize::MAX).is_empty());
        }
        assert_eq!(listed(), 3, "its segment is listed on every pass");
        assert_eq!(h.remaining(), 1);
        let live = |_: &NodeId| true;
        let up = View {
            live: &live,
            ..down
        };
        let transfers = h.scan(&store, &up, 1, usize::MAX);
        assert_eq!(transfers.len(), 1, "n4 is back: the key moves");
    }
}
