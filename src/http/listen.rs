//! The accept loop: a bounded number of connections, a deadline for each request's headers
//! (and for the TLS handshake), HTTPS when asked, and a graceful end.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::access::HttpAccess;
use super::limits::{HttpCounters, HttpLimits};

/// How a server guards itself: who may call it, what it holds at most, and HTTPS.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// The tokens routes need.
    pub access: HttpAccess,
    /// The resource bounds.
    pub limits: HttpLimits,
    /// Serves HTTPS with this acceptor when set.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("access", &self.access)
            .field("limits", &self.limits)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Accepts connections on `listener` and serves `app` on each until `shutdown` completes,
/// then waits for the connections to finish their requests in flight.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    options: &ServeOptions,
    counters: Arc<HttpCounters>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(options.limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was accepted: wait
                    // a moment rather than spin, and go on.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            counters.hit("connections");
            drop(tcp);
            continue;
        };
        let connection = Connection {
            app: app.clone(),
            limits: options.limits,
            counters: Arc::clone(&counters),
            watcher: graceful.watcher(),
        };
        let tls = options.tls.clone();
        let open = counters.connections.clone();
        tokio::spawn(async move {
            open.inc();
            connection.serve(tcp, tls).await;
            open.dec();
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// What one connection's task needs.
struct Connection {
    app: Router,
    limits: HttpLimits,
    counters: Arc<HttpCounters>,
    watcher: Watcher,
}

impl Connection {
    async fn serve(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        // Small answers should leave at once rather than wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let Some(acceptor) = tls else {
            return self.serve_http(tcp).await;
        };
        match tokio::time::timeout(self.limits.header_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => self.serve_http(stream).await,
            Ok(Err(e)) => {
                self.counters.hit("tls_handshake");
                tracing::debug!(error = %e, "TLS handshake failed");
            }
            Err(_) => self.counters.hit("header_timeout"),
        }
    }

    async fn serve_http<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout);
        let service = TowerToHyperService::new(self.app.clone());
        let connection = builder.serve_connection(TokioIo::new(io), service);
        if let Err(e) = self.watcher.watch(connection).await {
            if e.is_timeout() {
                self.counters.hit("header_timeout");
            } else {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
    }
}
