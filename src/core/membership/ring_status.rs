//! Ring status: where a member stands in the ownership of the key space.
//!
//! Unlike liveness, which each node judges on its own clock, a ring status is a fact about the
//! cluster that every node must agree on, so it is a register that only moves forward
//! (joining -> valid -> leaving -> left, or removed from anywhere): merging two views keeps the
//! later status, whatever the order in which views arrive, and every node converges on the
//! same ring. `left` and `removed` are final for a node's name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A member's place in the ownership of the key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RingStatus {
    /// Announced, not yet on the ring: it owns nothing until it has met the cluster.
    Joining,
    /// On the ring: owns its ranges, whether or not it is alive right now.
    Valid,
    /// Draining: off the ring, handing every key it holds to the owners without it.
    Leaving,
    /// Drained: holds nothing and serves nothing; the name cannot come back.
    Left,
    /// Declared gone for good by an operator: its ranges went to the others and the name
    /// cannot come back.
    Removed,
}

impl RingStatus {
    /// Whether the member owns vnodes: valid members do (and leaving ones while no member is
    /// valid: see [`super::Membership::ring_layout`]).
    pub fn on_ring(self) -> bool {
        self == RingStatus::Valid
    }

    /// Whether the member is part of an existing cluster (valid or leaving): what a joining
    /// node must know of before it takes its place.
    pub fn in_cluster(self) -> bool {
        matches!(self, RingStatus::Valid | RingStatus::Leaving)
    }

    /// Whether the status is final for the member's name (left or removed).
    pub fn is_final(self) -> bool {
        matches!(self, RingStatus::Left | RingStatus::Removed)
    }

    /// Whether the member may hold data (everything but the final statuses).
    pub fn may_hold_data(self) -> bool {
        !self.is_final()
    }

    /// The status's name, as shown and as metric labels carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            RingStatus::Joining => "joining",
            RingStatus::Valid => "valid",
            RingStatus::Leaving => "leaving",
            RingStatus::Left => "left",
            RingStatus::Removed => "removed",
        }
    }
}

impl fmt::Display for RingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a node's handoff of the keys it no longer owns has come, as it reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HandoffProgress {
    /// Keys (and hints) handed to their owners and dropped here, since the node started.
    pub handed: u64,
    /// Keys and hints still held here that belong elsewhere.
    pub remaining: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward_and_two_are_final() {
        use RingStatus::*;
        let order = [Joining, Valid, Leaving, Left, Removed];
        for pair in order.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        assert_eq!(Valid.max(Joining), Valid);
        assert_eq!(Left.max(Removed), Removed);
        assert!(Valid.on_ring() && !Leaving.on_ring() && !Joining.on_ring());
        assert!(Left.is_final() && Removed.is_final() && !Leaving.is_final());
        assert_eq!(Leaving.to_string(), "leaving");
    }
}
