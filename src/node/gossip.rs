//! The Gossip actor: heartbeats, membership exchange with a peer every interval, failure
//! detection (alive -> suspect -> dead) on this node's own clock, and the end of a leave.
//!
//! The decisions are the pure [`Membership`]'s; this actor times them, sends the exchanges and
//! acts on what they report. The table lives in [`NodeShared`] (so that an operator's leave or
//! remove changes the same table, and a restarted actor loses nothing); every change is
//! published there, and a changed ring layout makes the Ring actor rebuild (Gossip calls Ring,
//! never the other way round).

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, pg};

use super::origin;
use super::peers::Role;
use super::shared::NodeShared;
use super::wire::{self, GossipDigest, GossipMsg, Payload, Vouched};
use crate::core::leave;
use crate::core::membership::{
    HandoffProgress, MemberDigest, Membership, MergeReport, RingStatus, Status,
};

/// Runs gossip rounds.
#[derive(Clone)]
pub struct GossipActor;

impl Actor for GossipActor {
    type Msg = GossipMsg;
    type State = Arc<NodeShared>;
    type Arguments = Arc<NodeShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<GossipMsg>,
        shared: Arc<NodeShared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        pg::join(Role::Gossip.group().to_string(), vec![myself.get_cell()]);
        let interval = Duration::from_millis(shared.config.gossip.interval_ms);
        myself.send_interval(interval, || GossipMsg::Tick(Payload::ok(())));
        Ok(shared)
    }

    async fn handle(
        &self,
        myself: ActorRef<GossipMsg>,
        msg: GossipMsg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GossipMsg::Tick(_) => round(shared, myself),
            GossipMsg::Exchange(Payload(exchange), reply) => {
                // An empty digest only asks for ours (native clients do): nothing to vouch for.
                // A digest is believed only from the session of the sender it names; its
                // entries about other members are relayed on that sender's word.
                if let Ok(Vouched { token, body }) = exchange
                    && !body.members.is_empty()
                {
                    if !origin::vouched(shared, "gossip", &body.from, token.as_ref()) {
                        let _ = reply.send(Payload::err("sender not vouched for by its session"));
                        return Ok(());
                    }
                    merge(shared, &body.members);
                }
                let _ = reply.send(Payload::ok(shared.membership.load().digest()));
            }
            GossipMsg::Offer(Payload(offer)) => {
                if let Ok(offer) = offer {
                    origin::on_offer(shared, offer);
                }
            }
            GossipMsg::Confirm(Payload(ask), reply) => {
                let issued = ask.is_ok_and(|ask| origin::on_confirm(shared, &ask));
                let _ = reply.send(Payload::ok(issued));
            }
            GossipMsg::Resend(Payload(peer)) => {
                if let Ok(peer) = peer {
                    origin::on_resend(shared, &peer);
                }
            }
        }
        Ok(())
    }
}

/// One round: heartbeat, failure detection, the end of a drain, and an exchange with a peer.
fn round(shared: &Arc<NodeShared>, _myself: ActorRef<GossipMsg>) {
    check_store(shared);
    let now = shared.mono_ms();
    let progress = handoff_progress(shared);
    let handoff_idle = shared.handoff().in_flight() == 0;
    let (changes, finished, digest) = shared.change_membership(|m| {
        m.tick(now);
        m.set_handoff_progress(progress);
        let changes = m.detect(now);
        let finished = leave::finish_if_drained(m, &shared.store, &shared.hints, handoff_idle);
        (changes, finished, m.digest())
    });
    for change in &changes {
        tracing::info!(node = %change.node, from = %change.from, to = %change.to, "member status changed");
    }
    if !finished.is_empty() {
        shared.log_ring_changes(&finished);
        tracing::info!(node = %shared.me, "every key handed off: this node has left the cluster and can be stopped");
    }
    observe(shared);
    origin::ask_missing_tokens(shared);
    let membership = shared.membership.load();
    let Some(peer) = membership.pick_gossip_peer(&shared.peers.nodes(), &mut rand::rng()) else {
        return;
    };
    let (Some(target), Some(token)) = (shared.peers.gossip(&peer), shared.sessions.held(&peer))
    else {
        // No token from that peer yet: it would refuse our digest; a later round sends it.
        return;
    };
    let timeout = Duration::from_millis(shared.config.gossip.interval_ms.max(100));
    let exchange = Vouched {
        token: Some(token),
        body: GossipDigest {
            from: shared.me.clone(),
            members: digest,
        },
    };
    // The exchange runs off the handler. The answer comes from the peer's own session (the
    // registry is checked), so it is merged as it is.
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let ask = |reply| GossipMsg::Exchange(Payload::ok(exchange), reply);
        if let Ok(theirs) = wire::call(&target, ask, timeout).await {
            merge(&shared, &theirs);
        }
    });
}

/// What this node reports of its handoff: a leaving node counts everything it still holds.
///
/// So does a node that left (nothing, once drained) or was removed: it owns nothing, and its
/// handoff scan no longer runs, so the scan's count of its last pass would stay frozen at
/// what the node held before its last keys went (a node that had left reported
/// `remaining: 135` forever).
pub fn handoff_progress(shared: &NodeShared) -> HandoffProgress {
    let handoff = shared.handoff();
    let status = shared.ring_status();
    let remaining = if status == RingStatus::Leaving || status.is_final() {
        shared.store.len() as u64 + shared.hints().len() as u64
    } else {
        handoff.remaining()
    };
    HandoffProgress {
        handed: handoff.handed(),
        remaining,
    }
}

/// Stops the node from serving once its store failed to read its data: the store answers such
/// reads as if the keys were absent, so its answers can no longer be trusted to be complete.
fn check_store(shared: &NodeShared) {
    if let Some(e) = shared.store.failure() {
        shared.fail(format!("the store could not read its data: {e}"));
    }
}

fn merge(shared: &NodeShared, digest: &[MemberDigest]) {
    let now = shared.mono_ms();
    let report = shared.change_membership(|m| m.merge(digest, now));
    log_report(shared, &report);
    if let Some(fatal) = report.fatal {
        shared.fail(fatal.to_string());
    }
    observe(shared);
}

fn log_report(shared: &NodeShared, report: &MergeReport) {
    if let Some(incarnation) = report.own_entry_contested {
        tracing::warn!(
            incarnation,
            "a peer claims a newer incarnation of this node: is another process running under our name?"
        );
    }
    for node in &report.ignored {
        tracing::warn!(node = %node, n = shared.quorum.load().n, "a node with another n was kept out of the membership");
    }
    for change in &report.revived {
        tracing::info!(node = %change.node, from = %change.from, "member alive again");
    }
    shared.log_ring_changes(&report.ring);
}

/// Sets the member gauges from the published table.
pub fn observe(shared: &NodeShared) {
    let membership: Arc<Membership> = shared.membership.load_full();
    for status in [Status::Alive, Status::Suspect, Status::Dead] {
        let count = membership
            .members()
            .filter(|m| m.status == status && !m.ring.is_final())
            .count();
        let label = super::metrics::StatusLabels {
            status: status.as_str(),
        };
        shared
            .metrics
            .members
            .get_or_create(&label)
            .set(count as i64);
    }
    for ring in [
        RingStatus::Joining,
        RingStatus::Valid,
        RingStatus::Leaving,
        RingStatus::Left,
        RingStatus::Removed,
    ] {
        let count = membership.members().filter(|m| m.ring == ring).count();
        let label = super::metrics::RingLabels {
            ring: ring.as_str(),
        };
        shared
            .metrics
            .ring_members
            .get_or_create(&label)
            .set(count as i64);
    }
    let progress = membership.own().handoff;
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    shared
        .metrics
        .handoff_remaining
        .set(gauge(progress.remaining));
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::config::NodeConfig;
    use crate::core::engine::{Engine, EngineError, MemoryEngine, Segment, Summary};
    use crate::core::hints::HintStore;
    use crate::core::ids::{ActorId, Key};
    use crate::core::store::{SetLimits, Store};

    /// The in-memory engine, except that listing a segment fails (a bad sector).
    struct Unreadable(MemoryEngine);

    impl Engine for Unreadable {
        fn locked(&self, segment: usize, f: &mut dyn FnMut(&mut dyn Segment)) {
            self.0.locked(segment, f);
        }
        fn keys_in_segment(&self, _: usize) -> Result<Vec<(Key, u64)>, EngineError> {
            Err(EngineError::Failed("bad sector".into()))
        }
        fn scan(&self, f: &mut dyn FnMut(&[u8], Summary)) -> Result<(), EngineError> {
            self.0.scan(f)
        }
        fn meta(&self, name: &str) -> Result<Option<Bytes>, EngineError> {
            self.0.meta(name)
        }
        fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), EngineError> {
            self.0.set_meta(name, value)
        }
        fn sync(&self) -> Result<(), EngineError> {
            self.0.sync()
        }
        fn durable(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_store_that_failed_to_read_stops_the_node() {
        let config = NodeConfig::new("unreadable", "127.0.0.1:0".parse().unwrap());
        let engine = Box::new(Unreadable(MemoryEngine::default()));
        let store = Store::open(engine, ActorId::new("unreadable", 1), SetLimits::NONE).unwrap();
        let shared =
            NodeShared::with_store(config, 1, Arc::new(store), HintStore::default()).unwrap();
        check_store(&shared);
        assert_eq!(shared.failure(), None, "nothing failed yet");
        assert!(shared.store.keys_in_segment(0).is_empty());
        check_store(&shared);
        let reason = shared.failure().expect("the node no longer serves");
        assert!(reason.contains("bad sector"), "{reason}");
    }
}
