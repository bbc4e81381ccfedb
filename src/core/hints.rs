//! Hinted handoff: writes held by a fallback node for an owner that was unreachable.
//!
//! A hint carries the whole version set the coordinator sent (see [`crate::core::version`]
//! for why sets, not single versions, travel) and the owner it is meant for. Hints leave the
//! store only when acknowledged; delivery is a merge, so replaying a hint any number of times
//! changes nothing after the first time.
//!
//! Hints for the same owner and key are coalesced while they wait, so a hot key written many
//! times during an outage is handed back as one set. A hint is never changed once it has been
//! taken for delivery, even after a release: writes that arrive later start a new hint, so an
//! acknowledgement, even a late one for a delivery already released, covers exactly what the
//! owner received.
//!
//! The store is bounded in count and in bytes ([`HintLimits`]): at the limit a new hint is
//! refused ([`HintsFull`]), and the fallback that refused it does not count as an ack. Hints
//! are indexed by key too, so a read looks at the hints of its key only.
//!
//! A node with a durable engine gives its store a [`HintJournal`]: every hint is written
//! there before it counts as taken, and forgotten there when acknowledged, so hints outlive
//! the process like the data does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::hash::stable_hash_parts;
use super::ids::{Key, NodeId};
use super::version::VersionSet;

/// Identifies a hint within its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HintId(pub u64);

/// A write held for an owner that could not take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// This hint's id, for the acknowledgement.
    pub id: HintId,
    /// The node the versions are meant for.
    pub owner: NodeId,
    /// The key written.
    pub key: Key,
    /// The versions to merge into the owner's set.
    pub versions: VersionSet,
    /// Local time the hint was first stored.
    pub created_at_ms: u64,
}

/// How much a node keeps as hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HintLimits {
    /// Most hints held at once.
    pub max_hints: usize,
    /// Most bytes held at once (keys, values, and a fixed cost per version).
    pub max_bytes: u64,
}

impl HintLimits {
    /// At most `max_hints` hints and `max_bytes` bytes of them.
    pub const fn new(max_hints: usize, max_bytes: u64) -> Self {
        HintLimits {
            max_hints,
            max_bytes,
        }
    }

    /// No limit (for tests and tools).
    pub const NONE: HintLimits = HintLimits {
        max_hints: usize::MAX,
        max_bytes: u64::MAX,
    };
}

/// A hint refused because the store is at its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "hint store full: {hints} hints, {bytes} bytes (limits {max_hints} hints, {max_bytes} bytes)"
)]
pub struct HintsFull {
    /// Hints held.
    pub hints: usize,
    /// Bytes held.
    pub bytes: u64,
    /// The count limit.
    pub max_hints: usize,
    /// The byte limit.
    pub max_bytes: u64,
}

/// The bytes a hint counts for: its key, its values, and a fixed cost per version for the
/// dot, the context and the bookkeeping.
pub fn hint_bytes(key: &[u8], versions: &VersionSet) -> u64 {
    let per_version: u64 = versions
        .versions()
        .iter()
        .map(|v| 64 + 40 * v.context.len() as u64)
        .sum();
    key.len() as u64 + versions.value_bytes() + per_version
}

/// Where a hint store writes its hints so that they outlive the process.
pub trait HintJournal: Send {
    /// Records `hint` (new, or grown by coalescing) under its id; an error refuses the hint.
    fn record(&self, hint: &Hint) -> Result<(), String>;
    /// Forgets the hint `id` (acknowledged); false when the journal could not, and still
    /// holds it.
    fn forget(&self, id: HintId) -> bool;
}

/// Why a hint was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HintRefused {
    /// The store is at its limits.
    #[error(transparent)]
    Full(#[from] HintsFull),
    /// The journal could not record it (a full or failed disk).
    #[error("hint not kept: {0}")]
    NotRecorded(String),
    /// The store was closed: this node finished leaving the cluster, or is stopping.
    #[error("the hint store is closed: this node left the cluster or is stopping")]
    Closed,
}

struct Slot {
    hint: Hint,
    bytes: u64,
    in_flight: bool,
}

#[derive(Default)]
struct OwnerHints {
    slots: BTreeMap<HintId, Slot>,
    // Key -> the never-taken hint that new versions of that key coalesce into.
    waiting: HashMap<Key, HintId>,
}

/// The hints a fallback node holds, per owner.
pub struct HintStore {
    owners: BTreeMap<NodeId, OwnerHints>,
    by_key: HashMap<Key, BTreeSet<(NodeId, HintId)>>,
    next_id: u64,
    count: usize,
    bytes: u64,
    limits: HintLimits,
    journal: Option<Box<dyn HintJournal>>,
    // Set once the store takes no more hints; its journal then changes no more either.
    closed: bool,
    // Set when the journal failed to forget an acknowledged hint: it no longer holds exactly
    // what this store does.
    diverged: bool,
}

impl Default for HintStore {
    fn default() -> Self {
        HintStore::with_limits(HintLimits::NONE)
    }
}

impl HintStore {
    /// An empty hint store bounded by `limits`.
    pub fn with_limits(limits: HintLimits) -> Self {
        HintStore {
            owners: BTreeMap::new(),
            by_key: HashMap::new(),
            next_id: 0,
            count: 0,
            bytes: 0,
            limits,
            journal: None,
            closed: false,
            diverged: false,
        }
    }

    /// Refuses every new hint from now on, and leaves the journal as it is: this node
    /// finished leaving (a hint taken now would stay with a node that delivers nothing), or
    /// is stopping (its clean-stop record describes the journal as closed). A hint
    /// acknowledged after this stays in the journal and is delivered again after a restart:
    /// a merge, harmless.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// The count of hints held and a digest of them, for a clean stop to record; `None` when
    /// the journal may hold other hints than this store (it failed to forget one).
    pub fn fingerprint(&self) -> Option<(u64, u64)> {
        if self.diverged {
            return None;
        }
        let digest = self
            .owners
            .values()
            .flat_map(|hints| hints.slots.values())
            .map(|slot| {
                let hint = &slot.hint;
                stable_hash_parts(&[
                    &hint.id.0.to_le_bytes(),
                    hint.owner.as_str().as_bytes(),
                    &hint.key,
                    &hint.versions.digest().to_le_bytes(),
                ])
            })
            .fold(0, |all, one| all ^ one);
        Some((self.count as u64, digest))
    }

    /// This store, writing every hint to `journal` from now on.
    pub fn with_journal(mut self, journal: Box<dyn HintJournal>) -> Self {
        self.journal = Some(journal);
        self
    }

    fn record(&self, hint: &Hint) -> Result<(), HintRefused> {
        match &self.journal {
            Some(journal) => journal.record(hint).map_err(HintRefused::NotRecorded),
            None => Ok(()),
        }
    }

    /// Stores `versions` of `key` for `owner`, coalescing with a waiting hint of the same key;
    /// refused when the store would go past its limits.
    pub fn add(
        &mut self,
        owner: NodeId,
        key: Key,
        versions: VersionSet,
        now_ms: u64,
    ) -> Result<HintId, HintRefused> {
        if self.closed {
            return Err(HintRefused::Closed);
        }
        let hints = self.owners.entry(owner.clone()).or_default();
        if let Some(id) = hints.waiting.get(&key).copied()
            && let Some(slot) = hints.slots.get(&id)
        {
            let mut grown = slot.hint.clone();
            grown.versions.merge(&versions);
            let bytes = hint_bytes(&key, &grown.versions);
            let total = self.bytes - slot.bytes + bytes;
            if bytes > slot.bytes && total > self.limits.max_bytes {
                return Err(self.full().into());
            }
            self.record(&grown)?;
            let Some(slot) = self
                .owners
                .get_mut(&owner)
                .and_then(|h| h.slots.get_mut(&id))
            else {
                return Err(HintRefused::NotRecorded("the hint vanished".into()));
            };
            slot.hint = grown;
            self.bytes = total;
            slot.bytes = bytes;
            return Ok(id);
        }
        let bytes = hint_bytes(&key, &versions);
        if self.count >= self.limits.max_hints
            || self.bytes.saturating_add(bytes) > self.limits.max_bytes
        {
            if hints.slots.is_empty() {
                self.owners.remove(&owner);
            }
            return Err(self.full().into());
        }
        let id = HintId(self.next_id + 1);
        let hint = Hint {
            id,
            owner: owner.clone(),
            key,
            versions,
            created_at_ms: now_ms,
        };
        if let Err(refused) = self.record(&hint) {
            if self.owners.get(&owner).is_some_and(|h| h.slots.is_empty()) {
                self.owners.remove(&owner);
            }
            return Err(refused);
        }
        self.insert(hint, bytes);
        Ok(id)
    }

    /// Takes back a hint its journal recorded before a restart, under its old id, as if it
    /// had just been added (and was never taken). Over the limits it is kept all the same:
    /// a hint that was an ack must not be dropped.
    pub fn restore(&mut self, hint: Hint) {
        let bytes = hint_bytes(&hint.key, &hint.versions);
        self.insert(hint, bytes);
    }

    // Stores `hint` (of `bytes`) under its id, indexed by owner and key.
    fn insert(&mut self, hint: Hint, bytes: u64) {
        let id = hint.id;
        let hints = self.owners.entry(hint.owner.clone()).or_default();
        // The newest hint of a key is the one new versions coalesce into.
        if hints.waiting.get(&hint.key).is_none_or(|w| *w < id) {
            hints.waiting.insert(hint.key.clone(), id);
        }
        self.by_key
            .entry(hint.key.clone())
            .or_default()
            .insert((hint.owner.clone(), id));
        let old = hints.slots.insert(
            id,
            Slot {
                hint,
                bytes,
                in_flight: false,
            },
        );
        if let Some(old) = old {
            self.count -= 1;
            self.bytes -= old.bytes;
        }
        self.count += 1;
        self.bytes += bytes;
        self.next_id = self.next_id.max(id.0);
    }

    fn full(&self) -> HintsFull {
        HintsFull {
            hints: self.count,
            bytes: self.bytes,
            max_hints: self.limits.max_hints,
            max_bytes: self.limits.max_bytes,
        }
    }

    /// Owners that have hints stored (waiting or in flight).
    pub fn owners(&self) -> Vec<NodeId> {
        self.owners.keys().cloned().collect()
    }

    /// Number of hints held in all.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Bytes held in all (see [`hint_bytes`]).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True when no hint is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Everything held for `key`, for any owner, merged: a fallback answers reads with it.
    pub fn versions_for(&self, key: &[u8]) -> VersionSet {
        let mut set = VersionSet::new();
        let Some(ids) = self.by_key.get(key) else {
            return set;
        };
        for (owner, id) in ids {
            if let Some(slot) = self.owners.get(owner).and_then(|h| h.slots.get(id)) {
                set.merge(&slot.hint.versions);
            }
        }
        set
    }

    /// True when some hint of `key` is held.
    pub fn holds(&self, key: &[u8]) -> bool {
        self.by_key.contains_key(key)
    }

    /// Takes up to `max` waiting hints of `owner` for delivery, oldest first; they stay stored,
    /// marked in flight, until [`ack`](Self::ack)ed or [`release`](Self::release)d.
    pub fn take(&mut self, owner: &NodeId, max: usize) -> Vec<Hint> {
        let Some(hints) = self.owners.get_mut(owner) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        for slot in hints.slots.values_mut() {
            if taken.len() == max {
                break;
            }
            if slot.in_flight {
                continue;
            }
            slot.in_flight = true;
            if hints.waiting.get(&slot.hint.key) == Some(&slot.hint.id) {
                hints.waiting.remove(&slot.hint.key);
            }
            taken.push(slot.hint.clone());
        }
        taken
    }

    /// Returns hints whose delivery failed to the waiting state, to be taken again.
    ///
    /// A released hint takes no new versions: its delivery may yet have landed, and a late
    /// acknowledgement of it must not delete versions the owner never received.
    pub fn release(&mut self, owner: &NodeId, ids: &[HintId]) {
        let Some(hints) = self.owners.get_mut(owner) else {
            return;
        };
        for id in ids {
            if let Some(slot) = hints.slots.get_mut(id) {
                slot.in_flight = false;
            }
        }
    }

    /// Deletes a hint whose versions reached where they belong; returns false if it was
    /// already gone, so a repeated acknowledgement is harmless.
    pub fn ack(&mut self, owner: &NodeId, id: HintId) -> bool {
        let Some(hints) = self.owners.get_mut(owner) else {
            return false;
        };
        let Some(slot) = hints.slots.remove(&id) else {
            return false;
        };
        if let Some(journal) = self.journal.as_ref().filter(|_| !self.closed)
            && !journal.forget(id)
        {
            self.diverged = true;
        }
        if hints.waiting.get(&slot.hint.key) == Some(&id) {
            hints.waiting.remove(&slot.hint.key);
        }
        if hints.slots.is_empty() {
            self.owners.remove(owner);
        }
        if let Some(ids) = self.by_key.get_mut(&slot.hint.key) {
            ids.remove(&(owner.clone(), id));
            if ids.is_empty() {
                self.by_key.remove(&slot.hint.key);
            }
        }
        self.count -= 1;
        self.bytes -= slot.bytes;
        true
    }
}

/// A node's hint store, shared by its actors (or a simulated node's handlers).
#[derive(Default)]
pub struct SharedHints(Mutex<HintStore>);

impl SharedHints {
    /// An empty store bounded by `limits`.
    pub fn new(limits: HintLimits) -> Self {
        SharedHints(Mutex::new(HintStore::with_limits(limits)))
    }

    /// Shares `store`.
    pub fn from_store(store: HintStore) -> Self {
        SharedHints(Mutex::new(store))
    }

    /// The store. A poisoned lock only means a panic elsewhere mid-update of plain data; the
    /// store stays usable, so take it anyway rather than cascade the panic.
    pub fn lock(&self) -> MutexGuard<'_, HintStore> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::core::ids::ActorId;
    use crate::core::store::Store;
    use crate::core::vclock::{Dot, VClock};

    fn key(s: &str) -> Key {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// A version set with one blind write as `actor` (a fresh dot each call).
    fn blind(coord: &Store, k: &Key, v: &str) -> VersionSet {
        coord
            .coordinate(
                k,
                &VClock::new(),
                Some(Bytes::copy_from_slice(v.as_bytes())),
                0,
            )
            .map(|c| c.set())
            .unwrap()
    }

    #[test]
    fn add_take_ack_round_trip() {
        let coord = Store::new(ActorId::new("c", 1));
        let (owner, k) = (NodeId::new("o"), key("k"));
        let mut hints = HintStore::default();
        let id = hints
            .add(owner.clone(), k.clone(), blind(&coord, &k, "v"), 5)
            .unwrap();
        assert_eq!(hints.owners(), vec![owner.clone()]);
        assert_eq!(hints.len(), 1);
        let taken = hints.take(&owner, 10);
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].id, taken[0].created_at_ms), (id, 5));
        assert!(
            hints.take(&owner, 10).is_empty(),
            "in-flight hints are not taken twice"
        );
        assert_eq!(hints.len(), 1, "a hint stays until acknowledged");
        assert_eq!(hints.versions_for(&k).read().values, vec![Bytes::from("v")]);
        assert!(hints.versions_for(b"other").is_empty());
        assert!(hints.ack(&owner, id));
        assert!(!hints.ack(&owner, id), "acking twice is harmless");
        assert!(hints.is_empty());
        assert!(hints.owners().is_empty());
    }

    #[test]
    fn the_store_refuses_past_its_limits_and_frees_room_on_ack() {
        let coord = Store::new(ActorId::new("c", 1));
        let owner = NodeId::new("o");
        let (k1, k2, k3) = (key("k1"), key("k2"), key("k3"));
        let one = blind(&coord, &k1, "v");
        let limits = HintLimits {
            max_hints: 2,
            max_bytes: 3 * hint_bytes(&k1, &one),
        };
        let mut hints = HintStore::with_limits(limits);
        let a = hints.add(owner.clone(), k1.clone(), one, 0).unwrap();
        hints
            .add(owner.clone(), k2.clone(), blind(&coord, &k2, "v"), 0)
            .unwrap();
        let full = hints
            .add(owner.clone(), k3.clone(), blind(&coord, &k3, "v"), 0)
            .unwrap_err();
        let HintRefused::Full(full) = full else {
            panic!("refused for another reason: {full}");
        };
        assert_eq!((full.hints, full.max_hints), (2, 2));
        assert_eq!(hints.len(), 2);
        assert!(!hints.holds(&k3));
        // Coalescing into a waiting hint adds no hint, only bytes.
        assert_eq!(
            hints.add(owner.clone(), k1.clone(), blind(&coord, &k1, "w"), 0),
            Ok(a)
        );
        let big = blind(&coord, &k1, &"x".repeat(1000));
        assert!(
            hints.add(owner.clone(), k1.clone(), big, 0).is_err(),
            "bytes"
        );
        assert_eq!(hints.versions_for(&k1).read().values.len(), 2);
        hints.take(&owner, 1);
        assert!(hints.ack(&owner, a));
        assert!(!hints.holds(&k1));
        hints
            .add(owner.clone(), k3.clone(), blind(&coord, &k3, "v"), 0)
            .unwrap();
        assert_eq!(hints.len(), 2);
        let bytes = hints.bytes();
        let held: Vec<Hint> = hints
            .owners()
            .iter()
            .flat_map(|o| hints.take(o, usize::MAX))
            .collect();
        assert_eq!(held.len(), 2, "nothing was in flight");
        assert_eq!(
            bytes,
            held.iter()
                .map(|h| hint_bytes(&h.key, &h.versions))
                .sum::<u64>()
        );
    }

    #[test]
    fn released_hints_are_taken_again() {
        let coord = Store::new(ActorId::new("c", 1));
        let owner = NodeId::new("o");
        let mut hints = HintStore::default();
        for i in 0..3 {
            let k = key(&format!("k{i}"));
            hints
                .add(owner.clone(), k.clone(), blind(&coord, &k, "v"), i)
                .unwrap();
        }
        let first = hints.take(&owner, 2);
        assert_eq!(first.len(), 2);
        hints.release(&owner, &[first[0].id]);
        let again: Vec<HintId> = hints.take(&owner, 10).iter().map(|h| h.id).collect();
        assert_eq!(again, vec![first[0].id, HintId(3)]);
    }

    #[test]
    fn waiting_hints_coalesce_but_in_flight_ones_do_not_change() {
        let coord = Store::new(ActorId::new("c", 1));
        let (owner, k) = (NodeId::new("o"), key("cart"));
        let mut hints = HintStore::default();
        let a = hints
            .add(owner.clone(), k.clone(), blind(&coord, &k, "x"), 0)
            .unwrap();
        let b = hints
            .add(owner.clone(), k.clone(), blind(&coord, &k, "y"), 1)
            .unwrap();
        assert_eq!(a, b);
        let taken = hints.take(&owner, 10);
        assert_eq!(taken[0].versions.read().values.len(), 2);
        let c = hints
            .add(owner.clone(), k.clone(), blind(&coord, &k, "z"), 2)
            .unwrap();
        assert_ne!(c, a, "a write during delivery starts a new hint");
        assert!(hints.ack(&owner, a));
        let rest = hints.take(&owner, 10);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].versions.read().values.len(), 3);
    }

    #[test]
    fn replay_is_idempotent_and_never_rolls_back() {
        let coord = Store::new(ActorId::new("c", 1));
        let k = key("k");
        let old = blind(&coord, &k, "old");
        let mut hints = HintStore::default();
        let owner = NodeId::new("o");
        hints.add(owner.clone(), k.clone(), old.clone(), 0).unwrap();
        // The owner meanwhile got a newer version that supersedes the hinted one.
        let ctx = coord.get(&k).read().context;
        let newer = coord
            .coordinate(&k, &ctx, Some(Bytes::from("new")), 1)
            .unwrap();
        let target = Store::new(ActorId::new("o", 1));
        target.merge(&k, &newer.set()).unwrap();
        let hint = hints.take(&owner, 1).remove(0);
        let first = target.merge(&hint.key, &hint.versions);
        let second = target.merge(&hint.key, &hint.versions);
        assert!(!first.unwrap().changed && !second.unwrap().changed);
        assert_eq!(target.get(&k).read().values, vec![Bytes::from("new")]);
    }

    #[test]
    fn a_late_ack_after_release_never_drops_versions_added_since() {
        // Delivery times out (release) but did land on the owner; its ack arrives late.
        let coord = Store::new(ActorId::new("c", 1));
        let (owner, k) = (NodeId::new("o"), key("cart"));
        let mut hints = HintStore::default();
        let id = hints
            .add(owner.clone(), k.clone(), blind(&coord, &k, "x"), 0)
            .unwrap();
        let delivered = hints.take(&owner, 10).remove(0);
        hints.release(&owner, &[id]);
        let newer = blind(&coord, &k, "y");
        let newest = newer
            .versions()
            .iter()
            .map(|v| v.dot.clone())
            .max()
            .unwrap();
        hints.add(owner.clone(), k.clone(), newer, 1).unwrap();
        hints.ack(&owner, delivered.id);
        assert!(!delivered.versions.context().contains(&newest));
        assert!(
            hints
                .take(&owner, 10)
                .iter()
                .any(|h| h.versions.context().contains(&newest)),
            "a write hinted after the delivered snapshot must still be held"
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Add(u8, u8),
        Take(u8, usize),
        AckFirstInFlight(u8),
        ReleaseAll(u8),
        LateAckReleased(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..2, 0u8..3).prop_map(|(o, k)| Op::Add(o, k)),
            (0u8..2, 0usize..3).prop_map(|(o, n)| Op::Take(o, n)),
            (0u8..2).prop_map(Op::AckFirstInFlight),
            (0u8..2).prop_map(Op::ReleaseAll),
            (0u8..2).prop_map(Op::LateAckReleased),
        ]
    }

    proptest! {
        #[test]
        fn nothing_leaves_without_an_ack(ops in proptest::collection::vec(op(), 0..40)) {
            let coord = Store::new(ActorId::new("c", 1));
            let mut hints = HintStore::default();
            let mut in_flight: BTreeMap<u8, Vec<Hint>> = BTreeMap::new();
            let mut added: Vec<(NodeId, Key, Dot)> = Vec::new();
            let mut acked: Vec<Hint> = Vec::new();
            // Snapshots whose delivery was released but may still have landed (late ack).
            let mut released: BTreeMap<u8, Vec<Hint>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Add(o, k) => {
                        let (owner, k) = (NodeId::new(format!("o{o}")), key(&format!("k{k}")));
                        let set = blind(&coord, &k, "v");
                        let dot = set.versions().last().map(|v| v.dot.clone()).unwrap();
                        let newest = set.versions().iter().map(|v| v.dot.clone()).max().unwrap();
                        prop_assert_eq!(&dot, &newest);
                        hints.add(owner.clone(), k.clone(), set, 0).unwrap();
                        added.push((owner, k, dot));
                    }
                    Op::Take(o, n) => {
                        let owner = NodeId::new(format!("o{o}"));
                        let taken = hints.take(&owner, n);
                        prop_assert!(taken.len() <= n);
                        in_flight.entry(o).or_default().extend(taken);
                    }
                    Op::AckFirstInFlight(o) => {
                        let owner = NodeId::new(format!("o{o}"));
                        if let Some(list) = in_flight.get_mut(&o) && !list.is_empty() {
                            let hint = list.remove(0);
                            let first_ack = !acked.iter().any(|h| h.id == hint.id);
                            prop_assert_eq!(hints.ack(&owner, hint.id), first_ack);
                            acked.push(hint);
                        }
                    }
                    Op::ReleaseAll(o) => {
                        let owner = NodeId::new(format!("o{o}"));
                        let list = in_flight.remove(&o).unwrap_or_default();
                        let ids: Vec<HintId> = list.iter().map(|h| h.id).collect();
                        hints.release(&owner, &ids);
                        released.entry(o).or_default().extend(list);
                    }
                    Op::LateAckReleased(o) => {
                        let owner = NodeId::new(format!("o{o}"));
                        if let Some(list) = released.get_mut(&o) && !list.is_empty() {
                            // The released delivery did land: the owner holds this snapshot.
                            let hint = list.remove(0);
                            let first_ack = !acked.iter().any(|h| h.id == hint.id);
                            prop_assert_eq!(hints.ack(&owner, hint.id), first_ack);
                            acked.push(hint);
                        }
                    }
                }
            }
            // Every hinted version is still held, or was in a hint its owner acknowledged. Once
            // every delivery under way is released, taking an owner's hints lists all it holds.
            for (o, list) in &in_flight {
                let ids: Vec<HintId> = list.iter().map(|h| h.id).collect();
                hints.release(&NodeId::new(format!("o{o}")), &ids);
            }
            let mut held_for: BTreeMap<NodeId, Vec<Hint>> = BTreeMap::new();
            for owner in hints.owners() {
                let all = hints.take(&owner, usize::MAX);
                held_for.insert(owner, all);
            }
            for (owner, k, dot) in &added {
                let held = held_for.get(owner).into_iter().flatten()
                    .any(|h| h.key == *k && h.versions.context().contains(dot));
                let delivered = acked.iter().any(|h| &h.owner == owner && h.key == *k && h.versions.context().contains(dot));
                prop_assert!(held || delivered, "{:?} for {} lost", dot, owner);
            }
        }
    }
}
