//! The durable engine against the in-memory one: the same answers for the same operations,
//! and a reopened store that gives back exactly what it held.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::DiskEngine;
use crate::config::Fsync;
use crate::core::encoded_set::EncodedSet;
use crate::core::engine::Engine as _;
use crate::core::hints::HintStore;
use crate::core::ids::NodeId;
use crate::core::ids::{ActorId, Key};
use crate::core::ring::Ring;
use crate::core::segments::segment_of;
use crate::core::store::{CELLS, SEGMENTS, SetLimits, Store};
use crate::core::vclock::VClock;
use crate::core::version::VersionSet;
use crate::testing::TempDir;

fn actor() -> ActorId {
    ActorId::new("a", 1 << 20)
}

fn open_disk(dir: &Path) -> Store {
    let engine = DiskEngine::open(dir, Fsync::Never, 0).expect("the engine opens");
    Store::open(Box::new(engine), actor(), SetLimits::NONE).expect("the store opens")
}

#[derive(Clone, Debug)]
enum Op {
    /// A write through this store: blind, or with the context of a read of the key.
    Write {
        key: u8,
        value: Option<u8>,
        read_first: bool,
    },
    /// A set coordinated elsewhere, merged here.
    Merge { key: u8, value: u8 },
    /// A purge of the key's tombstones, as a purge round would order it.
    Purge { key: u8 },
    /// A handoff dropping the key.
    Hand { key: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..12;
    prop_oneof![
        4 => (key.clone(), proptest::option::weighted(0.7, any::<u8>()), any::<bool>())
            .prop_map(|(key, value, read_first)| Op::Write { key, value, read_first }),
        3 => (key.clone(), any::<u8>()).prop_map(|(key, value)| Op::Merge { key, value }),
        1 => key.clone().prop_map(|key| Op::Purge { key }),
        1 => key.prop_map(|key| Op::Hand { key }),
    ]
}

fn key(k: u8) -> Key {
    Bytes::from(format!("key-{k}"))
}

// Everything a store answers about its data, for comparing two stores: over every segment,
// or over the segment of one key (a scan of all 4096 is slow on an LSM tree).
fn observe(store: &Store, only: Option<u8>) -> impl PartialEq + std::fmt::Debug {
    let segments = match only {
        Some(k) => {
            let s = crate::core::segments::segment_of(&key(k));
            s..s + 1
        }
        None => 0..SEGMENTS,
    };
    // A replica read's bytes too: each engine answers them its own way.
    let keys: Vec<(Key, u64, VersionSet, EncodedSet)> = segments
        .flat_map(|s| store.keys_in_segment(s))
        .map(|(k, d)| {
            let set = store.get(&k);
            let encoded = store.get_encoded(&k);
            (k, d, set, encoded)
        })
        .collect();
    let cells: Vec<u64> = match only {
        Some(k) => {
            let first = crate::core::segments::cell_at(Ring::key_position(&key(k))) / 16 * 16;
            (first..first + 16).map(|c| store.cell_digest(c)).collect()
        }
        None => (0..CELLS).map(|c| store.cell_digest(c)).collect(),
    };
    (
        keys,
        cells,
        (0..SEGMENTS)
            .map(|s| store.segment_digest(s))
            .collect::<Vec<_>>(),
        store.fingerprint(),
        store.tombstone_candidates(None, usize::MAX),
        (store.len(), store.key_bytes(), store.value_bytes()),
    )
}

// Applies `op` to `store`; `peer` coordinates the sets that are merged. Returns what the
// store answered, for comparing.
fn apply(store: &Store, peer: &Store, op: &Op, now: u64) -> String {
    let k = match op {
        Op::Write { key, .. } | Op::Merge { key, .. } | Op::Purge { key } | Op::Hand { key } => key,
    };
    apply_to(store, peer, op, &key(*k), now)
}

// `op` applied to `key` instead of the key it names.
fn apply_to(store: &Store, peer: &Store, op: &Op, key: &Key, now: u64) -> String {
    match op {
        Op::Write {
            value, read_first, ..
        } => {
            let context = if *read_first {
                store.get(key).read().context
            } else {
                VClock::new()
            };
            let value = value.map(|v| Bytes::from(vec![v; 1 + v as usize % 40]));
            format!("{:?}", store.coordinate(key, &context, value, now))
        }
        Op::Merge { value, .. } => {
            let set = peer
                .coordinate(key, &VClock::new(), Some(Bytes::from(vec![*value])), now)
                .map(|c| c.set())
                .unwrap_or_default();
            format!("{:?}", store.merge(key, &set))
        }
        Op::Purge { .. } => {
            let digest = store.digest(key);
            format!("{}", store.purge_tombstones(key, digest, now))
        }
        Op::Hand { .. } => {
            let digest = store.digest(key);
            format!("{}", store.remove_handed(key, digest))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_durable_engine_answers_like_the_in_memory_one_and_reopens_to_the_same_data(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let dir = TempDir::new("disk-engine");
        let memory = Store::new(actor());
        let disk = open_disk(dir.path());
        let (peer_m, peer_d) = (Store::new(ActorId::new("p", 1)), Store::new(ActorId::new("p", 1)));
        for (step, op) in ops.iter().enumerate() {
            let now = step as u64;
            let answers = (apply(&memory, &peer_m, op, now), apply(&disk, &peer_d, op, now));
            prop_assert_eq!(&answers.0, &answers.1, "step {}: {:?}", step, op);
            let k = match op {
                Op::Write { key, .. } | Op::Merge { key, .. } | Op::Purge { key } | Op::Hand { key } => *key,
            };
            prop_assert_eq!(observe(&memory, Some(k)), observe(&disk, Some(k)), "step {}: {:?}", step, op);
            prop_assert_eq!(memory.actor(), disk.actor());
        }
        prop_assert_eq!(observe(&memory, None), observe(&disk, None), "at the end");
        prop_assert!(disk.failure().is_none());
        let issued = disk.issued();
        let actor_before = disk.actor();
        drop(disk);
        let reopened = open_disk(dir.path());
        prop_assert_eq!(observe(&memory, None), observe(&reopened, None), "reopened");
        prop_assert_eq!(reopened.actor(), actor_before, "the actor id is kept");
        let next = reopened
            .coordinate(&key(99), &VClock::new(), Some(Bytes::from("after")), 0)
            .expect("a write after reopening");
        prop_assert!(next.dot.counter > issued, "dot {} reissued (issued {})", next.dot.counter, issued);
    }
}

#[test]
fn a_segment_whose_records_outgrow_its_cache_answers_every_change_and_reopens_to_it() {
    // Many keys of one segment, written, merged, purged and handed off in turns: the engine's
    // record cache keeps some of them and evicts the others, and every answer must be the
    // in-memory engine's, before and after reopening.
    let segment = segment_of(b"crowded-0");
    let keys: Vec<Key> = (0u64..)
        .map(|i| Bytes::from(format!("crowded-{i}")))
        .filter(|k| segment_of(k) == segment)
        .take(160)
        .collect();
    // Each cached record costs at least its overhead: the cache cannot hold them all.
    assert!(keys.len() * super::cache::ENTRY_OVERHEAD > 2 * super::cache::BYTES_PER_SEGMENT);
    let dir = TempDir::new("disk-engine");
    let memory = Store::new(actor());
    let disk = open_disk(dir.path());
    let (peer_m, peer_d) = (
        Store::new(ActorId::new("p", 1)),
        Store::new(ActorId::new("p", 1)),
    );
    let ops = |i: usize, round: usize| {
        let value = u8::try_from((i * 7 + round * 3) % 256).unwrap_or(0);
        match (i + round) % 7 {
            0..=2 => Op::Write {
                key: 0,
                value: Some(value),
                read_first: round.is_multiple_of(2),
            },
            3 => Op::Write {
                key: 0,
                value: None,
                read_first: true,
            },
            4 | 5 => Op::Merge { key: 0, value },
            _ if round % 3 == 2 => Op::Hand { key: 0 },
            _ => Op::Purge { key: 0 },
        }
    };
    let mut now = 0;
    for round in 0..6 {
        for (i, k) in keys.iter().enumerate() {
            now += 1;
            let op = ops(i, round);
            let answers = (
                apply_to(&memory, &peer_m, &op, k, now),
                apply_to(&disk, &peer_d, &op, k, now),
            );
            assert_eq!(answers.0, answers.1, "round {round}, key {i}: {op:?}");
        }
        for (i, k) in keys.iter().enumerate().rev() {
            assert_eq!(memory.get(k), disk.get(k), "round {round}, key {i}");
            assert_eq!(memory.digest(k), disk.digest(k), "round {round}, key {i}");
        }
    }
    drop(disk);
    let reopened = open_disk(dir.path());
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(memory.get(k), reopened.get(k), "reopened, key {i}");
    }
}

#[test]
fn a_directory_of_another_node_is_refused() {
    let dir = TempDir::new("disk-engine");
    drop(open_disk(dir.path()));
    let engine = DiskEngine::open(dir.path(), Fsync::Never, 0).unwrap();
    let other = Store::open(Box::new(engine), ActorId::new("b", 1), SetLimits::NONE);
    assert!(
        matches!(&other, Err(crate::core::store::OpenError::Foreign { found, .. }) if found == "a"),
        "{:?}",
        other.err()
    );
}

#[test]
fn a_directory_in_use_is_refused() {
    let dir = TempDir::new("disk-engine");
    let _held = DiskEngine::open(dir.path(), Fsync::Never, 0).unwrap();
    assert!(matches!(
        DiskEngine::open(dir.path(), Fsync::Never, 0),
        Err(super::OpenDiskError::Locked(_))
    ));
}

#[test]
fn below_the_free_space_reserve_writes_fail_as_disk_full_and_reads_go_on() {
    let dir = TempDir::new("disk-engine");
    let store = open_disk(dir.path());
    store
        .coordinate(&key(1), &VClock::new(), Some(Bytes::from("kept")), 0)
        .unwrap();
    drop(store);
    let engine = DiskEngine::open(dir.path(), Fsync::Always, u64::MAX).unwrap();
    let store = Store::open(Box::new(engine), actor(), SetLimits::NONE).unwrap();
    assert_eq!(store.get(&key(1)).read().values, vec![Bytes::from("kept")]);
    assert!(matches!(
        store.coordinate(&key(2), &VClock::new(), Some(Bytes::from("x")), 0),
        Err(crate::core::store::StoreError::Engine(
            crate::core::engine::EngineError::DiskFull(_)
        ))
    ));
    assert!(store.get(&key(2)).is_empty());
    assert!(store.failure().is_none(), "a full disk is no read failure");
    // A handoff's removal (which takes a fresh actor epoch first: this store's actor made
    // the key's dot) is refused too, and the node stays up to try it again later.
    let digest = store.digest(&key(1));
    assert!(!store.remove_handed(&key(1), digest));
    assert_eq!(store.get(&key(1)).read().values, vec![Bytes::from("kept")]);
    assert!(store.failure().is_none(), "a full disk is no store failure");
}

// Per cell and per piece, the XOR of the elements of the stored keys among `keys`, as a
// listing finds them.
fn listed_cells_and_pieces(
    store: &Store,
    keys: &[Key],
    pieces: &crate::core::pieces::Pieces,
) -> (Vec<u64>, Vec<u64>) {
    let mut cells = vec![0u64; CELLS];
    let mut by_piece = vec![0u64; pieces.points().len()];
    for k in keys {
        let element = Store::key_element(k, store.digest(k));
        let position = Ring::key_position(k);
        cells[crate::core::segments::cell_at(position)] ^= element;
        if let Some(point) = pieces.piece_at(position) {
            by_piece[point] ^= element;
        }
    }
    (cells, by_piece)
}

fn kept_cells_and_pieces(
    store: &Store,
    pieces: &crate::core::pieces::Pieces,
) -> (Vec<u64>, Vec<u64>) {
    (
        (0..CELLS).map(|c| store.cell_digest(c)).collect(),
        (0..pieces.points().len())
            .map(|p| pieces.digest(p))
            .collect(),
    )
}

#[test]
fn cell_and_piece_digests_follow_writes_and_are_rebuilt_when_the_store_reopens() {
    let dir = TempDir::new("disk-engine");
    let ring = Ring::build(["a", "b", "c"].map(|n| (NodeId::new(n), 16))).unwrap();
    let points: Arc<[u64]> = ring.token_values().into();
    let cut: std::collections::HashSet<usize> = points
        .iter()
        .map(|&p| crate::core::segments::cell_at(p))
        .collect();
    // Keys in cells a token cuts (where the pieces are), and keys anywhere.
    let mut keys: Vec<Key> = (0u64..)
        .map(|i| Bytes::from(format!("near-{i}")))
        .filter(|k| cut.contains(&crate::core::segments::cell_at(Ring::key_position(k))))
        .take(150)
        .collect();
    keys.extend((0..150).map(|i| Bytes::from(format!("any-{i}"))));
    let store = open_disk(dir.path());
    let write = |store: &Store, k: &Key, value: Option<&str>| {
        let ctx = store.get(k).read().context;
        store
            .coordinate(k, &ctx, value.map(|v| Bytes::from(v.to_string())), 0)
            .unwrap();
    };
    for k in &keys {
        write(&store, k, Some("v"));
    }
    // Filled by listing the disk's segments.
    let pieces = store.pieces_at(&points);
    assert!(pieces.is_complete());
    assert_eq!(
        kept_cells_and_pieces(&store, &pieces),
        listed_cells_and_pieces(&store, &keys, &pieces)
    );
    // Moved by writes, deletes and drops.
    for (i, k) in keys.iter().enumerate() {
        match i % 3 {
            0 => write(&store, k, Some("w")),
            1 => write(&store, k, None),
            _ => {
                store.remove_handed(k, store.digest(k));
            }
        }
    }
    let listed = listed_cells_and_pieces(&store, &keys, &pieces);
    assert_eq!(kept_cells_and_pieces(&store, &pieces), listed);
    assert!(listed.1.iter().any(|&d| d != 0), "keys fell in pieces");
    drop(pieces);
    drop(store);
    let reopened = open_disk(dir.path());
    let pieces = reopened.pieces_at(&points);
    assert_eq!(kept_cells_and_pieces(&reopened, &pieces), listed);
}

// Whether `needle` is in the bytes of the database's journal files, as the OS has them.
fn journal_holds(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
        .any(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
}

#[test]
fn after_a_failed_fsync_no_sync_succeeds_under_either_policy() {
    // Under `never` the only fsyncs are those of the data written before a status entry; the
    // kernel may have dropped what such an fsync could not write, so no write counts after it.
    for fsync in [Fsync::Never, Fsync::Always] {
        let dir = TempDir::new("disk-failed-fsync");
        let engine = DiskEngine::open(dir.path(), fsync, 0).unwrap();
        engine.sync().unwrap();
        engine.journals.fail("EIO");
        let err = engine.sync().unwrap_err();
        assert!(err.to_string().contains("EIO"), "{fsync:?}: {err}");
        assert!(engine.sync().is_err(), "{fsync:?}: and it stays so");
    }
}

#[test]
fn a_change_reaches_the_os_at_the_next_sync_which_covers_every_change_made_before_it() {
    // Under `never` the sync hands fjall's buffer to the OS (a process kill keeps what the OS
    // holds), under `always` it fsyncs too; either way the node acks only after it.
    for fsync in [Fsync::Never, Fsync::Always] {
        let dir = TempDir::new("disk-handover");
        let engine = DiskEngine::open(dir.path(), fsync, 0).unwrap();
        let store = Store::open(Box::new(engine), actor(), SetLimits::NONE).unwrap();
        let markers: Vec<String> = (0..2)
            .map(|i| format!("marker-{fsync:?}-{i}-7f3a"))
            .collect();
        for (i, marker) in markers.iter().enumerate() {
            store
                .coordinate(
                    &key(i as u8),
                    &VClock::new(),
                    Some(Bytes::from(marker.clone())),
                    0,
                )
                .unwrap();
            assert!(
                !journal_holds(dir.path(), marker.as_bytes()),
                "{fsync:?}: one write to the OS per sync, not per change"
            );
        }
        store.engine().sync().unwrap();
        for marker in &markers {
            assert!(journal_holds(dir.path(), marker.as_bytes()), "{fsync:?}");
        }
    }
}

// Opens the store in `dir` as a node does: the hints from their journal first, then the
// store, checked against both.
fn open_with_hints(dir: &Path) -> Result<(Store, HintStore), crate::core::store::OpenError> {
    let engine = DiskEngine::open(dir, Fsync::Never, 0).expect("the engine opens");
    let journal = engine.hints();
    let mut hints = HintStore::default();
    for hint in journal.load().expect("the hints load") {
        hints.restore(hint);
    }
    let store = Store::open_with_hints(Box::new(engine), actor(), SetLimits::NONE, Some(&hints))?;
    Ok((store, hints.with_journal(Box::new(journal))))
}

#[test]
fn hints_lost_or_changed_since_the_last_clean_stop_are_refused_at_open() {
    let dir = TempDir::new("disk-hints");
    let owner = NodeId::new("owner");
    let (store, mut hints) = open_with_hints(dir.path()).unwrap();
    let peer = Store::new(ActorId::new("p", 1));
    for k in 0..3 {
        let written = peer
            .coordinate(&key(k), &VClock::new(), Some(Bytes::from_static(b"v")), 0)
            .unwrap();
        hints.add(owner.clone(), key(k), written.set(), 0).unwrap();
    }
    hints.close();
    store.close(Some(&hints)).unwrap();
    drop((store, hints));

    // A clean stop and nothing changed: it opens, with its hints.
    let (store, mut hints) = open_with_hints(dir.path()).unwrap();
    assert_eq!(hints.len(), 3);
    let taken = hints.take(&owner, 1);
    assert!(hints.ack(&owner, taken[0].id));
    hints.close();
    store.close(Some(&hints)).unwrap();
    drop((store, hints));

    // One hint record changed behind the node's back (another hint's versions under its
    // id), then one lost, as a damaged journal's tail would lose it.
    let engine = DiskEngine::open(dir.path(), Fsync::Never, 0).unwrap();
    let journal = engine.hints();
    let held = journal.load().unwrap();
    let mut changed = held[1].clone();
    changed.id = held[0].id;
    let (id, record) = super::hints::encode(&changed).unwrap();
    journal.keyspace.insert(id, record).unwrap();
    engine.sync().unwrap();
    drop((journal, engine));
    assert_hints_damaged(dir.path(), 2, 2);
    let engine = DiskEngine::open(dir.path(), Fsync::Never, 0).unwrap();
    let journal = engine.hints();
    journal.keyspace.remove(id).unwrap();
    engine.sync().unwrap();
    drop((journal, engine));
    assert_hints_damaged(dir.path(), 2, 1);
}

// The store in `dir` refuses to open: its hints are not those of its last clean stop.
fn assert_hints_damaged(dir: &Path, then: u64, now: u64) {
    let refused = open_with_hints(dir).err();
    assert!(
        matches!(
            refused,
            Some(crate::core::store::OpenError::DamagedHints { recorded, found })
                if (recorded, found) == (then, now)
        ),
        "{refused:?}"
    );
}
