//! Ownership handoff: finding the keys this node holds but no longer owns.
//!
//! When the ring changes (a node dies and leaves it, or comes back), keys move between owners.
//! A write accepted while its owners were off the ring lives only on the nodes that owned the
//! key then; once the owners are back, reads and anti-entropy look only at them, so without a
//! handoff that acknowledged write would be unreachable. The scan walks the store segment by
//! segment (all of it soon after a ring change, slowly otherwise) and yields every key whose
//! current owners exclude this node and whose present set was not handed off yet.
//!
//! Handed-off keys stay in the local store: deleting them would gain memory but could let this
//! node, coordinating the key again later, send a set missing its own earlier dots (see
//! `version.rs` on why whole sets travel).

use std::collections::{HashMap, HashSet};

use super::ids::{Key, NodeId};
use super::ring::Ring;
use super::store::{SEGMENTS, Store};

/// Segments scanned per call right after a ring change.
pub const URGENT_SEGMENTS: usize = 512;
/// Segments scanned per call otherwise (a full pass every `SEGMENTS / 64` calls).
pub const STEADY_SEGMENTS: usize = 64;

/// A key to hand to its owners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The key.
    pub key: Key,
    /// Its digest here when it was picked; recorded as handed off once every owner acked.
    pub digest: u64,
    /// Its owners on the current ring.
    pub owners: Vec<NodeId>,
}

/// Progress of the handoff scan.
#[derive(Debug, Default)]
pub struct Handoff {
    cursor: usize,
    ring_version: u64,
    urgent: bool,
    handed: HashMap<Key, u64>,
    in_flight: HashSet<Key>,
}

impl Handoff {
    /// A scan that has handed nothing off yet.
    pub fn new() -> Self {
        Handoff::default()
    }

    /// Scans the next segments and returns up to about `max` keys to hand off: held here, not
    /// owned by `me` among the first `n` nodes of `ring`, not in flight, and changed since
    /// their last handoff. A new `ring_version` restarts the scan from the first segment.
    pub fn scan(
        &mut self,
        store: &Store,
        ring: &Ring,
        ring_version: u64,
        me: &NodeId,
        n: usize,
        max: usize,
    ) -> Vec<Transfer> {
        if ring_version != self.ring_version {
            self.ring_version = ring_version;
            self.cursor = 0;
            self.urgent = true;
        }
        let mut transfers = Vec::new();
        if ring.is_empty() {
            return transfers;
        }
        let budget = if self.urgent {
            URGENT_SEGMENTS
        } else {
            STEADY_SEGMENTS
        };
        for _ in 0..budget {
            for (key, digest) in store.keys_in_segment(self.cursor) {
                let Ok(owners) = ring.owners(&key, n) else {
                    continue;
                };
                if owners.contains(me) {
                    // Ours again: a later loss of ownership must hand it off anew.
                    self.handed.remove(&key);
                    continue;
                }
                if digest == 0
                    || self.in_flight.contains(&key)
                    || self.handed.get(&key) == Some(&digest)
                {
                    continue;
                }
                self.in_flight.insert(key.clone());
                transfers.push(Transfer {
                    key,
                    digest,
                    owners,
                });
            }
            self.cursor = (self.cursor + 1) % SEGMENTS;
            if self.cursor == 0 {
                self.urgent = false;
            }
            if transfers.len() >= max {
                break;
            }
        }
        transfers
    }

    /// Every owner acked `key` at `digest`: it is not sent again until it changes.
    pub fn done(&mut self, key: &Key, digest: u64) {
        self.in_flight.remove(key);
        self.handed.insert(key.clone(), digest);
    }

    /// Some owner did not ack: the next pass tries again.
    pub fn failed(&mut self, key: &Key) {
        self.in_flight.remove(key);
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
    use crate::core::ids::ActorId;
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

    fn full_pass(
        h: &mut Handoff,
        store: &Store,
        ring: &Ring,
        version: u64,
        me: &NodeId,
    ) -> Vec<Transfer> {
        let mut all = Vec::new();
        for _ in 0..(SEGMENTS / STEADY_SEGMENTS + 1) {
            all.extend(h.scan(store, ring, version, me, 3, usize::MAX));
        }
        all
    }

    #[test]
    fn keys_written_on_a_shrunken_ring_are_handed_to_their_owners_once() {
        // n1 accepted writes while n4 and n5 were dead: on the 3-node ring it owned them all.
        let me = NodeId::new("n1");
        let store = store_with("n1", 300);
        let whole = Ring::with_default_vnodes(nodes(&["n1", "n2", "n3", "n4", "n5"])).unwrap();
        let mut h = Handoff::new();
        let transfers = full_pass(&mut h, &store, &whole, 2, &me);
        let expected: usize = (0..300)
            .filter(|i| {
                !whole
                    .owners(format!("k{i}").as_bytes(), 3)
                    .unwrap()
                    .contains(&me)
            })
            .count();
        assert!(expected > 0);
        assert_eq!(
            transfers.len(),
            expected,
            "every key n1 no longer owns, once"
        );
        for t in &transfers {
            assert_eq!(t.owners, whole.owners(&t.key, 3).unwrap());
            assert!(!t.owners.contains(&me));
            assert_eq!(t.digest, store.digest(&t.key));
        }
        assert!(
            full_pass(&mut h, &store, &whole, 2, &me).is_empty(),
            "in flight: not picked twice"
        );
        for t in &transfers {
            h.done(&t.key, t.digest);
        }
        assert!(
            full_pass(&mut h, &store, &whole, 2, &me).is_empty(),
            "handed off: not sent again"
        );
        assert_eq!(h.in_flight(), 0);
    }

    #[test]
    fn a_changed_or_failed_key_is_sent_again_and_an_owned_one_never() {
        let me = NodeId::new("n1");
        let store = store_with("n1", 200);
        let ring = Ring::with_default_vnodes(nodes(&["n1", "n2", "n3", "n4", "n5"])).unwrap();
        let mut h = Handoff::new();
        let transfers = full_pass(&mut h, &store, &ring, 1, &me);
        let (first, second) = (&transfers[0], &transfers[1]);
        for t in &transfers {
            h.done(&t.key, t.digest);
        }
        // A later write changes one key; a failed delivery leaves another pending.
        let ctx = store.get(&first.key).read().context;
        store
            .coordinate(&first.key, &ctx, Some(Bytes::from("v2")), 1)
            .unwrap();
        h.handed.remove(&second.key);
        let again: Vec<Key> = full_pass(&mut h, &store, &ring, 1, &me)
            .into_iter()
            .map(|t| t.key)
            .collect();
        assert_eq!(again.len(), 2);
        assert!(again.contains(&first.key) && again.contains(&second.key));
        h.failed(&first.key);
        assert_eq!(
            full_pass(&mut h, &store, &ring, 1, &me).len(),
            1,
            "a failed key is retried"
        );

        // On a ring where n1 owns everything, nothing is handed off.
        let small = Ring::with_default_vnodes(nodes(&["n1", "n2", "n3"])).unwrap();
        let mut fresh = Handoff::new();
        assert!(full_pass(&mut fresh, &store, &small, 1, &me).is_empty());
    }

    #[test]
    fn a_ring_change_restarts_the_scan_urgently() {
        let me = NodeId::new("n1");
        let store = store_with("n1", 10);
        let ring = Ring::with_default_vnodes(nodes(&["n1", "n2", "n3", "n4"])).unwrap();
        let mut h = Handoff::new();
        h.scan(&store, &ring, 1, &me, 3, usize::MAX);
        assert!(h.is_urgent());
        for _ in 0..SEGMENTS / URGENT_SEGMENTS {
            h.scan(&store, &ring, 1, &me, 3, usize::MAX);
        }
        assert!(!h.is_urgent(), "a full pass ends the urgency");
        h.scan(&store, &ring, 2, &me, 3, usize::MAX);
        assert!(h.is_urgent());
        assert!(
            Handoff::new()
                .scan(&store, &Ring::empty(), 1, &me, 3, 10)
                .is_empty()
        );
    }
}
