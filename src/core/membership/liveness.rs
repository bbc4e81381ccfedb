//! Liveness: how healthy a member looks from this node, and the timeouts that judge it.
//!
//! Liveness picks request targets, fallbacks and hint deliveries; it never changes who owns
//! a key range (that is the member's ring status, see [`super::RingStatus`]). A member's
//! liveness is never taken from a peer: this node moves it one step per gossip tick by its
//! silence on this node's own clock ([`Membership::detect`]), and picks its gossip peers by
//! it ([`Membership::pick_gossip_peer`]).

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Membership, StatusChange};
use crate::core::ids::NodeId;

/// How healthy a member looks from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Heard from recently: a gossip target and a write target.
    Alive,
    /// Silent for longer than `suspect_after_ms`: gets no new requests; the sloppy quorum
    /// routes around it to a fallback.
    Suspect,
    /// Silent for longer than `dead_after_ms`: as Suspect, and it blocks tombstone purges. It
    /// keeps its ring place: an outage is not a departure.
    Dead,
}

impl Status {
    /// The status's name, as shown and as metric labels carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Dead => "dead",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a pair of failure-detection timeouts was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TimeoutsError {
    /// A zero timeout would flag every peer on the first tick.
    #[error(
        "failure timeouts must be positive (suspect_after_ms={suspect_after_ms}, dead_after_ms={dead_after_ms})"
    )]
    Zero {
        /// The refused suspect timeout.
        suspect_after_ms: u64,
        /// The refused dead timeout.
        dead_after_ms: u64,
    },
    /// A node must be suspected before it can be declared dead.
    #[error(
        "suspect_after_ms ({suspect_after_ms}) must be less than dead_after_ms ({dead_after_ms})"
    )]
    NotOrdered {
        /// The refused suspect timeout.
        suspect_after_ms: u64,
        /// The refused dead timeout.
        dead_after_ms: u64,
    },
}

/// How long a peer may stay silent before it is suspected, then declared dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FailureTimeouts {
    /// Silence (ms) strictly above which an Alive peer becomes Suspect.
    pub suspect_after_ms: u64,
    /// Silence (ms) strictly above which a Suspect peer becomes Dead.
    pub dead_after_ms: u64,
}

impl Default for FailureTimeouts {
    fn default() -> Self {
        FailureTimeouts {
            suspect_after_ms: 5_000,
            dead_after_ms: 30_000,
        }
    }
}

impl FailureTimeouts {
    /// Checked timeouts: both positive and `suspect_after_ms < dead_after_ms`.
    pub fn new(suspect_after_ms: u64, dead_after_ms: u64) -> Result<Self, TimeoutsError> {
        let timeouts = FailureTimeouts {
            suspect_after_ms,
            dead_after_ms,
        };
        timeouts.validate()?;
        Ok(timeouts)
    }

    /// Checks the invariants that [`FailureTimeouts::new`] enforces (for values built by hand or
    /// deserialized from a config).
    pub fn validate(&self) -> Result<(), TimeoutsError> {
        let (suspect_after_ms, dead_after_ms) = (self.suspect_after_ms, self.dead_after_ms);
        if suspect_after_ms == 0 || dead_after_ms == 0 {
            return Err(TimeoutsError::Zero {
                suspect_after_ms,
                dead_after_ms,
            });
        }
        if suspect_after_ms >= dead_after_ms {
            return Err(TimeoutsError::NotOrdered {
                suspect_after_ms,
                dead_after_ms,
            });
        }
        Ok(())
    }
}

impl Membership {
    /// Moves each other node at most one step along Alive -> Suspect -> Dead, by its silence
    /// on our clock (strictly above the timeout); called once per gossip tick. Members that
    /// left or were removed are no longer judged.
    pub fn detect(&mut self, now_ms: u64) -> Vec<StatusChange> {
        let timeouts = self.timeouts;
        let mut changes = Vec::new();
        for member in self.peers.values_mut().filter(|m| !m.ring.is_final()) {
            let silence = now_ms.saturating_sub(member.last_heard_ms);
            let next = match member.status {
                Status::Alive if silence > timeouts.suspect_after_ms => Status::Suspect,
                Status::Suspect if silence > timeouts.dead_after_ms => Status::Dead,
                _ => continue,
            };
            changes.push(StatusChange {
                node: member.node.clone(),
                from: member.status,
                to: next,
            });
            member.status = next;
        }
        changes
    }

    /// The peer to gossip with next, among `connected` nodes: usually an alive one (or one
    /// not heard of yet, a seed), but sometimes, and always when no alive one is left, one we
    /// believe suspect or dead. Without that, nodes that all stalled at once (a laptop asleep,
    /// a long partition) would each see the others dead and never exchange a heartbeat again.
    /// Nodes that left or were removed are never picked.
    pub fn pick_gossip_peer(&self, connected: &[NodeId], rng: &mut impl Rng) -> Option<NodeId> {
        let (mut alive, mut silent) = (Vec::new(), Vec::new());
        for node in connected.iter().filter(|n| **n != self.own.node) {
            match self.get(node) {
                None => alive.push(node),
                Some(m) if m.ring.is_final() => {}
                Some(m) if m.status == Status::Alive => alive.push(node),
                Some(_) => silent.push(node),
            }
        }
        let pool = if silent.is_empty() || (!alive.is_empty() && rng.random_range(0..4) != 0) {
            alive
        } else {
            silent
        };
        if pool.is_empty() {
            return None;
        }
        Some(pool[rng.random_range(0..pool.len())].clone())
    }
}
