//! Who may speak for whom: the checks of [`super::sessions`] applied to the peer registry and
//! to inbound messages, and the exchange of session tokens between Gossip actors.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorCell;

use super::peers::Role;
use super::sessions::{Owner, SessionToken, session_of};
use super::shared::NodeShared;
use super::wire::{self, GossipMsg, Payload, TokenOffer};
use crate::core::ids::NodeId;

/// How long a peer may take to confirm a token.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

/// Takes a remote actor into the peer registry if its session is the one of the node its name
/// claims; counts it as forged if it came through another peer's session.
pub fn admit(shared: &NodeShared, cell: ActorCell) {
    let (Some(session), Some((role, node))) = (
        session_of(&cell),
        cell.get_name().as_deref().and_then(Role::parse),
    ) else {
        return;
    };
    match shared.sessions.owner(session, &node) {
        Owner::Genuine => {
            let gossip = (role == Role::Gossip).then(|| cell.clone());
            if shared.peers.insert(cell).is_some() {
                tracing::debug!(node = %node, ?role, "peer actor joined");
            }
            if let Some(gossip) = gossip {
                offer(shared, session, &node, &gossip);
            }
        }
        Owner::Forged => {
            shared.metrics.forged("actor");
            tracing::debug!(node = %node, session, ?role, "ignored a remote actor named for another node than its session's");
        }
        // Looked at again when the session's ready event arrives.
        Owner::Unknown => {
            tracing::debug!(node = %node, session, "remote actor of a session not ready yet")
        }
    }
}

/// Sends `node`'s Gossip actor (`cell`, of session `session`) the token issued to it.
fn offer(shared: &NodeShared, session: u64, node: &NodeId, cell: &ActorCell) {
    if let Some(token) = shared.sessions.issued(session, node) {
        let offer = TokenOffer {
            from: shared.me.clone(),
            token,
        };
        let _ = ractor::ActorRef::<GossipMsg>::from(cell.clone())
            .cast(GossipMsg::Offer(Payload::ok(offer)));
    }
}

/// A peer offered us a token: ask the peer, through its checked actor, whether it issued it;
/// keep it only then, so a third party cannot slip us a wrong one.
pub fn on_offer(shared: &Arc<NodeShared>, offer: TokenOffer) {
    let issuer = offer.from;
    let Some(target) = shared.peers.gossip(&issuer) else {
        return;
    };
    let Some(session) = session_of(&target.get_cell()) else {
        return;
    };
    if shared.sessions.holds(session, &issuer, &offer.token)
        || !shared.sessions.begin_confirm(&issuer)
    {
        return;
    }
    let shared = Arc::clone(shared);
    let token = offer.token;
    tokio::spawn(async move {
        let _done = ConfirmDone(Arc::clone(&shared), issuer.clone());
        let ask = TokenOffer {
            from: shared.me.clone(),
            token,
        };
        let confirm = |reply| GossipMsg::Confirm(Payload::ok(ask), reply);
        match wire::call(&target, confirm, CONFIRM_TIMEOUT).await {
            Ok(true) => {
                if shared.sessions.hold(session, &issuer, token) {
                    tracing::debug!(peer = %issuer, "session token confirmed");
                }
            }
            _ => tracing::debug!(peer = %issuer, "a token offered in its name was not confirmed"),
        }
    });
}

/// Ends a confirmation when dropped, even if its task panicked.
struct ConfirmDone(Arc<NodeShared>, NodeId);

impl Drop for ConfirmDone {
    fn drop(&mut self) {
        self.0.sessions.end_confirm(&self.1);
    }
}

/// Whether this node issued `ask.token` to `ask.from`'s current session.
pub fn on_confirm(shared: &NodeShared, ask: &TokenOffer) -> bool {
    shared.sessions.verify(&ask.from, Some(&ask.token))
}

/// A peer lacks our token: offer it again, to that peer's checked actor only.
pub fn on_resend(shared: &NodeShared, peer: &NodeId) {
    if let Some(target) = shared.peers.gossip(peer)
        && let Some(session) = session_of(&target.get_cell())
    {
        offer(shared, session, peer, &target.get_cell());
    }
}

/// Asks every connected peer whose token we lack to offer it again.
pub fn ask_missing_tokens(shared: &NodeShared) {
    for peer in shared.peers.nodes() {
        if shared.sessions.held(&peer).is_none()
            && let Some(target) = shared.peers.gossip(&peer)
        {
            let _ = target.cast(GossipMsg::Resend(Payload::ok(shared.me.clone())));
        }
    }
}

/// True when `token` vouches for a message claiming `from` as its sender; otherwise counts
/// the message as forged (`kind`) and logs it.
pub fn vouched(
    shared: &NodeShared,
    kind: &'static str,
    from: &NodeId,
    token: Option<&SessionToken>,
) -> bool {
    if shared.sessions.verify(from, token) {
        return true;
    }
    shared.metrics.forged(kind);
    tracing::debug!(kind, claimed = %from, token = token.is_some(), "dropped a message its session does not vouch for");
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;

    fn forged(shared: &NodeShared, kind: &'static str) -> u64 {
        shared
            .metrics
            .forged
            .get_or_create(&super::super::metrics::ForgedLabels { kind })
            .get()
    }

    #[test]
    fn a_claim_is_believed_only_with_the_token_of_the_claimed_senders_session() {
        let config = NodeConfig::new("n1", "127.0.0.1:1".parse().unwrap());
        let shared = NodeShared::new(config, 1).unwrap();
        shared.sessions.ready(1, NodeId::new("n2"));
        shared.sessions.ready(2, NodeId::new("evil"));
        let to_n2 = shared.sessions.issued(1, &NodeId::new("n2")).unwrap();
        let to_evil = shared.sessions.issued(2, &NodeId::new("evil")).unwrap();
        let n2 = NodeId::new("n2");
        assert!(vouched(&shared, "gossip", &n2, Some(&to_n2)));
        assert_eq!(forged(&shared, "gossip"), 0);
        assert!(!vouched(&shared, "gossip", &n2, Some(&to_evil)));
        assert!(!vouched(&shared, "gossip", &n2, None));
        assert!(!vouched(&shared, "purge", &NodeId::new("n1"), Some(&to_n2)));
        assert_eq!(forged(&shared, "gossip"), 2);
        assert_eq!(forged(&shared, "purge"), 1);
        let metrics = shared.metrics.render();
        assert!(
            metrics.contains("dynamo_forged_messages_total{kind=\"gossip\"} 2"),
            "{metrics}"
        );
        assert!(on_confirm(
            &shared,
            &TokenOffer {
                from: n2.clone(),
                token: to_n2
            }
        ));
        assert!(!on_confirm(
            &shared,
            &TokenOffer {
                from: n2,
                token: to_evil
            }
        ));
    }
}
