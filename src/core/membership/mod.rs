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

mod liveness;
mod ring_status;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::ids::NodeId;

pub use liveness::{FailureTimeouts, Status, TimeoutsError};
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

/// One node's entry as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's name.
    pub node: NodeId,
    /// Where its cluster (ractor_cluster) endpoint listens; opaque here.
    pub cluster_addr: String,
    /// Where its HTTP API listens; opaque here.
    pub http_addr: String,
    /// How many ring tokens the member asks for (every node must build the same ring).
    pub vnodes: u32,
    /// Health as judged on this node's clock.
    pub status: Status,
    /// Newest heartbeat seen for the member.
    pub heartbeat: u64,
    /// Newest incarnation seen for the member.
    pub incarnation: u64,
    /// Local time (ms) at which the member's version last advanced; never gossiped, because
    /// clocks of different nodes are not comparable.
    pub last_heard_ms: u64,
    /// Where the member stands on the ring (the latest status heard from anyone).
    pub ring: RingStatus,
    /// Replicas per key the member runs with.
    pub n: u32,
    /// The member's handoff progress, as of its newest heartbeat.
    pub handoff: HandoffProgress,
}

impl Member {
    fn version(&self) -> (u64, u64) {
        (self.incarnation, self.heartbeat)
    }

    /// The entry as it is gossiped.
    pub fn digest(&self) -> MemberDigest {
        MemberDigest {
            node: self.node.clone(),
            cluster_addr: self.cluster_addr.clone(),
            http_addr: self.http_addr.clone(),
            vnodes: self.vnodes,
            status: self.status,
            heartbeat: self.heartbeat,
            incarnation: self.incarnation,
            ring: self.ring,
            n: self.n,
            handoff: self.handoff,
        }
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

/// News about our own name that this node must not keep running under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum Fatal {
    /// An operator removed this node from the cluster.
    #[error(
        "this node was removed from the cluster; its name cannot come back: start a node under a new name"
    )]
    Removed,
    /// A previous life of this node left the cluster.
    #[error(
        "a node of this name left the cluster; its name cannot come back: start a node under a new name"
    )]
    Left,
    /// The cluster runs with another number of replicas per key.
    #[error(
        "the cluster runs with n = {cluster}, this node was started with n = {ours}: start it with --n {cluster}"
    )]
    ReplicaMismatch {
        /// The cluster's N.
        cluster: u32,
        /// Ours.
        ours: u32,
    },
}

/// What a [`Membership::merge`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Nodes seen for the first time (added as Alive).
    pub added: Vec<NodeId>,
    /// Known Suspect or Dead nodes that a newer version brought back to Alive.
    pub revived: Vec<StatusChange>,
    /// Known nodes whose version advanced (revived ones included, added ones not).
    pub updated: usize,
    /// Ring statuses that moved, ours included.
    pub ring: Vec<RingChange>,
    /// Nodes whose entries were not taken because they run with another N.
    pub ignored: Vec<NodeId>,
    /// A peer held our own entry at our incarnation with a newer heartbeat, so ours was
    /// bumped past it; the next digest we send overrides the stale view.
    pub refuted: bool,
    /// The highest incarnation a peer claims for us above our own: another process may be
    /// running under our name, or we restarted with a stale incarnation. Never adopted here;
    /// the actor decides (log, alert, restart with a higher incarnation).
    pub own_entry_contested: Option<u64>,
    /// This node must stop: see [`Fatal`].
    pub fatal: Option<Fatal>,
}

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
    /// This node was removed or has left: it cannot change its status any more.
    #[error("this node is {0}: it can no longer leave")]
    Final(RingStatus),
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
                node: me,
                cluster_addr,
                http_addr,
                vnodes,
                status: Status::Alive,
                heartbeat: 0,
                incarnation,
                last_heard_ms: now_ms,
                ring: RingStatus::Valid,
                n: DEFAULT_N,
                handoff: HandoffProgress::default(),
            },
            peers: BTreeMap::new(),
            timeouts,
            layout: Vec::new(),
            version: 0,
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

    /// Folds a peer's digest into the table (see the module docs for the rules).
    pub fn merge(&mut self, digest: &[MemberDigest], now_ms: u64) -> MergeReport {
        let mut report = MergeReport::default();
        self.answer_claims_about_me(digest, &mut report);
        let mut met_a_peer = false;
        for entry in digest {
            if entry.node == self.own.node {
                continue;
            }
            if entry.n != self.own.n {
                // Another N would build other preference lists: keep it out of our table.
                // A joining node learns here that it came to the wrong cluster.
                if entry.ring == RingStatus::Valid && self.own.ring == RingStatus::Joining {
                    report.fatal.get_or_insert(Fatal::ReplicaMismatch {
                        cluster: entry.n,
                        ours: self.own.n,
                    });
                }
                report.ignored.push(entry.node.clone());
                continue;
            }
            met_a_peer = true;
            let Some(member) = self.peers.get_mut(&entry.node) else {
                // A peer's liveness opinion is hearsay; we judge it from now on, on our clock.
                // Its ring status is a fact about the cluster and is taken as is.
                self.peers.insert(
                    entry.node.clone(),
                    Member {
                        node: entry.node.clone(),
                        cluster_addr: entry.cluster_addr.clone(),
                        http_addr: entry.http_addr.clone(),
                        vnodes: entry.vnodes,
                        status: Status::Alive,
                        heartbeat: entry.heartbeat,
                        incarnation: entry.incarnation,
                        last_heard_ms: now_ms,
                        ring: entry.ring,
                        n: entry.n,
                        handoff: entry.handoff,
                    },
                );
                report.added.push(entry.node.clone());
                report.ring.push(RingChange {
                    node: entry.node.clone(),
                    from: None,
                    to: entry.ring,
                });
                continue;
            };
            if entry.ring > member.ring {
                report.ring.push(RingChange {
                    node: member.node.clone(),
                    from: Some(member.ring),
                    to: entry.ring,
                });
                member.ring = entry.ring;
            }
            // Equal is not news: replaying an old digest must not keep a silent node alive.
            if entry.version() <= member.version() {
                continue;
            }
            member.incarnation = entry.incarnation;
            member.heartbeat = entry.heartbeat;
            member.cluster_addr.clone_from(&entry.cluster_addr);
            member.http_addr.clone_from(&entry.http_addr);
            member.vnodes = entry.vnodes;
            member.handoff = entry.handoff;
            member.last_heard_ms = now_ms;
            report.updated += 1;
            if member.status != Status::Alive {
                report.revived.push(StatusChange {
                    node: member.node.clone(),
                    from: member.status,
                    to: Status::Alive,
                });
                member.status = Status::Alive;
            }
        }
        // A joining node that met the cluster (or a peer joining with it) takes its place.
        if met_a_peer && self.own.ring == RingStatus::Joining && report.fatal.is_none() {
            self.set_own_ring(RingStatus::Valid, &mut report.ring);
        }
        self.recount_layout();
        report
    }

    /// A peer's view of our own entry is never adopted, except a later ring status; a newer
    /// heartbeat is answered instead.
    ///
    /// All claims of one digest are weighed together, so the order of its entries does not
    /// matter: the heartbeat jumps once, past the highest claim at our incarnation.
    fn answer_claims_about_me(&mut self, digest: &[MemberDigest], report: &mut MergeReport) {
        let claims = digest.iter().filter(|entry| entry.node == self.own.node);
        let top_heartbeat = claims
            .clone()
            .filter(|entry| entry.incarnation == self.own.incarnation)
            .map(|entry| entry.heartbeat)
            .max();
        let top_ring = claims.clone().map(|entry| entry.ring).max();
        report.own_entry_contested = claims
            .map(|entry| entry.incarnation)
            .filter(|&incarnation| incarnation > self.own.incarnation)
            .max();
        match top_heartbeat {
            Some(claimed) if claimed > self.own.heartbeat => {
                // Saturating: at u64::MAX the claim can only be equal, which is harmless.
                self.own.heartbeat = claimed.saturating_add(1);
                report.refuted = true;
            }
            _ => {}
        }
        let Some(claimed) = top_ring else {
            return;
        };
        if claimed <= self.own.ring {
            return;
        }
        match claimed {
            RingStatus::Removed => report.fatal = Some(Fatal::Removed),
            // Only a node itself declares itself left: a claim means a previous life did.
            RingStatus::Left => report.fatal = Some(Fatal::Left),
            _ => {}
        }
        // Adopted even when fatal, so that our digest stops contradicting the cluster.
        self.set_own_ring(claimed, &mut report.ring);
    }

    fn set_own_ring(&mut self, to: RingStatus, changes: &mut Vec<RingChange>) {
        if to == self.own.ring {
            return;
        }
        changes.push(RingChange {
            node: self.own.node.clone(),
            from: Some(self.own.ring),
            to,
        });
        self.own.ring = to;
    }

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

    /// The operator drains this node: it leaves the ring and hands its keys to the others.
    /// Leaving twice is harmless; a node that left or was removed cannot leave.
    pub fn start_leaving(&mut self) -> Result<Vec<RingChange>, ChangeError> {
        let mut changes = Vec::new();
        match self.own.ring {
            RingStatus::Joining | RingStatus::Valid => {
                self.set_own_ring(RingStatus::Leaving, &mut changes);
                self.recount_layout();
                Ok(changes)
            }
            RingStatus::Leaving | RingStatus::Left => Ok(changes),
            RingStatus::Removed => Err(ChangeError::Final(RingStatus::Removed)),
        }
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

    /// The ring members with the vnode counts they asked for: the input of `Ring::build`.
    pub fn ring_layout(&self) -> Vec<(NodeId, u32)> {
        self.layout.clone()
    }

    fn recount_layout(&mut self) {
        let layout: Vec<(NodeId, u32)> = self
            .members()
            .filter(|member| member.ring.on_ring())
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
mod tests;
