//! Which ractor_cluster session carries which peer, and the per-session tokens that let a
//! receiver tell which session a message claiming a sender really came from.
//!
//! ractor_cluster delivers an inbound message with no word of the session it came through, and
//! it advertises every remotable actor to every session: a peer holding the cookie can name an
//! actor `dynamo.storage@n2`, or write `from: n2` into a request. Two checks close that:
//!
//! - **Outbound**: a remote actor enters the peer registry only if the session that spawned
//!   it (the `node_id` of its `ActorId::Remote`) is the one of the peer its name claims
//!   ([`Sessions::owner`]). So whatever this node sends to "n2" goes through n2's session.
//! - **Inbound**: when a session to peer P is ready, this node draws a random token for P and
//!   sends it to P's Gossip actor, found through the checked registry, so only P's session
//!   carries it. P proves it holds the token by asking us to confirm it (through *our*
//!   checked actor, so the answer P trusts comes from us), then attaches it to every message
//!   it sends us that claims P as sender; we accept such a message only if the token matches
//!   the one issued for P's current session ([`Sessions::verify`]). Tokens die with the
//!   session; a message that arrives before the exchange is refused, and the loops that sent
//!   it try again later.
//!
//! What this does not give: a peer may still relay, as its own message, gossip *entries*
//! about other members (that is how gossip works), so a member holding the cookie can still
//! lie about a third node's entry. Only signed entries would close that.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::core::ids::NodeId;

/// The id ractor_cluster gives a session (`ActorId::Remote { node_id, .. }` of its actors).
pub type SessionId = ractor_cluster::NodeId;

/// A secret this node issues to one peer's session; 128 random bits.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionToken([u8; 16]);

impl SessionToken {
    /// A fresh random token (the thread RNG is a CSPRNG seeded from the OS).
    pub fn random() -> Self {
        SessionToken(rand::random())
    }

    /// Compares in constant time, so timing tells nothing about a guess.
    pub fn matches(&self, other: &SessionToken) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

/// What a remote actor's session says about the peer its name claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The actor came through the claimed peer's current session.
    Genuine,
    /// The actor came through a session that belongs to another peer: a forgery.
    Forged,
    /// Its session is not ready yet (process groups can sync before the ready event is
    /// handled): not accepted now, looked at again once the session is ready.
    Unknown,
}

#[derive(Debug)]
struct Session {
    peer: NodeId,
    ready: bool,
    /// The token we issued to this session (made when it became ready).
    issued: Option<SessionToken>,
    /// The token the peer issued to us on this session, once confirmed by the peer.
    held: Option<SessionToken>,
}

/// The live sessions, by ractor_cluster session id.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<SessionId, Session>>,
    /// Peers whose token offer is being confirmed: one confirmation at a time each, so a flood
    /// of forged offers costs their issuer one call at a time, not one per offer.
    confirming: Mutex<HashSet<NodeId>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Session>> {
        // Nothing here is left half-made by a panic.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session `id` announced `peer` and passed the cookie; not yet ready (it may still
    /// lose the election against another session of the same name).
    pub fn authenticated(&self, id: SessionId, peer: NodeId) {
        self.lock().insert(
            id,
            Session {
                peer,
                ready: false,
                issued: None,
                held: None,
            },
        );
    }

    /// The session `id` won its election: it is now `peer`'s session, with a fresh token.
    /// Any older session of the same peer is forgotten (ractor_cluster keeps one per name).
    pub fn ready(&self, id: SessionId, peer: NodeId) {
        let mut sessions = self.lock();
        sessions.retain(|other, s| *other == id || s.peer != peer || !s.ready);
        sessions.insert(
            id,
            Session {
                peer,
                ready: true,
                issued: Some(SessionToken::random()),
                held: None,
            },
        );
    }

    /// The session `id` ended; its tokens with it.
    pub fn disconnected(&self, id: SessionId) {
        self.lock().remove(&id);
    }

    /// Forgets every session (a new node server starts with none).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Whether an actor that came through session `id` may speak for `peer`.
    pub fn owner(&self, id: SessionId, peer: &NodeId) -> Owner {
        match self.lock().get(&id) {
            Some(s) if s.peer != *peer => Owner::Forged,
            Some(s) if s.ready => Owner::Genuine,
            _ => Owner::Unknown,
        }
    }

    /// The token issued to `peer`'s ready session `id`, if that is its session.
    pub fn issued(&self, id: SessionId, peer: &NodeId) -> Option<SessionToken> {
        self.lock()
            .get(&id)
            .filter(|s| s.ready && s.peer == *peer)
            .and_then(|s| s.issued)
    }

    /// True when `token` is the one issued to `peer`'s current session.
    pub fn verify(&self, peer: &NodeId, token: Option<&SessionToken>) -> bool {
        let Some(token) = token else {
            return false;
        };
        self.lock()
            .values()
            .filter(|s| s.ready && s.peer == *peer)
            .filter_map(|s| s.issued.as_ref())
            .any(|issued| issued.matches(token))
    }

    /// Keeps `token`, confirmed by `peer` through its session `id`, for messages to it; false
    /// when that session is no longer `peer`'s current one.
    pub fn hold(&self, id: SessionId, peer: &NodeId, token: SessionToken) -> bool {
        match self.lock().get_mut(&id) {
            Some(s) if s.ready && s.peer == *peer => {
                s.held = Some(token);
                true
            }
            _ => false,
        }
    }

    /// The token `peer` issued to us on its current session, once confirmed.
    pub fn held(&self, peer: &NodeId) -> Option<SessionToken> {
        self.lock()
            .values()
            .filter(|s| s.ready && s.peer == *peer)
            .find_map(|s| s.held)
    }

    /// Starts confirming an offer of `peer`; false while another one is being confirmed.
    pub fn begin_confirm(&self, peer: &NodeId) -> bool {
        let mut confirming = self.confirming.lock().unwrap_or_else(|p| p.into_inner());
        confirming.insert(peer.clone())
    }

    /// Ends the confirmation [`Sessions::begin_confirm`] started.
    pub fn end_confirm(&self, peer: &NodeId) {
        let mut confirming = self.confirming.lock().unwrap_or_else(|p| p.into_inner());
        confirming.remove(peer);
    }

    /// Whether `token` is already held for `peer` on session `id` (a repeated offer).
    pub fn holds(&self, id: SessionId, peer: &NodeId, token: &SessionToken) -> bool {
        self.lock()
            .get(&id)
            .filter(|s| s.ready && s.peer == *peer)
            .and_then(|s| s.held.as_ref())
            .is_some_and(|held| held.matches(token))
    }
}

/// The session a remote actor came through; `None` for a local actor.
pub fn session_of(cell: &ractor::ActorCell) -> Option<SessionId> {
    match cell.get_id() {
        ractor::ActorId::Remote { node_id, .. } => Some(node_id),
        ractor::ActorId::Local(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str) -> NodeId {
        NodeId::new(name)
    }

    #[test]
    fn an_actor_speaks_only_for_the_peer_of_its_session() {
        let sessions = Sessions::default();
        sessions.authenticated(1, n("n2"));
        assert_eq!(sessions.owner(1, &n("n2")), Owner::Unknown, "not ready yet");
        assert_eq!(sessions.owner(1, &n("n3")), Owner::Forged);
        sessions.ready(1, n("n2"));
        sessions.ready(2, n("evil"));
        assert_eq!(sessions.owner(1, &n("n2")), Owner::Genuine);
        assert_eq!(sessions.owner(2, &n("n2")), Owner::Forged);
        assert_eq!(sessions.owner(2, &n("evil")), Owner::Genuine);
        assert_eq!(sessions.owner(9, &n("n2")), Owner::Unknown);
        sessions.disconnected(1);
        assert_eq!(sessions.owner(1, &n("n2")), Owner::Unknown);
    }

    #[test]
    fn a_losing_duplicate_session_does_not_unbind_the_genuine_one() {
        let sessions = Sessions::default();
        sessions.authenticated(1, n("n2"));
        sessions.ready(1, n("n2"));
        // A second session announcing n2 authenticates, loses the election and goes away.
        sessions.authenticated(2, n("n2"));
        sessions.disconnected(2);
        assert_eq!(sessions.owner(1, &n("n2")), Owner::Genuine);
        // A reconnect replaces the old session, whose late disconnect changes nothing.
        sessions.ready(3, n("n2"));
        assert_eq!(sessions.owner(1, &n("n2")), Owner::Unknown);
        sessions.disconnected(1);
        assert_eq!(sessions.owner(3, &n("n2")), Owner::Genuine);
    }

    #[test]
    fn only_the_token_of_the_claimed_senders_current_session_is_accepted() {
        let sessions = Sessions::default();
        sessions.ready(1, n("n2"));
        sessions.ready(2, n("evil"));
        let to_n2 = sessions.issued(1, &n("n2")).unwrap();
        let to_evil = sessions.issued(2, &n("evil")).unwrap();
        assert!(!to_n2.matches(&to_evil));
        assert_eq!(sessions.issued(2, &n("n2")), None);
        assert!(sessions.verify(&n("n2"), Some(&to_n2)));
        assert!(
            !sessions.verify(&n("n2"), Some(&to_evil)),
            "evil's own token"
        );
        assert!(!sessions.verify(&n("n2"), None));
        assert!(!sessions.verify(&n("n2"), Some(&SessionToken::random())));
        assert!(sessions.verify(&n("evil"), Some(&to_evil)));
        // A new session of n2 gets a new token; the old one is dead.
        sessions.ready(3, n("n2"));
        assert!(!sessions.verify(&n("n2"), Some(&to_n2)));
        let again = sessions.issued(3, &n("n2")).unwrap();
        assert!(sessions.verify(&n("n2"), Some(&again)));
        sessions.disconnected(3);
        assert!(!sessions.verify(&n("n2"), Some(&again)));
    }

    #[test]
    fn a_held_token_belongs_to_one_session() {
        let sessions = Sessions::default();
        sessions.ready(1, n("n2"));
        let token = SessionToken::random();
        assert!(!sessions.hold(1, &n("n3"), token));
        assert!(!sessions.hold(7, &n("n2"), token));
        assert_eq!(sessions.held(&n("n2")), None);
        assert!(sessions.hold(1, &n("n2"), token));
        assert!(sessions.holds(1, &n("n2"), &token));
        assert_eq!(sessions.held(&n("n2")), Some(token));
        sessions.ready(2, n("n2"));
        assert_eq!(
            sessions.held(&n("n2")),
            None,
            "a new session needs a new token"
        );
        assert!(
            !sessions.hold(1, &n("n2"), token),
            "the old session is gone"
        );
    }

    #[test]
    fn one_confirmation_at_a_time_per_peer() {
        let sessions = Sessions::default();
        assert!(sessions.begin_confirm(&n("n2")));
        assert!(!sessions.begin_confirm(&n("n2")));
        assert!(sessions.begin_confirm(&n("n3")));
        sessions.end_confirm(&n("n2"));
        assert!(sessions.begin_confirm(&n("n2")));
    }
}
