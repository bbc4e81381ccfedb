//! The one stable hash of the store.
//!
//! Ring positions and digests must agree across processes, machines and releases, so they use
//! XXH3-64 (seed 0), whose output is fixed by its published specification, and never
//! `std::hash::DefaultHasher`, whose output may change between Rust releases.

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// XXH3-64 of `bytes` with seed 0.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// XXH3-64 of several byte strings, each preceded by its length as a little-endian `u64`,
/// so that `["ab", "c"]` and `["a", "bc"]` hash differently.
pub fn stable_hash_parts(parts: &[&[u8]]) -> u64 {
    let mut hasher = Xxh3::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_values_never_change() {
        // Pinned outputs: if these change, every ring position and digest moves.
        assert_eq!(stable_hash(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(stable_hash(b"dynamo"), stable_hash(b"dynamo"));
    }

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(
            stable_hash_parts(&[b"ab", b"c"]),
            stable_hash_parts(&[b"a", b"bc"])
        );
    }
}
