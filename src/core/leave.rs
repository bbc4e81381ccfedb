//! The end of a leave: a leaving node that holds nothing any more declares itself left.
//!
//! The check that it holds nothing and the refusal of anything that arrives later are one
//! step. A write admitted while the node was still a member is either counted by the check
//! (so the leave waits for its handoff) or refused by the sealed store and hint store (so its
//! coordinator counts no ack here and looks elsewhere); it is never kept by a node that is
//! left from then on and hands nothing off.

use super::hints::SharedHints;
use super::membership::{Membership, RingChange};
use super::store::Store;

/// Declares this node left if it is leaving, a peer has heard of its leave, its handoff has
/// nothing in flight, and its store and hints are empty; the store and the hints then refuse
/// everything for good. Returns the ring changes made (none when the node is not done).
pub fn finish_if_drained(
    membership: &mut Membership,
    store: &Store,
    hints: &SharedHints,
    handoff_idle: bool,
) -> Vec<RingChange> {
    if !membership.may_finish_leaving() || !handoff_idle {
        return Vec::new();
    }
    // Held across the store's check, so that no hint is taken between the two.
    let mut hints = hints.lock();
    if !hints.is_empty() || !store.seal_if(Store::is_empty) {
        return Vec::new();
    }
    hints.close();
    membership.finish_leaving()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::ids::{ActorId, Key, NodeId};
    use crate::core::membership::{FailureTimeouts, Membership, RingStatus};
    use crate::core::replica::{LocalReplica, PutRefused};
    use crate::core::store::StoreError;
    use crate::core::vclock::VClock;
    use crate::core::version::VersionSet;

    fn member(me: &NodeId) -> Membership {
        let timeouts = FailureTimeouts::default();
        Membership::new(me.clone(), "c".into(), "h".into(), 8, 1, timeouts, 0).unwrap()
    }

    // Leaving, with a valid peer to hand everything to (the last member cannot leave) that
    // has heard of the leave.
    fn leaving(me: &NodeId) -> Membership {
        let mut m = leaving_unheard(me);
        let echoed = m.own().digest();
        m.merge(&[echoed], 0);
        assert!(m.may_finish_leaving());
        m
    }

    fn leaving_unheard(me: &NodeId) -> Membership {
        let mut m = member(me);
        m.merge(&[crate::core::membership::tests::entry("peer", 1, 1)], 0);
        m.start_leaving().unwrap();
        m
    }

    fn write(key: &Key) -> VersionSet {
        let other = Store::new(ActorId::new("other", 1));
        other
            .coordinate(key, &VClock::new(), Some(Bytes::from_static(b"v")), 0)
            .unwrap();
        other.get(key)
    }

    #[test]
    fn a_write_admitted_as_a_member_before_the_leave_ended_is_refused_not_stranded() {
        let me = NodeId::new("me");
        let (store, hints) = (Store::new(ActorId::new("me", 1)), SharedHints::default());
        let mut membership = leaving(&me);
        // Admitted while the node was still leaving, applied after it finished.
        let admitted = LocalReplica::for_tests(&me, &store, &hints);
        assert_eq!(
            finish_if_drained(&mut membership, &store, &hints, true).len(),
            1
        );
        assert_eq!(membership.own().ring, RingStatus::Left);
        let key = Key::from_static(b"k");
        let stored = admitted.apply_set(key.clone(), write(&key), None);
        assert!(
            matches!(stored, Err(PutRefused::Store(StoreError::Sealed))),
            "{stored:?}"
        );
        let coordinated = store.coordinate(&key, &VClock::new(), None, 0);
        assert_eq!(coordinated.err(), Some(StoreError::Sealed));
        let hinted = admitted.apply_set(key.clone(), write(&key), Some(NodeId::new("owner")));
        assert!(matches!(hinted, Err(PutRefused::Hint(_))), "{hinted:?}");
        assert!(store.is_empty() && hints.lock().is_empty());
    }

    #[test]
    fn a_node_that_still_holds_a_key_or_a_hint_or_a_transfer_stays_leaving_and_writable() {
        let me = NodeId::new("me");
        let key = Key::from_static(b"k");
        let (store, hints) = (Store::new(ActorId::new("me", 1)), SharedHints::default());
        let mut membership = leaving(&me);
        assert!(finish_if_drained(&mut membership, &store, &hints, false).is_empty());
        store.merge(&key, &write(&key)).unwrap();
        assert!(finish_if_drained(&mut membership, &store, &hints, true).is_empty());
        let other = Key::from_static(b"other");
        assert!(store.merge(&other, &write(&other)).unwrap().changed);

        let (store, hints) = (Store::new(ActorId::new("me", 1)), SharedHints::default());
        hints
            .lock()
            .add(NodeId::new("owner"), key.clone(), write(&key), 0)
            .unwrap();
        assert!(finish_if_drained(&mut membership, &store, &hints, true).is_empty());
        assert!(store.merge(&key, &write(&key)).unwrap().changed);
        assert_eq!(membership.own().ring, RingStatus::Leaving);
    }

    #[test]
    fn a_drained_node_whose_leave_no_peer_heard_stays_leaving_until_one_does() {
        let me = NodeId::new("me");
        let (store, hints) = (Store::new(ActorId::new("me", 1)), SharedHints::default());
        let mut membership = leaving_unheard(&me);
        // The peer's digest still shows us valid: it has not heard.
        let stale = crate::core::membership::tests::entry("me", 1, 0);
        membership.merge(&[stale], 0);
        assert!(finish_if_drained(&mut membership, &store, &hints, true).is_empty());
        assert_eq!(membership.own().ring, RingStatus::Leaving);
        // Not sealed: it still takes writes.
        let key = Key::from_static(b"k");
        assert!(store.merge(&key, &write(&key)).unwrap().changed);

        let echoed = membership.own().digest();
        membership.merge(&[echoed], 0);
        let (empty, hints) = (Store::new(ActorId::new("me", 1)), SharedHints::default());
        assert_eq!(
            finish_if_drained(&mut membership, &empty, &hints, true).len(),
            1
        );
        assert_eq!(membership.own().ring, RingStatus::Left);
    }

    #[test]
    fn a_drained_node_whose_last_fellow_member_leaves_too_keeps_its_place_until_a_node_joins() {
        let me = NodeId::new("me");
        let (store, hints) = (Store::new(ActorId::new("me", 1)), SharedHints::default());
        let mut membership = leaving(&me);
        // The other member was told to leave at the same moment, before it heard of ours.
        let mut peer = crate::core::membership::tests::entry("peer", 1, 2);
        peer.ring = RingStatus::Leaving;
        membership.merge(&[peer], 0);
        assert!(!membership.may_finish_leaving());
        assert!(finish_if_drained(&mut membership, &store, &hints, true).is_empty());
        assert_eq!(membership.own().ring, RingStatus::Leaving);
        // Still on the ring and not sealed: it owns everything and takes writes.
        assert!(membership.takes_hints(&me));
        let key = Key::from_static(b"k");
        assert!(store.merge(&key, &write(&key)).unwrap().changed);

        // A node joins: the leave ends once everything went to it.
        let joined = crate::core::membership::tests::entry("joined", 1, 1);
        membership.merge(&[joined], 0);
        let (empty, hints) = (Store::new(ActorId::new("me", 1)), SharedHints::default());
        assert_eq!(
            finish_if_drained(&mut membership, &empty, &hints, true).len(),
            1
        );
        assert_eq!(membership.own().ring, RingStatus::Left);
    }

    #[test]
    fn a_leave_restored_from_the_nodes_own_record_is_not_heard() {
        let me = NodeId::new("me");
        let recorded = leaving(&me).digest();
        let mut restarted = member(&me).with_ring(RingStatus::Joining);
        restarted.restore(&recorded, 0);
        assert_eq!(restarted.own().ring, RingStatus::Leaving);
        assert!(!restarted.may_finish_leaving());
        let (store, hints) = (Store::new(ActorId::new("me", 1)), SharedHints::default());
        assert!(finish_if_drained(&mut restarted, &store, &hints, true).is_empty());
        // A peer's digest with our leave in it is heard.
        restarted.merge(&recorded, 0);
        assert!(restarted.may_finish_leaving());
    }

    #[test]
    fn a_node_that_is_not_leaving_is_never_sealed() {
        let me = NodeId::new("me");
        let (store, hints) = (Store::new(ActorId::new("me", 1)), SharedHints::default());
        let mut membership = member(&me);
        assert!(finish_if_drained(&mut membership, &store, &hints, true).is_empty());
        let key = Key::from_static(b"k");
        assert!(store.merge(&key, &write(&key)).unwrap().changed);
    }
}
