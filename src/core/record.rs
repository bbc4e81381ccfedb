//! One key's stored set packed into a single allocation: what the store keeps per key.
//!
//! A stored set as plain structs costs several allocations per key (the version list, the
//! value and its shared-buffer header, the key and its header, a node name per decoded
//! version), each with its allocator overhead: about 500 bytes for a 14-byte key and a
//! 100-byte value. Packed, the same key costs its bytes plus about 30 bytes of dots, clock
//! and lengths, in one allocation. The price is a decode on every read of the key and an
//! encode on every change, both linear in the set's size (a read copies the values out).
//!
//! Layout: `[digest: u64 LE][key length: LEB128][key][versions: postcard]`. Records are equal,
//! ordered and hashed by their key alone, and borrow as it, so a set of records is a map.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use super::version::{Version, VersionSet};

const DIGEST_LEN: usize = 8;

/// A key with its set's digest and its versions, encoded in one boxed slice.
pub struct Record(Box<[u8]>);

impl Record {
    /// The record of `key` holding `set`, whose digest is `digest`: for tests (the engine
    /// stores the encoding the store made once, [`Record::with_encoding`]).
    #[cfg(test)]
    pub fn new(key: &[u8], digest: u64, set: &VersionSet) -> Self {
        Record::with_encoding(
            key,
            digest,
            super::encoded_set::EncodedSet::encode(set).as_bytes(),
        )
    }

    /// The record of `key` holding the set whose encoding
    /// ([`EncodedSet`](super::encoded_set::EncodedSet)) is `versions` and
    /// whose digest is `digest`. The encoding must be one this node made or checked: a record
    /// decodes its versions without rebuilding the set.
    pub fn with_encoding(key: &[u8], digest: u64, versions: &[u8]) -> Self {
        // One allocation of the exact size, never grown or shrunk.
        let key_len = varint_len(key.len() as u64);
        let mut bytes = Vec::with_capacity(DIGEST_LEN + key_len + key.len() + versions.len());
        bytes.extend_from_slice(&digest.to_le_bytes());
        put_varint(&mut bytes, key.len() as u64);
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(versions);
        Record(bytes.into_boxed_slice())
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        let (start, len) = self.key_span();
        &self.0[start..start + len]
    }

    /// The digest of the stored set.
    pub fn digest(&self) -> u64 {
        let mut digest = [0; DIGEST_LEN];
        digest.copy_from_slice(&self.0[..DIGEST_LEN]);
        u64::from_le_bytes(digest)
    }

    /// The stored set, decoded.
    pub fn versions(&self) -> VersionSet {
        // Records hold only encodings this node made, or checked as it received them
        // (`with_encoding`'s contract).
        let versions: Vec<Version> = postcard::from_bytes(self.encoded_versions())
            .expect("a record decodes: its encoding was made or checked by this node");
        VersionSet::from_canonical(versions)
    }

    /// The stored set's postcard encoding, as a [`VersionSet`] encodes.
    pub fn encoded_versions(&self) -> &[u8] {
        let (start, len) = self.key_span();
        &self.0[start + len..]
    }

    // Where the key starts and how long it is.
    fn key_span(&self) -> (usize, usize) {
        let (len, used) = get_varint(&self.0[DIGEST_LEN..]);
        (DIGEST_LEN + used, len as usize)
    }
}

impl Borrow<[u8]> for Record {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Record {}

impl Hash for Record {
    // As the key itself hashes, so that a lookup by key finds its record.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("digest", &self.digest())
            .finish_non_exhaustive()
    }
}

// How many bytes `put_varint` writes for `n`.
fn varint_len(n: u64) -> usize {
    (64 - n.leading_zeros() as usize).div_ceil(7).max(1)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

// The value and the number of bytes it took; only ever reads what `put_varint` wrote.
fn get_varint(bytes: &[u8]) -> (u64, usize) {
    let mut n = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (n, i + 1);
        }
    }
    (n, bytes.len().min(10))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::core::ids::ActorId;
    use crate::core::vclock::{Dot, VClock};

    fn blind(value: &[u8]) -> VersionSet {
        let mut set = VersionSet::new();
        set.write(
            &VClock::new(),
            Dot::new(ActorId::new("n1", 1_795_508_054_566), 1_000_000),
            Some(Bytes::copy_from_slice(value)),
            1_795_508_099_000,
        );
        set
    }

    #[test]
    fn round_trips_key_digest_and_set() {
        let set = blind(&[7; 100]);
        let r = Record::new(b"user0000000042", set.digest(), &set);
        assert_eq!(r.key(), b"user0000000042");
        assert_eq!(r.digest(), set.digest());
        assert_eq!(r.versions(), set);
        assert!(
            r.0.len() <= 14 + 100 + 40,
            "a blind write packs into {} bytes",
            r.0.len()
        );
    }

    #[test]
    fn a_set_of_records_is_a_map_by_key() {
        let mut records = HashSet::new();
        let (one, two) = (blind(b"1"), blind(b"2"));
        records.insert(Record::new(b"k", one.digest(), &one));
        records.insert(Record::new(b"other", 0, &one));
        let old = records.replace(Record::new(b"k", two.digest(), &two));
        assert_eq!(old.map(|r| r.versions()), Some(one.clone()));
        let found = records.get(&b"k"[..]).expect("found by key");
        assert_eq!(found.versions(), two);
        // The same encoding: the replaced record is gone whole.
        assert!(found.0 != Record::new(b"k", one.digest(), &one).0);
        assert!(found.0 == Record::new(b"k", two.digest(), &two).0);
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn varints_round_trip() {
        for n in [0, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(get_varint(&out), (n, out.len()));
            assert_eq!(varint_len(n), out.len());
        }
    }

    proptest! {
        #[test]
        fn any_stored_set_round_trips(
            key in proptest::collection::vec(any::<u8>(), 0..300),
            versions in proptest::collection::vec(crate::core::version::tests::any_version(), 0..8),
        ) {
            let set = VersionSet::from_versions(versions);
            let r = Record::new(&key, set.digest(), &set);
            prop_assert_eq!(r.key(), &key[..]);
            prop_assert_eq!(r.digest(), set.digest());
            let back = r.versions();
            prop_assert_eq!(back.digest(), set.digest());
            let encoded = postcard::to_stdvec(&set).unwrap();
            prop_assert_eq!(r.encoded_versions(), encoded.as_slice());
            prop_assert_eq!(back, set);
        }
    }
}
