//! The local storage map: one [`VersionSet`] per key, merged atomically per key.
//!
//! The store is shared (`Arc<Store>`) rather than owned by the Storage actor, so that a
//! restarted actor finds every stored version again, as an ETS table with an heir would.
//! Where the sets live is the [`Engine`]'s business (in memory, or on disk with
//! `--data-dir`); every rule about them is the store's, one concept per file: how a change
//! runs under its segment's lock and keeps every index in step (`change`), the digests of
//! segments, cells and pieces that anti-entropy and the handoff read (`digests`), where dots
//! come from and when the actor takes a fresh epoch (`dots`), what a tombstone purge removes
//! and remembers (`purge`), and how large a set may grow (`limits`). This file holds the
//! store's state, its opening and clean closing, and the reads and writes callers make.
//! A durable engine's indexes are rebuilt by one scan when it opens, and a clean close
//! records the key count and fingerprint (and the hints' count and digest), so that the next
//! open can tell data or hints lost or damaged since.

mod change;
mod digests;
mod dots;
mod limits;
mod purge;
#[cfg(test)]
mod tests;

pub use self::dots::COUNTER_LEASE;
use self::dots::encode_actor;
pub use self::limits::SetLimits;
pub use self::purge::{PURGE_MEMORY_CAPACITY, PURGE_MEMORY_TTL_MS};

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use arc_swap::ArcSwap;
use bytes::Bytes;

use super::encoded_set::EncodedSet;
use super::engine::{Engine, EngineError, MemoryEngine};
use super::hints::HintStore;
use super::ids::{ActorId, Key};
use super::pieces::Pieces;
use super::purged::PurgedKeys;
use super::vclock::{Dot, VClock};
use super::version::VersionSet;

use super::segments::CELLS_PER_SEGMENT;
pub use super::segments::{CELLS, SEGMENTS};

// Metadata entries a store keeps in its engine.
const META_NODE: &str = "node";
const META_ACTOR: &str = "actor";
const META_LEASE: &str = "counter_lease";
// The key count and fingerprint at the last clean close; empty while the store is open.
const META_CLEAN: &str = "clean";
// The hints' count and digest at the last clean close, when they were known; consulted only
// beside a clean-stop marker (an entry of its own, so that an older build reads the marker).
const META_CLEAN_HINTS: &str = "clean_hints";

/// Errors of the storage map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Every counter value has been used (after 2^64 writes).
    #[error("this node's dot counter is exhausted")]
    CounterExhausted,
    /// The context claims a version of this node's current actor that it never made.
    #[error("the context claims write {claimed} of {actor}, which has made {issued}")]
    ForgedContext {
        /// The actor named.
        actor: ActorId,
        /// The counter claimed.
        claimed: u64,
        /// The highest counter issued.
        issued: u64,
    },
    /// The write would grow the key's siblings past the byte limit.
    #[error("the key's siblings would hold {size} bytes (limit {max})")]
    SetTooLarge {
        /// Value bytes with this write.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The write would grow the key's siblings past the version limit.
    #[error("the key would hold {versions} versions (limit {max})")]
    TooManyVersions {
        /// Versions with this write.
        versions: usize,
        /// The limit.
        max: usize,
    },
    /// This node finished leaving the cluster: its store takes no data any more.
    #[error("this node has left the cluster: it takes no data")]
    Sealed,
    /// The engine could not read or write.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Why a store could not open its engine's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The data was written by a node of another name.
    #[error("this data belongs to node {found}, not {expected}")]
    Foreign {
        /// The name recorded in the data.
        found: String,
        /// The name of the node opening it.
        expected: String,
    },
    /// A metadata entry does not decode.
    #[error("the stored {0} is corrupt")]
    CorruptMeta(&'static str),
    /// The data does not match what the store held when it was last closed cleanly: part of
    /// it was lost or damaged since.
    #[error(
        "corrupt data: it changed since the last clean stop ({recorded} keys then, {found} now, or their contents differ)"
    )]
    Damaged {
        /// Keys held at the clean stop.
        recorded: u64,
        /// Keys found now.
        found: u64,
    },
    /// The hints do not match what the node held when it was last stopped cleanly: part of
    /// them was lost or damaged since.
    #[error(
        "corrupt data: the hints changed since the last clean stop ({recorded} hints then, {found} now, or their contents differ)"
    )]
    DamagedHints {
        /// Hints held at the clean stop.
        recorded: u64,
        /// Hints found now.
        found: u64,
    },
    /// The engine failed while the store read it.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The result of a coordinated write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinated {
    /// The dot made for the new version.
    pub dot: Dot,
    /// The whole set now stored here, encoded once: what replicas and hints must receive.
    pub versions: EncodedSet,
    /// The context to answer the writer with: its own context plus the new dot. The dot goes
    /// into the vector part when that claims nothing the writer did not see (no other
    /// version of this actor survives that the writer's context misses), and as an exact
    /// dot otherwise (a blind write next to a delete made here, two writers with one context).
    pub answer: VClock,
}

#[cfg(test)]
impl Coordinated {
    /// The set stored here, decoded: for tests that compare sets.
    pub(crate) fn set(&self) -> VersionSet {
        self.versions
            .decode()
            .expect("a set this store encoded decodes")
    }
}

/// What a merge did to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeOutcome {
    /// True when the stored set changed.
    pub changed: bool,
    /// The key's digest after the merge.
    pub digest: u64,
}

/// A node's stored data: key -> sibling set, with per-key and per-segment digests.
pub struct Store {
    engine: Box<dyn Engine>,
    actor: ArcSwap<ActorId>,
    limits: SetLimits,
    segments: Box<[AtomicU64]>,
    // Per segment, its cells' digests (an array per segment: 4096 steps to make, not 65,536).
    cells: Box<[[AtomicU64; CELLS_PER_SEGMENT]]>,
    // The digests of the cells' pieces for the current ring's tokens; `cutting` orders the
    // replacements, `generations` numbers them.
    pieces: ArcSwap<Pieces>,
    cutting: Mutex<()>,
    generations: AtomicU64,
    // Keys whose set holds only tombstones: the candidates of the purge, in key order.
    tombstones: Mutex<BTreeSet<Key>>,
    // Recent purges, consulted by every merge; `purged_len` spares the lock while it is empty.
    purged: Mutex<PurgedKeys>,
    purged_len: AtomicUsize,
    // The highest counter issued: one for all keys and epochs, so no dot is ever made twice.
    counter: AtomicU64,
    // The highest counter the engine holds a lease for; the mutex orders extensions.
    lease: AtomicU64,
    leasing: Mutex<()>,
    // Kept in step under the segments' locks, so that a scrape never scans the map.
    keys: AtomicU64,
    key_bytes: AtomicU64,
    value_bytes: AtomicU64,
    epochs: AtomicU64,
    // XOR of every segment digest: changes whenever any key's set does.
    fingerprint: AtomicU64,
    // The first read failure of the engine: the node should stop serving.
    failure: Mutex<Option<EngineError>>,
    // Changes under way, and whether the store was closed: a closed store changes nothing,
    // so that the clean-stop marker describes the data exactly.
    in_flight: AtomicU64,
    closed: AtomicBool,
    // Set for good once this node finished leaving: it takes no data after its last check
    // that it holds none.
    sealed: AtomicBool,
}

impl Store {
    /// An empty in-memory store whose coordinated writes are made as `actor`, without set
    /// limits.
    pub fn new(actor: ActorId) -> Self {
        Store::with_limits(actor, SetLimits::NONE)
    }

    /// An empty in-memory store whose coordinated writes are made as `actor` within `limits`.
    pub fn with_limits(actor: ActorId, limits: SetLimits) -> Self {
        Store::empty(Box::new(MemoryEngine::default()), actor, limits, 0)
    }

    /// A store over `engine`'s data: the actor id and the counter are those the data
    /// recorded (past the last lease), or `actor` and 0 for an engine that holds nothing yet.
    /// Refuses data written by a node of another name, and data that differs from what its
    /// last clean stop recorded.
    pub fn open(
        engine: Box<dyn Engine>,
        actor: ActorId,
        limits: SetLimits,
    ) -> Result<Self, OpenError> {
        Store::open_with_hints(engine, actor, limits, None)
    }

    /// As [`Store::open`], checking too that `hints`, as loaded from their journal, are
    /// those the last clean stop recorded.
    pub fn open_with_hints(
        engine: Box<dyn Engine>,
        actor: ActorId,
        limits: SetLimits,
        hints: Option<&HintStore>,
    ) -> Result<Self, OpenError> {
        let name = actor.node.as_str().to_string();
        match engine.meta(META_NODE)? {
            Some(found) if found.as_ref() != name.as_bytes() => {
                return Err(OpenError::Foreign {
                    found: String::from_utf8_lossy(&found).into_owned(),
                    expected: name,
                });
            }
            Some(_) => {}
            None => engine.set_meta(META_NODE, name.as_bytes())?,
        }
        let actor = match engine.meta(META_ACTOR)? {
            Some(bytes) => postcard::from_bytes::<ActorId>(&bytes)
                .ok()
                .filter(|stored| stored.node == actor.node)
                .ok_or(OpenError::CorruptMeta("actor id"))?,
            None => {
                engine.set_meta(META_ACTOR, &encode_actor(&actor))?;
                actor
            }
        };
        let leased = match engine.meta(META_LEASE)? {
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
                .map(u64::from_le_bytes)
                .map_err(|_| OpenError::CorruptMeta("counter lease"))?,
            None => 0,
        };
        // Every dot up to the last lease may have been made before the crash: start past it.
        let store = Store::empty(engine, actor, limits, leased);
        store.rebuild_indexes()?;
        if let Some(clean) = store.engine.meta(META_CLEAN)?
            && !clean.is_empty()
        {
            let (keys, fingerprint) =
                decode_pair(&clean).ok_or(OpenError::CorruptMeta("clean-stop marker"))?;
            if (keys, fingerprint) != (store.len() as u64, store.fingerprint()) {
                return Err(OpenError::Damaged {
                    recorded: keys,
                    found: store.len() as u64,
                });
            }
            let held = match store.engine.meta(META_CLEAN_HINTS)? {
                Some(held) if !held.is_empty() => Some(
                    decode_pair(&held).ok_or(OpenError::CorruptMeta("clean-stop hints record"))?,
                ),
                _ => None,
            };
            if let (Some(held), Some(found)) = (held, hints.and_then(HintStore::fingerprint))
                && held != found
            {
                return Err(OpenError::DamagedHints {
                    recorded: held.0,
                    found: found.0,
                });
            }
        }
        // Open from now on: a crash leaves no marker, and the next open trusts what it finds.
        store.engine.set_meta(META_CLEAN, &[])?;
        Ok(store)
    }

    /// Closes the store: no change is made after this returns, and a durable engine records
    /// what it holds, and what `hints` (closed already, so that they no longer change) hold,
    /// so that the next open can tell data lost or damaged since.
    pub fn close(&self, hints: Option<&HintStore>) -> Result<(), StoreError> {
        self.refuse_changes(&self.closed);
        // The hints' record first: the marker is what makes the next open check it.
        let held = hints.and_then(HintStore::fingerprint);
        let held = held.map_or_else(Vec::new, |(count, digest)| encode_pair(count, digest));
        self.engine.set_meta(META_CLEAN_HINTS, &held)?;
        let marker = encode_pair(self.len() as u64, self.fingerprint());
        Ok(self.engine.set_meta(META_CLEAN, &marker)?)
    }

    /// Refuses every change from now on if `ready` holds once no change is under way, and
    /// returns whether it did. A leaving node checks that it holds nothing this way: a write
    /// admitted before the check is counted in it, and any later one is refused instead of
    /// stranded on a node that no longer owns anything. `ready` is asked first without the
    /// seal, which refuses every write while it waits: a store that is not ready is not
    /// sealed even for a moment.
    pub fn seal_if(&self, mut ready: impl FnMut(&Store) -> bool) -> bool {
        if !ready(self) {
            return false;
        }
        self.refuse_changes(&self.sealed);
        let sealed = ready(self);
        if !sealed {
            self.sealed.store(false, Ordering::SeqCst);
        }
        sealed
    }

    // Raises `flag`, which `begin_change` refuses new changes on, and waits for the changes
    // already under way: once this returns, nothing changes the data until `flag` is lowered.
    fn refuse_changes(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::SeqCst);
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            std::thread::yield_now();
        }
    }

    // A store over `engine` whose counter starts at `issued`; an engine that forgets
    // everything needs no lease.
    fn empty(engine: Box<dyn Engine>, actor: ActorId, limits: SetLimits, issued: u64) -> Self {
        let lease = if engine.durable() { issued } else { u64::MAX };
        Store {
            engine,
            actor: ArcSwap::from_pointee(actor),
            limits,
            segments: (0..SEGMENTS).map(|_| AtomicU64::new(0)).collect(),
            cells: (0..SEGMENTS)
                .map(|_| [const { AtomicU64::new(0) }; CELLS_PER_SEGMENT])
                .collect(),
            pieces: ArcSwap::from_pointee(Pieces::none()),
            cutting: Mutex::new(()),
            generations: AtomicU64::new(0),
            tombstones: Mutex::new(BTreeSet::new()),
            purged: Mutex::new(PurgedKeys::new(PURGE_MEMORY_TTL_MS, PURGE_MEMORY_CAPACITY)),
            purged_len: AtomicUsize::new(0),
            counter: AtomicU64::new(issued),
            lease: AtomicU64::new(lease),
            leasing: Mutex::new(()),
            keys: AtomicU64::new(0),
            key_bytes: AtomicU64::new(0),
            value_bytes: AtomicU64::new(0),
            epochs: AtomicU64::new(0),
            fingerprint: AtomicU64::new(0),
            failure: Mutex::new(None),
            in_flight: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            sealed: AtomicBool::new(false),
        }
    }

    /// The engine the sets live in.
    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    /// The first failure of the engine to read, if any: the store's answers can no longer be
    /// trusted to be complete, and the node should stop serving.
    pub fn failure(&self) -> Option<EngineError> {
        lock(&self.failure).clone()
    }

    /// The actor id this store writes dots as now.
    pub fn actor(&self) -> ActorId {
        ActorId::clone(&self.actor.load())
    }

    /// The highest dot counter issued so far (0 before the first write).
    pub fn issued(&self) -> u64 {
        self.counter.load(Ordering::Acquire)
    }

    /// How many times the actor id took a fresh epoch since the store was made.
    pub fn epoch_changes(&self) -> u64 {
        self.epochs.load(Ordering::Relaxed)
    }

    /// Number of keys stored (tombstoned keys included until purged).
    pub fn len(&self) -> usize {
        usize::try_from(self.keys.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of the lengths of the stored keys (tombstoned keys included until purged).
    pub fn key_bytes(&self) -> u64 {
        self.key_bytes.load(Ordering::Relaxed)
    }

    /// Sum of the lengths of the stored values, siblings included (tombstones hold none).
    pub fn value_bytes(&self) -> u64 {
        self.value_bytes.load(Ordering::Relaxed)
    }

    /// The stored set of `key` (empty when absent, or when the engine failed to read it:
    /// see [`Store::failure`]).
    pub fn get(&self, key: &[u8]) -> VersionSet {
        let found = self.read(key, |segment| segment.get(key));
        found.flatten().map(|(_, set)| set).unwrap_or_default()
    }

    /// As [`Store::get`], encoded: what a replica read answers with.
    pub fn get_encoded(&self, key: &[u8]) -> EncodedSet {
        let found = self.read(key, |segment| segment.get_encoded(key));
        found
            .flatten()
            .unwrap_or_else(|| EncodedSet::encode(&VersionSet::new()))
    }

    /// The digest of `key`'s set (0 when absent).
    pub fn digest(&self, key: &[u8]) -> u64 {
        self.read(key, |segment| segment.digest(key)).unwrap_or(0)
    }

    /// Merges versions received from a peer (replication, hint, repair, anti-entropy,
    /// handoff). Versions that a purge here deleted are dropped first.
    pub fn merge(&self, key: &Key, incoming: &VersionSet) -> Result<MergeOutcome, StoreError> {
        self.merge_set(key, Cow::Borrowed(incoming), None)
    }

    /// As [`Store::merge`], taking the set: its versions move into the stored set instead of
    /// being copied (a replica write decoded for this merge alone).
    pub fn merge_owned(&self, key: &Key, incoming: VersionSet) -> Result<MergeOutcome, StoreError> {
        self.merge_set(key, Cow::Owned(incoming), None)
    }

    /// As [`Store::merge_owned`], for a set that came as `sent`, which decodes to exactly
    /// `incoming` ([`EncodedSet::decode_as_sent`]): when the merge leaves exactly that set,
    /// as a replica write usually does, `sent` is stored as it came, not encoded again.
    pub fn merge_sent(
        &self,
        key: &Key,
        incoming: VersionSet,
        sent: &EncodedSet,
    ) -> Result<MergeOutcome, StoreError> {
        self.merge_set(key, Cow::Owned(incoming), Some(sent))
    }

    fn merge_set(
        &self,
        key: &Key,
        incoming: Cow<'_, VersionSet>,
        sent: Option<&EncodedSet>,
    ) -> Result<MergeOutcome, StoreError> {
        if incoming.is_empty() {
            return Ok(MergeOutcome {
                changed: false,
                digest: self.digest(key),
            });
        }
        self.guard_actor(&incoming)?;
        let (changed, digest) = self.update_encoded(key, |set| {
            let (incoming, sent) = match self.strip_purged(key, &incoming) {
                Some(stripped) => (stripped, None),
                None => (incoming.into_owned(), sent),
            };
            let (changed, exact) = set.merge_exact(incoming);
            Ok((changed, sent.filter(|_| exact).cloned()))
        })?;
        Ok(MergeOutcome { changed, digest })
    }

    /// Coordinates a write: makes a fresh dot and applies it in one step under the key's lock.
    ///
    /// The dot comes from the node-wide counter alone. A context that claims a dot of the
    /// current actor beyond what it issued is refused, and so is a write that would take the
    /// key's siblings past the store's [`SetLimits`].
    pub fn coordinate(
        &self,
        key: &Key,
        context: &VClock,
        value: Option<Bytes>,
        now_ms: u64,
    ) -> Result<Coordinated, StoreError> {
        // A value can be a slice of a much bigger buffer (an HTTP body is a slice of the
        // connection's read buffer, 8 KiB or more). The record copies it, but the returned
        // set travels on (to replicas, and into hints kept here): a copy of its own keeps
        // that buffer from living as long as a hint.
        let value = value.map(|v| Bytes::copy_from_slice(&v));
        let (coordinated, _) = self.update_encoded(key, |set| {
            // Read under the key's lock: a handoff that drops this key takes a new epoch
            // before it does, so a write after the drop never reuses the old actor.
            let actor = self.actor();
            let issued = self.issued();
            let claimed = context.max_claim(&actor);
            if claimed > issued {
                return Err(StoreError::ForgedContext {
                    actor,
                    claimed,
                    issued,
                });
            }
            self.check_limits(set, context, value.as_ref())?;
            let counter = self.next_counter()?;
            let dot = Dot::new(actor, counter);
            set.write(context, dot.clone(), value, now_ms);
            let unseen_sibling = set
                .versions()
                .iter()
                .any(|v| v.dot.actor == dot.actor && v.dot != dot && !context.contains(&v.dot));
            let mut answer = context.clone();
            if unseen_sibling {
                answer.add_exact(&dot, now_ms);
            } else {
                answer.add_dot(&dot, now_ms);
            }
            // Encoded once, for the replicas and for the store.
            let versions = EncodedSet::encode(set);
            let stored = Some(versions.clone());
            Ok((
                Coordinated {
                    dot,
                    versions,
                    answer,
                },
                stored,
            ))
        })?;
        Ok(coordinated)
    }
}

// Two words, as a clean-stop record keeps them.
fn encode_pair(first: u64, second: u64) -> Vec<u8> {
    [first.to_le_bytes(), second.to_le_bytes()].concat()
}

fn decode_pair(bytes: &[u8]) -> Option<(u64, u64)> {
    let bytes = <[u8; 16]>::try_from(bytes).ok()?;
    let word = |at: usize| bytes[at..at + 8].try_into().ok().map(u64::from_le_bytes);
    Some((word(0)?, word(8)?))
}

// Ends a change under way when dropped.
struct ChangeGuard<'a>(&'a AtomicU64);

impl Drop for ChangeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

// A poisoned lock only means a panic elsewhere between two plain-data steps; keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
