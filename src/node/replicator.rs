//! The Replicator actor: hands hinted writes back to their owners once they are reachable.
//!
//! A hint leaves the store only after its owner acknowledged the merge; a failed or timed-out
//! delivery returns it to the waiting state. Delivery is a merge, so a replay changes nothing.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;

use super::shared::NodeShared;
use super::wire::{Payload, ReplicaPut, StorageMsg};

const DRAIN_EVERY: Duration = Duration::from_millis(500);
const BATCH: usize = 64;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages of the Replicator.
#[derive(RactorMessage, Debug)]
pub enum ReplicatorMsg {
    /// Time to hand hints back to reachable owners.
    Drain,
}

/// Drains hints.
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
            ReplicatorMsg::Drain => drain(shared),
        }
        Ok(())
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
