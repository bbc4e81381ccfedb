//! Entry points for fuzzing every decoder that a peer or a client can reach.
//!
//! Each function takes raw bytes, runs them through exactly the code a node runs on what it
//! receives (decode, then the first step that acts on the decoded value), and panics only when
//! a property breaks: a panic inside a decoder is the bug being hunted, and a value that
//! decodes must encode to bytes that decode to the same value. The `fuzz/` crate calls these
//! for long libFuzzer runs; the proptests of this module call them in every test run.

mod anti_entropy;
mod http;
mod storage;
mod wire;

#[cfg(test)]
mod tests;

pub use anti_entropy::{ae_replies, ae_requests};
pub use http::{HttpInput, http_bytes, http_request};
pub use storage::stored_record;
pub use wire::{context_token, gossip_digests, replica_batch, wire_message};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Checks that a decoded value survives a second trip: its encoding decodes, and encodes to
/// the same bytes again (decoders may normalize, so the first bytes can differ from the input).
fn assert_stable<T: Serialize + DeserializeOwned>(decoded: &T) {
    let once = postcard::to_stdvec(decoded).expect("a decoded value encodes");
    let again: T = postcard::from_bytes(&once).expect("an encoded value decodes");
    let twice = postcard::to_stdvec(&again).expect("a decoded value encodes");
    assert_eq!(once, twice, "decode(encode(x)) differs from x");
}

/// Splits `data` into the values of `T` it holds back to back, as far as they decode.
fn decode_sequence<T: DeserializeOwned>(mut data: &[u8], max: usize) -> Vec<T> {
    let mut out = Vec::new();
    while out.len() < max
        && let Ok((value, rest)) = postcard::take_from_bytes::<T>(data)
    {
        out.push(value);
        if rest.len() == data.len() {
            break;
        }
        data = rest;
    }
    out
}
