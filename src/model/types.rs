//! Request options and results of the public API, the admin views (members, ring, health),
//! and the checks every front makes of a key and a value.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::context::Context;
use super::error::ClientError;
use crate::config::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::core::membership::{HandoffProgress, RingStatus, Status};
use crate::core::version::VersionSet;

/// The outcome of a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GetResult {
    /// One live value.
    Value {
        /// The value.
        value: Bytes,
        /// Context to write the next version with.
        context: Context,
    },
    /// Concurrent values the client should merge; a write with `context` replaces them all.
    Siblings {
        /// The values, in a stable order.
        values: Vec<Bytes>,
        /// One context covering every sibling.
        context: Context,
    },
    /// No live value (never written, or deleted).
    NotFound {
        /// Covers any tombstones seen, so a write with it supersedes them; empty if none.
        context: Context,
    },
}

impl GetResult {
    /// The answer for a reconciled sibling set: its live values and one context covering all.
    pub fn from_set(set: &VersionSet) -> Self {
        let view = set.read();
        let context = Context::from_clock(view.context);
        let mut values = view.values;
        match values.len() {
            0 => GetResult::NotFound { context },
            1 => GetResult::Value {
                value: values.remove(0),
                context,
            },
            _ => GetResult::Siblings { values, context },
        }
    }

    /// The context of the read, whatever its outcome.
    pub fn context(&self) -> &Context {
        match self {
            GetResult::Value { context, .. }
            | GetResult::Siblings { context, .. }
            | GetResult::NotFound { context } => context,
        }
    }

    /// The live values (zero, one or several).
    pub fn values(&self) -> Vec<Bytes> {
        match self {
            GetResult::Value { value, .. } => vec![value.clone()],
            GetResult::Siblings { values, .. } => values.clone(),
            GetResult::NotFound { .. } => Vec::new(),
        }
    }
}

/// Per-request read settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOptions {
    /// Replies to wait for instead of the configured R.
    pub r: Option<usize>,
}

impl ReadOptions {
    /// Refuses ([`ClientError::InvalidOption`]) a requested `r` outside `1..=n`: the rule the
    /// coordinator and the HTTP server both apply (without one, the configured R holds).
    pub fn check(&self, n: usize) -> Result<(), ClientError> {
        check_quorum(self.r, n, "r")
    }
}

/// Per-request write settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOptions {
    /// Acks to wait for instead of the configured W.
    pub w: Option<usize>,
}

impl WriteOptions {
    /// Refuses ([`ClientError::InvalidOption`]) a requested `w` outside `1..=n`: the rule the
    /// coordinator and the HTTP server both apply (without one, the configured W holds).
    pub fn check(&self, n: usize) -> Result<(), ClientError> {
        check_quorum(self.w, n, "w")
    }
}

/// Refuses a requested quorum size (`which`: `r` or `w`) outside `1..=n`.
fn check_quorum(requested: Option<usize>, n: usize, which: &str) -> Result<(), ClientError> {
    match requested {
        Some(q) if !(1..=n).contains(&q) => Err(ClientError::InvalidOption(format!(
            "{which} must be between 1 and n = {n}, got {q}"
        ))),
        _ => Ok(()),
    }
}

/// One cluster member as a node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node name.
    pub node: String,
    /// Cluster (ractor_cluster) address.
    pub cluster_addr: String,
    /// HTTP API address.
    pub http_addr: String,
    /// Alive, suspect or dead, on the answering node's clock.
    pub status: Status,
    /// Latest heartbeat heard.
    pub heartbeat: u64,
    /// Incarnation (a restart without data takes a new one).
    pub incarnation: u64,
    /// Milliseconds since the answering node last heard news of it (0 for itself).
    pub last_heard_ms_ago: u64,
    /// Whether the answering node has a cluster session to it (true for itself).
    pub connected: bool,
    /// Where it stands on the ring: joining, valid, leaving, left or removed.
    pub ring: RingStatus,
    /// Its handoff progress, as it last reported it.
    pub handoff: HandoffProgress,
}

/// A node's place on the ring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RingNodeInfo {
    /// Node name.
    pub node: String,
    /// Tokens it holds.
    pub vnodes: u32,
    /// Share of the key space it is first owner of.
    pub primary_share: f64,
    /// Share of the key space it holds a replica of (among the first N).
    pub replica_share: f64,
    /// Keys stored on it (only known for the answering node).
    pub keys: Option<usize>,
}

/// The ring as a node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RingInfo {
    /// Bumped on every rebuild of the ring on this node.
    pub version: u64,
    /// Replicas per key in force.
    pub n: usize,
    /// The nodes on the ring, by name.
    pub nodes: Vec<RingNodeInfo>,
}

/// Liveness summary of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// "ok" when the node serves requests, "unavailable" when it cannot (its actor tree gave
    /// up, it was removed, it left); HTTP answers 503 then.
    pub status: String,
    /// Why the node cannot serve, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Node name.
    pub node: String,
    /// Members this node sees alive, itself included.
    pub alive: usize,
    /// Members known in all.
    pub members: usize,
}

/// Checks a key against the limits: non-empty and at most [`MAX_KEY_BYTES`].
pub fn validate_key(key: &[u8]) -> Result<(), ClientError> {
    if key.is_empty() {
        return Err(ClientError::InvalidKey("key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ClientError::KeyTooLong {
            size: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

/// Checks a value against [`MAX_VALUE_BYTES`].
pub fn validate_value(value: &[u8]) -> Result<(), ClientError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(ClientError::ValueTooLarge {
            size: value.len(),
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}
