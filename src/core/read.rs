//! A coordinated read, as a state machine, with its read repair: no I/O.
//!
//! [`ReadRun::start`] picks the replicas (the sloppy quorum's targets), answers for this node
//! at once if it is one of them, and names the others to ask. The caller feeds each answer
//! back and answers the client once [`ReadRun::outcome`] is settled (R replies, or R out of
//! reach). Late replies still count: once every target answered or failed,
//! [`ReadRun::repairs`] gives the reconciled set to every owner that answered with a stale
//! or empty one, and repairs this node's own copy itself.

use super::encoded_set::EncodedSet;
use super::ids::{Key, NodeId};
use super::quorum::{Failure, Progress, QuorumError, QuorumTracker, Shortfall, Target};
use super::replica::{LocalReplica, ReplicaPut};
use super::ring::RingError;
use super::version::VersionSet;
use super::view::View;
use super::write::Outgoing;

/// Why a read could not be started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The ring is empty: no key has an owner.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// The quorum cannot be set up (R of zero).
    #[error(transparent)]
    Quorum(#[from] QuorumError),
}

/// One read under way on its coordinator.
#[derive(Debug)]
pub struct ReadRun {
    targets: Vec<Target>,
    key: Key,
    owners: Vec<NodeId>,
    tracker: QuorumTracker<VersionSet>,
}

impl ReadRun {
    /// Starts a read of `key` waiting for `r` replies; returns the run and the nodes to ask.
    pub fn start(
        local: &LocalReplica<'_>,
        view: &View<'_>,
        key: Key,
        r: usize,
    ) -> Result<(ReadRun, Vec<NodeId>), ReadError> {
        let targets = view.targets(&key)?;
        let mut tracker =
            QuorumTracker::new(view.quorum(r), targets.iter().map(|t| t.node.clone()))?;
        let owners = targets
            .iter()
            .filter(|t| !t.is_hinted())
            .map(|t| t.node.clone())
            .collect();
        let mut ask = Vec::with_capacity(targets.len());
        for target in &targets {
            if target.node == *view.me {
                tracker.on_reply(&target.node, local.read(&key));
            } else {
                ask.push(target.node.clone());
            }
        }
        Ok((
            ReadRun {
                targets,
                key,
                owners,
                tracker,
            },
            ask,
        ))
    }

    /// The replicas asked, this node included when it is one.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The key read.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// `from` answered with its set.
    pub fn on_reply(&mut self, from: &NodeId, set: VersionSet) -> Progress {
        self.tracker.on_reply(from, set)
    }

    /// `from` refused, failed or did not answer in time.
    pub fn on_failure(&mut self, from: &NodeId, kind: Failure) -> Progress {
        self.tracker.on_failure(from, kind)
    }

    /// The answer once settled: the merge of the replies, or the shortfall.
    pub fn outcome(&self) -> Option<Result<VersionSet, Shortfall>> {
        match self.tracker.progress() {
            Progress::Pending => None,
            Progress::Done => Some(Ok(merge_all(self.tracker.replies().iter().map(|(_, s)| s)))),
            Progress::Failed => Some(Err(self.tracker.shortfall())),
        }
    }

    /// Replies received so far.
    pub fn replies(&self) -> usize {
        self.tracker.successes()
    }

    /// Read repair, once the replies are in: merges the reconciled set into this node's own
    /// copy if it answered stale, and returns the writes for every other owner that did.
    /// Fallbacks are left alone: what they hold is a hint on its way to its owner.
    pub fn repairs(&self, local: &LocalReplica<'_>) -> Vec<Outgoing> {
        let replies = self.tracker.replies();
        // The common case, replicas in sync: nothing to merge, hash or send.
        if let Some(((_, first), rest)) = replies.split_first()
            && rest.iter().all(|(_, set)| set == first)
        {
            return Vec::new();
        }
        let merged = merge_all(replies.iter().map(|(_, s)| s));
        let digest = merged.digest();
        let mut out = Vec::new();
        // Encoded once, for every owner that answered stale.
        let mut encoded = None;
        for (node, set) in replies {
            if !self.owners.contains(node) || set.digest() == digest {
                continue;
            }
            if node == local.me {
                let _ = local.apply_set(self.key.clone(), merged.clone(), None);
                continue;
            }
            let versions = encoded.get_or_insert_with(|| EncodedSet::encode(&merged));
            out.push(Outgoing {
                to: node.clone(),
                put: ReplicaPut {
                    key: self.key.clone(),
                    versions: versions.clone(),
                    hint_for: None,
                },
            });
        }
        out
    }
}

/// The merge of `sets`. The first is taken as it is: merging into an empty set would rebuild it.
/// A set equal to the merge so far is skipped: merging is idempotent, and comparing is far
/// cheaper than a merge, which clones and sorts every version (replicas in sync answer alike).
pub fn merge_all<'a>(sets: impl IntoIterator<Item = &'a VersionSet>) -> VersionSet {
    let mut sets = sets.into_iter();
    let mut merged = sets.next().cloned().unwrap_or_default();
    for set in sets {
        if *set != merged {
            merged.merge(set);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::hints::SharedHints;
    use crate::core::ids::ActorId;
    use crate::core::ring::Ring;
    use crate::core::store::Store;
    use crate::core::vclock::VClock;

    #[test]
    fn a_read_answers_at_r_and_repairs_every_stale_owner_when_all_are_in() {
        let names = ["a", "b", "c"];
        let ring = Ring::with_default_vnodes(names.iter().map(|n| NodeId::new(*n))).unwrap();
        let (me, store, hints) = (
            NodeId::new("a"),
            Store::new(ActorId::new("a", 1)),
            SharedHints::default(),
        );
        let local = LocalReplica::for_tests(&me, &store, &hints);
        let live = |_: &NodeId| true;
        let view = View::n3(&me, &ring, &live);
        let key = Key::from_static(b"k");
        let writer = Store::new(ActorId::new("w", 1));
        let fresh = writer
            .coordinate(&key, &VClock::new(), Some(Bytes::from("v")), 0)
            .unwrap()
            .set();
        let (mut run, ask) = ReadRun::start(&local, &view, key.clone(), 2).unwrap();
        assert_eq!(ask.len(), 2);
        assert_eq!(run.outcome(), None);
        assert_eq!(run.on_reply(&ask[0], fresh.clone()), Progress::Done);
        assert_eq!(run.outcome(), Some(Ok(fresh.clone())));
        assert!(run.replies() < run.targets().len());
        run.on_reply(&ask[1], VersionSet::new());
        assert_eq!(run.replies(), run.targets().len(), "every reply is in");
        let repairs = run.repairs(&local);
        assert_eq!(repairs.len(), 1, "the empty owner");
        assert_eq!(repairs[0].to, ask[1]);
        assert_eq!(repairs[0].put.versions.decode(), Ok(fresh.clone()));
        assert_eq!(store.get(&key), fresh, "our own copy was repaired");

        // Every replica in sync now: the next read repairs nothing.
        let (mut run, ask) = ReadRun::start(&local, &view, key.clone(), 2).unwrap();
        for node in &ask {
            run.on_reply(node, fresh.clone());
        }
        assert_eq!(run.outcome(), Some(Ok(fresh.clone())));
        assert!(run.repairs(&local).is_empty());
    }

    #[test]
    fn merging_equal_sets_is_the_set_and_order_does_not_matter() {
        let a = Store::new(ActorId::new("a", 1));
        let b = Store::new(ActorId::new("b", 1));
        let key = Key::from_static(b"k");
        let write = |s: &Store, v: &'static str| {
            s.coordinate(&key, &VClock::new(), Some(Bytes::from(v)), 0)
                .unwrap()
                .set()
        };
        let (x, y) = (write(&a, "x"), write(&b, "y"));
        let mut both = x.clone();
        both.merge(&y);
        assert_eq!(merge_all([&x, &x, &x]), x);
        assert_eq!(merge_all([&x, &x, &y]), both);
        assert_eq!(merge_all([&y, &x, &x, &y]), both);
        assert_eq!(merge_all([&both, &x, &y]), both);
        assert_eq!(merge_all(std::iter::empty()), VersionSet::new());
    }
}
