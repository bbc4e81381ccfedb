//! dynamo-node: a Dynamo-style distributed key-value store built on ractor.
//!
//! Layers, bottom up: the pure [`core`]; a node's [`config`]; the [`model`] that clients and
//! nodes share; the actors of a running [`node`]; and the fronts: the [`http`] API (feature
//! `http`), the command line, benchmark, local-cluster launcher and shell (feature `cli`), and
//! `testing::TestCluster` (feature `test-cluster`). With `default-features = false` the crate
//! is the store alone.

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
