//! Hint drain: where each held hint goes next, and what an answer does to it. No I/O.
//!
//! A hint goes back to its owner once the owner is reachable. A hint whose owner will never
//! take it (the owner left, was removed, is leaving, or is not known here), and every hint of
//! a node that is leaving and whose owner is down, goes instead to the replicas that should
//! hold the key now, as a write would reach them: this node among them when it owns the key
//! and stays (into its own store, synced there before the hint goes; a lone member sends
//! every such hint to itself), else the sloppy targets of the walk without it, as a handoff
//! sends. Handed only to the others, an owner's one copy (the hint) would be gone once they
//! acked, and a lone remaining copy can die with its node's memory. A leaving owner owns
//! nothing: a hint sent to it could reach it after it told a tombstone purge that it holds
//! nothing of the key, and outlive the purge there. Either way the hint is dropped only when
//! every destination acknowledged it and none has left or been removed meanwhile, and put back
//! to wait otherwise.

use super::encoded_set::EncodedSet;
use super::hints::{HintId, HintStore};
use super::ids::NodeId;
use super::membership::Membership;
use super::replica::{LocalReplica, PutRefused, ReplicaPut};
use super::view::View;
use super::write::Outgoing;

/// One hint on its way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The owner the hint was kept for.
    pub owner: NodeId,
    /// The hint.
    pub id: HintId,
    /// The writes to send; the hint is dropped when all are acknowledged.
    pub sends: Vec<Outgoing>,
}

/// What decides where hints go.
pub struct DrainScope<'a> {
    /// This node's routing view.
    pub view: View<'a>,
    /// Whether an owner left, was removed, is leaving or is unknown here: it will never take
    /// its hints.
    pub gone: &'a dyn Fn(&NodeId) -> bool,
    /// Whether this node is leaving: it must give every hint away.
    pub leaving: bool,
}

/// Whether `owner` will never take its hints back, as `membership` tells: it left, was
/// removed, is leaving (it owns no range), or is not known here. A fallback keeps whatever
/// hint a peer's write names (refusing a hint for a node it has not heard of yet would cost
/// writes during every join's gossip), and one kept for a name it does not know goes to the
/// key's current replicas at the next round instead of waiting, in a bounded store, for a
/// node that may not exist.
pub fn gone_in(membership: &Membership) -> impl Fn(&NodeId) -> bool + '_ {
    |owner| !membership.takes_hints(owner)
}

/// Takes up to `max` waiting hints per owner that can go somewhere now, marking them in
/// flight, and says where each goes.
pub fn plan(hints: &mut HintStore, scope: &DrainScope<'_>, max: usize) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    for owner in hints.owners() {
        let gone = (scope.gone)(&owner);
        let reachable = !gone && scope.view.is_live(&owner) && owner != *scope.view.me;
        if !(reachable || gone || scope.leaving) {
            continue;
        }
        for hint in hints.take(&owner, max) {
            let sends = if reachable {
                vec![Outgoing {
                    to: owner.clone(),
                    put: ReplicaPut {
                        key: hint.key,
                        versions: EncodedSet::encode(&hint.versions),
                        hint_for: None,
                    },
                }]
            } else {
                // An owner of the key that stays keeps the hint in its own store too: given
                // only to the others, its one copy here would be gone once they acked, and a
                // lone other copy can die with its node's memory.
                let targets = if scope.leaving || !scope.view.owns(&hint.key) {
                    scope.view.targets_elsewhere(&hint.key)
                } else {
                    scope.view.replicas_now(&hint.key)
                };
                let Some(targets) = targets else {
                    hints.release(&owner, &[hint.id]);
                    continue;
                };
                let versions = EncodedSet::encode(&hint.versions);
                targets
                    .into_iter()
                    .map(|t| Outgoing {
                        to: t.node,
                        put: ReplicaPut {
                            key: hint.key.clone(),
                            versions: versions.clone(),
                            hint_for: t.stands_in_for,
                        },
                    })
                    .collect()
            };
            deliveries.push(Delivery {
                owner: owner.clone(),
                id: hint.id,
                sends,
            });
        }
    }
    deliveries
}

/// Applies to this node's own store the sends `plan` addressed to it (the last member keeping
/// a hint) and returns the others, with the outcome of the local part: `None` when there was
/// none, else whether every one applied. The caller syncs before it settles the delivery.
pub fn apply_here(
    local: &LocalReplica<'_>,
    sends: Vec<Outgoing>,
) -> (Vec<Outgoing>, Option<Result<(), PutRefused>>) {
    let (here, elsewhere): (Vec<_>, Vec<_>) =
        sends.into_iter().partition(|out| out.to == *local.me);
    let applied =
        (!here.is_empty()).then(|| here.into_iter().try_for_each(|out| local.apply(out.put)));
    (elsewhere, applied)
}

/// A delivery ended: the hint is dropped when every destination acknowledged it and none of
/// them is `gone` now, and waits again otherwise. Returns whether it was dropped.
///
/// A destination can ack and be removed before the answers are read: its removal reached this
/// node (by gossip, or a remove made here) while the write was out, and the destination had
/// not heard of it yet. It stops once it hears, pushing nothing back, so its ack would have
/// licensed dropping the only copy; the hint waits instead, and the next round routes it as
/// the membership is now.
pub fn settle(
    hints: &mut HintStore,
    delivery: &Delivery,
    all_acked: bool,
    gone: &dyn Fn(&NodeId) -> bool,
) -> bool {
    if all_acked && !delivery.sends.iter().any(|send| gone(&send.to)) {
        hints.ack(&delivery.owner, delivery.id)
    } else {
        hints.release(&delivery.owner, &[delivery.id]);
        false
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use bytes::Bytes;

    use super::*;
    use crate::core::ids::{ActorId, Key, nodes};
    use crate::core::ring::Ring;
    use crate::core::store::Store;
    use crate::core::vclock::VClock;

    fn hinted(owner: &str, count: usize) -> HintStore {
        let coord = Store::new(ActorId::new("c", 1));
        let mut hints = HintStore::default();
        for i in 0..count {
            let key = Key::from(format!("k{i}"));
            let set = coord
                .coordinate(&key, &VClock::new(), Some(Bytes::from("v")), 0)
                .unwrap()
                .set();
            hints.add(NodeId::new(owner), key, set, 0).unwrap();
        }
        hints
    }

    #[test]
    fn hints_go_to_their_owner_when_it_is_reachable_and_wait_otherwise() {
        let me = NodeId::new("f");
        let ring = Ring::with_default_vnodes(nodes(&["f", "o", "p", "q"])).unwrap();
        let never_gone = |_: &NodeId| false;
        for (owner_up, expected) in [(true, 3), (false, 0)] {
            let live = move |n: &NodeId| owner_up || n.as_str() != "o";
            let scope = DrainScope {
                view: View::n3(&me, &ring, &live),
                gone: &never_gone,
                leaving: false,
            };
            let mut hints = hinted("o", 3);
            let deliveries = plan(&mut hints, &scope, 10);
            assert_eq!(deliveries.len(), expected);
            for d in &deliveries {
                assert_eq!(d.sends.len(), 1);
                assert_eq!(d.sends[0].to.as_str(), "o");
                assert_eq!(d.sends[0].put.hint_for, None);
            }
            assert!(plan(&mut hints, &scope, 10).is_empty(), "in flight");
            for d in &deliveries {
                assert!(settle(&mut hints, d, true, &|_| false));
            }
            assert_eq!(hints.len(), 3 - expected);
        }
    }

    #[test]
    fn a_hint_acked_by_an_owner_removed_meanwhile_waits_and_goes_to_the_current_replicas() {
        // The owner acks the hint before it hears that it was removed; its removal reaches
        // this node while the answer is on its way. The owner stops once it hears, so the
        // hint must not be dropped on its word.
        let me = NodeId::new("f");
        let ring = Ring::with_default_vnodes(nodes(&["f", "p", "q", "r"])).unwrap();
        let live = |_: &NodeId| true;
        let before = |_: &NodeId| false;
        let scope = DrainScope {
            view: View::n3(&me, &ring, &live),
            gone: &before,
            leaving: false,
        };
        let mut hints = hinted("o", 1);
        let deliveries = plan(&mut hints, &scope, 10);
        assert_eq!(deliveries.len(), 1);
        assert_eq!(deliveries[0].sends[0].to.as_str(), "o");
        let removed = |n: &NodeId| n.as_str() == "o";
        assert!(!settle(&mut hints, &deliveries[0], true, &removed));
        assert_eq!(hints.len(), 1, "kept");
        let scope = DrainScope {
            gone: &removed,
            ..scope
        };
        let again = plan(&mut hints, &scope, 10);
        assert_eq!(again.len(), 1);
        let to: Vec<NodeId> = again[0].sends.iter().map(|s| s.to.clone()).collect();
        let key = &again[0].sends[0].put.key;
        let current = ring.owners(key, 3).unwrap();
        assert_eq!(to, current, "the key's current replicas");
        assert!(settle(&mut hints, &again[0], true, &removed));
        assert!(hints.is_empty());
    }

    #[test]
    fn hints_of_a_removed_owner_go_to_the_keys_current_replicas() {
        let me = NodeId::new("f");
        let ring = Ring::with_default_vnodes(nodes(&["f", "p", "q", "r"])).unwrap();
        let gone = |n: &NodeId| n.as_str() == "o";
        let live = |_: &NodeId| true;
        let scope = DrainScope {
            view: View::n3(&me, &ring, &live),
            gone: &gone,
            leaving: false,
        };
        let mut hints = hinted("o", 20);
        let deliveries = plan(&mut hints, &scope, 100);
        assert_eq!(deliveries.len(), 20);
        // To the key's owners, this node among them when it is one (it keeps the hint in its
        // own store then); else to the three nodes the walk reaches without it.
        let mut kept_here = 0;
        for d in &deliveries {
            let to: Vec<NodeId> = d.sends.iter().map(|s| s.to.clone()).collect();
            let key = &d.sends[0].put.key;
            let owners = ring.owners(key, 3).unwrap();
            let expected: Vec<NodeId> = if owners.contains(&me) {
                kept_here += 1;
                owners.clone()
            } else {
                let walk = ring.preference_list(key).unwrap();
                walk.filter(|n| **n != me).take(3).cloned().collect()
            };
            assert_eq!(to, expected, "owners {owners:?}");
        }
        assert!(kept_here > 0 && kept_here < 20, "{kept_here}");
        // One destination failed: the hint waits for the next round.
        assert!(!settle(&mut hints, &deliveries[0], false, &gone));
        assert_eq!(hints.len(), 20);
        assert_eq!(plan(&mut hints, &scope, 100).len(), 1);
    }

    #[test]
    fn the_last_member_takes_a_removed_owners_hints_into_its_own_store() {
        let me = NodeId::new("f");
        let ring = Ring::with_default_vnodes(nodes(&["f"])).unwrap();
        let gone = |n: &NodeId| n.as_str() == "o";
        let live = |_: &NodeId| true;
        for (leaving, expected) in [(false, 5), (true, 0)] {
            let scope = DrainScope {
                view: View::n3(&me, &ring, &live),
                gone: &gone,
                leaving,
            };
            let mut hints = hinted("o", 5);
            let deliveries = plan(&mut hints, &scope, 100);
            assert_eq!(deliveries.len(), expected, "leaving: {leaving}");
            for d in &deliveries {
                assert_eq!(d.sends.len(), 1);
                assert_eq!(d.sends[0].to, me);
                assert_eq!(d.sends[0].put.hint_for, None, "into the store, not a hint");
                assert!(settle(&mut hints, d, true, &gone));
            }
            assert_eq!(hints.len(), 5 - expected);
        }
    }

    #[test]
    fn hints_of_an_owner_unknown_here_go_to_the_keys_current_replicas() {
        use crate::core::membership::{FailureTimeouts, MemberDigest, RingStatus};
        let me = NodeId::new("f");
        let mut membership = Membership::new(
            me.clone(),
            "f:7001".into(),
            "f:8001".into(),
            128,
            1,
            FailureTimeouts::default(),
            0,
        )
        .unwrap();
        let own = membership.own().digest();
        let peer = |node: &str, ring: RingStatus| MemberDigest {
            node: NodeId::new(node),
            ring,
            ..own.clone()
        };
        let (p, gone) = (peer("p", RingStatus::Valid), peer("x", RingStatus::Removed));
        membership.merge(&[p, gone, peer("l", RingStatus::Leaving)], 0);
        let ring = Ring::with_default_vnodes(nodes(&["f", "p", "q", "r", "s"])).unwrap();
        let live = |n: &NodeId| n.as_str() != "p";
        let gone = gone_in(&membership);
        let scope = DrainScope {
            view: View::n3(&me, &ring, &live),
            gone: &gone,
            leaving: false,
        };
        // A known member that is down keeps its hints; a removed node, a leaving one (alive,
        // but it owns nothing) and a name never heard of (a peer may name any) will not take
        // theirs: they go on at once.
        let mut hints = hinted("p", 2);
        for owner in ["x", "l", "stranger"] {
            for hint in hinted(owner, 3).take(&NodeId::new(owner), 10) {
                hints.restore(hint);
            }
        }
        let deliveries = plan(&mut hints, &scope, 100);
        let owners: BTreeSet<&str> = deliveries.iter().map(|d| d.owner.as_str()).collect();
        assert_eq!(owners, BTreeSet::from(["l", "stranger", "x"]));
        assert_eq!(deliveries.len(), 9);
        for d in &deliveries {
            assert!(d.sends.iter().all(|s| s.to != d.owner));
            let owns = ring.owners(&d.sends[0].put.key, 3).unwrap().contains(&me);
            assert_eq!(d.sends.iter().any(|s| s.to == me), owns);
        }
    }

    #[test]
    fn a_leaving_node_gives_away_the_hints_of_a_dead_owner() {
        let me = NodeId::new("f");
        let ring = Ring::with_default_vnodes(nodes(&["o", "p", "q", "r"])).unwrap();
        let never_gone = |_: &NodeId| false;
        let o_down = |n: &NodeId| n.as_str() != "o";
        let scope = DrainScope {
            view: View::n3(&me, &ring, &o_down),
            gone: &never_gone,
            leaving: true,
        };
        let mut hints = hinted("o", 10);
        let deliveries = plan(&mut hints, &scope, 100);
        assert_eq!(deliveries.len(), 10);
        for d in &deliveries {
            assert!(d.sends.iter().all(|s| s.to.as_str() != "o"));
            let hinted_for_o = d
                .sends
                .iter()
                .filter(|s| s.put.hint_for.as_ref().is_some_and(|o| o.as_str() == "o"));
            let owns = ring.owners(&d.sends[0].put.key, 3).unwrap();
            let expected = usize::from(owns.iter().any(|n| n.as_str() == "o"));
            assert_eq!(hinted_for_o.count(), expected);
        }
    }
}
