//! The embedded Rust client of a node: requests coordinated in the node's own process, with
//! no hop and no serialisation. It is also what the node's fronts serve (the HTTP API calls
//! it), so every request, whatever its front, is counted and traced here once.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::coordinator;
use super::metrics::RequestLabels;
use super::shared::NodeShared;
use crate::config::{ConfigUpdate, QuorumConfig};
use crate::core::hash::stable_hash;
use crate::core::ids::{Key, NodeId};
use crate::core::membership::Status;
use crate::core::version::VersionSet;
use crate::model::{
    ClientError, Context, GetResult, Health, IntoBytes, KvService, MemberInfo, ReadOptions,
    RingInfo, RingNodeInfo, WriteOptions,
};

/// Reads and writes through the node it came from (`Node::client`); cheap to clone.
#[derive(Clone)]
pub struct NodeClient {
    shared: Arc<NodeShared>,
}

impl NodeClient {
    pub(crate) fn new(shared: Arc<NodeShared>) -> Self {
        NodeClient { shared }
    }

    /// Reads `key` with the configured R.
    pub async fn get(&self, key: impl IntoBytes) -> Result<GetResult, ClientError> {
        self.get_with(key, ReadOptions::default()).await
    }

    /// Reads `key` with per-request options.
    pub async fn get_with(
        &self,
        key: impl IntoBytes,
        opts: ReadOptions,
    ) -> Result<GetResult, ClientError> {
        let key = key.into_bytes();
        let span = self.request_span("get", &key);
        self.timed(
            "get",
            span,
            coordinator::read(&self.shared, key, opts),
            |r| match r {
                GetResult::Value { .. } => "ok",
                GetResult::Siblings { .. } => "siblings",
                GetResult::NotFound { .. } => "not_found",
            },
        )
        .await
    }

    /// Writes `value` with the context of an earlier read (`None`: a blind write).
    pub async fn put(
        &self,
        key: impl IntoBytes,
        value: impl IntoBytes,
        context: Option<&Context>,
    ) -> Result<Context, ClientError> {
        self.put_with(key, value, context, WriteOptions::default())
            .await
    }

    /// Writes with per-request options.
    pub async fn put_with(
        &self,
        key: impl IntoBytes,
        value: impl IntoBytes,
        context: Option<&Context>,
        opts: WriteOptions,
    ) -> Result<Context, ClientError> {
        let key = key.into_bytes();
        let span = self.request_span("put", &key);
        let write = coordinator::write(
            &self.shared,
            key,
            Some(value.into_bytes()),
            context.cloned().unwrap_or_default(),
            opts,
        );
        self.timed("put", span, write, |_| "ok").await
    }

    /// Deletes what `context` covers (a tombstone); without a context the key is read first
    /// and everything visible now is deleted.
    pub async fn delete(
        &self,
        key: impl IntoBytes,
        context: Option<&Context>,
    ) -> Result<(), ClientError> {
        self.delete_with(key, context, WriteOptions::default())
            .await
    }

    /// Deletes with per-request options.
    pub async fn delete_with(
        &self,
        key: impl IntoBytes,
        context: Option<&Context>,
        opts: WriteOptions,
    ) -> Result<(), ClientError> {
        let key = key.into_bytes();
        let span = self.request_span("delete", &key);
        let delete = coordinator::delete(
            &self.shared,
            key,
            context.cloned().unwrap_or_default(),
            opts,
        );
        self.timed("delete", span, delete, |_| "ok").await
    }

    /// The debug span of one request. It names the key by its hash only: keys may be personal
    /// data and are unbounded in size. The coordinator fills in the fan-out fields; a delete
    /// without a context reads first, so its fields end up describing the tombstone write.
    fn request_span(&self, op: &'static str, key: &[u8]) -> Span {
        tracing::debug_span!(
            "kv_request",
            op,
            key_hash = stable_hash(key),
            node = %self.shared.me,
            coordinator = Empty,
            targets = Empty,
            required = Empty,
            acks = Empty,
            replies = Empty,
            outcome = Empty,
        )
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        span: Span,
        request: impl Future<Output = Result<T, ClientError>>,
        outcome: impl Fn(&T) -> &'static str,
    ) -> Result<T, ClientError> {
        let started = Instant::now();
        let result = request.instrument(span.clone()).await;
        let metrics = &self.shared.metrics;
        let label = match &result {
            Ok(value) => outcome(value),
            Err(e) => e.kind(),
        };
        metrics
            .requests
            .get_or_create(&RequestLabels { op, outcome: label })
            .inc();
        metrics
            .latency
            .get_or_create(&RequestLabels { op, outcome: label })
            .observe(started.elapsed().as_secs_f64());
        if label == "siblings" {
            metrics.sibling_reads.inc();
        }
        span.record("outcome", label);
        result
    }

    /// The settings in force.
    pub fn quorum(&self) -> QuorumConfig {
        **self.shared.quorum.load()
    }

    /// Changes N, W, R or the timeouts; returns the settings now in force.
    pub fn update_config(&self, update: &ConfigUpdate) -> Result<QuorumConfig, ClientError> {
        let next = self.quorum().apply(update)?;
        self.shared.quorum.store(Arc::new(next));
        tracing::info!(?next, "configuration updated");
        Ok(next)
    }
}

impl KvService for NodeClient {
    async fn get(&self, key: Key, opts: ReadOptions) -> Result<GetResult, ClientError> {
        self.get_with(key, opts).await
    }

    async fn put(
        &self,
        key: Key,
        value: Bytes,
        context: Option<Context>,
        opts: WriteOptions,
    ) -> Result<Context, ClientError> {
        self.put_with(key, value, context.as_ref(), opts).await
    }

    async fn delete(
        &self,
        key: Key,
        context: Option<Context>,
        opts: WriteOptions,
    ) -> Result<(), ClientError> {
        self.delete_with(key, context.as_ref(), opts).await
    }

    fn node_name(&self) -> String {
        self.shared.me.to_string()
    }

    fn members(&self) -> Vec<MemberInfo> {
        let membership = self.shared.membership.load();
        let now = self.shared.mono_ms();
        membership
            .members()
            .map(|m| {
                let me = m.node == self.shared.me;
                MemberInfo {
                    node: m.node.to_string(),
                    cluster_addr: m.cluster_addr.clone(),
                    http_addr: m.http_addr.clone(),
                    status: m.status,
                    heartbeat: m.heartbeat,
                    incarnation: m.incarnation,
                    last_heard_ms_ago: if me {
                        0
                    } else {
                        now.saturating_sub(m.last_heard_ms)
                    },
                    connected: me || self.shared.peers.connected(&m.node),
                    ring: m.ring,
                    handoff: m.handoff,
                }
            })
            .collect()
    }

    fn ring(&self) -> RingInfo {
        let view = self.shared.ring.load();
        let n = self.quorum().n;
        let replica: std::collections::HashMap<_, _> =
            view.ring.replica_shares(n).into_iter().collect();
        let nodes = view
            .ring
            .primary_shares()
            .into_iter()
            .map(|(node, primary_share)| RingNodeInfo {
                vnodes: view.ring.vnodes_of(&node).unwrap_or(0),
                replica_share: replica.get(&node).copied().unwrap_or(0.0),
                keys: (node == self.shared.me).then(|| self.shared.store.len()),
                node: node.to_string(),
                primary_share,
            })
            .collect();
        RingInfo {
            version: view.version,
            n,
            nodes,
        }
    }

    fn local(&self, key: &[u8]) -> VersionSet {
        self.shared.store.get(key)
    }

    fn update_config(&self, update: ConfigUpdate) -> Result<QuorumConfig, ClientError> {
        NodeClient::update_config(self, &update)
    }

    fn leave(&self) -> Result<MemberInfo, ClientError> {
        NodeClient::leave(self)
    }

    fn remove(&self, node: &str) -> Result<MemberInfo, ClientError> {
        NodeClient::remove(self, node)
    }

    fn config(&self) -> QuorumConfig {
        self.quorum()
    }

    fn metrics(&self) -> String {
        self.shared
            .metrics
            .observe(&self.shared.store, &self.shared.hints());
        let mut text = self.shared.metrics.render();
        let links = render_link_stats(&self.shared.replicas.stats());
        // The exposition ends with an `# EOF` line; the link figures belong before it.
        match text.rfind("# EOF") {
            Some(end) => text.insert_str(end, &links),
            None => text.push_str(&links),
        }
        text
    }

    fn health(&self) -> Health {
        let membership = self.shared.membership.load();
        let own = membership.own().ring;
        let reason = self.shared.failure().or_else(|| {
            own.is_final()
                .then(|| format!("this node is {own}: it is no longer a member of the cluster"))
        });
        Health {
            status: if reason.is_some() {
                "unavailable".into()
            } else {
                "ok".into()
            },
            reason,
            node: self.shared.me.to_string(),
            alive: membership
                .members()
                .filter(|m| m.status == Status::Alive)
                .count(),
            members: membership.members().count(),
        }
    }
}

impl NodeClient {
    /// This node's entry as [`KvService::members`] shows it.
    fn member_info(&self, node: &NodeId) -> Result<MemberInfo, ClientError> {
        self.members()
            .into_iter()
            .find(|m| m.node == node.as_str())
            .ok_or_else(|| ClientError::UnknownMember(format!("no member named {node} is known")))
    }

    /// Drains this node (see [`KvService::leave`]).
    pub fn leave(&self) -> Result<MemberInfo, ClientError> {
        let changes = self.shared.change_membership(|m| m.start_leaving())?;
        self.shared.log_ring_changes(&changes);
        if !changes.is_empty() {
            tracing::info!(node = %self.shared.me, "leaving: handing every key to the other members");
        }
        self.member_info(&self.shared.me)
    }

    /// Declares `node` gone for good (see [`KvService::remove`]).
    pub fn remove(&self, node: &str) -> Result<MemberInfo, ClientError> {
        let node = NodeId::new(node);
        let changes = self.shared.change_membership(|m| m.remove(&node))?;
        self.shared.log_ring_changes(&changes);
        if !changes.is_empty() {
            tracing::info!(node = %node, "removed: its ranges go to the other members");
        }
        self.member_info(&node)
    }
}

/// The batching links' figures in the exposition format: batch size = requests / batches.
fn render_link_stats(stats: &[(NodeId, u64, u64)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (name, help, pick) in [
        (
            "dynamo_replica_batches",
            "RPCs sent to peers' storage actors, by peer",
            (|s: &(NodeId, u64, u64)| s.1) as fn(&(NodeId, u64, u64)) -> u64,
        ),
        (
            "dynamo_replica_batch_requests",
            "Reads and writes those RPCs carried, by peer",
            |s| s.2,
        ),
    ] {
        // Writing into a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
        for stat in stats {
            let _ = writeln!(out, "{name}_total{{peer=\"{}\"}} {}", stat.0, pick(stat));
        }
    }
    out
}
