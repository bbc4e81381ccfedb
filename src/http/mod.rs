//! The HTTP API (axum), served beside a node by whoever starts it, and a typed client of it.
//!
//! Routes, statuses and JSON shapes are those of DESIGN.md "Interfaces"; every error is a
//! JSON object with at least `error` (a stable kind) and `message`.

mod access;
mod client;
mod client_env;
mod escape;
mod failure;
mod front;
mod guard;
mod layers;
mod limits;
mod listen;
mod metrics_text;
mod server;
mod tls;
mod wire;

#[cfg(test)]
mod tests;

pub use access::{HttpAccess, Scope, Token};
pub use client::{ClientAuth, DEFAULT_TIMEOUT, HttpClient, HttpError};
pub use client_env::{ADMIN_TOKEN_ENV, API_TOKEN_ENV, CA_ENV, env_client};
pub use escape::{encode_path, encode_segment};
pub use front::{HttpListener, HttpServer, HttpStartError};
pub use guard::HttpGuard;
pub use limits::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUESTS,
    HttpLimits,
};
pub use listen::ServeOptions;
pub use metrics_text::metric_sum;
pub use server::{BODY_LIMIT, METRICS_CONTENT_TYPE, router, router_with, serve, serve_with};
pub use tls::{TlsFiles, client_config};
pub use wire::{CONTEXT_HEADER, LocalVersionView, WireError};
