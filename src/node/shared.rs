//! State that outlives any one actor of a node, like ETS tables owned by an heir.
//!
//! Actors own the decisions and the timing; what they share lives here, behind cheap
//! snapshots: hot paths read the ring and the membership from `ArcSwap`s, never by messaging
//! the actor that owns them.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use super::anti_entropy::AntiEntropyShared;
use super::forwarding::ForwardLinks;
use super::metrics::Metrics;
use super::peers::Peers;
use super::replicas::ReplicaLinks;
use crate::config::{NodeConfig, QuorumConfig};
use crate::core::hints::HintStore;
use crate::core::ids::{ActorId, NodeId};
use crate::core::membership::Membership;
use crate::core::ring::Ring;
use crate::core::store::Store;

/// A ring as published to readers, with the number of the rebuild that made it.
#[derive(Debug, Default)]
pub struct RingView {
    /// The ring.
    pub ring: Ring,
    /// Rebuild count on this node.
    pub version: u64,
}

/// Everything a node's actors and fronts share.
pub struct NodeShared {
    /// This node's name.
    pub me: NodeId,
    /// The configuration the node started with.
    pub config: NodeConfig,
    /// Quorum settings in force (changeable at runtime).
    pub quorum: ArcSwap<QuorumConfig>,
    /// The stored data.
    pub store: Arc<Store>,
    /// Hints held for unreachable owners.
    hints: Mutex<HintStore>,
    /// The ring readers use; the Ring actor publishes it.
    pub ring: ArcSwap<RingView>,
    /// The membership readers use; the Gossip actor publishes it.
    pub membership: ArcSwap<Membership>,
    /// Connected peers' actors.
    pub peers: Arc<Peers>,
    /// Batched reads and writes to peers' Storage actors.
    pub replicas: ReplicaLinks,
    /// Batching links to peers' coordinators, for forwarded writes.
    pub forwards: ForwardLinks,
    /// Metrics.
    pub metrics: Metrics,
    /// Anti-entropy's digest caches and purge memo.
    pub anti_entropy: AntiEntropyShared,
    /// False in a native client: it holds no data and takes no ring tokens.
    pub storing: bool,
    started: Instant,
}

impl NodeShared {
    /// Shared state for a node starting now with `incarnation`.
    pub fn new(
        config: NodeConfig,
        incarnation: u64,
    ) -> Result<Arc<Self>, crate::config::ConfigError> {
        Self::build(config, incarnation, true)
    }

    /// Shared state of a native client: the same shape, but nothing stored and no ring place.
    pub fn new_client(
        config: NodeConfig,
        incarnation: u64,
    ) -> Result<Arc<Self>, crate::config::ConfigError> {
        Self::build(config, incarnation, false)
    }

    fn build(
        config: NodeConfig,
        incarnation: u64,
        storing: bool,
    ) -> Result<Arc<Self>, crate::config::ConfigError> {
        let me = NodeId::new(&config.name);
        let http = config.http.map(|a| a.to_string()).unwrap_or_default();
        let membership = Membership::new(
            me.clone(),
            config.bind.to_string(),
            http,
            config.vnodes,
            incarnation,
            config.gossip.timeouts,
            0,
        )?;
        let peers = Arc::new(Peers::default());
        Ok(Arc::new(NodeShared {
            store: Arc::new(Store::new(ActorId::new(me.clone(), incarnation))),
            quorum: ArcSwap::from_pointee(config.quorum),
            me,
            config,
            hints: Mutex::new(HintStore::new()),
            ring: ArcSwap::from_pointee(RingView::default()),
            membership: ArcSwap::from_pointee(membership),
            replicas: ReplicaLinks::new(Arc::clone(&peers)),
            forwards: ForwardLinks::new(Arc::clone(&peers)),
            peers,
            metrics: Metrics::default(),
            anti_entropy: AntiEntropyShared::default(),
            storing,
            started: Instant::now(),
        }))
    }

    /// Monotonic milliseconds since the node started: the clock of failure detection.
    pub fn mono_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Wall-clock milliseconds: only for version timestamps, which only prune clocks.
    pub fn wall_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// The hint store. A poisoned lock only means a panic elsewhere mid-update of plain data;
    /// the store stays usable, so take it anyway rather than cascade the panic.
    pub fn hints(&self) -> MutexGuard<'_, HintStore> {
        self.hints.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether requests may be sent to `node`: ourselves, or alive and connected.
    pub fn is_live(&self, node: &NodeId) -> bool {
        *node == self.me
            || (self.membership.load().is_reachable(node) && self.peers.connected(node))
    }
}
