//! The digests of the keys a node holds in a union of ring ranges, per segment, kept up to
//! date from the store's cell and piece digests, never by listing keys.
//!
//! A [`RangePlan`] says, once per ring (and N), which positions are in: for every cell, whether
//! its positions after its last token (all of it, for a cell without a token) are in, and which
//! of its pieces (see [`crate::core::pieces`]) differ from that. A segment's digest is then the
//! XOR of its cells that are in, corrected by the few pieces that differ: O(16) reads of
//! atomics, whatever the data's size. [`RangeDigests`] caches it per segment, with the raw
//! segment digest it was computed from, so that only segments a write moved are recomputed.
//!
//! Anti-entropy uses it for the keys two nodes both own ([`crate::core::anti_entropy`]); the
//! handoff for the keys this node holds but does not own ([`crate::core::handoff`]).

use std::sync::Arc;

use super::pieces::Pieces;
use super::ring::Ring;
use super::segments::{CELLS, SEGMENTS};
use super::store::Store;

const CELLS_PER_SEGMENT: usize = CELLS / SEGMENTS;
// A segment's cells are one `u16` of the plan.
const _: () = assert!(CELLS_PER_SEGMENT == 16);

/// Which ring positions are in, cell by cell and piece by piece, for one ring.
pub struct RangePlan {
    points: Arc<[u64]>,
    // Per segment, a bit per cell: the cell's positions after its last point are in.
    cells: Box<[u16]>,
    // Points whose piece is in while the rest of its cell is out, or the other way round,
    // grouped by segment: those of segment `s` are `flips[flip_start[s]..flip_start[s + 1]]`.
    flips: Box<[u32]>,
    flip_start: Box<[u32]>,
}

// Sets the bits of cells `from..to`.
fn set_cells(cells: &mut [u16], from: usize, to: usize) {
    let mut cell = from;
    while cell < to {
        let segment = cell / CELLS_PER_SEGMENT;
        let bit = cell % CELLS_PER_SEGMENT;
        let end = (to - segment * CELLS_PER_SEGMENT).min(CELLS_PER_SEGMENT);
        let width = end - bit;
        cells[segment] |= (((1u32 << width) - 1) << bit) as u16;
        cell = segment * CELLS_PER_SEGMENT + end;
    }
}

impl RangePlan {
    /// The plan of the positions of `ring` for which `within` holds. `within` must answer the
    /// same for every position whose walk starts at the same token (a question about the
    /// position's owners does): it is asked once per token value, at that value.
    pub fn new(ring: &Ring, within: impl Fn(u64) -> bool) -> RangePlan {
        let points: Arc<[u64]> = ring.token_values().into();
        let flags: Vec<bool> = points.iter().map(|&p| within(p)).collect();
        let mut cells = vec![0u16; SEGMENTS].into_boxed_slice();
        // The rest of a cell (after its last point) walks from the first point after the
        // cell, wrapping to the first point: cells from one point's cell up to the next
        // point's share that. Work in whole segments where they can: O(segments + points).
        let Some(&first) = points.first() else {
            // Without tokens every position is alike.
            if within(0) {
                set_cells(&mut cells, 0, CELLS);
            }
            return RangePlan::of(points, cells, Vec::new());
        };
        if flags[0] {
            set_cells(&mut cells, 0, crate::core::segments::cell_at(first));
            set_cells(
                &mut cells,
                crate::core::segments::cell_at(points[points.len() - 1]),
                CELLS,
            );
        }
        for (i, pair) in points.windows(2).enumerate() {
            if flags[i + 1] {
                set_cells(
                    &mut cells,
                    crate::core::segments::cell_at(pair[0]),
                    crate::core::segments::cell_at(pair[1]),
                );
            }
        }
        // A point's own piece flips when it differs from the rest of its cell.
        let mut flips = Vec::new();
        let mut i = 0;
        while i < points.len() {
            let cell = crate::core::segments::cell_at(points[i]);
            let end =
                i + points[i..].partition_point(|&p| crate::core::segments::cell_at(p) == cell);
            let rest = flags[if end == points.len() { 0 } else { end }];
            flips.extend((i..end).filter(|&p| flags[p] != rest));
            i = end;
        }
        RangePlan::of(points, cells, flips)
    }

    fn of(points: Arc<[u64]>, cells: Box<[u16]>, flips: Vec<usize>) -> RangePlan {
        let mut flip_start = vec![0u32; SEGMENTS + 1].into_boxed_slice();
        for &point in &flips {
            flip_start[crate::core::segments::segment_at(points[point]) + 1] += 1;
        }
        for segment in 0..SEGMENTS {
            flip_start[segment + 1] += flip_start[segment];
        }
        RangePlan {
            points,
            cells,
            // Below `MAX_TOKENS`, so they fit.
            flips: flips.iter().map(|&p| p as u32).collect(),
            flip_start,
        }
    }

    /// The ring's distinct token values: the split points of the store's pieces this plan
    /// reads.
    pub fn points(&self) -> &Arc<[u64]> {
        &self.points
    }

    fn flips_of(&self, segment: usize) -> &[u32] {
        let start = self.flip_start[segment] as usize;
        let end = self.flip_start[segment + 1] as usize;
        &self.flips[start..end]
    }

    /// The digest of the keys of `segment` that are in, from `store`'s cells and `pieces`
    /// (which must be the store's pieces at [`RangePlan::points`]); 0 out of range.
    pub fn segment_digest(&self, store: &Store, pieces: &Pieces, segment: usize) -> u64 {
        if segment >= SEGMENTS {
            return 0;
        }
        let mut digest = 0;
        let mut cells = self.cells[segment];
        while cells != 0 {
            let bit = cells.trailing_zeros() as usize;
            digest ^= store.cell_digest(segment * CELLS_PER_SEGMENT + bit);
            cells &= cells - 1;
        }
        for &point in self.flips_of(segment) {
            digest ^= pieces.digest(point as usize);
        }
        digest
    }

    /// The digests of the keys that are in, for each cell of `segment` in order (the buckets
    /// of anti-entropy); empty out of range.
    pub fn cell_digests(&self, store: &Store, pieces: &Pieces, segment: usize) -> Vec<u64> {
        if segment >= SEGMENTS {
            return Vec::new();
        }
        let first = segment * CELLS_PER_SEGMENT;
        let mut digests: Vec<u64> = (0..CELLS_PER_SEGMENT)
            .map(|bit| {
                if self.cells[segment] & (1 << bit) != 0 {
                    store.cell_digest(first + bit)
                } else {
                    0
                }
            })
            .collect();
        for &point in self.flips_of(segment) {
            let point = point as usize;
            if let Some(&position) = self.points.get(point) {
                digests[crate::core::segments::cell_at(position) - first] ^= pieces.digest(point);
            }
        }
        digests
    }
}

#[derive(Clone, Copy)]
struct Cached {
    raw: u64,
    digest: u64,
}

/// The per-segment digests of one [`RangePlan`], recomputed only where the store moved.
pub struct RangeDigests {
    plan: RangePlan,
    // The generation of the store's pieces the digests were computed from; `None` when they
    // may be stale.
    generation: Option<u64>,
    // The store's fingerprint at the last refresh: unchanged means no segment moved.
    fingerprint: Option<u64>,
    segments: Vec<Option<Cached>>,
}

impl RangeDigests {
    /// Digests of `plan`, none computed yet.
    pub fn new(plan: RangePlan) -> RangeDigests {
        RangeDigests {
            plan,
            generation: None,
            fingerprint: None,
            segments: vec![None; SEGMENTS],
        }
    }

    /// Brings every segment up to date with `store`; `moved` hears of every segment whose
    /// digest changed (or was computed for the first time), with its new digest. Returns how
    /// many segments were recomputed: those a write moved since the last refresh (none, at
    /// the cost of one read, when no write came at all).
    pub fn refresh(&mut self, store: &Store, mut moved: impl FnMut(usize, u64)) -> usize {
        // Read before the segments: a write in between moves it again, so the next refresh
        // looks.
        let fingerprint = store.fingerprint();
        if self.generation.is_some() && self.fingerprint == Some(fingerprint) {
            return 0;
        }
        let pieces = store.pieces_at(self.plan.points());
        if self.generation != Some(pieces.generation()) {
            self.segments.fill(None);
            self.generation = Some(pieces.generation());
        }
        let mut recomputed = 0;
        for (segment, cached) in self.segments.iter_mut().enumerate() {
            // Read before the cells: a write moves them first, so a digest computed after
            // this read covers at least what `raw` does, and a later write moves `raw` again.
            let raw = store.segment_digest(segment);
            if cached.is_some_and(|c| c.raw == raw) {
                continue;
            }
            let digest = if raw == 0 {
                0
            } else {
                self.plan.segment_digest(store, &pieces, segment)
            };
            if cached.is_none_or(|c| c.digest != digest) {
                moved(segment, digest);
            }
            *cached = Some(Cached { raw, digest });
            recomputed += 1;
        }
        self.fingerprint = Some(fingerprint);
        if store.pieces_generation() != pieces.generation() {
            // Another ring's pieces replaced these meanwhile: writes may have missed them.
            self.segments.fill(None);
            self.generation = None;
        }
        recomputed
    }

    /// The digest of one segment as of the last refresh (0 if out of range or never
    /// computed).
    pub fn segment(&self, segment: usize) -> u64 {
        self.segments
            .get(segment)
            .copied()
            .flatten()
            .map_or(0, |c| c.digest)
    }

    /// The digests of the cells of `segment` (within the plan), read from `store` now.
    pub fn cell_digests(&self, store: &Store, segment: usize) -> Vec<u64> {
        let pieces = store.pieces_at(self.plan.points());
        self.plan.cell_digests(store, &pieces, segment)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use bytes::Bytes;

    use super::*;
    use crate::core::hash::stable_hash;

    // Ring positions per cell.
    const CELL_SPAN: u64 = 1 << (64 - CELLS.trailing_zeros());
    use crate::core::ids::{ActorId, Key, NodeId};
    use crate::core::vclock::VClock;

    fn ring(vnodes: u32) -> Ring {
        Ring::build(["a", "b", "c", "d"].map(|n| (NodeId::new(n), vnodes))).unwrap()
    }

    // Keys in cells that a token of `ring` cuts.
    fn keys_near(ring: &Ring, count: usize) -> Vec<Key> {
        let cut: std::collections::HashSet<usize> = ring
            .token_values()
            .iter()
            .map(|&t| crate::core::segments::cell_at(t))
            .collect();
        (0u64..)
            .map(|i| Bytes::from(format!("k{i}")))
            .filter(|k| cut.contains(&crate::core::segments::cell_at(stable_hash(k))))
            .take(count)
            .collect()
    }

    // Each piece's digest as a listing of every key finds it.
    fn listed_pieces(store: &Store, pieces: &Pieces, keys: &[Key]) -> Vec<u64> {
        let mut sums = vec![0u64; pieces.points().len()];
        for k in keys {
            if let Some(point) = pieces.piece_at(stable_hash(k)) {
                sums[point] ^= Store::key_element(k, store.digest(k));
            }
        }
        sums
    }

    #[test]
    fn the_cell_positions_are_the_ring_positions_top_bits() {
        for i in 0..1_000 {
            let k = format!("key{i}");
            let position = Ring::key_position(k.as_bytes());
            let cell = crate::core::segments::cell_at(position);
            assert_eq!(
                cell / CELLS_PER_SEGMENT,
                crate::core::segments::segment_of(k.as_bytes())
            );
            assert_eq!(
                cell % CELLS_PER_SEGMENT,
                crate::core::anti_entropy::bucket_of(k.as_bytes())
            );
            assert_eq!(cell as u64, position / CELL_SPAN);
        }
    }

    // Whether `plan` counts ring position `position` in: the rest of its cell's bit, flipped
    // when the position lies in the piece of a point the plan flips.
    fn plan_says(plan: &RangePlan, position: u64) -> bool {
        let cell = crate::core::segments::cell_at(position);
        let rest = plan.cells[cell / CELLS_PER_SEGMENT] & (1 << (cell % CELLS_PER_SEGMENT)) != 0;
        let point = plan.points.partition_point(|&p| p < position);
        let in_cell = plan
            .points
            .get(point)
            .is_some_and(|&p| crate::core::segments::cell_at(p) == cell);
        let flipped = in_cell && plan.flips.contains(&(point as u32));
        rest != flipped
    }

    #[test]
    fn a_plan_counts_in_exactly_the_positions_its_question_does() {
        for (vnodes, n) in [(1, 1), (3, 2), (8, 2), (40, 3)] {
            let ring = ring(vnodes);
            let a = NodeId::new("a");
            let within = |p: u64| {
                ring.preference_list_at(p)
                    .is_ok_and(|l| l.take(n).any(|node| *node == a))
            };
            let plan = RangePlan::new(&ring, within);
            let mut positions: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX - 1];
            for &t in ring.token_values().iter() {
                positions.extend([t.wrapping_sub(1), t, t.wrapping_add(1)]);
                let cell_start = t & !(CELL_SPAN - 1);
                positions.extend([
                    cell_start,
                    cell_start.wrapping_sub(1),
                    cell_start + CELL_SPAN - 1,
                ]);
            }
            positions.extend((0..2_000u64).map(|i| stable_hash(&i.to_le_bytes())));
            for p in positions {
                assert_eq!(
                    plan_says(&plan, p),
                    within(p),
                    "position {p:#x}, {vnodes} vnodes, N={n}"
                );
            }
        }
    }

    #[test]
    fn a_plan_of_everything_or_nothing_reads_whole_cells() {
        let ring = ring(8);
        let all = RangePlan::new(&ring, |_| true);
        assert!(all.flips.is_empty() && all.cells.iter().all(|&c| c == u16::MAX));
        let none = RangePlan::new(&ring, |_| false);
        assert!(none.flips.is_empty() && none.cells.iter().all(|&c| c == 0));
        let empty = RangePlan::new(&Ring::default(), |_| true);
        assert!(empty.points().is_empty());
        assert!(empty.flips.is_empty() && empty.cells.iter().all(|&c| c == u16::MAX));
    }

    #[test]
    fn pieces_stay_exact_when_the_ring_changes_under_concurrent_writes() {
        let (before, after) = (ring(8), ring(13));
        let mut keys = keys_near(&before, 150);
        keys.extend(keys_near(&after, 150));
        keys.sort();
        keys.dedup();
        let keys = Arc::new(keys);
        let store = Arc::new(Store::new(ActorId::new("a", 1)));
        for k in keys.iter() {
            store
                .coordinate(k, &VClock::new(), Some(Bytes::from("v")), 0)
                .unwrap();
        }
        let (points_before, points_after): (Arc<[u64]>, Arc<[u64]>) =
            (before.token_values().into(), after.token_values().into());
        // Rounds of: writers running while the pieces are made again and again; then, the
        // writers stopped, the last table (filled while they wrote) against the listing.
        for round in 0..20 {
            let stop = Arc::new(AtomicBool::new(false));
            let writers: Vec<_> = (0..2)
                .map(|t| {
                    let (store, keys, stop) =
                        (Arc::clone(&store), Arc::clone(&keys), Arc::clone(&stop));
                    std::thread::spawn(move || {
                        let mut i = t + round;
                        while !stop.load(Ordering::Relaxed) {
                            let k = &keys[i % keys.len()];
                            let ctx = store.get(k).read().context;
                            let value = (i % 5 != 0).then(|| Bytes::from("v"));
                            store.coordinate(k, &ctx, value, 0).unwrap();
                            if i % 7 == 0 {
                                store.purge_tombstones(k, store.digest(k), 0);
                            }
                            i += 3;
                        }
                    })
                })
                .collect();
            for _ in 0..10 {
                assert!(store.pieces_at(&points_before).is_complete());
                assert!(store.pieces_at(&points_after).is_complete());
            }
            stop.store(true, Ordering::Relaxed);
            for w in writers {
                w.join().unwrap();
            }
            let generation = store.pieces_generation();
            let pieces = store.pieces_at(&points_after);
            assert_eq!(pieces.generation(), generation, "no new fill for the check");
            let digests: Vec<u64> = (0..pieces.points().len())
                .map(|p| pieces.digest(p))
                .collect();
            assert_eq!(
                digests,
                listed_pieces(&store, &pieces, &keys),
                "round {round}"
            );
            assert!(digests.iter().any(|&d| d != 0), "keys fell in pieces");
        }
    }

    #[test]
    fn pieces_replaced_between_refreshes_make_every_segment_recomputed() {
        let (first, second) = (ring(8), ring(13));
        let keys = keys_near(&first, 100);
        let store = Store::new(ActorId::new("a", 1));
        let write = |k: &Key| {
            let ctx = store.get(k).read().context;
            store
                .coordinate(k, &ctx, Some(Bytes::from("v")), 0)
                .unwrap();
        };
        keys.iter().for_each(write);
        let me = NodeId::new("a");
        let owned = |ring: &Ring| {
            let ring = ring.clone();
            let me = me.clone();
            move |p: u64| {
                ring.preference_list_at(p)
                    .is_ok_and(|mut l| l.next() == Some(&me))
            }
        };
        let mut digests = RangeDigests::new(RangePlan::new(&first, owned(&first)));
        digests.refresh(&store, |_, _| {});
        assert!(digests.generation.is_some(), "settled");
        let kept: Vec<u64> = (0..SEGMENTS).map(|s| digests.segment(s)).collect();
        // Another ring's pieces replace these; writes then miss the old table.
        let points: Arc<[u64]> = second.token_values().into();
        store.pieces_at(&points);
        keys.iter().for_each(write);
        let mut moved = 0;
        digests.refresh(&store, |_, _| moved += 1);
        assert!(
            digests.generation.is_some(),
            "settled: its own pieces were made again"
        );
        assert!(moved > 0);
        let mut fresh = RangeDigests::new(RangePlan::new(&first, owned(&first)));
        fresh.refresh(&store, |_, _| {});
        let now: Vec<u64> = (0..SEGMENTS).map(|s| digests.segment(s)).collect();
        let expected: Vec<u64> = (0..SEGMENTS).map(|s| fresh.segment(s)).collect();
        assert_eq!(now, expected);
        assert_ne!(now, kept);
    }
}
