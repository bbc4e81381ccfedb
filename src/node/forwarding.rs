//! Writes handed to a peer's Coordinator, batched per peer (see [`super::batch`]): by nodes
//! outside a key's owners and by native clients, which send every write this way.
//!
//! A batch is answered when its last write is, so one slow write delays the others of its
//! batch; writes to one coordinator take about the same time (each waits for its W acks).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::batch::{BatchAnswer, BatchLimits, BatchSender, LINK_QUEUE, PeerLinks, send_batch};
use super::peers::Peers;
use super::wire::{CoordinatorMsg, ForwardedWrite, Payload};
use crate::config::MAX_FRAME_BYTES;
use crate::core::ids::NodeId;
use crate::core::quorum::Failure;
use crate::model::{ClientError, Context};

/// Limits of one batch of forwarded writes: as for replica batches, a quarter of the frame.
pub const FORWARD_BATCH: BatchLimits = BatchLimits {
    max_requests: 128,
    max_bytes: MAX_FRAME_BYTES / 4,
    max_queued: LINK_QUEUE,
};

/// The batching links to every peer's Coordinator, made on first use.
pub struct ForwardLinks {
    peers: Arc<Peers>,
    links: PeerLinks<CoordinatorSender>,
}

impl ForwardLinks {
    /// Links that find each peer's Coordinator in `peers` when they send; `full` counts the
    /// writes a full link queue refused.
    pub fn new(peers: Arc<Peers>, full: Counter) -> Self {
        ForwardLinks {
            peers,
            links: PeerLinks::new(FORWARD_BATCH, full),
        }
    }

    /// Has `node` coordinate `write`; the outer error when it could not be asked or did not
    /// answer by `deadline` (the write may or may not have been applied then).
    pub fn write(
        &self,
        node: &NodeId,
        write: ForwardedWrite,
        deadline: Instant,
    ) -> impl Future<Output = Result<Result<Context, ClientError>, Failure>> + Send + use<> {
        let size = write.size_bound();
        let link = self.links.link(node, || CoordinatorSender {
            peers: Arc::clone(&self.peers),
            node: node.clone(),
        });
        link.call(write, size, deadline)
    }
}

/// Sends batches to one peer's Coordinator, whichever actor serves that peer right now.
struct CoordinatorSender {
    peers: Arc<Peers>,
    node: NodeId,
}

impl BatchSender for CoordinatorSender {
    type Request = ForwardedWrite;
    type Reply = Result<Context, ClientError>;

    fn send(&mut self, writes: &[ForwardedWrite], timeout: Duration) -> BatchAnswer<Self::Reply> {
        send_batch(
            self.peers.coordinator(&self.node),
            &self.node,
            "coordinator",
            timeout,
            |port| CoordinatorMsg::WriteBatch(Payload::ok(writes.to_vec()), port),
        )
    }
}
