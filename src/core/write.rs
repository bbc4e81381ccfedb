//! A coordinated write, as a state machine: the coordinator's decisions, no I/O.
//!
//! [`WriteRun::start`] makes the dot and applies the write to this node's own set in one step
//! ([`crate::core::store::Store::coordinate`]), keeps a hint when this node stands in for a
//! dead owner, and returns the replica writes to send: the whole set, to every other target
//! of the sloppy quorum. The caller sends them, feeds each answer back ([`WriteRun::on_ack`],
//! [`WriteRun::on_failure`]) and answers the client once [`WriteRun::outcome`] is settled:
//! at the W-th ack, or as soon as W acks can no longer arrive. A failed or timed-out RPC is
//! never an ack.

use bytes::Bytes;

use super::ids::{Key, NodeId};
use super::quorum::{Failure, Progress, QuorumError, QuorumTracker, Shortfall, Target};
use super::replica::{LocalReplica, ReplicaPut};
use super::ring::RingError;
use super::store::StoreError;
use super::vclock::{Dot, VClock};
use super::view::View;

/// A client's write as the coordinator receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRequest {
    /// The key.
    pub key: Key,
    /// The value, or `None` for a delete (a tombstone).
    pub value: Option<Bytes>,
    /// What the client had read.
    pub context: VClock,
    /// Acks to wait for.
    pub w: usize,
}

/// A replica write to send to another node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The node to send it to.
    pub to: NodeId,
    /// The write.
    pub put: ReplicaPut,
}

/// Why a write could not be started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The ring is empty: no key has an owner.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// The store refused the write (forged context, set limits, exhausted counter).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The quorum cannot be set up (W of zero).
    #[error(transparent)]
    Quorum(#[from] QuorumError),
}

/// One write under way on its coordinator.
#[derive(Debug)]
pub struct WriteRun {
    targets: Vec<Target>,
    dot: Dot,
    answer: VClock,
    tracker: QuorumTracker<()>,
    local_sync: bool,
}

impl WriteRun {
    /// Coordinates `request` on this node at wall time `now_ms`: applies it here and returns
    /// the run with the replica writes to send.
    pub fn start(
        local: &LocalReplica<'_>,
        view: &View<'_>,
        request: WriteRequest,
        now_ms: u64,
    ) -> Result<(WriteRun, Vec<Outgoing>), WriteError> {
        let targets = view.targets(&request.key)?;
        let coordinated =
            local
                .store
                .coordinate(&request.key, &request.context, request.value, now_ms)?;
        let answer = coordinated.answer;
        let required = view.quorum(request.w);
        let mut tracker = QuorumTracker::new(required, targets.iter().map(|t| t.node.clone()))?;
        let mut outgoing = Vec::with_capacity(targets.len());
        let mut local_sync = false;
        for Target {
            node,
            stands_in_for,
        } in targets.iter().cloned()
        {
            // Every replica gets the same encoded set: a reference, not a copy.
            let put = ReplicaPut {
                key: request.key.clone(),
                versions: coordinated.versions.clone(),
                hint_for: stands_in_for,
            };
            if node != *view.me {
                outgoing.push(Outgoing { to: node, put });
                continue;
            }
            // Applied above; as a fallback we also keep it as a hint for the absent owner,
            // and a hint we cannot keep is no ack. On a store that acks after an fsync, the
            // caller feeds our own ack once one covered the write.
            let applied = match put.hint_for {
                None => Ok(()),
                Some(_) => local.apply(put),
            };
            match applied {
                Ok(()) if local.ack_after_sync => local_sync = true,
                Ok(()) => {
                    tracker.on_reply(&node, ());
                }
                Err(_) => {
                    tracker.on_failure(&node, Failure::Error);
                }
            }
        }
        let run = WriteRun {
            targets,
            dot: coordinated.dot,
            answer,
            tracker,
            local_sync,
        };
        Ok((run, outgoing))
    }

    /// True when this node's own ack waits for an fsync: the caller syncs the store, then
    /// feeds [`WriteRun::on_ack`] (or [`WriteRun::on_failure`]) for this node.
    pub fn awaits_local_sync(&self) -> bool {
        self.local_sync
    }

    /// The replicas of the write, this node included when it is one.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The dot made for the write.
    pub fn dot(&self) -> &Dot {
        &self.dot
    }

    /// `from` acknowledged its replica write.
    pub fn on_ack(&mut self, from: &NodeId) -> Progress {
        self.tracker.on_reply(from, ())
    }

    /// `from` refused, failed or did not answer in time.
    pub fn on_failure(&mut self, from: &NodeId, kind: Failure) -> Progress {
        self.tracker.on_failure(from, kind)
    }

    /// The answer once settled: the context covering the new version, or the shortfall.
    pub fn outcome(&self) -> Option<Result<VClock, Shortfall>> {
        match self.tracker.progress() {
            Progress::Pending => None,
            Progress::Done => Some(Ok(self.answer.clone())),
            Progress::Failed => Some(Err(self.tracker.shortfall())),
        }
    }

    /// Acks received so far.
    pub fn acks(&self) -> usize {
        self.tracker.successes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hints::{HintLimits, SharedHints};
    use crate::core::ids::{ActorId, nodes};
    use crate::core::ring::Ring;
    use crate::core::store::Store;

    struct Node {
        me: NodeId,
        store: Store,
        hints: SharedHints,
    }

    impl Node {
        fn new(name: &str, hint_limits: HintLimits) -> Node {
            Node {
                me: NodeId::new(name),
                store: Store::new(ActorId::new(name, 1)),
                hints: SharedHints::new(hint_limits),
            }
        }

        fn local(&self) -> LocalReplica<'_> {
            LocalReplica::for_tests(&self.me, &self.store, &self.hints)
        }
    }

    fn request(key: &Key, w: usize) -> WriteRequest {
        WriteRequest {
            key: key.clone(),
            value: Some(Bytes::from("v")),
            context: VClock::new(),
            w,
        }
    }

    #[test]
    fn the_coordinator_applies_sends_the_whole_set_and_answers_at_w() {
        let ring = Ring::with_default_vnodes(nodes(&["a", "b", "c", "d"])).unwrap();
        let key = (0..)
            .map(|i| Key::from(format!("k{i}")))
            .find(|k| ring.owners(k, 3).unwrap()[0].as_str() == "a")
            .unwrap();
        let a = Node::new("a", HintLimits::NONE);
        let live = |_: &NodeId| true;
        let view = View::n3(&a.me, &ring, &live);
        let (mut run, out) = WriteRun::start(&a.local(), &view, request(&key, 2), 5).unwrap();
        assert_eq!(out.len(), 2);
        assert!(
            out.iter()
                .all(|o| o.put.versions.decode() == Ok(a.store.get(&key)))
        );
        assert_eq!(run.acks(), 1, "the coordinator's own copy counts");
        assert_eq!(run.outcome(), None);
        assert_eq!(run.on_ack(&out[0].to), Progress::Done);
        let context = run.outcome().unwrap().unwrap();
        assert!(context.contains(run.dot()));
    }

    #[test]
    fn a_coordinator_standing_in_whose_hint_store_is_full_is_no_ack() {
        let ring = Ring::with_default_vnodes(nodes(&["a", "b", "c", "d"])).unwrap();
        // A key that "a" does not own: "a" stands in for its dead first owner.
        let key = (0..)
            .map(|i| Key::from(format!("k{i}")))
            .find(|k| {
                let list: Vec<NodeId> = ring.preference_list(k).unwrap().cloned().collect();
                list[3].as_str() == "a"
            })
            .unwrap();
        let owners = ring.owners(&key, 3).unwrap();
        let dead = owners[0].clone();
        let live = move |n: &NodeId| *n != dead;
        let full = HintLimits {
            max_hints: 0,
            max_bytes: 0,
        };
        for (limits, acks) in [(HintLimits::NONE, 1), (full, 0)] {
            let a = Node::new("a", limits);
            let view = View::n3(&a.me, &ring, &live);
            let (run, out) = WriteRun::start(&a.local(), &view, request(&key, 3), 0).unwrap();
            assert_eq!(out.len(), 2);
            assert_eq!(run.acks(), acks);
            assert_eq!(a.hints.lock().len(), acks);
        }
    }

    #[test]
    fn w_is_capped_by_the_ring_members_never_by_their_liveness() {
        let a = Node::new("a", HintLimits::NONE);
        let key = Key::from_static(b"k");
        let all_live = |_: &NodeId| true;
        // A lone member with the default N=3, W=2 answers at once from its own copy.
        let alone = Ring::with_default_vnodes(nodes(&["a"])).unwrap();
        let view = View::n3(&a.me, &alone, &all_live);
        let (run, out) = WriteRun::start(&a.local(), &view, request(&key, 2), 0).unwrap();
        assert!(out.is_empty());
        assert!(
            matches!(run.outcome(), Some(Ok(_))),
            "one member: W=2 is met by it"
        );
        // Two members: W=3 waits for both, and a member that is down lowers nothing: the
        // write then fails at once, short of its second ack.
        let pair = Ring::with_default_vnodes(nodes(&["a", "b"])).unwrap();
        let b_down = |n: &NodeId| n.as_str() != "b";
        let view = |live| View {
            me: &a.me,
            ring: &pair,
            n: 3,
            live,
        };
        assert_eq!(view(&all_live).quorum(3), 2);
        let (run, out) =
            WriteRun::start(&a.local(), &view(&all_live), request(&key, 3), 0).unwrap();
        assert_eq!(
            (run.outcome(), out.len()),
            (None, 1),
            "W=3 on two members waits for b"
        );
        let (run, _) = WriteRun::start(&a.local(), &view(&b_down), request(&key, 3), 0).unwrap();
        match run.outcome() {
            Some(Err(shortfall)) => assert_eq!(shortfall.required, 2),
            other => panic!("with b down W=3 on two members must fail, got {other:?}"),
        }
    }

    #[test]
    fn a_forged_context_is_refused_before_anything_is_written() {
        let ring = Ring::with_default_vnodes(nodes(&["a"])).unwrap();
        let a = Node::new("a", HintLimits::NONE);
        let live = |_: &NodeId| true;
        let view = View {
            me: &a.me,
            ring: &ring,
            n: 1,
            live: &live,
        };
        let key = Key::from_static(b"k");
        let mut forged = request(&key, 1);
        forged
            .context
            .add_dot(&Dot::new(a.store.actor(), u64::MAX - 1), 0);
        assert!(matches!(
            WriteRun::start(&a.local(), &view, forged, 0),
            Err(WriteError::Store(StoreError::ForgedContext { .. }))
        ));
        assert!(a.store.is_empty());
        let (run, _) = WriteRun::start(&a.local(), &view, request(&key, 1), 0).unwrap();
        assert_eq!(run.dot().counter, 1, "the counter was not raised");
    }
}
