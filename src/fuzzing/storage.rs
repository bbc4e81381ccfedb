//! What a node reads back from its data directory: stored records, the status file and hint
//! records. A damaged file must be refused with an error, never crash the node at start.

use crate::core::encoded_set::EncodedSet;
use crate::node::disk::{hints, record, status};

/// The same bytes as a stored record's value and key, as the status file, and as a hint
/// record (its first 8 bytes taken as the hint's key).
pub fn stored_record(data: &[u8]) {
    let _ = record::summary(data);
    let _ = record::user_key(data);
    if let Ok((digest, set)) = record::decode(data) {
        let encoded = record::encode(digest, &set, EncodedSet::encode(&set).as_bytes());
        assert_eq!(record::decode(&encoded), Ok((digest, set)));
    }
    if let Some(entries) = status::decode(data) {
        assert_eq!(status::decode(&status::encode(&entries)), Some(entries));
    }
    let (id, body) = data.split_at(data.len().min(8));
    if let Ok(hint) = hints::decode(id, body) {
        let (id, body) = hints::encode(&hint).expect("a decoded hint encodes");
        assert_eq!(hints::decode(&id, &body), Ok(hint));
    }
}
