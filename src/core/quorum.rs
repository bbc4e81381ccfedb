//! Sloppy-quorum bookkeeping: who gets a request, who coordinates it, and when W acks (or R
//! replies) are in hand or can no longer arrive.
//!
//! Target selection follows Dynamo §4.6: a dead owner's replica goes to the next live node past
//! the top N with a hint naming that owner, so writes stay available while W nodes of the
//! extended preference list are reachable. [`route`] says whether a node coordinates a write or
//! forwards it. The tracker is kept by a [`WriteRun`](super::write::WriteRun) or a
//! [`ReadRun`](super::read::ReadRun), which the fan-out feeds with every answer; it never looks
//! at a clock, so timeouts arrive as events like any other failure.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::NodeId;

/// One replica a request is sent to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The node that receives the request.
    pub node: NodeId,
    /// The dead owner this node keeps a hinted copy for; `None` when `node` is an owner itself.
    pub stands_in_for: Option<NodeId>,
}

impl Target {
    /// Whether the write must be stored as a hint for another node.
    pub fn is_hinted(&self) -> bool {
        self.stands_in_for.is_some()
    }
}

/// Yields each node once, in first-seen order, so a malformed list can never name a node twice.
/// The nodes seen are the ring's members, a handful to a few dozen: a list beats hashing them.
fn distinct<'a>(walk: impl Iterator<Item = &'a NodeId>) -> impl Iterator<Item = &'a NodeId> {
    let mut seen: Vec<&NodeId> = Vec::new();
    walk.filter(move |node| {
        let new = !seen.contains(node);
        if new {
            seen.push(node);
        }
        new
    })
}

/// The replicas of a request under a sloppy quorum.
///
/// `preference` is the key's preference list in ring-walk order: the first `n` distinct nodes
/// own the key, the rest are fallbacks. Live owners are targets in their own right; each dead
/// owner, in walk order, is served by the next unused live fallback, which carries a hint for
/// it. Dead owners left without a fallback are dropped, so fewer than `n` targets mean the
/// cluster has too few live nodes; the caller decides whether that still reaches W. Targets come
/// in the walk order of the owners they serve. Repeated nodes in `preference` count once, and
/// the list is read lazily: fallbacks are only pulled while a dead owner still needs one.
pub fn select_targets<'a>(
    preference: impl IntoIterator<Item = &'a NodeId>,
    n: usize,
    is_live: impl Fn(&NodeId) -> bool,
) -> Vec<Target> {
    let mut walk = distinct(preference.into_iter()).fuse();
    let owners: Vec<&NodeId> = walk.by_ref().take(n).collect();
    let mut live_fallbacks = walk.filter(|node| is_live(node));
    let mut targets = Vec::with_capacity(owners.len());
    for owner in owners {
        if is_live(owner) {
            targets.push(Target {
                node: owner.clone(),
                stands_in_for: None,
            });
        } else if let Some(stand_in) = live_fallbacks.next() {
            targets.push(Target {
                node: stand_in.clone(),
                stands_in_for: Some(owner.clone()),
            });
        }
    }
    targets
}

/// What a node that received a request should do with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Coordinate the request here.
    Coordinate,
    /// Hand the request to this node, which coordinates it.
    Forward(NodeId),
    /// No node of the preference list is live: the request cannot be served.
    Unavailable,
}

/// Routes a request that reached `local`: any owner coordinates; any other node forwards it to
/// the first live owner, else the first live fallback (both are "the first live node in walk
/// order": a live owner always comes before every fallback).
///
/// `local` is treated as live whatever `is_live` says of it, since it is the node running this
/// code. Letting every owner coordinate (not only the first) spares a network hop, as in Dynamo.
pub fn route<'a>(
    local: &NodeId,
    preference: impl IntoIterator<Item = &'a NodeId>,
    n: usize,
    is_live: impl Fn(&NodeId) -> bool,
) -> Route {
    let mut walk = distinct(preference.into_iter()).fuse();
    let owners: Vec<&NodeId> = walk.by_ref().take(n).collect();
    if owners.contains(&local) {
        return Route::Coordinate;
    }
    let first_live = owners
        .into_iter()
        .chain(walk)
        .find(|node| *node == local || is_live(node));
    match first_live {
        Some(node) if node == local => Route::Coordinate,
        Some(node) => Route::Forward(node.clone()),
        None => Route::Unavailable,
    }
}

/// Why a target did not ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Failure {
    /// The target answered with an error, or the RPC failed to be delivered.
    Error,
    /// The target did not answer within the request's timeout.
    Timeout,
}

/// Where a quorum stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Progress {
    /// Not yet decided: enough targets are still outstanding to reach the quorum.
    Pending,
    /// `required` distinct targets replied successfully.
    Done,
    /// Too many targets failed for `required` successes to ever arrive.
    Failed,
}

impl Progress {
    /// Whether the outcome is final (it never changes once settled).
    pub fn is_settled(self) -> bool {
        self != Progress::Pending
    }
}

/// A quorum that cannot be set up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    /// A quorum of zero would succeed without asking anyone, which no caller means.
    #[error("a quorum must require at least one reply")]
    ZeroRequired,
    /// A target listed twice could be counted twice toward the quorum.
    #[error("target {0} is listed more than once")]
    DuplicateTarget(NodeId),
}

/// How a failed quorum fell short, for the "insufficient acks" error the API returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shortfall {
    /// Successes needed (W or R).
    pub required: usize,
    /// Targets that replied successfully.
    pub succeeded: usize,
    /// Targets that answered with an error (timeouts are counted apart).
    pub failed: usize,
    /// Targets that did not answer in time.
    pub timed_out: usize,
    /// Targets asked; the rest of them were still outstanding.
    pub targets: usize,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} required replies from {} targets ({} failed, {} timed out)",
            self.succeeded, self.required, self.targets, self.failed, self.timed_out
        )
    }
}

/// What has been heard from one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Outstanding,
    Answered,
}

/// Counts replies from a fixed set of targets until `required` succeed or that becomes impossible.
///
/// Each target counts at most once: a second event from a target, or any event from a node that
/// is not a target, is ignored. The outcome is sticky, but events after it are still recorded, because late replies feed read repair.
#[derive(Clone, Debug)]
pub struct QuorumTracker<T> {
    required: usize,
    // One per target, in the targets' order: N is a handful, so a scan beats hashing names.
    slots: Vec<(NodeId, Slot)>,
    replies: Vec<(NodeId, T)>,
    failures: Vec<Failure>,
    progress: Progress,
}

impl<T> QuorumTracker<T> {
    /// A tracker waiting for `required` successes among `targets`.
    ///
    /// Fewer targets than `required` is a legitimate outcome (too few live replicas) and gives a
    /// tracker that is `Failed` from the start; `required == 0` and repeated targets are errors.
    pub fn new(
        required: usize,
        targets: impl IntoIterator<Item = NodeId>,
    ) -> Result<Self, QuorumError> {
        if required == 0 {
            return Err(QuorumError::ZeroRequired);
        }
        let mut slots: Vec<(NodeId, Slot)> = Vec::new();
        for target in targets {
            if slots.iter().any(|(node, _)| *node == target) {
                return Err(QuorumError::DuplicateTarget(target));
            }
            slots.push((target, Slot::Outstanding));
        }
        let mut tracker = QuorumTracker {
            required,
            slots,
            replies: Vec::new(),
            failures: Vec::new(),
            progress: Progress::Pending,
        };
        tracker.settle();
        Ok(tracker)
    }

    /// Records a successful reply from `from`.
    pub fn on_reply(&mut self, from: &NodeId, reply: T) -> Progress {
        if self.claim(from) {
            self.replies.push((from.clone(), reply));
            self.settle();
        }
        self.progress
    }

    /// Records that `from` will not ack, for the given reason; never counts as a success.
    pub fn on_failure(&mut self, from: &NodeId, kind: Failure) -> Progress {
        if self.claim(from) {
            self.failures.push(kind);
            self.settle();
        }
        self.progress
    }

    /// The current outcome.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// Number of targets.
    pub fn targets(&self) -> usize {
        self.slots.len()
    }

    /// Successful replies so far, in arrival order (including those after the outcome).
    pub fn replies(&self) -> &[(NodeId, T)] {
        &self.replies
    }

    /// Number of targets that replied successfully.
    pub fn successes(&self) -> usize {
        self.replies.len()
    }

    /// Number of targets not heard from yet.
    pub fn outstanding(&self) -> usize {
        self.slots.len() - self.replies.len() - self.failures.len()
    }

    /// The counts behind the outcome, for reporting a quorum that fell short.
    pub fn shortfall(&self) -> Shortfall {
        let timed_out = self
            .failures
            .iter()
            .filter(|kind| **kind == Failure::Timeout)
            .count();
        Shortfall {
            required: self.required,
            succeeded: self.successes(),
            failed: self.failures.len() - timed_out,
            timed_out,
            targets: self.targets(),
        }
    }

    /// Marks `from` as answered if it is a still-outstanding target; false if the event is to
    /// be ignored.
    fn claim(&mut self, from: &NodeId) -> bool {
        match self
            .slots
            .iter_mut()
            .find(|(node, _)| node == from)
            .map(|(_, slot)| slot)
        {
            Some(slot @ Slot::Outstanding) => {
                *slot = Slot::Answered;
                true
            }
            _ => false,
        }
    }

    /// Decides the outcome once; a settled outcome never moves.
    fn settle(&mut self) {
        if self.progress.is_settled() {
            return;
        }
        if self.successes() >= self.required {
            self.progress = Progress::Done;
        } else if self.successes() + self.outstanding() < self.required {
            self.progress = Progress::Failed;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(NodeId::new).collect()
    }

    fn live_except(dead: &[&str]) -> impl Fn(&NodeId) -> bool {
        let dead = ids(dead);
        move |node| !dead.contains(node)
    }

    fn owner(name: &str) -> Target {
        Target {
            node: NodeId::new(name),
            stands_in_for: None,
        }
    }

    fn hinted(name: &str, for_owner: &str) -> Target {
        Target {
            node: NodeId::new(name),
            stands_in_for: Some(NodeId::new(for_owner)),
        }
    }

    // ---- target selection ----

    #[test]
    fn dead_middle_owner_is_replaced_in_its_slot() {
        let pref = ids(&["o1", "o2", "o3", "f1", "f2"]);
        let targets = select_targets(&pref, 3, live_except(&["o2"]));
        assert_eq!(targets, vec![owner("o1"), hinted("f1", "o2"), owner("o3")]);
        assert!(targets[1].is_hinted() && !targets[0].is_hinted());
    }

    #[test]
    fn two_dead_owners_take_first_two_live_fallbacks_in_order() {
        let pref = ids(&["o1", "o2", "o3", "f1", "f2", "f3"]);
        let targets = select_targets(&pref, 3, live_except(&["o1", "o3"]));
        assert_eq!(
            targets,
            vec![hinted("f1", "o1"), owner("o2"), hinted("f2", "o3")]
        );
    }

    #[test]
    fn dead_fallbacks_are_skipped() {
        let pref = ids(&["o1", "o2", "o3", "f1", "f2", "f3"]);
        let targets = select_targets(&pref, 3, live_except(&["o2", "f1", "f2"]));
        assert_eq!(targets, vec![owner("o1"), hinted("f3", "o2"), owner("o3")]);
    }

    #[test]
    fn too_few_fallbacks_give_fewer_targets() {
        let pref = ids(&["o1", "o2", "o3", "f1", "f2"]);
        let targets = select_targets(&pref, 3, live_except(&["o1", "o2", "f2"]));
        // o1 gets f1; o2 is left without a stand-in.
        assert_eq!(targets, vec![hinted("f1", "o1"), owner("o3")]);
    }

    #[test]
    fn all_live_gives_exactly_the_owners_and_reads_no_fallback() {
        let pref = ids(&["o1", "o2", "o3", "f1", "f2"]);
        let pulled = Cell::new(0);
        let walk = pref.iter().inspect(|_| pulled.set(pulled.get() + 1));
        let targets = select_targets(walk, 3, |_| true);
        assert_eq!(targets, vec![owner("o1"), owner("o2"), owner("o3")]);
        assert_eq!(
            pulled.get(),
            3,
            "fallbacks must not be walked when unneeded"
        );
    }

    #[test]
    fn n_larger_than_the_list_takes_all_of_it() {
        let pref = ids(&["o1", "o2"]);
        assert_eq!(
            select_targets(&pref, 5, |_| true),
            vec![owner("o1"), owner("o2")]
        );
        // A dead owner has no fallback to go to when every node is an owner.
        assert_eq!(
            select_targets(&pref, 5, live_except(&["o1"])),
            vec![owner("o2")]
        );
        assert!(select_targets(&pref, 0, |_| true).is_empty());
        assert!(select_targets(&[], 3, |_| true).is_empty());
    }

    #[test]
    fn repeated_nodes_in_the_list_count_once() {
        let pref = ids(&["o1", "o1", "o2", "o3", "o2", "f1"]);
        let targets = select_targets(&pref, 3, live_except(&["o3"]));
        assert_eq!(targets, vec![owner("o1"), owner("o2"), hinted("f1", "o3")]);
    }

    // ---- coordinator and routing ----

    #[test]
    fn a_stranger_forwards_to_the_first_live_owner() {
        let pref = ids(&["o1", "o2", "o3", "f1"]);
        let x = NodeId::new("x");
        assert_eq!(
            route(&x, &pref, 3, |_| true),
            Route::Forward(NodeId::new("o1"))
        );
        assert_eq!(
            route(&x, &pref, 3, live_except(&["o1"])),
            Route::Forward(NodeId::new("o2"))
        );
    }

    #[test]
    fn a_stranger_forwards_to_a_fallback_when_all_owners_are_dead() {
        let pref = ids(&["o1", "o2", "o3", "f1", "f2"]);
        assert_eq!(
            route(
                &NodeId::new("x"),
                &pref,
                3,
                live_except(&["o1", "o2", "o3", "f1"])
            ),
            Route::Forward(NodeId::new("f2"))
        );
    }

    #[test]
    fn a_stranger_has_nowhere_to_go_when_nobody_is_live() {
        let pref = ids(&["o1", "o2", "o3", "f1"]);
        let x = NodeId::new("x");
        assert_eq!(route(&x, &pref, 3, |_| false), Route::Unavailable);
        assert_eq!(route(&x, &[], 3, |_| true), Route::Unavailable);
    }

    #[test]
    fn owners_coordinate_and_others_forward() {
        let pref = ids(&["o1", "o2", "o3", "f1", "f2"]);
        let o3 = NodeId::new("o3");
        let f1 = NodeId::new("f1");
        let x = NodeId::new("x");
        // Any owner coordinates, even when an earlier owner is live.
        assert_eq!(route(&o3, &pref, 3, |_| true), Route::Coordinate);
        assert_eq!(
            route(&f1, &pref, 3, live_except(&["o1"])),
            Route::Forward(NodeId::new("o2"))
        );
        assert_eq!(
            route(&x, &pref, 3, |_| true),
            Route::Forward(NodeId::new("o1"))
        );
        // With the whole top N dead, the first live fallback coordinates.
        let owners_dead = live_except(&["o1", "o2", "o3"]);
        assert_eq!(route(&f1, &pref, 3, &owners_dead), Route::Coordinate);
        let f2 = NodeId::new("f2");
        assert_eq!(
            route(&f2, &pref, 3, &owners_dead),
            Route::Forward(f1.clone())
        );
        // The local node is live even if its view says otherwise.
        assert_eq!(route(&f1, &pref, 3, |_| false), Route::Coordinate);
        assert_eq!(route(&x, &pref, 3, |_| false), Route::Unavailable);
    }

    // ---- tracker ----

    fn tracker(required: usize, targets: &[&str]) -> QuorumTracker<u32> {
        QuorumTracker::new(required, ids(targets)).unwrap()
    }

    /// Targets that failed, errors and timeouts alike, as the shortfall reports them.
    fn failures<T>(t: &QuorumTracker<T>) -> usize {
        let short = t.shortfall();
        short.failed + short.timed_out
    }

    #[test]
    fn done_exactly_at_the_wth_success() {
        let (a, b, c) = (NodeId::new("a"), NodeId::new("b"), NodeId::new("c"));
        let mut t = tracker(2, &["a", "b", "c"]);
        assert_eq!(t.progress(), Progress::Pending);
        assert_eq!(t.on_reply(&a, 1), Progress::Pending);
        assert_eq!(t.on_failure(&b, Failure::Error), Progress::Pending);
        assert_eq!(t.on_reply(&c, 3), Progress::Done);
        assert_eq!((t.successes(), failures(&t), t.outstanding()), (2, 1, 0));
        assert_eq!(t.replies(), &[(a, 1), (c, 3)]);
    }

    #[test]
    fn failed_as_soon_as_quorum_is_unreachable() {
        let (a, b, c) = (NodeId::new("a"), NodeId::new("b"), NodeId::new("c"));
        let mut t = tracker(2, &["a", "b", "c"]);
        assert_eq!(t.on_failure(&a, Failure::Timeout), Progress::Pending);
        assert_eq!(t.on_failure(&b, Failure::Error), Progress::Failed);
        assert_eq!(t.outstanding(), 1);
        let short = t.shortfall();
        assert_eq!(
            short,
            Shortfall {
                required: 2,
                succeeded: 0,
                failed: 1,
                timed_out: 1,
                targets: 3
            }
        );
        assert_eq!(
            short.to_string(),
            "0 of 2 required replies from 3 targets (1 failed, 1 timed out)"
        );
        // The one still outstanding is c: its late reply is recorded.
        assert_eq!(t.on_reply(&c, 3), Progress::Failed);
        assert_eq!((t.replies(), t.outstanding()), (&[(c, 3)][..], 0));
    }

    #[test]
    fn too_few_targets_fail_at_once_and_zero_required_is_an_error() {
        assert_eq!(tracker(3, &["a", "b"]).progress(), Progress::Failed);
        assert_eq!(tracker(1, &[]).progress(), Progress::Failed);
        assert_eq!(
            QuorumTracker::<u32>::new(0, ids(&["a"])).unwrap_err(),
            QuorumError::ZeroRequired
        );
        assert_eq!(
            QuorumTracker::<u32>::new(1, ids(&["a", "b", "a"])).unwrap_err(),
            QuorumError::DuplicateTarget(NodeId::new("a"))
        );
    }

    #[test]
    fn duplicates_and_strangers_do_not_count() {
        let (a, b, x) = (NodeId::new("a"), NodeId::new("b"), NodeId::new("x"));
        let mut t = tracker(2, &["a", "b", "c"]);
        assert_eq!(t.on_reply(&a, 1), Progress::Pending);
        assert_eq!(t.on_reply(&a, 2), Progress::Pending);
        assert_eq!(t.on_reply(&x, 3), Progress::Pending);
        assert_eq!(t.on_failure(&a, Failure::Error), Progress::Pending);
        assert_eq!(t.successes(), 1);
        assert_eq!(failures(&t), 0);
        assert_eq!(t.outstanding(), 2);
        assert_eq!(t.replies(), &[(a.clone(), 1)]);
        // A failed target cannot later turn into a success.
        assert_eq!(t.on_failure(&b, Failure::Error), Progress::Pending);
        assert_eq!(t.on_reply(&b, 4), Progress::Pending);
        assert_eq!((t.successes(), failures(&t), t.outstanding()), (1, 1, 1));
    }

    #[test]
    fn outcomes_are_sticky_and_late_replies_are_recorded() {
        let (a, b, c) = (NodeId::new("a"), NodeId::new("b"), NodeId::new("c"));
        let mut done = tracker(1, &["a", "b", "c"]);
        assert_eq!(done.on_reply(&a, 1), Progress::Done);
        assert_eq!(done.on_failure(&b, Failure::Error), Progress::Done);
        assert_eq!(done.on_reply(&c, 3), Progress::Done);
        assert_eq!(done.replies(), &[(a.clone(), 1), (c.clone(), 3)]);
        let short = done.shortfall();
        assert_eq!((short.failed, short.timed_out), (1, 0), "b's error");

        let mut failed = tracker(3, &["a", "b", "c"]);
        assert_eq!(failed.on_failure(&a, Failure::Timeout), Progress::Failed);
        assert_eq!(failed.on_reply(&b, 2), Progress::Failed);
        assert_eq!(failed.on_reply(&c, 3), Progress::Failed);
        assert_eq!(failed.successes(), 2);
        assert_eq!(failed.shortfall().succeeded, 2);
    }

    // ---- properties ----

    const UNIVERSE: usize = 10;

    fn name(i: usize) -> NodeId {
        NodeId::new(format!("n{i}"))
    }

    proptest! {
        #[test]
        fn selection_invariants(
            list in prop::collection::vec(0..UNIVERSE, 0..14),
            live in prop::collection::vec(any::<bool>(), UNIVERSE),
            n in 0usize..6,
        ) {
            let pref: Vec<NodeId> = list.iter().map(|&i| name(i)).collect();
            let is_live = |node: &NodeId| {
                live[node.as_str()[1..].parse::<usize>().unwrap()]
            };
            let targets = select_targets(&pref, n, is_live);

            // Reference view of the list, written independently of the implementation.
            let mut walk: Vec<NodeId> = Vec::new();
            for node in &pref {
                if !walk.contains(node) {
                    walk.push(node.clone());
                }
            }
            let split = n.min(walk.len());
            let (owners, fallbacks) = walk.split_at(split);
            let live_count = walk.iter().filter(|node| is_live(node)).count();

            prop_assert_eq!(targets.len(), n.min(live_count));
            let nodes: HashSet<&NodeId> = targets.iter().map(|t| &t.node).collect();
            prop_assert_eq!(nodes.len(), targets.len(), "targets are distinct");
            let mut served = Vec::new();
            for target in &targets {
                prop_assert!(is_live(&target.node), "no dead target");
                match &target.stands_in_for {
                    None => prop_assert!(owners.contains(&target.node)),
                    Some(dead) => {
                        prop_assert!(owners.contains(dead) && !is_live(dead));
                        prop_assert!(!owners.contains(&target.node), "stand-ins are never owners");
                    }
                }
                let replica_of = target.stands_in_for.as_ref().unwrap_or(&target.node);
                served.push(owners.iter().position(|o| o == replica_of).unwrap());
            }
            // Strictly increasing owner slots: walk order, and one stand-in per dead owner at most.
            prop_assert!(served.windows(2).all(|w| w[0] < w[1]));
            // Every live owner is a target as itself.
            for o in owners.iter().filter(|o| is_live(o)) {
                prop_assert!(targets.contains(&owner(o.as_str())), "live owner {} missing", o);
            }
            // Stand-ins are the first live fallbacks, matched to dead owners in walk order.
            let hinted: Vec<(&NodeId, &NodeId)> = targets
                .iter()
                .filter_map(|t| t.stands_in_for.as_ref().map(|o| (o, &t.node)))
                .collect();
            let dead_owners = owners.iter().filter(|o| !is_live(o));
            let live_fallbacks = fallbacks.iter().filter(|f| is_live(f));
            let expected: Vec<(&NodeId, &NodeId)> = dead_owners.zip(live_fallbacks).collect();
            prop_assert_eq!(hinted, expected);

            // A node off the list forwards to the first live of the top N, else to the first
            // live fallback.
            let expected_route = owners
                .iter()
                .find(|o| is_live(o))
                .or_else(|| fallbacks.iter().find(|f| is_live(f)))
                .map_or(Route::Unavailable, |node| Route::Forward(node.clone()));
            prop_assert_eq!(route(&NodeId::new("stranger"), &pref, n, is_live), expected_route);
        }

        #[test]
        fn tracker_matches_reference_model(
            target_count in 0usize..6,
            required in 0usize..8,
            // (node index, kind): indexes past the targets are strangers; kind 0 = reply.
            events in prop::collection::vec((0usize..8, 0u8..3), 0..24),
        ) {
            let targets: Vec<NodeId> = (0..target_count).map(name).collect();
            let built = QuorumTracker::new(required, targets.clone());
            if required == 0 {
                prop_assert_eq!(built.unwrap_err(), QuorumError::ZeroRequired);
                return Ok(());
            }
            let mut tracker = built.unwrap();

            // Reference outcome after each prefix of events, recomputed from scratch.
            let outcome_after = |k: usize| -> Progress {
                let mut heard: Vec<usize> = Vec::new();
                let mut ok = 0;
                if required > target_count {
                    return Progress::Failed;
                }
                for &(i, kind) in &events[..k] {
                    if i >= target_count || heard.contains(&i) {
                        continue;
                    }
                    heard.push(i);
                    if kind == 0 {
                        ok += 1;
                    }
                    if ok == required {
                        return Progress::Done;
                    }
                    if ok + (target_count - heard.len()) < required {
                        return Progress::Failed;
                    }
                }
                Progress::Pending
            };

            prop_assert_eq!(tracker.progress(), outcome_after(0));
            let mut settled: Option<Progress> = tracker.progress().is_settled().then_some(tracker.progress());
            for (k, &(i, kind)) in events.iter().enumerate() {
                let from = name(i);
                let before = (tracker.progress(), tracker.successes(), tracker.outstanding());
                let got = match kind {
                    0 => tracker.on_reply(&from, k),
                    1 => tracker.on_failure(&from, Failure::Error),
                    _ => tracker.on_failure(&from, Failure::Timeout),
                };
                prop_assert_eq!(got, tracker.progress());
                prop_assert_eq!(got, outcome_after(k + 1));
                // Sticky outcomes.
                if let Some(first) = settled {
                    prop_assert_eq!(got, first);
                } else if got.is_settled() {
                    settled = Some(got);
                }
                // Failures never add successes.
                if kind != 0 {
                    prop_assert_eq!(tracker.successes(), before.1);
                }
                // Failed only when success has just become impossible.
                if got == Progress::Failed && before.0 == Progress::Pending {
                    prop_assert!(before.1 + before.2 >= required);
                    prop_assert!(tracker.successes() + tracker.outstanding() < required);
                }
                if got == Progress::Done && before.0 == Progress::Pending {
                    prop_assert_eq!(tracker.successes(), required);
                }
                prop_assert_eq!(
                    tracker.successes() + failures(&tracker) + tracker.outstanding(),
                    target_count
                );
            }

            // Recorded replies are exactly the first event of each target, when it was a reply.
            let mut first_events: Vec<(usize, u8, usize)> = Vec::new();
            for (k, &(i, kind)) in events.iter().enumerate() {
                if i < target_count && !first_events.iter().any(|e| e.0 == i) {
                    first_events.push((i, kind, k));
                }
            }
            let expected_replies: Vec<(NodeId, usize)> = first_events
                .iter()
                .filter(|e| e.1 == 0)
                .map(|e| (name(e.0), e.2))
                .collect();
            let short = tracker.shortfall();
            prop_assert_eq!(short.succeeded, expected_replies.len());
            prop_assert_eq!(short.failed, first_events.iter().filter(|e| e.1 == 1).count());
            prop_assert_eq!(short.timed_out, first_events.iter().filter(|e| e.1 == 2).count());
            prop_assert_eq!(tracker.replies(), expected_replies.as_slice());
        }
    }
}
