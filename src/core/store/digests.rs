//! The digests of the stored data, kept exact on every change.
//!
//! Each key keeps the digest of its set, and the key space is cut into [`SEGMENTS`] ranges of
//! ring positions whose digests (XOR of per-key hashes) are updated on every write.
//! Anti-entropy compares segment digests first and looks at keys only where they differ, so a
//! cluster in sync exchanges a few bytes of digests and nothing else. Engines group their
//! records by the same segments, so listing a segment's keys reads just that segment. The
//! same digests are kept finer, per cell ([`CELLS`](crate::core::segments::CELLS) in all, 16
//! per segment, the buckets of anti-entropy), and per piece of a cell that a ring token cuts ([`crate::core::pieces`]), so that the
//! digest of any union of ring ranges (what two nodes both own, what this node no longer
//! owns) is a XOR of a few of them, never a listing of keys. Segments, cells and ring
//! positions all come from one `stable_hash` of the key, so a cell is a contiguous range of
//! ring positions. Filling the pieces for a new ring takes its own mutex, then one segment at
//! a time. The gauges (keys, key and value bytes) move with the same changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{CELLS_PER_SEGMENT, SEGMENTS, Store, lock};
use crate::core::engine::EngineError;
use crate::core::hash::{stable_hash, stable_hash_parts};
use crate::core::ids::Key;
use crate::core::pieces::Pieces;
use crate::core::version::VersionSet;

impl Store {
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
    pub(super) fn cell(&self, cell: usize) -> &AtomicU64 {
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
                    .map_or(SEGMENTS, |&p| crate::core::segments::segment_at(p));
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

    /// What one key adds (by XOR) to its segment's digest; 0 for an absent key.
    pub fn key_element(key: &[u8], digest: u64) -> u64 {
        if digest == 0 {
            0
        } else {
            stable_hash_parts(&[key, &digest.to_le_bytes()])
        }
    }

    // One scan of the engine: segment and cell digests, the purge candidates and the gauges.
    // (No ring is known yet, so there are no pieces to fill.)
    pub(super) fn rebuild_indexes(&self) -> Result<(), EngineError> {
        let mut tombstones = lock(&self.tombstones);
        self.engine.scan(&mut |key, summary| {
            let element = Self::key_element(key, summary.digest);
            let position = stable_hash(key);
            self.cell(crate::core::segments::cell_at(position))
                .fetch_xor(element, Ordering::Relaxed);
            self.segments[crate::core::segments::segment_at(position)]
                .fetch_xor(element, Ordering::Relaxed);
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

    // Called under the key's segment lock. The finer digests move first: a reader that sees
    // the segment's (or the fingerprint's) new value then sees them moved too.
    pub(super) fn xor_segment(&self, key: &[u8], old: u64, new: u64) {
        let change = Self::key_element(key, old) ^ Self::key_element(key, new);
        let position = stable_hash(key);
        self.pieces.load().xor(position, change);
        self.cell(crate::core::segments::cell_at(position))
            .fetch_xor(change, Ordering::AcqRel);
        self.segments[crate::core::segments::segment_at(position)]
            .fetch_xor(change, Ordering::AcqRel);
        self.fingerprint.fetch_xor(change, Ordering::AcqRel);
    }

    // Moves the key count and the payload gauges by what one change of `key`'s set did.
    pub(super) fn count(&self, key: &[u8], was_empty: bool, old_values: u64, after: &VersionSet) {
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
}
