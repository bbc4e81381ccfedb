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

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::ids::ActorId;
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
    /// Coordinator wall time (ms) at the write. It dates the version's dot in every clock
    /// that records it, which is what pruning drops first; it starts a tombstone's purge
    /// grace (`purge::grace_passed`); and it is part of the version's content (the digest,
    /// and the order between two versions a reused dot made). It never orders writes: the
    /// dots and contexts do.
    pub timestamp_ms: u64,
}

impl Version {
    /// True for a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

// A total order on what a version holds besides its dot. Honest replicas never hold two
// versions with one dot; if a reused actor id (kv679) makes them, every replica keeps the
// greater one, so replicas still converge whatever the delivery order.
fn content_order(a: &Version, b: &Version) -> std::cmp::Ordering {
    fn clock(v: &Version) -> impl Iterator<Item = (&ActorId, u64, u64)> {
        v.context
            .entries()
            .map(|(actor, e)| (actor, e.counter, e.timestamp_ms))
    }
    (a.timestamp_ms, &a.value)
        .cmp(&(b.timestamp_ms, &b.value))
        .then_with(|| clock(a).cmp(clock(b)))
        .then_with(|| a.context.exact_dots().cmp(b.context.exact_dots()))
}

// For versions with distinct dots: whether another version's context covers each one's dot.
// Per actor it keeps the two highest counters over all contexts (and who holds the highest),
// so "covered by someone else" is one lookup instead of a scan of every other version; exact
// dots are looked up by dot, with who holds them.
fn obsolete_flags<'a>(versions: impl Iterator<Item = &'a Version> + Clone) -> Vec<bool> {
    struct Top2 {
        best: u64,
        holder: usize,
        second: u64,
    }
    let mut tops: HashMap<&ActorId, Top2> = HashMap::new();
    // Exact dot -> (first holder, held by more than one).
    let mut exact: HashMap<&Dot, (usize, bool)> = HashMap::new();
    let mut count = 0;
    for (i, v) in versions.clone().enumerate() {
        count += 1;
        for (dot, _) in v.context.exact_dots() {
            exact
                .entry(dot)
                .and_modify(|(_, shared)| *shared = true)
                .or_insert((i, false));
        }
        for (actor, e) in v.context.entries() {
            let top = tops.entry(actor).or_insert(Top2 {
                best: 0,
                holder: usize::MAX,
                second: 0,
            });
            if e.counter > top.best {
                top.second = top.best;
                top.best = e.counter;
                top.holder = i;
            } else if e.counter > top.second {
                top.second = e.counter;
            }
        }
    }
    versions
        .enumerate()
        .map(|(i, v)| {
            if v.dot.counter == 0 {
                // Event 0 is inside every history: any other version covers it.
                return count > 1;
            }
            let covered_up_to = tops.get(&v.dot.actor).map_or(0, |top| {
                if top.holder == i {
                    top.second
                } else {
                    top.best
                }
            });
            v.dot.counter <= covered_up_to
                || exact
                    .get(&v.dot)
                    .is_some_and(|(holder, shared)| *shared || *holder != i)
        })
        .collect()
}

/// Sets up to this many versions (with the newcomers, before the merge) are judged by
/// comparing every pair, without the maps of [`obsolete_flags`]: no allocation, no hashing,
/// and faster than the maps for the sets nearly every key holds (one to a few versions).
const PAIRWISE_MAX: usize = 16;

// Which versions of a merge (distinct dots) are obsolete.
enum Obsolete {
    // Bit i: version i is covered by another one's context.
    Pairwise(u64),
    Flags(Vec<bool>),
}

impl Obsolete {
    // Judged pairwise up to `PAIRWISE_MAX` versions, by the maps beyond.
    fn of<'a>(versions: impl ExactSizeIterator<Item = &'a Version> + Clone) -> Self {
        if versions.len() <= PAIRWISE_MAX {
            Obsolete::Pairwise(obsolete_pairwise(versions))
        } else {
            Obsolete::Flags(obsolete_flags(versions))
        }
    }

    fn get(&self, i: usize) -> bool {
        match self {
            Obsolete::Pairwise(mask) => mask >> i & 1 == 1,
            Obsolete::Flags(flags) => flags[i],
        }
    }

    fn count(&self) -> usize {
        match self {
            Obsolete::Pairwise(mask) => mask.count_ones() as usize,
            Obsolete::Flags(flags) => flags.iter().filter(|dropped| **dropped).count(),
        }
    }
}

// As `obsolete_flags`, for at most 64 versions, by asking every other version's context:
// bit i is set when version i is covered.
fn obsolete_pairwise<'a>(versions: impl Iterator<Item = &'a Version> + Clone) -> u64 {
    let mut mask = 0;
    for (i, v) in versions.clone().enumerate() {
        let covered = versions
            .clone()
            .enumerate()
            .any(|(j, other)| j != i && other.context.contains(&v.dot));
        if covered {
            mask |= 1 << i;
        }
    }
    mask
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

/// The versions of one key that no other version has made obsolete (siblings when > 1).
///
/// Deserializing rebuilds the set from the versions listed, so a set from a faulty peer is
/// sorted, holds each dot once and holds no obsolete version, like any set built here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireVersionSet")]
pub struct VersionSet {
    versions: Vec<Version>,
}

// A set as it arrives, before its invariants are restored; same shape as `VersionSet`.
#[derive(Deserialize)]
#[serde(rename = "VersionSet")]
struct WireVersionSet {
    versions: Vec<Version>,
}

impl From<WireVersionSet> for VersionSet {
    fn from(wire: WireVersionSet) -> Self {
        VersionSet::from_received(wire.versions).0
    }
}

// True when `versions` are a set as `VersionSet` keeps one: sorted by dot, each dot once,
// none covered by another one's context.
fn is_canonical(versions: &[Version]) -> bool {
    let sorted = versions.windows(2).all(|pair| pair[0].dot < pair[1].dot);
    sorted && Obsolete::of(versions.iter()).count() == 0
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

    /// A set of `versions` exactly as listed, which must be the versions of a set as this type
    /// keeps it (sorted by dot, each dot once, none obsolete): for decoding the store's own
    /// records without redoing the merge. Anything from a peer goes through
    /// [`VersionSet::from_versions`].
    pub fn from_canonical(versions: Vec<Version>) -> Self {
        let set = VersionSet { versions };
        debug_assert_eq!(set, VersionSet::from_versions(set.versions.clone()));
        set
    }

    /// A set of `versions` read back from storage: `None` unless they are exactly a set as
    /// this type keeps it (a damaged record that still matches its checksum must not pass
    /// as one).
    pub fn from_stored(versions: Vec<Version>) -> Option<Self> {
        is_canonical(&versions).then_some(VersionSet { versions })
    }

    /// The set of `versions` as a peer listed them, and whether it is exactly that list: what
    /// an honest peer sends is a set already and is taken as it is, after the check; anything
    /// else is rebuilt as [`VersionSet::from_versions`] does.
    pub fn from_received(versions: Vec<Version>) -> (Self, bool) {
        if is_canonical(&versions) {
            return (VersionSet { versions }, true);
        }
        (VersionSet::from_versions(versions), false)
    }

    /// A "set" of exactly `versions`, invariants unchecked: for tests that need a damaged one.
    #[cfg(test)]
    pub(crate) fn unchecked_for_tests(versions: Vec<Version>) -> Self {
        VersionSet { versions }
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

    /// Sum of the lengths of the values held, siblings included (tombstones hold none).
    pub fn value_bytes(&self) -> u64 {
        self.versions
            .iter()
            .filter_map(|v| v.value.as_ref())
            .map(|b| b.len() as u64)
            .sum()
    }

    /// Merges another replica's set into this one; returns true when this set changed.
    pub fn merge(&mut self, other: &VersionSet) -> bool {
        self.absorb(other.versions.iter().cloned())
    }

    /// As [`VersionSet::merge`], taking the other set: its versions move here, uncopied.
    pub fn merge_owned(&mut self, other: VersionSet) -> bool {
        self.absorb(other.versions)
    }

    /// As [`VersionSet::merge_owned`], saying too whether the merged set is exactly `other`
    /// (all of its versions and nothing else): a replica can then store the encoding `other`
    /// came in, instead of encoding the same set again.
    pub fn merge_exact(&mut self, other: VersionSet) -> (bool, bool) {
        let incoming = other.versions.len();
        let (changed, kept) = self.absorb_counting(other.versions);
        (changed, kept == incoming && kept == self.versions.len())
    }

    /// Merges a single version; returns true when the set changed.
    pub fn merge_version(&mut self, version: Version) -> bool {
        self.absorb(std::iter::once(version))
    }

    // Adds versions, then drops every version whose dot another version's context covers.
    // Sorting by dot makes the result independent of arrival order; a repeated dot keeps its
    // greatest content (the same content, unless an actor id was reused). Linear apart from the
    // sort, so that a key with thousands of siblings stays cheap to write and to merge.
    fn absorb(&mut self, incoming: impl IntoIterator<Item = Version>) -> bool {
        self.absorb_counting(incoming).0
    }

    // As `absorb`, counting too the surviving versions that are incoming ones: a newcomer, or
    // a stored version equal to a newcomer that its dot made redundant.
    fn absorb_counting(&mut self, incoming: impl IntoIterator<Item = Version>) -> (bool, usize) {
        let mut incoming = incoming.into_iter().peekable();
        if incoming.peek().is_none() {
            return (false, 0);
        }
        let stored = std::mem::take(&mut self.versions);
        // (version, is new, equal to a newcomer)
        let mut all: Vec<(Version, bool, bool)> =
            Vec::with_capacity(stored.len() + incoming.size_hint().0);
        all.extend(stored.into_iter().map(|v| (v, false, false)));
        all.extend(incoming.map(|v| (v, true, true)));
        // Stable: on equal content the stored copy stays first and the newcomer is dropped.
        all.sort_by(|(x, ..), (y, ..)| x.dot.cmp(&y.dot).then_with(|| content_order(y, x)));
        let mut replaced = false;
        all.dedup_by(|(later, later_new, _), (kept, kept_new, kept_incoming)| {
            let same = later.dot == kept.dot;
            replaced |= same && *kept_new && !*later_new;
            if same && *later_new && !*kept_incoming && later == kept {
                *kept_incoming = true;
            }
            same
        });
        let obsolete = Obsolete::of(all.iter().map(|(v, ..)| v));
        // Exactly the survivors: a stored set lives as long as its key, and growing by
        // pushes would leave room for four versions where one is the common case.
        self.versions.reserve_exact(all.len() - obsolete.count());
        let mut changed = replaced;
        let mut kept_incoming = 0;
        for (i, (version, is_new, is_incoming)) in all.into_iter().enumerate() {
            let dropped = obsolete.get(i);
            // Changed when a newcomer stays or an old version goes.
            changed |= is_new != dropped;
            if !dropped {
                kept_incoming += usize::from(is_incoming);
                self.versions.push(version);
            }
        }
        (changed, kept_incoming)
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
    /// `context` at `now_ms`.
    ///
    /// The context is pruned first and the pruned context decides what is replaced, so that
    /// every replica judges the new version exactly as this one does. Exactly the versions the
    /// context covers are replaced; a blind write (empty context) replaces nothing.
    pub fn write(&mut self, context: &VClock, dot: Dot, value: Option<Bytes>, now_ms: u64) {
        self.merge_version(Version {
            dot,
            context: context.pruned(PRUNE_LIMIT).into_owned(),
            value,
            timestamp_ms: now_ms,
        });
    }

    /// A stable digest of the set (0 when empty), equal on two replicas iff they hold the
    /// same versions. Contents count too, not only dots: should an actor id ever be reused,
    /// two replicas holding different versions under one dot must still look different.
    pub fn digest(&self) -> u64 {
        if self.versions.is_empty() {
            return 0;
        }
        let mut feed = DigestFeed::new();
        self.feed_digest(&mut feed);
        feed.finish()
    }

    // Every field that makes the digest, in its order, to `feed`. The digest is stored with
    // each record, so this order and encoding must never change.
    fn feed_digest<S: DigestSink>(&self, feed: &mut S) {
        fn actor<S: DigestSink>(feed: &mut S, a: &ActorId) {
            let node = a.node.as_str().as_bytes();
            feed.update(&(node.len() as u64).to_le_bytes());
            feed.update(node);
            feed.update(&a.incarnation.to_le_bytes());
        }
        for v in &self.versions {
            actor(feed, &v.dot.actor);
            feed.update(&v.dot.counter.to_le_bytes());
            feed.update(&v.timestamp_ms.to_le_bytes());
            match &v.value {
                None => feed.update(&[0]),
                Some(bytes) => {
                    feed.update(&[1]);
                    feed.update(&(bytes.len() as u64).to_le_bytes());
                    feed.update(bytes);
                }
            }
            feed.update(&(v.context.len() as u64).to_le_bytes());
            for (a, e) in v.context.entries() {
                actor(feed, a);
                feed.update(&e.counter.to_le_bytes());
                feed.update(&e.timestamp_ms.to_le_bytes());
            }
            feed.update(&(v.context.exact_len() as u64).to_le_bytes());
            for (dot, timestamp_ms) in v.context.exact_dots() {
                actor(feed, &dot.actor);
                feed.update(&dot.counter.to_le_bytes());
                feed.update(&timestamp_ms.to_le_bytes());
            }
        }
    }
}

/// Bytes of a digest gathered on the stack before they are hashed.
const DIGEST_BUFFER: usize = 512;

// Where the bytes of a digest go.
trait DigestSink {
    fn update(&mut self, bytes: &[u8]);
}

impl DigestSink for Xxh3 {
    fn update(&mut self, bytes: &[u8]) {
        Xxh3::update(self, bytes);
    }
}

// The bytes of a set's digest, hashed in one call while they fit the buffer (nearly every
// set): XXH3 gives the same digest for bytes fed piece by piece as for all of them at once,
// and this spares a streaming hasher's state and a call per field. Past the buffer, the
// bytes go on into a streaming hasher.
struct DigestFeed {
    buffer: [u8; DIGEST_BUFFER],
    len: usize,
    spilled: Option<Box<Xxh3>>,
}

impl DigestSink for DigestFeed {
    fn update(&mut self, bytes: &[u8]) {
        if let Some(room) = self.buffer.get_mut(self.len..self.len + bytes.len()) {
            room.copy_from_slice(bytes);
            self.len += bytes.len();
            return;
        }
        let hasher = self.spilled.get_or_insert_with(|| Box::new(Xxh3::new()));
        hasher.update(&self.buffer[..self.len]);
        hasher.update(bytes);
        self.len = 0;
    }
}

impl DigestFeed {
    fn new() -> Self {
        DigestFeed {
            buffer: [0; DIGEST_BUFFER],
            len: 0,
            spilled: None,
        }
    }

    fn finish(self) -> u64 {
        match self.spilled {
            None => xxh3_64(&self.buffer[..self.len]),
            Some(mut hasher) => {
                hasher.update(&self.buffer[..self.len]);
                hasher.digest()
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
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
                .max(set.context().max_claim(&self.actor))
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
        assert!(set.read().values.is_empty());
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

    fn version(actor_name: &str, counter: u64, ctx: &VClock, value: Option<Bytes>) -> Version {
        Version {
            dot: Dot::new(actor(actor_name), counter),
            context: ctx.clone(),
            value,
            timestamp_ms: counter,
        }
    }

    #[test]
    fn a_reused_dot_merges_the_same_either_way_and_shows_in_digests() {
        // Two lives of one actor id that both made (a, 1) (kv679): replicas must still agree.
        let one = VersionSet::from_versions([version("a", 1, &VClock::new(), val("one"))]);
        let two = VersionSet::from_versions([version("a", 1, &VClock::new(), val("two"))]);
        assert_ne!(
            one.digest(),
            two.digest(),
            "anti-entropy must see the difference"
        );
        let (mut x, mut y) = (one.clone(), two.clone());
        let changed = (x.merge(&two), y.merge(&one));
        assert_eq!(x, y, "merge is commutative even for a reused dot");
        assert!(
            changed.0 != changed.1,
            "exactly one side took the other's copy"
        );
        assert!(
            !x.merge(&one) && !x.merge(&two),
            "and redelivery is then harmless"
        );
    }

    #[test]
    fn a_deserialized_set_is_normalized() {
        // A peer's set listing versions out of order, with a repeat and an obsolete version.
        use crate::core::vclock::tests::{Tok, clock_tok};
        use serde::Deserialize;
        let v = |name: &str, counter: u64, ctx: Tok, value: Tok| {
            Tok::Seq(vec![
                Tok::Seq(vec![
                    Tok::Seq(vec![Tok::S(name.into()), Tok::U(1)]),
                    Tok::U(counter),
                ]),
                ctx,
                value,
                Tok::U(counter),
            ])
        };
        let newer = v("a", 2, clock_tok(&[("a", 1, 1, 1)]), Tok::S("new".into()));
        let older = v("a", 1, clock_tok(&[]), Tok::S("old".into()));
        let gone = v("b", 1, clock_tok(&[]), Tok::Nil);
        let wire = Tok::Seq(vec![Tok::Seq(vec![newer.clone(), gone, older, newer])]);
        let set = VersionSet::deserialize(wire).unwrap();
        let mut expected = VersionSet::new();
        let mut a = Writer::new("a");
        a.write(&mut expected, &VClock::new(), val("old"));
        let ctx = expected.read().context;
        a.write(&mut expected, &ctx, val("new"));
        expected.merge_version(version("b", 1, &VClock::new(), None));
        assert_eq!(values(&set), ["new"]);
        assert_eq!(set, expected);
    }

    #[test]
    fn twenty_thousand_siblings_merge_correctly() {
        // Blind writes pile up siblings. Merging used to compare every version with every
        // other (this case took ~5 s per operation in debug); the cost is a benchmark's
        // business, this checks that the large case stays right.
        let n = 20_000u64;
        let siblings = (1..=n).map(|i| {
            let mut ctx = VClock::new();
            ctx.add_dot(&Dot::new(actor("old"), i), 0);
            version(["a", "b", "c"][(i % 3) as usize], i, &ctx, val("v"))
        });
        let mut set = VersionSet::from_versions(siblings);
        let mut replica = set.clone();
        set.write(&VClock::new(), Dot::new(actor("z"), 1), val("w"), 0);
        assert!(replica.merge(&set));
        assert_eq!(replica.len() as u64, n + 1);
        assert!(!replica.merge(&set), "a second delivery changes nothing");
    }

    #[test]
    fn limitation_a_pruned_context_resurrects_a_superseded_version_as_a_sibling() {
        // More than PRUNE_LIMIT actors in one key's history: the merging write's context
        // loses the oldest entries, and a lagging replica's superseded version comes back.
        let mut coord = VersionSet::new();
        coord.write(&VClock::new(), Dot::new(actor("old"), 1), val("old"), 0);
        let mut lagging = coord.clone();
        let ctx = coord.read().context;
        coord.write(&ctx, Dot::new(actor("fix"), 1), val("fix"), 1);
        let ctx = coord.read().context;
        for i in 0..PRUNE_LIMIT {
            let writer = actor(&format!("w{i:02}"));
            coord.write(&ctx, Dot::new(writer, 1), val("w"), 100);
        }
        let ctx = coord.read().context;
        assert_eq!(ctx.len(), PRUNE_LIMIT + 2);
        coord.write(&ctx, Dot::new(actor("merge"), 1), val("merged"), 200);
        assert_eq!(values(&coord), ["merged"]);
        lagging.merge(&coord);
        assert_eq!(values(&lagging), ["merged", "old"]);
    }

    // The definition absorb must implement: one copy per dot (the greatest content), minus
    // every version whose dot another version's context covers.
    fn by_definition(versions: Vec<Version>) -> Vec<Version> {
        let mut per_dot: BTreeMap<Dot, Version> = BTreeMap::new();
        for v in versions {
            match per_dot.get(&v.dot) {
                Some(kept) if content_order(kept, &v) != std::cmp::Ordering::Less => {}
                _ => {
                    per_dot.insert(v.dot.clone(), v);
                }
            }
        }
        let all: Vec<Version> = per_dot.into_values().collect();
        all.iter()
            .filter(|v| {
                !all.iter()
                    .any(|w| w.dot != v.dot && w.context.contains(&v.dot))
            })
            .cloned()
            .collect()
    }

    // The digest's fields fed to a streaming XXH3 hasher, as it was first computed: the
    // buffered feed must give the same value whether or not the bytes fit its buffer.
    fn streamed_digest(set: &VersionSet) -> u64 {
        if set.is_empty() {
            return 0;
        }
        let mut hasher = Xxh3::new();
        set.feed_digest(&mut hasher);
        hasher.digest()
    }

    #[test]
    fn the_digest_of_a_set_never_changes() {
        // Digests are stored with every record on disk: a change of the fields, their order or
        // their encoding would make every stored record look corrupt. Pinned on a set whose
        // bytes fit the buffer and on one that spills past it.
        let mut set = VersionSet::new();
        let a = actor("n1");
        let mut context = VClock::new();
        context.add_dot(&Dot::new(a.clone(), 1), 7);
        set.write(
            &VClock::new(),
            Dot::new(a.clone(), 1),
            Some(Bytes::from("one")),
            7,
        );
        set.write(
            &context,
            Dot::new(a.clone(), 2),
            Some(Bytes::from("two")),
            9,
        );
        set.write(&VClock::new(), Dot::new(actor("n2"), 1), None, 11);
        let mut big = set.clone();
        big.write(
            &VClock::new(),
            Dot::new(actor("n3"), 1),
            Some(Bytes::from(vec![7u8; 700])),
            13,
        );
        assert_eq!(
            (set.digest(), big.digest()),
            (14695358094780456682, 12596595647555668028)
        );
    }

    // As `any_version`, with dots spread over more counters (and contexts that cover only the
    // low ones): sets larger than `any_version`'s 15 dots allow.
    fn wide_version() -> impl Strategy<Value = Version> {
        (any_version(), 0u64..8).prop_map(|(mut v, spread)| {
            v.dot.counter += 5 * spread;
            v
        })
    }

    pub(crate) fn any_version() -> impl Strategy<Value = Version> {
        (
            0u8..3,
            0u64..5,
            crate::core::vclock::tests::clock_strategy(3),
            proptest::option::weighted(0.8, 0u8..3),
            0u64..3,
        )
            .prop_map(|(a, counter, context, value, ts)| Version {
                dot: Dot::new(crate::core::vclock::tests::actor(a), counter),
                context,
                value: value.map(|x| Bytes::from(vec![x])),
                timestamp_ms: ts,
            })
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

    // A set made of `first` absorbing `second` holds what the definition keeps of both, and
    // says it changed exactly when it did.
    fn absorb_as_defined(
        first: Vec<Version>,
        second: Vec<Version>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let base = VersionSet::from_versions(first.clone());
        prop_assert_eq!(base.versions(), &by_definition(first)[..]);
        let mut merged = base.clone();
        let changed = merged.absorb(second.clone());
        let mut all = base.versions().to_vec();
        all.extend(second);
        prop_assert_eq!(merged.versions(), &by_definition(all)[..]);
        prop_assert_eq!(changed, merged != base);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn absorb_matches_its_definition_on_arbitrary_versions(
            first in proptest::collection::vec(any_version(), 0..8),
            second in proptest::collection::vec(any_version(), 0..8),
        ) {
            // Arbitrary inputs: self-covering contexts, zero counters, reused dots, cycles.
            absorb_as_defined(first, second)?;
        }

        #[test]
        fn absorb_matches_its_definition_past_the_pairwise_size(
            first in proptest::collection::vec(wide_version(), 0..30),
            second in proptest::collection::vec(wide_version(), 10..30),
        ) {
            // The same, on merges of more than `PAIRWISE_MAX` versions (judged by the maps).
            absorb_as_defined(first, second)?;
        }

        #[test]
        fn a_merge_says_exact_when_it_leaves_exactly_the_incoming_set(
            first in proptest::collection::vec(any_version(), 0..8),
            second in proptest::collection::vec(any_version(), 0..8),
            share in proptest::collection::vec(any::<bool>(), 0..8),
        ) {
            // Some incoming versions also stored, as a replica often holds them already.
            let mut stored = first;
            stored.extend(second.iter().zip(&share).filter(|(_, s)| **s).map(|(v, _)| v.clone()));
            let base = VersionSet::from_versions(stored);
            let incoming = VersionSet::from_versions(second);
            let mut plain = base.clone();
            let plain_changed = plain.merge(&incoming);
            let mut merged = base;
            let (changed, exact) = merged.merge_exact(incoming.clone());
            prop_assert_eq!(&merged, &plain);
            prop_assert_eq!(changed, plain_changed);
            prop_assert_eq!(exact, merged == incoming);
        }

        #[test]
        fn a_list_is_canonical_exactly_when_the_merge_leaves_it_as_it_is(
            versions in proptest::collection::vec(wide_version(), 0..24),
        ) {
            let merged = VersionSet::from_versions(versions.clone());
            prop_assert_eq!(is_canonical(&versions), merged.versions() == &versions[..]);
            prop_assert!(is_canonical(merged.versions()));
            // Decoded, either way the set the merge makes.
            let wire = postcard::to_stdvec(&VersionSet::unchecked_for_tests(versions)).unwrap();
            prop_assert_eq!(postcard::from_bytes::<VersionSet>(&wire).unwrap(), merged);
        }

        #[test]
        fn the_digest_is_the_streaming_hash_of_the_sets_fields(
            versions in proptest::collection::vec(any_version(), 0..8),
            big in proptest::collection::vec(0usize..3, 0..8),
        ) {
            // Values of up to twice the buffer, so that some digests spill past it.
            let versions = versions.into_iter().zip(big.into_iter().chain(std::iter::repeat(0)))
                .map(|(mut v, size)| {
                    if let Some(value) = &v.value {
                        v.value = Some(value.repeat(1 + size * DIGEST_BUFFER).into());
                    }
                    v
                });
            let set = VersionSet::from_versions(versions);
            prop_assert_eq!(set.digest(), streamed_digest(&set));
        }

        #[test]
        fn pairwise_and_mapped_obsolescence_agree(
            versions in proptest::collection::vec(any_version(), 0..=PAIRWISE_MAX),
        ) {
            let mut versions = versions;
            versions.sort_by(|x, y| x.dot.cmp(&y.dot));
            versions.dedup_by(|x, y| x.dot == y.dot);
            let mask = obsolete_pairwise(versions.iter());
            let flags = obsolete_flags(versions.iter());
            for (i, flag) in flags.into_iter().enumerate() {
                prop_assert_eq!(mask >> i & 1 == 1, flag, "version {}", i);
            }
        }

        #[test]
        fn merge_is_commutative_on_arbitrary_versions(
            first in proptest::collection::vec(any_version(), 0..8),
            second in proptest::collection::vec(any_version(), 0..8),
        ) {
            let (x, y) = (VersionSet::from_versions(first), VersionSet::from_versions(second));
            let (mut xy, mut yx) = (x.clone(), y.clone());
            xy.merge(&y);
            yx.merge(&x);
            prop_assert_eq!(xy, yx);
        }

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
                prop_assert_eq!(kept, !read_set.context().contains(&v.dot), "version {:?}", v.dot);
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
