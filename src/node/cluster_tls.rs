//! The cluster port under TLS: our own listener, which runs each handshake in a task of its
//! own with a timeout (ractor_cluster's listener runs them one at a time with none, so one
//! silent client would block every other), and the certificate-name check of sessions.
//!
//! Each handshake keeps the peer's certificate under the connection's peer address, which
//! is the session's `peer_addr`; when the session authenticates, the node name it announced
//! must be a name of that certificate, or the session is killed before it syncs anything.

use std::net::SocketAddr;
use std::sync::Arc;

use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use ractor_cluster::node::NodeServerSessionInformation;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::cluster_stream::{ClusterStream, accept};
use super::metrics::Metrics;
use crate::tls::{NodeTls, PeerCert, PendingCerts, check_node_name};

/// Handshakes in progress at most; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 64;

/// A node's TLS state: the material and the certificates waiting for their sessions.
#[derive(Clone, Debug)]
pub struct ClusterTls {
    /// Acceptor and connectors.
    pub tls: NodeTls,
    /// Certificates by connection, until their session authenticates.
    pub pending: Arc<PendingCerts>,
}

impl ClusterTls {
    /// Wraps loaded material.
    pub fn new(tls: NodeTls) -> ClusterTls {
        ClusterTls {
            tls,
            pending: Arc::default(),
        }
    }

    /// Runs the client side of the handshake on a dialled connection and wraps the stream
    /// for the node server; the certificate waits for the session's check.
    pub async fn dialled(
        &self,
        tcp: TcpStream,
        expected: Option<&str>,
    ) -> std::io::Result<ClusterStream> {
        let (local_addr, peer_addr) = (tcp.local_addr()?, tcp.peer_addr()?);
        let (stream, cert) = self.tls.connect(tcp, peer_addr, expected).await?;
        self.pending.insert(peer_addr.to_string(), cert);
        Ok(ClusterStream::tls(stream, peer_addr, local_addr))
    }

    /// Accepts connections on `listener` for ever, handing each one that completes a
    /// handshake to `server`.
    pub async fn serve(self, listener: TcpListener, server: ActorRef<NodeServerMessage>) {
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let (tcp, peer_addr) = accept(&listener).await;
            let (this, server) = (self.clone(), server.clone());
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = this.accept_one(tcp, peer_addr, &server).await {
                    tracing::debug!(peer = %peer_addr, error = %e, "TLS connection refused");
                }
            });
        }
    }

    async fn accept_one(
        &self,
        tcp: TcpStream,
        peer_addr: SocketAddr,
        server: &ActorRef<NodeServerMessage>,
    ) -> std::io::Result<()> {
        let local_addr = tcp.local_addr()?;
        let (stream, cert) = self.tls.accept(tcp).await?;
        self.pending.insert(peer_addr.to_string(), cert);
        ClusterStream::tls(stream, peer_addr, local_addr).hand_to(server, true)
    }

    /// The check of an authenticated session: true if it may go on. A session whose
    /// certificate is not for the name it announced is killed at once and counted.
    pub fn check_session(&self, ses: &NodeServerSessionInformation, metrics: &Metrics) -> bool {
        let cert: Option<PeerCert> = self.pending.take(&ses.peer_addr);
        let announced = ses.peer_name.as_ref().map_or("", |n| n.name.as_str());
        if check_node_name(announced, cert.as_ref()) {
            return true;
        }
        tracing::warn!(
            peer = %ses.peer_addr,
            announced,
            "closing a cluster session: its certificate is not for the node name it announced"
        );
        metrics.tls_name_mismatches.inc();
        ses.actor.kill();
        false
    }

    /// Forgets the certificate of a session that ended before its check.
    pub fn forget(&self, ses: &NodeServerSessionInformation) {
        self.pending.take(&ses.peer_addr);
    }
}
