//! The opaque causal context handed to clients: a version vector as a base64url token.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::core::vclock::{PRUNE_LIMIT, VClock};

/// Longest context token accepted (bytes of base64): a pruned clock is far smaller.
pub const MAX_CONTEXT_TOKEN: usize = 16 * 1024;

/// What a client read, to be passed back with the next write of the same key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context(VClock);

/// Why a context token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ContextError {
    /// Not base64url.
    #[error("context is not base64url")]
    NotBase64,
    /// Base64, but not an encoded context.
    #[error("context does not decode to a version vector")]
    Malformed,
    /// Longer than any context this store hands out.
    #[error("context token longer than {MAX_CONTEXT_TOKEN} bytes")]
    TooLong,
}

impl Context {
    /// The context of a client that has read nothing (a blind write).
    pub fn empty() -> Self {
        Context::default()
    }

    /// Wraps a clock, pruned as every stored context is, so that every context handed out
    /// decodes again (a read of many siblings can merge more entries than the limit; pruning
    /// costs at most a spurious sibling, never a lost write).
    pub fn from_clock(mut clock: VClock) -> Self {
        clock.prune(PRUNE_LIMIT);
        Context(clock)
    }

    /// The version vector inside.
    pub fn clock(&self) -> &VClock {
        &self.0
    }

    /// The version vector inside, taken out.
    pub fn into_clock(self) -> VClock {
        self.0
    }

    /// True for a blind write's context.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The token form: base64url (no padding) of the postcard encoding; "" when empty.
    pub fn encode(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        // Serializing a clock into a Vec cannot fail.
        let bytes = postcard::to_stdvec(&self.0).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses a token; the empty string is the empty context.
    pub fn decode(token: &str) -> Result<Self, ContextError> {
        let token = token.trim();
        if token.len() > MAX_CONTEXT_TOKEN {
            return Err(ContextError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| ContextError::NotBase64)?;
        if bytes.is_empty() {
            return Ok(Context::empty());
        }
        let (clock, rest): (VClock, _) =
            postcard::take_from_bytes(&bytes).map_err(|_| ContextError::Malformed)?;
        if !rest.is_empty() {
            return Err(ContextError::Malformed);
        }
        // Every clock we hand out is pruned; a longer one was not made here.
        if clock.len() > PRUNE_LIMIT || clock.exact_len() > PRUNE_LIMIT {
            return Err(ContextError::Malformed);
        }
        Ok(Context(clock))
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::ActorId;
    use crate::core::vclock::Dot;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let mut clock = VClock::new();
        clock.add_dot(&Dot::new(ActorId::new("n1", 3), 7), 99);
        clock.add_dot(&Dot::new(ActorId::new("n2", 1), 2), 5);
        let ctx = Context::from_clock(clock);
        let token = ctx.encode();
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Context::decode(&token), Ok(ctx));
        assert_eq!(Context::decode(""), Ok(Context::empty()));
        assert_eq!(Context::empty().encode(), "");
        assert_eq!(Context::decode("not base64!"), Err(ContextError::NotBase64));
        assert_eq!(Context::decode("AAAA"), Err(ContextError::Malformed));
        assert_eq!(
            Context::decode(&"A".repeat(MAX_CONTEXT_TOKEN + 1)),
            Err(ContextError::TooLong)
        );
    }

    #[test]
    fn every_context_handed_out_decodes_again() {
        // A read merging many writers' contexts, and exact dots, past the limit.
        let mut clock = VClock::new();
        for i in 0..80u64 {
            clock.add_dot(&Dot::new(ActorId::new(format!("n{i}").as_str(), 1), 3), i);
            clock.add_exact(&Dot::new(ActorId::new("x", 1), 10 * i + 5), i);
        }
        let context = Context::from_clock(clock);
        assert!(context.clock().len() <= PRUNE_LIMIT);
        assert!(context.clock().exact_len() <= PRUNE_LIMIT);
        assert_eq!(Context::decode(&context.encode()), Ok(context));
    }
}
