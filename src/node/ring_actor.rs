//! The Ring actor: rebuilds the ring when the ring's members change and publishes it for
//! readers.
//!
//! It is told to rebuild by `NodeShared::change_membership`, never by polling, and it
//! rebuilds from the published membership, not from the message, so a rebuild request lost
//! while it was down costs nothing: a restarted Ring republishes at once. The native client's
//! view publishes its rings through the same `publish_ring`.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::shared::{NodeShared, RingMsg, RingView};
use crate::core::ids::NodeId;
use crate::core::ring::Ring;

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
    publish_ring(shared, shared.membership.load().ring_layout());
}

/// Builds the ring of `layout` and publishes it to readers as the next version; returns
/// whether it did. A layout that makes no ring leaves the previous ring in place: peers'
/// vnode counts come from gossip, and a bad one must not take the ring down. A node's Ring
/// actor and a native client's view both publish this way.
pub(super) fn publish_ring(shared: &NodeShared, layout: Vec<(NodeId, u32)>) -> bool {
    match Ring::build(layout) {
        Ok(ring) => {
            let version = shared.ring.load().version + 1;
            tracing::info!(nodes = ring.len(), version, "ring rebuilt");
            shared.ring.store(Arc::new(RingView { ring, version }));
            shared.metrics.ring_version.set(version as i64);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "ring rebuild refused; keeping the previous ring");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use crate::core::membership::{MemberDigest, Status};

    fn peer(name: &str) -> MemberDigest {
        MemberDigest {
            node: NodeId::new(name),
            cluster_addr: "127.0.0.9:1".into(),
            http_addr: String::new(),
            vnodes: 16,
            status: Status::Alive,
            heartbeat: 1,
            incarnation: 1,
            ring: crate::core::membership::RingStatus::Valid,
            n: crate::core::membership::DEFAULT_N,
            handoff: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_restarted_ring_republishes_membership_it_was_never_told_about() {
        let config = NodeConfig::new("ring-test", "127.0.0.1:0".parse().unwrap());
        let shared = NodeShared::new(config, 1).unwrap();
        let (ring, handle) = Actor::spawn(None, RingActor, Arc::clone(&shared))
            .await
            .unwrap();
        assert_eq!(shared.ring.load().ring.len(), 1);
        ring.kill();
        handle.await.unwrap();

        // Membership changes while no Ring actor runs: the rebuild request is lost.
        let mut membership = crate::core::membership::Membership::clone(&shared.membership.load());
        membership.merge(&[peer("other")], 0);
        shared.membership.store(Arc::new(membership));
        assert_eq!(
            shared.ring.load().ring.len(),
            1,
            "readers still see the old ring"
        );

        let (ring, handle) = Actor::spawn(None, RingActor, Arc::clone(&shared))
            .await
            .unwrap();
        let view = shared.ring.load();
        assert_eq!(
            view.ring.len(),
            2,
            "pre_start published the current membership"
        );
        assert_eq!(view.version, 2);
        ring.stop(None);
        handle.await.unwrap();
    }
}
