//! dynamo-node: a Dynamo-style distributed key-value store built on ractor.
//!
//! The crate is layered as DESIGN.md describes; this release holds the pure [`core`].

pub mod api;
pub mod config;
pub mod core;
