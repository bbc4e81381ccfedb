//! The one interface every front talks to: the Rust clients implement it (a node's
//! `NodeClient`, the native client's `NativeService`), and the HTTP server serves whatever
//! implements it, so tests can put a stand-in store behind the real router.

use std::future::Future;

use bytes::Bytes;

use super::context::Context;
use super::error::ClientError;
use super::types::{GetResult, Health, MemberInfo, ReadOptions, RingInfo, WriteOptions};
use crate::config::{ConfigUpdate, QuorumConfig};
use crate::core::ids::Key;
use crate::core::version::VersionSet;

/// A node's key-value service and its admin views.
pub trait KvService: Clone + Send + Sync + 'static {
    /// Reads `key` with R replies (or `opts.r`).
    fn get(
        &self,
        key: Key,
        opts: ReadOptions,
    ) -> impl Future<Output = Result<GetResult, ClientError>> + Send;

    /// Writes `value` with the context of a previous read (`None`: a blind write).
    /// Returns a context that covers the new version.
    fn put(
        &self,
        key: Key,
        value: Bytes,
        context: Option<Context>,
        opts: WriteOptions,
    ) -> impl Future<Output = Result<Context, ClientError>> + Send;

    /// Deletes what `context` covers by writing a tombstone.
    fn delete(
        &self,
        key: Key,
        context: Option<Context>,
        opts: WriteOptions,
    ) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// This node's name.
    fn node_name(&self) -> String;

    /// The membership as this node sees it, by name.
    fn members(&self) -> Vec<MemberInfo>;

    /// The ring as this node sees it.
    fn ring(&self) -> RingInfo;

    /// What this node itself stores for `key`, without asking others.
    fn local(&self, key: &[u8]) -> VersionSet;

    /// Changes N, W, R or the timeouts at runtime; returns the settings now in force.
    fn update_config(&self, update: ConfigUpdate) -> Result<QuorumConfig, ClientError>;

    /// The settings in force.
    fn config(&self) -> QuorumConfig;

    /// Prometheus text exposition of the node's metrics.
    fn metrics(&self) -> String;

    /// Liveness summary.
    fn health(&self) -> Health;

    /// Drains this node: it leaves the ring, hands every key it holds to the other members
    /// and then reports `left`. Returns this node's entry as it is now.
    fn leave(&self) -> Result<MemberInfo, ClientError>;

    /// Declares `node` gone for good: it stops owning anything and the others rebuild its
    /// replicas. Refused while this node sees it alive. Returns its entry as it is now.
    fn remove(&self, node: &str) -> Result<MemberInfo, ClientError>;
}
