//! Rounds between in-memory replicas: what a round costs in sync, with one differing key and
//! with many; that any difference converges in one round; that malformed answers are errors;
//! and that anti-entropy never brings a purged delete back. The shared digests kept on every
//! write are checked against a listing of the keys.

use bytes::Bytes;
use proptest::prelude::*;

use std::collections::HashMap;

use super::*;
use crate::core::ids::ActorId;
use crate::core::vclock::VClock;

fn key(s: &str) -> Key {
    Bytes::copy_from_slice(s.as_bytes())
}

fn val(s: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(s.as_bytes()))
}

fn ring() -> Ring {
    Ring::build(["a", "b", "c"].map(|n| (NodeId::new(n), 16))).unwrap()
}

fn size<T: Serialize>(value: &T) -> usize {
    // What the node sends: a tag byte, then postcard.
    postcard::experimental::serialized_size(value).unwrap() + 1
}

/// One simulated node.
struct Sim {
    me: NodeId,
    store: Store,
    ring: Ring,
    n: usize,
    caches: HashMap<NodeId, SharedDigests>,
    now_ms: u64,
}

impl Sim {
    fn new(name: &str, n: usize) -> Self {
        Sim {
            me: NodeId::new(name),
            store: Store::new(ActorId::new(name, 1)),
            ring: ring(),
            n,
            caches: HashMap::new(),
            now_ms: 1_000,
        }
    }

    fn write(&self, k: &str, v: &str) {
        let k = key(k);
        let ctx = self.store.get(&k).read().context;
        self.store
            .coordinate(&k, &ctx, val(v), self.now_ms)
            .unwrap();
    }

    fn delete(&self, k: &str) {
        let k = key(k);
        let ctx = self.store.get(&k).read().context;
        self.store.coordinate(&k, &ctx, None, self.now_ms).unwrap();
    }

    fn copy_to(&self, other: &Sim, k: &str) {
        let k = key(k);
        other.store.merge(&k, &self.store.get(&k)).unwrap();
    }

    /// Runs `f` with this node's side of a round with `peer`, digests refreshed.
    fn with<T>(&mut self, peer: &NodeId, f: impl FnOnce(&Replica<'_>) -> T) -> T {
        let cache = self
            .caches
            .entry(peer.clone())
            .or_insert_with(|| SharedDigests::new(self.me.clone(), peer.clone()));
        cache.refresh(&self.store, &self.ring, self.n);
        let replica = Replica {
            store: &self.store,
            ring: &self.ring,
            n: self.n,
            me: &self.me,
            digests: cache,
            hinted: &|_| false,
            now_ms: self.now_ms,
        };
        f(&replica)
    }

    fn shares(&self, peer: &Sim, k: &Key) -> bool {
        shares(&self.ring, self.n, &self.me, &peer.me, k)
    }
}

#[derive(Debug, Default)]
struct Run {
    stats: RoundStats,
    sent_by_initiator: usize,
    sent_by_responder: usize,
    largest_message: usize,
    repaired_by_responder: usize,
}

/// One round, `a` initiating; every message measured as the node measures it.
fn round(a: &mut Sim, b: &mut Sim) -> Result<Run, AeError> {
    let (pa, pb) = (a.me.clone(), b.me.clone());
    let mut run = Run::default();
    let (mut initiator, mut request) = a.with(&pb, Initiator::start);
    loop {
        let sent = size(&request);
        run.sent_by_initiator += sent;
        run.largest_message = run.largest_message.max(sent);
        let answer = b.with(&pa, |r| respond(r, request));
        let sent = size(&answer.reply);
        run.sent_by_responder += sent;
        run.largest_message = run.largest_message.max(sent);
        run.repaired_by_responder += answer.repaired;
        let next = a.with(&pb, |r| initiator.step(r, answer.reply))?;
        match next {
            Some(next) => request = next,
            None => break,
        }
    }
    run.stats = initiator.stats().clone();
    Ok(run)
}

fn assert_shared_equal(a: &Sim, b: &Sim) {
    for segment in 0..SEGMENTS {
        for (k, _) in a
            .store
            .keys_in_segment(segment)
            .into_iter()
            .chain(b.store.keys_in_segment(segment))
        {
            if a.shares(b, &k) {
                assert_eq!(a.store.get(&k), b.store.get(&k), "{k:?}");
            }
        }
    }
}

#[test]
fn in_sync_replicas_exchange_only_the_root() {
    let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 3));
    for i in 0..500 {
        a.write(&format!("k{i}"), "v");
        a.copy_to(&b, &format!("k{i}"));
    }
    let run = round(&mut a, &mut b).unwrap();
    assert!(run.stats.in_sync);
    assert_eq!(run.stats.requests, 1);
    assert!(run.sent_by_initiator <= 32, "{run:?}");
    assert!(run.sent_by_responder <= 2, "{run:?}");
    // Steady state recomputes nothing; one write recomputes one segment.
    let cache = a.caches.get_mut(&b.me).unwrap();
    assert_eq!(cache.refresh(&a.store, &a.ring, 3), 0);
    a.write("k1", "again");
    let cache = a.caches.get_mut(&b.me).unwrap();
    assert_eq!(cache.refresh(&a.store, &a.ring, 3), 1);
    assert_eq!(cache.refresh(&a.store, &a.ring, 2), SEGMENTS, "N changed");
}

#[test]
fn an_empty_replica_catches_up_in_one_round_with_bytes_proportional_to_the_keys() {
    // Whichever side starts: the empty one pulling, or the full one pushing.
    for empty_starts in [true, false] {
        let mut sent = Vec::new();
        for keys in [100usize, 1000] {
            let (mut full, mut empty) = (Sim::new("a", 3), Sim::new("b", 3));
            for i in 0..keys {
                full.write(&format!("key-{i:05}"), "value-0123456789");
            }
            let run = if empty_starts {
                let run = round(&mut empty, &mut full).unwrap();
                assert_eq!(run.stats.repaired, keys);
                run
            } else {
                let run = round(&mut full, &mut empty).unwrap();
                assert_eq!(run.repaired_by_responder, keys);
                run
            };
            assert_shared_equal(&full, &empty);
            assert!(round(&mut full, &mut empty).unwrap().stats.in_sync);
            sent.push(run.sent_by_initiator + run.sent_by_responder);
        }
        // Per key: the key (once or twice), its digest, one version, segment digests.
        let per_key = (sent[1] - sent[0]) / 900;
        assert!((40..=200).contains(&per_key), "{sent:?}");
        assert!(sent[0] < 100 * 200 + 64 * 1024, "{sent:?}");
    }
}

#[test]
fn one_differing_key_costs_a_path_down_the_tree_not_a_listing() {
    let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 3));
    let name = |i: usize| format!("key-{i:05}-{}", "p".repeat(30));
    for i in 0..20_000 {
        a.write(&name(i), "v");
        a.copy_to(&b, &name(i));
    }
    // A key in a segment too full to list outright, so the buckets narrow it down.
    let changed = (0..20_000)
        .map(name)
        .find(|k| {
            a.store
                .keys_in_segment(crate::core::segments::segment_of(k.as_bytes()))
                .len()
                >= 4
        })
        .unwrap();
    b.write(&changed, "changed on b");
    let run = round(&mut a, &mut b).unwrap();
    assert_shared_equal(&a, &b);
    assert_eq!(run.stats.differing_segments, 1);
    assert_eq!(run.stats.differing_buckets, 1);
    assert_eq!((run.stats.sets_sent, run.stats.repaired), (1, 1));
    // Root, 64 group digests, 64 segment digests, 16 bucket digests, a bucket's keys
    // (about one here, 15 at a million keys), and the two sets.
    let total = run.sent_by_initiator + run.sent_by_responder;
    assert!(total < 2200, "{run:?}");
}

#[test]
fn scope_mismatch_ends_the_round_without_exchanging_keys() {
    let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 2));
    a.write("only-a", "v");
    let run = round(&mut a, &mut b).unwrap();
    assert!(run.stats.scope_mismatch);
    assert_eq!(run.stats.requests, 1);
    assert!(b.store.is_empty());
}

#[test]
fn large_differences_travel_in_bounded_batches() {
    let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 3));
    let big = "x".repeat(1 << 20);
    for i in 0..6 {
        a.write(&format!("big{i}"), &big);
    }
    // Over a MiB of key names, so the listing needs more than one answer.
    let long = "k".repeat(200);
    for i in 0..6000 {
        b.write(&format!("{long}{i}"), "v");
    }
    let run = round(&mut a, &mut b).unwrap();
    assert_shared_equal(&a, &b);
    assert!(run.stats.requests > 4, "{:?}", run.stats);
    assert!(
        run.largest_message < SETS_BUDGET + (2 << 20),
        "{}",
        run.largest_message
    );
    assert_eq!(run.repaired_by_responder, 6);
    assert_eq!(run.stats.repaired, 6000);
}

fn replica_parts(sim: &mut Sim, peer: &str) -> SharedDigests {
    let mut cache = SharedDigests::new(sim.me.clone(), NodeId::new(peer));
    cache.refresh(&sim.store, &sim.ring, sim.n);
    cache
}

#[test]
fn malformed_answers_are_errors_not_panics() {
    let mut a = Sim::new("a", 3);
    a.write("k", "v");
    let cache = replica_parts(&mut a, "b");
    let replica = Replica {
        store: &a.store,
        ring: &a.ring,
        n: 3,
        me: &a.me,
        digests: &cache,
        hinted: &|_| false,
        now_ms: 0,
    };
    let (mut i, _) = Initiator::start(&replica);
    assert_eq!(
        i.step(&replica, AeReply::Groups(vec![0; 3])),
        Err(AeError::Malformed("group count"))
    );
    let (mut i, _) = Initiator::start(&replica);
    assert!(matches!(
        i.step(&replica, AeReply::Digests(vec![])),
        Err(AeError::Unexpected("root"))
    ));
    let (mut i, _) = Initiator::start(&replica);
    let next = i.step(&replica, AeReply::Groups(vec![0; GROUPS])).unwrap();
    assert!(matches!(
        next,
        Some(AeRequest {
            step: Step::Segments { .. },
            ..
        })
    ));
    // Bucket digests of a segment that was not asked, or of the wrong count: only the
    // group of "k" differs, so only its segments are asked.
    let k_segment = crate::core::segments::segment_of(b"k");
    let k_group = k_segment / SEGMENTS_PER_GROUP;
    let mut theirs = cache.groups();
    theirs[k_group] ^= 1;
    let (mut i, _) = Initiator::start(&replica);
    i.step(&replica, AeReply::Groups(theirs.clone())).unwrap();
    let outside = ((k_group + 1) % GROUPS * SEGMENTS_PER_GROUP) as u16;
    assert_eq!(
        i.step(
            &replica,
            AeReply::Buckets(vec![(outside, SegmentView::Keys(vec![]))])
        ),
        Err(AeError::Malformed("bucket digests"))
    );
    let (mut i, _) = Initiator::start(&replica);
    i.step(&replica, AeReply::Groups(theirs)).unwrap();
    let short = AeReply::Buckets(vec![(k_segment as u16, SegmentView::Digests(vec![0; 3]))]);
    assert_eq!(
        i.step(&replica, short),
        Err(AeError::Malformed("bucket digests"))
    );
    // A key listing that lists nothing, or more than was asked.
    let k_segment = k_segment as u16;
    let (mut i, _) = Initiator::start(&replica);
    i.step(&replica, AeReply::Groups(vec![0; GROUPS])).unwrap();
    let next = i
        .step(
            &replica,
            AeReply::Buckets(vec![(k_segment, SegmentView::Digests(vec![0; BUCKETS]))]),
        )
        .unwrap();
    assert!(matches!(
        next,
        Some(AeRequest {
            step: Step::Keys { .. },
            ..
        })
    ));
    assert_eq!(
        i.step(
            &replica,
            AeReply::Keys {
                listed: 0,
                keys: vec![]
            }
        ),
        Err(AeError::Malformed("listed count"))
    );
    // A request for an out-of-range segment is simply not different.
    let b = Sim::new("b", 3);
    let cache_b = SharedDigests::new(b.me.clone(), a.me.clone());
    let replica_b = Replica {
        store: &b.store,
        ring: &b.ring,
        n: 3,
        me: &b.me,
        digests: &cache_b,
        hinted: &|_| false,
        now_ms: 0,
    };
    let answer = respond(
        &replica_b,
        AeRequest {
            from: a.me.clone(),
            scope: Scope::of(&b.ring, 3),
            step: Step::Segments {
                segments: vec![(u16::MAX, 7)],
            },
        },
    );
    assert_eq!(answer.reply, AeReply::Buckets(vec![]));
}

#[test]
fn pushed_keys_the_receiver_does_not_share_are_ignored() {
    // N = 1: a owns nothing together with b.
    let a = Sim::new("a", 1);
    let mut b = Sim::new("b", 1);
    a.write("k", "v");
    let set = a.store.get(&key("k"));
    let answer = b.with(&a.me.clone(), |r| {
        respond(
            r,
            AeRequest {
                from: NodeId::new("a"),
                scope: Scope::of(r.ring, 1),
                step: Step::Exchange {
                    push: vec![(key("k"), set)],
                    want: vec![key("k")],
                    purge: vec![],
                },
            },
        )
    });
    assert_eq!(answer.repaired, 0);
    assert!(b.store.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random_differences_converge_after_one_round(
        ops in proptest::collection::vec((0u16..300, 0u8..5), 1..120),
        n in 2usize..=3,
    ) {
        let (mut a, mut b) = (Sim::new("a", n), Sim::new("b", n));
        let c = Sim::new("c", n);
        for (k, op) in &ops {
            let k = format!("k{k}");
            match op {
                0 => a.write(&k, "a"),
                1 => b.write(&k, "b"),
                2 => { a.write(&k, "both"); a.copy_to(&b, &k); }
                3 => { c.write(&k, "c"); c.copy_to(&a, &k); c.copy_to(&b, &k); }
                _ => { a.write(&k, "gone"); a.delete(&k); }
            }
        }
        let before: Vec<(Key, VersionSet)> = (0..300)
            .map(|i| key(&format!("k{i}")))
            .filter(|k| !a.shares(&b, k))
            .map(|k| { let s = b.store.get(&k); (k, s) })
            .collect();
        let differing: usize = (0..300)
            .map(|i| key(&format!("k{i}")))
            .filter(|k| a.shares(&b, k) && a.store.digest(k) != b.store.digest(k))
            .count();
        let run = round(&mut a, &mut b).unwrap();
        assert_shared_equal(&a, &b);
        for (k, set) in before {
            prop_assert_eq!(b.store.get(&k), set, "a key b does not share with a");
        }
        prop_assert!(run.stats.sets_sent + run.stats.repaired >= differing);
        prop_assert!(run.stats.sets_sent <= differing && run.stats.repaired <= differing);
        let again = round(&mut b, &mut a).unwrap();
        prop_assert!(again.stats.in_sync, "{:?}", again.stats);
    }
}

// The purge.

fn delete_everywhere(nodes: &[&Sim], k: &str) {
    nodes[0].write(k, "v");
    nodes[0].delete(k);
    for other in &nodes[1..] {
        nodes[0].copy_to(other, k);
    }
}

#[test]
fn a_purge_is_not_undone_by_anti_entropy_and_spreads_to_an_owner_that_missed_it() {
    let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 3));
    let k = "deleted";
    delete_everywhere(&[&a, &b], k);
    let digest = a.store.digest(&key(k));
    assert!(a.store.purge_tombstones(&key(k), digest, a.now_ms));
    // b missed the purge order. Whoever starts the round, a does not take the tombstone
    // back, and b purges it.
    let run = round(&mut b, &mut a).unwrap();
    assert_eq!(run.stats.purged, 1, "{run:?}");
    assert!(a.store.is_empty() && b.store.is_empty());
    assert!(round(&mut a, &mut b).unwrap().stats.in_sync);

    let k2 = "deleted-2";
    delete_everywhere(&[&a, &b], k2);
    let digest = a.store.digest(&key(k2));
    assert!(a.store.purge_tombstones(&key(k2), digest, a.now_ms));
    let run = round(&mut a, &mut b).unwrap();
    assert_eq!(run.repaired_by_responder, 0);
    assert!(a.store.is_empty() && b.store.is_empty(), "{run:?}");
}

#[test]
fn a_rewritten_key_is_not_purged_by_a_stale_order() {
    let (a, b) = (Sim::new("a", 3), Sim::new("b", 3));
    let k = key("k");
    delete_everywhere(&[&a, &b], "k");
    let agreed = a.store.digest(&k);
    b.write("k", "written again");
    assert!(!b.store.purge_tombstones(&k, agreed, 0));
    assert_eq!(
        b.store.get(&k).read().values,
        vec![Bytes::from("written again")]
    );
    assert!(
        !b.store.purged_as(&k, agreed),
        "nothing purged, nothing remembered"
    );
}

/// A write at `sim` that did not see the key's delete (its writer's context is empty).
fn blind_write(sim: &Sim, k: &str, v: &str) {
    sim.store
        .coordinate(&key(k), &VClock::new(), val(v), sim.now_ms)
        .unwrap();
}

#[test]
fn a_write_taken_between_the_purge_check_and_the_order_leaves_the_owners_equal() {
    // a and b agreed on the tombstones; b (the checker) takes a write that did not see the
    // delete before it purges its own copy; a purges, then gets b's new set.
    let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 3));
    let k = "k";
    a.write(k, "old");
    let old = a.store.get(&key(k));
    delete_everywhere(&[&a, &b], k);
    let agreed = b.store.digest(&key(k));
    blind_write(&b, k, "new");
    assert!(a.store.purge_tombstones(&key(k), agreed, a.now_ms));
    b.copy_to(&a, k);
    assert!(
        b.store.purge_tombstones(&key(k), agreed, b.now_ms),
        "the tombstones go, the write stays"
    );
    assert_eq!(a.store.get(&key(k)), b.store.get(&key(k)));
    assert_eq!(b.store.get(&key(k)).read().values, vec![Bytes::from("new")]);
    assert!(round(&mut a, &mut b).unwrap().stats.in_sync);
    // The old value the tombstones deleted does not come back to either.
    for sim in [&a, &b] {
        sim.store.merge(&key(k), &old).unwrap();
        assert_eq!(
            sim.store.get(&key(k)).read().values,
            vec![Bytes::from("new")]
        );
    }
}

/// a and b hold the same deleted key; a purged it and b missed the order. The agreed digest.
fn purged_on_a_only(a: &Sim, b: &Sim, k: &str) -> u64 {
    delete_everywhere(&[a, b], k);
    let agreed = a.store.digest(&key(k));
    assert!(a.store.purge_tombstones(&key(k), agreed, a.now_ms));
    agreed
}

/// One round, started by a or by b.
fn round_started_by(a_starts: bool, a: &mut Sim, b: &mut Sim) -> Run {
    if a_starts { round(a, b) } else { round(b, a) }.unwrap()
}

#[test]
fn an_owner_that_missed_the_order_and_took_a_write_drops_the_purged_tombstones_by_anti_entropy() {
    for a_starts in [true, false] {
        let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 3));
        let k = "k";
        let agreed = purged_on_a_only(&a, &b, k);
        // b missed the order, then took a write that did not see the delete.
        blind_write(&b, k, "new");
        let run = round_started_by(a_starts, &mut a, &mut b);
        assert_eq!(a.store.get(&key(k)), b.store.get(&key(k)), "{run:?}");
        assert_eq!(a.store.get(&key(k)).read().values, vec![Bytes::from("new")]);
        assert!(
            b.store.purged_as(&key(k), agreed),
            "b remembers the purge too"
        );
        assert!(round(&mut a, &mut b).unwrap().stats.in_sync);
    }
}

#[test]
fn an_owner_that_missed_the_order_and_took_a_write_that_replaced_part_of_the_purge_converges() {
    // Found by the simulation: two concurrent deletes, purged on a; b missed the order and
    // took a write that saw one of them. b holds the other beside the write: a part of the
    // purged set, which no order naming the whole set matches.
    for a_starts in [true, false] {
        let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 3));
        let k = "k";
        a.write(k, "v");
        a.copy_to(&b, k);
        a.delete(k);
        let saw_a = a.store.get(&key(k)).read().context;
        b.delete(k);
        a.copy_to(&b, k);
        b.copy_to(&a, k);
        assert_eq!(a.store.get(&key(k)).versions().len(), 2);
        let agreed = a.store.digest(&key(k));
        assert!(a.store.purge_tombstones(&key(k), agreed, a.now_ms));
        b.store
            .coordinate(&key(k), &saw_a, val("w"), b.now_ms)
            .unwrap();
        assert_eq!(b.store.get(&key(k)).versions().len(), 2, "b's delete and w");
        let run = round_started_by(a_starts, &mut a, &mut b);
        assert_eq!(a.store.get(&key(k)), b.store.get(&key(k)), "{run:?}");
        assert_eq!(a.store.get(&key(k)).read().values, vec![Bytes::from("w")]);
        assert!(round(&mut a, &mut b).unwrap().stats.in_sync);
    }
}

#[test]
fn an_owner_that_missed_the_order_and_took_a_concurrent_delete_converges_and_purges_again() {
    // Found by the simulation: b missed the purge (a lost order, or a purge its crash
    // undid), then took a delete that did not see the purged one. Both of b's tombstones
    // must reach a, else no purge order could ever name b's older tombstone apart from the
    // newer one, and a and b would differ for good.
    for a_starts in [true, false] {
        let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 3));
        let k = "k";
        purged_on_a_only(&a, &b, k);
        b.store
            .coordinate(&key(k), &VClock::new(), None, b.now_ms)
            .unwrap();
        assert_eq!(b.store.get(&key(k)).versions().len(), 2);
        let run = round_started_by(a_starts, &mut a, &mut b);
        assert_eq!(a.store.get(&key(k)), b.store.get(&key(k)), "{run:?}");
        assert!(round(&mut a, &mut b).unwrap().stats.in_sync);
        // The set is all tombstones: the next purge, once agreed, takes it whole.
        let both = a.store.digest(&key(k));
        assert!(a.store.purge_tombstones(&key(k), both, a.now_ms));
        assert!(b.store.purge_tombstones(&key(k), both, b.now_ms));
        assert!(round(&mut a, &mut b).unwrap().stats.in_sync);
    }
}

#[test]
fn a_late_copy_of_a_purged_value_is_dropped_by_anti_entropy() {
    // b still holds the value (it missed the delete); a purged the tombstones. A round from
    // either side must not bring the value back to a.
    let (mut a, mut b) = (Sim::new("a", 3), Sim::new("b", 3));
    a.write("k", "old");
    a.copy_to(&b, "k");
    a.delete("k");
    let digest = a.store.digest(&key("k"));
    assert!(a.store.purge_tombstones(&key("k"), digest, a.now_ms));
    round(&mut b, &mut a).unwrap();
    round(&mut a, &mut b).unwrap();
    assert!(
        a.store.get(&key("k")).read().values.is_empty(),
        "not undone on a"
    );
}

// ---- shared digests kept on write equal the listing ----

/// Keys whose ring position falls in a cell that holds a token of `ring` (where the pieces
/// matter), `count` of them, found by trying names in order.
fn keys_near_tokens(ring: &Ring, count: usize, tag: &str) -> Vec<Key> {
    let split: std::collections::HashSet<usize> = ring
        .token_values()
        .iter()
        .map(|&t| crate::core::segments::cell_at(t))
        .collect();
    (0u64..)
        .map(|i| key(&format!("{tag}{i}")))
        .filter(|k| split.contains(&crate::core::segments::cell_at(Ring::key_position(k))))
        .take(count)
        .collect()
}

/// Per segment, the XOR of the elements of the stored keys among `keys` that `keep` keeps:
/// what a listing of every segment would give.
fn listed_digests(store: &Store, keys: &[Key], keep: impl Fn(&Key) -> bool) -> Vec<u64> {
    let mut digests = vec![0u64; SEGMENTS];
    for k in keys {
        let digest = store.digest(k);
        if digest != 0 && keep(k) {
            digests[crate::core::segments::segment_of(k)] ^= Store::key_element(k, digest);
        }
    }
    digests
}

fn ring_of_layout(vnodes: &[u32]) -> Ring {
    Ring::build(
        vnodes
            .iter()
            .enumerate()
            .map(|(i, v)| (NodeId::new(format!("n{i}")), *v)),
    )
    .unwrap()
}

/// Applies one operation to `key` on `store`: write, delete, purge, merge of another
/// node's version, or the drop of a handed-off copy.
fn apply(store: &Store, other: &Store, k: &Key, op: u8) {
    match op {
        0 => {
            let ctx = store.get(k).read().context;
            store.coordinate(k, &ctx, val("v"), 1).unwrap();
        }
        1 => {
            let ctx = store.get(k).read().context;
            store.coordinate(k, &ctx, None, 1).unwrap();
        }
        2 => {
            store.purge_tombstones(k, store.digest(k), 1);
        }
        3 => {
            let theirs = other.coordinate(k, &VClock::new(), val("w"), 1).unwrap();
            store.merge(k, &theirs.set()).unwrap();
        }
        _ => {
            store.remove_handed(k, store.digest(k));
        }
    }
}

/// Checks every peer's shared digests, and the digests of what `me` does not own, against
/// the listing, segment by segment (and bucket by bucket where a segment holds keys).
fn check_against_listing(
    store: &Store,
    ring: &Ring,
    n: usize,
    me: &NodeId,
    caches: &mut HashMap<NodeId, SharedDigests>,
    keys: &[Key],
) -> Result<(), TestCaseError> {
    for peer in ring.nodes().iter().filter(|p| *p != me) {
        let cache = caches
            .entry(peer.clone())
            .or_insert_with(|| SharedDigests::new(me.clone(), peer.clone()));
        cache.refresh(store, ring, n);
        let expected = listed_digests(store, keys, |k| shares(ring, n, me, peer, k));
        for (segment, digest) in expected.iter().enumerate() {
            prop_assert_eq!(
                cache.segment(segment),
                *digest,
                "peer {} segment {}",
                peer,
                segment
            );
            if *digest != 0 {
                let listing = shared_keys(store, ring, n, me, peer, segment);
                prop_assert_eq!(cache.buckets(store, segment), bucket_digests(&listing));
            }
        }
        let mut fresh = SharedDigests::new(me.clone(), peer.clone());
        fresh.refresh(store, ring, n);
        prop_assert_eq!(cache.root(), fresh.root());
    }
    let live = |_: &NodeId| true;
    let view = crate::core::view::View {
        me,
        ring,
        n,
        live: &live,
    };
    let plan = crate::core::ranges::RangePlan::new(ring, |p| !view.owns_at(p));
    let mut elsewhere = crate::core::ranges::RangeDigests::new(plan);
    elsewhere.refresh(store, |_, _| {});
    let expected = listed_digests(store, keys, |k| !view.owns(k));
    for (segment, digest) in expected.iter().enumerate() {
        prop_assert_eq!(
            elsewhere.segment(segment),
            *digest,
            "not owned, segment {}",
            segment
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn shared_digests_kept_on_write_equal_the_listing(
        before in proptest::collection::vec(1u32..20, 2..6),
        after in proptest::collection::vec(1u32..20, 2..6),
        n in 1usize..4,
        ops in proptest::collection::vec((0usize..240, 0u8..5), 1..240),
    ) {
        let (ring, changed) = (ring_of_layout(&before), ring_of_layout(&after));
        let me = NodeId::new("n0");
        let store = Store::new(ActorId::new("n0", 1));
        let other = Store::new(ActorId::new("x", 1));
        // Keys in cells a token of either ring cuts, and keys anywhere.
        let mut keys = keys_near_tokens(&ring, 80, "a");
        keys.extend(keys_near_tokens(&changed, 80, "b"));
        keys.extend((0..80).map(|i| key(&format!("c{i}"))));
        let mut caches = HashMap::new();
        // The caches see the store often while the first ring holds, then the ring changes
        // under data already stored, and the writes go on.
        for (step, (k, op)) in ops.iter().enumerate() {
            let on = if step < ops.len() / 2 { &ring } else { &changed };
            apply(&store, &other, &keys[*k], *op);
            if step % 40 == 39 {
                check_against_listing(&store, on, n, &me, &mut caches, &keys)?;
            }
        }
        check_against_listing(&store, &changed, n, &me, &mut caches, &keys)?;
        check_against_listing(&store, &ring, n, &me, &mut caches, &keys)?;
    }
}

#[test]
fn a_purge_order_skips_a_key_hinted_here_since_the_agreement() {
    let (a, b) = (Sim::new("a", 3), Sim::new("b", 3));
    let k = "deleted";
    delete_everywhere(&[&a, &b], k);
    let digest = b.store.digest(&key(k));
    let cache = SharedDigests::new(b.me.clone(), a.me.clone());
    let hinted = |at: &[u8]| at == key(k).as_ref();
    let mut replica = Replica {
        store: &b.store,
        ring: &b.ring,
        n: 3,
        me: &b.me,
        digests: &cache,
        hinted: &hinted,
        now_ms: b.now_ms,
    };
    let order = |replica: &Replica<'_>| AeRequest {
        from: a.me.clone(),
        scope: replica.scope(),
        step: Step::Purge {
            keys: vec![(key(k), digest)],
        },
    };
    assert_eq!(respond(&replica, order(&replica)).purged, 0);
    assert_eq!(b.store.digest(&key(k)), digest);
    let nothing = |_: &[u8]| false;
    replica.hinted = &nothing;
    assert_eq!(respond(&replica, order(&replica)).purged, 1);
    assert!(b.store.is_empty());
}

#[test]
fn a_request_listing_a_segment_or_a_key_many_times_gets_a_bounded_answer() {
    let (mut a, b) = (Sim::new("a", 3), Sim::new("b", 3));
    a.write("k", "v");
    let segment = crate::core::segments::segment_of(&key("k")) as u16;
    let answer = a.with(&b.me, |replica| {
        let segments = respond(
            replica,
            AeRequest {
                from: b.me.clone(),
                scope: replica.scope(),
                step: Step::Segments {
                    segments: vec![(segment, 0); 100_000],
                },
            },
        );
        let digests = respond(
            replica,
            AeRequest {
                from: b.me.clone(),
                scope: replica.scope(),
                step: Step::Digests {
                    keys: vec![key("k"); DIGESTS_MAX + 10],
                },
            },
        );
        (segments.reply, digests.reply)
    });
    assert!(
        matches!(&answer.0, AeReply::Buckets(views) if views.len() == 1),
        "{:?}",
        answer.0
    );
    assert!(matches!(&answer.1, AeReply::Digests(d) if d.len() == DIGESTS_MAX));
}
