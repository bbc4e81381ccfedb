//! The Cluster actor: this node's ractor_cluster `NodeServer`, the full mesh of sessions to
//! every known member, and the peer registry fed by process-group events.
//!
//! ractor_cluster neither reconnects nor notices silent peers, so this actor re-dials every
//! member it has no session with, with exponential backoff per address. Outgoing connections
//! are bound to this node's own `--bind` IP, so a firewall rule between two loopback addresses
//! separates exactly those two nodes (that is how tests make partitions).
//!
//! The cluster port is our own listener, and every connection reaches the `NodeServer` through
//! [`super::cluster_stream`] (buffered reads, coalesced sends); with TLS (see
//! [`super::cluster_tls`]) each one runs its handshake first. Seeds may be DNS names, resolved
//! again at each dial (a Kubernetes headless service changes its addresses).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent, pg};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage, RactorMessage,
};
use tokio::net::{TcpListener, TcpSocket};

use super::cluster_stream::{ClusterStream, internal_listen_ip, serve_plain};
use super::cluster_tls::ClusterTls;
use super::origin;
use super::peers::Role;
use super::shared::NodeShared;
use crate::config::MAX_FRAME_BYTES;
use crate::core::ids::NodeId;
use crate::tls::NodeTls;

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
    /// A dial (to a member's address or to a seed) finished.
    Dialed(String, Result<(), String>),
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
    /// Dials in flight and backoffs, by target (a member's address or a seed as given).
    dialing: HashSet<String>,
    backoff: HashMap<String, Backoff>,
    tls: Option<ClusterTls>,
    /// Our listener on `--bind` (none in a native client).
    listener: Option<tokio::task::JoinHandle<()>>,
}

/// Where a dial goes.
#[derive(Clone, Debug)]
enum Target {
    /// A member at a known address: under TLS its certificate must be for its name.
    Member { addr: SocketAddr, name: String },
    /// A seed as given (`ip:port` or `host:port`), resolved at each dial.
    Seed(String),
}

impl Target {
    fn key(&self) -> String {
        match self {
            Target::Member { addr, .. } => addr.to_string(),
            Target::Seed(seed) => seed.clone(),
        }
    }
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
        let tls = match &shared.config.tls {
            Some(paths) => Some(ClusterTls::new(NodeTls::load(paths, &shared.config.name)?)),
            None => None,
        };
        // The NodeServer's own listener is moved out of the way (see `internal_listen_ip`)
        // and ours takes `--bind`, so that every connection goes through `cluster_stream`
        // and, under TLS, runs its handshake in a task of its own. A native client listens
        // on nothing.
        let incoming = match &tls {
            Some(t) => IncomingEncryptionMode::Tls(t.tls.acceptor()),
            None => IncomingEncryptionMode::Raw,
        };
        let our_listener = if shared.storing {
            Some(TcpListener::bind(bind).await?)
        } else {
            None
        };
        let server = NodeServer::new(
            0,
            shared.config.cookie.clone(),
            shared.me.to_string(),
            bind.ip().to_string(),
            Some(incoming),
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(internal_listen_ip(bind.ip()))
        .with_max_inbound_frame_size(MAX_FRAME_BYTES as u64);
        // A new node server has no sessions: whatever the last one had is gone.
        shared.sessions.clear();
        let (server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
        let _ = server.cast(NodeServerMessage::SubscribeToEvents {
            id: format!("dynamo.cluster@{}", shared.me),
            subscription: Box::new(SessionEvents {
                cluster: myself.clone(),
                tls: tls.clone(),
                shared: Arc::clone(&shared),
            }),
        });
        // Started after the subscription, so that no session authenticates unchecked.
        let listener = our_listener.map(|listener| match &tls {
            Some(t) => tokio::spawn(t.clone().serve(listener, server.clone())),
            None => tokio::spawn(serve_plain(listener, server.clone())),
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
            tls,
            listener,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<ClusterMsg>,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        for role in Role::ALL {
            pg::demonitor(role.group().to_string(), myself.get_id());
        }
        // Awaited, so that the port is free again when a restarted actor binds it.
        if let Some(listener) = state.listener.take() {
            listener.abort();
            let _ = listener.await;
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
            ClusterMsg::Dialed(target, result) => {
                state.dialing.remove(&target);
                if let Err(e) = result {
                    tracing::debug!(%target, error = %e, "dial failed");
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
        let mut wanted: Vec<(Target, Instant)> = Vec::new();
        // Members that left or were removed are never dialled again.
        let wanted_members = membership
            .members()
            .filter(|m| m.node != self.shared.me && membership.should_connect(&m.node));
        for member in wanted_members {
            let Ok(addr) = member.cluster_addr.parse::<SocketAddr>() else {
                continue;
            };
            if self.shared.peers.connected(&member.node) {
                self.backoff.remove(&addr.to_string());
            } else {
                // Nodes never dial a client (it is not a member), so a client dials at once.
                let first = if self.shared.me < member.node || !self.shared.storing {
                    now
                } else {
                    now + DIAL_GRACE
                };
                let name = member.node.to_string();
                wanted.push((Target::Member { addr, name }, first));
            }
        }
        if self.shared.peers.nodes().is_empty() {
            let seeds = self.shared.config.seeds.iter();
            wanted.extend(seeds.map(|seed| (Target::Seed(seed.clone()), now)));
        }
        for (target, first) in wanted {
            let key = target.key();
            let is_me =
                matches!(&target, Target::Member { addr, .. } if *addr == self.shared.config.bind);
            if is_me || self.dialing.contains(&key) {
                continue;
            }
            let backoff = self.backoff.entry(key.clone()).or_insert(Backoff {
                next_attempt: first,
                delay: FIRST_BACKOFF,
            });
            if backoff.next_attempt > now {
                continue;
            }
            backoff.next_attempt = now + backoff.delay;
            backoff.delay = (backoff.delay * 2).min(MAX_BACKOFF);
            self.dialing.insert(key.clone());
            let dialer = Dialer {
                server: self.server.clone(),
                bind: self.shared.config.bind,
                tls: self.tls.clone(),
            };
            let me = myself.clone();
            tokio::spawn(async move {
                let result = dialer.dial(&target).await.map_err(|e| e.to_string());
                let _ = me.cast(ClusterMsg::Dialed(key, result));
            });
        }
    }
}

/// What a dial task needs.
struct Dialer {
    server: ActorRef<NodeServerMessage>,
    bind: SocketAddr,
    tls: Option<ClusterTls>,
}

impl Dialer {
    /// Dials a member, or every address a seed resolves to now (but our own).
    async fn dial(&self, target: &Target) -> std::io::Result<()> {
        let (seed, name) = match target {
            Target::Member { addr, name } => return self.dial_addr(*addr, Some(name)).await,
            Target::Seed(seed) => (seed, None),
        };
        let addrs = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::lookup_host(seed.as_str()))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "lookup timed out"))??;
        let mut last = Err(std::io::Error::other(format!(
            "{seed} resolves to no address"
        )));
        for addr in addrs.filter(|a| *a != self.bind) {
            last = self.dial_addr(addr, name).await;
        }
        last
    }

    /// Opens a connection to `addr` from our IP (TLS when on) and hands it to the server.
    async fn dial_addr(&self, addr: SocketAddr, name: Option<&String>) -> std::io::Result<()> {
        let stream = connect_from(self.bind.ip(), addr).await?;
        let stream = match &self.tls {
            Some(tls) => tls.dialled(stream, name.map(String::as_str)).await?,
            None => ClusterStream::plain(stream)?,
        };
        stream.hand_to(&self.server, false)
    }
}

/// Opens a TCP connection to `addr` from `local_ip`.
async fn connect_from(
    local_ip: IpAddr,
    addr: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
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
    Ok(stream)
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

/// The node name a session announced (`name@host`).
fn announced_node(ses: &NodeServerSessionInformation) -> Option<NodeId> {
    let name = &ses.peer_name.as_ref()?.name;
    let node = name.split_once('@').map_or(name.as_str(), |(node, _)| node);
    (!node.is_empty()).then(|| NodeId::new(node))
}

/// Forwards session events of the node server to the Cluster actor, records which session
/// carries which peer, and under TLS checks each session's certificate against the name it
/// announced.
struct SessionEvents {
    cluster: ActorRef<ClusterMsg>,
    tls: Option<ClusterTls>,
    shared: Arc<NodeShared>,
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
        self.shared.sessions.disconnected(ses.node_id);
        if let Some(tls) = &self.tls {
            tls.forget(&ses);
        }
        let _ = self.cluster.cast(ClusterMsg::SessionDown(peer_label(&ses)));
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        // Runs before the session syncs anything: a session killed here never did, and is
        // never recorded as its claimed peer's.
        if let Some(tls) = &self.tls
            && !tls.check_session(&ses, &self.shared.metrics)
        {
            return;
        }
        if let Some(node) = announced_node(&ses) {
            self.shared.sessions.authenticated(ses.node_id, node);
        }
    }

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        if let Some(node) = announced_node(&ses) {
            self.shared.sessions.ready(ses.node_id, node);
        }
        let _ = self.cluster.cast(ClusterMsg::SessionUp(peer_label(&ses)));
    }
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use tokio::sync::mpsc;

    use super::*;

    /// Stands in for the NodeServer: reports the peer address of every stream handed to it.
    struct Handover(mpsc::UnboundedSender<String>);

    impl Actor for Handover {
        type Msg = NodeServerMessage;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _: ActorRef<NodeServerMessage>,
            _: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(
            &self,
            _: ActorRef<NodeServerMessage>,
            msg: NodeServerMessage,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            if let NodeServerMessage::ConnectionOpenedExternal { stream, .. } = msg
                && let Some(peer) = stream.peer_label()
            {
                let _ = self.0.send(peer);
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_seed_given_by_dns_name_is_resolved_and_dialled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let port = listener.local_addr().expect("bound").port();
        let (tx, mut handed) = mpsc::unbounded_channel();
        let (server, _) = Actor::spawn(None, Handover(tx), ()).await.expect("spawn");
        let dialer = Dialer {
            server: server.clone(),
            bind: "127.0.0.1:0".parse().expect("an address"),
            tls: None,
        };
        let seed = Target::Seed(format!("localhost:{port}"));
        let (dialled, accepted) = tokio::join!(dialer.dial(&seed), listener.accept());
        dialled.expect("the name resolves and is dialled");
        accepted.expect("the seed's listener got the connection");
        let peer = tokio::time::timeout(Duration::from_secs(5), handed.recv())
            .await
            .expect("handed over in time")
            .expect("handed over");
        assert!(peer.ends_with(&format!(":{port}")), "{peer}");
        let unknown = Target::Seed("no-such-host.invalid:7000".into());
        assert!(dialer.dial(&unknown).await.is_err());
        server.stop(None);
    }
}
