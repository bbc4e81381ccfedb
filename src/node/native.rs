//! The native client: a process that joins the cluster's ractor_cluster mesh without storing
//! anything, keeps its own view of the membership and the ring, and sends each request
//! straight to the key's replicas: client-driven coordination, as in section 6.4 of the
//! Dynamo paper.
//!
//! Reads are coordinated in the client (R of the N replicas, read repair included), so they
//! skip the hop through a node. Writes go to the first live owner of the key, which makes the
//! dot: a client has no incarnation that outlives it, so it never makes dots itself. When the
//! client's view cannot serve a request (an empty or stale ring, owners it cannot reach) the
//! request goes to any connected node, which coordinates it with its own view.
//!
//! ractor's registry and process groups are global to the OS process: one native client per
//! process, and not in a process that runs a node.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ractor::ActorRef;
use rand::seq::IndexedRandom;
use supervisors::{
    ChildSpec, Intensity, Restart, Strategy, Supervisor, SupervisorArgs, SupervisorMsg,
};

use super::client::NodeClient;
use super::client_view::ClientViewActor;
use super::cluster::ClusterActor;
use super::coordinator;
use super::shared::NodeShared;
use super::wire::{
    CallFailed, CoordinatorMsg, ForwardedRead, ForwardedWrite, Payload, StorageMsg, call,
};
use crate::config::{ConfigUpdate, GossipConfig, NodeConfig, QuorumConfig};
use crate::core::ids::{Key, NodeId};
use crate::core::quorum::{Route, route};
use crate::core::version::VersionSet;
use crate::model::{
    ClientError, Context, GetResult, Health, KvService, MemberInfo, ReadOptions, RingInfo,
    WriteOptions,
};

// A request handed to a node gets this much beyond its own timeout, for the trip back.
const FALLBACK_MARGIN: Duration = Duration::from_millis(250);

/// How a native client finds and joins the cluster.
#[derive(Clone, Debug)]
pub struct NativeConfig {
    /// Cluster (ractor_cluster) addresses of nodes to join through; one is enough.
    pub seeds: Vec<SocketAddr>,
    /// The cluster's handshake secret.
    pub cookie: String,
    /// The client's name in the mesh; `None` picks a unique `client-…` name.
    pub name: Option<String>,
    /// Local IP for the client's connections (and its unused listener); `None`: loopback
    /// when every seed is on loopback, else all interfaces.
    pub bind_ip: Option<IpAddr>,
    /// Quorum settings and timeouts of the client's requests.
    pub quorum: QuorumConfig,
    /// Membership refresh interval and failure-detection timeouts.
    pub gossip: GossipConfig,
    /// How long [`NativeClient::connect`] waits for a ring and sessions to its nodes.
    pub connect_timeout: Duration,
    /// The cluster's TLS (its nodes run with `--tls-*`): the client's own certificate, key
    /// and the CA. The certificate must be for the client's `name`, which is then required.
    pub tls: Option<crate::tls::TlsPaths>,
}

impl NativeConfig {
    /// Defaults (the nodes' defaults) for joining through `seeds`.
    pub fn new(seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        NativeConfig {
            seeds: seeds.into_iter().collect(),
            cookie: "dynamo".into(),
            name: None,
            bind_ip: None,
            quorum: QuorumConfig::default(),
            gossip: GossipConfig::default(),
            connect_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Why a native client could not join.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// No seed to join through.
    #[error("a native client needs at least one seed address")]
    NoSeeds,
    /// A setting was refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// With TLS the client's name must be given: it is the name in its certificate.
    #[error("a native client with TLS needs its name, the DNS name of its certificate")]
    TlsNeedsName,
    /// The TLS material cannot be used.
    #[error("{0}")]
    Tls(String),
    /// The client's actors could not start.
    #[error("native client start failed: {0}")]
    Start(String),
    /// No node answered in time.
    #[error("no ring from seeds {seeds:?} within {waited:?} (wrong address or cookie?)")]
    NoRing {
        /// The seeds tried.
        seeds: Vec<SocketAddr>,
        /// How long the client waited.
        waited: Duration,
    },
}

/// A running native client; [`NativeClient::service`] hands out cheap handles for requests.
pub struct NativeClient {
    service: NativeService,
    root: ActorRef<SupervisorMsg>,
    root_task: tokio::task::JoinHandle<()>,
}

impl NativeClient {
    /// Joins the cluster through `config.seeds` and returns once the client has a ring and a
    /// session to each of its live members (or, at the timeout, to at least one of them).
    pub async fn connect(config: NativeConfig) -> Result<NativeClient, NativeError> {
        let Some(first_seed) = config.seeds.first().copied() else {
            return Err(NativeError::NoSeeds);
        };
        let name = match (&config.name, &config.tls) {
            (Some(name), _) => name.clone(),
            (None, None) => format!("client-{:016x}", rand::random::<u64>()),
            (None, Some(_)) => return Err(NativeError::TlsNeedsName),
        };
        if let Some(paths) = &config.tls {
            crate::tls::NodeTls::load(paths, &name).map_err(|e| NativeError::Tls(e.to_string()))?;
        }
        let bind_ip = config.bind_ip.unwrap_or_else(|| {
            if config.seeds.iter().all(|s| s.ip().is_loopback()) {
                first_seed.ip()
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            }
        });
        let mut node_config = NodeConfig::new(name, SocketAddr::new(bind_ip, 0));
        node_config.seeds = config.seeds.iter().map(SocketAddr::to_string).collect();
        node_config.tls.clone_from(&config.tls);
        node_config.cookie = config.cookie.clone();
        node_config.quorum = config.quorum;
        node_config.gossip = config.gossip;
        node_config.validate()?;
        let shared = NodeShared::new_client(node_config, NodeShared::wall_ms())?;
        let me = shared.me.clone();
        let args = SupervisorArgs::new(Strategy::OneForOne)
            .with_intensity(Intensity::new(10, Duration::from_secs(10)))
            .child(ChildSpec::actor(
                format!("dynamo.client_view@{me}"),
                Restart::Permanent,
                ClientViewActor,
                Arc::clone(&shared),
            ))
            .child(ChildSpec::actor(
                format!("dynamo.cluster@{me}"),
                Restart::Permanent,
                ClusterActor,
                Arc::clone(&shared),
            ));
        let (root, root_task) = Supervisor::start(Some(format!("dynamo.client@{me}")), args)
            .await
            .map_err(|e| NativeError::Start(e.to_string()))?;
        let client = NativeClient {
            service: NativeService {
                node: NodeClient::new(Arc::clone(&shared)),
                shared,
            },
            root,
            root_task,
        };
        let started = Instant::now();
        while !client.service.view_complete() {
            if started.elapsed() >= config.connect_timeout {
                if client.service.shared.ring.load().ring.is_empty() {
                    let seeds = config.seeds.clone();
                    client.stop().await;
                    return Err(NativeError::NoRing {
                        seeds,
                        waited: config.connect_timeout,
                    });
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(client = %client.service.shared.me, "native client joined");
        Ok(client)
    }

    /// A handle for requests; cheap to clone, valid until [`NativeClient::stop`].
    pub fn service(&self) -> NativeService {
        self.service.clone()
    }

    /// The client's name in the mesh.
    pub fn name(&self) -> &NodeId {
        &self.service.shared.me
    }

    /// Leaves the cluster: stops the client's actors and closes its sessions.
    pub async fn stop(self) {
        self.root.stop(None);
        let _ = self.root_task.await;
    }
}

/// Requests through a native client (see the module docs for the routing).
#[derive(Clone)]
pub struct NativeService {
    shared: Arc<NodeShared>,
    node: NodeClient,
}

impl NativeService {
    /// True once the ring is known and every member the client believes alive is connected.
    fn view_complete(&self) -> bool {
        let ring = self.shared.ring.load();
        !ring.ring.is_empty()
            && ring
                .ring
                .nodes()
                .iter()
                .all(|node| self.shared.peers.connected(node))
    }

    /// True when the client's own view has a live owner (or fallback) to send a write to.
    fn can_route_write(&self, key: &[u8]) -> bool {
        let ring = self.shared.ring.load();
        let Ok(preference) = ring.ring.preference_list(key) else {
            return false;
        };
        let n = self.shared.quorum.load().n;
        !matches!(
            route(&self.shared.me, preference, n, |node| self
                .shared
                .is_live(node)),
            Route::Unavailable
        )
    }

    /// A connected node to hand a request to, at random.
    fn any_coordinator(&self) -> Result<(NodeId, ActorRef<CoordinatorMsg>), ClientError> {
        let unconnected = || ClientError::Unavailable("not connected to any node".into());
        let nodes = self.shared.peers.nodes();
        let node = nodes
            .choose(&mut rand::rng())
            .ok_or_else(unconnected)?
            .clone();
        let coordinator = self
            .shared
            .peers
            .coordinator(&node)
            .ok_or_else(unconnected)?;
        Ok((node, coordinator))
    }

    /// Reads through any connected node.
    async fn read_via_node(&self, key: Key, opts: ReadOptions) -> Result<VersionSet, ClientError> {
        let (node, coordinator) = self.any_coordinator()?;
        let timeout =
            Duration::from_millis(self.shared.quorum.load().get_timeout_ms) + FALLBACK_MARGIN;
        let read = ForwardedRead { key, r: opts.r };
        let ask = |reply| CoordinatorMsg::Read(Payload::ok(read), reply);
        match call(&coordinator, ask, timeout).await {
            Ok(answer) => answer,
            Err(CallFailed::Refused(e)) => Err(ClientError::Internal(e)),
            Err(CallFailed::NoAnswer) => Err(no_answer(&node)),
        }
    }

    /// Writes as a coordinator when the client's own view has a live target for the key,
    /// else through any connected node.
    async fn write(
        &self,
        key: Key,
        value: Option<Bytes>,
        context: Context,
        opts: WriteOptions,
    ) -> Result<Context, ClientError> {
        if self.can_route_write(&key) {
            return coordinator::write(&self.shared, key, value, context, opts).await;
        }
        let (node, _) = self.any_coordinator()?;
        let quorum = self.shared.quorum.load();
        let deadline = Instant::now() + Duration::from_millis(quorum.put_timeout_ms);
        let write = ForwardedWrite {
            key,
            value,
            context,
            w: opts.w,
            budget_ms: quorum.put_timeout_ms,
        };
        coordinator::forward(&self.shared, &node, write, deadline)
            .await
            .unwrap_or_else(|| Err(no_answer(&node)))
    }

    /// Sends `payload` to `node`'s Storage actor and back: the bare remote call, for
    /// `bench transport`.
    pub async fn ping(
        &self,
        node: &NodeId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let Some(storage) = self.shared.peers.storage(node) else {
            return Err(ClientError::Unavailable(format!("not connected to {node}")));
        };
        let ping = |reply| StorageMsg::Ping(Payload::ok(payload), reply);
        call(&storage, ping, timeout).await.map_err(|e| match e {
            CallFailed::Refused(e) => ClientError::Internal(e),
            CallFailed::NoAnswer => {
                ClientError::Unavailable(format!("{node} did not answer in time"))
            }
        })
    }

    /// The nodes the client has sessions with.
    pub fn connected_nodes(&self) -> Vec<NodeId> {
        self.shared.peers.nodes()
    }
}

/// The error of a request handed to `node` that brought no answer in time.
fn no_answer(node: &NodeId) -> ClientError {
    ClientError::Unavailable(format!("node {node} did not answer in time"))
}

impl KvService for NativeService {
    async fn get(&self, key: Key, opts: ReadOptions) -> Result<GetResult, ClientError> {
        let set = match coordinator::read_set(&self.shared, key.clone(), opts).await {
            // Reads change nothing, so asking again through a node is always safe.
            Err(ClientError::Unavailable(_) | ClientError::InsufficientReplies(_)) => {
                self.read_via_node(key, opts).await?
            }
            other => other?,
        };
        Ok(GetResult::from_set(&set))
    }

    async fn put(
        &self,
        key: Key,
        value: Bytes,
        context: Option<Context>,
        opts: WriteOptions,
    ) -> Result<Context, ClientError> {
        self.write(key, Some(value), context.unwrap_or_default(), opts)
            .await
    }

    async fn delete(
        &self,
        key: Key,
        context: Option<Context>,
        opts: WriteOptions,
    ) -> Result<(), ClientError> {
        let read = self.get(key.clone(), ReadOptions::default());
        let n = self.shared.quorum.load().n;
        let context = context.unwrap_or_default();
        let Some(context) = coordinator::delete_context(context, opts, n, read).await? else {
            return Ok(());
        };
        self.write(key, None, context, opts).await.map(drop)
    }

    fn node_name(&self) -> String {
        self.shared.me.to_string()
    }

    fn members(&self) -> Vec<MemberInfo> {
        let me = self.shared.me.as_str();
        self.node
            .members()
            .into_iter()
            .filter(|m| m.node != me)
            .collect()
    }

    fn ring(&self) -> RingInfo {
        self.node.ring()
    }

    fn local(&self, _key: &[u8]) -> VersionSet {
        // A client stores nothing.
        VersionSet::new()
    }

    fn update_config(&self, update: ConfigUpdate) -> Result<QuorumConfig, ClientError> {
        self.node.update_config(&update)
    }

    fn config(&self) -> QuorumConfig {
        self.node.quorum()
    }

    fn metrics(&self) -> String {
        self.node.metrics()
    }

    fn health(&self) -> Health {
        let mut health = self.node.health();
        health.members = health.members.saturating_sub(1);
        health.alive = health.alive.saturating_sub(1);
        health
    }

    fn leave(&self) -> Result<MemberInfo, ClientError> {
        Err(ClientError::Conflict(
            "a native client is not a member of the cluster: it has nothing to leave".into(),
        ))
    }

    fn remove(&self, _node: &str) -> Result<MemberInfo, ClientError> {
        Err(ClientError::Conflict(
            "membership changes go through a node (POST /admin/remove/{name} on any node)".into(),
        ))
    }
}
