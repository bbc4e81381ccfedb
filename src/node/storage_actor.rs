//! The Storage actor: the replica side of reads and writes, reachable from every peer.
//!
//! The data lives in the shared [`crate::core::store::Store`], not in the actor, so a
//! restarted Storage actor serves everything that was stored before it crashed.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, pg};

use super::peers::Role;
use super::shared::NodeShared;
use super::wire::{Payload, ReplicaPut, StorageMsg};
use crate::core::version::VersionSet;

/// Serves replica reads and writes.
#[derive(Clone)]
pub struct StorageActor;

impl Actor for StorageActor {
    type Msg = StorageMsg;
    type State = Arc<NodeShared>;
    type Arguments = Arc<NodeShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<StorageMsg>,
        shared: Arc<NodeShared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        pg::join(Role::Storage.group().to_string(), vec![myself.get_cell()]);
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<StorageMsg>,
        msg: StorageMsg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StorageMsg::Get(Payload(key), reply) => {
                let answer = key.map(|key| local_read(shared, &key));
                // The caller may have given up already; nothing to do then.
                let _ = reply.send(Payload(answer));
            }
            StorageMsg::Put(Payload(put), reply) => {
                let answer = put.map(|put| apply(shared, put));
                let _ = reply.send(Payload(answer));
            }
            StorageMsg::Ping(payload, reply) => {
                let _ = reply.send(payload);
            }
        }
        Ok(())
    }
}

/// What this node holds for `key`: its own versions and any it keeps as hints.
pub fn local_read(shared: &NodeShared, key: &[u8]) -> VersionSet {
    let mut set = shared.store.get(key);
    set.merge(&shared.hints().versions_for(key));
    set
}

/// Applies a replica write: a merge, or a hint kept for the owner this node stands in for.
pub fn apply(shared: &NodeShared, put: ReplicaPut) {
    match put.hint_for {
        Some(owner) if owner != shared.me => {
            let mut hints = shared.hints();
            hints.add(owner, put.key, put.versions, shared.mono_ms());
            shared.metrics.hints_pending.set(hints.len() as i64);
        }
        _ => {
            shared.store.merge(&put.key, &put.versions);
        }
    }
}
