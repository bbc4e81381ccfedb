//! Dotted versions and the per-key sibling set.
//!
//! A [`Version`] is a value (or a tombstone), the [`Dot`] its coordinator made for it once,
//! and the causal context the client wrote with. Version X makes version Y obsolete only when
//! Y's dot lies inside X's context, so a blind write (empty context) erases nothing.
//!
//! A [`VersionSet`] is what a replica holds for one key: every version that no other version
//! in the set has made obsolete, sorted by dot. Replicas exchange whole sets and merge them;
//! merge is commutative, associative and idempotent, so replicas converge whatever the order
//! of delivery.
//!
//! Why whole sets travel: a read context is compressed into a version vector, and "context
//! holds counter k of actor A" is read as "the reader saw every version A made for this key up
//! to k". That is true only if no replica ever holds A's k-th version without also holding
//! A's earlier versions of the key (or versions that made them obsolete). The coordinator
//! keeps this so by making its dot and applying the write to its own set in one step
//! ([`crate::core::store::Store::coordinate`]), and by sending that whole set, never the new
//! version alone, to replicas and hints.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::vclock::{Dot, PRUNE_LIMIT, VClock};

/// One written value (or tombstone) with its identity and causal past.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Identity of this version, made once by its coordinator.
    pub dot: Dot,
    /// What the writer had seen: versions whose dots fall inside it are obsolete.
    pub context: VClock,
    /// The value, or `None` for a tombstone (a delete).
    pub value: Option<Bytes>,
    /// Coordinator wall time at the write; used only to prune clocks.
    pub timestamp_ms: u64,
}

impl Version {
    /// True for a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// True when `other` has seen this version (and so replaces it).
    pub fn is_obsoleted_by(&self, other: &Version) -> bool {
        other.dot != self.dot && other.context.contains(&self.dot)
    }
}

/// What a read of one key returns: the live values and one context covering all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadView {
    /// Values of the surviving versions, in dot order; tombstones are left out.
    pub values: Vec<Bytes>,
    /// Merge of the surviving versions' contexts and dots, tombstones included, so that a
    /// write with it replaces everything this read saw.
    pub context: VClock,
}

impl ReadView {
    /// True when no live value survives (absent or deleted key).
    pub fn is_not_found(&self) -> bool {
        self.values.is_empty()
    }
}

/// The versions of one key that no other version has made obsolete (siblings when > 1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSet {
    versions: Vec<Version>,
}

impl VersionSet {
    /// The empty set (key never written here).
    pub fn new() -> Self {
        VersionSet::default()
    }

    /// A set holding the surviving ones of `versions`.
    pub fn from_versions(versions: impl IntoIterator<Item = Version>) -> Self {
        let mut set = VersionSet::new();
        set.absorb(versions);
        set
    }

    /// The surviving versions, sorted by dot.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// Number of surviving versions, tombstones included.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// True when nothing is stored for the key.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// True when the set holds only tombstones (and at least one).
    pub fn is_all_tombstones(&self) -> bool {
        !self.is_empty() && self.versions.iter().all(Version::is_tombstone)
    }

    /// True when this set holds `dot` or a version that made it obsolete.
    pub fn has_seen(&self, dot: &Dot) -> bool {
        self.versions
            .iter()
            .any(|v| &v.dot == dot || v.context.contains(dot))
    }

    /// Merges another replica's set into this one; returns true when this set changed.
    pub fn merge(&mut self, other: &VersionSet) -> bool {
        self.absorb(other.versions.iter().cloned())
    }

    /// Merges a single version; returns true when the set changed.
    pub fn merge_version(&mut self, version: Version) -> bool {
        self.absorb(std::iter::once(version))
    }

    // Adds versions (a repeated dot is the same version), then drops every version that
    // another one has seen. Sorting by dot makes the result independent of arrival order.
    fn absorb(&mut self, incoming: impl IntoIterator<Item = Version>) -> bool {
        let mut all: Vec<(Version, bool)> = std::mem::take(&mut self.versions)
            .into_iter()
            .map(|v| (v, false))
            .collect();
        for v in incoming {
            if let Err(i) = all.binary_search_by(|(x, _)| x.dot.cmp(&v.dot)) {
                all.insert(i, (v, true));
            }
        }
        let obsolete: Vec<bool> = all
            .iter()
            .map(|(v, _)| all.iter().any(|(w, _)| v.is_obsoleted_by(w)))
            .collect();
        let mut changed = false;
        for ((version, is_new), dropped) in all.into_iter().zip(obsolete) {
            // Changed when a newcomer stays or an old version goes.
            changed |= is_new != dropped;
            if !dropped {
                self.versions.push(version);
            }
        }
        changed
    }

    /// The context covering every surviving version: merged contexts plus dots.
    pub fn context(&self) -> VClock {
        let mut ctx = VClock::new();
        for v in &self.versions {
            ctx.merge_from(&v.context);
            ctx.add_dot(&v.dot, v.timestamp_ms);
        }
        ctx
    }

    /// The live values and one context, as a GET returns them.
    pub fn read(&self) -> ReadView {
        ReadView {
            values: self
                .versions
                .iter()
                .filter_map(|v| v.value.clone())
                .collect(),
            context: self.context(),
        }
    }

    /// Writes `value` (or a tombstone) as the new version `dot`, made with the client's
    /// `context` at `now_ms`, and returns it.
    ///
    /// The context is pruned first and the pruned context decides what is replaced, so that
    /// every replica judges the new version exactly as this one does. Exactly the versions the
    /// context covers are replaced; a blind write (empty context) replaces nothing.
    pub fn write(
        &mut self,
        context: &VClock,
        dot: Dot,
        value: Option<Bytes>,
        now_ms: u64,
    ) -> Version {
        let mut context = context.clone();
        context.prune(PRUNE_LIMIT);
        let version = Version {
            dot,
            context,
            value,
            timestamp_ms: now_ms,
        };
        self.merge_version(version.clone());
        version
    }

    /// Highest counter of `actor` that this set knows of, in dots or contexts.
    pub fn max_counter(&self, actor: &super::ids::ActorId) -> u64 {
        self.versions
            .iter()
            .map(|v| {
                let own = if &v.dot.actor == actor {
                    v.dot.counter
                } else {
                    0
                };
                own.max(v.context.get(actor))
            })
            .max()
            .unwrap_or(0)
    }

    /// A stable digest of the set (0 when empty), equal on two replicas iff they hold the
    /// same dots; a dot names one version, so equal dots mean equal contents.
    pub fn digest(&self) -> u64 {
        if self.versions.is_empty() {
            return 0;
        }
        let mut hasher = Xxh3::new();
        for v in &self.versions {
            let node = v.dot.actor.node.as_str().as_bytes();
            hasher.update(&(node.len() as u64).to_le_bytes());
            hasher.update(node);
            hasher.update(&v.dot.actor.incarnation.to_le_bytes());
            hasher.update(&v.dot.counter.to_le_bytes());
        }
        hasher.digest()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::core::ids::ActorId;
    use proptest::prelude::*;

    fn actor(name: &str) -> ActorId {
        ActorId::new(name, 1)
    }

    fn val(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn values(set: &VersionSet) -> Vec<String> {
        let mut v: Vec<String> = set
            .read()
            .values
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        v.sort();
        v
    }

    /// A coordinator for tests: a fresh dot per write, as the Store makes them.
    struct Writer {
        actor: ActorId,
        counter: u64,
    }

    impl Writer {
        fn new(name: &str) -> Self {
            Writer {
                actor: actor(name),
                counter: 0,
            }
        }

        fn write(&mut self, set: &mut VersionSet, ctx: &VClock, value: Option<Bytes>) -> Dot {
            self.counter = self
                .counter
                .max(set.max_counter(&self.actor))
                .max(ctx.get(&self.actor))
                + 1;
            let dot = Dot::new(self.actor.clone(), self.counter);
            set.write(ctx, dot.clone(), value, self.counter);
            dot
        }
    }

    // The seed's walk-through, one case per step.

    #[test]
    fn causal_overwrite_leaves_one_value() {
        let mut a = Writer::new("a");
        let mut set = VersionSet::new();
        a.write(&mut set, &VClock::new(), val("v1"));
        let ctx = set.read().context;
        a.write(&mut set, &ctx, val("v2"));
        assert_eq!(values(&set), ["v2"]);
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn two_blind_writes_become_siblings() {
        let (mut a, mut b) = (Writer::new("a"), Writer::new("b"));
        let mut set = VersionSet::new();
        a.write(&mut set, &VClock::new(), val("x"));
        b.write(&mut set, &VClock::new(), val("y"));
        assert_eq!(values(&set), ["x", "y"]);
    }

    #[test]
    fn merge_write_resolves_siblings() {
        let (mut a, mut b) = (Writer::new("a"), Writer::new("b"));
        let mut set = VersionSet::new();
        a.write(&mut set, &VClock::new(), val("x"));
        b.write(&mut set, &VClock::new(), val("y"));
        let ctx = set.read().context;
        a.write(&mut set, &ctx, val("x+y"));
        assert_eq!(values(&set), ["x+y"]);
    }

    #[test]
    fn blind_write_after_causal_write_is_a_sibling() {
        // The seed replaced the causal write here and lost it.
        let mut a = Writer::new("a");
        let mut set = VersionSet::new();
        a.write(&mut set, &VClock::new(), val("v1"));
        let ctx = set.read().context;
        a.write(&mut set, &ctx, val("v2"));
        a.write(&mut set, &VClock::new(), val("blind"));
        assert_eq!(values(&set), ["blind", "v2"]);
    }

    #[test]
    fn same_coordinator_blind_writes_stay_siblings_on_other_replicas() {
        let mut a = Writer::new("a");
        let mut coord = VersionSet::new();
        a.write(&mut coord, &VClock::new(), val("one"));
        a.write(&mut coord, &VClock::new(), val("two"));
        let mut replica = VersionSet::new();
        replica.merge(&coord);
        assert_eq!(values(&replica), ["one", "two"]);
        // A read of the replica covers both, so a merge write replaces both.
        let ctx = replica.read().context;
        a.write(&mut coord, &ctx, val("both"));
        replica.merge(&coord);
        assert_eq!(values(&replica), ["both"]);
    }

    #[test]
    fn delete_then_read_is_not_found_and_concurrent_write_survives() {
        let (mut a, mut b) = (Writer::new("a"), Writer::new("b"));
        let mut set = VersionSet::new();
        a.write(&mut set, &VClock::new(), val("v1"));
        let ctx = set.read().context;
        let mut other = set.clone();
        a.write(&mut set, &ctx, None);
        assert!(set.read().is_not_found());
        assert!(set.is_all_tombstones());
        b.write(&mut other, &ctx, val("v2"));
        set.merge(&other);
        assert_eq!(values(&set), ["v2"]);
        assert_eq!(
            set.len(),
            2,
            "the tombstone stays as a sibling of the write"
        );
    }

    #[test]
    fn merge_reports_change_only_when_something_changed() {
        let mut a = Writer::new("a");
        let mut set = VersionSet::new();
        a.write(&mut set, &VClock::new(), val("v1"));
        let copy = set.clone();
        let ctx = set.read().context;
        a.write(&mut set, &ctx, val("v2"));
        let mut stale = set.clone();
        assert!(!stale.merge(&copy), "an obsolete version changes nothing");
        assert!(!stale.merge(&set));
        let mut empty = VersionSet::new();
        assert!(empty.merge(&set));
        assert_eq!(VersionSet::new().digest(), 0);
        assert_eq!(empty.digest(), set.digest());
        assert_ne!(copy.digest(), set.digest());
    }

    // A small simulated cluster for the properties: three replicas, three coordinators that
    // read from one or two replicas (or write blind), write, and send their whole set to some
    // replicas; plus anti-entropy style syncs. Ghost state records which dots each write's
    // client actually saw, to check that nothing unseen is ever replaced.

    #[derive(Clone, Debug)]
    enum Op {
        Write {
            coord: usize,
            read_from: Vec<usize>,
            tombstone: bool,
            send_to: Vec<usize>,
        },
        Sync {
            from: usize,
            to: usize,
        },
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                0..3usize,
                proptest::collection::vec(0..3usize, 0..3),
                proptest::bool::weighted(0.15),
                proptest::collection::vec(0..3usize, 0..3)
            )
                .prop_map(|(coord, read_from, tombstone, send_to)| Op::Write {
                    coord,
                    read_from,
                    tombstone,
                    send_to
                }),
            (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Sync { from, to }),
        ]
    }

    struct Sim {
        replicas: Vec<VersionSet>,
        writers: Vec<Writer>,
        seen: BTreeMap<Dot, BTreeSet<Dot>>,
        step: u64,
    }

    impl Sim {
        fn run(ops: &[Op]) -> Sim {
            let mut sim = Sim {
                replicas: vec![VersionSet::new(); 3],
                writers: ["a", "b", "c"].iter().map(|n| Writer::new(n)).collect(),
                seen: BTreeMap::new(),
                step: 0,
            };
            for op in ops {
                sim.apply(op);
            }
            sim
        }

        fn apply(&mut self, op: &Op) {
            self.step += 1;
            match op {
                Op::Write {
                    coord,
                    read_from,
                    tombstone,
                    send_to,
                } => {
                    let mut read = VersionSet::new();
                    for r in read_from {
                        read.merge(&self.replicas[*r]);
                    }
                    let mut saw = BTreeSet::new();
                    for v in read.versions() {
                        saw.insert(v.dot.clone());
                        saw.extend(self.seen.get(&v.dot).into_iter().flatten().cloned());
                    }
                    let value = if *tombstone {
                        None
                    } else {
                        Some(Bytes::from(self.step.to_string()))
                    };
                    // The coordinator is replica `coord`: it applies locally first.
                    let ctx = read.context();
                    let set = &mut self.replicas[*coord];
                    let dot = self.writers[*coord].write(set, &ctx, value);
                    self.seen.insert(dot, saw);
                    let sent = self.replicas[*coord].clone();
                    for r in send_to {
                        self.replicas[*r].merge(&sent);
                    }
                }
                Op::Sync { from, to } => {
                    let sent = self.replicas[*from].clone();
                    self.replicas[*to].merge(&sent);
                }
            }
        }

        fn converge(&mut self) {
            for _ in 0..2 {
                for from in 0..3 {
                    for to in 0..3 {
                        let sent = self.replicas[from].clone();
                        self.replicas[to].merge(&sent);
                    }
                }
            }
        }
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(op_strategy(), 0..25)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn merge_is_commutative_associative_idempotent(ops in ops()) {
            let sim = Sim::run(&ops);
            let [x, y, z] = [&sim.replicas[0], &sim.replicas[1], &sim.replicas[2]];
            let merged = |a: &VersionSet, b: &VersionSet| { let mut m = a.clone(); m.merge(b); m };
            prop_assert_eq!(merged(x, y), merged(y, x));
            prop_assert_eq!(merged(&merged(x, y), z), merged(x, &merged(y, z)));
            prop_assert_eq!(merged(x, x), x.clone());
        }

        #[test]
        fn redelivery_changes_nothing(ops in ops(), r in 0..3usize, s in 0..3usize) {
            let sim = Sim::run(&ops);
            let mut once = sim.replicas[r].clone();
            once.merge(&sim.replicas[s]);
            let mut twice = once.clone();
            prop_assert!(!twice.merge(&sim.replicas[s]));
            for v in sim.replicas[s].versions() {
                prop_assert!(!twice.merge_version(v.clone()));
            }
            prop_assert_eq!(twice, once);
        }

        #[test]
        fn write_with_read_context_replaces_exactly_what_was_read(
            ops in ops(), r in 0..3usize, s in 0..3usize
        ) {
            let sim = Sim::run(&ops);
            let read_set = sim.replicas[r].clone();
            let ctx = read_set.read().context;
            // Other versions may arrive between the read and the write.
            let mut target = sim.replicas[r].clone();
            target.merge(&sim.replicas[s]);
            let before = target.clone();
            let dot = Dot::new(ActorId::new("z", 1), 1);
            target.write(&ctx, dot.clone(), val("new"), 0);
            for v in before.versions() {
                let kept = target.versions().iter().any(|w| w.dot == v.dot);
                prop_assert_eq!(kept, !read_set.has_seen(&v.dot), "version {:?}", v.dot);
            }
            prop_assert!(target.versions().iter().any(|w| w.dot == dot));
        }

        #[test]
        fn blind_write_never_removes_a_version(ops in ops(), r in 0..3usize) {
            let sim = Sim::run(&ops);
            let mut set = sim.replicas[r].clone();
            let before = set.clone();
            set.write(&VClock::new(), Dot::new(ActorId::new("z", 1), 1), val("blind"), 0);
            for v in before.versions() {
                prop_assert!(set.versions().contains(v));
            }
            prop_assert_eq!(set.len(), before.len() + 1);
        }

        #[test]
        fn replicas_converge_and_nothing_unseen_is_lost(ops in ops()) {
            let mut sim = Sim::run(&ops);
            sim.converge();
            prop_assert_eq!(&sim.replicas[0], &sim.replicas[1]);
            prop_assert_eq!(&sim.replicas[1], &sim.replicas[2]);
            let survivors: BTreeSet<Dot> =
                sim.replicas[0].versions().iter().map(|v| v.dot.clone()).collect();
            for dot in sim.seen.keys() {
                if !survivors.contains(dot) {
                    let seen_by_someone = sim.seen.values().any(|saw| saw.contains(dot));
                    prop_assert!(seen_by_someone, "{:?} was replaced by a write that never saw it", dot);
                }
            }
        }
    }
}
