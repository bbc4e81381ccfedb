//! The HTTP API (axum), served by every node.
