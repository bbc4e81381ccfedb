//! How a key and its set are laid out in the `data` keyspace.
//!
//! Key: `[segment: u16 BE][key]`, so that a segment's keys are one prefix scan, in key order.
//! Value: `[digest: u64 LE][value bytes: u64 LE][tombstones only: u8][versions: postcard]`;
//! the fixed header is what the store's indexes are rebuilt from at open, without decoding
//! any set.

use crate::core::engine::{EngineError, Summary};
use crate::core::version::{Version, VersionSet};

const HEADER: usize = 17;

/// The engine key of `key` in `segment`.
pub fn disk_key(segment: u16, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key.len());
    out.extend_from_slice(&segment.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The user key inside an engine key.
pub fn user_key(disk_key: &[u8]) -> Result<&[u8], EngineError> {
    disk_key
        .get(2..)
        .ok_or_else(|| corrupt("a key shorter than its segment prefix"))
}

/// The stored form of `set`, whose digest is `digest` and whose encoding
/// ([`crate::core::encoded_set::EncodedSet`]) is `versions`, made or checked by this node.
pub fn encode(digest: u64, set: &VersionSet, versions: &[u8]) -> Vec<u8> {
    let summary = Summary::of(digest, set);
    let mut out = Vec::with_capacity(HEADER + versions.len());
    out.extend_from_slice(&digest.to_le_bytes());
    out.extend_from_slice(&summary.value_bytes.to_le_bytes());
    out.push(u8::from(summary.tombstones_only));
    out.extend_from_slice(versions);
    out
}

/// The header of a stored record.
pub fn summary(bytes: &[u8]) -> Result<Summary, EngineError> {
    let header = bytes
        .get(..HEADER)
        .ok_or_else(|| corrupt("a record shorter than its header"))?;
    let word = |at: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Ok(Summary {
        digest: word(0),
        value_bytes: word(8),
        tombstones_only: header[16] != 0,
    })
}

/// The versions of a stored record, as they were encoded: the encoding of its set
/// ([`crate::core::encoded_set::EncodedSet`]), since a set is encoded as its versions alone.
pub fn encoded_versions(bytes: &[u8]) -> Result<&[u8], EngineError> {
    bytes
        .get(HEADER..)
        .filter(|versions| !versions.is_empty())
        .ok_or_else(|| corrupt("a record shorter than its header"))
}

/// The digest and set of a stored record.
pub fn decode(bytes: &[u8]) -> Result<(u64, VersionSet), EngineError> {
    let summary = summary(bytes)?;
    let versions: Vec<Version> =
        postcard::from_bytes(&bytes[HEADER..]).map_err(|e| corrupt(&e.to_string()))?;
    let set = VersionSet::from_stored(versions)
        .ok_or_else(|| corrupt("versions that are not a stored set"))?;
    if set.is_empty() || set.digest() != summary.digest {
        return Err(corrupt("a record whose set does not match its digest"));
    }
    Ok((summary.digest, set))
}

fn corrupt(why: &str) -> EngineError {
    EngineError::Failed(format!("corrupt record on disk: {why}"))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::encoded_set::EncodedSet;
    use crate::core::ids::ActorId;
    use crate::core::vclock::{Dot, VClock};

    #[test]
    fn a_record_reads_back_and_a_damaged_one_is_an_error_not_a_panic() {
        let mut set = VersionSet::new();
        let dot = Dot::new(ActorId::new("a", 1), 1);
        set.write(&VClock::new(), dot, Some(Bytes::from("value")), 5);
        let bytes = encode(set.digest(), &set, EncodedSet::encode(&set).as_bytes());
        assert_eq!(decode(&bytes), Ok((set.digest(), set.clone())));
        assert_eq!(summary(&bytes).unwrap().value_bytes, 5);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            EncodedSet::from_stored(Bytes::copy_from_slice(encoded_versions(&bytes).unwrap())),
            EncodedSet::encode(&set),
            "a record's versions are its set's encoding"
        );
        assert!(encoded_versions(&bytes[..HEADER]).is_err());
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x55;
        assert!(decode(&flipped).is_err());
    }
}
