//! The store's digests of the pieces of its cells that ring tokens cut off.
//!
//! The store keeps the XOR digest of every cell (a fixed range of ring positions, see
//! [`crate::core::segments::CELLS`]). A question about a ring range (the keys two nodes both
//! own, the keys this node does not own) is answered from whole cells, except where a vnode
//! token falls inside a cell: its positions on either side of the token start their walk at
//! different tokens, so may have different owners. For those cells the store keeps, per
//! token, the digest of the *piece* that ends at it: the positions after the previous token
//! in the cell (or the cell's start) up to and including the token. The rest of such a cell,
//! after its last token, is the cell's digest XOR its pieces'. Every write updates the piece
//! its key falls in, so no question about ring ranges ever lists keys.
//!
//! The split points are the ring's distinct token values; they change only with the ring, and
//! the store then lists, once, the segments that hold one (see
//! [`crate::core::store::Store::pieces_at`]).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::segments::{CELLS, SEGMENTS};

/// The piece digests for one set of split points.
pub struct Pieces {
    generation: u64,
    points: Arc<[u64]>,
    // Bit per cell: set when the cell holds at least one point.
    split: Box<[u64]>,
    digests: Box<[AtomicU64]>,
    // False while the pieces are being filled, or when filling them failed to read a segment.
    complete: AtomicBool,
}

impl Pieces {
    /// Pieces for `points` (distinct, ascending), all digests 0, not yet complete.
    pub(crate) fn new(points: Arc<[u64]>, generation: u64) -> Pieces {
        debug_assert!(points.windows(2).all(|w| w[0] < w[1]));
        let mut split = vec![0u64; CELLS / 64].into_boxed_slice();
        for &point in points.iter() {
            let cell = crate::core::segments::cell_at(point);
            split[cell / 64] |= 1 << (cell % 64);
        }
        Pieces {
            generation,
            digests: points.iter().map(|_| AtomicU64::new(0)).collect(),
            points,
            split,
            complete: AtomicBool::new(false),
        }
    }

    /// The table of no points, complete: what a store starts with.
    pub(crate) fn none() -> Pieces {
        let pieces = Pieces::new(Vec::new().into(), 0);
        pieces.set_complete(true);
        pieces
    }

    /// Which table of pieces this is: each one the store makes gets a new number.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The split points, distinct and ascending.
    pub fn points(&self) -> &Arc<[u64]> {
        &self.points
    }

    /// True once every piece holds the digest of its keys.
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    pub(crate) fn set_complete(&self, complete: bool) {
        self.complete.store(complete, Ordering::Release);
    }

    /// The piece `position` falls in, as the index of the point that ends it; `None` when its
    /// cell holds no point, or when it lies after the cell's last point.
    pub fn piece_at(&self, position: u64) -> Option<usize> {
        let cell = crate::core::segments::cell_at(position);
        if self.split[cell / 64] & (1 << (cell % 64)) == 0 {
            return None;
        }
        let point = self.points.partition_point(|&p| p < position);
        (point < self.points.len() && crate::core::segments::cell_at(self.points[point]) == cell)
            .then_some(point)
    }

    /// The points lying in `segment`.
    pub fn in_segment(&self, segment: usize) -> Range<usize> {
        let first = |s: usize| {
            if s >= SEGMENTS {
                return self.points.len();
            }
            let start = (s as u64) << (64 - SEGMENTS.trailing_zeros());
            self.points.partition_point(|&p| p < start)
        };
        first(segment)..first(segment + 1)
    }

    /// The digest of the piece ending at point `point` (0 if out of range).
    pub fn digest(&self, point: usize) -> u64 {
        self.digests
            .get(point)
            .map_or(0, |d| d.load(Ordering::Acquire))
    }

    /// Moves the digest of the piece holding `position`, if any, by `change`.
    pub(crate) fn xor(&self, position: u64, change: u64) {
        if let Some(point) = self.piece_at(position) {
            self.digests[point].fetch_xor(change, Ordering::AcqRel);
        }
    }

    /// Sets the digest of the piece ending at point `point`.
    pub(crate) fn set(&self, point: usize, digest: u64) {
        if let Some(d) = self.digests.get(point) {
            d.store(digest, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CELL: u64 = 1 << 48;

    #[test]
    fn a_position_falls_in_the_piece_of_the_first_point_at_or_after_it_within_its_cell() {
        // Cell 3 holds two points; cell 5 one at its very end; cell 9 none.
        let points: Arc<[u64]> = vec![3 * CELL + 10, 3 * CELL + 20, 6 * CELL - 1].into();
        let pieces = Pieces::new(points, 1);
        assert_eq!(pieces.piece_at(3 * CELL), Some(0));
        assert_eq!(pieces.piece_at(3 * CELL + 10), Some(0));
        assert_eq!(pieces.piece_at(3 * CELL + 11), Some(1));
        assert_eq!(pieces.piece_at(3 * CELL + 20), Some(1));
        assert_eq!(
            pieces.piece_at(3 * CELL + 21),
            None,
            "after the cell's last point"
        );
        assert_eq!(pieces.piece_at(4 * CELL - 1), None);
        assert_eq!(pieces.piece_at(5 * CELL), Some(2));
        assert_eq!(pieces.piece_at(6 * CELL - 1), Some(2));
        assert_eq!(pieces.piece_at(9 * CELL + 5), None, "a cell without points");
        assert_eq!(pieces.piece_at(u64::MAX), None);
        assert_eq!(pieces.in_segment(0), 0..3);
        assert_eq!(pieces.in_segment(1), 3..3);
        assert_eq!(pieces.in_segment(SEGMENTS), 3..3);
    }

    #[test]
    fn digests_move_by_xor_and_can_be_set() {
        let pieces = Pieces::new(vec![CELL + 5].into(), 7);
        assert_eq!(pieces.generation(), 7);
        assert!(!pieces.is_complete());
        pieces.xor(CELL + 1, 0b101);
        pieces.xor(CELL + 6, 0b111);
        assert_eq!(
            pieces.digest(0),
            0b101,
            "a position past the point moves nothing"
        );
        pieces.set(0, 9);
        pieces.xor(CELL, 1);
        assert_eq!(pieces.digest(0), 8);
        assert_eq!(pieces.digest(1), 0, "out of range reads as 0");
    }
}
