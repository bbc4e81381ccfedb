//! A sibling set encoded once and shared by every message that carries it.
//!
//! A coordinated write sends the same whole set to every other replica, and a replica read
//! answers with the set as it is stored. Encoded once, the set travels as shared bytes: a
//! copy for another replica is a reference count, not a clone of every version, and a
//! replica read answers with its stored record's bytes without decoding them. The receiver
//! decodes the set when it uses it; bytes that are not a set are a typed error there, and a
//! set that decodes is rebuilt as any set from a peer is (sorted, each dot once, nothing
//! obsolete).

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::version::{Version, VersionSet};

/// At most 5 bytes for a length (postcard's varint of a `u32`).
const LEN_MAX: usize = 5;

/// Why bytes received as a set are not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the sibling set does not decode: {0}")]
pub struct UndecodableSet(postcard::Error);

/// A [`VersionSet`] as its postcard bytes: what replica writes and replica reads carry. On the
/// wire it is one byte string, which a receiver takes without decoding the set inside.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EncodedSet(Bytes);

impl EncodedSet {
    /// Encodes `set`.
    pub fn encode(set: &VersionSet) -> Self {
        // Plain structs into a Vec: no maps with non-string keys, no unknown lengths, no I/O,
        // so the encoding cannot fail; an empty set is all an impossible error could give.
        // Sized first (a pass that writes nothing), so the buffer is allocated once, exactly.
        let size = postcard::experimental::serialized_size(set).unwrap_or(0);
        let bytes = postcard::to_extend(set, Vec::with_capacity(size)).unwrap_or_else(|_| vec![0]);
        EncodedSet(Bytes::from(bytes))
    }

    /// The set whose postcard encoding `bytes` are, as this node's own store wrote them (a
    /// record's versions): shared without decoding them.
    pub fn from_stored(bytes: Bytes) -> Self {
        EncodedSet(bytes)
    }

    /// The set, rebuilt as any set from a peer is; an error when the bytes are not one (or
    /// are followed by anything).
    pub fn decode(&self) -> Result<VersionSet, UndecodableSet> {
        self.decode_as_sent().map(|(set, _)| set)
    }

    /// As [`EncodedSet::decode`], saying too whether the set is exactly what the bytes list
    /// (true for what an honest peer sends): then these bytes are its encoding, to be stored
    /// as they are.
    pub fn decode_as_sent(&self) -> Result<(VersionSet, bool), UndecodableSet> {
        // A set is encoded as its versions alone.
        match postcard::take_from_bytes::<Vec<Version>>(&self.0) {
            Ok((versions, [])) => Ok(VersionSet::from_received(versions)),
            Ok(_) => Err(UndecodableSet(postcard::Error::DeserializeBadEncoding)),
            Err(e) => Err(UndecodableSet(e)),
        }
    }

    /// The encoding's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// An upper bound of this set's size inside an encoded message, its length prefix
    /// included: exact but for the prefix, with no walk over the versions.
    pub fn size_bound(&self) -> usize {
        LEN_MAX + self.0.len()
    }
}

impl fmt::Debug for EncodedSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.decode() {
            Ok(set) => set.fmt(f),
            Err(e) => write!(f, "EncodedSet({} bytes: {e})", self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::ActorId;
    use crate::core::vclock::{Dot, VClock};
    use crate::core::version::Version;
    use proptest::prelude::*;

    fn version(node: &str, counter: u64, seen: &[(&str, u64)]) -> Version {
        let mut context = VClock::new();
        for (n, c) in seen {
            context.add_dot(&Dot::new(ActorId::new(*n, 1), *c), 7);
        }
        Version {
            dot: Dot::new(ActorId::new(node, 1), counter),
            context,
            value: Some(Bytes::from(format!("{node}{counter}"))),
            timestamp_ms: 9,
        }
    }

    #[test]
    fn a_set_round_trips_and_travels_as_one_byte_string() {
        let set = VersionSet::from_versions([version("a", 2, &[("b", 1)]), version("b", 3, &[])]);
        let encoded = EncodedSet::encode(&set);
        assert_eq!(encoded.decode(), Ok(set.clone()));
        // Inside a message: a length, then exactly the set's own encoding.
        let framed = postcard::to_stdvec(&encoded).unwrap();
        assert_eq!(&framed[1..], postcard::to_stdvec(&set).unwrap().as_slice());
        assert!(framed.len() <= encoded.size_bound());
        let back: EncodedSet = postcard::from_bytes(&framed).unwrap();
        assert_eq!(back, encoded);
        assert_eq!(
            EncodedSet::encode(&VersionSet::new()).decode(),
            Ok(VersionSet::new())
        );
    }

    #[test]
    fn a_set_sent_as_a_set_is_taken_as_sent_and_any_other_list_is_rebuilt() {
        let set = VersionSet::from_versions([version("a", 2, &[("b", 1)]), version("b", 3, &[])]);
        let sent = EncodedSet::encode(&set);
        assert_eq!(sent.decode_as_sent(), Ok((set.clone(), true)));
        // Out of order, and with a version the other one's context covers.
        let listed = vec![
            version("b", 3, &[]),
            version("a", 2, &[("b", 1)]),
            version("b", 1, &[]),
        ];
        let bytes = postcard::to_stdvec(&listed).unwrap();
        let sent = EncodedSet::from_stored(Bytes::from(bytes));
        assert_eq!(sent.decode_as_sent(), Ok((set.clone(), false)));
        assert_eq!(sent.decode(), Ok(set));
        let mut trailing = EncodedSet::encode(&VersionSet::new()).as_bytes().to_vec();
        trailing.push(0);
        assert!(
            EncodedSet::from_stored(Bytes::from(trailing))
                .decode_as_sent()
                .is_err()
        );
    }

    #[test]
    fn bytes_that_are_no_set_are_an_error_and_a_set_from_a_peer_is_rebuilt() {
        for garbage in [&[][..], &[3, 9, 9], &[200]] {
            assert!(
                EncodedSet::from_stored(Bytes::copy_from_slice(garbage))
                    .decode()
                    .is_err()
            );
        }
        // A set followed by anything is not a set.
        let mut trailing = postcard::to_stdvec(&VersionSet::new()).unwrap();
        trailing.push(0);
        assert!(
            EncodedSet::from_stored(Bytes::from(trailing))
                .decode()
                .is_err()
        );
        // Unsorted, with an obsolete version: decoded as the set it stands for.
        let (old, new) = (version("a", 1, &[]), version("b", 1, &[("a", 1)]));
        let unsorted = VersionSet::unchecked_for_tests(vec![new.clone(), old]);
        let wire = EncodedSet::from_stored(Bytes::from(postcard::to_stdvec(&unsorted).unwrap()));
        assert_eq!(wire.decode(), Ok(VersionSet::from_versions([new])));
    }

    proptest! {
        #[test]
        fn any_set_round_trips(
            versions in proptest::collection::vec(crate::core::version::tests::any_version(), 0..6),
        ) {
            let set = VersionSet::from_versions(versions);
            prop_assert_eq!(EncodedSet::encode(&set).decode(), Ok(set));
        }
    }
}
