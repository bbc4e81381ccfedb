//! Cluster membership as one node sees it: who exists, where to reach them, and whether they
//! look alive.
//!
//! This is the pure state behind the Gossip actor. Peers exchange [`MemberDigest`]s; each entry
//! carries a version `(incarnation, heartbeat)` that only its own node advances, so merging keeps
//! the newest version per node (a last-writer-wins map, hence idempotent and commutative).
//! Liveness is never taken from a peer: every node measures a member's silence on its own
//! clock, from the last time that member's version advanced, and moves it
//! Alive -> Suspect -> Dead one step per [`Membership::detect`] call.
//!
//! Our own entry is never taken from a peer. A peer holding a newer heartbeat for us at our
//! incarnation (a stale view, e.g. from before a restart) is refuted by jumping our heartbeat
//! past it; a peer claiming a higher incarnation for us is reported, never adopted.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::ids::NodeId;

/// How healthy a member looks from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Heard from recently: a gossip target and a write target.
    Alive,
    /// Silent for longer than `suspect_after_ms`: keeps its ring place, but gets no new writes.
    Suspect,
    /// Silent for longer than `dead_after_ms`: leaves the ring until it is heard from again.
    Dead,
}

impl Status {
    /// Whether a member in this status owns vnodes: a suspect keeps its place so that a short
    /// hiccup does not reshuffle ownership of the key space.
    pub fn on_ring(self) -> bool {
        self != Status::Dead
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Dead => "dead",
        })
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
        }
    }
}

/// A member's status moved, for logging and for rebuilding the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// The member that moved.
    pub node: NodeId,
    /// Its status before.
    pub from: Status,
    /// Its status now.
    pub to: Status,
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
    /// A peer held our own entry at our incarnation with a newer heartbeat, so ours was
    /// bumped past it; the next digest we send overrides the stale view.
    pub refuted: bool,
    /// The highest incarnation a peer claims for us above our own: another process may be
    /// running under our name, or we restarted with a stale incarnation. Never adopted here;
    /// the actor decides (log, alert, restart with a higher incarnation).
    pub own_entry_contested: Option<u64>,
}

/// The membership table of one node, with failure detection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Our own entry, kept apart so that no peer can replace it.
    own: Member,
    /// Every other node ever heard of, by name.
    peers: BTreeMap<NodeId, Member>,
    timeouts: FailureTimeouts,
    /// Bumped whenever the set of ring members changes.
    version: u64,
}

impl Membership {
    /// A table holding only this node, Alive, heard at `now_ms`.
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
        Ok(Membership {
            own: Member {
                node: me,
                cluster_addr,
                http_addr,
                vnodes,
                status: Status::Alive,
                heartbeat: 0,
                incarnation,
                last_heard_ms: now_ms,
            },
            peers: BTreeMap::new(),
            timeouts,
            version: 0,
        })
    }

    /// This node's name.
    pub fn me(&self) -> &NodeId {
        &self.own.node
    }

    /// This node's own entry.
    pub fn own(&self) -> &Member {
        &self.own
    }

    /// The failure-detection timeouts in force.
    pub fn timeouts(&self) -> FailureTimeouts {
        self.timeouts
    }

    /// Replaces the timeouts at runtime; invalid ones are refused and the old ones kept.
    pub fn set_timeouts(&mut self, timeouts: FailureTimeouts) -> Result<(), TimeoutsError> {
        timeouts.validate()?;
        self.timeouts = timeouts;
        Ok(())
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
        let mut ring_changed = false;
        for entry in digest {
            if entry.node == self.own.node {
                continue;
            }
            let Some(member) = self.peers.get_mut(&entry.node) else {
                // A peer's status is hearsay; we judge liveness from now on, on our clock.
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
                    },
                );
                report.added.push(entry.node.clone());
                ring_changed = true;
                continue;
            };
            // Equal is not news: replaying an old digest must not keep a silent node alive.
            if entry.version() <= member.version() {
                continue;
            }
            member.incarnation = entry.incarnation;
            member.heartbeat = entry.heartbeat;
            member.cluster_addr.clone_from(&entry.cluster_addr);
            member.http_addr.clone_from(&entry.http_addr);
            member.vnodes = entry.vnodes;
            member.last_heard_ms = now_ms;
            report.updated += 1;
            if member.status != Status::Alive {
                ring_changed |= !member.status.on_ring();
                report.revived.push(StatusChange {
                    node: member.node.clone(),
                    from: member.status,
                    to: Status::Alive,
                });
                member.status = Status::Alive;
            }
        }
        if ring_changed {
            self.version += 1;
        }
        report
    }

    /// A peer's view of our own entry is never adopted; a newer one is answered instead.
    ///
    /// All claims of one digest are weighed together, so the order of its entries does not
    /// matter: the heartbeat jumps once, past the highest claim at our incarnation.
    fn answer_claims_about_me(&mut self, digest: &[MemberDigest], report: &mut MergeReport) {
        let own = &mut self.own;
        let claims = digest.iter().filter(|entry| entry.node == own.node);
        let top_heartbeat = claims
            .clone()
            .filter(|entry| entry.incarnation == own.incarnation)
            .map(|entry| entry.heartbeat)
            .max();
        match top_heartbeat {
            Some(claimed) if claimed > own.heartbeat => {
                // Saturating: at u64::MAX the claim can only be equal, which is harmless.
                own.heartbeat = claimed.saturating_add(1);
                report.refuted = true;
            }
            _ => {}
        }
        report.own_entry_contested = claims
            .map(|entry| entry.incarnation)
            .filter(|&incarnation| incarnation > own.incarnation)
            .max();
    }

    /// Moves each other node at most one step along Alive -> Suspect -> Dead, by its silence
    /// on our clock (strictly above the timeout); called once per gossip tick.
    pub fn detect(&mut self, now_ms: u64) -> Vec<StatusChange> {
        let timeouts = self.timeouts;
        let mut changes = Vec::new();
        for member in self.peers.values_mut() {
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
        if changes.iter().any(|change| change.to == Status::Dead) {
            self.version += 1;
        }
        changes
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

    /// Other nodes that are Alive: the candidates for the next gossip exchange.
    pub fn alive_peers(&self) -> impl Iterator<Item = &Member> {
        self.peers
            .values()
            .filter(|member| member.status == Status::Alive)
    }

    /// The nodes that own vnodes (Alive or Suspect, ours included), in name order.
    pub fn ring_members(&self) -> Vec<NodeId> {
        self.members()
            .filter(|member| member.status.on_ring())
            .map(|member| member.node.clone())
            .collect()
    }

    /// The ring members with the vnode counts they asked for: the input of `Ring::build`.
    pub fn ring_layout(&self) -> Vec<(NodeId, u32)> {
        self.members()
            .filter(|member| member.status.on_ring())
            .map(|member| (member.node.clone(), member.vnodes))
            .collect()
    }

    /// The status of `node`, or `None` if it was never heard of.
    pub fn status_of(&self, node: &NodeId) -> Option<Status> {
        self.get(node).map(|member| member.status)
    }

    /// Whether requests should be sent to `node`: Alive only. A Suspect keeps its ring place
    /// but the sloppy quorum routes around it to a fallback, so a slow node does not stall
    /// writes; an unknown node is not reachable.
    pub fn is_reachable(&self, node: &NodeId) -> bool {
        self.status_of(node) == Some(Status::Alive)
    }

    /// Counter bumped whenever [`Membership::ring_members`] changes, so the actor knows when
    /// to rebuild the ring.
    pub fn version(&self) -> u64 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(name: &str) -> NodeId {
        NodeId::new(name)
    }

    fn entry(node: &str, incarnation: u64, heartbeat: u64) -> MemberDigest {
        MemberDigest {
            node: n(node),
            cluster_addr: format!("{node}:7001"),
            http_addr: format!("{node}:8001"),
            vnodes: 128,
            status: Status::Alive,
            heartbeat,
            incarnation,
        }
    }

    /// `n1` (incarnation 1) with default timeouts, at time 0.
    fn table() -> Membership {
        Membership::new(
            n("n1"),
            "n1:7001".into(),
            "n1:8001".into(),
            128,
            1,
            FailureTimeouts::default(),
            0,
        )
        .unwrap()
    }

    /// `table()` that heard `n2` (incarnation 1, heartbeat 5) at time 0.
    fn table_with_n2() -> Membership {
        let mut m = table();
        m.merge(&[entry("n2", 1, 5)], 0);
        m
    }

    fn change(node: &str, from: Status, to: Status) -> StatusChange {
        StatusChange {
            node: n(node),
            from,
            to,
        }
    }

    #[test]
    fn suspect_only_strictly_after_the_timeout() {
        let mut m = table_with_n2();
        assert!(m.detect(5_000).is_empty());
        assert_eq!(m.status_of(&n("n2")), Some(Status::Alive));
        assert_eq!(
            m.detect(5_001),
            vec![change("n2", Status::Alive, Status::Suspect)]
        );
        assert_eq!(m.status_of(&n("n2")), Some(Status::Suspect));
    }

    #[test]
    fn dead_only_strictly_after_the_timeout() {
        let mut m = table_with_n2();
        m.detect(5_001);
        assert!(m.detect(30_000).is_empty());
        assert_eq!(m.status_of(&n("n2")), Some(Status::Suspect));
        assert_eq!(
            m.detect(30_001),
            vec![change("n2", Status::Suspect, Status::Dead)]
        );
        assert_eq!(m.status_of(&n("n2")), Some(Status::Dead));
        assert!(m.detect(1_000_000).is_empty());
    }

    #[test]
    fn one_step_per_detect() {
        let mut m = table_with_n2();
        assert_eq!(
            m.detect(40_000),
            vec![change("n2", Status::Alive, Status::Suspect)]
        );
        assert_eq!(
            m.detect(40_000),
            vec![change("n2", Status::Suspect, Status::Dead)]
        );
        assert!(m.detect(40_000).is_empty());
    }

    #[test]
    fn own_node_is_always_alive() {
        let mut m = table_with_n2();
        // Never ticked: our own silence is huge, yet we never judge ourselves.
        for now in [10_000, 50_000, 1_000_000] {
            assert!(m.detect(now).iter().all(|c| c.node != n("n1")));
        }
        assert_eq!(m.status_of(&n("n1")), Some(Status::Alive));
        assert!(m.is_reachable(&n("n1")));
    }

    #[test]
    fn newer_heartbeat_revives_a_suspect() {
        let mut m = table_with_n2();
        m.detect(6_000);
        let report = m.merge(&[entry("n2", 1, 6)], 6_000);
        assert_eq!(
            report.revived,
            vec![change("n2", Status::Suspect, Status::Alive)]
        );
        assert_eq!(report.updated, 1);
        assert_eq!(m.status_of(&n("n2")), Some(Status::Alive));
        // Heard at 6000 now.
        assert!(m.detect(11_000).is_empty());
        assert_eq!(m.detect(11_001).len(), 1);
    }

    #[test]
    fn newer_heartbeat_revives_the_dead() {
        let mut m = table_with_n2();
        m.detect(40_000);
        m.detect(40_000);
        assert_eq!(m.status_of(&n("n2")), Some(Status::Dead));
        let report = m.merge(&[entry("n2", 1, 6)], 41_000);
        assert_eq!(
            report.revived,
            vec![change("n2", Status::Dead, Status::Alive)]
        );
        assert_eq!(m.status_of(&n("n2")), Some(Status::Alive));
        assert_eq!(m.get(&n("n2")).unwrap().last_heard_ms, 41_000);
    }

    #[test]
    fn equal_or_older_heartbeat_neither_revives_nor_refreshes() {
        let mut m = table_with_n2();
        // Replays at 4000 must not count as hearing from n2.
        assert_eq!(
            m.merge(&[entry("n2", 1, 5), entry("n2", 1, 3)], 4_000),
            MergeReport::default()
        );
        assert_eq!(m.get(&n("n2")).unwrap().last_heard_ms, 0);
        assert_eq!(m.detect(5_001).len(), 1);

        m.merge(&[entry("n2", 1, 5)], 6_000);
        assert_eq!(m.status_of(&n("n2")), Some(Status::Suspect));
        assert_eq!(
            m.detect(30_001),
            vec![change("n2", Status::Suspect, Status::Dead)]
        );

        m.merge(&[entry("n2", 1, 5), entry("n2", 0, 99)], 31_000);
        assert_eq!(m.status_of(&n("n2")), Some(Status::Dead));
    }

    #[test]
    fn higher_incarnation_wins_even_with_lower_heartbeat() {
        let mut m = table();
        m.merge(&[entry("n2", 1, 50)], 0);
        let mut restarted = entry("n2", 2, 3);
        restarted.cluster_addr = "10.0.0.9:7001".into();
        assert_eq!(m.merge(&[restarted], 100).updated, 1);
        let n2 = m.get(&n("n2")).unwrap();
        assert_eq!((n2.incarnation, n2.heartbeat), (2, 3));
        assert_eq!(n2.cluster_addr, "10.0.0.9:7001");
        assert_eq!(n2.last_heard_ms, 100);
        // The old life's heartbeats, however high, are stale now.
        assert_eq!(m.merge(&[entry("n2", 1, 1_000)], 200).updated, 0);
        let n2 = m.get(&n("n2")).unwrap();
        assert_eq!((n2.incarnation, n2.heartbeat), (2, 3));
        assert_eq!(n2.cluster_addr, "10.0.0.9:7001");
        // Same incarnation: higher heartbeat wins.
        assert_eq!(m.merge(&[entry("n2", 2, 4)], 300).updated, 1);
        assert_eq!(m.get(&n("n2")).unwrap().heartbeat, 4);
    }

    #[test]
    fn unknown_nodes_are_added_alive_whatever_the_peer_says() {
        let mut m = table();
        let mut dead = entry("n3", 4, 7);
        dead.status = Status::Dead;
        let report = m.merge(&[dead], 1_234);
        assert_eq!(report.added, vec![n("n3")]);
        assert_eq!(report.updated, 0);
        let n3 = m.get(&n("n3")).unwrap();
        assert_eq!(n3.status, Status::Alive);
        assert_eq!((n3.incarnation, n3.heartbeat), (4, 7));
        assert_eq!(n3.last_heard_ms, 1_234);
        assert_eq!(n3.http_addr, "n3:8001");
    }

    #[test]
    fn peer_reported_status_is_ignored_for_known_nodes() {
        let mut m = table_with_n2();
        let mut says_dead = entry("n2", 1, 6);
        says_dead.status = Status::Dead;
        m.merge(&[says_dead], 100);
        assert_eq!(m.status_of(&n("n2")), Some(Status::Alive));
        m.detect(6_000);
        let mut says_alive = entry("n2", 1, 6);
        says_alive.status = Status::Alive;
        m.merge(&[says_alive], 6_000);
        assert_eq!(m.status_of(&n("n2")), Some(Status::Suspect));
    }

    #[test]
    fn own_entry_is_never_taken_from_a_peer() {
        let mut m = table();
        m.tick(10);
        let before = m.own().clone();
        let mut forged = entry("n1", 1, 1_000_000);
        forged.cluster_addr = "evil:1".into();
        forged.http_addr = "evil:2".into();
        forged.status = Status::Dead;
        let report = m.merge(&[forged], 20);
        assert!(report.refuted);
        assert_eq!(report.own_entry_contested, None);
        assert!(report.added.is_empty() && report.updated == 0);
        let own = m.own();
        assert_eq!(own.cluster_addr, before.cluster_addr);
        assert_eq!(own.http_addr, before.http_addr);
        assert_eq!(own.incarnation, 1);
        assert_eq!(own.status, Status::Alive);
        assert_eq!(own.last_heard_ms, 10);
        assert_eq!(own.heartbeat, 1_000_001);
        assert_eq!(m.members().count(), 1);
    }

    #[test]
    fn refutation_bumps_our_heartbeat_above_the_peers() {
        let mut m = table();
        for t in 1..=3 {
            m.tick(t);
        }
        assert_eq!(m.own().heartbeat, 3);
        let report = m.merge(&[entry("n1", 1, 40)], 5);
        assert!(report.refuted);
        assert_eq!(m.own().heartbeat, 41);
        // Our next digest beats the stale view on the peer.
        let mut peer = Membership::new(
            n("n2"),
            "n2:7001".into(),
            "n2:8001".into(),
            128,
            1,
            FailureTimeouts::default(),
            0,
        )
        .unwrap();
        peer.merge(&[entry("n1", 1, 40)], 0);
        peer.merge(&m.digest(), 1);
        assert_eq!(peer.get(&n("n1")).unwrap().heartbeat, 41);
        // An older or equal claim is not refuted.
        assert!(!m.merge(&[entry("n1", 1, 41)], 6).refuted);
        assert_eq!(m.own().heartbeat, 41);
        // Several claims in one digest: one jump past the highest, whatever their order.
        let mut other = m.clone();
        m.merge(&[entry("n1", 1, 50), entry("n1", 1, 51)], 7);
        other.merge(&[entry("n1", 1, 51), entry("n1", 1, 50)], 7);
        assert_eq!(m.own().heartbeat, 52);
        assert_eq!(other.own().heartbeat, 52);
    }

    #[test]
    fn a_newer_incarnation_of_us_is_reported_not_adopted() {
        let mut m = table();
        m.tick(1);
        let report = m.merge(&[entry("n1", 3, 0), entry("n1", 2, 9)], 2);
        assert_eq!(report.own_entry_contested, Some(3));
        assert!(!report.refuted);
        assert_eq!((m.own().incarnation, m.own().heartbeat), (1, 1));
        // An older incarnation of us is simply stale.
        let report = m.merge(&[entry("n1", 0, 99)], 3);
        assert_eq!(report, MergeReport::default());
    }

    #[test]
    fn tick_advances_our_heartbeat_and_last_heard() {
        let mut m = table();
        m.tick(1_000);
        m.tick(2_000);
        assert_eq!(m.own().heartbeat, 2);
        assert_eq!(m.own().last_heard_ms, 2_000);
        assert_eq!(m.digest()[0].heartbeat, 2);
    }

    #[test]
    fn digest_lists_everyone_in_name_order_without_local_times() {
        let mut m = Membership::new(
            n("n2"),
            "n2:7001".into(),
            "n2:8001".into(),
            128,
            7,
            FailureTimeouts::default(),
            0,
        )
        .unwrap();
        m.merge(&[entry("n3", 1, 1), entry("n1", 1, 2)], 50);
        m.detect(6_000);
        let digest = m.digest();
        let names: Vec<_> = digest.iter().map(|d| d.node.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3"]);
        assert_eq!(digest[1].incarnation, 7);
        assert_eq!(digest[0].status, Status::Suspect);
        assert_eq!(digest[1].status, Status::Alive);
        // A fresh node learns the same versions from it, except its own entry: the stale
        // (1, 2) claimed for n1 is refuted.
        let mut fresh = table();
        assert!(fresh.merge(&digest, 0).refuted);
        let versions: Vec<_> = fresh
            .members()
            .map(|m| (m.node.clone(), m.incarnation, m.heartbeat))
            .collect();
        assert_eq!(
            versions,
            vec![(n("n1"), 1, 3), (n("n2"), 7, 0), (n("n3"), 1, 1)]
        );
    }

    #[test]
    fn helpers_agree_with_statuses() {
        let mut m = table();
        m.merge(&[entry("n2", 1, 0)], 0);
        m.merge(&[entry("n3", 1, 0), entry("n4", 1, 0)], 4_000);
        m.detect(6_000); // n2 suspect
        m.merge(&[entry("n4", 1, 1)], 9_000);
        m.detect(9_500); // n3 suspect
        m.detect(31_000); // n2 dead
        assert_eq!(m.status_of(&n("n2")), Some(Status::Dead));
        assert_eq!(m.status_of(&n("n3")), Some(Status::Suspect));
        assert_eq!(m.status_of(&n("n4")), Some(Status::Suspect));
        m.merge(&[entry("n4", 1, 2)], 31_000);
        assert_eq!(m.status_of(&n("n9")), None);

        let alive: Vec<_> = m.alive_peers().map(|p| p.node.clone()).collect();
        assert_eq!(alive, vec![n("n4")]);
        assert_eq!(m.ring_members(), vec![n("n1"), n("n3"), n("n4")]);
        assert!(m.is_reachable(&n("n4")));
        assert!(!m.is_reachable(&n("n3")));
        assert!(!m.is_reachable(&n("n2")));
        assert!(!m.is_reachable(&n("n9")));
        assert_eq!(m.get(&n("n1")), Some(m.own()));
        assert!(m.get(&n("n9")).is_none());
    }

    #[test]
    fn ring_version_follows_ring_membership() {
        let mut m = table();
        let v0 = m.version();
        assert_eq!(m.ring_members(), vec![n("n1")]);

        m.merge(&[entry("n2", 1, 0)], 0);
        let v1 = m.version();
        assert!(v1 > v0);
        assert_eq!(m.ring_members(), vec![n("n1"), n("n2")]);

        // Alive -> Suspect -> Alive keeps the ring as it is.
        m.detect(5_001);
        assert_eq!(m.status_of(&n("n2")), Some(Status::Suspect));
        assert_eq!(m.version(), v1);
        assert_eq!(m.ring_members(), vec![n("n1"), n("n2")]);
        m.merge(&[entry("n2", 1, 1)], 5_001);
        assert_eq!(m.status_of(&n("n2")), Some(Status::Alive));
        assert_eq!(m.version(), v1);

        // Going dead leaves the ring.
        m.detect(40_000);
        assert_eq!(m.version(), v1);
        m.detect(40_000);
        assert_eq!(m.status_of(&n("n2")), Some(Status::Dead));
        let v2 = m.version();
        assert!(v2 > v1);
        assert_eq!(m.ring_members(), vec![n("n1")]);

        // Stale news changes nothing; a newer heartbeat re-adds it.
        m.merge(&[entry("n2", 1, 1)], 41_000);
        assert_eq!(m.version(), v2);
        m.merge(&[entry("n2", 1, 2)], 41_000);
        assert!(m.version() > v2);
        assert_eq!(m.ring_members(), vec![n("n1"), n("n2")]);
    }

    #[test]
    fn custom_timeouts_apply() {
        let mut m = Membership::new(
            n("n1"),
            "a".into(),
            "b".into(),
            128,
            0,
            FailureTimeouts::new(100, 300).unwrap(),
            0,
        )
        .unwrap();
        m.merge(&[entry("n2", 0, 0)], 0);
        assert!(m.detect(100).is_empty());
        assert_eq!(m.detect(101).len(), 1);
        assert!(m.detect(300).is_empty());
        assert_eq!(
            m.detect(301),
            vec![change("n2", Status::Suspect, Status::Dead)]
        );
    }

    #[test]
    fn timeouts_can_change_at_runtime() {
        let mut m = table_with_n2();
        assert!(m.detect(1_000).is_empty());
        m.set_timeouts(FailureTimeouts::new(500, 900).unwrap())
            .unwrap();
        assert_eq!(m.timeouts(), FailureTimeouts::new(500, 900).unwrap());
        assert_eq!(m.detect(1_000).len(), 1);
        assert_eq!(m.detect(1_000).len(), 1);
        assert_eq!(m.status_of(&n("n2")), Some(Status::Dead));
    }

    #[test]
    fn invalid_timeouts_are_rejected() {
        assert_eq!(
            FailureTimeouts::new(0, 10),
            Err(TimeoutsError::Zero {
                suspect_after_ms: 0,
                dead_after_ms: 10
            })
        );
        assert!(matches!(
            FailureTimeouts::new(10, 0),
            Err(TimeoutsError::Zero { .. })
        ));
        assert_eq!(
            FailureTimeouts::new(300, 100),
            Err(TimeoutsError::NotOrdered {
                suspect_after_ms: 300,
                dead_after_ms: 100
            })
        );
        assert!(matches!(
            FailureTimeouts::new(100, 100),
            Err(TimeoutsError::NotOrdered { .. })
        ));
        assert_eq!(FailureTimeouts::default().validate(), Ok(()));

        let bad = FailureTimeouts {
            suspect_after_ms: 30_000,
            dead_after_ms: 5_000,
        };
        assert!(Membership::new(n("n1"), "a".into(), "b".into(), 128, 0, bad, 0).is_err());
        let mut m = table();
        assert!(m.set_timeouts(bad).is_err());
        assert_eq!(m.timeouts(), FailureTimeouts::default());
    }

    // ---- properties ----

    const NAMES: [&str; 5] = ["n0", "n1", "n2", "n3", "n4"];
    const ME: &str = "n1";

    fn status_strategy() -> impl Strategy<Value = Status> {
        prop_oneof![
            Just(Status::Alive),
            Just(Status::Suspect),
            Just(Status::Dead)
        ]
    }

    fn digest_entry() -> impl Strategy<Value = MemberDigest> {
        (0..NAMES.len(), 0u64..4, 0u64..30, status_strategy(), 0u8..2).prop_map(
            |(i, incarnation, heartbeat, status, addr)| MemberDigest {
                node: n(NAMES[i]),
                cluster_addr: format!("{}:{}", NAMES[i], 7000 + u16::from(addr)),
                http_addr: format!("{}:8000", NAMES[i]),
                vnodes: 128,
                status,
                heartbeat,
                incarnation,
            },
        )
    }

    fn digest_strategy() -> impl Strategy<Value = Vec<MemberDigest>> {
        prop::collection::vec(digest_entry(), 0..8)
    }

    /// A step in a node's life, with the time elapsed before it.
    #[derive(Clone, Debug)]
    enum Op {
        Merge(Vec<MemberDigest>),
        Tick,
        Detect,
    }

    fn ops_strategy() -> impl Strategy<Value = Vec<(Op, u64)>> {
        let op = prop_oneof![
            digest_strategy().prop_map(Op::Merge),
            Just(Op::Tick),
            Just(Op::Detect),
        ];
        prop::collection::vec((op, 0u64..20_000), 0..20)
    }

    /// A table for `ME` at incarnation 1, driven through `ops`; returns it and the clock.
    fn run(ops: &[(Op, u64)]) -> (Membership, u64) {
        let mut m = Membership::new(
            n(ME),
            "me:7001".into(),
            "me:8001".into(),
            128,
            1,
            FailureTimeouts::default(),
            0,
        )
        .unwrap();
        let mut now = 0;
        for (op, dt) in ops {
            now += dt;
            match op {
                Op::Merge(d) => {
                    m.merge(d, now);
                }
                Op::Tick => m.tick(now),
                Op::Detect => {
                    m.detect(now);
                }
            }
        }
        (m, now)
    }

    fn versions(m: &Membership) -> Vec<(NodeId, u64, u64, Status)> {
        m.members()
            .map(|e| (e.node.clone(), e.incarnation, e.heartbeat, e.status))
            .collect()
    }

    fn step(status: Status) -> u8 {
        match status {
            Status::Alive => 0,
            Status::Suspect => 1,
            Status::Dead => 2,
        }
    }

    proptest! {
        #[test]
        fn merge_is_idempotent(ops in ops_strategy(), d in digest_strategy(), later in 0u64..50_000) {
            let (mut m, now) = run(&ops);
            m.merge(&d, now);
            let once = m.clone();
            // Even later, a replay must not count as news.
            let report = m.merge(&d, now + later);
            prop_assert_eq!(report, MergeReport {
                own_entry_contested: once_contested(&d, &once),
                ..MergeReport::default()
            });
            prop_assert_eq!(m, once);
        }

        #[test]
        fn merge_order_does_not_matter(
            ops in ops_strategy(),
            a in digest_strategy(),
            b in digest_strategy(),
        ) {
            let (base, now) = run(&ops);
            let base_own = base.own().clone();
            let mut ab = base.clone();
            ab.merge(&a, now);
            ab.merge(&b, now);
            let mut ba = base;
            ba.merge(&b, now);
            ba.merge(&a, now);
            // Other nodes' entries: a last-writer-wins map, so exactly the same.
            let others = |m: &Membership| {
                versions(m).into_iter().filter(|v| v.0 != n(ME)).collect::<Vec<_>>()
            };
            prop_assert_eq!(others(&ab), others(&ba));
            prop_assert_eq!(ab.ring_members(), ba.ring_members());
            // Our own entry: "claim + 1" refutation depends on the order (claims 17 then 16
            // give 18, 16 then 17 give 17), but both orders end at or above every claim, so
            // no peer's stale view of us can win.
            prop_assert_eq!(ab.own().incarnation, ba.own().incarnation);
            let top_claim = a
                .iter()
                .chain(&b)
                .filter(|e| e.node == n(ME) && e.incarnation == base_own.incarnation)
                .map(|e| e.heartbeat)
                .max();
            for m in [&ab, &ba] {
                prop_assert!(m.own().heartbeat >= base_own.heartbeat);
                if let Some(claim) = top_claim {
                    prop_assert!(m.own().heartbeat >= claim);
                }
            }
        }

        #[test]
        fn own_entry_changes_only_by_refutation(ops in ops_strategy(), d in digest_strategy()) {
            let (mut m, now) = run(&ops);
            let before = m.own().clone();
            let report = m.merge(&d, now);
            let claims = d.iter().filter(|e| e.node == n(ME));
            let max_same = claims
                .clone()
                .filter(|e| e.incarnation == before.incarnation)
                .map(|e| e.heartbeat)
                .max();
            let expected_hb = match max_same {
                Some(hb) if hb > before.heartbeat => hb + 1,
                _ => before.heartbeat,
            };
            let contested = claims.map(|e| e.incarnation).filter(|&i| i > before.incarnation).max();
            prop_assert_eq!(m.own(), &Member { heartbeat: expected_hb, ..before.clone() });
            prop_assert_eq!(report.refuted, expected_hb != before.heartbeat);
            prop_assert_eq!(report.own_entry_contested, contested);
        }

        #[test]
        fn versions_never_go_backwards(ops in ops_strategy()) {
            let mut m = run(&[]).0;
            let mut now = 0;
            for (op, dt) in &ops {
                now += dt;
                let before: BTreeMap<NodeId, (u64, u64)> =
                    m.members().map(|e| (e.node.clone(), (e.incarnation, e.heartbeat))).collect();
                match op {
                    Op::Merge(d) => { m.merge(d, now); }
                    Op::Tick => m.tick(now),
                    Op::Detect => { m.detect(now); }
                }
                for (node, old) in &before {
                    let new = m.get(node).map(|e| (e.incarnation, e.heartbeat));
                    prop_assert!(new.is_some_and(|v| v >= *old), "{node}: {old:?} -> {new:?}");
                    // Within one incarnation the heartbeat itself never decreases.
                    if let Some((inc, hb)) = new
                        && inc == old.0
                    {
                        prop_assert!(hb >= old.1);
                    }
                }
            }
        }

        #[test]
        fn detect_moves_at_most_one_step_and_never_self(
            ops in ops_strategy(),
            dt in 0u64..100_000,
            suspect in 1u64..10_000,
            extra in 1u64..40_000,
        ) {
            let (mut m, now) = run(&ops);
            m.set_timeouts(FailureTimeouts::new(suspect, suspect + extra).unwrap()).unwrap();
            let version = m.version();
            let before: BTreeMap<NodeId, Status> =
                m.members().map(|e| (e.node.clone(), e.status)).collect();
            let changes = m.detect(now + dt);
            prop_assert_eq!(m.status_of(&n(ME)), Some(Status::Alive));
            for c in &changes {
                prop_assert!(c.node != n(ME));
                prop_assert_eq!(before[&c.node], c.from);
                prop_assert_eq!(step(c.to), step(c.from) + 1);
            }
            for (node, old) in &before {
                let new = m.status_of(node).unwrap();
                let moved = changes.iter().any(|c| &c.node == node);
                prop_assert_eq!(step(new), step(*old) + u8::from(moved));
            }
            let someone_died = changes.iter().any(|c| c.to == Status::Dead);
            prop_assert_eq!(m.version() > version, someone_died);
        }
    }

    /// What a replayed merge of `d` must still report: a claim to a newer incarnation of us is
    /// never adopted, so it is reported every time.
    fn once_contested(d: &[MemberDigest], m: &Membership) -> Option<u64> {
        d.iter()
            .filter(|e| e.node == n(ME) && e.incarnation > m.own().incarnation)
            .map(|e| e.incarnation)
            .max()
    }
}
