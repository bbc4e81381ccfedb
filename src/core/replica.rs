//! The replica side of reads and writes: what a node does with the requests coordinators
//! send it, whether they come from a peer's coordinator, a hint drain, a handoff or read
//! repair. Pure: the Storage actor and the simulation both call [`LocalReplica::serve`].

use serde::{Deserialize, Serialize};

use super::encoded_set::{EncodedSet, UndecodableSet};
use super::hints::{HintRefused, SharedHints};
use super::ids::{Key, NodeId};
use super::store::{Store, StoreError};
use super::version::VersionSet;

/// A replica write: merge `versions` into the key, or hold them as a hint for `hint_for`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPut {
    /// The key.
    pub key: Key,
    /// The coordinator's whole set for the key, encoded once for all its replicas.
    pub versions: EncodedSet,
    /// The owner this node stands in for (sloppy quorum), if any.
    pub hint_for: Option<NodeId>,
}

impl ReplicaPut {
    /// An upper bound of the write's encoded size, for keeping batches under the frame limit.
    pub fn size_bound(&self) -> usize {
        key_size_bound(&self.key)
            + self.versions.size_bound()
            + 1
            + self
                .hint_for
                .as_ref()
                .map_or(0, |n| str_size_bound(n.as_str()))
    }
}

/// One request of a batch sent to a peer's Storage actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRequest {
    /// Read the key's versions (stored and hinted).
    Get(Key),
    /// Merge versions (or hold them as a hint).
    Put(ReplicaPut),
}

impl ReplicaRequest {
    /// An upper bound of the request's encoded size, for keeping batches under the frame limit.
    pub fn size_bound(&self) -> usize {
        1 + match self {
            ReplicaRequest::Get(key) => key_size_bound(key),
            ReplicaRequest::Put(put) => put.size_bound(),
        }
    }
}

/// The answer to one [`ReplicaRequest`] of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaReply {
    /// What the replica holds for the key of a `Get`.
    Got(EncodedSet),
    /// A `Put` was applied.
    Stored,
    /// The request was not served, and why: a write refused is not an ack.
    Refused(String),
}

impl ReplicaReply {
    /// An upper bound of the reply's encoded size, for keeping answers under the frame limit.
    pub fn size_bound(&self) -> usize {
        1 + match self {
            ReplicaReply::Got(set) => set.size_bound(),
            ReplicaReply::Stored => 0,
            ReplicaReply::Refused(why) => str_size_bound(why),
        }
    }
}

/// Postcard writes integers as varints: at most 10 bytes for a u64.
pub(crate) const VARINT_MAX: usize = 10;
/// At most 5 bytes for a length.
pub(crate) const LEN_MAX: usize = 5;

/// An upper bound of a string's encoded size.
pub(crate) fn str_size_bound(s: &str) -> usize {
    LEN_MAX + s.len()
}

/// An upper bound of a key's encoded size.
pub(crate) fn key_size_bound(key: &Key) -> usize {
    LEN_MAX + key.len()
}

/// Why a replica write was not applied (it is then not an ack).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PutRefused {
    /// This node left the cluster or was removed: it takes no data.
    #[error("this node is no longer a member of the cluster")]
    NotAMember,
    /// The hint store is at its limit.
    #[error(transparent)]
    Hint(#[from] HintRefused),
    /// The store could not take the versions (a full disk, a failed engine).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The write's set does not decode.
    #[error(transparent)]
    Undecodable(#[from] UndecodableSet),
}

/// A node's stored data and hints, as the replica side of requests sees them.
pub struct LocalReplica<'a> {
    /// This node.
    pub me: &'a NodeId,
    /// The stored data.
    pub store: &'a Store,
    /// The hints held for other owners.
    pub hints: &'a SharedHints,
    /// False once this node left or was removed: it then serves nothing.
    pub member: bool,
    /// Local monotonic milliseconds, recorded with new hints.
    pub now_ms: u64,
    /// True when a write applied here counts as an ack only after the engine made it durable
    /// (an fsync under `--fsync always`, a hand-over to the OS under `never`): the caller
    /// syncs, then acks.
    pub ack_after_sync: bool,
}

impl<'a> LocalReplica<'a> {
    /// A member's replica at time 0 that acks without waiting for a sync, for tests.
    #[cfg(test)]
    pub(crate) fn for_tests(me: &'a NodeId, store: &'a Store, hints: &'a SharedHints) -> Self {
        LocalReplica {
            me,
            store,
            hints,
            member: true,
            now_ms: 0,
            ack_after_sync: false,
        }
    }

    /// What this node holds for `key`: its own versions and any it keeps as hints.
    pub fn read(&self, key: &[u8]) -> VersionSet {
        let mut set = self.store.get(key);
        let hints = self.hints.lock();
        // Merging even an empty set rebuilds this one; there are rarely any hints.
        if hints.holds(key) {
            set.merge(&hints.versions_for(key));
        }
        set
    }

    /// As [`LocalReplica::read`], encoded: what a replica read answers with. Without hints
    /// for the key, the stored bytes as they are.
    pub fn read_encoded(&self, key: &[u8]) -> EncodedSet {
        if self.hints.lock().holds(key) {
            return EncodedSet::encode(&self.read(key));
        }
        self.store.get_encoded(key)
    }

    /// Applies a replica write: a merge, or a hint kept for the owner this node stands in for.
    pub fn apply(&self, put: ReplicaPut) -> Result<(), PutRefused> {
        if !self.member {
            return Err(PutRefused::NotAMember);
        }
        let (versions, as_sent) = put.versions.decode_as_sent()?;
        let sent = as_sent.then_some(&put.versions);
        self.apply_decoded(put.key, versions, put.hint_for, sent)
    }

    /// As [`LocalReplica::apply`], for a set at hand (decoded, or made here).
    pub fn apply_set(
        &self,
        key: Key,
        versions: VersionSet,
        hint_for: Option<NodeId>,
    ) -> Result<(), PutRefused> {
        if !self.member {
            return Err(PutRefused::NotAMember);
        }
        self.apply_decoded(key, versions, hint_for, None)
    }

    // `sent`: the bytes `versions` came in, when they decode to exactly that list, for the
    // store to keep as they are if the merge leaves exactly that set.
    fn apply_decoded(
        &self,
        key: Key,
        versions: VersionSet,
        hint_for: Option<NodeId>,
        sent: Option<&EncodedSet>,
    ) -> Result<(), PutRefused> {
        match (hint_for, sent) {
            (Some(owner), _) if owner != *self.me => {
                let versions = self.store.without_purged(&key, versions);
                if !versions.is_empty() {
                    self.hints.lock().add(owner, key, versions, self.now_ms)?;
                }
            }
            (_, Some(sent)) => {
                self.store.merge_sent(&key, versions, sent)?;
            }
            (_, None) => {
                self.store.merge_owned(&key, versions)?;
            }
        }
        Ok(())
    }

    /// Serves a batch in order, and stops before the request whose reply would take the
    /// answer past `budget` bytes (the first request is always served): the sender asks again
    /// for the rest, so no answer can outgrow the frame limit however large the sets are.
    pub fn serve(&self, requests: Vec<ReplicaRequest>, budget: usize) -> Vec<ReplicaReply> {
        let mut replies = Vec::with_capacity(requests.len());
        let mut bytes = 0;
        for request in requests {
            let reply = match request {
                ReplicaRequest::Get(_) if !self.member => {
                    ReplicaReply::Refused(PutRefused::NotAMember.to_string())
                }
                ReplicaRequest::Get(key) => ReplicaReply::Got(self.read_encoded(&key)),
                ReplicaRequest::Put(put) => match self.apply(put) {
                    Ok(()) => ReplicaReply::Stored,
                    Err(e) => ReplicaReply::Refused(e.to_string()),
                },
            };
            bytes += reply.size_bound();
            // Only a read is left out: it changed nothing, so asking again is harmless. An
            // ack is a byte; a write is never applied without being answered.
            if bytes > budget && !replies.is_empty() && matches!(reply, ReplicaReply::Got(_)) {
                break;
            }
            replies.push(reply);
        }
        replies
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::ids::ActorId;
    use crate::core::vclock::VClock;

    #[test]
    fn a_write_that_leaves_exactly_its_set_is_stored_as_sent_and_any_other_is_merged() {
        let (me, store, hints) = (
            NodeId::new("r"),
            Store::new(ActorId::new("r", 1)),
            SharedHints::default(),
        );
        let local = LocalReplica::for_tests(&me, &store, &hints);
        let key = Key::from_static(b"k");
        let put = |versions: &EncodedSet| ReplicaPut {
            key: key.clone(),
            versions: versions.clone(),
            hint_for: None,
        };
        let (a, b) = (
            Store::new(ActorId::new("a", 1)),
            Store::new(ActorId::new("b", 1)),
        );
        let first = a
            .coordinate(&key, &VClock::new(), Some(Bytes::from("1")), 0)
            .unwrap();
        let other = b
            .coordinate(&key, &VClock::new(), Some(Bytes::from("2")), 0)
            .unwrap();
        local.apply(put(&first.versions)).unwrap();
        assert_eq!(store.get_encoded(&key), first.versions);
        // Concurrent with what is stored: both stay, and what is stored is the merge, not the
        // set that came.
        local.apply(put(&other.versions)).unwrap();
        let both = store.get(&key);
        assert_eq!(both.len(), 2);
        assert_eq!(store.get_encoded(&key), EncodedSet::encode(&both));
        // A write that saw both replaces them.
        b.merge(&key, &both).unwrap();
        let last = b
            .coordinate(&key, &both.context(), Some(Bytes::from("3")), 0)
            .unwrap();
        local.apply(put(&last.versions)).unwrap();
        assert_eq!(store.get(&key), last.versions.decode().unwrap());
        assert_eq!(store.get(&key).len(), 1);
        assert_eq!(store.get_encoded(&key), last.versions);
    }

    #[test]
    fn a_hint_of_versions_a_purge_here_deleted_keeps_nothing_and_a_newer_write_is_kept() {
        let me = NodeId::new("r");
        let (store, hints) = (Store::new(ActorId::new("r", 1)), SharedHints::default());
        let local = LocalReplica::for_tests(&me, &store, &hints);
        let key = Key::from_static(b"k");
        let writer = Store::new(ActorId::new("w", 1));
        let old = writer
            .coordinate(&key, &VClock::new(), Some(Bytes::from_static(b"old")), 0)
            .unwrap();
        let deleted = writer.coordinate(&key, &old.answer, None, 1).unwrap();
        let digest = store.merge(&key, &deleted.set()).unwrap().digest;
        assert!(store.purge_tombstones(&key, digest, 10));
        let owner = Some(NodeId::new("owner"));
        local
            .apply_set(key.clone(), old.set(), owner.clone())
            .unwrap();
        assert!(
            hints.lock().is_empty(),
            "a copy in flight of a purged value"
        );
        let newer = writer
            .coordinate(&key, &VClock::new(), Some(Bytes::from_static(b"new")), 2)
            .unwrap();
        local.apply_set(key.clone(), newer.set(), owner).unwrap();
        assert_eq!(hints.lock().len(), 1);
    }
}
