//! The store's rules on the in-memory engine: dots and forged contexts, set limits, digests
//! and purge candidates kept exact under concurrent writes, merges and purges; and, named
//! `limitation_*`, what the store deliberately does not promise.

use std::sync::Arc;

use super::*;
use crate::core::hash::{stable_hash, stable_hash_parts};
use proptest::prelude::*;

fn key(s: &str) -> Key {
    Bytes::copy_from_slice(s.as_bytes())
}

fn val(s: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(s.as_bytes()))
}

fn store(name: &str) -> Store {
    Store::new(ActorId::new(name, 7))
}

// The payload gauges as a scan of the whole map finds them.
fn recount(s: &Store) -> (u64, u64) {
    stored_keys(s).iter().fold((0, 0), |(k, v), key| {
        (k + key.len() as u64, v + s.get(key).value_bytes())
    })
}

// Every stored key, read segment by segment.
fn segment_keys(s: &Store, segment: usize) -> Vec<Key> {
    s.keys_in_segment(segment)
        .into_iter()
        .map(|(key, _)| key)
        .collect()
}

fn segment_digests(s: &Store) -> Vec<u64> {
    (0..SEGMENTS).map(|i| s.segment_digest(i)).collect()
}

fn stored_keys(s: &Store) -> Vec<Key> {
    (0..SEGMENTS).flat_map(|seg| segment_keys(s, seg)).collect()
}

#[test]
fn payload_gauges_follow_writes_siblings_deletes_and_purges() {
    let s = store("a");
    let (k1, k2) = (key("k1"), key("key2"));
    s.coordinate(&k1, &VClock::new(), val("abc"), 0).unwrap();
    s.coordinate(&k1, &VClock::new(), val("de"), 0).unwrap();
    assert_eq!((s.key_bytes(), s.value_bytes()), (2, 5), "siblings count");
    s.coordinate(&k2, &VClock::new(), val("x"), 0).unwrap();
    let ctx = s.get(&k1).read().context;
    s.coordinate(&k1, &ctx, val("f"), 1).unwrap();
    assert_eq!((s.key_bytes(), s.value_bytes()), (6, 2));
    let ctx = s.get(&k2).read().context;
    s.coordinate(&k2, &ctx, None, 2).unwrap();
    assert_eq!(
        (s.key_bytes(), s.value_bytes()),
        (6, 1),
        "a tombstone holds no value"
    );
    assert!(s.purge_tombstones(&k2, s.digest(&k2), 0));
    assert_eq!((s.key_bytes(), s.value_bytes()), (2, 1));
    let replica = store("r");
    replica.merge(&k1, &s.get(&k1)).unwrap();
    replica.merge(&k1, &s.get(&k1)).unwrap();
    assert_eq!((replica.key_bytes(), replica.value_bytes()), (2, 1));
    assert_eq!((s.key_bytes(), s.value_bytes()), recount(&s));
}

#[test]
fn coordinate_then_read_back() {
    let s = store("a");
    let k = key("cart");
    let first = s.coordinate(&k, &VClock::new(), val("x"), 1).unwrap();
    assert_eq!(first.dot, Dot::new(ActorId::new("a", 7), 1));
    let ctx = s.get(&k).read().context;
    let second = s.coordinate(&k, &ctx, val("y"), 2).unwrap();
    assert_eq!(second.set(), s.get(&k));
    assert_eq!(s.get(&k).read().values, vec![Bytes::from("y")]);
    assert_eq!(s.len(), 1);
    assert_eq!(s.digest(&k), s.get(&k).digest());
}

#[test]
fn concurrent_blind_writes_all_survive_with_distinct_dots() {
    let s = Arc::new(store("a"));
    let k = key("hot");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (s, k) = (Arc::clone(&s), k.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    s.coordinate(&k, &VClock::new(), val(&format!("{t}-{i}")), i)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let set = s.get(&k);
    assert_eq!(
        set.read().values.len(),
        200,
        "a blind write never erases another"
    );
    let mut counters: Vec<u64> = set.versions().iter().map(|v| v.dot.counter).collect();
    counters.dedup();
    assert_eq!(counters.len(), 200);
}

#[test]
fn a_seal_sees_every_write_that_succeeded_and_refuses_every_later_one() {
    let s = Arc::new(store("a"));
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let mut stored = 0u64;
                for i in 0..20_000 {
                    let k = key(&format!("{t}-{i}"));
                    if s.coordinate(&k, &VClock::new(), val("v"), 0).is_ok() {
                        stored += 1;
                    }
                }
                stored
            })
        })
        .collect();
    while s.len() < 100 {
        std::thread::yield_now();
    }
    let mut seen = 0;
    assert!(s.seal_if(|s| {
        seen = s.len() as u64;
        true
    }));
    let stored: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(stored, seen, "a write acknowledged after the check");
    assert!(
        stored < 60_000,
        "the writers were done before the seal: nothing was refused"
    );
    assert_eq!(s.len() as u64, seen);

    let open = store("b");
    assert!(!open.seal_if(|_| false));
    assert!(
        open.coordinate(&key("k"), &VClock::new(), val("v"), 0)
            .is_ok()
    );
}

#[test]
fn a_context_claiming_dots_this_actor_never_made_is_refused() {
    let s = store("a");
    let k = key("k");
    let mut forged = VClock::new();
    forged.add_dot(&Dot::new(s.actor(), u64::MAX - 1), 0);
    assert!(matches!(
        s.coordinate(&k, &forged, val("x"), 0),
        Err(StoreError::ForgedContext { claimed, issued: 0, .. }) if claimed == u64::MAX - 1
    ));
    assert!(s.is_empty(), "a refused write leaves nothing behind");
    let first = s.coordinate(&k, &VClock::new(), val("x"), 0).unwrap();
    assert_eq!(first.dot.counter, 1, "the counter was not raised");
    // A claim up to what was issued is a real read's: accepted.
    let ctx = s.get(&k).read().context;
    s.coordinate(&key("other"), &VClock::new(), val("y"), 0)
        .unwrap();
    assert!(s.coordinate(&k, &ctx, val("z"), 0).is_ok());
    // Claims about other actors are not ours to judge.
    let mut other = VClock::new();
    other.add_dot(&Dot::new(ActorId::new("b", 1), u64::MAX - 1), 0);
    assert!(s.coordinate(&k, &other, val("w"), 0).is_ok());
}

#[test]
fn a_forged_claim_planted_through_another_coordinator_never_covers_our_next_writes() {
    // A client gave node b a context naming a's actor with a huge counter; b cannot judge
    // it and replicates the version to a. a's next writes of the key must survive it.
    let s = store("a");
    let k = key("k");
    let planted_actor = s.actor();
    let mut claim = VClock::new();
    claim.add_dot(&Dot::new(planted_actor.clone(), u64::MAX - 1), 0);
    let mut planted = VersionSet::new();
    planted.write(&claim, Dot::new(ActorId::new("b", 1), 1), val("p"), 0);
    s.merge(&k, &planted).unwrap();
    assert_ne!(s.actor(), planted_actor, "a fresh epoch was taken");
    assert_eq!(s.epoch_changes(), 1);
    let next = s.coordinate(&k, &VClock::new(), val("mine"), 0).unwrap();
    assert_eq!(next.dot.counter, 1, "the counter was not raised");
    let values = s.get(&k).read().values;
    assert!(values.contains(&Bytes::from("mine")), "{values:?}");
    // Other keys never noticed.
    assert!(
        s.coordinate(&key("fresh"), &VClock::new(), val("z"), 0)
            .is_ok()
    );
}

#[test]
fn the_version_limit_counts_tombstones_and_empty_values() {
    let limits = SetLimits {
        max_bytes: 1_000,
        max_versions: 3,
    };
    let s = Store::with_limits(ActorId::new("a", 1), limits);
    let k = key("k");
    s.coordinate(&k, &VClock::new(), None, 0).unwrap();
    s.coordinate(&k, &VClock::new(), val(""), 0).unwrap();
    s.coordinate(&k, &VClock::new(), val(""), 0).unwrap();
    assert_eq!(
        s.coordinate(&k, &VClock::new(), None, 0),
        Err(StoreError::TooManyVersions {
            versions: 4,
            max: 3
        })
    );
    assert_eq!(s.get(&k).len(), 3);
    // A write with the context replaces them all: always allowed.
    let ctx = s.get(&k).read().context;
    assert!(s.coordinate(&k, &ctx, val("merged"), 0).is_ok());
    assert_eq!(s.get(&k).len(), 1);
    let big = "x".repeat(1_001);
    assert!(matches!(
        s.coordinate(&k, &VClock::new(), val(&big), 0),
        Err(StoreError::SetTooLarge { .. })
    ));
}

#[test]
fn segment_digests_stay_exact_under_concurrent_writes_merges_and_purges() {
    // Purge updates its segment after releasing the key's lock; XOR commutes, so the
    // final digests must still be exactly the XOR over the stored keys.
    let s = Arc::new(store("a"));
    let peer = store("p");
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let s = Arc::clone(&s);
            let sets: Vec<(Key, VersionSet)> = (0..4)
                .map(|i| {
                    let k = key(&format!("k{i}"));
                    let set = peer
                        .coordinate(&k, &VClock::new(), val(&format!("{t}")), 0)
                        .unwrap()
                        .set();
                    (k, set)
                })
                .collect();
            std::thread::spawn(move || {
                for round in 0..60 {
                    let (k, set) = &sets[round % sets.len()];
                    match (round + t) % 3 {
                        0 => {
                            let ctx = s.get(k).read().context;
                            s.coordinate(k, &ctx, None, 0).unwrap();
                        }
                        1 => {
                            s.merge(k, set).unwrap();
                        }
                        _ => {
                            s.purge_tombstones(k, s.digest(k), 0);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for segment in 0..SEGMENTS {
        let expected = s.keys_in_segment(segment).iter().fold(0, |acc, (k, d)| {
            assert_eq!(*d, s.get(k).digest());
            acc ^ stable_hash_parts(&[k, &d.to_le_bytes()])
        });
        assert_eq!(s.segment_digest(segment), expected, "segment {segment}");
    }
    // Every key sits in its own segment, the counts match the listing, and the candidates
    // are exactly the deleted keys.
    for segment in 0..SEGMENTS {
        for k in segment_keys(&s, segment) {
            assert_eq!(crate::core::segments::segment_of(&k), segment);
            assert!(!s.get(&k).is_empty());
        }
    }
    let mut stored = stored_keys(&s);
    stored.sort();
    assert_eq!(stored.len(), s.len());
    assert_eq!((s.key_bytes(), s.value_bytes()), recount(&s));
    let mut candidates = s.tombstone_candidates(None, usize::MAX);
    candidates.sort();
    let deleted: Vec<Key> = stored
        .into_iter()
        .filter(|k| s.get(k).is_all_tombstones())
        .collect();
    assert_eq!(candidates, deleted);
}

#[test]
fn tombstone_candidates_follow_deletes_writes_and_purges() {
    let s = store("a");
    let (k1, k2) = (key("k1"), key("k2"));
    for k in [&k1, &k2] {
        s.coordinate(k, &VClock::new(), val("v"), 0).unwrap();
    }
    assert!(s.tombstone_candidates(None, 10).is_empty());
    for k in [&k1, &k2] {
        let ctx = s.get(k).read().context;
        s.coordinate(k, &ctx, None, 1).unwrap();
    }
    let mut both = s.tombstone_candidates(None, 10);
    both.sort();
    assert_eq!(both, vec![k1.clone(), k2.clone()]);
    assert_eq!(s.tombstone_count(), 2);
    let first = s.tombstone_candidates(None, 1);
    let second = s.tombstone_candidates(Some(&first[0]), 1);
    assert_eq!(first.len(), 1, "the limit holds");
    assert_ne!(first, second, "pages do not overlap");
    // A write over the delete makes k1 live again; a purge removes k2 for good.
    let ctx = s.get(&k1).read().context;
    s.coordinate(&k1, &ctx, val("back"), 2).unwrap();
    assert!(s.purge_tombstones(&k2, s.digest(&k2), 0));
    assert!(s.tombstone_candidates(None, 10).is_empty());
    assert_eq!(
        segment_keys(&s, crate::core::segments::segment_of(&k2)),
        Vec::<Key>::new()
    );
    assert_eq!(
        s.keys_in_segment(crate::core::segments::segment_of(&k1))
            .len(),
        1
    );
}

#[test]
fn a_failed_first_write_indexes_nothing() {
    let s = Store::with_limits(
        ActorId::new("a", 1),
        SetLimits {
            max_bytes: 1,
            max_versions: 10,
        },
    );
    let absent = key("absent");
    assert!(s.coordinate(&absent, &VClock::new(), val("zz"), 0).is_err());
    assert!(s.is_empty());
    let indexed: Vec<Key> = (0..SEGMENTS)
        .flat_map(|seg| segment_keys(&s, seg))
        .collect();
    assert!(indexed.is_empty());
    assert!(segment_digests(&s).iter().all(|d| *d == 0));
}

// Design limitations, pinned so that a change of behaviour is noticed.

#[test]
fn limitation_a_context_from_another_key_replaces_versions_it_never_saw() {
    // Dots are per node, not per key, so a context only means something for its own key.
    let s = store("a");
    let (k1, k2) = (key("k1"), key("k2"));
    s.coordinate(&k2, &VClock::new(), val("unseen"), 0).unwrap();
    s.coordinate(&k1, &VClock::new(), val("x"), 0).unwrap();
    let ctx_of_k1 = s.get(&k1).read().context;
    s.coordinate(&k2, &ctx_of_k1, val("y"), 0).unwrap();
    assert_eq!(s.get(&k2).read().values, vec![Bytes::from("y")]);
}

#[test]
fn limitation_a_delete_without_context_hides_nothing() {
    let s = store("a");
    let k = key("k");
    s.coordinate(&k, &VClock::new(), val("v"), 0).unwrap();
    s.coordinate(&k, &VClock::new(), None, 1).unwrap();
    assert_eq!(s.get(&k).read().values, vec![Bytes::from("v")]);
}

#[test]
fn a_stale_copy_arriving_after_a_purge_does_not_bring_the_value_back() {
    // Owners purge the tombstone; a copy sent before the purge arrives after it.
    let s = store("a");
    let k = key("k");
    let stale = s.coordinate(&k, &VClock::new(), val("v"), 0).unwrap();
    let ctx = s.get(&k).read().context;
    s.coordinate(&k, &ctx, None, 1).unwrap();
    assert!(s.purge_tombstones(&k, s.digest(&k), 0));
    assert!(!s.merge(&k, &stale.set()).unwrap().changed);
    assert!(s.get(&k).is_empty());
    // The key written again afresh is kept, and the stale copy still cannot join it.
    s.coordinate(&k, &VClock::new(), val("new"), 2).unwrap();
    s.merge(&k, &stale.set()).unwrap();
    assert_eq!(s.get(&k).read().values, vec![Bytes::from("new")]);
}

#[test]
fn limitation_a_restart_that_keeps_the_actor_but_not_the_counter_reuses_dots() {
    // kv679 by another road: a node that keeps its data (and so its actor id) but starts
    // its counter at 0 reissues the dots of keys whose tombstones it purged.
    let before = store("a");
    let k = key("k");
    let old = before
        .coordinate(&k, &VClock::new(), val("old"), 0)
        .unwrap();
    let ctx = before.get(&k).read().context;
    before.coordinate(&k, &ctx, None, 1).unwrap();
    assert!(before.purge_tombstones(&k, before.digest(&k), 0));
    let after = store("a");
    let new = after.coordinate(&k, &VClock::new(), val("new"), 2).unwrap();
    assert_eq!(new.dot, old.dot);
    // A replica still holding the old version keeps one of the two: a write is lost.
    let mut replica = old.set();
    replica.merge(&new.set());
    assert_eq!(replica.read().values.len(), 1);
}

#[test]
fn merge_of_nothing_creates_nothing() {
    let s = store("a");
    let out = s.merge(&key("k"), &VersionSet::new()).unwrap();
    assert!(!out.changed);
    assert!(s.is_empty());
    assert!(segment_digests(&s).iter().all(|d| *d == 0));
}

#[test]
fn purge_removes_only_unchanged_all_tombstone_sets() {
    let s = store("a");
    let k = key("gone");
    s.coordinate(&k, &VClock::new(), val("x"), 0).unwrap();
    assert!(
        !s.purge_tombstones(&k, s.digest(&k), 0),
        "a live value is never purged"
    );
    let ctx = s.get(&k).read().context;
    s.coordinate(&k, &ctx, None, 1).unwrap();
    let stale_digest = s.digest(&k) ^ 1;
    assert!(!s.purge_tombstones(&k, stale_digest, 0));
    assert!(s.purge_tombstones(&k, s.digest(&k), 0));
    assert!(s.is_empty());
    assert_eq!(s.segment_digest(crate::core::segments::segment_of(&k)), 0);
}

#[test]
fn segments_follow_ring_position() {
    let k = key("some key");
    let expected = (stable_hash(&k) >> 52) as usize;
    assert_eq!(crate::core::segments::segment_of(&k), expected);
    let s = store("a");
    s.coordinate(&k, &VClock::new(), val("v"), 0).unwrap();
    assert_eq!(s.keys_in_segment(expected), vec![(k.clone(), s.digest(&k))]);
    assert_ne!(s.segment_digest(expected), 0);
    assert_eq!(
        s.segment_digest(SEGMENTS),
        0,
        "an out-of-range segment reads as empty"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn digests_agree_whatever_the_delivery_order(
        writes in proptest::collection::vec((0u8..6, 0u8..3, any::<bool>()), 1..30),
        seed in any::<u64>(),
    ) {
        // Three coordinators write to a few keys; two replicas receive all the resulting
        // sets, in two different orders, with redeliveries.
        let coords: Vec<Store> = ["a", "b", "c"].iter().map(|n| store(n)).collect();
        let mut deliveries = Vec::new();
        for (k, c, causal) in &writes {
            let k = key(&format!("k{k}"));
            let coord = &coords[usize::from(*c)];
            let ctx = if *causal { coord.get(&k).read().context } else { VClock::new() };
            let done = coord.coordinate(&k, &ctx, val("v"), 0).unwrap();
            deliveries.push((k, done.set()));
        }
        let (r1, r2) = (store("r1"), store("r2"));
        for (k, set) in &deliveries {
            r1.merge(k, set).unwrap();
        }
        let mut shuffled = deliveries.clone();
        let n = shuffled.len();
        for i in 0..n {
            let j = (seed.wrapping_mul(i as u64 + 1) % n as u64) as usize;
            shuffled.swap(i, j);
        }
        for (k, set) in shuffled.iter().chain(deliveries.iter().take(3)) {
            r2.merge(k, set).unwrap();
        }
        prop_assert_eq!(segment_digests(&r1), segment_digests(&r2));
        prop_assert_eq!((r1.key_bytes(), r1.value_bytes()), recount(&r1));
        prop_assert_eq!((r2.key_bytes(), r2.value_bytes()), recount(&r2));
        for (k, _) in &deliveries {
            prop_assert_eq!(r1.get(k), r2.get(k));
            prop_assert_eq!(r1.digest(k), r1.get(k).digest());
        }
        // A key one replica lacks shows in its segment digest.
        let extra = key("extra");
        r2.coordinate(&extra, &VClock::new(), val("x"), 0).unwrap();
        let seg = crate::core::segments::segment_of(&extra);
        prop_assert_ne!(r1.segment_digest(seg), r2.segment_digest(seg));
    }
}
