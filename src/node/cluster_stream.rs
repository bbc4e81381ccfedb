//! Cluster connections as this node hands them to ractor_cluster: read through a buffer, and
//! written through [`super::cluster_send`].
//!
//! ractor_cluster reads a frame with two reads of its stream, its length and then its body,
//! so on a plain socket every frame costs two system calls, whatever else has arrived (a
//! node under load took in about six frames per wake-up, and made twelve `recvfrom` calls for
//! them). Handed over as an external stream, a connection is read through a buffer instead:
//! one read of the socket takes in every frame that is there. The framing, the handshake and
//! everything after it are ractor_cluster's, unchanged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::cluster_send::CoalescingWrite;

/// Bytes a connection's read buffer holds: many frames of a burst (replica batches are a
/// few KiB), and larger frames bypass it.
pub const READ_BUFFER: usize = 64 << 10;

/// A connected cluster stream (plain or TLS), ready for the node server.
pub struct ClusterStream {
    read: BoxRead,
    write: BoxWrite,
    peer: SocketAddr,
    local: SocketAddr,
}

impl ClusterStream {
    /// A plain TCP connection, whose Nagle algorithm is already off ([`accept`], the dialler).
    pub fn plain(tcp: TcpStream) -> std::io::Result<Self> {
        let (peer, local) = (tcp.peer_addr()?, tcp.local_addr()?);
        let (read, write) = tcp.into_split();
        Ok(ClusterStream {
            read: Box::new(read),
            write: Box::new(write),
            peer,
            local,
        })
    }

    /// A connection whose TLS handshake is done; `peer` and `local` are its socket's.
    pub fn tls<S>(stream: S, peer: SocketAddr, local: SocketAddr) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        ClusterStream {
            read: Box::new(read),
            write: Box::new(write),
            peer,
            local,
        }
    }

    /// Hands the connection to `server`, as the side that accepted it (`accepted`) or dialled.
    /// The session's `peer_addr` is then the peer's socket address, as for ractor_cluster's
    /// own streams.
    pub fn hand_to(
        self,
        server: &ActorRef<NodeServerMessage>,
        accepted: bool,
    ) -> std::io::Result<()> {
        server
            .cast(NodeServerMessage::ConnectionOpenedExternal {
                stream: Box::new(self),
                is_server: accepted,
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

impl ClusterBidiStream for ClusterStream {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let this = *self;
        (
            Box::new(BufReader::with_capacity(READ_BUFFER, this.read)),
            Box::new(CoalescingWrite::spawn(this.write)),
        )
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.to_string())
    }

    fn local_label(&self) -> Option<String> {
        Some(self.local.to_string())
    }
}

/// Accepts plain connections on `listener` for ever, handing each to `server`.
pub async fn serve_plain(listener: TcpListener, server: ActorRef<NodeServerMessage>) {
    loop {
        let (tcp, peer) = accept(&listener).await;
        if let Err(e) = ClusterStream::plain(tcp).and_then(|s| s.hand_to(&server, true)) {
            tracing::debug!(%peer, error = %e, "cluster connection dropped");
        }
    }
}

/// The next connection of the cluster port, with Nagle's algorithm off (frames are flushed
/// whole, and a small one must not wait for the ack of the last).
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => match tcp.set_nodelay(true) {
                Ok(()) => return (tcp, peer),
                Err(e) => tracing::debug!(%peer, error = %e, "cluster connection dropped"),
            },
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "cluster accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Where ractor_cluster's own listener goes: loopback, on a port of the system's choosing,
/// where no peer dials it. It cannot be turned off; it authenticates as the cluster port does
/// (the cookie), and under TLS it requires a client certificate of our CA while none of its
/// connections has a captured certificate, so its sessions fail the name check.
pub fn internal_listen_ip(bind: IpAddr) -> IpAddr {
    match bind {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}
