//! Where dots come from, and when the actor id takes a fresh epoch.
//!
//! The store makes the dots of the writes this node coordinates, from one node-wide counter
//! that only those writes advance: no context, from a client or a peer, ever raises it, and a
//! context claiming a dot of the current actor beyond it is refused
//! ([`StoreError::ForgedContext`]). The actor id carries an epoch: the store takes a fresh one
//! before it drops a set that mentions its current actor (a handoff deleting what it handed),
//! so that a later write of the same key can never send a set holding a new dot of that actor
//! without its earlier ones (see `version.rs` on why whole sets travel); and when a set
//! arrives whose context claims dots of the current actor that it never made, so that such a
//! claim can never cover a write made after it.
//!
//! On a durable engine the actor id is written before it is used, and the counter is leased
//! in blocks of [`COUNTER_LEASE`]: a block is written before its first dot is made, and a
//! reopened store starts past the last block written, so a crash burns the rest of a block
//! and never issues a dot twice (Riak's kv679).

use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use super::{META_ACTOR, META_LEASE, Store, StoreError, lock};
use crate::core::engine::EngineError;
use crate::core::ids::{ActorId, Key};
use crate::core::version::VersionSet;

/// How many dots a durable store may make per write of its counter lease.
pub const COUNTER_LEASE: u64 = 10_000;

impl Store {
    pub(super) fn next_counter(&self) -> Result<u64, StoreError> {
        let counter = self
            .counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_add(1))
            .map(|previous| previous + 1)
            .map_err(|_| StoreError::CounterExhausted)?;
        if counter > self.lease.load(Ordering::Acquire) {
            self.extend_lease(counter)?;
        }
        Ok(counter)
    }

    // Writes a lease covering `counter` before it is used. A failed write burns the counter.
    pub(super) fn extend_lease(&self, counter: u64) -> Result<(), EngineError> {
        let _leasing = lock(&self.leasing);
        if counter <= self.lease.load(Ordering::Acquire) {
            return Ok(());
        }
        let lease = counter.saturating_add(COUNTER_LEASE);
        self.engine.set_meta(META_LEASE, &lease.to_le_bytes())?;
        self.lease.store(lease, Ordering::Release);
        Ok(())
    }

    /// Takes a fresh epoch of the actor id, written before it is used; the counter goes on,
    /// so dots stay unique. The caller holds `leasing`: two epoch changes that read the same
    /// current actor would otherwise write one id twice, or the slower write would take the
    /// actor back to an epoch already replaced.
    fn new_epoch(&self, _leasing: &MutexGuard<'_, ()>) -> Result<(), EngineError> {
        let current = self.actor();
        let next = ActorId::new(current.node.clone(), current.incarnation.saturating_add(1));
        self.engine.set_meta(META_ACTOR, &encode_actor(&next))?;
        self.actor.store(std::sync::Arc::new(next));
        self.epochs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes a fresh epoch if `incoming` claims dots of the current actor beyond those issued:
    /// a forged context reached us through another coordinator, and would cover our next
    /// writes of its key.
    pub(super) fn guard_actor(&self, incoming: &VersionSet) -> Result<(), EngineError> {
        let actor = self.actor.load();
        let issued = self.issued();
        let forged = incoming.versions().iter().any(|v| {
            v.context.max_claim(&actor) > issued
                || (v.dot.actor == **actor && v.dot.counter > issued)
        });
        if forged {
            // Under the lease lock, so that two merges seeing one claim take one epoch each
            // at most, in order.
            let leasing = lock(&self.leasing);
            if ActorId::clone(&self.actor.load()) == **actor {
                self.new_epoch(&leasing)?;
            }
        }
        Ok(())
    }

    /// Removes `key` if its set is still exactly the one with digest `expected`: a handoff
    /// drops a key once every new owner acknowledged that set. Returns whether it did (not
    /// when the engine failed: the handoff tries again).
    pub fn remove_handed(&self, key: &Key, expected: u64) -> bool {
        self.remove_if(key, |set, digest| {
            if digest != expected {
                return Ok(false);
            }
            let leasing = lock(&self.leasing);
            if mentions(set, &self.actor.load()) {
                self.new_epoch(&leasing)?;
            }
            Ok(true)
        })
    }
}

pub(super) fn encode_actor(actor: &ActorId) -> Vec<u8> {
    // An id of a name and a number always encodes.
    postcard::to_allocvec(actor).unwrap_or_default()
}

/// Whether `set` names `actor`, in a dot or in a context.
pub(super) fn mentions(set: &VersionSet, actor: &ActorId) -> bool {
    set.versions()
        .iter()
        .any(|v| v.dot.actor == *actor || v.context.max_claim(actor) > 0)
}
