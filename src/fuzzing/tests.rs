//! Every fuzz target on arbitrary bytes and on valid encodings with mutations, in every test
//! run; and one regression test per panic the targets found.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use ractor::BytesConvertable;

use super::anti_entropy::{KEYS, Side};
use super::*;
use crate::core::anti_entropy::{AeReply, AeRequest, Initiator, respond};
use crate::core::encoded_set::EncodedSet;
use crate::core::hints::{Hint, HintId};
use crate::core::ids::{ActorId, Key, NodeId};
use crate::core::membership::{HandoffProgress, MemberDigest, RingStatus, Status};
use crate::core::replica::{ReplicaPut, ReplicaRequest};
use crate::core::vclock::tests::clock_strategy;
use crate::core::version::VersionSet;
use crate::core::version::tests::any_version;
use crate::model::Context;
use crate::node::disk::{hints, record, status};
use crate::node::wire::{Encoded, Payload};

/// Cases per property: enough to reach every decoder's error paths in each run, few enough
/// that the whole module stays within a few seconds.
const CASES: u32 = 96;

/// A change to a valid encoding, at a position taken modulo its length.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// A length or count prefix made huge: a varint of `u32::MAX` or `u64::MAX` written over.
    HugeVarint(usize, bool),
    SetByte(usize, u8),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Mutation::Remove(at, len)),
        (any::<usize>(), any::<bool>()).prop_map(|(at, wide)| Mutation::HugeVarint(at, wide)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::SetByte(at, b)),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Duplicate(at, len)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match m {
            Mutation::FlipBit(i, bit) if len > 0 => bytes[at(*i)] ^= 1 << bit,
            Mutation::Truncate(i) => bytes.truncate(at(*i)),
            Mutation::Insert(i, extra) => {
                let i = at(*i);
                bytes.splice(i..i, extra.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let i = at(*i);
                bytes.drain(i..(i + n).min(len));
            }
            Mutation::HugeVarint(i, wide) => {
                let i = at(*i);
                let varint: &[u8] = if *wide {
                    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
                } else {
                    &[0xff, 0xff, 0xff, 0xff, 0x0f]
                };
                let end = (i + varint.len()).min(len);
                bytes.splice(i..end, varint.iter().copied());
            }
            Mutation::SetByte(i, b) if len > 0 => bytes[at(*i)] = *b,
            Mutation::Duplicate(i, n) => {
                let i = at(*i);
                let copy = bytes[i..(i + n).min(len)].to_vec();
                bytes.splice(i..i, copy);
            }
            _ => {}
        }
    }
    bytes
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..4)
}

fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..600)
}

fn set_strategy() -> impl Strategy<Value = VersionSet> {
    proptest::collection::vec(any_version(), 0..4).prop_map(VersionSet::from_versions)
}

fn key_strategy() -> impl Strategy<Value = Key> {
    proptest::collection::vec(any::<u8>(), 0..12).prop_map(Key::from)
}

fn batch_strategy() -> impl Strategy<Value = Vec<ReplicaRequest>> {
    let request = prop_oneof![
        key_strategy().prop_map(ReplicaRequest::Get),
        (
            key_strategy(),
            set_strategy(),
            proptest::option::of("fz-[a-c]")
        )
            .prop_map(|(key, versions, hint_for)| ReplicaRequest::Put(ReplicaPut {
                key,
                versions: EncodedSet::encode(&versions),
                hint_for: hint_for.map(NodeId::new),
            })),
    ];
    proptest::collection::vec(request, 0..4)
}

fn member_strategy() -> impl Strategy<Value = MemberDigest> {
    (
        "fz-[a-d]",
        0u32..64,
        0u64..5,
        0u64..3,
        0usize..5,
        prop_oneof![
            Just(Status::Alive),
            Just(Status::Suspect),
            Just(Status::Dead)
        ],
        1u32..5,
    )
        .prop_map(|(node, vnodes, heartbeat, incarnation, ring, status, n)| {
            let ring = [
                RingStatus::Joining,
                RingStatus::Valid,
                RingStatus::Leaving,
                RingStatus::Left,
                RingStatus::Removed,
            ][ring];
            MemberDigest {
                node: NodeId::new(node),
                cluster_addr: "127.0.0.1:1".into(),
                http_addr: "127.0.0.1:2".into(),
                vnodes,
                status,
                heartbeat,
                incarnation,
                ring,
                n,
                handoff: HandoffProgress::default(),
            }
        })
}

/// Every message of a real round between two nodes whose stores differ, as the wire holds
/// them: (requests of the initiator, replies of the responder).
fn round_messages() -> (Vec<AeRequest>, Vec<AeReply>) {
    let mut a = Side::new("fz-a", "fz-b", KEYS);
    let mut b = Side::new(
        "fz-b",
        "fz-a",
        &[("k0", Some("other")), ("k4", Some("four")), ("k2", None)],
    );
    let (mut initiator, mut request) = a.with(Initiator::start);
    let (mut requests, mut replies) = (Vec::new(), Vec::new());
    for _ in 0..16 {
        requests.push(request.clone());
        let reply = b.with(|r| respond(r, request)).reply;
        replies.push(reply.clone());
        match a.with(|r| initiator.step(r, reply)) {
            Ok(Some(next)) => request = next,
            _ => break,
        }
    }
    assert!(
        replies.len() >= 3,
        "the round went past its root: {replies:?}"
    );
    (requests, replies)
}

fn concat<T: serde::Serialize>(values: &[T]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| postcard::to_stdvec(v).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn context_tokens(bytes in arbitrary_bytes(), clock in clock_strategy(6), m in mutations()) {
        context_token(&bytes);
        let token = Context::from_clock(clock).encode();
        context_token(&mutate(token.clone().into_bytes(), &m));
        // Mutations of the decoded bytes, re-encoded as a token: past the base64 layer.
        let raw = base64_decode(&token);
        context_token(base64_encode(&mutate(raw, &m)).as_bytes());
    }

    #[test]
    fn wire_messages(bytes in arbitrary_bytes(), batch in batch_strategy(), members in proptest::collection::vec(member_strategy(), 0..4), m in mutations()) {
        wire_message(&bytes);
        let batch_bytes = Encoded::<Vec<ReplicaRequest>>::encode(&batch).unwrap().into_bytes();
        wire_message(&mutate(batch_bytes.clone(), &m));
        let reply = Payload::ok(vec![crate::core::replica::ReplicaReply::Stored]).into_bytes();
        wire_message(&mutate(reply, &m));
        let gossip = Payload::ok(members).into_bytes();
        wire_message(&mutate(gossip, &m));
        let mut framed = vec![0u8];
        framed.extend_from_slice(&batch_bytes);
        wire_message(&mutate(framed, &m));
    }

    #[test]
    fn replica_batches(bytes in arbitrary_bytes(), batch in batch_strategy(), m in mutations()) {
        replica_batch(&bytes);
        let encoded = Encoded::<Vec<ReplicaRequest>>::encode(&batch).unwrap().into_bytes();
        replica_batch(&encoded);
        replica_batch(&mutate(encoded, &m));
    }

    #[test]
    fn gossip(bytes in arbitrary_bytes(), rounds in proptest::collection::vec(proptest::collection::vec(member_strategy(), 0..4), 1..4), m in mutations()) {
        gossip_digests(&bytes);
        let encoded = concat(&rounds);
        gossip_digests(&encoded);
        gossip_digests(&mutate(encoded, &m));
    }

    #[test]
    fn stored_records(bytes in arbitrary_bytes(), set in set_strategy(), key in key_strategy(), m in mutations()) {
        stored_record(&bytes);
        if !set.is_empty() {
            let encoded = record::encode(set.digest(), &set, EncodedSet::encode(&set).as_bytes());
            prop_assert_eq!(record::decode(&encoded), Ok((set.digest(), set.clone())));
            stored_record(&mutate(encoded, &m));
        }
        let mut entries = BTreeMap::new();
        entries.insert("actor".to_string(), Bytes::from(postcard::to_stdvec(&ActorId::new("fz-a", 3)).unwrap()));
        entries.insert("lease".to_string(), Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8]));
        stored_record(&mutate(status::encode(&entries), &m));
        let hint = Hint { id: HintId(7), owner: NodeId::new("fz-b"), key, versions: set, created_at_ms: 9 };
        let (id, body) = hints::encode(&hint).unwrap();
        prop_assert_eq!(hints::decode(&id, &body), Ok(hint));
        let mut whole = id.to_vec();
        whole.extend_from_slice(&body);
        stored_record(&mutate(whole, &m));
    }

    #[test]
    fn anti_entropy_messages(bytes in arbitrary_bytes(), m in mutations(), flags in any::<u8>()) {
        ae_requests(&bytes);
        ae_replies(&bytes);
        let (requests, replies) = round_messages();
        let mut framed = vec![flags];
        framed.extend(concat(&requests));
        ae_requests(&mutate(framed, &m));
        ae_replies(&mutate(concat(&replies), &m));
    }

    #[test]
    fn http_requests(
        bytes in arbitrary_bytes(),
        method in any::<u8>(),
        route in any::<u8>(),
        path in "[a-z%/0-9A-F.~-]{0,12}",
        query in "((r|w|x)=[0-9a-z+%-]{0,4}&?){0,3}",
        clock in proptest::option::of(clock_strategy(4)),
        body in prop_oneof![
            Just(br#"{"w":2,"r":2}"#.to_vec()),
            Just(br#"{"n":5}"#.to_vec()),
            Just(br#"{"put_timeout_ms":18446744073709551615}"#.to_vec()),
            arbitrary_bytes(),
        ],
        m in mutations(),
    ) {
        http_bytes(&bytes);
        let context = clock.map(|c| mutate(Context::from_clock(c).encode().into_bytes(), &m));
        let input = HttpInput {
            method,
            route,
            path: path.into_bytes(),
            query: query.into_bytes(),
            context,
            body: mutate(body.clone(), &m),
        };
        http_request(&input);
        http_request(&HttpInput { body, ..input });
    }
}

fn base64_decode(token: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// ---- regressions: one per panic or blow-up the targets found ----

#[test]
fn a_stored_record_whose_versions_are_not_a_set_is_an_error_not_a_panic() {
    // Two versions where the second's context covers the first: a merge keeps one. Framed
    // with the right digest, so that only the set check can refuse it.
    let first = crate::core::version::Version {
        dot: crate::core::vclock::Dot::new(ActorId::new("fz-a", 1), 1),
        context: crate::core::vclock::VClock::new(),
        value: Some(Bytes::from_static(b"old")),
        timestamp_ms: 1,
    };
    let mut context = crate::core::vclock::VClock::new();
    context.add_dot(&first.dot, 1);
    let second = crate::core::version::Version {
        dot: crate::core::vclock::Dot::new(ActorId::new("fz-b", 1), 1),
        context,
        value: Some(Bytes::from_static(b"new")),
        timestamp_ms: 2,
    };
    let versions = vec![first, second];
    assert_eq!(VersionSet::from_versions(versions.clone()).len(), 1);
    // The digest of exactly these versions, as a damaged record could carry it.
    let digest = VersionSet::unchecked_for_tests(versions.clone()).digest();
    let mut bytes = digest.to_le_bytes().to_vec();
    bytes.extend_from_slice(&6u64.to_le_bytes());
    bytes.push(0);
    bytes.extend(postcard::to_stdvec(&versions).unwrap());
    assert!(record::decode(&bytes).is_err());
    stored_record(&bytes);
}
