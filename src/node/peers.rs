//! Where each peer's actors are: discovered through ractor process groups, keyed by node name.
//!
//! ractor_cluster gives remote actors new ids on every reconnect, so nothing here is keyed by
//! `ActorId`; an entry is replaced by the newest actor of the same role on the same node.

use dashmap::DashMap;
use ractor::{ActorCell, ActorRef};

use super::wire::{AntiEntropyMsg, CoordinatorMsg, GossipMsg, StorageMsg};
use crate::core::ids::NodeId;

/// The roles a node's remotely reachable actors play.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The replica side of reads and writes.
    Storage,
    /// Membership exchange.
    Gossip,
    /// Coordination of forwarded writes.
    Coordinator,
    /// Anti-entropy rounds and tombstone purges.
    AntiEntropy,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [
        Role::Storage,
        Role::Gossip,
        Role::Coordinator,
        Role::AntiEntropy,
    ];

    /// The process group the role's actors join.
    pub fn group(self) -> &'static str {
        match self {
            Role::Storage => "dynamo.storage",
            Role::Gossip => "dynamo.gossip",
            Role::Coordinator => "dynamo.coordinator",
            Role::AntiEntropy => "dynamo.anti_entropy",
        }
    }

    /// The registered name of `node`'s actor for this role; peers read the node from it.
    pub fn actor_name(self, node: &NodeId) -> String {
        format!("{}@{}", self.group(), node)
    }

    /// The role and node of an actor named by [`Role::actor_name`].
    pub fn parse(name: &str) -> Option<(Role, NodeId)> {
        let (group, node) = name.split_once('@')?;
        let role = Role::ALL.into_iter().find(|r| r.group() == group)?;
        (!node.is_empty()).then(|| (role, NodeId::new(node)))
    }
}

/// The actors of connected peers, by (node, role).
#[derive(Default)]
pub struct Peers {
    actors: DashMap<(NodeId, Role), ActorCell>,
}

impl Peers {
    /// Records a remote actor announced through a process group; returns its node if it was new.
    pub fn insert(&self, cell: ActorCell) -> Option<NodeId> {
        let (role, node) = Role::parse(&cell.get_name()?)?;
        let previous = self.actors.insert((node.clone(), role), cell);
        previous.is_none().then_some(node)
    }

    /// Forgets a remote actor that left its group, unless a newer one replaced it already.
    pub fn remove(&self, cell: &ActorCell) {
        let Some((role, node)) = cell.get_name().as_deref().and_then(Role::parse) else {
            return;
        };
        self.actors.remove_if(&(node, role), |_, current| {
            current.get_id() == cell.get_id()
        });
    }

    /// True when `node`'s storage actor is reachable through a live session.
    pub fn connected(&self, node: &NodeId) -> bool {
        self.actors.contains_key(&(node.clone(), Role::Storage))
    }

    /// Nodes with at least one known actor.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.actors.iter().map(|e| e.key().0.clone()).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    fn cell(&self, node: &NodeId, role: Role) -> Option<ActorCell> {
        self.actors.get(&(node.clone(), role)).map(|c| c.clone())
    }

    /// `node`'s storage actor.
    pub fn storage(&self, node: &NodeId) -> Option<ActorRef<StorageMsg>> {
        self.cell(node, Role::Storage).map(ActorRef::from)
    }

    /// `node`'s gossip actor.
    pub fn gossip(&self, node: &NodeId) -> Option<ActorRef<GossipMsg>> {
        self.cell(node, Role::Gossip).map(ActorRef::from)
    }

    /// `node`'s coordinator actor.
    pub fn coordinator(&self, node: &NodeId) -> Option<ActorRef<CoordinatorMsg>> {
        self.cell(node, Role::Coordinator).map(ActorRef::from)
    }

    /// `node`'s anti-entropy actor.
    pub fn anti_entropy(&self, node: &NodeId) -> Option<ActorRef<AntiEntropyMsg>> {
        self.cell(node, Role::AntiEntropy).map(ActorRef::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_names_round_trip() {
        let n = NodeId::new("n7");
        for role in Role::ALL {
            assert_eq!(Role::parse(&role.actor_name(&n)), Some((role, n.clone())));
        }
        assert_eq!(Role::parse("dynamo.storage@"), None);
        assert_eq!(Role::parse("other@n1"), None);
        assert_eq!(Role::parse("dynamo.storage"), None);
    }
}
