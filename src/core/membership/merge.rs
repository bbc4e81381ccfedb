//! How a peer's digest is folded into the table.
//!
//! A peer's entry is taken when its version `(incarnation, heartbeat)` is newer than ours
//! for that member, and its ring status when it is later; a peer's opinion of a member's
//! liveness never is (this node judges it on its own clock from then on). An entry for
//! another N is kept out: it would build other preference lists. What peers say about our
//! own name is weighed apart (`answer_claims_about_me`): only a later ring status is taken,
//! a newer heartbeat is refuted, a higher incarnation is reported.

use thiserror::Error;

use super::{Member, MemberDigest, Membership, RingChange, RingStatus, Status, StatusChange};
use crate::core::ids::NodeId;

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

impl Membership {
    /// Takes back the digest this node recorded before it stopped, as a peer's would be
    /// taken, except that our own entry in it is no sign that a peer heard of our leave.
    pub fn restore(&mut self, recorded: &[MemberDigest], now_ms: u64) -> MergeReport {
        self.fold(recorded, now_ms, false)
    }

    /// Folds a peer's digest into the table (see the module docs for the rules).
    pub fn merge(&mut self, digest: &[MemberDigest], now_ms: u64) -> MergeReport {
        self.fold(digest, now_ms, true)
    }

    fn fold(&mut self, digest: &[MemberDigest], now_ms: u64, from_peer: bool) -> MergeReport {
        let mut report = MergeReport::default();
        self.answer_claims_about_me(digest, &mut report);
        // Checked after the claims were answered: a claim may be what made us leaving.
        if from_peer
            && self.own.ring == RingStatus::Leaving
            && (digest.iter()).any(|e| e.node == self.own.node && e.ring == RingStatus::Leaving)
        {
            self.leave_heard = true;
        }
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
                        entry: MemberDigest {
                            status: Status::Alive,
                            ..entry.clone()
                        },
                        last_heard_ms: now_ms,
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
        // A joining node takes its place once it knows a member of the cluster (valid or
        // leaving), met or named in a peer's digest. Joining nodes never make a
        // cluster among themselves: a node that lost its table (an in-memory restart) and a
        // new one, both cut off from the cluster they were seeded with, would own every range
        // between them, unaware of the members that hold the data, and could purge a
        // tombstone those members never saw. A cluster starts from a node started alone.
        let knows_the_cluster = self.peers.values().any(|m| m.ring.in_cluster());
        if met_a_peer
            && knows_the_cluster
            && self.own.ring == RingStatus::Joining
            && report.fatal.is_none()
        {
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
    pub(super) fn answer_claims_about_me(
        &mut self,
        digest: &[MemberDigest],
        report: &mut MergeReport,
    ) {
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

    pub(super) fn set_own_ring(&mut self, to: RingStatus, changes: &mut Vec<RingChange>) {
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
}
