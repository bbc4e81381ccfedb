//! The HTTP API beside a running node: bound by whoever starts the node (the binary, an
//! embedding application), served on the node's client, stopped before the node.
//!
//! Binding comes first and apart from serving, so that a taken port or an unusable HTTPS
//! certificate fails before the node starts, and so that the node can announce the address
//! really bound when port 0 was asked for.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::guard::HttpGuard;
use super::listen::ServeOptions;
use super::server::serve_with;
use crate::model::KvService;

/// Why the HTTP API could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum HttpStartError {
    /// The HTTPS certificate or key cannot be used.
    #[error("HTTPS: {0}")]
    Tls(String),
    /// The address cannot be bound.
    #[error("HTTP address {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A bound HTTP listener with its guard loaded, not serving yet.
pub struct HttpListener {
    listener: TcpListener,
    options: ServeOptions,
    addr: SocketAddr,
}

impl HttpListener {
    /// Loads the guard's HTTPS files, then binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, guard: &HttpGuard) -> Result<Self, HttpStartError> {
        let options = guard.serve_options().map_err(HttpStartError::Tls)?;
        let bind_error = |source| HttpStartError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(HttpListener {
            listener,
            options,
            addr,
        })
    }

    /// The address really bound: the one a node should announce to its peers.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the API of `service` (usually `node.client()`) until [`HttpServer::stop`].
    pub fn serve<S: KvService>(self, service: S) -> HttpServer {
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(
            self.listener,
            service,
            self.options,
            async move {
                let _ = stop.await;
            },
        ));
        HttpServer {
            addr: self.addr,
            shutdown,
            task,
        }
    }
}

/// A running HTTP API.
pub struct HttpServer {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets the requests in flight finish, and returns once it has ended.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
        }
    }
}
