//! The errors a client can get, each with a stable kind, one HTTP status and a JSON body. The
//! HTTP server answers with exactly these, so an embedded caller and an HTTP client see the
//! same kind for the same failure.

use serde::{Deserialize, Serialize};

use super::context::ContextError;
use crate::config::ConfigError;
use crate::core::quorum::Shortfall;

/// Why a request did not succeed (serializable: a forwarded write returns it across nodes).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ClientError {
    /// A write got fewer than W acks in time; it may still be applied on some replicas.
    #[error("insufficient acks: {0}")]
    InsufficientAcks(Shortfall),
    /// A read got fewer than R replies in time.
    #[error("insufficient replies: {0}")]
    InsufficientReplies(Shortfall),
    /// The key is not acceptable (e.g. empty).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The key is longer than the limit.
    #[error("key of {size} bytes is longer than the {max}-byte limit")]
    KeyTooLong {
        /// Its length.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The value is larger than the limit.
    #[error("value of {size} bytes is larger than the {max}-byte limit")]
    ValueTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The key's siblings would grow past the set limit: read, merge and write with the context.
    #[error(
        "the key's sibling set would reach {size} bytes (limit {max}); merge its siblings first"
    )]
    SetTooLarge {
        /// The set's size with this write.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The key's siblings would grow past the version limit: read, merge and write with the
    /// context (a context-less write or delete adds a sibling; it never replaces one).
    #[error(
        "the key would hold {versions} versions (limit {max}), tombstones included; merge its siblings first"
    )]
    TooManySiblings {
        /// Versions with this write.
        versions: usize,
        /// The limit.
        max: usize,
    },
    /// The context token could not be used.
    #[error("invalid context: {0}")]
    InvalidContext(#[from] ContextError),
    /// The context claims a write of this node that it never made: it was not read from this
    /// store.
    #[error("invalid context: {0}")]
    ForgedContext(String),
    /// An option (`r`, `w`) or a configuration value is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// No node can serve the key now (empty ring, nobody reachable).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// This node left the cluster or was removed from it: it serves nothing any more.
    #[error("{0}")]
    NotAMember(String),
    /// A membership change names a node that is not known.
    #[error("{0}")]
    UnknownMember(String),
    /// A node cannot be removed while it is alive; it leaves instead.
    #[error("{0}")]
    MemberAlive(String),
    /// A membership change that contradicts where the node stands (removing itself, leaving
    /// after a removal).
    #[error("{0}")]
    Conflict(String),
    /// This node's disk is full: it takes no writes until space is freed (reads go on).
    #[error("insufficient storage: {0}")]
    InsufficientStorage(String),
    /// The node is shutting down or an internal step failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ConfigError> for ClientError {
    fn from(e: ConfigError) -> Self {
        ClientError::InvalidOption(e.to_string())
    }
}

/// The JSON body of an error answer: `{"error": kind, "message": text, ...details}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// Stable, machine-readable kind (e.g. `insufficient_acks`).
    pub error: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Quorum details for `insufficient_*` errors.
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub shortfall: Option<Shortfall>,
}

impl ClientError {
    /// Stable kind name, as used in the HTTP API's JSON errors.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::InsufficientAcks(_) => "insufficient_acks",
            ClientError::InsufficientReplies(_) => "insufficient_replies",
            ClientError::InvalidKey(_) => "invalid_key",
            ClientError::KeyTooLong { .. } => "key_too_long",
            ClientError::ValueTooLarge { .. } => "value_too_large",
            ClientError::SetTooLarge { .. } => "set_too_large",
            ClientError::TooManySiblings { .. } => "too_many_siblings",
            ClientError::InvalidContext(_) | ClientError::ForgedContext(_) => "invalid_context",
            ClientError::InvalidOption(_) => "invalid_option",
            ClientError::Unavailable(_) => "unavailable",
            ClientError::NotAMember(_) => "not_a_member",
            ClientError::UnknownMember(_) => "unknown_member",
            ClientError::MemberAlive(_) => "member_alive",
            ClientError::Conflict(_) => "conflict",
            ClientError::InsufficientStorage(_) => "insufficient_storage",
            ClientError::Internal(_) => "internal",
        }
    }

    /// The HTTP status this error maps to.
    pub fn http_status(&self) -> u16 {
        match self {
            ClientError::InsufficientAcks(_)
            | ClientError::InsufficientReplies(_)
            | ClientError::Unavailable(_)
            | ClientError::NotAMember(_) => 503,
            ClientError::InvalidKey(_)
            | ClientError::InvalidContext(_)
            | ClientError::ForgedContext(_)
            | ClientError::InvalidOption(_) => 400,
            ClientError::UnknownMember(_) => 404,
            ClientError::MemberAlive(_) | ClientError::Conflict(_) => 409,
            ClientError::KeyTooLong { .. }
            | ClientError::ValueTooLarge { .. }
            | ClientError::SetTooLarge { .. }
            | ClientError::TooManySiblings { .. } => 413,
            ClientError::InsufficientStorage(_) => 507,
            ClientError::Internal(_) => 500,
        }
    }

    /// The JSON error body.
    pub fn body(&self) -> ErrorBody {
        let shortfall = match self {
            ClientError::InsufficientAcks(s) | ClientError::InsufficientReplies(s) => Some(*s),
            _ => None,
        };
        ErrorBody {
            error: self.kind(),
            message: self.to_string(),
            shortfall,
        }
    }
}

impl From<crate::core::store::StoreError> for ClientError {
    fn from(e: crate::core::store::StoreError) -> Self {
        use crate::core::engine::EngineError;
        use crate::core::store::StoreError;
        match e {
            StoreError::ForgedContext { .. } => ClientError::ForgedContext(e.to_string()),
            StoreError::SetTooLarge { size, max } => ClientError::SetTooLarge { size, max },
            StoreError::TooManyVersions { versions, max } => {
                ClientError::TooManySiblings { versions, max }
            }
            StoreError::Engine(EngineError::DiskFull(_)) => {
                ClientError::InsufficientStorage(e.to_string())
            }
            StoreError::Sealed => ClientError::NotAMember(e.to_string()),
            StoreError::CounterExhausted | StoreError::Engine(_) => {
                ClientError::Internal(e.to_string())
            }
        }
    }
}

impl From<crate::core::membership::ChangeError> for ClientError {
    fn from(e: crate::core::membership::ChangeError) -> Self {
        use crate::core::membership::ChangeError;
        let text = e.to_string();
        match e {
            ChangeError::Unknown(_) => ClientError::UnknownMember(text),
            ChangeError::Alive(_) => ClientError::MemberAlive(text),
            ChangeError::IsSelf(_) | ChangeError::Final(_) | ChangeError::LastMember => {
                ClientError::Conflict(text)
            }
        }
    }
}
