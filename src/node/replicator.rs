//! The Replicator actor: moves data to the nodes that should hold it.
//!
//! Every interval it drains hints ([`crate::core::drain`]) and hands off keys this node no
//! longer owns ([`crate::core::handoff`]); both send through the batched per-peer links. A
//! hint leaves the store, and a handed-off key leaves this node, only after every destination
//! acknowledged it and none has left or been removed meanwhile; a failed or timed-out delivery
//! is retried on a later interval. Delivery is a merge, so a replay changes nothing. The hint
//! store and the handoff's progress live in [`NodeShared`], and the tasks that deliver report
//! there directly, so a restarted actor loses nothing and leaves nothing in flight forever.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;

use super::shared::NodeShared;
use crate::core::drain::{self, DrainScope};
use crate::core::encoded_set::EncodedSet;
use crate::core::membership::RingStatus;
use crate::core::write::Outgoing;

const DRAIN_EVERY: Duration = Duration::from_millis(500);
/// Hints taken per owner, and keys picked by the handoff, per interval.
const BATCH: usize = 256;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages of the Replicator.
#[derive(RactorMessage, Debug)]
pub enum ReplicatorMsg {
    /// Time to hand hints back and keys over.
    Drain,
}

/// Drains hints and hands keys off.
#[derive(Clone)]
pub struct ReplicatorActor;

impl Actor for ReplicatorActor {
    type Msg = ReplicatorMsg;
    type State = Arc<NodeShared>;
    type Arguments = Arc<NodeShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<ReplicatorMsg>,
        shared: Arc<NodeShared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(DRAIN_EVERY, || ReplicatorMsg::Drain);
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<ReplicatorMsg>,
        msg: ReplicatorMsg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ReplicatorMsg::Drain => {
                // A node that left or was removed must not push old data back; a joining node
                // does not know its place yet.
                let status = shared.ring_status();
                if matches!(status, RingStatus::Valid | RingStatus::Leaving) {
                    drain_hints(shared, status == RingStatus::Leaving);
                    hand_off(shared);
                }
            }
        }
        Ok(())
    }
}

/// Sends every write of `sends` and waits for all; true when every one was acknowledged.
/// A write addressed to this node is applied to its own store and counts once synced.
async fn deliver_all(shared: &NodeShared, sends: Vec<Outgoing>) -> bool {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let (elsewhere, here) = drain::apply_here(&shared.local(), sends);
    let acks = elsewhere
        .into_iter()
        .map(|out| shared.replicas.put(&out.to, out.put, deadline));
    let kept_here = async {
        match here {
            None => true,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "a hint for this node's own store was refused");
                false
            }
            Some(Ok(())) => shared.sync_store().await.is_ok(),
        }
    };
    let (acks, kept_here) = tokio::join!(join_all(acks), kept_here);
    kept_here && acks.into_iter().all(|ack| ack.is_ok())
}

fn drain_hints(shared: &Arc<NodeShared>, leaving: bool) {
    let deliveries = {
        let membership = shared.membership.load();
        let gone = drain::gone_in(&membership);
        shared.with_view(|view, _| {
            let scope = DrainScope {
                view: *view,
                gone: &gone,
                leaving,
            };
            drain::plan(&mut shared.hints(), &scope, BATCH)
        })
    };
    for delivery in deliveries {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let acked = deliver_all(&shared, delivery.sends.clone()).await;
            // Judged by the membership as it is once the answers are in.
            let membership = shared.membership.load();
            let gone = drain::gone_in(&membership);
            if drain::settle(&mut shared.hints(), &delivery, acked, &gone) {
                shared.metrics.hints_drained.inc();
            } else if !acked {
                tracing::debug!(owner = %delivery.owner, "hint delivery failed; will retry");
            }
        });
    }
}

/// Sends keys this node no longer owns to the replicas that should hold them; a key is dropped
/// here once every one of them acknowledged it.
fn hand_off(shared: &Arc<NodeShared>) {
    let transfers = shared.with_view(|view, ring| {
        shared
            .handoff()
            .scan(&shared.store, view, ring.version, BATCH)
    });
    for transfer in transfers {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let versions = EncodedSet::encode(&transfer.versions);
            let sends = transfer
                .targets
                .iter()
                .map(|target| Outgoing {
                    to: target.node.clone(),
                    put: crate::core::replica::ReplicaPut {
                        key: transfer.key.clone(),
                        versions: versions.clone(),
                        hint_for: target.stands_in_for.clone(),
                    },
                })
                .collect();
            let acked = deliver_all(&shared, sends).await;
            let membership = shared.membership.load();
            let gone = drain::gone_in(&membership);
            let finished = shared.with_view(|view, _| {
                shared
                    .handoff()
                    .finish(&shared.store, view, &transfer, acked, &gone)
            });
            if finished {
                shared.metrics.handoffs.inc();
            }
        });
    }
}
