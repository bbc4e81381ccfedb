//! What users of the store see: results, errors, contexts, and the service every front
//! (Rust client, HTTP, CLI) is written against.

mod context;
mod error;
mod into_bytes;
mod service;
mod types;

pub use context::{Context, ContextError, MAX_CONTEXT_TOKEN};
pub use error::ClientError;
pub use into_bytes::IntoBytes;
pub use service::KvService;
pub use types::{
    GetResult, Health, MemberInfo, ReadOptions, RingInfo, RingNodeInfo, WriteOptions, validate_key,
    validate_value,
};
