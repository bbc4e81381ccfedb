//! What a node knows when it routes a request: who it is, the ring, N, and who it can reach.

use super::ids::NodeId;
use super::quorum::{Target, select_targets};
use super::ring::{Ring, RingError};

/// One node's routing view, borrowed from its published snapshots.
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// This node.
    pub me: &'a NodeId,
    /// This node's ring.
    pub ring: &'a Ring,
    /// Replicas per key.
    pub n: usize,
    /// Whether a request sent to a node now would reach it (this node always does).
    pub live: &'a dyn Fn(&NodeId) -> bool,
}

#[cfg(test)]
impl<'a> View<'a> {
    /// The view of `me` with three replicas per key, as most tests route.
    pub(crate) fn n3(me: &'a NodeId, ring: &'a Ring, live: &'a dyn Fn(&NodeId) -> bool) -> Self {
        View {
            me,
            ring,
            n: 3,
            live,
        }
    }
}

impl View<'_> {
    /// Whether requests may be sent to `node`: this node, or one seen alive and connected.
    pub fn is_live(&self, node: &NodeId) -> bool {
        node == self.me || (self.live)(node)
    }

    /// The replies a quorum of `wanted` (W or R) waits for on this ring: `wanted`, capped by
    /// the ring's members. A cluster smaller than N keeps one copy per member, so a lone
    /// node serves with the default W and R, its writes as durable as its one copy. The cap
    /// follows membership only: a member that is down lowers nothing.
    pub fn quorum(&self, wanted: usize) -> usize {
        wanted.min(self.ring.len().max(1))
    }

    /// Whether this node is among the key's owners.
    pub fn owns(&self, key: &[u8]) -> bool {
        self.owns_at(Ring::key_position(key))
    }

    /// Whether this node is among the owners of ring position `position`.
    pub fn owns_at(&self, position: u64) -> bool {
        self.ring
            .preference_list_at(position)
            .is_ok_and(|list| list.take(self.n).any(|node| node == self.me))
    }

    /// The replicas a request for `key` goes to under the sloppy quorum (see
    /// [`select_targets`]).
    pub fn targets(&self, key: &[u8]) -> Result<Vec<Target>, RingError> {
        let preference = self.ring.preference_list(key)?;
        Ok(select_targets(preference, self.n, |node| {
            self.is_live(node)
        }))
    }

    /// The replicas that should hold `key` now, as a write would reach them: this node among
    /// them when it owns the key, fallbacks standing in for owners that are down. `None` while
    /// fewer than N (or the ring's members) are reachable.
    pub fn replicas_now(&self, key: &[u8]) -> Option<Vec<Target>> {
        let targets = self.targets(key).ok()?;
        let wanted = self.n.min(self.ring.len());
        (targets.len() == wanted && !targets.is_empty()).then_some(targets)
    }

    /// The replicas that should take `key` from this node when it no longer owns it: the
    /// sloppy targets of the walk without this node, so that a dead owner's copy goes to a
    /// fallback with a hint. `None` while some owner has no live stand-in.
    pub fn targets_elsewhere(&self, key: &[u8]) -> Option<Vec<Target>> {
        let preference = self.ring.preference_list(key).ok()?;
        let others = preference.filter(|node| *node != self.me);
        let targets = select_targets(others, self.n, |node| self.is_live(node));
        let wanted = self
            .n
            .min(self.ring.len() - usize::from(self.ring.contains(self.me)));
        (targets.len() == wanted && !targets.is_empty()).then_some(targets)
    }
}
