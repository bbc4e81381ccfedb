//! The Cluster actor: this node's ractor_cluster `NodeServer`, the full mesh of sessions to
//! every known member, and the peer registry fed by process-group events.
//!
//! ractor_cluster neither reconnects nor notices silent peers, so this actor re-dials every
//! member it has no session with, with exponential backoff per address. Outgoing connections
//! are bound to this node's own `--bind` IP, so a firewall rule between two loopback addresses
//! separates exactly those two nodes (that is how tests make partitions).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent, pg};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage, RactorMessage};
use tokio::net::TcpSocket;

use super::origin;
use super::peers::Role;
use super::shared::NodeShared;
use crate::config::MAX_FRAME_BYTES;
use crate::core::ids::NodeId;

const CONNECT_TICK: Duration = Duration::from_millis(250);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
// Both ends of a missing session would dial at once and ractor_cluster would drop one of the
// two connections; the node whose name sorts first dials at once, the other after this grace.
const DIAL_GRACE: Duration = Duration::from_secs(1);

/// Messages of the Cluster actor.
#[derive(RactorMessage, Debug)]
pub enum ClusterMsg {
    /// Time to dial members without a session.
    ConnectTick,
    /// A dial finished.
    Dialed(SocketAddr, Result<(), String>),
    /// A session was authenticated and synchronized.
    SessionUp(String),
    /// A session ended.
    SessionDown(String),
}

/// Keeps the mesh of cluster sessions.
#[derive(Clone)]
pub struct ClusterActor;

struct Backoff {
    next_attempt: Instant,
    delay: Duration,
}

/// The Cluster actor's state.
pub struct ClusterState {
    shared: Arc<NodeShared>,
    server: ActorRef<NodeServerMessage>,
    dialing: HashSet<SocketAddr>,
    backoff: HashMap<SocketAddr, Backoff>,
}

impl Actor for ClusterActor {
    type Msg = ClusterMsg;
    type State = ClusterState;
    type Arguments = Arc<NodeShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<ClusterMsg>,
        shared: Arc<NodeShared>,
    ) -> Result<ClusterState, ActorProcessingErr> {
        let bind = shared.config.bind;
        let server = NodeServer::new(
            bind.port(),
            shared.config.cookie.clone(),
            shared.me.to_string(),
            bind.ip().to_string(),
            None,
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(bind.ip())
        .with_max_inbound_frame_size(MAX_FRAME_BYTES as u64);
        // A new node server has no sessions: whatever the last one had is gone.
        shared.sessions.clear();
        let (server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
        let _ = server.cast(NodeServerMessage::SubscribeToEvents {
            id: format!("dynamo.cluster@{}", shared.me),
            subscription: Box::new(SessionEvents(myself.clone(), Arc::clone(&shared))),
        });
        for role in Role::ALL {
            pg::monitor(role.group().to_string(), myself.get_cell());
        }
        admit_remote_actors(&shared);
        myself.send_interval(CONNECT_TICK, || ClusterMsg::ConnectTick);
        Ok(ClusterState {
            shared,
            server,
            dialing: HashSet::new(),
            backoff: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<ClusterMsg>,
        _state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        for role in Role::ALL {
            pg::demonitor(role.group().to_string(), myself.get_id());
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ClusterMsg>,
        msg: ClusterMsg,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClusterMsg::ConnectTick => state.dial_missing(&myself),
            ClusterMsg::Dialed(addr, result) => {
                state.dialing.remove(&addr);
                if let Err(e) = result {
                    tracing::debug!(%addr, error = %e, "dial failed");
                }
            }
            ClusterMsg::SessionUp(peer) => {
                tracing::info!(peer = %peer, "cluster session up");
                // Its actors may have synced before the session was known to be ready.
                admit_remote_actors(&state.shared);
            }
            ClusterMsg::SessionDown(peer) => tracing::info!(peer = %peer, "cluster session down"),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ClusterMsg>,
        event: SupervisionEvent,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ProcessGroupChanged(change) => match change {
                pg::GroupChangeMessage::Join(_, _, cells) => {
                    for cell in cells.into_iter().filter(|c| !c.get_id().is_local()) {
                        origin::admit(&state.shared, cell);
                    }
                }
                pg::GroupChangeMessage::Leave(_, _, cells) => {
                    for cell in cells.iter().filter(|c| !c.get_id().is_local()) {
                        state.shared.peers.remove(cell);
                    }
                }
            },
            // The NodeServer is our child: if it dies, so do we, and the supervisor restarts both.
            SupervisionEvent::ActorFailed(who, e) if who.get_id() == state.server.get_id() => {
                return Err(format!("cluster server failed: {e}").into());
            }
            SupervisionEvent::ActorTerminated(who, _, reason)
                if who.get_id() == state.server.get_id() =>
            {
                return Err(format!("cluster server stopped: {reason:?}").into());
            }
            _ => {}
        }
        Ok(())
    }
}

impl ClusterState {
    /// Dials seeds (until some peer is connected) and every member we have no session with.
    fn dial_missing(&mut self, myself: &ActorRef<ClusterMsg>) {
        let membership = self.shared.membership.load();
        let now = Instant::now();
        let mut wanted: Vec<(SocketAddr, Instant)> = Vec::new();
        // Members that left or were removed are never dialled again.
        let wanted_members = membership
            .members()
            .filter(|m| m.node != self.shared.me && membership.should_connect(&m.node));
        for member in wanted_members {
            let Ok(addr) = member.cluster_addr.parse::<SocketAddr>() else {
                continue;
            };
            if self.shared.peers.connected(&member.node) {
                self.backoff.remove(&addr);
            } else {
                // Nodes never dial a client (it is not a member), so a client dials at once.
                let first = if self.shared.me < member.node || !self.shared.storing {
                    now
                } else {
                    now + DIAL_GRACE
                };
                wanted.push((addr, first));
            }
        }
        if self.shared.peers.nodes().is_empty() {
            wanted.extend(self.shared.config.seeds.iter().map(|seed| (*seed, now)));
        }
        for (addr, first) in wanted {
            if addr == self.shared.config.bind || self.dialing.contains(&addr) {
                continue;
            }
            let backoff = self.backoff.entry(addr).or_insert(Backoff {
                next_attempt: first,
                delay: FIRST_BACKOFF,
            });
            if backoff.next_attempt > now {
                continue;
            }
            backoff.next_attempt = now + backoff.delay;
            backoff.delay = (backoff.delay * 2).min(MAX_BACKOFF);
            self.dialing.insert(addr);
            let (server, me, local_ip) = (
                self.server.clone(),
                myself.clone(),
                self.shared.config.bind.ip(),
            );
            tokio::spawn(async move {
                let result = dial(&server, local_ip, addr)
                    .await
                    .map_err(|e| e.to_string());
                let _ = me.cast(ClusterMsg::Dialed(addr, result));
            });
        }
    }
}

/// Opens a TCP connection to `addr` from `local_ip` and hands it to the node server.
async fn dial(
    server: &ActorRef<NodeServerMessage>,
    local_ip: IpAddr,
    addr: SocketAddr,
) -> std::io::Result<()> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if local_ip.is_ipv4() == addr.is_ipv4() && !local_ip.is_unspecified() {
        socket.bind(SocketAddr::new(local_ip, 0))?;
    }
    let stream = tokio::time::timeout(DIAL_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    let (local_addr, peer_addr) = (stream.local_addr()?, stream.peer_addr()?);
    server
        .cast(NodeServerMessage::ConnectionOpened {
            stream: Box::new(ractor_cluster::NetworkStream::Raw {
                peer_addr,
                local_addr,
                stream,
            }),
            is_server: false,
        })
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Takes every remote actor of our process groups its session vouches for into the registry.
fn admit_remote_actors(shared: &NodeShared) {
    for role in Role::ALL {
        for cell in pg::get_members(&role.group().to_string()) {
            if !cell.get_id().is_local() {
                origin::admit(shared, cell);
            }
        }
    }
}

/// Forwards session events of the node server to the Cluster actor, and records which
/// session carries which peer.
struct SessionEvents(ActorRef<ClusterMsg>, Arc<NodeShared>);

/// The node name a session announced (`name@host`).
fn announced_node(ses: &NodeServerSessionInformation) -> Option<NodeId> {
    let name = &ses.peer_name.as_ref()?.name;
    let node = name.split_once('@').map_or(name.as_str(), |(node, _)| node);
    (!node.is_empty()).then(|| NodeId::new(node))
}

fn peer_label(ses: &NodeServerSessionInformation) -> String {
    ses.peer_name
        .as_ref()
        .map(|n| n.name.clone())
        .unwrap_or_else(|| ses.peer_addr.clone())
}

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.1.sessions.disconnected(ses.node_id);
        let _ = self.0.cast(ClusterMsg::SessionDown(peer_label(&ses)));
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        if let Some(node) = announced_node(&ses) {
            self.1.sessions.authenticated(ses.node_id, node);
        }
    }

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        if let Some(node) = announced_node(&ses) {
            self.1.sessions.ready(ses.node_id, node);
        }
        let _ = self.0.cast(ClusterMsg::SessionUp(peer_label(&ses)));
    }
}
