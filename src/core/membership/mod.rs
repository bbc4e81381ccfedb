//! Cluster membership as one node sees it: who exists, where to reach them, where they stand
//! on the ring, and whether they look alive.
//!
//! This is the pure state behind the Gossip actor. Peers exchange [`MemberDigest`]s. Two
//! things travel in an entry, merged by different rules:
//!
//! - **Liveness** (alive, suspect, dead; [`Status`]). Each entry carries a version
//!   `(incarnation, heartbeat)` that only its own node advances; liveness is never taken from
//!   a peer: every node measures a member's silence on its own clock, from the last time that
//!   member's version advanced, and moves it Alive -> Suspect -> Dead one step per
//!   [`Membership::detect`] call. Liveness picks targets, fallbacks and hint deliveries.
//! - **Ring status** (joining, valid, leaving, left, removed; [`RingStatus`]). A register that
//!   only moves forward, merged by taking the later status, so every node converges on the
//!   same ring whatever the order of exchanges. The ring is built from it alone: a dead node
//!   keeps its ranges, and only an operator's leave or remove (or a join) moves them.
//!
//! Our own entry is never taken from a peer, with two exceptions that are facts about our
//! name rather than opinions: a later ring status (we were removed, or a previous life of ours
//! joined or was leaving), and nothing else. A peer holding a newer heartbeat for us at our
//! incarnation (a stale view, e.g. from before a restart) is refuted by jumping our heartbeat
//! past it; a peer claiming a higher incarnation for us is reported, never adopted.
//!
//! N, the number of replicas per key, is the cluster's: every entry carries the N its node
//! runs with, a node whose N differs from ours is not let into our table, and a joining node
//! that finds the cluster on another N is told so ([`Fatal::ReplicaMismatch`]).
//!
//! This file holds the table and what it answers; liveness and its detection are in
//! `liveness`, ring statuses in `ring_status`, the merge of a peer's digest in `merge`, and
//! an operator's leave and remove in `operator`.

mod liveness;
mod merge;
mod operator;
mod ring_status;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Bound, Deref, DerefMut};

use serde::{Deserialize, Serialize};

use crate::core::ids::NodeId;

pub use liveness::{FailureTimeouts, Status, TimeoutsError};
pub use merge::{Fatal, MergeReport};
pub use operator::ChangeError;
pub use ring_status::{HandoffProgress, RingStatus};

/// Replicas per key unless configured otherwise.
pub const DEFAULT_N: u32 = 3;

/// One node's entry as gossiped: everything except local clock readings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDigest {
    /// The member's name.
    pub node: NodeId,
    /// Where its cluster (ractor_cluster) endpoint listens; opaque here.
    pub cluster_addr: String,
    /// Where its HTTP API listens; opaque here.
    pub http_addr: String,
    /// How many ring tokens the member asks for (every node must build the same ring).
    pub vnodes: u32,
    /// The sender's opinion, for people inspecting the digest; merge ignores it.
    pub status: Status,
    /// Counter the member itself increments on every gossip tick.
    pub heartbeat: u64,
    /// Life of the member; a restart without data takes a higher one.
    pub incarnation: u64,
    /// The member's ring status as the sender knows it.
    pub ring: RingStatus,
    /// Replicas per key the member runs with.
    pub n: u32,
    /// The member's own report of its handoff.
    pub handoff: HandoffProgress,
}

impl MemberDigest {
    fn version(&self) -> (u64, u64) {
        (self.incarnation, self.heartbeat)
    }
}

/// One node's entry as this node knows it: the entry it gossips for the node, whose `status`
/// is this node's own judgement of the member's health, and when it last heard of it. It
/// reads as its entry (`member.node`, `member.ring`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The entry as this node gossips it: the newest heartbeat and incarnation seen, the
    /// latest ring status heard from anyone, the status judged on this node's clock.
    pub entry: MemberDigest,
    /// Local time (ms) at which the member's version last advanced; never gossiped, because
    /// clocks of different nodes are not comparable.
    pub last_heard_ms: u64,
}

impl Deref for Member {
    type Target = MemberDigest;

    fn deref(&self) -> &MemberDigest {
        &self.entry
    }
}

impl DerefMut for Member {
    fn deref_mut(&mut self) -> &mut MemberDigest {
        &mut self.entry
    }
}

impl Member {
    /// The entry as it is gossiped.
    pub fn digest(&self) -> MemberDigest {
        self.entry.clone()
    }

    /// Whether requests may be sent to the member: alive, and not gone for good.
    pub fn is_reachable(&self) -> bool {
        self.status == Status::Alive && !self.ring.is_final()
    }
}

/// A member's liveness moved, for logging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// The member that moved.
    pub node: NodeId,
    /// Its status before.
    pub from: Status,
    /// Its status now.
    pub to: Status,
}

/// A member's ring status moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingChange {
    /// The member that moved.
    pub node: NodeId,
    /// Its ring status before (`None`: it was not known).
    pub from: Option<RingStatus>,
    /// Its ring status now.
    pub to: RingStatus,
}

/// The membership table of one node, with failure detection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Our own entry, kept apart so that no peer can replace it.
    own: Member,
    /// Every other node ever heard of, by name.
    peers: BTreeMap<NodeId, Member>,
    timeouts: FailureTimeouts,
    /// The ring layout last counted, to tell when it changes.
    layout: Vec<(NodeId, u32)>,
    /// Bumped whenever the ring layout changes.
    version: u64,
    /// Whether a peer's digest showed our leave since we started leaving (see
    /// [`Membership::may_finish_leaving`]); in memory only, heard again after a restart.
    leave_heard: bool,
}

impl Membership {
    /// A table holding only this node, Alive, heard at `now_ms`, on the ring (valid) with
    /// N = [`DEFAULT_N`]; see [`Membership::with_ring`] and [`Membership::with_n`].
    pub fn new(
        me: NodeId,
        cluster_addr: String,
        http_addr: String,
        vnodes: u32,
        incarnation: u64,
        timeouts: FailureTimeouts,
        now_ms: u64,
    ) -> Result<Self, TimeoutsError> {
        timeouts.validate()?;
        let mut membership = Membership {
            own: Member {
                entry: MemberDigest {
                    node: me,
                    cluster_addr,
                    http_addr,
                    vnodes,
                    status: Status::Alive,
                    heartbeat: 0,
                    incarnation,
                    ring: RingStatus::Valid,
                    n: DEFAULT_N,
                    handoff: HandoffProgress::default(),
                },
                last_heard_ms: now_ms,
            },
            peers: BTreeMap::new(),
            timeouts,
            layout: Vec::new(),
            version: 0,
            leave_heard: false,
        };
        membership.recount_layout();
        Ok(membership)
    }

    /// This table with our own entry at ring status `ring` (a node started with seeds joins).
    pub fn with_ring(mut self, ring: RingStatus) -> Self {
        self.own.ring = ring;
        self.recount_layout();
        self
    }

    /// This table with our own entry running `n` replicas per key.
    pub fn with_n(mut self, n: u32) -> Self {
        self.own.n = n;
        self
    }

    /// This node's own entry.
    pub fn own(&self) -> &Member {
        &self.own
    }

    /// Starts a new gossip round: our heartbeat is what tells peers we are still here.
    pub fn tick(&mut self, now_ms: u64) {
        self.own.heartbeat = self.own.heartbeat.saturating_add(1);
        self.own.last_heard_ms = now_ms;
    }

    /// Every entry (ours included), in name order, as gossiped.
    pub fn digest(&self) -> Vec<MemberDigest> {
        self.members().map(Member::digest).collect()
    }

    /// The entry of `node`, ours included.
    pub fn get(&self, node: &NodeId) -> Option<&Member> {
        if *node == self.own.node {
            Some(&self.own)
        } else {
            self.peers.get(node)
        }
    }

    /// Every entry (ours included), in name order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        let me = &self.own.node;
        let before = self
            .peers
            .range::<NodeId, _>((Bound::Unbounded, Bound::Excluded(me)))
            .map(|(_, member)| member);
        let after = self
            .peers
            .range::<NodeId, _>((Bound::Excluded(me), Bound::Unbounded))
            .map(|(_, member)| member);
        before.chain(std::iter::once(&self.own)).chain(after)
    }

    /// Other nodes that may still hold data (neither left nor removed), whatever their
    /// liveness: the nodes a tombstone purge must hear from.
    pub fn data_holders(&self) -> impl Iterator<Item = &Member> {
        self.peers
            .values()
            .filter(|member| member.ring.may_hold_data())
    }

    /// The ring members with the vnode counts they asked for: the input of `Ring::build`. The
    /// valid members; the leaving ones while none is valid, so that leaves never empty the ring.
    pub fn ring_layout(&self) -> Vec<(NodeId, u32)> {
        self.layout.clone()
    }

    // The valid members. While no member is valid, the leaving ones keep their places: the
    // last two members told to leave at once each accepted before it heard of the other's
    // leave, and an empty ring would strand their keys and serve nothing. Their leaves wait,
    // on the ring, until a node joins and takes everything.
    fn recount_layout(&mut self) {
        let any_valid = self.members().any(|m| m.ring.on_ring());
        let placed = |ring: RingStatus| {
            if any_valid {
                ring.on_ring()
            } else {
                ring == RingStatus::Leaving
            }
        };
        let layout: Vec<(NodeId, u32)> = self
            .members()
            .filter(|member| placed(member.ring))
            .map(|member| (member.node.clone(), member.vnodes))
            .collect();
        if layout != self.layout {
            self.layout = layout;
            self.version += 1;
        }
    }

    /// The ring status of `node`, or `None` if it was never heard of.
    pub fn ring_status_of(&self, node: &NodeId) -> Option<RingStatus> {
        self.get(node).map(|member| member.ring)
    }

    /// Whether hints may wait here for `node`: a member that owns ranges on the ring now (dead
    /// or not). A node that left, was removed or is unknown would never take them back, and a
    /// leaving one owns nothing while a member is valid: it would only push them on, after it
    /// told a tombstone purge that it holds nothing of their keys, and so bring back a value
    /// the purge deleted.
    pub fn takes_hints(&self, node: &NodeId) -> bool {
        self.on_layout(node)
    }

    // Whether `node` has a place on the ring. The layout holds only valid or leaving members,
    // never a final one.
    fn on_layout(&self, node: &NodeId) -> bool {
        self.layout.iter().any(|(member, _)| member == node)
    }

    /// Whether requests should be sent to `node`: Alive and neither left nor removed. A
    /// Suspect keeps its ring place but the sloppy quorum routes around it to a fallback, so
    /// a slow node does not stall writes; an unknown node is not reachable.
    pub fn is_reachable(&self, node: &NodeId) -> bool {
        self.get(node).is_some_and(Member::is_reachable)
    }

    /// Whether cluster sessions to `node` should be kept: anyone not gone for good.
    pub fn should_connect(&self, node: &NodeId) -> bool {
        self.get(node).is_some_and(|m| !m.ring.is_final())
    }

    /// Counter bumped whenever [`Membership::ring_layout`] changes, so the actor knows when
    /// to rebuild the ring.
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.members().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}:{}/{}", m.node, m.ring, m.status)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
