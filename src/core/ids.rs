//! Names of nodes, of the actors that make versions, and of keys.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// A key of the store: arbitrary bytes (the HTTP API passes UTF-8 path segments).
pub type Key = bytes::Bytes;

/// The name of a physical node, unique in its cluster (e.g. `"n1"`).
///
/// Peers are keyed by this name, never by a ractor `ActorId`, which changes on every
/// reconnect. Cheap to clone: the name is shared. A decoded name is shared too, with the
/// same name decoded lately on the same thread (see [`NodeId::decoded`]).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NodeId(Arc<str>);

/// How many names each thread keeps for decoding: more than the nodes of most clusters.
const RECENT_NAMES: usize = 8;

/// Longest name kept for decoding: node names are short, and a long one from a peer or a
/// client's context is not held past its use.
const RECENT_NAME_MAX: usize = 64;

thread_local! {
    // The names this thread decoded lately, and the slot the next new one takes.
    static RECENT: RefCell<([Option<NodeId>; RECENT_NAMES], usize)> =
        const { RefCell::new(([const { None }; RECENT_NAMES], 0)) };
}

impl NodeId {
    /// A node id from its name.
    pub fn new(name: impl AsRef<str>) -> Self {
        NodeId(Arc::from(name.as_ref()))
    }

    /// The node id of a name being decoded. Every dot and clock entry names a node, and a
    /// node decodes the same few names (its cluster's) all the time: a name decoded lately on
    /// this thread is shared rather than allocated again. The slots are few, short names
    /// only, and replaced in turn, so names a peer makes up cost a miss each, never memory.
    pub fn decoded(name: &str) -> Self {
        if name.len() > RECENT_NAME_MAX {
            return NodeId::new(name);
        }
        let shared = RECENT.try_with(|recent| {
            let mut recent = recent.try_borrow_mut().ok()?;
            let (names, next) = &mut *recent;
            if let Some(found) = names.iter().flatten().find(|n| &*n.0 == name) {
                return Some(found.clone());
            }
            let id = NodeId::new(name);
            names[*next] = Some(id.clone());
            *next = (*next + 1) % RECENT_NAMES;
            Some(id)
        });
        shared.ok().flatten().unwrap_or_else(|| NodeId::new(name))
    }

    /// The node's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<NodeId, E> {
                Ok(NodeId::decoded(name))
            }
        }
        deserializer.deserialize_str(Name)
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
    fn a_decoded_name_is_shared_with_the_last_ones_decoded_and_equal_to_its_text() {
        let encoded = postcard::to_stdvec(&NodeId::new("n1")).unwrap();
        let first: NodeId = postcard::from_bytes(&encoded).unwrap();
        let second: NodeId = postcard::from_bytes(&encoded).unwrap();
        assert_eq!(first, NodeId::new("n1"));
        assert!(
            Arc::ptr_eq(&first.0, &second.0),
            "decoded once, shared after"
        );
        // Names beyond the slots push the oldest out, and every name still decodes as itself.
        let many: Vec<NodeId> = (0..3 * RECENT_NAMES)
            .map(|i| postcard::from_bytes(&postcard::to_stdvec(&format!("m{i}")).unwrap()))
            .collect::<Result<_, _>>()
            .unwrap();
        for (i, id) in many.iter().enumerate() {
            assert_eq!(id.as_str(), format!("m{i}"));
        }
        let again: NodeId = postcard::from_bytes(&encoded).unwrap();
        assert_eq!(again, first);
        assert!(
            !Arc::ptr_eq(&again.0, &first.0),
            "n1 was pushed out, so decoded anew"
        );
        let json: NodeId = serde_json::from_str("\"n\\u0031\"").unwrap();
        assert_eq!(json, NodeId::new("n1"));
        // A long name decodes as itself and takes no slot.
        let long = "x".repeat(RECENT_NAME_MAX + 1);
        let encoded_long = postcard::to_stdvec(&long).unwrap();
        let (a, b): (NodeId, NodeId) = (
            postcard::from_bytes(&encoded_long).unwrap(),
            postcard::from_bytes(&encoded_long).unwrap(),
        );
        assert_eq!(a.as_str(), long);
        assert!(!Arc::ptr_eq(&a.0, &b.0));
    }

    #[test]
    fn actor_ids_order_by_node_then_incarnation() {
        let a1 = ActorId::new("a", 1);
        let a2 = ActorId::new("a", 2);
        let b0 = ActorId::new("b", 0);
        assert!(a1 < a2 && a2 < b0);
        assert_eq!(a1.to_string(), "a.1");
    }
}
