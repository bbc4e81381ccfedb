//! dynamo-node: a Dynamo-style distributed key-value store built on ractor.
//!
//! Always writable (sloppy quorum, hinted handoff), eventually consistent (read repair,
//! anti-entropy), conflict-aware (dotted version vectors; concurrent writes become siblings
//! you merge), masterless, and durable with a data directory. Run it as a cluster of
//! `dynamo-node` processes, or embed a node in your own ractor application, as here.
//!
//! # Embedding a node
//!
//! ```toml
//! [dependencies]
//! # `default-features = false`: the store alone, without the HTTP API, the command line
//! # and the benchmark (features `http` and `cli`).
//! dynamo-node = { version = "0.1", default-features = false }
//! ractor = { version = "0.16", default-features = false, features = ["cluster", "tokio_runtime"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! Nodes talk over `ractor_cluster`, so this crate turns on ractor's `cluster` feature, and
//! cargo turns it on for your whole build. That feature removes ractor's blanket `Message`
//! impl: every message type of your own actors then needs one, either derived with the
//! re-exported [`RactorMessage`] or written out as `impl ractor::Message for MyMsg {}`.
//!
//! ```
//! #[derive(dynamo_node::RactorMessage)]
//! enum MyMsg {
//!     Ping,
//! }
//! ```
//!
//! A node alone serves reads and writes with the default settings: W and R are capped by
//! the members of the ring, so a cluster smaller than N keeps one copy per member, and a
//! lone node's writes are as durable as that one copy (give it a
//! [`data_dir`](NodeConfig::data_dir) to keep them across restarts). Keys and values may be
//! `&str`, `String`, `&[u8]`, `Vec<u8>` or [`Bytes`] (see [`IntoBytes`]).
//!
//! ```no_run
//! use dynamo_node::{GetResult, Node, NodeConfig};
//!
//! # async fn lone() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::start(NodeConfig::new("n1", "127.0.0.1:7001".parse()?)).await?;
//! let client = node.client();
//! let context = client.put("cart:alice", "milk", None).await?;
//! client.put("cart:alice", "milk, eggs", Some(&context)).await?;
//! if let GetResult::Value { value, .. } = client.get("cart:alice").await? {
//!     assert_eq!(value, "milk, eggs");
//! }
//! node.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! A node joins a cluster through seeds (any member's cluster address), under the
//! application's own supervisor if it likes ([`Node::start_linked`]: a node whose actor tree
//! gives up reaches that supervisor as a failure). Every member must run with the same N.
//!
//! ```no_run
//! use dynamo_node::{Node, NodeConfig};
//!
//! # async fn joined(my_supervisor: ractor::ActorCell) -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = NodeConfig::new("n4", "10.0.0.4:7000".parse()?);
//! config.seeds = vec!["10.0.0.1:7000".into()];
//! config.cookie = std::env::var("DYNAMO_COOKIE")?;
//! config.data_dir = Some("/var/lib/dynamo".into());
//! let node = Node::start_linked(config, my_supervisor).await?;
//! // ... serve ...
//! node.client().leave()?; // hand its keys to the others before it goes for good
//! node.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! One process runs one node: a second [`Node::start`] before the first one's
//! [`Node::stop`] fails with [`NodeError::AlreadyRunning`]. Every setting is a field of
//! [`NodeConfig`] (the timeouts, hint bounds and the rest are in [`config`]); the HTTP API
//! (feature `http`) is served beside a node by whoever starts it: see
//! `http::HttpListener`.
//!
//! # Layers
//!
//! Bottom up: the pure [`core`] and, beside it, [`tls`] (the cluster's certificates); a node's
//! [`config`]; the [`model`] that clients and nodes share; the actors of a running [`node`];
//! and the fronts: the `http` API (feature `http`), the command line, benchmark,
//! local-cluster launcher and shell (feature `cli`), and `testing::TestCluster` (feature
//! `test-cluster`). A module uses only the layers below its own
//! (`tests/integration/layers.rs` checks it against the picture in README.md), so the store
//! embeds without any front.

pub mod config;
pub mod core;
pub mod model;
pub mod node;
pub mod tls;

#[cfg(feature = "cli")]
pub mod bench;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "http")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "cli")]
pub mod process;
#[cfg(feature = "cli")]
pub mod shell;
#[cfg(feature = "test-cluster")]
pub mod testing;

pub use bytes::{self, Bytes};
pub use config::{Fsync, NodeConfig, QuorumConfig};
pub use model::{
    ClientError, Context, GetResult, IntoBytes, KvService, MemberInfo, ReadOptions, WriteOptions,
};
pub use node::{Node, NodeClient, NodeError};
/// Derives `ractor::Message` for a message type of your own actors (see the crate docs).
pub use ractor_cluster::RactorMessage;
/// The OTP-style supervisors a node's actors run under ([`Node::supervisor`] returns one).
pub use supervisors;
