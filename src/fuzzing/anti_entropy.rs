//! Anti-entropy and purge messages as the two sides of a round take them: requests answered
//! by the responder, replies (the peer's digests, listings and sets) fed to the initiator.

use bytes::Bytes;

use super::{assert_stable, decode_sequence};
use crate::core::anti_entropy::{AeReply, AeRequest, Initiator, Replica, SharedDigests, respond};
use crate::core::ids::{ActorId, Key, NodeId};
use crate::core::ring::Ring;
use crate::core::store::Store;
use crate::core::vclock::VClock;

const N: usize = 3;

/// One node of a three-node ring with a few keys, and what it shares with one peer.
pub(crate) struct Side {
    me: NodeId,
    store: Store,
    ring: Ring,
    digests: SharedDigests,
}

impl Side {
    /// Node `me` holding `keys` (key, value; `None` writes a tombstone), its digests with
    /// `peer` up to date.
    pub(crate) fn new(me: &str, peer: &str, keys: &[(&str, Option<&str>)]) -> Side {
        let me = NodeId::new(me);
        let store = Store::new(ActorId::new(me.clone(), 1));
        for (key, value) in keys {
            let key = Key::copy_from_slice(key.as_bytes());
            let value = value.map(|v| Bytes::copy_from_slice(v.as_bytes()));
            // Cannot fail on an in-memory store with small values.
            let _ = store.coordinate(&key, &VClock::new(), value, 1);
        }
        let ring = match Ring::build(["fz-a", "fz-b", "fz-c"].map(|n| (NodeId::new(n), 8))) {
            Ok(ring) => ring,
            Err(e) => unreachable!("a valid ring: {e}"),
        };
        let mut digests = SharedDigests::new(me.clone(), NodeId::new(peer));
        digests.refresh(&store, &ring, N);
        Side {
            me,
            store,
            ring,
            digests,
        }
    }

    /// Runs `f` with this side of a round, its digests refreshed first.
    pub(crate) fn with<T>(&mut self, f: impl FnOnce(&Replica<'_>) -> T) -> T {
        self.digests.refresh(&self.store, &self.ring, N);
        let replica = Replica {
            store: &self.store,
            ring: &self.ring,
            n: N,
            me: &self.me,
            digests: &self.digests,
            hinted: &|_| false,
            now_ms: 10,
        };
        f(&replica)
    }
}

/// Fixed contents of the fuzzed node: values, a tombstone, and keys its peer lacks.
pub(crate) const KEYS: &[(&str, Option<&str>)] = &[
    ("k0", Some("zero")),
    ("k1", Some("one")),
    ("k2", None),
    ("k3", Some("three")),
];

/// A run of requests from a peer, answered in turn. The first byte, when odd, makes every
/// request carry the responder's own scope, so that the steps past the scope check are
/// reached (a fuzzer cannot guess a ring's fingerprint).
pub fn ae_requests(data: &[u8]) {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let mut side = Side::new("fz-a", "fz-b", KEYS);
    let requests: Vec<AeRequest> = decode_sequence(data, 8);
    for mut request in requests {
        assert_stable(&request);
        let answer = side.with(|replica| {
            if flags & 1 == 1 {
                request.scope = crate::core::anti_entropy::Scope::of(replica.ring, replica.n);
            }
            respond(replica, request)
        });
        assert_stable(&answer.reply);
    }
}

/// A run of replies from a peer fed to this node's rounds: each reply answers the request
/// the round is waiting on; a round that ends is followed by a new one.
pub fn ae_replies(data: &[u8]) {
    let mut side = Side::new("fz-a", "fz-b", KEYS);
    let replies: Vec<AeReply> = decode_sequence(data, 16);
    let mut initiator = side.with(|replica| Initiator::start(replica).0);
    for reply in replies {
        assert_stable(&reply);
        let next = side.with(|replica| initiator.step(replica, reply));
        match next {
            Ok(Some(request)) => assert_stable(&request),
            Ok(None) | Err(_) => initiator = side.with(|replica| Initiator::start(replica).0),
        }
    }
}
