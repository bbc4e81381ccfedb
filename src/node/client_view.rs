//! The native client's view of the cluster: every interval it asks a connected node for its
//! membership, runs failure detection on what it hears, and publishes the membership and the
//! ring that the client's requests route by.
//!
//! The client sends an empty digest, so nodes never add it to their membership: it holds no
//! ring tokens, and its comings and goings never move the ring or start a handoff.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use rand::seq::IndexedRandom;

use super::ring_actor::publish_ring;
use super::shared::NodeShared;
use super::wire::{GossipDigest, GossipMsg, Payload, Vouched, call};
use crate::core::ids::NodeId;
use crate::core::membership::{Fatal, MemberDigest, Membership};

/// Messages of the client's view actor.
#[derive(RactorMessage, Debug)]
pub enum ViewMsg {
    /// Time to ask a node for its membership.
    Refresh,
    /// A node's membership digest arrived.
    Digest(Vec<MemberDigest>),
}

/// Keeps a native client's membership and ring fresh.
#[derive(Clone)]
pub struct ClientViewActor;

/// The view actor's state.
pub struct ViewState {
    shared: Arc<NodeShared>,
    membership: Membership,
    layout: Vec<(NodeId, u32)>,
}

impl Actor for ClientViewActor {
    type Msg = ViewMsg;
    type State = ViewState;
    type Arguments = Arc<NodeShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<ViewMsg>,
        shared: Arc<NodeShared>,
    ) -> Result<ViewState, ActorProcessingErr> {
        let membership = Membership::clone(&shared.membership.load());
        let interval = Duration::from_millis(shared.config.gossip.interval_ms);
        myself.send_interval(interval, || ViewMsg::Refresh);
        let mut state = ViewState {
            shared,
            membership,
            layout: Vec::new(),
        };
        state.publish();
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<ViewMsg>,
        msg: ViewMsg,
        state: &mut ViewState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ViewMsg::Refresh => {
                state.membership.detect(state.shared.mono_ms());
                state.publish();
                state.ask_a_node(myself);
            }
            ViewMsg::Digest(digest) => {
                let report = state.membership.merge(&digest, state.shared.mono_ms());
                if let Some(Fatal::ReplicaMismatch { cluster, .. }) = report.fatal {
                    // N is the cluster's: the client takes it and routes as the nodes do.
                    state.adopt_n(cluster);
                    state.membership.merge(&digest, state.shared.mono_ms());
                }
                state.publish();
            }
        }
        Ok(())
    }
}

impl ViewState {
    /// Takes the cluster's N, keeping W and R within it.
    fn adopt_n(&mut self, n: u32) {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let mut quorum = **self.shared.quorum.load();
        quorum.n = n;
        quorum.w = quorum.w.min(n);
        quorum.r = quorum.r.min(n);
        if quorum.validate().is_err() {
            tracing::warn!(n, "the cluster's n cannot be used by this client");
            return;
        }
        tracing::info!(n, "the client takes the cluster's n");
        self.shared.quorum.store(Arc::new(quorum));
        self.membership = self
            .membership
            .clone()
            .with_n(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Asks a random connected node for its table, off the handler.
    fn ask_a_node(&self, myself: ActorRef<ViewMsg>) {
        let nodes = self.shared.peers.nodes();
        let Some(gossip) = nodes
            .choose(&mut rand::rng())
            .and_then(|node| self.shared.peers.gossip(node))
        else {
            return;
        };
        let timeout = Duration::from_millis(self.shared.config.gossip.interval_ms.max(500));
        // An empty digest only asks: no token is needed for it.
        let ask = Vouched {
            token: None,
            body: GossipDigest {
                from: self.shared.me.clone(),
                members: Vec::new(),
            },
        };
        tokio::spawn(async move {
            let exchange = |reply| GossipMsg::Exchange(Payload::ok(ask), reply);
            if let Ok(digest) = call(&gossip, exchange, timeout).await {
                let _ = myself.cast(ViewMsg::Digest(digest));
            }
        });
    }

    /// Publishes the membership, and a new ring when its members changed. The client's own
    /// entry is never on it.
    fn publish(&mut self) {
        self.shared
            .membership
            .store(Arc::new(self.membership.clone()));
        let me = &self.shared.me;
        let layout: Vec<(NodeId, u32)> = self
            .membership
            .ring_layout()
            .into_iter()
            .filter(|(node, _)| node != me)
            .collect();
        if layout != self.layout && publish_ring(&self.shared, layout.clone()) {
            self.layout = layout;
        }
    }
}
