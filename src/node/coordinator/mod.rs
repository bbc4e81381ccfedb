//! Coordination of client requests: where a request is served, the fan-out to replicas, the
//! quorum, and read repair.
//!
//! A write is coordinated by a node among the key's live top N (or, if none is live, the first
//! live fallback); any other node forwards it there. Reads are coordinated wherever they
//! arrive: they make no dot, so forwarding would only add a hop. The decisions are the pure
//! [`WriteRun`](crate::core::write::WriteRun) and [`ReadRun`](crate::core::read::ReadRun)'s;
//! this module sends what they ask for through the batching links and feeds the answers back.
//! One file per concept: the write path ([`write`](mod@write)), the read path
//! ([`read`](mod@read)), read repair (`repair`), writes handed to another node (`forward`) and
//! served for one (`forwarded`), the fan-out driver (`fanout`) and the request spans (`spans`). The Coordinator actor here serves what other processes hand to
//! this node: forwarded writes, and native clients' reads.

mod fanout;
mod forward;
mod forwarded;
mod read;
mod repair;
mod spans;
mod write;

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use ractor::{Actor, ActorProcessingErr, ActorRef, pg};

pub(super) use self::forward::forward;
pub use self::read::{read, read_set};
pub use self::write::{delete, delete_context, write};
use super::peers::Role;
use super::shared::NodeShared;
use super::wire::{CoordinatorMsg, Payload};
use crate::model::{ClientError, ReadOptions};

/// Serves the writes that other nodes and native clients hand to this node, and the reads
/// native clients send through it.
#[derive(Clone)]
pub struct CoordinatorActor;

impl Actor for CoordinatorActor {
    type Msg = CoordinatorMsg;
    type State = Arc<NodeShared>;
    type Arguments = Arc<NodeShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        shared: Arc<NodeShared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        pg::join(
            Role::Coordinator.group().to_string(),
            vec![myself.get_cell()],
        );
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<CoordinatorMsg>,
        msg: CoordinatorMsg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CoordinatorMsg::WriteBatch(Payload(writes), reply) => {
                // Off the handler: the fan-outs wait on the network.
                let shared = Arc::clone(shared);
                tokio::spawn(async move {
                    let answer = match writes {
                        // Ordered as the batch, and each write polled only when its own
                        // answers come (a `join_all` of more than a few would poll them all
                        // on every one).
                        Ok(writes) => Ok(writes
                            .into_iter()
                            .map(|write| forwarded::serve(&shared, write))
                            .collect::<FuturesOrdered<_>>()
                            .collect::<Vec<_>>()
                            .await),
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(Payload(answer));
                });
            }
            CoordinatorMsg::Read(Payload(read), reply) => {
                let shared = Arc::clone(shared);
                tokio::spawn(async move {
                    let answer = match read {
                        Ok(read) => read_set(&shared, read.key, ReadOptions { r: read.r }).await,
                        Err(e) => Err(ClientError::Internal(e)),
                    };
                    let _ = reply.send(Payload::ok(answer));
                });
            }
        }
        Ok(())
    }
}

/// Refuses requests on a node that left the cluster or was removed from it.
fn check_member(shared: &NodeShared) -> Result<(), ClientError> {
    let status = shared.ring_status();
    if status.is_final() {
        return Err(ClientError::NotAMember(format!(
            "this node is {status}: it is no longer a member of the cluster; send requests to another node"
        )));
    }
    Ok(())
}
