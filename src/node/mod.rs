//! A running node: the supervision tree of actors around the pure core.
//!
//! ```text
//! dynamo.node@NAME (one_for_one supervisor, 10 restarts in 10 s)
//! ├── dynamo.ring@NAME          Ring: rebuilds and publishes the ring snapshot
//! ├── dynamo.storage@NAME       Storage: replica reads and writes (remote)
//! ├── dynamo.gossip@NAME        Gossip: heartbeats, membership, failure detection (remote)
//! ├── dynamo.cluster@NAME       Cluster: NodeServer, mesh, reconnects, peer registry
//! │   └── NodeServer            (ractor_cluster)
//! ├── dynamo.replicator@NAME    Replicator: hint drain and key handoff
//! ├── dynamo.coordinator@NAME   Coordinator: writes handed here, native clients' reads (remote)
//! └── dynamo.anti_entropy@NAME  AntiEntropy: digest rounds, tombstone purges (remote)
//! ```
//!
//! What must outlive an actor lives in the shared `NodeShared`: the storage map, the hints,
//! the handoff's progress, the published ring and membership, anti-entropy's digest caches,
//! the group commit (`syncer`). A restarted actor finds them again and loses only its own
//! bookkeeping of work under way: the Cluster actor its dial backoffs and, with its
//! NodeServer, the sessions; AntiEntropy its place in the purge pass (it starts again from
//! the first candidate). Deliveries the Replicator started go on in tasks of their own and
//! report to `NodeShared`. ractor's registry and process groups are global to the OS process,
//! so one process runs one node (`one_per_process` refuses a second).
//!
//! Beside the actors: the clients ([`NodeClient`] in this process, [`NativeClient`] in a
//! process of its own), the coordination of client requests (`coordinator`), the batching
//! links to peers (`batch`, `replicas`, `forwarding`), who may speak for whom (`sessions`,
//! `origin`, `peers`, `cluster_tls`), the messages on the wire ([`wire`]), the durable engine
//! ([`disk`]) and the metrics. A node serves no HTTP: whoever starts it serves its fronts.

mod anti_entropy;
mod batch;
mod client;
mod client_view;
mod cluster;
mod cluster_send;
mod cluster_stream;
mod cluster_tls;
mod coordinator;
mod digest_caches;
pub mod disk;
mod forwarding;
mod gossip;
mod hand_over;
mod metrics;
mod native;
mod one_per_process;
mod origin;
mod peers;
mod replicas;
mod replicator;
mod resident;
pub use resident::resident_bytes;
mod ring_actor;
mod sessions;
mod shared;
mod short_slice;
mod storage_actor;
mod syncer;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorCell, ActorRef};
use supervisors::{
    ChildSpec, Intensity, Restart, Strategy, Supervisor, SupervisorArgs, SupervisorMsg,
};

pub use client::NodeClient;
pub use native::{NativeClient, NativeConfig, NativeError, NativeService};
pub use peers::Role;

use crate::config::{ConfigUpdate, NodeConfig, QuorumConfig};
use crate::core::hints::HintStore;
use crate::core::ids::{ActorId, NodeId};
use crate::core::store::Store;
use anti_entropy::AntiEntropyActor;
use cluster::ClusterActor;
use coordinator::CoordinatorActor;
use gossip::GossipActor;
use replicator::ReplicatorActor;
use ring_actor::RingActor;
use shared::NodeShared;
use storage_actor::StorageActor;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A listener or actor could not be started.
    #[error("start failed: {0}")]
    Start(String),
    /// The data directory cannot be used (held by another process, another node's,
    /// unreadable, corrupt).
    #[error("data directory: {0}")]
    Storage(String),
    /// A node already runs in this process (named here): one process runs one node.
    #[error(
        "node {0} already runs in this process; one process runs one node (ractor's registry \
         and process groups are global to a process)"
    )]
    AlreadyRunning(String),
}

/// Registered names of a node's actors, so tests and operators can find them.
pub mod names {
    use super::{NodeId, Role};

    /// The root supervisor.
    pub fn root(node: &NodeId) -> String {
        format!("dynamo.node@{node}")
    }
    /// The Ring actor.
    pub fn ring(node: &NodeId) -> String {
        format!("dynamo.ring@{node}")
    }
    /// The Storage actor.
    pub fn storage(node: &NodeId) -> String {
        Role::Storage.actor_name(node)
    }
    /// The Gossip actor.
    pub fn gossip(node: &NodeId) -> String {
        Role::Gossip.actor_name(node)
    }
    /// The Cluster actor.
    pub fn cluster(node: &NodeId) -> String {
        format!("dynamo.cluster@{node}")
    }
    /// The Replicator actor.
    pub fn replicator(node: &NodeId) -> String {
        format!("dynamo.replicator@{node}")
    }
    /// The Coordinator actor.
    pub fn coordinator(node: &NodeId) -> String {
        Role::Coordinator.actor_name(node)
    }
    /// The AntiEntropy actor.
    pub fn anti_entropy(node: &NodeId) -> String {
        Role::AntiEntropy.actor_name(node)
    }
}

/// A running node.
pub struct Node {
    shared: Arc<NodeShared>,
    root: ActorRef<SupervisorMsg>,
    /// Awaits the root supervisor; reports a failure if it ends while nobody stops it.
    watcher: tokio::task::JoinHandle<()>,
    /// This process's place for a node, given back by `stop` only: a `Node` dropped without
    /// a stop leaves its actors running, so it keeps the place.
    slot: std::mem::ManuallyDrop<one_per_process::NodeSlot>,
}

impl Node {
    /// Starts a node and returns once its actors run and its cluster port listens.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        Self::start_under(config, None).await
    }

    /// Starts a node whose root supervisor is a child of `supervisor` (your own actor): a
    /// failure that exhausts the node's restart intensity reaches you as `ActorFailed`.
    pub async fn start_linked(
        config: NodeConfig,
        supervisor: ActorCell,
    ) -> Result<Node, NodeError> {
        Self::start_under(config, Some(supervisor)).await
    }

    async fn start_under(config: NodeConfig, parent: Option<ActorCell>) -> Result<Node, NodeError> {
        config.validate()?;
        let slot =
            one_per_process::NodeSlot::claim(&config.name).map_err(NodeError::AlreadyRunning)?;
        if let Some(paths) = &config.tls {
            crate::tls::NodeTls::load(paths, &config.name)
                .map_err(|e| NodeError::Start(e.to_string()))?;
        }
        // Opened first: a directory another process holds must fail the start before this
        // node takes any port.
        let incarnation = NodeShared::wall_ms();
        let store = match &config.data_dir {
            Some(dir) => Some(open_store(&config, dir.clone(), incarnation).await?),
            None => None,
        };
        // Every start is a new incarnation of the member (gossip tells restarts apart); the
        // actor id that makes dots is the data's: new with in-memory data, kept on disk.
        let shared = match store {
            Some((store, hints)) => {
                let me = NodeId::new(&config.name);
                let incarnation = NodeShared::starting_incarnation(&store, &me, incarnation);
                NodeShared::with_store(config, incarnation, store, hints)?
            }
            None => NodeShared::new(config, incarnation)?,
        };
        let me = shared.me.clone();
        let (root, root_task) = match start_tree(&shared, parent).await {
            Ok(started) => started,
            Err(e) => {
                // Nothing was changed: the clean-stop record goes back, so that the next
                // start still tells data damaged since the last stop.
                close_store(&shared).await;
                return Err(e);
            }
        };
        // Zombie guard: a tree that gave up (restart intensity exceeded) leaves a node that
        // would serve with a frozen ring. Say so: /health turns 503 and the binary exits.
        let watcher = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let _ = root_task.await;
                if !shared.stopping.load(std::sync::atomic::Ordering::Acquire) {
                    shared.fail("the node's actor tree gave up (restart intensity exceeded)");
                }
            })
        };
        tracing::info!(node = %me, bind = %shared.config.bind, http = ?shared.config.http, incarnation, "node started");
        Ok(Node {
            shared,
            root,
            watcher,
            slot: std::mem::ManuallyDrop::new(slot),
        })
    }

    /// The node's name.
    pub fn name(&self) -> &NodeId {
        &self.shared.me
    }

    /// A client that reads and writes through this node.
    pub fn client(&self) -> NodeClient {
        NodeClient::new(Arc::clone(&self.shared))
    }

    /// Changes N, W, R or the timeouts at runtime; returns the settings now in force.
    pub fn update_config(
        &self,
        update: &ConfigUpdate,
    ) -> Result<QuorumConfig, crate::model::ClientError> {
        self.client().update_config(update)
    }

    /// The root supervisor of the node's actors.
    pub fn supervisor(&self) -> &ActorRef<SupervisorMsg> {
        &self.root
    }

    /// Resolves when the node can no longer serve (its actor tree gave up, it was removed
    /// from the cluster, the cluster runs with another N), with the reason. Whoever runs the
    /// node should stop it then: the binary exits with a non-zero code.
    pub async fn failed(&self) -> String {
        self.shared.failed().await
    }

    /// Stops every actor, children first, then closes the store. Stop the fronts serving
    /// this node (its HTTP API) before, so that their requests in flight finish.
    pub async fn stop(self) {
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.root.stop(None);
        let _ = self.watcher.await;
        // The actors are gone; whatever task still writes is refused from here on.
        close_store(&self.shared).await;
        std::mem::ManuallyDrop::into_inner(self.slot).release();
        tracing::info!(node = %self.shared.me, "node stopped");
    }
}

/// Restores the recorded membership and starts the node's actor tree.
async fn start_tree(
    shared: &Arc<NodeShared>,
    parent: Option<ActorCell>,
) -> Result<(ActorRef<SupervisorMsg>, tokio::task::JoinHandle<()>), NodeError> {
    shared
        .restore_membership()
        .map_err(|e| NodeError::Storage(format!("cannot start under this name: {e}")))?;
    let me = &shared.me;
    let args = SupervisorArgs::new(Strategy::OneForOne)
        .with_intensity(Intensity::new(10, Duration::from_secs(10)))
        .child(permanent(shared, names::ring, RingActor))
        .child(permanent(shared, names::storage, StorageActor))
        .child(permanent(shared, names::gossip, GossipActor))
        .child(permanent(shared, names::cluster, ClusterActor))
        .child(permanent(shared, names::replicator, ReplicatorActor))
        .child(permanent(shared, names::coordinator, CoordinatorActor))
        .child(permanent(shared, names::anti_entropy, AntiEntropyActor));
    let started = match parent {
        Some(parent) => Supervisor::start_linked(Some(names::root(me)), args, parent).await,
        None => Supervisor::start(Some(names::root(me)), args).await,
    };
    started.map_err(|e| NodeError::Start(error_chain(&e)))
}

/// Closes the hints and then the store, which records what both hold (a durable store's
/// clean-stop record); every later change is refused.
async fn close_store(shared: &Arc<NodeShared>) {
    let shared = Arc::clone(shared);
    let closed = tokio::task::spawn_blocking(move || {
        let mut hints = shared.hints();
        hints.close();
        shared.store.close(Some(&hints))
    });
    match closed.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the data directory was not closed cleanly"),
        Err(e) => tracing::warn!(error = %e, "closing the store failed"),
    }
}

/// Opens the durable engine in `dir` and the store over it, off the runtime's threads (the
/// open scans every key), and logs how long it took.
async fn open_store(
    config: &NodeConfig,
    dir: std::path::PathBuf,
    incarnation: u64,
) -> Result<(Arc<Store>, HintStore), NodeError> {
    let (fsync, reserve, hint_limits) = (config.fsync, config.min_free_bytes, config.hints);
    let actor = ActorId::new(
        NodeId::new(&config.name),
        NodeShared::first_actor_epoch(incarnation),
    );
    let started = std::time::Instant::now();
    let opened = tokio::task::spawn_blocking(move || {
        let engine = disk::DiskEngine::open(&dir, fsync, reserve)
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        let path = engine.path().display().to_string();
        let journal = engine.hints();
        let mut hints = HintStore::with_limits(hint_limits);
        for hint in journal
            .load()
            .map_err(|e| NodeError::Storage(format!("{path}: {e}")))?
        {
            hints.restore(hint);
        }
        let limits = NodeShared::set_limits();
        let store = Store::open_with_hints(Box::new(engine), actor, limits, Some(&hints))
            .map_err(|e| NodeError::Storage(format!("{path}: {e}")))?;
        Ok::<_, NodeError>((store, hints.with_journal(Box::new(journal))))
    })
    .await
    .map_err(|e| NodeError::Storage(format!("opening the data directory failed: {e}")))?;
    let (opened, hints) = opened?;
    tracing::info!(
        keys = opened.len(),
        hints = hints.len(),
        actor = %opened.actor(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        fsync = ?fsync,
        "data directory opened"
    );
    Ok((Arc::new(opened), hints))
}

/// A child of the node's tree: `actor`, registered under the name `name_of` gives this node,
/// restarted whenever it ends, with the node's shared state as its arguments.
fn permanent<A>(shared: &Arc<NodeShared>, name_of: fn(&NodeId) -> String, actor: A) -> ChildSpec
where
    A: ractor::Actor<Arguments = Arc<NodeShared>> + Clone,
{
    let name = name_of(&shared.me);
    ChildSpec::actor(name, Restart::Permanent, actor, Arc::clone(shared))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
