//! Ownership handoff: moving the keys this node holds but no longer owns to their owners.
//!
//! When the ring changes (a node joins, leaves or is removed), keys move between owners. The
//! scan walks the store segment by segment (all of it soon after a ring change, slowly
//! otherwise) and yields every key whose current owners exclude this node, with the replicas
//! that should take it: the owners, or for an owner that is down a fallback holding a hint,
//! as any write would. Once every one of them acknowledged the set, this node drops its copy,
//! provided the set did not change meanwhile ([`Store::remove_handed`]); a copy changed by a
//! late write is handed again on a later pass. Dropping is what keeps a delete deleted: a
//! former owner that kept an old value would send it back to the owners after their purge.
//!
//! A leaving node owns nothing, so the same scan drains it completely. Only a node that is
//! valid or leaving hands off: a joining node does not know its place yet, and a node that
//! left or was removed must not push old data back into the cluster.

use std::collections::HashSet;

use super::ids::Key;
use super::quorum::Target;
use super::store::{SEGMENTS, Store};
use super::version::VersionSet;
use super::view::View;

/// Segments scanned per call right after a ring change.
pub const URGENT_SEGMENTS: usize = 512;
/// Segments scanned per call otherwise (a full pass every `SEGMENTS / 64` calls).
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
#[derive(Debug, Default)]
pub struct Handoff {
    cursor: usize,
    ring_version: u64,
    urgent: bool,
    in_flight: HashSet<Key>,
    handed: u64,
    // Keys seen not owned here in the pass under way, and in the last complete pass.
    seen: u64,
    last_pass: u64,
}

impl Handoff {
    /// A scan that has handed nothing off yet.
    pub fn new() -> Self {
        Handoff::default()
    }

    /// Scans the next segments and returns up to about `max` keys to hand off: held here, not
    /// owned by this node on `view`'s ring, and not in flight. A new `ring_version` restarts
    /// the scan from the first segment. Keys whose replicas cannot all be reached now are left
    /// for a later pass.
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
        let budget = if self.urgent {
            URGENT_SEGMENTS
        } else {
            STEADY_SEGMENTS
        };
        for _ in 0..budget {
            for (key, digest) in store.keys_in_segment(self.cursor) {
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
            self.cursor = (self.cursor + 1) % SEGMENTS;
            if self.cursor == 0 {
                self.urgent = false;
                self.last_pass = self.seen;
                self.seen = 0;
            }
            if transfers.len() >= max {
                break;
            }
        }
        transfers
    }

    /// A transfer ended: when every target acknowledged, the copy here is dropped (if it did
    /// not change meanwhile). Returns whether it was dropped.
    pub fn finish(&mut self, store: &Store, transfer: &Transfer, all_acked: bool) -> bool {
        self.in_flight.remove(&transfer.key);
        if !all_acked || !store.remove_handed(&transfer.key, transfer.digest) {
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

    /// True while a pass started by a ring change has not finished.
    pub fn is_urgent(&self) -> bool {
        self.urgent
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::ids::{ActorId, NodeId};
    use crate::core::ring::Ring;
    use crate::core::vclock::VClock;

    fn nodes(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|n| NodeId::new(*n)).collect()
    }

    /// Writes `count` keys into a store of node `me`.
    fn store_with(me: &str, count: usize) -> Store {
        let store = Store::new(ActorId::new(me, 1));
        for i in 0..count {
            let key = Bytes::from(format!("k{i}"));
            store
                .coordinate(&key, &VClock::new(), Some(Bytes::from("v")), 0)
                .unwrap();
        }
        store
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
        let view = View {
            me: &me,
            ring: &whole,
            n: 3,
            live: &live,
        };
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
        assert!(!h.finish(&store, failed, false));
        let ctx = store.get(&changed.key).read().context;
        store
            .coordinate(&changed.key, &ctx, Some(Bytes::from("v2")), 1)
            .unwrap();
        assert!(!h.finish(&store, changed, true), "a changed copy is kept");
        for t in rest {
            assert!(h.finish(&store, t, true));
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
        assert_eq!(keys.len(), 2);
        assert!(keys.contains(&&failed.key) && keys.contains(&&changed.key));
    }

    #[test]
    fn a_dead_owner_gets_a_fallback_and_without_one_the_key_waits() {
        let me = NodeId::new("n1");
        let store = store_with("n1", 50);
        let ring = Ring::with_default_vnodes(nodes(&["n2", "n3", "n4", "n5"])).unwrap();
        let n5_down = |n: &NodeId| n.as_str() != "n5";
        let view = View {
            me: &me,
            ring: &ring,
            n: 3,
            live: &n5_down,
        };
        let transfers = full_pass(&mut Handoff::new(), &store, &view, 1);
        assert_eq!(transfers.len(), 50, "n1 is off the ring: it owns nothing");
        for t in &transfers {
            assert_eq!(t.targets.len(), 3);
            assert!(t.targets.iter().all(|t| t.node.as_str() != "n5"));
            assert!(t.targets.iter().all(|t| t.node != me));
        }
        // Only three nodes left and one of them down: no stand-in, nothing moves.
        let small = Ring::with_default_vnodes(nodes(&["n2", "n3", "n5"])).unwrap();
        let view = View {
            me: &me,
            ring: &small,
            n: 3,
            live: &n5_down,
        };
        assert!(full_pass(&mut Handoff::new(), &store, &view, 1).is_empty());
        let empty = Ring::empty();
        let view = View {
            me: &me,
            ring: &empty,
            n: 3,
            live: &n5_down,
        };
        assert!(Handoff::new().scan(&store, &view, 1, 10).is_empty());
    }

    #[test]
    fn a_ring_change_restarts_the_scan_urgently() {
        let me = NodeId::new("n1");
        let store = store_with("n1", 10);
        let ring = Ring::with_default_vnodes(nodes(&["n1", "n2", "n3", "n4"])).unwrap();
        let live = |_: &NodeId| true;
        let view = View {
            me: &me,
            ring: &ring,
            n: 3,
            live: &live,
        };
        let mut h = Handoff::new();
        h.scan(&store, &view, 1, usize::MAX);
        assert!(h.is_urgent());
        for _ in 0..SEGMENTS / URGENT_SEGMENTS {
            h.scan(&store, &view, 1, usize::MAX);
        }
        assert!(!h.is_urgent(), "a full pass ends the urgency");
        h.scan(&store, &view, 2, usize::MAX);
        assert!(h.is_urgent());
    }
}
