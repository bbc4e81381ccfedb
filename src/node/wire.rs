//! The messages nodes send each other through ractor_cluster.
//!
//! Every payload crosses the wire as [`Payload<T>`]: a tag byte, then postcard. ractor's
//! `BytesConvertable::from_bytes` cannot fail, so a payload that does not decode (a bug, a
//! version mismatch, a corrupted frame) arrives as `Err` instead of panicking inside an actor.

use bytes::Bytes;
use ractor::{BytesConvertable, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::{ClientError, Context};
use crate::core::anti_entropy::{AeReply, AeRequest};
use crate::core::ids::{Key, NodeId};
use crate::core::membership::MemberDigest;
use crate::core::version::VersionSet;

const OK: u8 = 0;
const ERR: u8 = 1;

/// A value sent to or from a peer, or the reason it could not be decoded or produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload<T>(pub Result<T, String>);

impl<T> Payload<T> {
    /// A payload carrying `value`.
    pub fn ok(value: T) -> Self {
        Payload(Ok(value))
    }

    /// A payload carrying an error.
    pub fn err(reason: impl Into<String>) -> Self {
        Payload(Err(reason.into()))
    }
}

impl<T: Serialize + DeserializeOwned> BytesConvertable for Payload<T> {
    fn into_bytes(self) -> Vec<u8> {
        let encoded = match &self.0 {
            Ok(value) => postcard::to_stdvec(value).map(|body| (OK, body)),
            Err(reason) => postcard::to_stdvec(reason).map(|body| (ERR, body)),
        };
        match encoded {
            Ok((tag, mut body)) => {
                body.insert(0, tag);
                body
            }
            // Unreachable for our types (no maps with non-string keys, no I/O): send an error.
            Err(e) => {
                let mut body = postcard::to_stdvec(&e.to_string()).unwrap_or_default();
                body.insert(0, ERR);
                body
            }
        }
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        let decode_error = |e: postcard::Error| format!("undecodable payload: {e}");
        match bytes.split_first() {
            Some((&OK, body)) => Payload(postcard::from_bytes(body).map_err(decode_error)),
            Some((&ERR, body)) => Payload(Err(
                postcard::from_bytes::<String>(body).unwrap_or_else(decode_error)
            )),
            _ => Payload(Err("payload with an unknown tag".into())),
        }
    }
}

/// A replica write: merge `versions` into the key, or hold them as a hint for `hint_for`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaPut {
    /// The key.
    pub key: Key,
    /// The coordinator's whole set for the key.
    pub versions: VersionSet,
    /// The owner this node stands in for (sloppy quorum), if any.
    pub hint_for: Option<NodeId>,
}

/// Messages of a node's Storage actor: the replica side of reads and writes.
#[derive(RactorClusterMessage)]
pub enum StorageMsg {
    /// Read the key's versions (stored and hinted).
    #[rpc]
    Get(Payload<Key>, RpcReplyPort<Payload<VersionSet>>),
    /// Merge versions (or hold them as a hint); the reply is the ack.
    #[rpc]
    Put(Payload<ReplicaPut>, RpcReplyPort<Payload<()>>),
    /// Answers with the same bytes: the bare cost of a remote call (`bench transport`).
    #[rpc]
    Ping(Payload<Bytes>, RpcReplyPort<Payload<Bytes>>),
}

/// Messages of a node's Gossip actor.
#[derive(RactorClusterMessage)]
pub enum GossipMsg {
    /// A peer's membership digest; the reply is ours.
    #[rpc]
    Exchange(
        Payload<Vec<MemberDigest>>,
        RpcReplyPort<Payload<Vec<MemberDigest>>>,
    ),
    /// Time for a gossip round (sent by the actor's own timer).
    Tick(Payload<()>),
}

/// A write forwarded to a node that may coordinate it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedWrite {
    /// The key.
    pub key: Key,
    /// The value, or `None` for a delete.
    pub value: Option<Bytes>,
    /// The client's context.
    pub context: Context,
    /// The client's W override.
    pub w: Option<usize>,
    /// Milliseconds left of the client's timeout budget.
    pub budget_ms: u64,
}

/// A read handed to a node by a native client whose own view could not serve it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedRead {
    /// The key.
    pub key: Key,
    /// The client's R override.
    pub r: Option<usize>,
}

/// Messages of a node's Coordinator actor: requests from nodes outside the key's owners and
/// from native clients.
#[derive(RactorClusterMessage)]
pub enum CoordinatorMsg {
    /// Coordinate this write here; the reply is the client's answer.
    #[rpc]
    Write(
        Payload<ForwardedWrite>,
        RpcReplyPort<Payload<Result<Context, ClientError>>>,
    ),
    /// Coordinate this read here; the reply is the merged set of R replicas.
    #[rpc]
    Read(
        Payload<ForwardedRead>,
        RpcReplyPort<Payload<Result<VersionSet, ClientError>>>,
    ),
}

/// Messages of a node's AntiEntropy actor.
#[derive(RactorClusterMessage)]
pub enum AntiEntropyMsg {
    /// A step of a peer's anti-entropy round or tombstone purge; the reply is this node's.
    #[rpc]
    Request(Payload<AeRequest>, RpcReplyPort<Payload<AeReply>>),
    /// Time for a round and a purge pass (sent by the actor's own timer).
    Tick(Payload<()>),
    /// This node's round ended (sent by the task that ran it).
    RoundDone(Payload<()>),
    /// This node's purge pass ended, with where the next one starts.
    PurgeDone(Payload<u64>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_garbage_is_an_error() {
        let p = Payload::ok(vec![1u32, 2, 3]);
        assert_eq!(Payload::<Vec<u32>>::from_bytes(p.clone().into_bytes()), p);
        let e: Payload<Vec<u32>> = Payload::err("nope");
        assert_eq!(Payload::<Vec<u32>>::from_bytes(e.clone().into_bytes()), e);
        assert!(Payload::<Vec<u32>>::from_bytes(vec![]).0.is_err());
        assert!(Payload::<Vec<u32>>::from_bytes(vec![7, 1, 2]).0.is_err());
        assert!(Payload::<()>::from_bytes(vec![ERR]).0.is_err());
        assert!(Payload::<Vec<u32>>::from_bytes(vec![OK, 200]).0.is_err());
    }
}
