//! dynamo-node: a Dynamo-style distributed key-value store built on ractor.
//!
//! Layers, bottom up: the pure [`core`], the actors of a [`node`], and the fronts: the Rust
//! [`api`], [`http`], and the [`cli`].

pub mod bench;
pub mod cli;
pub mod config;
pub mod core;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod model;
pub mod node;
pub mod process;
pub mod shell;
#[cfg(feature = "test-cluster")]
pub mod testing;
pub mod tls;
