//! The Storage actor: the replica side of reads and writes, reachable from every peer.
//!
//! The data lives in the shared [`crate::core::store::Store`], not in the actor, so a
//! restarted Storage actor serves everything that was stored before it crashed. What a
//! request does is decided in [`crate::core::replica`].

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, pg};

use super::peers::Role;
use super::replicas::STORAGE_REPLY_BYTES;
use super::shared::NodeShared;
use super::wire::{Payload, ReplicaReply, StorageMsg};

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
            StorageMsg::Ping(payload, reply) => {
                // The caller may have given up already; nothing to do then.
                let _ = reply.send(payload);
            }
            StorageMsg::Batch(batch, reply) => {
                let answer = batch.decode().map(|requests| {
                    let local = shared.local();
                    let replies = local.serve(requests, STORAGE_REPLY_BYTES);
                    // A member refuses only the hints its full hint store cannot take.
                    if local.member {
                        let refused = replies
                            .iter()
                            .filter(|r| matches!(r, ReplicaReply::Refused(_)))
                            .count();
                        shared.metrics.hints_refused.inc_by(refused as u64);
                    }
                    replies
                });
                let stored = |replies: &Vec<ReplicaReply>| {
                    replies.iter().any(|r| matches!(r, ReplicaReply::Stored))
                };
                if !shared.ack_after_sync() || !answer.as_ref().is_ok_and(stored) {
                    let _ = reply.send(Payload(answer));
                    return Ok(());
                }
                // Answered by the fsync thread once an fsync that started after the batch was
                // applied has finished; the actor goes on with the next batch meanwhile, which
                // shares that fsync or the following one.
                shared.after_sync(move |synced| {
                    let answer = answer.map(|replies| match synced {
                        Ok(()) => replies,
                        Err(e) => unsynced(replies, &e.to_string()),
                    });
                    let _ = reply.send(Payload(answer));
                });
            }
        }
        Ok(())
    }
}

/// The replies of a batch whose fsync failed: its writes are no acks.
fn unsynced(replies: Vec<ReplicaReply>, why: &str) -> Vec<ReplicaReply> {
    replies
        .into_iter()
        .map(|r| match r {
            ReplicaReply::Stored => ReplicaReply::Refused(format!("not made durable: {why}")),
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::config::NodeConfig;
    use crate::core::ids::Key;
    use crate::core::replica::{ReplicaPut, ReplicaRequest};
    use crate::core::vclock::VClock;
    use crate::core::version::VersionSet;
    use crate::node::wire::set_size_bound;

    fn node(name: &str) -> Arc<NodeShared> {
        let config = NodeConfig::new(name, "127.0.0.1:1".parse().unwrap());
        NodeShared::new(config, 1).unwrap()
    }

    fn written(shared: &NodeShared, key: &'static [u8], value: &[u8]) -> VersionSet {
        let key = Key::from_static(key);
        let value = Some(Bytes::copy_from_slice(value));
        let coordinated = shared
            .store
            .coordinate(&key, &VClock::new(), value, 1)
            .unwrap();
        coordinated.versions
    }

    #[test]
    fn a_batch_is_served_in_order_until_the_answer_would_outgrow_its_budget() {
        let shared = node("n1");
        let big = written(&shared, b"big", &[1u8; 1000]);
        let small = written(&shared, b"small", b"x");
        // Each write from a coordinator of its own: siblings, so each applied one shows.
        let put = |value: &[u8]| {
            let source = node(&format!("c{}", value[1]));
            ReplicaPut {
                key: Key::from_static(b"new"),
                versions: written(&source, b"new", value),
                hint_for: None,
            }
        };
        let batch = |put: ReplicaPut| {
            vec![
                ReplicaRequest::Get(Key::from_static(b"small")),
                ReplicaRequest::Put(put),
                ReplicaRequest::Get(Key::from_static(b"big")),
                ReplicaRequest::Get(Key::from_static(b"absent")),
            ]
        };
        let all = shared.local().serve(batch(put(b"v1")), usize::MAX);
        assert_eq!(
            all,
            vec![
                ReplicaReply::Got(small.clone()),
                ReplicaReply::Stored,
                ReplicaReply::Got(big.clone()),
                ReplicaReply::Got(VersionSet::new()),
            ]
        );
        assert_eq!(shared.store.get(b"new").len(), 1);

        // Room for the small read and the ack, not for the big read: the rest is left out.
        let budget = set_size_bound(&small) + 2 + 10;
        assert!(budget < set_size_bound(&big));
        let prefix = shared.local().serve(batch(put(b"v2")), budget);
        assert_eq!(
            prefix,
            vec![ReplicaReply::Got(small.clone()), ReplicaReply::Stored]
        );
        assert_eq!(
            shared.store.get(b"new").len(),
            2,
            "the answered write was applied"
        );

        // The first request is always served, however large its answer.
        let first = shared
            .local()
            .serve(vec![ReplicaRequest::Get(Key::from_static(b"big"))], 1);
        assert_eq!(first, vec![ReplicaReply::Got(big)]);

        // A write after a read that was left out is left out too, unapplied.
        let reads_first = vec![
            ReplicaRequest::Get(Key::from_static(b"small")),
            ReplicaRequest::Get(Key::from_static(b"big")),
            ReplicaRequest::Put(put(b"v3")),
        ];
        assert_eq!(shared.local().serve(reads_first, budget).len(), 1);
        assert_eq!(shared.store.get(b"new").len(), 2);
    }
}
