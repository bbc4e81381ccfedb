//! Names of nodes, of the actors that make versions, and of keys.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A key of the store: arbitrary bytes (the HTTP API passes UTF-8 path segments).
pub type Key = bytes::Bytes;

/// The name of a physical node, unique in its cluster (e.g. `"n1"`).
///
/// Peers are keyed by this name, never by a ractor `ActorId`, which changes on every
/// reconnect. Cheap to clone: the name is shared.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// A node id from its name.
    pub fn new(name: impl AsRef<str>) -> Self {
        NodeId(Arc::from(name.as_ref()))
    }

    /// The node's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl From<&str> for NodeId {
    fn from(name: &str) -> Self {
        NodeId::new(name)
    }
}

/// The writer identity inside version vectors and dots: a node in one incarnation.
///
/// A node that restarts without its data takes a new incarnation, so it can never reissue a
/// dot that peers already hold (the cause of Riak's kv679 silent-loss bug).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActorId {
    /// The node that coordinates writes under this id.
    pub node: NodeId,
    /// Distinguishes lives of the same node that do not share stored data.
    pub incarnation: u64,
}

impl ActorId {
    /// The actor id of `node` in `incarnation`.
    pub fn new(node: impl Into<NodeId>, incarnation: u64) -> Self {
        ActorId {
            node: node.into(),
            incarnation,
        }
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.incarnation)
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The nodes of these names, in order: how tests name a cluster.
#[cfg(test)]
pub(crate) fn nodes(names: &[&str]) -> Vec<NodeId> {
    names.iter().map(|n| NodeId::new(*n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_ids_order_by_node_then_incarnation() {
        let a1 = ActorId::new("a", 1);
        let a2 = ActorId::new("a", 2);
        let b0 = ActorId::new("b", 0);
        assert!(a1 < a2 && a2 < b0);
        assert_eq!(a1.to_string(), "a.1");
    }
}
