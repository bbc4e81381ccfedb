//! The local storage map: one [`VersionSet`] per key, merged atomically per key.
//!
//! The store is shared (`Arc<Store>`) rather than owned by the Storage actor, so that a
//! restarted actor finds every stored version again, as an ETS table with an heir would.
//! Where the sets live is the [`Engine`]'s business (in memory, or on disk with
//! `--data-dir`); every rule about them is the store's.
//!
//! Each key keeps the digest of its set, and the key space is cut into [`SEGMENTS`] ranges of
//! ring positions whose digests (XOR of per-key hashes) are updated on every write. Anti-entropy
//! compares segment digests first and looks at keys only where they differ, so a cluster in
//! sync exchanges a few bytes of digests and nothing else. Engines group their records by the
//! same segments, so listing a segment's keys reads just that segment. The same digests are
//! kept finer, per [`CELLS`] (16 per segment, the buckets of anti-entropy), and per piece of a
//! cell that a ring token cuts ([`super::pieces`]), so that the digest of any union of ring
//! ranges (what two nodes both own, what this node no longer owns) is a XOR of a few of them,
//! never a listing of keys. Segments, cells and ring positions all come from one
//! `stable_hash` of the key, so a cell is a contiguous range of ring positions. The keys whose
//! set holds only tombstones (the purge candidates) are indexed apart. A durable engine's
//! indexes are rebuilt by one scan when it opens. Lock order is always the key's segment
//! first, then the candidates' mutex or the purge memory's; readers of those take their mutex
//! alone. Filling the pieces for a new ring takes its own mutex, then one segment at a time.
//!
//! # Dots
//!
//! The store makes the dots of the writes this node coordinates, from one node-wide counter
//! that only those writes advance: no context, from a client or a peer, ever raises it, and a
//! context claiming a dot of the current actor beyond it is refused
//! ([`StoreError::ForgedContext`]). The actor id carries an epoch: the store takes a fresh one
//! before it drops a set that mentions its current actor (a handoff deleting what it handed),
//! so that a later write of the same key can never send a set holding a new dot of that actor
//! without its earlier ones (see `version.rs` on why whole sets travel); and when a set
//! arrives whose context claims dots of the current actor that it never made, so that such a
//! claim can never cover a write made after it.
//!
//! On a durable engine the actor id is written before it is used, and the counter is leased
//! in blocks of [`COUNTER_LEASE`]: a block is written before its first dot is made, and a
//! reopened store starts past the last block written, so a crash burns the rest of a block
//! and never issues a dot twice (Riak's kv679).

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use bytes::Bytes;

use super::engine::{Engine, EngineError, MemoryEngine, Segment};
use super::hash::{stable_hash, stable_hash_parts};
use super::ids::{ActorId, Key};
use super::pieces::Pieces;
use super::purged::PurgedKeys;
use super::vclock::{Dot, VClock};
use super::version::VersionSet;

/// Number of digest segments the key space is divided into (by the top bits of ring position).
pub const SEGMENTS: usize = 4096;
/// Number of digest cells: the segments cut finer, by the next 4 bits of ring position.
pub const CELLS: usize = SEGMENTS * CELLS_PER_SEGMENT;
const CELLS_PER_SEGMENT: usize = 16;

/// How long a purge is remembered, and how many at most (see [`super::purged`]).
pub const PURGE_MEMORY_TTL_MS: u64 = 10 * 60 * 1000;
/// Most purges remembered at once.
pub const PURGE_MEMORY_CAPACITY: usize = 100_000;

/// How many dots a durable store may make per write of its counter lease.
pub const COUNTER_LEASE: u64 = 10_000;

// Metadata entries a store keeps in its engine.
const META_NODE: &str = "node";
const META_ACTOR: &str = "actor";
const META_LEASE: &str = "counter_lease";
// The key count and fingerprint at the last clean close; empty while the store is open.
const META_CLEAN: &str = "clean";

/// How large a key's sibling set may grow by a coordinated write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetLimits {
    /// Most value bytes, siblings included.
    pub max_bytes: usize,
    /// Most versions, tombstones and empty values included.
    pub max_versions: usize,
}

impl SetLimits {
    /// No limit: for stores that only take what others coordinated.
    pub const NONE: SetLimits = SetLimits {
        max_bytes: usize::MAX,
        max_versions: usize::MAX,
    };
}

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
    /// The engine failed while the store read it.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The result of a coordinated write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinated {
    /// The dot made for the new version.
    pub dot: Dot,
    /// The whole set now stored here: what replicas and hints must receive.
    pub versions: VersionSet,
    /// The context to answer the writer with: its own context plus the new dot. The dot goes
    /// into the vector part when that claims nothing the writer did not see (no other
    /// version of this actor survives that the writer's context misses), and as an exact
    /// dot otherwise (a blind write next to a delete made here, two writers with one context).
    pub answer: VClock,
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
    /// Refuses data written by a node of another name.
    pub fn open(
        engine: Box<dyn Engine>,
        actor: ActorId,
        limits: SetLimits,
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
            let recorded = <[u8; 16]>::try_from(clean.as_ref())
                .map_err(|_| OpenError::CorruptMeta("clean-stop marker"))?;
            let word = |at: usize| {
                let mut b = [0; 8];
                b.copy_from_slice(&recorded[at..at + 8]);
                u64::from_le_bytes(b)
            };
            let (keys, fingerprint) = (word(0), word(8));
            if keys != store.len() as u64 || fingerprint != store.fingerprint() {
                return Err(OpenError::Damaged {
                    recorded: keys,
                    found: store.len() as u64,
                });
            }
        }
        // Open from now on: a crash leaves no marker, and the next open trusts what it finds.
        store.engine.set_meta(META_CLEAN, &[])?;
        Ok(store)
    }

    /// Closes the store: no change is made after this returns, and a durable engine records
    /// what it holds, so that the next open can tell data lost or damaged since.
    pub fn close(&self) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::SeqCst);
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            std::thread::yield_now();
        }
        let mut marker = Vec::with_capacity(16);
        marker.extend_from_slice(&(self.len() as u64).to_le_bytes());
        marker.extend_from_slice(&self.fingerprint().to_le_bytes());
        Ok(self.engine.set_meta(META_CLEAN, &marker)?)
    }

    // Counts a change under way; refused once the store is closed.
    fn begin_change(&self) -> Result<ChangeGuard<'_>, EngineError> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = ChangeGuard(&self.in_flight);
        if self.closed.load(Ordering::SeqCst) {
            return Err(EngineError::Failed("the store is closed".into()));
        }
        Ok(guard)
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
        }
    }

    // One scan of the engine: segment and cell digests, the purge candidates and the gauges.
    // (No ring is known yet, so there are no pieces to fill.)
    fn rebuild_indexes(&self) -> Result<(), EngineError> {
        let mut tombstones = lock(&self.tombstones);
        self.engine.scan(&mut |key, summary| {
            let element = Self::key_element(key, summary.digest);
            let position = stable_hash(key);
            self.cell(Self::cell_at(position))
                .fetch_xor(element, Ordering::Relaxed);
            self.segments[Self::segment_at(position)].fetch_xor(element, Ordering::Relaxed);
            self.fingerprint.fetch_xor(element, Ordering::Relaxed);
            self.keys.fetch_add(1, Ordering::Relaxed);
            self.key_bytes
                .fetch_add(key.len() as u64, Ordering::Relaxed);
            self.value_bytes
                .fetch_add(summary.value_bytes, Ordering::Relaxed);
            if summary.tombstones_only {
                tombstones.insert(Bytes::copy_from_slice(key));
            }
        })
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

    /// The segment holding `key`: the top bits of its ring position.
    pub fn segment_of(key: &[u8]) -> usize {
        Self::segment_at(stable_hash(key))
    }

    /// The segment holding ring position `position`: its top 12 bits.
    pub fn segment_at(position: u64) -> usize {
        (position >> (64 - SEGMENTS.trailing_zeros())) as usize
    }

    /// The cell holding ring position `position`: its top 16 bits (so the cells of segment
    /// `s` are `16 s .. 16 s + 16`).
    pub fn cell_at(position: u64) -> usize {
        (position >> (64 - CELLS.trailing_zeros())) as usize
    }

    /// The stored set of `key` (empty when absent, or when the engine failed to read it:
    /// see [`Store::failure`]).
    pub fn get(&self, key: &[u8]) -> VersionSet {
        let found = self.read(key, |segment| segment.get(key));
        found.flatten().map(|(_, set)| set).unwrap_or_default()
    }

    /// The digest of `key`'s set (0 when absent).
    pub fn digest(&self, key: &[u8]) -> u64 {
        self.read(key, |segment| segment.digest(key)).unwrap_or(0)
    }

    /// Merges versions received from a peer (replication, hint, repair, anti-entropy,
    /// handoff). Versions that a purge here deleted are dropped first.
    pub fn merge(&self, key: &Key, incoming: &VersionSet) -> Result<MergeOutcome, StoreError> {
        if incoming.is_empty() {
            return Ok(MergeOutcome {
                changed: false,
                digest: self.digest(key),
            });
        }
        self.guard_actor(incoming)?;
        let (changed, digest) = self.update(key, |set| {
            let stripped = self.strip_purged(key, incoming);
            let incoming = stripped.as_ref().unwrap_or(incoming);
            Ok(set.merge(incoming))
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
        let (coordinated, _) = self.update(key, |set| {
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
            Ok(Coordinated {
                dot,
                versions: set.clone(),
                answer,
            })
        })?;
        Ok(coordinated)
    }

    /// Removes `key` if its set is still exactly the one with digest `expected`: a handoff
    /// drops a key once every new owner acknowledged that set. Returns whether it did (not
    /// when the engine failed: the handoff tries again).
    pub fn remove_handed(&self, key: &Key, expected: u64) -> bool {
        self.remove_if(key, |set, digest| {
            if digest != expected {
                return Ok(false);
            }
            if mentions(set, &self.actor.load()) {
                self.new_epoch()?;
            }
            Ok(true)
        })
    }

    /// Removes `key` if its set is still exactly the one with digest `expected` and holds only
    /// tombstones, and remembers the purge. The caller must know that every node that may
    /// hold a copy of the key holds exactly these tombstones (or nothing).
    ///
    /// When the set is now those tombstones plus versions written since the agreement (a
    /// write that did not see the delete, taken between the purge check and this order), only
    /// the tombstones go, and the purge is remembered: the set becomes exactly what a node
    /// that purged first holds once that write reaches it (its memory of the purge strips
    /// the tombstones from the incoming set). Otherwise the owners would never agree again:
    /// the ones that purged strip the tombstones from every copy they are sent, forever.
    pub fn purge_tombstones(&self, key: &Key, expected: u64, now_ms: u64) -> bool {
        let removed = self.remove_if(key, |set, digest| {
            if digest != expected || !set.is_all_tombstones() {
                return Ok(false);
            }
            self.remember_purge(key, set, now_ms);
            Ok(true)
        });
        removed || self.purge_tombstones_beside_writes(key, expected, now_ms)
    }

    // The second case of `purge_tombstones`: strips the set's tombstones when exactly they
    // were agreed on.
    fn purge_tombstones_beside_writes(&self, key: &Key, expected: u64, now_ms: u64) -> bool {
        let stripped = self.update(key, |set| {
            let (tombstones, rest) = split_tombstones(set);
            if tombstones.is_empty() || rest.is_empty() || tombstones.digest() != expected {
                return Ok(false);
            }
            self.remember_purge(key, &tombstones, now_ms);
            *set = rest;
            Ok(true)
        });
        stripped.is_ok_and(|(stripped, _)| stripped)
    }

    fn remember_purge(&self, key: &Key, set: &VersionSet, now_ms: u64) {
        let mut purged = lock(&self.purged);
        purged.record(key.clone(), set, now_ms);
        self.purged_len.store(purged.len(), Ordering::Release);
    }

    /// When `set` holds, beside other versions, exactly the tombstones of a purge remembered
    /// here, their digest: its holder missed the purge order (or took a write before it came),
    /// and should purge them too (see [`Store::purge_tombstones`]).
    pub fn purged_tombstones_in(&self, key: &[u8], set: &VersionSet) -> Option<u64> {
        if self.purged_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let (tombstones, rest) = split_tombstones(set);
        if tombstones.is_empty() || rest.is_empty() {
            return None;
        }
        let digest = tombstones.digest();
        self.purged_as(key, digest).then_some(digest)
    }

    /// True when `key` was purged here, recently, with exactly the set of digest `digest`.
    pub fn purged_as(&self, key: &[u8], digest: u64) -> bool {
        self.purged_len.load(Ordering::Acquire) > 0 && lock(&self.purged).purged_as(key, digest)
    }

    /// The digest of one segment (XOR over its keys).
    pub fn segment_digest(&self, segment: usize) -> u64 {
        self.segments
            .get(segment)
            .map_or(0, |d| d.load(Ordering::Acquire))
    }

    /// The digest of the whole store (XOR of the segment digests): equal on two stores that
    /// hold the same sets, and changed by any change of a set.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint.load(Ordering::Acquire)
    }

    /// The digest of one cell (XOR over its keys; 0 if out of range).
    pub fn cell_digest(&self, cell: usize) -> u64 {
        self.cells.get(cell / CELLS_PER_SEGMENT).map_or(0, |cells| {
            cells[cell % CELLS_PER_SEGMENT].load(Ordering::Acquire)
        })
    }

    // The digest of a cell that exists.
    fn cell(&self, cell: usize) -> &AtomicU64 {
        &self.cells[cell / CELLS_PER_SEGMENT][cell % CELLS_PER_SEGMENT]
    }

    /// The piece digests for the split points `points` (distinct, ascending: a ring's token
    /// values), complete. The store keeps one table: when it is for other points (the ring
    /// changed), a new one replaces it, filled by listing, once, each segment holding a point,
    /// under that segment's lock, so that no write is counted twice or missed. A table the
    /// store replaced is no longer updated: callers compare [`Pieces::generation`] with
    /// [`Store::pieces_generation`] after using one.
    pub fn pieces_at(&self, points: &Arc<[u64]>) -> Arc<Pieces> {
        let current = self.pieces.load_full();
        if current.is_complete() && current.points() == points {
            return current;
        }
        let _cutting = lock(&self.cutting);
        let current = self.pieces.load_full();
        if current.is_complete() && current.points() == points {
            return current;
        }
        let generation = self.generations.fetch_add(1, Ordering::AcqRel) + 1;
        let pieces = Arc::new(Pieces::new(Arc::clone(points), generation));
        // Published first: a write from now on moves the new pieces too, and one before a
        // segment's fill is in that fill's listing, which overwrites what it moved.
        self.pieces.store(Arc::clone(&pieces));
        let mut complete = true;
        let mut segment = 0;
        while segment < SEGMENTS {
            let range = pieces.in_segment(segment);
            if range.is_empty() {
                // Jump to the segment of the next point.
                segment = pieces
                    .points()
                    .get(range.end)
                    .map_or(SEGMENTS, |&p| Self::segment_at(p));
                continue;
            }
            let mut sums = vec![0u64; range.len()];
            let mut listed = Ok(());
            self.engine.locked(segment, &mut |locked| {
                sums.fill(0);
                listed = locked.for_each_key(&mut |key, digest| {
                    if let Some(point) = pieces.piece_at(stable_hash(key)) {
                        sums[point - range.start] ^= Self::key_element(key, digest);
                    }
                });
                if listed.is_ok() {
                    for (i, sum) in sums.iter().enumerate() {
                        pieces.set(range.start + i, *sum);
                    }
                }
            });
            if let Err(e) = std::mem::replace(&mut listed, Ok(())) {
                // The pieces of this segment are unknown: the next call makes a new table.
                self.note_failure(e);
                complete = false;
            }
            segment += 1;
        }
        pieces.set_complete(complete);
        pieces
    }

    /// The generation of the piece table the store keeps up to date now.
    pub fn pieces_generation(&self) -> u64 {
        self.pieces.load().generation()
    }

    /// The keys of one segment with their digests, sorted by key (empty for an out-of-range
    /// segment, or when the engine failed to read it: see [`Store::failure`]).
    pub fn keys_in_segment(&self, segment: usize) -> Vec<(Key, u64)> {
        self.engine.keys_in_segment(segment).unwrap_or_else(|e| {
            self.note_failure(e);
            Vec::new()
        })
    }

    /// Up to `limit` keys whose set holds only tombstones, in key order, after `after` (from
    /// the first when `None`), so that a caller can page through them.
    pub fn tombstone_candidates(&self, after: Option<&[u8]>, limit: usize) -> Vec<Key> {
        let candidates = lock(&self.tombstones);
        let start = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        candidates
            .range::<[u8], _>((start, Bound::Unbounded))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Number of keys whose set holds only tombstones.
    pub fn tombstone_count(&self) -> usize {
        lock(&self.tombstones).len()
    }

    /// What one key adds (by XOR) to its segment's digest; 0 for an absent key.
    pub fn key_element(key: &[u8], digest: u64) -> u64 {
        if digest == 0 {
            0
        } else {
            stable_hash_parts(&[key, &digest.to_le_bytes()])
        }
    }

    fn next_counter(&self) -> Result<u64, StoreError> {
        let counter = self
            .counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_add(1))
            .map(|previous| previous + 1)
            .map_err(|_| StoreError::CounterExhausted)?;
        if counter > self.lease.load(Ordering::Acquire) {
            self.extend_lease(counter)?;
        }
        Ok(counter)
    }

    // Writes a lease covering `counter` before it is used. A failed write burns the counter.
    fn extend_lease(&self, counter: u64) -> Result<(), EngineError> {
        let _leasing = lock(&self.leasing);
        if counter <= self.lease.load(Ordering::Acquire) {
            return Ok(());
        }
        let lease = counter.saturating_add(COUNTER_LEASE);
        self.engine.set_meta(META_LEASE, &lease.to_le_bytes())?;
        self.lease.store(lease, Ordering::Release);
        Ok(())
    }

    /// Takes a fresh epoch of the actor id, written before it is used; the counter goes on,
    /// so dots stay unique.
    fn new_epoch(&self) -> Result<(), EngineError> {
        let current = self.actor();
        let next = ActorId::new(current.node.clone(), current.incarnation.saturating_add(1));
        self.engine.set_meta(META_ACTOR, &encode_actor(&next))?;
        self.actor.store(std::sync::Arc::new(next));
        self.epochs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes a fresh epoch if `incoming` claims dots of the current actor beyond those issued:
    /// a forged context reached us through another coordinator, and would cover our next
    /// writes of its key.
    fn guard_actor(&self, incoming: &VersionSet) -> Result<(), EngineError> {
        let actor = self.actor.load();
        let issued = self.issued();
        let forged = incoming.versions().iter().any(|v| {
            v.context.max_claim(&actor) > issued
                || (v.dot.actor == **actor && v.dot.counter > issued)
        });
        if forged {
            // Under the lease lock, so that two merges seeing one claim take one epoch each
            // at most, in order.
            let _leasing = lock(&self.leasing);
            if ActorId::clone(&self.actor.load()) == **actor {
                self.new_epoch()?;
            }
        }
        Ok(())
    }

    fn strip_purged(&self, key: &[u8], incoming: &VersionSet) -> Option<VersionSet> {
        if self.purged_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        lock(&self.purged).strip(key, incoming)
    }

    /// Refuses a write that would take the key past the set limits. The versions that survive
    /// it are those whose dots the (pruned) context does not cover, plus the new one.
    fn check_limits(
        &self,
        set: &VersionSet,
        context: &VClock,
        value: Option<&Bytes>,
    ) -> Result<(), StoreError> {
        let limits = self.limits;
        if limits == SetLimits::NONE {
            return Ok(());
        }
        let mut pruned = context.clone();
        pruned.prune(super::vclock::PRUNE_LIMIT);
        let survivors = set.versions().iter().filter(|v| !pruned.contains(&v.dot));
        let (count, bytes) = survivors.fold((1, value.map_or(0, Bytes::len)), |(n, b), v| {
            (n + 1, b + v.value.as_ref().map_or(0, Bytes::len))
        });
        if bytes > limits.max_bytes {
            return Err(StoreError::SetTooLarge {
                size: bytes,
                max: limits.max_bytes,
            });
        }
        if count > limits.max_versions {
            return Err(StoreError::TooManyVersions {
                versions: count,
                max: limits.max_versions,
            });
        }
        Ok(())
    }

    fn note_failure(&self, error: EngineError) {
        lock(&self.failure).get_or_insert(error);
    }

    // Runs a read on `key`'s segment; a failure is remembered and answered as `None`.
    fn read<T>(
        &self,
        key: &[u8],
        read: impl Fn(&dyn Segment) -> Result<T, EngineError>,
    ) -> Option<T> {
        let mut result = None;
        self.engine.locked(Self::segment_of(key), &mut |segment| {
            result = Some(read(segment));
        });
        match result? {
            Ok(found) => Some(found),
            Err(e) => {
                self.note_failure(e);
                None
            }
        }
    }

    // Runs `change` on the key's set under its segment's lock and stores the result, keeping
    // the digests, the candidates and the gauges in step. A non-empty set never becomes empty
    // (merges and writes only add or replace), so a key gets its record here and loses it
    // only by a purge or a handoff; a failed write on an absent key leaves nothing behind.
    // Nothing is changed unless the engine took the new set.
    fn update<T>(
        &self,
        key: &Key,
        change: impl FnOnce(&mut VersionSet) -> Result<T, StoreError>,
    ) -> Result<(T, u64), StoreError> {
        let _change = self.begin_change()?;
        let mut change = Some(change);
        let mut outcome = None;
        self.engine.locked(Self::segment_of(key), &mut |segment| {
            if let Some(change) = change.take() {
                outcome = Some(self.update_locked(segment, key, change));
            }
        });
        outcome.unwrap_or_else(|| {
            Err(EngineError::Failed("the key's segment does not exist".into()).into())
        })
    }

    fn update_locked<T>(
        &self,
        segment: &mut dyn Segment,
        key: &Key,
        change: impl FnOnce(&mut VersionSet) -> Result<T, StoreError>,
    ) -> Result<(T, u64), StoreError> {
        let stored = segment.get(key)?;
        let old_digest = stored.as_ref().map_or(0, |(d, _)| *d);
        let mut set = stored.map(|(_, set)| set).unwrap_or_default();
        let was_empty = set.is_empty();
        let was_tombstones = set.is_all_tombstones();
        let old_values = set.value_bytes();
        let result = change(&mut set)?;
        let digest = set.digest();
        if digest == old_digest {
            return Ok((result, digest));
        }
        if set.is_empty() {
            segment.remove(key)?;
        } else {
            segment.put(key, digest, &set)?;
        }
        self.xor_segment(key, old_digest, digest);
        let tombstones = set.is_all_tombstones();
        if tombstones != was_tombstones {
            let mut candidates = lock(&self.tombstones);
            if tombstones {
                candidates.insert(key.clone());
            } else {
                candidates.remove(key);
            }
        }
        self.count(key, was_empty, old_values, &set);
        Ok((result, digest))
    }

    // Removes `key` when `decide` (given its set and digest) says so, under its segment's
    // lock, keeping the indexes in step. The candidates change under that lock too, so a
    // concurrent first write of the key cannot be listed before this removal and then lost
    // by it.
    fn remove_if(
        &self,
        key: &Key,
        decide: impl FnOnce(&VersionSet, u64) -> Result<bool, EngineError>,
    ) -> bool {
        let Ok(_change) = self.begin_change() else {
            return false;
        };
        let mut decide = Some(decide);
        let mut removed = Ok(false);
        self.engine.locked(Self::segment_of(key), &mut |segment| {
            let Some(decide) = decide.take() else { return };
            removed = (|| {
                let Some((digest, set)) = segment.get(key)? else {
                    return Ok(false);
                };
                if !decide(&set, digest)? {
                    return Ok(false);
                }
                segment.remove(key)?;
                if set.is_all_tombstones() {
                    lock(&self.tombstones).remove(key);
                }
                self.xor_segment(key, digest, 0);
                self.count(key, false, set.value_bytes(), &VersionSet::new());
                Ok(true)
            })();
        });
        removed.unwrap_or_else(|e| {
            self.note_failure(e);
            false
        })
    }

    // Moves the key count and the payload gauges by what one change of `key`'s set did.
    fn count(&self, key: &[u8], was_empty: bool, old_values: u64, after: &VersionSet) {
        let key_len = key.len() as u64;
        match (was_empty, after.is_empty()) {
            (true, false) => {
                self.keys.fetch_add(1, Ordering::Relaxed);
                self.key_bytes.fetch_add(key_len, Ordering::Relaxed);
            }
            (false, true) => {
                self.keys.fetch_sub(1, Ordering::Relaxed);
                self.key_bytes.fetch_sub(key_len, Ordering::Relaxed);
            }
            _ => {}
        }
        let new_values = after.value_bytes();
        if new_values > old_values {
            self.value_bytes
                .fetch_add(new_values - old_values, Ordering::Relaxed);
        } else if old_values > new_values {
            self.value_bytes
                .fetch_sub(old_values - new_values, Ordering::Relaxed);
        }
    }

    // Called under the key's segment lock. The finer digests move first: a reader that sees
    // the segment's (or the fingerprint's) new value then sees them moved too.
    fn xor_segment(&self, key: &[u8], old: u64, new: u64) {
        let change = Self::key_element(key, old) ^ Self::key_element(key, new);
        let position = stable_hash(key);
        self.pieces.load().xor(position, change);
        self.cell(Self::cell_at(position))
            .fetch_xor(change, Ordering::AcqRel);
        self.segments[Self::segment_at(position)].fetch_xor(change, Ordering::AcqRel);
        self.fingerprint.fetch_xor(change, Ordering::AcqRel);
    }
}

// Ends a change under way when dropped.
struct ChangeGuard<'a>(&'a AtomicU64);

impl Drop for ChangeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn encode_actor(actor: &ActorId) -> Vec<u8> {
    // An id of a name and a number always encodes.
    postcard::to_allocvec(actor).unwrap_or_default()
}

// The tombstones of `set`, and its other versions.
fn split_tombstones(set: &VersionSet) -> (VersionSet, VersionSet) {
    let (tombstones, rest): (Vec<_>, Vec<_>) = set
        .versions()
        .iter()
        .cloned()
        .partition(|v| v.is_tombstone());
    (
        VersionSet::from_versions(tombstones),
        VersionSet::from_versions(rest),
    )
}

/// Whether `set` names `actor`, in a dot or in a context.
fn mentions(set: &VersionSet, actor: &ActorId) -> bool {
    set.versions()
        .iter()
        .any(|v| v.dot.actor == *actor || v.context.max_claim(actor) > 0)
}

// A poisoned lock only means a panic elsewhere between two plain-data steps; keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
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
        assert_eq!(second.versions, s.get(&k));
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
                            .versions;
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
                assert_eq!(Store::segment_of(&k), segment);
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
        assert_eq!(segment_keys(&s, Store::segment_of(&k2)), Vec::<Key>::new());
        assert_eq!(s.keys_in_segment(Store::segment_of(&k1)).len(), 1);
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
        assert!(!s.merge(&k, &stale.versions).unwrap().changed);
        assert!(s.get(&k).is_empty());
        // The key written again afresh is kept, and the stale copy still cannot join it.
        s.coordinate(&k, &VClock::new(), val("new"), 2).unwrap();
        s.merge(&k, &stale.versions).unwrap();
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
        let mut replica = old.versions.clone();
        replica.merge(&new.versions);
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
        assert_eq!(s.segment_digest(Store::segment_of(&k)), 0);
    }

    #[test]
    fn segments_follow_ring_position() {
        let k = key("some key");
        let expected = (stable_hash(&k) >> 52) as usize;
        assert_eq!(Store::segment_of(&k), expected);
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
                deliveries.push((k, done.versions));
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
            let seg = Store::segment_of(&extra);
            prop_assert_ne!(r1.segment_digest(seg), r2.segment_digest(seg));
        }
    }
}
