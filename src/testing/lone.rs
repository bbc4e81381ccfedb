//! One in-memory replica: the reads and writes of the stand-in services that tests put behind
//! the real HTTP server when they need a store but no node.

use std::sync::Arc;

use bytes::Bytes;

use crate::core::ids::{ActorId, Key};
use crate::core::store::Store;
use crate::core::version::VersionSet;
use crate::model::{ClientError, Context, GetResult};

/// A lone replica (W = R = 1) over one in-memory store; cheap to clone, clones share the
/// store. Writes are coordinated as a node coordinates them, and answered as a node answers.
#[derive(Clone)]
pub struct LoneReplica {
    store: Arc<Store>,
}

impl LoneReplica {
    /// An empty replica whose writes are made as node `name`.
    pub fn new(name: &str) -> Self {
        LoneReplica {
            store: Arc::new(Store::new(ActorId::new(name, 1))),
        }
    }

    /// What a read of `key` answers.
    pub fn get(&self, key: &[u8]) -> GetResult {
        GetResult::from_set(&self.store.get(key))
    }

    /// Writes `value` (`None`: a tombstone) with `context` (`None`: a blind write); answers
    /// with the context a node's write answers with.
    pub fn write(
        &self,
        key: &Key,
        value: Option<Bytes>,
        context: Option<Context>,
    ) -> Result<Context, ClientError> {
        let context = context.unwrap_or_default();
        let written = self.store.coordinate(key, context.clock(), value, 0)?;
        Ok(Context::from_clock(written.answer))
    }

    /// The versions stored for `key`, as `/admin/local` shows them.
    pub fn local(&self, key: &[u8]) -> VersionSet {
        self.store.get(key)
    }

    /// Keys stored.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }
}
