//! The messages of an anti-entropy round and of the purge.

use serde::{Deserialize, Serialize};

use super::Scope;
use crate::core::ids::{Key, NodeId};
use crate::core::version::VersionSet;

/// A request of anti-entropy or of the purge, from one node to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AeRequest {
    /// The sender, whose shared keys the answer is about.
    pub from: NodeId,
    /// The sender's view of the ring and N.
    pub scope: Scope,
    /// What is asked.
    pub step: Step,
}

/// What an [`AeRequest`] asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Compare roots.
    Root {
        /// The sender's root digest.
        root: u64,
    },
    /// Compare these segments' digests; answer with the bucket digests of those that differ.
    Segments {
        /// (segment, the sender's shared digest).
        segments: Vec<(u16, u64)>,
    },
    /// List the shared keys of these buckets.
    Keys {
        /// (segment, bucket), in the order to list them.
        buckets: Vec<(u16, u8)>,
    },
    /// Merge `push`, purge `purge`, answer with the sets of `want`.
    Exchange {
        /// Sets the receiver lacks or holds differently.
        push: Vec<(Key, VersionSet)>,
        /// Keys whose sets the sender asks for.
        want: Vec<Key>,
        /// (key, digest) the sender purged: purge them too if still exactly that set.
        purge: Vec<(Key, u64)>,
    },
    /// Answer with the digest of each key (0 when absent), for a purge check.
    Digests {
        /// The keys.
        keys: Vec<Key>,
    },
    /// Purge each key whose set is still exactly the given all-tombstone one.
    Purge {
        /// (key, digest agreed by every owner).
        keys: Vec<(Key, u64)>,
    },
}

/// The answer to an [`AeRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AeReply {
    /// The receiver's ring or N differs from the sender's: no comparison is meaningful.
    ScopeMismatch,
    /// The roots are equal.
    InSync,
    /// The roots differ: the receiver's group digests.
    Groups(Vec<u64>),
    /// What the receiver holds of each asked segment whose digest differs.
    Buckets(Vec<(u16, SegmentView)>),
    /// The keys of the asked buckets.
    Keys {
        /// How many of the asked buckets were listed (a prefix; the rest is asked again).
        listed: u32,
        /// (key, digest) of the receiver's shared keys in those buckets.
        keys: Vec<(Key, u64)>,
    },
    /// The answer to an exchange.
    Sets {
        /// How many of the wanted keys were served (a prefix; the rest is asked again).
        served: u32,
        /// Sets of the served keys the receiver holds.
        sets: Vec<(Key, VersionSet)>,
        /// Pushed keys the receiver had purged with exactly that set: purge them too.
        purge: Vec<(Key, u64)>,
    },
    /// The digest of each asked key, in order.
    Digests(Vec<u64>),
    /// How many keys were purged.
    Purged(u32),
}

/// One side's view of a segment that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentView {
    /// The [`BUCKETS`](super::BUCKETS) bucket digests, to narrow the difference down further.
    Digests(Vec<u64>),
    /// The shared keys themselves, with their digests, when listing them is no larger than
    /// the bucket digests would be (sparse segments, an empty replica).
    Keys(Vec<(Key, u64)>),
}
