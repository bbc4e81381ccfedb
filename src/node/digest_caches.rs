//! The digests this node shares with each peer, cached between anti-entropy rounds. They live
//! in `NodeShared`, not in the AntiEntropy actor, so that a restarted actor keeps them.

use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::core::anti_entropy::SharedDigests;
use crate::core::ids::NodeId;

/// One cache of shared digests per peer.
#[derive(Default)]
pub struct DigestCaches {
    caches: DashMap<NodeId, Arc<Mutex<SharedDigests>>>,
}

impl DigestCaches {
    /// The cache of the digests `me` shares with `peer`, made empty on first use.
    pub fn of(&self, me: &NodeId, peer: &NodeId) -> Arc<Mutex<SharedDigests>> {
        self.caches
            .entry(peer.clone())
            .or_insert_with(|| Arc::new(Mutex::new(SharedDigests::new(me.clone(), peer.clone()))))
            .clone()
    }

    /// Forgets the caches of the peers `keep` refuses (those no longer in the ring).
    pub fn keep_only(&self, keep: impl Fn(&NodeId) -> bool) {
        self.caches.retain(|peer, _| keep(peer));
    }
}
