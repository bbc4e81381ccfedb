//! The Ring actor: rebuilds the ring when membership changes and publishes it for readers.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;

use super::shared::{NodeShared, RingView};
use crate::core::ring::Ring;

/// Messages of the Ring actor.
#[derive(RactorMessage, Debug)]
pub enum RingMsg {
    /// The ring members changed: rebuild from the published membership.
    Rebuild,
}

/// Owns the ring snapshot readers use.
#[derive(Clone)]
pub struct RingActor;

impl Actor for RingActor {
    type Msg = RingMsg;
    type State = Arc<NodeShared>;
    type Arguments = Arc<NodeShared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<RingMsg>,
        shared: Arc<NodeShared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A restarted Ring republishes at once, so readers never keep a ring that a rebuild
        // request lost while the actor was down would have replaced.
        publish(&shared);
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RingMsg>,
        msg: RingMsg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RingMsg::Rebuild => publish(shared),
        }
        Ok(())
    }
}

/// Builds the ring from the published membership and swaps it in.
fn publish(shared: &NodeShared) {
    let layout = shared.membership.load().ring_layout();
    match Ring::build(layout) {
        Ok(ring) => {
            let version = shared.ring.load().version + 1;
            tracing::info!(nodes = ring.len(), version, "ring rebuilt");
            shared.ring.store(Arc::new(RingView { ring, version }));
            shared.metrics.ring_version.set(version as i64);
        }
        // Peers' vnode counts come from gossip; a bad one must not take the ring down.
        Err(e) => tracing::warn!(error = %e, "ring rebuild refused; keeping the previous ring"),
    }
}
