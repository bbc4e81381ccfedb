//! How the key space is cut for digests: [`SEGMENTS`] ranges of ring positions (what
//! anti-entropy compares, and what an engine groups its records by), each cut again into
//! [`CELLS_PER_SEGMENT`] cells. Every module that speaks of segments or cells takes them from
//! here, below the store that keeps their digests.

use super::hash::stable_hash;

/// Number of digest segments the key space is divided into (by the top bits of ring position).
pub const SEGMENTS: usize = 4096;
/// Cells per segment: the buckets of anti-entropy.
pub const CELLS_PER_SEGMENT: usize = 16;
/// Number of digest cells: the segments cut finer, by the next 4 bits of ring position.
pub const CELLS: usize = SEGMENTS * CELLS_PER_SEGMENT;

/// The segment holding `key`: the top bits of its ring position.
pub fn segment_of(key: &[u8]) -> usize {
    segment_at(stable_hash(key))
}

/// The segment holding ring position `position`: its top 12 bits.
pub fn segment_at(position: u64) -> usize {
    (position >> (64 - SEGMENTS.trailing_zeros())) as usize
}

/// The cell holding ring position `position`: its top 16 bits (so the cells of segment `s`
/// are `16 s .. 16 s + 16`).
pub fn cell_at(position: u64) -> usize {
    (position >> (64 - CELLS.trailing_zeros())) as usize
}
