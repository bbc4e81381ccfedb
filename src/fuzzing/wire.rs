//! Context tokens, the peer messages (every `Payload` and the batch frames), and what a node
//! does first with a replica batch and a gossip digest.

use bytes::Bytes;
use ractor::BytesConvertable;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{assert_stable, decode_sequence};
use crate::core::hints::{HintLimits, SharedHints};
use crate::core::ids::{ActorId, Key, NodeId};
use crate::core::membership::{FailureTimeouts, MemberDigest, Membership};
use crate::core::replica::{LocalReplica, ReplicaReply, ReplicaRequest};
use crate::core::ring::Ring;
use crate::core::store::Store;
use crate::core::version::VersionSet;
use crate::model::{ClientError, Context};
use crate::node::wire::{Encoded, ForwardedRead, ForwardedWrite, Payload};

/// A context token as a client sends it (`X-Dynamo-Context`, the native client).
pub fn context_token(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    if let Ok(context) = Context::decode(&token) {
        assert_eq!(Context::decode(&context.encode()), Ok(context));
    }
}

/// One frame of every message type a peer can send, and the answers it can return.
pub fn wire_message(data: &[u8]) {
    payload::<Bytes>(data);
    payload::<()>(data);
    payload::<Option<Key>>(data);
    payload::<Vec<MemberDigest>>(data);
    payload::<ForwardedRead>(data);
    payload::<Result<VersionSet, ClientError>>(data);
    payload::<Vec<Result<Context, ClientError>>>(data);
    payload::<crate::core::anti_entropy::AeRequest>(data);
    payload::<crate::core::anti_entropy::AeReply>(data);
    if let Some(writes) = payload::<Vec<ForwardedWrite>>(data) {
        for write in writes {
            assert!(encoded_len(&write) <= write.size_bound(), "{write:?}");
        }
    }
    if let Some(replies) = payload::<Vec<ReplicaReply>>(data) {
        for reply in replies {
            assert!(encoded_len(&reply) <= reply.size_bound(), "{reply:?}");
            if let ReplicaReply::Got(set) = &reply
                && let Ok(set) = set.decode()
            {
                assert_stable(&set);
            }
        }
    }
    batch_frame(data);
}

/// A replica batch as the Storage actor serves it: decoded, served against a small store
/// with hints, and answered.
pub fn replica_batch(data: &[u8]) {
    let Some(requests) = batch_frame(data) else {
        return;
    };
    let me = NodeId::new("fz-a");
    let store = Store::new(ActorId::new("fz-a", 1));
    let hints = SharedHints::new(HintLimits {
        max_hints: 64,
        max_bytes: 1 << 20,
    });
    let replica = LocalReplica {
        me: &me,
        store: &store,
        hints: &hints,
        member: true,
        now_ms: 1,
        ack_after_sync: false,
    };
    // Twice: the second pass reads and merges over what the first one stored.
    for _ in 0..2 {
        let replies = replica.serve(requests.clone(), 1 << 20);
        assert!(!replies.is_empty() || requests.is_empty());
        let frame = Payload::ok(replies.clone()).into_bytes();
        assert_eq!(
            Payload::<Vec<ReplicaReply>>::from_bytes(frame).0,
            Ok(replies)
        );
    }
}

/// A run of gossip digests merged into one node's membership, whose ring is then rebuilt as
/// the Ring actor would.
pub fn gossip_digests(data: &[u8]) {
    let Ok(mut membership) = Membership::new(
        NodeId::new("fz-a"),
        "127.0.0.1:1".into(),
        "127.0.0.1:2".into(),
        8,
        1,
        FailureTimeouts::default(),
        0,
    ) else {
        unreachable!("the default timeouts are valid");
    };
    let digests: Vec<Vec<MemberDigest>> = decode_sequence(data, 16);
    for (i, digest) in digests.iter().enumerate() {
        let now_ms = 1_000 * (i as u64 + 1);
        membership.merge(digest, now_ms);
        membership.detect(now_ms);
        membership.tick(now_ms);
        let _ = Ring::build(membership.ring_layout());
        assert_stable(&membership.digest());
    }
}

// The batch frame of `StorageMsg::Batch`, decoded and checked.
fn batch_frame(data: &[u8]) -> Option<Vec<ReplicaRequest>> {
    let frame = Encoded::<Vec<ReplicaRequest>>::from_bytes(data.to_vec());
    let requests = frame.decode().ok()?;
    assert_stable(&requests);
    for request in &requests {
        assert!(encoded_len(request) <= request.size_bound(), "{request:?}");
        // A write's set travels encoded; the receiver decodes it when it applies it.
        if let ReplicaRequest::Put(put) = request
            && let Ok(set) = put.versions.decode()
        {
            assert_stable(&set);
        }
    }
    Some(requests)
}

// A `Payload<T>` frame; the value when it decodes, after checking that it survives a trip.
fn payload<T: Serialize + DeserializeOwned>(data: &[u8]) -> Option<T> {
    let value = Payload::<T>::from_bytes(data.to_vec()).0.ok()?;
    assert_stable(&value);
    Some(value)
}

fn encoded_len<T: Serialize>(value: &T) -> usize {
    postcard::to_stdvec(value).map_or(0, |bytes| bytes.len())
}
