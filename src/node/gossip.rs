//! The Gossip actor: heartbeats, membership exchange with a random live peer every interval,
//! and failure detection (alive -> suspect -> dead) on this node's own clock.
//!
//! It owns the authoritative [`Membership`] and publishes a snapshot after every change;
//! when the set of ring members changes it asks the Ring actor to rebuild (Gossip calls Ring,
//! never the other way round).

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, pg};
use rand::Rng;
use rand::seq::IndexedRandom;

use super::peers::Role;
use super::ring_actor::RingMsg;
use super::shared::NodeShared;
use super::wire::{GossipMsg, Payload};
use crate::core::ids::NodeId;
use crate::core::membership::{MemberDigest, Membership, Status};

/// Runs gossip rounds.
#[derive(Clone)]
pub struct GossipActor;

/// The Gossip actor's state.
pub struct GossipState {
    shared: Arc<NodeShared>,
    membership: Membership,
}

/// The registered name of the Ring actor of `node`.
pub fn ring_actor_name(node: &NodeId) -> String {
    format!("dynamo.ring@{node}")
}

impl Actor for GossipActor {
    type Msg = GossipMsg;
    type State = GossipState;
    type Arguments = Arc<NodeShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<GossipMsg>,
        shared: Arc<NodeShared>,
    ) -> Result<GossipState, ActorProcessingErr> {
        // A restarted Gossip picks up the table its previous life published.
        let membership = Membership::clone(&shared.membership.load());
        pg::join(Role::Gossip.group().to_string(), vec![myself.get_cell()]);
        let interval = Duration::from_millis(shared.config.gossip.interval_ms);
        myself.send_interval(interval, || GossipMsg::Tick(Payload::ok(())));
        Ok(GossipState { shared, membership })
    }

    async fn handle(
        &self,
        myself: ActorRef<GossipMsg>,
        msg: GossipMsg,
        state: &mut GossipState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GossipMsg::Tick(_) => state.round(myself),
            GossipMsg::Exchange(Payload(digest), reply) => {
                if let Ok(digest) = digest {
                    state.merge(&digest);
                }
                let _ = reply.send(Payload::ok(state.membership.digest()));
            }
        }
        Ok(())
    }
}

impl GossipState {
    /// One round: heartbeat, failure detection, and an exchange with a random peer.
    fn round(&mut self, myself: ActorRef<GossipMsg>) {
        let now = self.shared.mono_ms();
        self.membership.tick(now);
        let changes = self.membership.detect(now);
        for change in &changes {
            tracing::info!(node = %change.node, from = %change.from, to = %change.to, "member status changed");
        }
        self.publish(!changes.is_empty());
        let Some(peer) = self.pick_peer() else {
            return;
        };
        let Some(target) = self.shared.peers.gossip(&peer) else {
            return;
        };
        let digest = self.membership.digest();
        let timeout = Duration::from_millis(self.shared.config.gossip.interval_ms.max(100));
        // The exchange runs off the handler; its answer comes back as a message.
        tokio::spawn(async move {
            let answer = target
                .call(
                    |reply| GossipMsg::Exchange(Payload::ok(digest), reply),
                    Some(timeout),
                )
                .await;
            if let Ok(ractor::rpc::CallResult::Success(Payload(Ok(theirs)))) = answer {
                let _ = myself.cast(GossipMsg::Exchange(Payload::ok(theirs), dropped_port()));
            }
        });
    }

    /// A random connected peer: usually an alive one (or a connected node not heard of yet, a
    /// seed), but sometimes, and always when no alive one is left, one we believe suspect or
    /// dead. Without that, nodes that all stalled at once (a laptop asleep, a long partition)
    /// would each see the others dead and never exchange a heartbeat again.
    fn pick_peer(&self) -> Option<NodeId> {
        let connected = self.shared.peers.nodes();
        let (mut alive, mut silent) = (Vec::new(), Vec::new());
        for node in connected.into_iter().filter(|n| *n != self.shared.me) {
            match self.membership.status_of(&node) {
                Some(Status::Alive) | None => alive.push(node),
                Some(_) => silent.push(node),
            }
        }
        let mut rng = rand::rng();
        let pool = if silent.is_empty() || (!alive.is_empty() && rng.random_range(0..4) != 0) {
            alive
        } else {
            silent
        };
        pool.choose(&mut rng).cloned()
    }

    fn merge(&mut self, digest: &[MemberDigest]) {
        let report = self.membership.merge(digest, self.shared.mono_ms());
        if let Some(incarnation) = report.own_entry_contested {
            tracing::warn!(
                incarnation,
                "a peer claims a newer incarnation of this node: is another process running under our name?"
            );
        }
        for node in &report.added {
            tracing::info!(node = %node, "member joined");
        }
        for change in &report.revived {
            tracing::info!(node = %change.node, from = %change.from, "member alive again");
        }
        let changed = !report.added.is_empty() || !report.revived.is_empty() || report.updated > 0;
        self.publish(changed);
    }

    /// Publishes the table if it changed, and asks for a ring rebuild if its members changed.
    fn publish(&self, changed: bool) {
        let previous = self.shared.membership.load();
        let ring_changed = previous.version() != self.membership.version();
        if changed || ring_changed || previous.own().heartbeat != self.membership.own().heartbeat {
            self.shared
                .membership
                .store(Arc::new(self.membership.clone()));
        }
        if ring_changed {
            match ActorRef::<RingMsg>::where_is(ring_actor_name(&self.shared.me)) {
                Some(ring) => {
                    let _ = ring.cast(RingMsg::Rebuild);
                }
                // The Ring actor is restarting; its pre_start reads the table just published.
                None => tracing::debug!("ring actor not running; it rebuilds when it starts"),
            }
        }
        for status in [Status::Alive, Status::Suspect, Status::Dead] {
            let count = self
                .membership
                .members()
                .filter(|m| m.status == status)
                .count();
            let label = super::metrics::StatusLabels {
                status: status_label(status),
            };
            self.shared
                .metrics
                .members
                .get_or_create(&label)
                .set(count as i64);
        }
    }
}

fn status_label(status: Status) -> &'static str {
    match status {
        Status::Alive => "alive",
        Status::Suspect => "suspect",
        Status::Dead => "dead",
    }
}

/// A reply port whose answer nobody awaits: a pushed digest needs no answer.
fn dropped_port() -> ractor::RpcReplyPort<Payload<Vec<MemberDigest>>> {
    let (tx, _rx) = ractor::concurrency::oneshot();
    tx.into()
}
