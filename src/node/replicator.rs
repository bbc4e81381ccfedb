//! The Replicator actor: moves data to the nodes that should hold it.
//!
//! Hints go back to their owners once they are reachable: a hint leaves the store only after
//! its owner acknowledged the merge, and a failed or timed-out delivery returns it to the
//! waiting state. Keys this node holds but no longer owns (the ring changed) are handed to
//! their current owners ([`crate::core::handoff`]). Delivery is a merge, so a replay changes
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;

use super::shared::NodeShared;
use super::wire::{Payload, ReplicaPut, StorageMsg};
use crate::core::handoff::Handoff;
use crate::core::ids::Key;

const DRAIN_EVERY: Duration = Duration::from_millis(500);
const BATCH: usize = 64;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages of the Replicator.
#[derive(RactorMessage, Debug)]
pub enum ReplicatorMsg {
    /// Time to hand hints back and keys over to reachable owners.
    Drain,
    /// A handoff of a key ended: every owner acked it at this digest, or not.
    HandedOff(Key, u64, bool),
}

/// The Replicator's state.
pub struct ReplicatorState {
    shared: Arc<NodeShared>,
    handoff: Handoff,
}

/// Drains hints.
#[derive(Clone)]
pub struct ReplicatorActor;

impl Actor for ReplicatorActor {
    type Msg = ReplicatorMsg;
    type State = ReplicatorState;
    type Arguments = Arc<NodeShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<ReplicatorMsg>,
        shared: Arc<NodeShared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(DRAIN_EVERY, || ReplicatorMsg::Drain);
        Ok(ReplicatorState {
            shared,
            handoff: Handoff::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ReplicatorMsg>,
        msg: ReplicatorMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ReplicatorMsg::Drain => {
                drain(&state.shared);
                hand_off(state, &myself);
            }
            ReplicatorMsg::HandedOff(key, digest, true) => {
                state.handoff.done(&key, digest);
                state.shared.metrics.handoffs.inc();
            }
            ReplicatorMsg::HandedOff(key, _, false) => state.handoff.failed(&key),
        }
        Ok(())
    }
}

/// Sends keys this node no longer owns to their owners; a key counts as handed off once
/// every owner acked it.
fn hand_off(state: &mut ReplicatorState, myself: &ActorRef<ReplicatorMsg>) {
    let shared = &state.shared;
    let ring = shared.ring.load();
    let n = shared.quorum.load().n;
    let transfers = state.handoff.scan(
        &shared.store,
        &ring.ring,
        ring.version,
        &shared.me,
        n,
        BATCH,
    );
    for transfer in transfers {
        let (shared, myself) = (Arc::clone(shared), myself.clone());
        tokio::spawn(async move {
            let versions = shared.store.get(&transfer.key);
            let deliveries = transfer.owners.iter().map(|owner| {
                let put = ReplicaPut {
                    key: transfer.key.clone(),
                    versions: versions.clone(),
                    hint_for: None,
                };
                let storage = shared
                    .peers
                    .storage(owner)
                    .filter(|_| shared.is_live(owner));
                async move {
                    let Some(storage) = storage else {
                        return false;
                    };
                    let answer = storage
                        .call(
                            |reply| StorageMsg::Put(Payload::ok(put), reply),
                            Some(DELIVERY_TIMEOUT),
                        )
                        .await;
                    matches!(answer, Ok(CallResult::Success(Payload(Ok(())))))
                }
            });
            let all_acked = join_all(deliveries).await.into_iter().all(|acked| acked);
            let _ = myself.cast(ReplicatorMsg::HandedOff(
                transfer.key,
                transfer.digest,
                all_acked,
            ));
        });
    }
}

fn drain(shared: &Arc<NodeShared>) {
    let owners = shared.hints().owners();
    for owner in owners {
        if !shared.is_live(&owner) {
            continue;
        }
        let Some(storage) = shared.peers.storage(&owner) else {
            continue;
        };
        let batch = shared.hints().take(&owner, BATCH);
        if batch.is_empty() {
            continue;
        }
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let deliveries = batch.into_iter().map(|hint| {
                let storage = storage.clone();
                async move {
                    let put = ReplicaPut {
                        key: hint.key.clone(),
                        versions: hint.versions.clone(),
                        hint_for: None,
                    };
                    let answer = storage
                        .call(
                            |reply| StorageMsg::Put(Payload::ok(put), reply),
                            Some(DELIVERY_TIMEOUT),
                        )
                        .await;
                    let acked = matches!(answer, Ok(CallResult::Success(Payload(Ok(())))));
                    (hint.id, acked)
                }
            });
            let results = join_all(deliveries).await;
            let mut hints = shared.hints();
            let mut failed = Vec::new();
            for (id, acked) in results {
                if acked {
                    if hints.ack(&owner, id) {
                        shared.metrics.hints_drained.inc();
                    }
                } else {
                    failed.push(id);
                }
            }
            hints.release(&owner, &failed);
            shared.metrics.hints_pending.set(hints.len() as i64);
            if !failed.is_empty() {
                tracing::debug!(owner = %owner, failed = failed.len(), "hint delivery failed; will retry");
            }
        });
    }
}
