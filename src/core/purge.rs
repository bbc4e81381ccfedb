//! The purge of tombstones: when a deleted key may be forgotten, and by whom.
//!
//! A delete writes tombstones, and a key whose set is only tombstones is purged (removed)
//! when, first, its newest tombstone is older than a grace period and, second, **every node
//! that may hold a copy of the key** agreed: the key's owners on the ring hold exactly the
//! same set (same digest), and every other member that may hold data (a former owner not done
//! handing the key off, a leaving node) holds either nothing of it or that same set. A member
//! that keeps a hint of the key agrees to nothing until the hint is delivered. Any member that
//! is not alive right now blocks the purge: a dead owner holds a copy nobody can see, and a
//! dead fallback may hold a hint of a value the tombstones delete. Members that left or were
//! removed hold nothing and never come back.
//!
//! The first owner of the key checks: it asks every other member for the digest of what it
//! holds of the key ([`held_digest`], [`PurgeRound`]), and if all agree it tells each holder
//! of the set to purge, which each does only if its own set is still that one
//! ([`crate::core::store::Store::purge_tombstones`]), or is those tombstones beside a write
//! taken since that did not see them: then only the tombstones go, as they do from that write's
//! set on a holder that purged before it arrived. The grace is never sufficient alone.
//!
//! What the agreement cannot see are copies in flight (a replica write, a hint or a handoff
//! sent before the purge and delivered after it). Each node that purged remembers the purged
//! set's context for a while ([`crate::core::purged`]) and drops any version it covers on
//! arrival, so such a copy is dropped as well.

use std::collections::{BTreeMap, HashMap};

use super::ids::{Key, NodeId};
use super::ring::Ring;
use super::store::Store;
use super::version::VersionSet;

/// Whether a set is a purge candidate by age: only tombstones, the newest older than `grace_ms`.
pub fn grace_passed(set: &VersionSet, now_ms: u64, grace_ms: u64) -> bool {
    set.is_all_tombstones()
        && set
            .versions()
            .iter()
            .map(|v| v.timestamp_ms)
            .max()
            .is_some_and(|newest| newest.saturating_add(grace_ms) <= now_ms)
}

/// What a member answers for a key of which it keeps hints: it agrees to no purge until they
/// are delivered. A hint merged into the answer would vanish from it when the tombstones cover
/// it, and would outlive the purge to bring the deleted value back once the purge is forgotten.
pub const KEEPS_HINTS: u64 = u64::MAX;

/// Purges `key`'s tombstones as a pass agreed at `digest`, unless this node keeps hints of
/// the key (`hinted`), taken since the agreement: their versions could come back once the
/// purge is forgotten, so the key waits for the next pass. Returns whether it purged.
pub fn purge_agreed(store: &Store, key: &Key, digest: u64, hinted: bool, now_ms: u64) -> bool {
    !hinted && store.purge_tombstones(key, digest, now_ms)
}

/// The digest of what this node stores of `key`, or [`KEEPS_HINTS`] when it keeps versions
/// of it as hints (`hinted`). What a purge check asks every member.
pub fn held_digest(store: &Store, key: &[u8], hinted: bool) -> u64 {
    if !hinted {
        store.digest(key)
    } else {
        KEEPS_HINTS
    }
}

/// A key this node may purge once every other member confirms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeCheck {
    /// The key.
    pub key: Key,
    /// Its digest here.
    pub digest: u64,
    /// The key's other owners, who must all answer `digest`.
    pub owners: Vec<NodeId>,
}

/// A check every member confirmed: the key may be purged on `holders`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// The key.
    pub key: Key,
    /// The digest of the all-tombstone set to purge.
    pub digest: u64,
    /// The other members holding exactly that set, who are told to purge it.
    pub holders: Vec<NodeId>,
}

/// The purge checks of one pass, and the decision once every member answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeRound {
    checks: Vec<PurgeCheck>,
    members: Vec<NodeId>,
}

/// Where this node stands for a purge pass.
pub struct PurgeScope<'a> {
    /// The stored data.
    pub store: &'a Store,
    /// This node's ring.
    pub ring: &'a Ring,
    /// Replicas per key.
    pub n: usize,
    /// This node.
    pub me: &'a NodeId,
    /// Every other member that may hold data (neither left nor removed), whatever its
    /// liveness or ring status.
    pub members: &'a [NodeId],
}

impl PurgeRound {
    /// Picks, among `candidates`, the keys this node is the first owner of, whose sets are
    /// all tombstones past the grace, and of which this node holds no hint. Nothing is picked
    /// unless every member in `scope.members` is `live`.
    pub fn new(
        scope: &PurgeScope<'_>,
        candidates: impl IntoIterator<Item = Key>,
        now_ms: u64,
        grace_ms: u64,
        live: impl Fn(&NodeId) -> bool,
        hinted_here: impl Fn(&[u8]) -> bool,
    ) -> PurgeRound {
        if !scope.members.iter().all(&live) {
            return PurgeRound::default();
        }
        let mut checks = Vec::new();
        for key in candidates {
            let Ok(owners) = scope.ring.owners(&key, scope.n) else {
                continue;
            };
            if owners.first() != Some(scope.me) || hinted_here(&key) {
                continue;
            }
            let set = scope.store.get(&key);
            if !grace_passed(&set, now_ms, grace_ms) {
                continue;
            }
            checks.push(PurgeCheck {
                digest: set.digest(),
                key,
                owners: owners[1..].to_vec(),
            });
        }
        PurgeRound {
            members: if checks.is_empty() {
                Vec::new()
            } else {
                scope.members.to_vec()
            },
            checks,
        }
    }

    /// The checks of this pass.
    pub fn checks(&self) -> &[PurgeCheck] {
        &self.checks
    }

    /// For each other member, the keys to ask it the digest of: every key of the pass, in
    /// check order.
    pub fn questions(&self) -> Vec<(NodeId, Vec<Key>)> {
        let keys: Vec<Key> = self.checks.iter().map(|c| c.key.clone()).collect();
        self.members
            .iter()
            .map(|node| (node.clone(), keys.clone()))
            .collect()
    }

    /// The checks every member confirmed: `answers` holds, per member, the digests in the
    /// order of its question; a member that did not answer (or answered a wrong count)
    /// confirms nothing. Owners must answer the digest; others that digest or 0 (nothing).
    pub fn agreed(&self, answers: &HashMap<NodeId, Vec<u64>>) -> Vec<Agreed> {
        let complete = self.members.iter().all(|node| {
            answers
                .get(node)
                .is_some_and(|digests| digests.len() == self.checks.len())
        });
        if !complete {
            return Vec::new();
        }
        self.checks
            .iter()
            .enumerate()
            .filter_map(|(i, check)| {
                let mut holders = Vec::new();
                for node in &self.members {
                    let held = answers[node][i];
                    let owner = check.owners.contains(node);
                    if held == KEEPS_HINTS {
                        return None;
                    }
                    if held == check.digest {
                        holders.push(node.clone());
                    } else if owner || held != 0 {
                        return None;
                    }
                }
                Some(Agreed {
                    key: check.key.clone(),
                    digest: check.digest,
                    holders,
                })
            })
            .collect()
    }
}

/// The purge orders to send: for each member, the agreed (key, digest) pairs it holds.
pub fn purge_orders(agreed: &[Agreed]) -> Vec<(NodeId, Vec<(Key, u64)>)> {
    let mut by_node: BTreeMap<NodeId, Vec<(Key, u64)>> = BTreeMap::new();
    for check in agreed {
        for node in &check.holders {
            by_node
                .entry(node.clone())
                .or_default()
                .push((check.key.clone(), check.digest));
        }
    }
    by_node.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::ids::{ActorId, nodes};
    use crate::core::vclock::VClock;

    fn ring() -> Ring {
        Ring::build(["a", "b", "c", "d"].map(|n| (NodeId::new(n), 16))).unwrap()
    }

    /// A key whose first owner on `ring()` with N = 3 is `first`, with the other owners.
    fn key_first_owned_by(first: &str) -> (Key, Vec<NodeId>) {
        let ring = ring();
        (0..)
            .map(|i| Key::from(format!("key-{i}")))
            .find_map(|k| {
                let owners = ring.owners(&k, 3).unwrap();
                (owners[0] == NodeId::new(first)).then(|| (k, owners[1..].to_vec()))
            })
            .unwrap()
    }

    fn deleted(store: &Store, key: &Key, at: u64) -> u64 {
        store
            .coordinate(key, &VClock::new(), Some(Bytes::from("v")), at)
            .unwrap();
        let ctx = store.get(key).read().context;
        store.coordinate(key, &ctx, None, at).unwrap();
        store.digest(key)
    }

    #[test]
    fn grace_is_measured_from_the_newest_tombstone() {
        let store = Store::new(ActorId::new("a", 1));
        let key = Key::from_static(b"k");
        deleted(&store, &key, 100);
        let set = store.get(&key);
        assert!(!grace_passed(&set, 150, 100));
        assert!(grace_passed(&set, 200, 100));
        store
            .coordinate(&key, &VClock::new(), Some(Bytes::from("back")), 300)
            .unwrap();
        assert!(!grace_passed(&store.get(&key), 10_000, 100), "a live value");
    }

    #[test]
    fn every_member_must_be_live_and_agree_owners_hold_the_set_others_nothing_or_it() {
        let (me, ring) = (NodeId::new("a"), ring());
        let store = Store::new(ActorId::new("a", 1));
        let (key, owners) = key_first_owned_by("a");
        let digest = deleted(&store, &key, 0);
        let members = nodes(&["b", "c", "d"]);
        let scope = PurgeScope {
            store: &store,
            ring: &ring,
            n: 3,
            me: &me,
            members: &members,
        };
        let no_hint = |_: &[u8]| false;
        let early = PurgeRound::new(&scope, [key.clone()], 5, 10, |_| true, no_hint);
        assert!(early.checks().is_empty(), "within the grace");
        let d_down = PurgeRound::new(
            &scope,
            [key.clone()],
            50,
            10,
            |n| n.as_str() != "d",
            no_hint,
        );
        assert!(
            d_down.checks().is_empty(),
            "a silent non-owner may hold a hint"
        );
        let hinted = PurgeRound::new(&scope, [key.clone()], 50, 10, |_| true, |_| true);
        assert!(hinted.checks().is_empty(), "a hint of ours blocks it too");

        let round = PurgeRound::new(&scope, [key.clone()], 50, 10, |_| true, no_hint);
        assert_eq!(round.checks().len(), 1);
        assert_eq!(round.checks()[0].owners, owners);
        let questions = round.questions();
        assert_eq!(questions.len(), 3, "every member is asked");
        let other = members.iter().find(|m| !owners.contains(m)).unwrap();
        let answers = |other_holds: u64, owner_holds: u64| -> HashMap<NodeId, Vec<u64>> {
            members
                .iter()
                .map(|m| {
                    let held = if m == other { other_holds } else { owner_holds };
                    (m.clone(), vec![held])
                })
                .collect()
        };
        let agreed = round.agreed(&answers(0, digest));
        assert_eq!(agreed.len(), 1);
        let mut sorted_owners = owners.clone();
        sorted_owners.sort();
        assert_eq!(
            agreed[0].holders, sorted_owners,
            "only holders are told to purge"
        );
        let with_copy = round.agreed(&answers(digest, digest));
        assert_eq!(with_copy[0].holders.len(), 3);
        assert_eq!(purge_orders(&with_copy).len(), 3);
        assert!(
            round.agreed(&answers(digest ^ 1, digest)).is_empty(),
            "another copy somewhere (an old value in a hint) blocks it"
        );
        assert!(
            round.agreed(&answers(0, 0)).is_empty(),
            "an owner without the set blocks it"
        );
        let mut silent = answers(0, digest);
        silent.remove(other);
        assert!(round.agreed(&silent).is_empty(), "everyone must answer");
        let mut garbled = answers(0, digest);
        garbled.insert(other.clone(), vec![]);
        assert!(round.agreed(&garbled).is_empty());
    }

    #[test]
    fn only_the_first_owner_checks() {
        let (me, ring) = (NodeId::new("a"), ring());
        let store = Store::new(ActorId::new("a", 1));
        let (key, _) = key_first_owned_by("b");
        deleted(&store, &key, 0);
        let members = nodes(&["b", "c", "d"]);
        let scope = PurgeScope {
            store: &store,
            ring: &ring,
            n: 3,
            me: &me,
            members: &members,
        };
        let round = PurgeRound::new(&scope, [key], 50, 10, |_| true, |_| false);
        assert!(round.checks().is_empty());
        assert!(round.questions().is_empty());
    }

    #[test]
    fn a_member_keeping_hints_of_the_key_agrees_to_no_purge_even_hints_the_tombstones_cover() {
        let key = Key::from_static(b"k");
        let written = Store::new(ActorId::new("x", 1));
        let old = written
            .coordinate(&key, &VClock::new(), Some(Bytes::from("old")), 0)
            .unwrap();
        let delete = written.coordinate(&key, &old.answer, None, 1).unwrap();
        let store = Store::new(ActorId::new("a", 1));
        let digest = store.merge(&key, &delete.set()).unwrap().digest;
        assert_eq!(held_digest(&store, &key, false), digest);
        // A hint of the value the delete replaced: merged into the answer, it would vanish
        // into the tombstones, and the purge would leave it behind.
        let mut merged = store.get(&key);
        merged.merge(&old.set());
        assert_eq!(merged.digest(), digest);
        assert_eq!(held_digest(&store, &key, true), KEEPS_HINTS);
        assert_eq!(
            held_digest(&Store::new(ActorId::new("z", 1)), &key, true),
            KEEPS_HINTS
        );
        let check = PurgeCheck {
            key: key.clone(),
            digest,
            owners: vec![],
        };
        let round = PurgeRound {
            checks: vec![check],
            members: nodes(&["b"]),
        };
        let answers = HashMap::from([(NodeId::new("b"), vec![KEEPS_HINTS])]);
        assert!(round.agreed(&answers).is_empty());
        let answers = HashMap::from([(NodeId::new("b"), vec![digest])]);
        assert_eq!(round.agreed(&answers).len(), 1);
    }
}
