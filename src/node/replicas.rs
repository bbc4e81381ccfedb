//! Reads and writes sent to peers' Storage actors, batched per peer (see [`super::batch`]).
//!
//! Everything that asks a remote replica for a key's set or sends it one goes through
//! [`ReplicaLinks`], so coordinators in a node and in a client process share the batching.

use std::future::{Future, ready};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::batch::{
    BatchAnswer, BatchError, BatchLimits, BatchSender, LINK_QUEUE, Link, PeerLinks, send_batch,
};
use super::peers::Peers;
use super::wire::{Encoded, ReplicaPut, ReplicaReply, ReplicaRequest, StorageMsg};
use crate::config::MAX_FRAME_BYTES;
use crate::core::ids::{Key, NodeId};
use crate::core::quorum::Failure;
use crate::core::version::VersionSet;

/// Limits of one batch to a Storage actor. A quarter of the frame limit leaves room for the
/// protobuf framing and for the size bounds being bounds; the count keeps one batch from
/// holding the peer's Storage actor (which serves it in one go) for long.
pub const STORAGE_BATCH: BatchLimits = BatchLimits {
    max_requests: 128,
    max_bytes: MAX_FRAME_BYTES / 4,
    max_queued: LINK_QUEUE,
};

/// Largest answer a Storage actor puts into one reply (by the replies' size bounds); it
/// leaves the rest of a batch out, for the sender to ask again.
pub const STORAGE_REPLY_BYTES: usize = MAX_FRAME_BYTES / 4;

/// The batching links to every peer's Storage actor, made on first use.
pub struct ReplicaLinks {
    peers: Arc<Peers>,
    // Reads and writes travel to a peer in batches of their own: on disk, a replica answers
    // a batch that stored a write only once an fsync covers it, and a read in that batch
    // would wait for the fsync too (over HTTP, a read's p50 under `--fsync always` fell from
    // about 8.6 to 6.6 ms when they parted: medians of five runs each, BENCHMARKS.md).
    writes: PeerLinks<StorageSender>,
    reads: PeerLinks<StorageSender>,
}

impl ReplicaLinks {
    /// Links that find each peer's Storage actor in `peers` when they send; `full` counts the
    /// requests a full link queue refused.
    pub fn new(peers: Arc<Peers>, full: Counter) -> Self {
        ReplicaLinks {
            peers,
            writes: PeerLinks::new(STORAGE_BATCH, full.clone()),
            reads: PeerLinks::new(STORAGE_BATCH, full),
        }
    }

    /// Reads `node`'s set for `key`, waiting until `deadline` at most.
    pub fn get(
        &self,
        node: &NodeId,
        key: Key,
        deadline: Instant,
    ) -> impl Future<Output = Result<VersionSet, Failure>> + Send + use<> {
        let call = self.call(&self.reads, node, ReplicaRequest::Get(key), deadline);
        async move {
            match call.await? {
                ReplicaReply::Got(set) => set.decode().map_err(|e| {
                    tracing::warn!(error = %e, "a replica answered a read with an undecodable set");
                    Failure::Error
                }),
                ReplicaReply::Stored | ReplicaReply::Refused(_) => Err(Failure::Error),
            }
        }
    }

    /// Sends `put` to `node`; `Ok` is its ack. The put is queued at once and sent before
    /// `deadline` even if the future is dropped: nobody needs to wait for a write to reach
    /// its replica.
    pub fn put(
        &self,
        node: &NodeId,
        put: ReplicaPut,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), Failure>> + Send + use<> {
        let call = self.call(&self.writes, node, ReplicaRequest::Put(put), deadline);
        async move { stored(call.await?) }
    }

    /// As [`ReplicaLinks::put`], without a timer of its own: the ack or failure may come
    /// after `deadline`, for a caller that bounds its wait for all of a write's replicas at
    /// once.
    pub fn put_untimed(
        &self,
        node: &NodeId,
        put: ReplicaPut,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), Failure>> + Send + use<> {
        let request = ReplicaRequest::Put(put);
        let size = request.size_bound();
        let call = self
            .link(&self.writes, node)
            .call_untimed(request, size, deadline);
        async move { stored(call.await?) }
    }

    /// Queues `put` for `node`, to be sent before `deadline`, without waiting for its ack.
    pub fn send_put(&self, node: &NodeId, put: ReplicaPut, deadline: Instant) {
        // The put is queued when the call is made; its ack is not needed.
        drop(self.put_untimed(node, put, deadline));
    }

    /// Requests and RPCs sent to each peer so far: (peer, batches, requests).
    pub fn stats(&self) -> Vec<(NodeId, u64, u64)> {
        let mut stats = self.writes.stats();
        for (node, batches, requests) in self.reads.stats() {
            match stats.iter_mut().find(|(n, _, _)| *n == node) {
                Some((_, b, r)) => {
                    *b += batches;
                    *r += requests;
                }
                None => stats.push((node, batches, requests)),
            }
        }
        stats.sort();
        stats
    }

    fn call(
        &self,
        links: &PeerLinks<StorageSender>,
        node: &NodeId,
        request: ReplicaRequest,
        deadline: Instant,
    ) -> impl Future<Output = Result<ReplicaReply, Failure>> + Send + use<> {
        let size = request.size_bound();
        self.link(links, node).call(request, size, deadline)
    }

    fn link(&self, links: &PeerLinks<StorageSender>, node: &NodeId) -> Arc<Link<StorageSender>> {
        links.link(node, || StorageSender {
            peers: Arc::clone(&self.peers),
            node: node.clone(),
        })
    }
}

/// A replica's answer to a put: `Ok` only when it stored the write.
fn stored(reply: ReplicaReply) -> Result<(), Failure> {
    match reply {
        ReplicaReply::Stored => Ok(()),
        ReplicaReply::Got(_) | ReplicaReply::Refused(_) => Err(Failure::Error),
    }
}

/// Sends batches to one peer's Storage actor, whichever actor serves that peer right now.
struct StorageSender {
    peers: Arc<Peers>,
    node: NodeId,
}

impl BatchSender for StorageSender {
    type Request = ReplicaRequest;
    type Reply = ReplicaReply;

    fn send(
        &mut self,
        requests: &[ReplicaRequest],
        timeout: Duration,
    ) -> BatchAnswer<ReplicaReply> {
        let batch = match Encoded::encode(requests) {
            Ok(batch) => batch,
            Err(e) => return Box::pin(ready(Err(BatchError::Failed(e)))),
        };
        send_batch(
            self.peers.storage(&self.node),
            &self.node,
            "storage actor",
            timeout,
            |port| StorageMsg::Batch(batch, port),
        )
    }

    fn must_deliver(request: &ReplicaRequest) -> bool {
        // A write's caller may be answered by the other replicas before this one acks; the
        // replica gets it all the same. A read nobody waits for is not worth sending.
        matches!(request, ReplicaRequest::Put(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::encoded_set::EncodedSet;
    use crate::core::version::VersionSet;

    #[test]
    fn replica_puts_must_be_delivered_and_reads_need_not() {
        let key = Key::from_static(b"k");
        let put = ReplicaPut {
            key: key.clone(),
            versions: EncodedSet::encode(&VersionSet::new()),
            hint_for: None,
        };
        assert!(StorageSender::must_deliver(&ReplicaRequest::Put(put)));
        assert!(!StorageSender::must_deliver(&ReplicaRequest::Get(key)));
    }
}
