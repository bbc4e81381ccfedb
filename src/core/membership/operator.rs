//! The operator's changes: a node leaving, a node removed.
//!
//! Both move a ring status forward and so the ring: a leave drains this node through the
//! handoff until it holds nothing (then it declares itself left), a remove takes a dead
//! node's ranges away for good. A node that looks alive is never removed: it leaves instead.

use thiserror::Error;

use super::{HandoffProgress, Membership, RingChange, RingStatus, Status};
use crate::core::ids::NodeId;

/// Why an operator's membership change was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ChangeError {
    /// No member of that name is known.
    #[error("no member named {0} is known")]
    Unknown(NodeId),
    /// A node cannot remove itself; it leaves instead.
    #[error("{0} is this node: a node leaves (POST /admin/leave), it does not remove itself")]
    IsSelf(NodeId),
    /// The node looks alive: a live node leaves instead of being removed.
    #[error("{0} is alive: stop it first, or have it leave (POST /admin/leave on it)")]
    Alive(NodeId),
    /// No other member is valid: this node's keys would have nowhere to go.
    #[error(
        "no other member of the cluster is valid: leaving would leave no one to hand this \
         node's keys to and no ring to serve from; join another node first"
    )]
    LastMember,
    /// This node was removed or has left: it cannot change its status any more.
    #[error("this node is {0}: it can no longer leave")]
    Final(RingStatus),
}

impl Membership {
    /// The operator drains this node: it leaves the ring and hands its keys to the others.
    /// Leaving twice is harmless; a node that left or was removed cannot leave, and neither
    /// can one that sees no other valid member (as Riak refuses the last node's leave): a
    /// joining node among leaving ones would otherwise take the ring's place they keep.
    pub fn start_leaving(&mut self) -> Result<Vec<RingChange>, ChangeError> {
        let mut changes = Vec::new();
        match self.own.ring {
            RingStatus::Joining | RingStatus::Valid
                if !self
                    .members()
                    .any(|m| m.node != self.own.node && m.ring.on_ring()) =>
            {
                Err(ChangeError::LastMember)
            }
            RingStatus::Joining | RingStatus::Valid => {
                self.set_own_ring(RingStatus::Leaving, &mut changes);
                self.recount_layout();
                Ok(changes)
            }
            RingStatus::Leaving | RingStatus::Left => Ok(changes),
            RingStatus::Removed => Err(ChangeError::Final(RingStatus::Removed)),
        }
    }

    /// Whether this node is leaving, a peer has heard so, and it has no place on the ring any
    /// more. A node that declared itself left unheard (cut off from everyone, holding nothing)
    /// and then stopped would stay a valid owner in every other table, dead, until an operator
    /// removed it: its ranges would be served short of a replica and hinted to it meanwhile.
    /// Once a peer has the leave, the others take the node off their rings whether or not they
    /// ever hear that it left. While no member is valid, the leaving ones keep their places
    /// and own everything: one that held nothing at that moment and declared itself left
    /// would take its ranges, and with the last such node the whole cluster, away.
    pub fn may_finish_leaving(&self) -> bool {
        self.own.ring == RingStatus::Leaving && self.leave_heard && !self.on_layout(&self.own.node)
    }

    /// A leaving node that handed everything off declares itself left.
    pub fn finish_leaving(&mut self) -> Vec<RingChange> {
        let mut changes = Vec::new();
        if self.own.ring == RingStatus::Leaving {
            self.set_own_ring(RingStatus::Left, &mut changes);
        }
        changes
    }

    /// Records our handoff progress; peers learn it with our next heartbeat.
    pub fn set_handoff_progress(&mut self, progress: HandoffProgress) {
        self.own.handoff = progress;
    }

    /// The operator declares `node` gone for good: it stops owning anything. Refused for
    /// ourselves, for an unknown node, and for a node we see alive.
    pub fn remove(&mut self, node: &NodeId) -> Result<Vec<RingChange>, ChangeError> {
        if *node == self.own.node {
            return Err(ChangeError::IsSelf(node.clone()));
        }
        let Some(member) = self.peers.get_mut(node) else {
            return Err(ChangeError::Unknown(node.clone()));
        };
        if member.ring == RingStatus::Removed {
            return Ok(Vec::new());
        }
        if member.status == Status::Alive && !member.ring.is_final() {
            return Err(ChangeError::Alive(node.clone()));
        }
        let change = RingChange {
            node: node.clone(),
            from: Some(member.ring),
            to: RingStatus::Removed,
        };
        member.ring = RingStatus::Removed;
        self.recount_layout();
        Ok(vec![change])
    }
}
