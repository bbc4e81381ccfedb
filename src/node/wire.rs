//! The messages nodes send each other through ractor_cluster.
//!
//! Every payload crosses the wire as [`Payload<T>`]: a tag byte, then postcard. ractor's
//! `BytesConvertable::from_bytes` cannot fail, so a payload that does not decode (a bug, a
//! version mismatch, a corrupted frame) arrives as `Err` instead of panicking inside an actor.

use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use ractor::rpc::CallResult;
use ractor::{ActorRef, BytesConvertable, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::core::anti_entropy::{AeReply, AeRequest};
use crate::core::ids::{ActorId, Key, NodeId};
use crate::core::membership::MemberDigest;
use crate::core::version::VersionSet;
use crate::model::{ClientError, Context};

const OK: u8 = 0;
const ERR: u8 = 1;

// The size of `value`'s encoding, from a pass that writes nothing: a buffer allocated with it
// is never grown (and copied) while the value is encoded into it.
fn encoded_size<V: Serialize + ?Sized>(value: &V) -> usize {
    postcard::experimental::serialized_size(value).unwrap_or(0)
}

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

/// Why a call answered with a [`Payload`] gave no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailed {
    /// The peer answered with an error: it refused the request, or could not decode it.
    Refused(String),
    /// No answer came: the call timed out, or its reply port was dropped on the way.
    NoAnswer,
}

/// Calls `actor` with the message `request` makes of the reply port and waits `timeout` at
/// most for the [`Payload`] it answers with.
pub async fn call<M, T>(
    actor: &ActorRef<M>,
    request: impl FnOnce(RpcReplyPort<Payload<T>>) -> M,
    timeout: Duration,
) -> Result<T, CallFailed>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(request, Some(timeout)).await {
        Ok(CallResult::Success(Payload(Ok(answer)))) => Ok(answer),
        Ok(CallResult::Success(Payload(Err(e)))) => Err(CallFailed::Refused(e)),
        // Timeout and SenderError alike: no answer.
        Ok(CallResult::Timeout | CallResult::SenderError) | Err(_) => Err(CallFailed::NoAnswer),
    }
}

impl<T: Serialize + DeserializeOwned> BytesConvertable for Payload<T> {
    fn into_bytes(self) -> Vec<u8> {
        // The tag, then the body after it in the same buffer, sized once.
        fn tagged<V: Serialize + ?Sized>(tag: u8, body: &V) -> postcard::Result<Vec<u8>> {
            let mut out = Vec::with_capacity(1 + encoded_size(body));
            out.push(tag);
            postcard::to_extend(body, out)
        }
        let encoded = match &self.0 {
            Ok(value) => tagged(OK, value),
            Err(reason) => tagged(ERR, reason),
        };
        // Unreachable for our types (no maps with non-string keys, no I/O): send an error.
        encoded.unwrap_or_else(|e| tagged(ERR, &e.to_string()).unwrap_or_else(|_| vec![ERR]))
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

/// A value encoded for the wire when it is made, and decoded only when the receiver asks.
///
/// Encoding up front lets a sender serialize what it still holds by reference (a batch it may
/// have to send again) instead of handing ractor an owned copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded<T> {
    bytes: Vec<u8>,
    // `fn() -> T`: the bytes stand for a `T` without owning one, so `Encoded` is always Send.
    kind: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Encoded<T> {
    /// Encodes `value`, anything that serializes exactly as a `T` does (`&[X]` for `Vec<X>`).
    pub fn encode<V: Serialize + ?Sized>(value: &V) -> Result<Self, String> {
        postcard::to_extend(value, Vec::with_capacity(encoded_size(value)))
            .map(|bytes| Encoded {
                bytes,
                kind: PhantomData,
            })
            .map_err(|e| format!("unencodable payload: {e}"))
    }

    /// The value; an error when the bytes are not a `T` (a bug, a version mismatch).
    pub fn decode(&self) -> Result<T, String> {
        postcard::from_bytes(&self.bytes).map_err(|e| format!("undecodable payload: {e}"))
    }
}

impl<T> BytesConvertable for Encoded<T> {
    fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        Encoded {
            bytes,
            kind: PhantomData,
        }
    }
}

use crate::core::replica::{LEN_MAX, VARINT_MAX, key_size_bound, str_size_bound};
pub use crate::core::replica::{ReplicaPut, ReplicaReply, ReplicaRequest};

/// Messages of a node's Storage actor: the replica side of reads and writes.
#[derive(RactorClusterMessage)]
pub enum StorageMsg {
    /// Answers with the same bytes: the bare cost of a remote call (`bench transport`).
    #[rpc]
    Ping(Payload<Bytes>, RpcReplyPort<Payload<Bytes>>),
    /// Several reads and writes in one message (a `Vec<ReplicaRequest>`), served in order.
    /// The reply answers a prefix of them, one reply each, and leaves out the rest when their
    /// answers would make the reply too large; the sender asks again for those.
    #[rpc]
    Batch(
        Encoded<Vec<ReplicaRequest>>,
        RpcReplyPort<Payload<Vec<ReplicaReply>>>,
    ),
}

pub use super::sessions::SessionToken;

/// A message that claims a sender, with the token the receiver issued to that sender's
/// session (see `node::sessions`): without the right one, the claim is not believed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vouched<T> {
    /// The token the receiver issued to the claimed sender's current session.
    pub token: Option<SessionToken>,
    /// The message, naming its sender.
    pub body: T,
}

/// A gossip exchange: the sender and its membership digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipDigest {
    /// The claimed sender.
    pub from: NodeId,
    /// Its digest; empty when it only asks for ours (a native client), which needs no token.
    pub members: Vec<MemberDigest>,
}

/// A session token: issued by `from` to the receiver (an offer), or shown back to the node
/// that issued it by `from` (a confirmation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenOffer {
    /// The node that issued the token (an offer) or holds it (a confirmation).
    pub from: NodeId,
    /// The token.
    pub token: SessionToken,
}

/// Messages of a node's Gossip actor.
#[derive(RactorClusterMessage)]
pub enum GossipMsg {
    /// A peer's membership digest; the reply is ours.
    #[rpc]
    Exchange(
        Payload<Vouched<GossipDigest>>,
        RpcReplyPort<Payload<Vec<MemberDigest>>>,
    ),
    /// Time for a gossip round (sent by the actor's own timer).
    Tick(Payload<()>),
    /// A peer's token for this node's session with it, to be confirmed before use.
    Offer(Payload<TokenOffer>),
    /// A peer asks whether this node issued it this token; the reply says.
    #[rpc]
    Confirm(Payload<TokenOffer>, RpcReplyPort<Payload<bool>>),
    /// A peer holds no token of this node yet and asks for it to be offered again.
    Resend(Payload<NodeId>),
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

impl ForwardedWrite {
    /// An upper bound of the write's encoded size, for keeping batches under the frame limit.
    pub fn size_bound(&self) -> usize {
        let actor = |a: &ActorId| str_size_bound(a.node.as_str()) + VARINT_MAX;
        let clock = self.context.clock();
        let context: usize = clock
            .entries()
            .map(|(a, _)| actor(a) + 2 * VARINT_MAX)
            .chain(
                clock
                    .exact_dots()
                    .map(|(d, _)| actor(&d.actor) + 2 * VARINT_MAX),
            )
            .sum::<usize>()
            + LEN_MAX;
        key_size_bound(&self.key)
            + 1
            + self.value.as_ref().map_or(0, |v| LEN_MAX + v.len())
            + LEN_MAX
            + context
            + 1
            + 2 * VARINT_MAX
    }
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
    /// Coordinate these writes here, concurrently; the reply has one answer per write, in
    /// order, sent when the last of them is answered.
    #[rpc]
    WriteBatch(
        Payload<Vec<ForwardedWrite>>,
        RpcReplyPort<Payload<Vec<Result<Context, ClientError>>>>,
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
    Request(Payload<Vouched<AeRequest>>, RpcReplyPort<Payload<AeReply>>),
    /// Time for a round and a purge pass (sent by the actor's own timer).
    Tick(Payload<()>),
    /// This node's round ended (sent by the task that ran it).
    RoundDone(Payload<()>),
    /// This node's purge pass ended, with the candidate after which the next one starts.
    PurgeDone(Payload<Option<Key>>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::encoded_set::EncodedSet;
    use crate::core::ids::NodeId;

    #[test]
    fn payloads_round_trip_and_garbage_is_an_error() {
        let large = Payload::ok(vec![7u32; 1000]);
        let bytes = large.clone().into_bytes();
        assert_eq!((bytes[0], bytes.capacity()), (OK, bytes.len()));
        assert_eq!(Payload::<Vec<u32>>::from_bytes(bytes), large);
        let p = Payload::ok(vec![1u32, 2, 3]);
        assert_eq!(Payload::<Vec<u32>>::from_bytes(p.clone().into_bytes()), p);
        let e: Payload<Vec<u32>> = Payload::err("nope");
        assert_eq!(Payload::<Vec<u32>>::from_bytes(e.clone().into_bytes()), e);
        assert!(Payload::<Vec<u32>>::from_bytes(vec![]).0.is_err());
        assert!(Payload::<Vec<u32>>::from_bytes(vec![7, 1, 2]).0.is_err());
        assert!(Payload::<()>::from_bytes(vec![ERR]).0.is_err());
        assert!(Payload::<Vec<u32>>::from_bytes(vec![OK, 200]).0.is_err());
    }

    // A set of siblings from several writers, with contexts, a tombstone and a long value.
    fn sample_set() -> VersionSet {
        use crate::core::store::Store;
        use crate::core::vclock::VClock;
        let key = Key::from_static(b"k");
        let mut set = VersionSet::new();
        for (i, writer) in ["n1", "a-much-longer-node-name", "n3"]
            .into_iter()
            .enumerate()
        {
            let store = Store::new(ActorId::new(writer, u64::MAX - i as u64));
            let mut context = VClock::new();
            context.add_dot(
                &crate::core::vclock::Dot::new(ActorId::new("n9", 7), 1),
                u64::MAX,
            );
            let value = (i != 1).then(|| Bytes::from(vec![7u8; 300 * i]));
            let written = store.coordinate(&key, &context, value, u64::MAX).unwrap();
            set.merge(&written.versions.decode().unwrap());
        }
        assert_eq!(set.len(), 3);
        set
    }

    #[test]
    fn size_bounds_are_never_below_the_encoded_size() {
        let set = sample_set();
        let encoded = |v: &dyn erased::Encode| v.encoded_len();
        let shared = EncodedSet::encode(&set);
        assert!(encoded(&shared) <= shared.size_bound());
        let empty = EncodedSet::encode(&VersionSet::new());
        assert!(encoded(&empty) <= empty.size_bound());
        let put = ReplicaPut {
            key: Key::from(vec![1u8; 1000]),
            versions: shared.clone(),
            hint_for: Some(NodeId::new("n2")),
        };
        for request in [
            ReplicaRequest::Get(put.key.clone()),
            ReplicaRequest::Put(put),
        ] {
            assert!(encoded(&request) <= request.size_bound(), "{request:?}");
        }
        let mut context = crate::core::vclock::VClock::new();
        for version in set.versions() {
            context.merge(&version.context);
            context.add_dot(&version.dot, u64::MAX);
        }
        for (value, context) in [
            (None, Context::empty()),
            (
                Some(Bytes::from(vec![7u8; 300])),
                Context::from_clock(context),
            ),
        ] {
            let write = ForwardedWrite {
                key: Key::from(vec![2u8; 200]),
                value,
                context,
                w: Some(usize::MAX),
                budget_ms: u64::MAX,
            };
            assert!(encoded(&write) <= write.size_bound(), "{write:?}");
        }
        for reply in [ReplicaReply::Got(shared), ReplicaReply::Stored] {
            assert!(encoded(&reply) <= reply.size_bound(), "{reply:?}");
        }
    }

    // Object-safe postcard length, so one closure measures values of every type.
    mod erased {
        pub trait Encode {
            fn encoded_len(&self) -> usize;
        }
        impl<T: serde::Serialize> Encode for T {
            fn encoded_len(&self) -> usize {
                postcard::to_stdvec(self).unwrap().len()
            }
        }
    }

    #[test]
    fn a_batch_encoded_by_reference_decodes_as_the_owned_requests() {
        let requests = vec![
            ReplicaRequest::Get(Key::from_static(b"a")),
            ReplicaRequest::Put(ReplicaPut {
                key: Key::from_static(b"b"),
                versions: EncodedSet::encode(&sample_set()),
                hint_for: None,
            }),
        ];
        let encoded = Encoded::<Vec<ReplicaRequest>>::encode(&requests[..]).unwrap();
        // Sized before it was encoded: the buffer was never grown.
        assert_eq!(encoded.bytes.capacity(), encoded.bytes.len());
        let received = Encoded::<Vec<ReplicaRequest>>::from_bytes(encoded.into_bytes());
        assert_eq!(received.decode().unwrap(), requests);
        let garbage = Encoded::<Vec<ReplicaRequest>>::from_bytes(vec![3, 9, 9]);
        assert!(garbage.decode().is_err());
    }
}
