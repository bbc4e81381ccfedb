//! The hint journal: hints in the `hints` keyspace, keyed by id, beside the data.
//!
//! A hint is written when it is taken and removed when its owner acknowledged it. It goes to
//! the same fjall journal as the data, so the fsync that acknowledges a batch of replica
//! writes covers the hints among them too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use fjall::Keyspace;

use crate::core::hints::{Hint, HintId, HintJournal};
use crate::core::ids::NodeId;
use crate::core::version::VersionSet;

/// A handle on a durable engine's hints.
#[derive(Clone)]
pub struct DiskHints {
    pub(super) keyspace: Keyspace,
    pub(super) full: Arc<AtomicBool>,
}

impl DiskHints {
    /// Every hint recorded, for the hint store to take back at start. A record that does not
    /// decode is an error: a hint is an acknowledged write.
    pub fn load(&self) -> Result<Vec<Hint>, String> {
        let mut hints = Vec::new();
        for item in self.keyspace.iter() {
            let (id, bytes) = item.into_inner().map_err(|e| format!("{e:?}"))?;
            hints.push(decode(&id, &bytes)?);
        }
        Ok(hints)
    }
}

/// A hint from its journal key and record.
pub(crate) fn decode(id: &[u8], bytes: &[u8]) -> Result<Hint, String> {
    let id = <[u8; 8]>::try_from(id)
        .map(u64::from_be_bytes)
        .map_err(|_| "a hint key is not an id".to_string())?;
    let (owner, key, versions, created_at_ms): (NodeId, Vec<u8>, VersionSet, u64) =
        postcard::from_bytes(bytes).map_err(|e| format!("hint {id} is corrupt: {e}"))?;
    Ok(Hint {
        id: HintId(id),
        owner,
        key: Bytes::from(key),
        versions,
        created_at_ms,
    })
}

/// The journal key and record of `hint`.
pub(crate) fn encode(hint: &Hint) -> Result<([u8; 8], Vec<u8>), String> {
    let record = (
        &hint.owner,
        hint.key.as_ref(),
        &hint.versions,
        hint.created_at_ms,
    );
    let bytes = postcard::to_allocvec(&record).map_err(|e| e.to_string())?;
    Ok((hint.id.0.to_be_bytes(), bytes))
}

impl HintJournal for DiskHints {
    fn record(&self, hint: &Hint) -> Result<(), String> {
        if self.full.load(Ordering::Relaxed) {
            return Err("the disk is full".into());
        }
        let (id, bytes) = encode(hint)?;
        self.keyspace
            .insert(id, bytes)
            .map_err(|e| format!("{e:?}"))
    }

    fn forget(&self, id: HintId) -> bool {
        // A hint that stays behind is delivered again after a restart: a merge, which brings
        // back nothing unless the key was purged in between and the purge forgotten since
        // (the store then records no hints at its clean stop, whose record would be wrong).
        // Trying again later is no use: a failed journal write poisons the whole fjall
        // database, and every write fails until the node restarts.
        match self.keyspace.remove(id.0.to_be_bytes()) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = ?e, "an acknowledged hint stays on disk");
                false
            }
        }
    }
}
