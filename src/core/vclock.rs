//! Version vectors (vector clocks) and dots.
//!
//! A [`VClock`] maps writer actors to counters. Every entry also keeps the wall time of its
//! last advance, used only to decide which entries to drop when a clock grows past
//! [`PRUNE_LIMIT`]; timestamps never take part in ordering.

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
    /// Wall time (ms) at which that counter was made; used for pruning only.
    pub timestamp_ms: u64,
}

impl ClockEntry {
    // Counter first, timestamp as a tie-break: a total order, so taking the larger of two
    // entries is a symmetric, associative and idempotent merge.
    fn key(&self) -> (u64, u64) {
        (self.counter, self.timestamp_ms)
    }
}

/// How two clocks relate causally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockOrder {
    /// The left clock happened before the right one.
    Before,
    /// The left clock happened after (descends from) the right one.
    After,
    /// Both saw exactly the same events.
    Equal,
    /// Neither saw all the events of the other.
    Concurrent,
}

/// A version vector: for each actor, the highest counter seen.
///
/// Entries are kept sorted by actor and never hold a zero counter, so equal histories have
/// equal representations. Deserializing restores that form whatever the wire held, since
/// lookups binary-search the entries and a misplaced entry would silently hide.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "WireClock")]
pub struct VClock {
    entries: Vec<(ActorId, ClockEntry)>,
}

// A clock as it arrives: possibly unsorted, with repeated or zero entries (a garbled or forged
// context token, a faulty peer). Same shape as `VClock`, so the wire format is unchanged.
#[derive(Deserialize)]
#[serde(rename = "VClock")]
struct WireClock {
    entries: Vec<(ActorId, ClockEntry)>,
}

impl From<WireClock> for VClock {
    fn from(wire: WireClock) -> Self {
        let mut entries = wire.entries;
        entries.retain(|(_, e)| e.counter != 0);
        // Per actor, the largest entry first; then keep only that one, as merge would.
        entries.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| y.key().cmp(&x.key())));
        entries.dedup_by(|later, kept| later.0 == kept.0);
        VClock { entries }
    }
}

impl VClock {
    /// The empty clock (no events seen).
    pub fn new() -> Self {
        VClock::default()
    }

    /// Number of actors in the clock.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the clock has seen no event.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, sorted by actor.
    pub fn entries(&self) -> impl Iterator<Item = (&ActorId, &ClockEntry)> {
        self.entries.iter().map(|(a, e)| (a, e))
    }

    fn position(&self, actor: &ActorId) -> Result<usize, usize> {
        self.entries.binary_search_by(|(a, _)| a.cmp(actor))
    }

    /// The counter of `actor`, 0 when absent.
    pub fn get(&self, actor: &ActorId) -> u64 {
        match self.position(actor) {
            Ok(i) => self.entries[i].1.counter,
            Err(_) => 0,
        }
    }

    /// True when the event `dot` is part of this clock's history.
    pub fn contains(&self, dot: &Dot) -> bool {
        dot.counter <= self.get(&dot.actor)
    }

    /// Advances `actor` by one at wall time `now_ms` and returns the new counter.
    ///
    /// Saturates at `u64::MAX` rather than wrapping, which would forget history.
    pub fn increment(&mut self, actor: &ActorId, now_ms: u64) -> u64 {
        let next = self.get(actor).saturating_add(1);
        self.witness(
            actor,
            ClockEntry {
                counter: next,
                timestamp_ms: now_ms,
            },
        );
        next
    }

    /// Adds the event `dot` (made at `timestamp_ms`) to the clock's history.
    pub fn add_dot(&mut self, dot: &Dot, timestamp_ms: u64) {
        self.witness(
            &dot.actor,
            ClockEntry {
                counter: dot.counter,
                timestamp_ms,
            },
        );
    }

    /// Lowers `actor`'s counter to at most `max` (no entry at 0): strips a claim of events that
    /// `actor` never made, such as a forged context's claim about the coordinator itself.
    pub fn cap(&mut self, actor: &ActorId, max: u64) {
        if let Ok(i) = self.position(actor)
            && self.entries[i].1.counter > max
        {
            if max == 0 {
                self.entries.remove(i);
            } else {
                self.entries[i].1.counter = max;
            }
        }
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
    }

    /// True when this clock has seen every event of `other`.
    pub fn descends(&self, other: &VClock) -> bool {
        other
            .entries
            .iter()
            .all(|(actor, e)| self.get(actor) >= e.counter)
    }

    /// The causal relation of `self` to `other` (timestamps are ignored).
    pub fn compare(&self, other: &VClock) -> ClockOrder {
        match (self.descends(other), other.descends(self)) {
            (true, true) => ClockOrder::Equal,
            (true, false) => ClockOrder::After,
            (false, true) => ClockOrder::Before,
            (false, false) => ClockOrder::Concurrent,
        }
    }

    /// The least clock that descends from both: pointwise maximum of the counters.
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
        VClock { entries: out }
    }

    /// Merges `other` into `self`.
    pub fn merge_from(&mut self, other: &VClock) {
        if !other.is_empty() {
            *self = self.merge(other);
        }
    }

    /// Drops the oldest entries (by timestamp, ties by actor) until at most `max_entries` remain.
    ///
    /// Pruning forgets history, so a pruned clock may see as concurrent what was causally
    /// older: that costs a spurious sibling, never a lost write.
    pub fn prune(&mut self, max_entries: usize) {
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
        Tok::Seq(vec![Tok::Seq(list)])
    }

    pub(crate) fn clock_strategy(max_actors: u8) -> impl Strategy<Value = VClock> {
        proptest::collection::vec((0..max_actors, 0u64..6, 0u64..100), 0..8).prop_map(|items| {
            let mut c = VClock::new();
            for (a, counter, ts) in items {
                c.witness(
                    &actor(a),
                    ClockEntry {
                        counter,
                        timestamp_ms: ts,
                    },
                );
            }
            c
        })
    }

    #[test]
    fn increment_compare_merge_basics() {
        let (a, b) = (actor(1), actor(2));
        let mut x = VClock::new();
        assert_eq!(x.increment(&a, 10), 1);
        let mut y = x.clone();
        assert_eq!(x.compare(&y), ClockOrder::Equal);
        y.increment(&a, 11);
        assert_eq!(x.compare(&y), ClockOrder::Before);
        assert_eq!(y.compare(&x), ClockOrder::After);
        x.increment(&b, 12);
        assert_eq!(x.compare(&y), ClockOrder::Concurrent);
        let m = x.merge(&y);
        assert_eq!((m.get(&a), m.get(&b)), (2, 1));
        assert!(m.contains(&Dot::new(a.clone(), 2)));
        assert!(!m.contains(&Dot::new(a, 3)));
    }

    #[test]
    fn prune_drops_oldest_then_smallest_actor() {
        let mut c = VClock::new();
        for i in 0..5u8 {
            c.increment(&actor(i), 100 + u64::from(i));
        }
        // Two entries share the oldest timestamp; the tie goes by actor.
        c.increment(&actor(9), 100);
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
        };
        let clock = VClock::from(wire);
        let mut expected = VClock::new();
        expected.add_dot(&Dot::new(a, 1), 0);
        expected.add_dot(&Dot::new(b, 5), 1);
        assert_eq!(clock, expected);
    }

    #[test]
    fn prune_keeps_at_most_the_limit() {
        let mut c = VClock::new();
        for i in 0..80u64 {
            c.increment(&ActorId::new("n", i), i);
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
        x.increment(&a, 5);
        let mut y = VClock::new();
        y.increment(&a, 9);
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
    fn cap_lowers_one_actor_only() {
        let mut c = VClock::new();
        c.add_dot(&Dot::new(actor(1), 10), 5);
        c.add_dot(&Dot::new(actor(2), 4), 5);
        c.cap(&actor(1), 7);
        assert_eq!((c.get(&actor(1)), c.get(&actor(2))), (7, 4));
        c.cap(&actor(2), 9);
        assert_eq!(
            c.get(&actor(2)),
            4,
            "a cap above the counter changes nothing"
        );
        c.cap(&actor(1), 0);
        assert_eq!(c.len(), 1, "a zero counter is no entry");
        c.cap(&actor(3), 0);
        assert_eq!(c.len(), 1);
    }

    proptest! {
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
        fn compare_is_reflexive(x in clock_strategy(4)) {
            prop_assert_eq!(x.compare(&x), ClockOrder::Equal);
        }

        #[test]
        fn compare_is_antisymmetric(x in clock_strategy(3), y in clock_strategy(3)) {
            let expected = match x.compare(&y) {
                ClockOrder::Before => ClockOrder::After,
                ClockOrder::After => ClockOrder::Before,
                other => other,
            };
            prop_assert_eq!(y.compare(&x), expected);
            if x.descends(&y) && y.descends(&x) {
                prop_assert_eq!(x.compare(&y), ClockOrder::Equal);
            }
        }

        #[test]
        fn descends_is_transitive(x in clock_strategy(3), y in clock_strategy(3), z in clock_strategy(3)) {
            // Build a chain so the premise holds often enough to matter.
            let xy = x.merge(&y);
            let xyz = xy.merge(&z);
            prop_assert!(xyz.descends(&xy) && xy.descends(&x) && xyz.descends(&x));
            if x.descends(&y) && y.descends(&z) {
                prop_assert!(x.descends(&z));
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
            prop_assert!(m.descends(&x) && m.descends(&y));
            if z.descends(&x) && z.descends(&y) {
                prop_assert!(z.descends(&m));
            }
        }

        #[test]
        fn increment_moves_after(x in clock_strategy(4), a in 0u8..5, now in 0u64..1000) {
            let mut y = x.clone();
            y.increment(&actor(a), now);
            prop_assert_eq!(y.compare(&x), ClockOrder::After);
            prop_assert_eq!(x.compare(&y), ClockOrder::Before);
        }

        #[test]
        fn prune_bounds_size_and_only_forgets(x in clock_strategy(8), limit in 0usize..6) {
            let mut p = x.clone();
            p.prune(limit);
            prop_assert!(p.len() <= limit);
            prop_assert!(x.descends(&p));
            for (a, e) in p.entries() {
                prop_assert_eq!(x.get(a), e.counter);
            }
        }
    }
}
