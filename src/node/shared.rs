//! State that outlives any one actor of a node, like ETS tables owned by an heir.
//!
//! Actors own the decisions and the timing; what they share lives here, behind cheap
//! snapshots: hot paths read the ring and the membership from `ArcSwap`s, never by messaging
//! the actor that owns them.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use ractor::ActorRef;
use tokio::sync::watch;

use super::digest_caches::DigestCaches;
use super::forwarding::ForwardLinks;
use super::hand_over::HandOver;
use super::metrics::Metrics;
use super::peers::Peers;
use super::replicas::ReplicaLinks;
use super::sessions::Sessions;
use super::syncer::Syncer;
use crate::config::{Fsync, MAX_SET_BYTES, MAX_SET_VERSIONS, NodeConfig, QuorumConfig};
use crate::core::engine::EngineError;
use crate::core::handoff::Handoff;
use crate::core::hints::{HintStore, SharedHints};
use crate::core::ids::{ActorId, NodeId};
use crate::core::membership::{MemberDigest, Membership, RingChange, RingStatus};
use crate::core::replica::LocalReplica;
use crate::core::ring::Ring;
use crate::core::store::{SetLimits, Store, StoreError};
use crate::core::view::View;

/// A ring as published to readers, with the number of the rebuild that made it.
#[derive(Debug, Default)]
pub struct RingView {
    /// The ring.
    pub ring: Ring,
    /// Rebuild count on this node.
    pub version: u64,
}

/// Actor ids of one life of a node: its incarnation shifted left, so that the epochs the
/// store takes during that life (one per handoff that drops its own writes, or per forged
/// claim it sees) never reach the actor ids of a later life.
const EPOCH_BITS: u32 = 20;

/// The metadata entry a durable node keeps its membership in.
const META_MEMBERSHIP: &str = "membership";

// What of a member is written to disk again when it changes: who, where, its ring tokens
// (the ring is built from them), its ring status. Not heartbeats.
type PersistedMember = (NodeId, String, String, u32, RingStatus);

/// Messages of the Ring actor; defined here because `NodeShared` sends the one it needs when
/// a membership change moves the ring.
#[derive(ractor_cluster::RactorMessage, Debug)]
pub enum RingMsg {
    /// The ring members changed: rebuild from the published membership.
    Rebuild,
}

/// Everything a node's actors and fronts share.
pub struct NodeShared {
    /// This node's name.
    pub me: NodeId,
    /// The configuration the node started with.
    pub config: NodeConfig,
    /// Quorum settings in force (changeable at runtime, N excepted).
    pub quorum: ArcSwap<QuorumConfig>,
    /// The stored data.
    pub store: Arc<Store>,
    /// What writes applied here wait for before they count as acks.
    durability: Durability,
    /// Hints held for unreachable owners.
    pub hints: SharedHints,
    /// Where the handoff of keys this node no longer owns stands.
    handoff: Mutex<Handoff>,
    /// The ring readers use; the Ring actor publishes it.
    pub ring: ArcSwap<RingView>,
    /// The authoritative membership: changed by gossip and by an operator's leave or remove.
    membership_owner: Mutex<Membership>,
    /// The membership readers use, republished after every change.
    pub membership: ArcSwap<Membership>,
    /// Connected peers' actors.
    pub peers: Arc<Peers>,
    /// Which session carries which peer, and the tokens that vouch for senders.
    pub sessions: Sessions,
    /// Batched reads and writes to peers' Storage actors.
    pub replicas: ReplicaLinks,
    /// Batching links to peers' coordinators, for forwarded writes.
    pub forwards: ForwardLinks,
    /// Metrics.
    pub metrics: Metrics,
    /// Anti-entropy's digest caches.
    pub digest_caches: DigestCaches,
    /// False in a native client: it holds no data and takes no ring tokens.
    pub storing: bool,
    /// Why the node can no longer serve, once it cannot.
    fatal: watch::Sender<Option<String>>,
    /// Set when the node is being stopped on purpose: its actors ending then is no failure.
    pub stopping: AtomicBool,
    started: Instant,
    /// The membership layout last written to a durable engine.
    persisted_layout: Mutex<Vec<PersistedMember>>,
}

impl NodeShared {
    /// Shared state for a node starting now with `incarnation`, its data in memory.
    pub fn new(
        config: NodeConfig,
        incarnation: u64,
    ) -> Result<Arc<Self>, crate::config::ConfigError> {
        Self::build(config, incarnation, true, None)
    }

    /// Shared state for a node starting now with `incarnation` over an opened `store` and
    /// the `hints` it kept.
    pub fn with_store(
        config: NodeConfig,
        incarnation: u64,
        store: Arc<Store>,
        hints: HintStore,
    ) -> Result<Arc<Self>, crate::config::ConfigError> {
        Self::build(config, incarnation, true, Some((store, hints)))
    }

    /// Shared state of a native client: the same shape, but nothing stored and no ring place.
    pub fn new_client(
        config: NodeConfig,
        incarnation: u64,
    ) -> Result<Arc<Self>, crate::config::ConfigError> {
        Self::build(config, incarnation, false, None)
    }

    fn build(
        config: NodeConfig,
        incarnation: u64,
        storing: bool,
        opened: Option<(Arc<Store>, HintStore)>,
    ) -> Result<Arc<Self>, crate::config::ConfigError> {
        let me = NodeId::new(&config.name);
        let http = config.http.map(|a| a.to_string()).unwrap_or_default();
        // A node started with seeds joins a cluster: it owns nothing until it met it. A node
        // started alone makes a cluster of its own.
        let ring = if config.seeds.is_empty() && storing {
            RingStatus::Valid
        } else {
            RingStatus::Joining
        };
        let membership = Membership::new(
            me.clone(),
            config.bind.to_string(),
            http,
            config.vnodes,
            incarnation,
            config.gossip.timeouts,
            0,
        )?
        .with_ring(ring)
        .with_n(u32::try_from(config.quorum.n).unwrap_or(u32::MAX));
        let peers = Arc::new(Peers::default());
        let limits = Self::set_limits();
        let (store, hints) = opened.unwrap_or_else(|| {
            let actor = ActorId::new(me.clone(), Self::first_actor_epoch(incarnation));
            let store = Arc::new(Store::with_limits(actor, limits));
            (store, HintStore::with_limits(config.hints))
        });
        let durability = Durability::of(&store, config.fsync);
        let (fatal, _) = watch::channel(None);
        let metrics = Metrics::default();
        Ok(Arc::new(NodeShared {
            store,
            durability,
            quorum: ArcSwap::from_pointee(config.quorum),
            hints: SharedHints::from_store(hints),
            handoff: Mutex::new(Handoff::new()),
            me,
            config,
            ring: ArcSwap::from_pointee(RingView::default()),
            membership: ArcSwap::from_pointee(membership.clone()),
            membership_owner: Mutex::new(membership),
            replicas: ReplicaLinks::new(Arc::clone(&peers), metrics.link_queue_full("storage")),
            forwards: ForwardLinks::new(Arc::clone(&peers), metrics.link_queue_full("coordinator")),
            peers,
            sessions: Sessions::default(),
            metrics,
            digest_caches: DigestCaches::default(),
            storing,
            fatal,
            stopping: AtomicBool::new(false),
            started: Instant::now(),
            persisted_layout: Mutex::new(Vec::new()),
        }))
    }

    /// The first actor id epoch of a life with `incarnation`.
    pub fn first_actor_epoch(incarnation: u64) -> u64 {
        incarnation.saturating_mul(1 << EPOCH_BITS)
    }

    /// The set limits of a node's store.
    pub fn set_limits() -> SetLimits {
        SetLimits {
            max_bytes: MAX_SET_BYTES,
            max_versions: MAX_SET_VERSIONS,
        }
    }

    /// True when writes applied here are acknowledged only once [`NodeShared::after_sync`]
    /// answered: on a durable engine, after an fsync (`--fsync always`) or a hand-over to the
    /// OS (`--fsync never`) covers them.
    pub fn ack_after_sync(&self) -> bool {
        !matches!(self.durability, Durability::Memory)
    }

    /// Makes the store's changes so far count as an acknowledged write's do (see
    /// [`Self::after_sync`]): fsynced, handed to the OS, or at once in memory.
    pub async fn sync_store(&self) -> Result<(), StoreError> {
        super::syncer::awaited(
            |done| self.after_sync(done),
            || EngineError::Failed("the store's sync went away".into()).into(),
        )
        .await
    }

    /// Calls `done` once the store's changes so far count for an ack: after an fsync shared
    /// with the writes waiting at the same time (`--fsync always`), after a hand-over to the
    /// OS shared with the writes of the same turn (`--fsync never`), at once in memory.
    /// `done` may run on the node's fsync thread or a task of its runtime: it must only hand
    /// the outcome on (send a reply).
    pub fn after_sync(&self, done: impl FnOnce(Result<(), StoreError>) + Send + 'static) {
        let done = move |outcome: Result<(), EngineError>| done(outcome.map_err(Into::into));
        match &self.durability {
            Durability::Fsync(syncer) => syncer.after_sync(done),
            Durability::HandOver(hand_over) => hand_over.after(done),
            Durability::Memory => done(Ok(())),
        }
    }

    /// Monotonic milliseconds since the node started: the clock of failure detection.
    pub fn mono_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Wall-clock milliseconds: for version timestamps (clock pruning, purge grace) and
    /// incarnations; never for ordering.
    pub fn wall_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// The hint store.
    pub fn hints(&self) -> MutexGuard<'_, HintStore> {
        self.hints.lock()
    }

    /// The handoff's progress.
    pub fn handoff(&self) -> MutexGuard<'_, Handoff> {
        self.handoff.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether requests may be sent to `node`: ourselves, or alive and connected.
    pub fn is_live(&self, node: &NodeId) -> bool {
        *node == self.me
            || (self.membership.load().is_reachable(node) && self.peers.connected(node))
    }

    /// This node's ring status.
    pub fn ring_status(&self) -> RingStatus {
        self.membership.load().own().ring
    }

    /// Runs `f` with this node's routing view: the published ring, N, and liveness.
    pub fn with_view<T>(&self, f: impl FnOnce(&View<'_>, &RingView) -> T) -> T {
        let ring = self.ring.load();
        let live = |node: &NodeId| self.is_live(node);
        let view = View {
            me: &self.me,
            ring: &ring.ring,
            n: self.quorum.load().n,
            live: &live,
        };
        f(&view, &ring)
    }

    /// This node's data as the replica side of requests sees it.
    pub fn local(&self) -> LocalReplica<'_> {
        LocalReplica {
            me: &self.me,
            store: &self.store,
            hints: &self.hints,
            member: !self.ring_status().is_final(),
            now_ms: self.mono_ms(),
            ack_after_sync: self.ack_after_sync(),
        }
    }

    /// Changes the membership under its lock and publishes the result: readers get a new
    /// snapshot, the Ring actor rebuilds when the ring layout changed, and ring status
    /// changes are logged. Returns what `change` returned.
    pub fn change_membership<T>(&self, change: impl FnOnce(&mut Membership) -> T) -> T {
        let mut owner = self
            .membership_owner
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let version = owner.version();
        let result = change(&mut owner);
        let ring_changed = owner.version() != version;
        self.persist_membership(&owner);
        self.membership.store(Arc::new(owner.clone()));
        drop(owner);
        if ring_changed {
            match ActorRef::<RingMsg>::where_is(super::names::ring(&self.me)) {
                Some(ring) => {
                    let _ = ring.cast(RingMsg::Rebuild);
                }
                // The Ring actor is restarting; its pre_start reads the table just published.
                None => tracing::debug!("ring actor not running; it rebuilds when it starts"),
            }
        }
        result
    }

    /// The incarnation of a node named `me` starting at `wall_ms` over `store`: past the one
    /// its data recorded for it when the clock is now behind it (a machine whose clock has
    /// not synced yet after a boot, a VM restored from a snapshot). Peers ignore every entry
    /// of an incarnation older than one they know, so a node restarted behind its old
    /// incarnation would never be heard again.
    pub fn starting_incarnation(store: &Store, me: &NodeId, wall_ms: u64) -> u64 {
        let recorded = recorded_membership(store)
            .ok()
            .flatten()
            .and_then(|digest| digest.into_iter().find(|m| &m.node == me))
            .map(|own| own.incarnation);
        match recorded {
            Some(recorded) if recorded >= wall_ms => recorded.saturating_add(1),
            _ => wall_ms,
        }
    }

    /// Takes back the membership this node recorded on disk before it stopped: its peers and
    /// every ring status, its own included. Refuses to go on under a name that left the
    /// cluster or was removed from it.
    pub fn restore_membership(&self) -> Result<(), String> {
        let engine = self.store.engine();
        if !engine.durable() {
            return Ok(());
        }
        let Some(digest) = recorded_membership(&self.store)? else {
            // A first start: record where this node stands (its N, its ring status) now, so
            // that a restart finds it even if no peer ever changes it.
            let owner = self
                .membership_owner
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.persist_membership(&owner);
            return Ok(());
        };
        // Another N would build other preference lists over the same data.
        let n = self.quorum.load().n;
        if let Some(own) = digest.iter().find(|m| m.node == self.me)
            && usize::try_from(own.n).ok() != Some(n)
        {
            return Err(format!(
                "this data belongs to a cluster with n = {}, the node was started with n = {n}: start it with --n {}",
                own.n, own.n
            ));
        }
        let report = self.change_membership(|m| m.restore(&digest, self.mono_ms()));
        match report.fatal {
            Some(fatal) => Err(fatal.to_string()),
            None => Ok(()),
        }
    }

    // Writes the membership to a durable engine when who is in it, where, with how many ring
    // tokens, or with which ring status changed (not for heartbeats: that would be an fsync
    // per gossip message).
    fn persist_membership(&self, membership: &Membership) {
        let engine = self.store.engine();
        if !engine.durable() {
            return;
        }
        let digest = membership.digest();
        let layout: Vec<PersistedMember> = digest
            .iter()
            .map(|m| {
                (
                    m.node.clone(),
                    m.cluster_addr.clone(),
                    m.http_addr.clone(),
                    m.vnodes,
                    m.ring,
                )
            })
            .collect();
        let mut persisted = self
            .persisted_layout
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *persisted == layout {
            return;
        }
        let Ok(bytes) = postcard::to_allocvec(&digest) else {
            return;
        };
        match engine.set_meta(META_MEMBERSHIP, &bytes) {
            Ok(()) => *persisted = layout,
            Err(e) => tracing::warn!(error = %e, "could not record the membership on disk"),
        }
    }

    /// Logs ring status changes.
    pub fn log_ring_changes(&self, changes: &[RingChange]) {
        for change in changes {
            match change.from {
                Some(from) => {
                    tracing::info!(node = %change.node, %from, to = %change.to, "ring status changed")
                }
                None => tracing::info!(node = %change.node, to = %change.to, "member joined"),
            }
        }
    }

    /// Marks the node as unable to serve, for `reason`: `/health` answers 503 and whoever
    /// runs the node (the binary) is told, so that it exits instead of serving on.
    pub fn fail(&self, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::error!(node = %self.me, %reason, "the node can no longer serve");
        self.fatal.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(reason);
            true
        });
    }

    /// Why the node can no longer serve, if it cannot.
    pub fn failure(&self) -> Option<String> {
        self.fatal.borrow().clone()
    }

    /// Waits until the node can no longer serve, and says why.
    pub async fn failed(&self) -> String {
        let mut rx = self.fatal.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`: unreachable, but never spin.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// What a write applied on this node waits for before it counts as an ack.
enum Durability {
    /// Nothing: the store forgets everything at a restart anyway.
    Memory,
    /// A hand-over of the engine's buffer to the OS (`--fsync never`): survives a process kill.
    HandOver(HandOver),
    /// An fsync (`--fsync always`): survives a power loss.
    Fsync(Syncer),
}

/// The membership a durable store recorded, if it recorded one.
fn recorded_membership(store: &Store) -> Result<Option<Vec<MemberDigest>>, String> {
    let Some(bytes) = store
        .engine()
        .meta(META_MEMBERSHIP)
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    postcard::from_bytes(&bytes)
        .map(Some)
        .map_err(|_| "the stored membership is corrupt".to_string())
}

impl Durability {
    fn of(store: &Arc<Store>, fsync: Fsync) -> Self {
        if !store.engine().durable() {
            return Durability::Memory;
        }
        let persist = {
            let store = Arc::clone(store);
            Arc::new(move || store.engine().sync())
        };
        match fsync {
            Fsync::Always => Durability::Fsync(Syncer::new(persist, super::syncer::ROUND_SPACING)),
            Fsync::Never => Durability::HandOver(HandOver::new(persist)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::NodeShared;
    use crate::config::{Fsync, NodeConfig};
    use crate::core::hints::HintStore;
    use crate::core::ids::{ActorId, NodeId};
    use crate::core::membership::MemberDigest;
    use crate::core::store::{SetLimits, Store};
    use crate::node::disk::DiskEngine;
    use crate::testing::TempDir;

    #[test]
    fn a_node_restarted_behind_its_recorded_incarnation_starts_past_it() {
        let dir = TempDir::new("shared-incarnation");
        let open = || {
            let engine = DiskEngine::open(dir.path(), Fsync::Always, 0).unwrap();
            Arc::new(Store::open(Box::new(engine), ActorId::new("n1", 1), SetLimits::NONE).unwrap())
        };
        let config = || NodeConfig::new("n1", "127.0.0.1:0".parse().unwrap());
        let me = NodeId::new("n1");
        let first = NodeShared::with_store(config(), 1_000, open(), HintStore::default()).unwrap();
        first.restore_membership().unwrap();
        drop(first);

        let store = open();
        // The clock went back 500 ms since the last start: the node starts past it all the same.
        let incarnation = NodeShared::starting_incarnation(&store, &me, 500);
        assert_eq!(incarnation, 1_001);
        assert_eq!(NodeShared::starting_incarnation(&store, &me, 2_000), 2_000);
        assert_eq!(
            NodeShared::starting_incarnation(&store, &NodeId::new("n2"), 500),
            500
        );
        let second =
            NodeShared::with_store(config(), incarnation, store, HintStore::default()).unwrap();
        second.restore_membership().unwrap();
        assert_eq!(second.membership.load().own().incarnation, 1_001);
    }

    #[test]
    fn a_peer_that_restarted_with_other_ring_tokens_is_recorded_with_them() {
        let dir = TempDir::new("shared-vnodes");
        let engine = DiskEngine::open(dir.path(), Fsync::Always, 0).unwrap();
        let store = Arc::new(
            Store::open(Box::new(engine), ActorId::new("n1", 1), SetLimits::NONE).unwrap(),
        );
        let config = NodeConfig::new("n1", "127.0.0.1:0".parse().unwrap());
        let shared = NodeShared::with_store(config, 1_000, store, HintStore::default()).unwrap();
        shared.restore_membership().unwrap();
        let mut peer = shared.membership.load().own().digest();
        peer.node = NodeId::new("n2");
        peer.vnodes = 64;
        shared.change_membership(|m| m.merge(std::slice::from_ref(&peer), 0));
        peer.incarnation += 1;
        peer.vnodes = 128;
        shared.change_membership(|m| m.merge(std::slice::from_ref(&peer), 0));
        let recorded = shared
            .store
            .engine()
            .meta(super::META_MEMBERSHIP)
            .unwrap()
            .unwrap();
        let recorded: Vec<MemberDigest> = postcard::from_bytes(&recorded).unwrap();
        let n2 = recorded.iter().find(|m| m.node == peer.node).unwrap();
        assert_eq!(n2.vnodes, 128);
    }
}
