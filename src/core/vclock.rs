//! Version vectors (vector clocks) and dots.
//!
//! A [`VClock`] maps writer actors to counters, plus exact dots (single events a context saw
//! without the ones before them). Every entry also keeps the wall time of its last advance, so
//! that a clock grown past [`PRUNE_LIMIT`] drops its oldest entries first. Timestamps never
//! order events (counters do); they only break the tie between two entries with the same
//! counter, so that a merge stays symmetric.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::ids::ActorId;

/// Clocks are pruned to at most this many entries (oldest timestamp first).
pub const PRUNE_LIMIT: usize = 50;

/// One event of one actor: the identity of a single written version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The coordinator that made the version.
    pub actor: ActorId,
    /// That actor's counter for this event (starts at 1).
    pub counter: u64,
}

impl Dot {
    /// The dot `(actor, counter)`.
    pub fn new(actor: ActorId, counter: u64) -> Self {
        Dot { actor, counter }
    }
}

/// An actor's entry in a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClockEntry {
    /// Highest counter of the actor that the clock has seen.
    pub counter: u64,
    /// Wall time (ms) at which that counter was made: pruning drops the oldest entries
    /// first. It never orders events; the counter does.
    pub timestamp_ms: u64,
}

impl ClockEntry {
    // Counter first, timestamp as a tie-break: a total order, so taking the larger of two
    // entries is a symmetric, associative and idempotent merge.
    fn key(&self) -> (u64, u64) {
        (self.counter, self.timestamp_ms)
    }
}

/// A version vector with exact dots: for each actor, the highest counter seen, plus single
/// events seen beyond it.
///
/// The vector part reads "every event of this actor up to the counter". That is what a read
/// of a whole version set has seen, and the store keeps it true (see `version.rs` on why
/// whole sets travel). A write's answer is different: the writer saw its own new version, not
/// the other versions its coordinator made of the key meanwhile (a blind write next to a
/// delete, two clients writing with the same context), so the answer adds the new dot as an
/// exact dot, which covers that one event and claims nothing about earlier ones. Exact dots
/// fold into the vector as soon as they are contiguous with it.
///
/// Entries are kept sorted by actor and never hold a zero counter, exact dots sorted and
/// never covered by the vector, so equal histories have equal representations.
/// Deserializing restores that form whatever the wire held, since lookups binary-search and
/// a misplaced entry would silently hide.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "WireClock")]
pub struct VClock {
    entries: Vec<(ActorId, ClockEntry)>,
    dots: Vec<(Dot, u64)>,
}

// A clock as it arrives: possibly unsorted, with repeated or zero entries (a garbled or forged
// context token, a faulty peer). Same shape as `VClock`.
#[derive(Deserialize)]
#[serde(rename = "VClock")]
struct WireClock {
    entries: Vec<(ActorId, ClockEntry)>,
    dots: Vec<(Dot, u64)>,
}

impl From<WireClock> for VClock {
    fn from(wire: WireClock) -> Self {
        let mut entries = wire.entries;
        entries.retain(|(_, e)| e.counter != 0);
        // Per actor, the largest entry first; then keep only that one, as merge would.
        entries.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| y.key().cmp(&x.key())));
        entries.dedup_by(|later, kept| later.0 == kept.0);
        // Adding the dots one by one would fold the list once per dot: quadratic in what a
        // peer sends. Sorted, deduplicated (latest time first) and folded once, they end up
        // exactly as `add_exact` would leave them.
        let mut dots = wire.dots;
        dots.retain(|(d, _)| d.counter != 0);
        dots.sort_by(|(x, tx), (y, ty)| x.cmp(y).then_with(|| ty.cmp(tx)));
        dots.dedup_by(|later, kept| later.0 == kept.0);
        let mut clock = VClock { entries, dots };
        clock.fold_dots();
        clock
    }
}

impl VClock {
    /// The empty clock (no events seen).
    pub fn new() -> Self {
        VClock::default()
    }

    /// Number of actors in the vector part.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Number of exact dots beyond the vector.
    pub fn exact_len(&self) -> usize {
        self.dots.len()
    }

    /// True when the clock has seen no event.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.dots.is_empty()
    }

    /// The vector's entries, sorted by actor.
    pub fn entries(&self) -> impl Iterator<Item = (&ActorId, &ClockEntry)> {
        self.entries.iter().map(|(a, e)| (a, e))
    }

    /// The exact dots beyond the vector, sorted, with the wall time each was made at.
    pub fn exact_dots(&self) -> impl Iterator<Item = (&Dot, u64)> {
        self.dots.iter().map(|(d, t)| (d, *t))
    }

    fn position(&self, actor: &ActorId) -> Result<usize, usize> {
        self.entries.binary_search_by(|(a, _)| a.cmp(actor))
    }

    /// The vector's counter of `actor`, 0 when absent.
    pub fn get(&self, actor: &ActorId) -> u64 {
        match self.position(actor) {
            Ok(i) => self.entries[i].1.counter,
            Err(_) => 0,
        }
    }

    /// The highest counter of `actor` the clock claims to have seen, exact dots included.
    pub fn max_claim(&self, actor: &ActorId) -> u64 {
        self.dots
            .iter()
            .filter(|(d, _)| &d.actor == actor)
            .map(|(d, _)| d.counter)
            .fold(self.get(actor), u64::max)
    }

    /// True when the event `dot` is part of this clock's history.
    pub fn contains(&self, dot: &Dot) -> bool {
        dot.counter <= self.get(&dot.actor)
            || self.dots.binary_search_by(|(d, _)| d.cmp(dot)).is_ok()
    }

    /// Adds the event `dot` (made at `timestamp_ms`) and, as a version vector does, every
    /// earlier event of its actor: what a reader of a whole version set has seen.
    pub fn add_dot(&mut self, dot: &Dot, timestamp_ms: u64) {
        self.witness(
            &dot.actor,
            ClockEntry {
                counter: dot.counter,
                timestamp_ms,
            },
        );
    }

    /// Adds the single event `dot` (made at `timestamp_ms`) and nothing before it: what a
    /// writer has seen of its own new version.
    pub fn add_exact(&mut self, dot: &Dot, timestamp_ms: u64) {
        if dot.counter == 0 {
            return;
        }
        match self.dots.binary_search_by(|(d, _)| d.cmp(dot)) {
            Ok(i) => self.dots[i].1 = self.dots[i].1.max(timestamp_ms),
            Err(i) => self.dots.insert(i, (dot.clone(), timestamp_ms)),
        }
        self.fold_dots();
    }

    // Raises the actor's entry to `entry` if that is larger; zero counters carry no history.
    fn witness(&mut self, actor: &ActorId, entry: ClockEntry) {
        if entry.counter == 0 {
            return;
        }
        match self.position(actor) {
            Ok(i) => {
                if entry.key() > self.entries[i].1.key() {
                    self.entries[i].1 = entry;
                }
            }
            Err(i) => self.entries.insert(i, (actor.clone(), entry)),
        }
        self.fold_dots();
    }

    // Drops exact dots the vector now covers, and folds those that became contiguous. The
    // entry of an actor always carries the timestamp of its top event: a dot equal to it
    // raises it to the later of the two (the same event seen twice), a folded dot brings its
    // own. So any order of merges ends with the same clock.
    fn fold_dots(&mut self) {
        if self.dots.is_empty() {
            return;
        }
        let dots = std::mem::take(&mut self.dots);
        let mut kept = Vec::with_capacity(dots.len());
        // Sorted by (actor, counter): a fold can make the next dot of the actor contiguous.
        for (dot, timestamp_ms) in dots {
            let at = self.position(&dot.actor);
            let counter = at.map_or(0, |i| self.entries[i].1.counter);
            match at {
                Ok(i) if dot.counter == counter => {
                    let entry = &mut self.entries[i].1;
                    entry.timestamp_ms = entry.timestamp_ms.max(timestamp_ms);
                }
                _ if dot.counter <= counter => {}
                Ok(i) if dot.counter == counter + 1 => {
                    self.entries[i].1 = ClockEntry {
                        counter: dot.counter,
                        timestamp_ms,
                    };
                }
                Err(i) if dot.counter == 1 => {
                    let entry = ClockEntry {
                        counter: 1,
                        timestamp_ms,
                    };
                    self.entries.insert(i, (dot.actor.clone(), entry));
                }
                _ => kept.push((dot, timestamp_ms)),
            }
        }
        self.dots = kept;
    }

    /// The least clock that descends from both: pointwise maximum of the counters, and the
    /// exact dots of both that the result's vector does not cover.
    pub fn merge(&self, other: &VClock) -> VClock {
        let mut out = Vec::with_capacity(self.entries.len().max(other.entries.len()));
        let (mut i, mut j) = (0, 0);
        while i < self.entries.len() && j < other.entries.len() {
            let (a, ea) = &self.entries[i];
            let (b, eb) = &other.entries[j];
            match a.cmp(b) {
                Ordering::Less => {
                    out.push((a.clone(), *ea));
                    i += 1;
                }
                Ordering::Greater => {
                    out.push((b.clone(), *eb));
                    j += 1;
                }
                Ordering::Equal => {
                    let e = if eb.key() > ea.key() { *eb } else { *ea };
                    out.push((a.clone(), e));
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&self.entries[i..]);
        out.extend_from_slice(&other.entries[j..]);
        let mut merged = VClock {
            entries: out,
            dots: Vec::new(),
        };
        if !self.dots.is_empty() || !other.dots.is_empty() {
            let mut dots: Vec<(Dot, u64)> = self.dots.iter().chain(&other.dots).cloned().collect();
            // Per dot, the later timestamp first: a symmetric choice.
            dots.sort_by(|(x, tx), (y, ty)| x.cmp(y).then_with(|| ty.cmp(tx)));
            dots.dedup_by(|later, kept| later.0 == kept.0);
            merged.dots = dots;
            merged.fold_dots();
        }
        merged
    }

    /// Merges `other` into `self`.
    pub fn merge_from(&mut self, other: &VClock) {
        if !other.is_empty() {
            *self = self.merge(other);
        }
    }

    /// This clock as [`VClock::prune`] leaves it, copied only when pruning changes it.
    pub fn pruned(&self, max_entries: usize) -> Cow<'_, VClock> {
        if self.entries.len() <= max_entries && self.dots.len() <= max_entries {
            return Cow::Borrowed(self);
        }
        let mut pruned = self.clone();
        pruned.prune(max_entries);
        Cow::Owned(pruned)
    }

    /// Drops the oldest entries (by timestamp, ties by actor) until at most `max_entries`
    /// remain, and the oldest exact dots likewise.
    ///
    /// Pruning forgets history, so a pruned clock may see as concurrent what was causally
    /// older: that costs a spurious sibling, never a lost write.
    pub fn prune(&mut self, max_entries: usize) {
        if self.dots.len() > max_entries {
            let mut by_age: Vec<usize> = (0..self.dots.len()).collect();
            by_age.sort_by(|&x, &y| {
                let (dx, tx) = &self.dots[x];
                let (dy, ty) = &self.dots[y];
                tx.cmp(ty).then_with(|| dx.cmp(dy))
            });
            let mut drop = vec![false; self.dots.len()];
            for &i in &by_age[..self.dots.len() - max_entries] {
                drop[i] = true;
            }
            let mut index = 0;
            self.dots.retain(|_| {
                let keep = !drop[index];
                index += 1;
                keep
            });
        }
        if self.entries.len() <= max_entries {
            return;
        }
        let mut by_age: Vec<usize> = (0..self.entries.len()).collect();
        by_age.sort_by(|&x, &y| {
            let (ax, ex) = &self.entries[x];
            let (ay, ey) = &self.entries[y];
            ex.timestamp_ms
                .cmp(&ey.timestamp_ms)
                .then_with(|| ax.cmp(ay))
        });
        let excess = self.entries.len() - max_entries;
        let mut drop = vec![false; self.entries.len()];
        for &i in &by_age[..excess] {
            drop[i] = true;
        }
        let mut index = 0;
        self.entries.retain(|_| {
            let keep = !drop[index];
            index += 1;
            keep
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn actor(i: u8) -> ActorId {
        ActorId::new(format!("n{i}").as_str(), 1)
    }

    /// A tiny self-describing token tree, enough to feed hand-made (garbled) wire data
    /// through the types' real `Deserialize` impls without a format crate.
    #[derive(Clone, Debug)]
    pub(crate) enum Tok {
        U(u64),
        S(String),
        Nil,
        Seq(Vec<Tok>),
    }

    impl<'de> serde::Deserializer<'de> for Tok {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            v: V,
        ) -> Result<V::Value, Self::Error> {
            match self {
                Tok::U(n) => v.visit_u64(n),
                Tok::S(s) => v.visit_string(s),
                Tok::Nil => v.visit_none(),
                Tok::Seq(items) => {
                    v.visit_seq(serde::de::value::SeqDeserializer::new(items.into_iter()))
                }
            }
        }

        fn deserialize_option<V: serde::de::Visitor<'de>>(
            self,
            v: V,
        ) -> Result<V::Value, Self::Error> {
            match self {
                Tok::Nil => v.visit_none(),
                other => v.visit_some(other),
            }
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
            ignored_any
        }
    }

    impl<'de> serde::de::IntoDeserializer<'de, serde::de::value::Error> for Tok {
        type Deserializer = Tok;

        fn into_deserializer(self) -> Tok {
            self
        }
    }

    /// The wire form of a clock listing `entries` as given: (node, incarnation, counter, ts).
    pub(crate) fn clock_tok(entries: &[(&str, u64, u64, u64)]) -> Tok {
        let list = entries
            .iter()
            .map(|&(node, inc, counter, ts)| {
                Tok::Seq(vec![
                    Tok::Seq(vec![Tok::S(node.to_string()), Tok::U(inc)]),
                    Tok::Seq(vec![Tok::U(counter), Tok::U(ts)]),
                ])
            })
            .collect();
        Tok::Seq(vec![Tok::Seq(list), Tok::Seq(Vec::new())])
    }

    pub(crate) fn clock_strategy(max_actors: u8) -> impl Strategy<Value = VClock> {
        let item = (
            0..max_actors,
            0u64..9,
            0u64..100,
            proptest::bool::weighted(0.3),
        );
        proptest::collection::vec(item, 0..8).prop_map(|items| {
            let mut c = VClock::new();
            for (a, counter, ts, exact) in items {
                if exact {
                    c.add_exact(&Dot::new(actor(a), counter), ts);
                } else {
                    c.witness(
                        &actor(a),
                        ClockEntry {
                            counter,
                            timestamp_ms: ts,
                        },
                    );
                }
            }
            c
        })
    }

    /// Adds the next event of `actor` (at wall time `now_ms`) as a writer does, and returns
    /// its counter.
    pub(crate) fn increment(clock: &mut VClock, actor: &ActorId, now_ms: u64) -> u64 {
        let next = clock.get(actor).saturating_add(1);
        clock.add_dot(&Dot::new(actor.clone(), next), now_ms);
        next
    }

    /// True when `clock` has seen every event of `other`: the causal order the merge is the
    /// least upper bound of.
    pub(crate) fn descends(clock: &VClock, other: &VClock) -> bool {
        other
            .entries()
            .all(|(actor, e)| clock.get(actor) >= e.counter)
            && other.exact_dots().all(|(d, _)| clock.contains(d))
    }

    #[test]
    fn increment_descend_merge_basics() {
        let (a, b) = (actor(1), actor(2));
        let mut x = VClock::new();
        assert_eq!(increment(&mut x, &a, 10), 1);
        let mut y = x.clone();
        assert!(descends(&x, &y) && descends(&y, &x), "equal");
        increment(&mut y, &a, 11);
        assert!(descends(&y, &x) && !descends(&x, &y), "x before y");
        increment(&mut x, &b, 12);
        assert!(!descends(&x, &y) && !descends(&y, &x), "concurrent");
        let m = x.merge(&y);
        assert_eq!((m.get(&a), m.get(&b)), (2, 1));
        assert!(m.contains(&Dot::new(a.clone(), 2)));
        assert!(!m.contains(&Dot::new(a, 3)));
    }

    #[test]
    fn prune_drops_oldest_then_smallest_actor() {
        let mut c = VClock::new();
        for i in 0..5u8 {
            increment(&mut c, &actor(i), 100 + u64::from(i));
        }
        // Two entries share the oldest timestamp; the tie goes by actor.
        increment(&mut c, &actor(9), 100);
        c.prune(5);
        let kept: Vec<String> = c.entries().map(|(a, _)| a.to_string()).collect();
        assert_eq!(kept, ["n1.1", "n2.1", "n3.1", "n4.1", "n9.1"]);
        let mut small = c.clone();
        small.prune(PRUNE_LIMIT);
        assert_eq!(small, c);
    }

    #[test]
    fn deserialization_restores_canonical_form() {
        let (a, b) = (actor(1), actor(2));
        let e = |counter, timestamp_ms| ClockEntry {
            counter,
            timestamp_ms,
        };
        let wire = WireClock {
            entries: vec![
                (b.clone(), e(2, 0)),
                (a.clone(), e(1, 0)),
                (b.clone(), e(5, 1)),
                (actor(3), e(0, 0)),
            ],
            // Covered, contiguous, repeated, zero and unsorted exact dots.
            dots: vec![
                (Dot::new(b.clone(), 4), 0),
                (Dot::new(actor(4), 9), 2),
                (Dot::new(a.clone(), 2), 3),
                (Dot::new(actor(4), 9), 2),
                (Dot::new(actor(4), 0), 2),
            ],
        };
        let clock = VClock::from(wire);
        let mut expected = VClock::new();
        expected.add_dot(&Dot::new(a, 2), 3);
        expected.add_dot(&Dot::new(b, 5), 1);
        expected.add_exact(&Dot::new(actor(4), 9), 2);
        assert_eq!(clock, expected);
        assert_eq!(clock.exact_len(), 1);
    }

    #[test]
    fn prune_keeps_at_most_the_limit() {
        let mut c = VClock::new();
        for i in 0..80u64 {
            increment(&mut c, &ActorId::new("n", i), i);
        }
        c.prune(PRUNE_LIMIT);
        assert_eq!(c.len(), PRUNE_LIMIT);
        assert_eq!(c.get(&ActorId::new("n", 29)), 0);
        assert_eq!(c.get(&ActorId::new("n", 30)), 1);
    }

    #[test]
    fn merge_ties_on_counter_take_the_later_timestamp_either_way() {
        let a = actor(1);
        let mut x = VClock::new();
        increment(&mut x, &a, 5);
        let mut y = VClock::new();
        increment(&mut y, &a, 9);
        assert_eq!(x.merge(&y), y.merge(&x));
        assert_eq!(
            x.merge(&y).entries().next().map(|(_, e)| e.timestamp_ms),
            Some(9)
        );
    }

    #[test]
    fn a_wire_clock_round_trips_through_the_token_tree() {
        use serde::Deserialize;
        let c = VClock::deserialize(clock_tok(&[("n1", 1, 3, 7), ("n2", 1, 1, 0)])).unwrap();
        let mut expected = VClock::new();
        expected.add_dot(&Dot::new(actor(1), 3), 7);
        expected.add_dot(&Dot::new(actor(2), 1), 0);
        assert_eq!(c, expected);
    }

    #[test]
    fn a_garbled_wire_clock_is_read_as_the_events_it_lists() {
        // Unsorted, repeated and zero entries, as a forged or corrupted context token may hold.
        use serde::Deserialize;
        let c = VClock::deserialize(clock_tok(&[
            ("n5", 1, 2, 0),
            ("n7", 1, 0, 0),
            ("n6", 1, 1, 0),
            ("n5", 1, 9, 4),
            ("n1", 1, 1000, 0),
        ]))
        .unwrap();
        assert_eq!(
            c.get(&actor(1)),
            1000,
            "a listed claim must not hide from lookups"
        );
        assert_eq!(c.get(&actor(5)), 9);
        assert_eq!(c.len(), 3);
        let mut canonical = VClock::new();
        canonical.add_dot(&Dot::new(actor(5), 9), 4);
        canonical.add_dot(&Dot::new(actor(6), 1), 0);
        canonical.add_dot(&Dot::new(actor(1), 1000), 0);
        assert_eq!(c, canonical);
    }

    #[test]
    fn an_exact_dot_covers_its_event_and_nothing_before_it() {
        let a = actor(1);
        let mut answer = VClock::new();
        answer.add_exact(&Dot::new(a.clone(), 43), 9);
        assert!(answer.contains(&Dot::new(a.clone(), 43)));
        assert!(!answer.contains(&Dot::new(a.clone(), 42)), "never seen");
        assert_eq!(answer.get(&a), 0);
        assert_eq!(answer.max_claim(&a), 43);
        assert_eq!(answer.exact_len(), 1);
        // Contiguous with the vector: folded.
        let mut contiguous = VClock::new();
        contiguous.add_dot(&Dot::new(a.clone(), 6), 1);
        contiguous.add_exact(&Dot::new(a.clone(), 7), 2);
        assert_eq!((contiguous.get(&a), contiguous.exact_len()), (7, 0));
        // A vector that catches up swallows (or folds) the exact dots.
        let mut read = VClock::new();
        read.add_dot(&Dot::new(a.clone(), 42), 3);
        let merged = answer.merge(&read);
        assert_eq!((merged.get(&a), merged.exact_len()), (43, 0));
        assert_eq!(merged, read.merge(&answer));
        let mut far = VClock::new();
        far.add_dot(&Dot::new(a.clone(), 50), 3);
        assert_eq!(answer.merge(&far), far);
        // Round trip through the wire, and through a garbled wire.
        let bytes = postcard::to_stdvec(&answer).unwrap();
        assert_eq!(postcard::from_bytes::<VClock>(&bytes).unwrap(), answer);
        // Pruning forgets the oldest exact dots too.
        let mut many = VClock::new();
        for i in 0..5u64 {
            many.add_exact(&Dot::new(actor(2), 10 * (i + 2)), i);
        }
        many.prune(2);
        assert_eq!(many.exact_len(), 2);
        assert!(many.contains(&Dot::new(actor(2), 60)));
        assert!(!many.contains(&Dot::new(actor(2), 20)));
    }

    proptest! {
        #[test]
        fn pruned_is_prune_without_a_copy_when_nothing_goes(
            clock in clock_strategy(6),
            max in 0usize..8,
        ) {
            let mut expected = clock.clone();
            expected.prune(max);
            let pruned = clock.pruned(max);
            prop_assert_eq!(matches!(pruned, Cow::Borrowed(_)), expected == clock);
            prop_assert_eq!(pruned.into_owned(), expected);
        }

        #[test]
        fn any_wire_clock_deserializes_to_its_canonical_form(
            items in proptest::collection::vec((0u8..6, 0u64..6, 0u64..100), 0..12)
        ) {
            use serde::Deserialize;
            let names: Vec<String> = items.iter().map(|(a, _, _)| format!("n{a}")).collect();
            let listed: Vec<(&str, u64, u64, u64)> = items
                .iter()
                .zip(&names)
                .map(|((_, counter, ts), name)| (name.as_str(), 1, *counter, *ts))
                .collect();
            let c = VClock::deserialize(clock_tok(&listed)).unwrap();
            let mut expected = VClock::new();
            for (a, counter, ts) in &items {
                expected.witness(&actor(*a), ClockEntry { counter: *counter, timestamp_ms: *ts });
            }
            prop_assert_eq!(&c, &expected);
            for a in 0..6u8 {
                let listed_max = items.iter().filter(|(x, _, _)| *x == a).map(|(_, n, _)| *n).max().unwrap_or(0);
                prop_assert_eq!(c.get(&actor(a)), listed_max);
            }
        }

        #[test]
        fn descends_is_reflexive(x in clock_strategy(4)) {
            prop_assert!(descends(&x, &x));
        }

        #[test]
        fn descends_is_antisymmetric(x in clock_strategy(3), y in clock_strategy(3)) {
            // Equal histories have equal representations.
            if descends(&x, &y) && descends(&y, &x) {
                prop_assert_eq!(x.entries().map(|(a, e)| (a.clone(), e.counter)).collect::<Vec<_>>(),
                    y.entries().map(|(a, e)| (a.clone(), e.counter)).collect::<Vec<_>>());
                prop_assert_eq!(x.exact_dots().map(|(d, _)| d.clone()).collect::<Vec<_>>(),
                    y.exact_dots().map(|(d, _)| d.clone()).collect::<Vec<_>>());
            }
        }

        #[test]
        fn descends_is_transitive(x in clock_strategy(3), y in clock_strategy(3), z in clock_strategy(3)) {
            // Build a chain so the premise holds often enough to matter.
            let xy = x.merge(&y);
            let xyz = xy.merge(&z);
            prop_assert!(descends(&xyz, &xy) && descends(&xy, &x) && descends(&xyz, &x));
            if descends(&x, &y) && descends(&y, &z) {
                prop_assert!(descends(&x, &z));
            }
        }

        #[test]
        fn merge_is_commutative_associative_idempotent(
            x in clock_strategy(4), y in clock_strategy(4), z in clock_strategy(4)
        ) {
            prop_assert_eq!(x.merge(&y), y.merge(&x));
            prop_assert_eq!(x.merge(&y).merge(&z), x.merge(&y.merge(&z)));
            prop_assert_eq!(x.merge(&x), x.clone());
        }

        #[test]
        fn merge_is_the_least_upper_bound(x in clock_strategy(4), y in clock_strategy(4), z in clock_strategy(4)) {
            let m = x.merge(&y);
            prop_assert!(descends(&m, &x) && descends(&m, &y));
            if descends(&z, &x) && descends(&z, &y) {
                prop_assert!(descends(&z, &m));
            }
        }

        #[test]
        fn increment_moves_after(x in clock_strategy(4), a in 0u8..5, now in 0u64..1000) {
            let mut y = x.clone();
            increment(&mut y, &actor(a), now);
            prop_assert!(descends(&y, &x) && !descends(&x, &y));
        }

        #[test]
        fn prune_bounds_size_and_only_forgets(x in clock_strategy(8), limit in 0usize..6) {
            let mut p = x.clone();
            p.prune(limit);
            prop_assert!(p.len() <= limit && p.exact_len() <= limit);
            prop_assert!(descends(&x, &p));
            for (a, e) in p.entries() {
                prop_assert_eq!(x.get(a), e.counter);
            }
        }

        // The decoder folds a peer's exact dots in one pass; adding them one by one (as it
        // used to, quadratic in their number) must give the same clock.
        #[test]
        fn decoding_folds_dots_as_adding_them_one_by_one_does(
            entries in proptest::collection::vec((0u8..4, 0u64..6, 0u64..4), 0..6),
            dots in proptest::collection::vec((0u8..4, 0u64..9, 0u64..4), 0..12),
        ) {
            let entries: Vec<(ActorId, ClockEntry)> = entries
                .into_iter()
                .map(|(a, counter, timestamp_ms)| (actor(a), ClockEntry { counter, timestamp_ms }))
                .collect();
            let dots: Vec<(Dot, u64)> = dots
                .into_iter()
                .map(|(a, counter, ts)| (Dot::new(actor(a), counter), ts))
                .collect();
            let mut one_by_one = VClock::from(WireClock { entries: entries.clone(), dots: Vec::new() });
            for (dot, ts) in &dots {
                one_by_one.add_exact(dot, *ts);
            }
            let bytes = postcard::to_stdvec(&(entries, dots)).unwrap();
            let decoded: VClock = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(decoded, one_by_one);
        }
    }

    #[test]
    fn a_clock_of_many_exact_dots_decodes_in_linear_time() {
        // 200 000 dots that never fold: one by one, that was 2 * 10^10 steps.
        let dots: Vec<(Dot, u64)> = (0..200_000u64)
            .map(|i| (Dot::new(actor(1), 2 * i + 2), i))
            .collect();
        let bytes = postcard::to_stdvec(&(Vec::<(ActorId, ClockEntry)>::new(), dots)).unwrap();
        let started = std::time::Instant::now();
        let decoded: VClock = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded.exact_len(), 200_000);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
