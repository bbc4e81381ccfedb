//! Ghost state and invariants: what every client operation did, and what must always hold.
//!
//! Each client write carries a unique value (its operation id), and the dot its coordinator
//! made is recorded when it is made, so the checks can follow every write through the stores:
//!
//! - **No dot is made twice** (Riak's kv679): checked when a write is coordinated.
//! - **No acknowledged write is lost** unless a write that saw it replaced it (its context
//!   covers the dot): after every step, every such write is still held (stored or hinted)
//!   by some node: a running one, or a crashed one whose disk keeps it. A step that crashes a
//!   node in memory may take the last copy: that write is then excused, as in-memory storage
//!   promises nothing more; so may removing a crashed node, whose disk goes with it. A crash
//!   on disk excuses nothing: every write a node acknowledged was synced first.
//! - **An acknowledged write is held by W nodes when acknowledged**: when a coordinator
//!   answers a write as acknowledged, at least W running nodes (W capped by the ring's
//!   members) hold its dot, stored or hinted, unless a crash, a restart or a ring change came
//!   between its coordination and its answer (those may take or move a copy legitimately).
//! - **No delete is undone**: once a key's tombstones were purged anywhere (by the node that
//!   checked, or by any holder on its order or through anti-entropy), no node may hold a value
//!   those tombstones deleted, on a crashed node's disk neither (checked after every step, so
//!   a purge that leaves a stale copy behind is caught at once, before it spreads).
//! - At the end, after the faults healed: every replica of every key holds the same set,
//!   nothing is left on nodes that do not own it, no hint is left, every acknowledged write
//!   is on every owner, and no deleted value is held anywhere.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use bytes::Bytes;

use super::node::SimNode;
use crate::core::ids::{Key, NodeId};
use crate::core::vclock::{Dot, VClock};
use crate::core::version::VersionSet;

/// What a node's holdings of a key are computed from: its life, the key's digest in its
/// store, and its hint store's change counter.
type Stamp = (u64, u64, u64);

/// One client write, as the checks follow it.
#[derive(Clone, Debug)]
pub struct WriteInfo {
    /// The key.
    pub key: Key,
    /// Its value, `None` for a delete.
    pub value: Option<Bytes>,
    /// The context the client wrote with.
    pub context: VClock,
    /// The dot made for it, once coordinated.
    pub dot: Option<Dot>,
    /// Acknowledged to the client.
    pub acked: bool,
    /// A later write saw it (may replace it).
    pub superseded: bool,
    /// Every copy died with crashed nodes.
    pub lost_to_crash: bool,
}

/// What the checks know.
#[derive(Default)]
pub struct Ghost {
    writes: BTreeMap<u64, WriteInfo>,
    dots: HashMap<Dot, u64>,
    /// Per key, the contexts of every purged set: the versions they cover are deleted.
    purged: BTreeMap<Key, VClock>,
    /// Writes excused because crashes took every copy.
    pub lost_to_crash: usize,
    /// Bumped whenever what the checks know changes.
    pub revision: u64,
    /// What each node held of each key at the last look, by what it is computed from: the
    /// node's life, the key's digest there and its hint store's change counter.
    held_cache: HashMap<(NodeId, Key), (Stamp, VersionSet)>,
    /// The writes of each key, and what the checks know of each key, for looking at changed
    /// keys only.
    by_key: BTreeMap<Key, Vec<u64>>,
    key_revision: BTreeMap<Key, u64>,
    key_stamps: HashMap<Key, u64>,
}

impl Ghost {
    /// A client issued a write.
    pub fn issued(&mut self, op: u64, key: Key, value: Option<Bytes>, context: VClock) {
        self.revision += 1;
        *self.key_revision.entry(key.clone()).or_default() += 1;
        self.by_key.entry(key.clone()).or_default().push(op);
        self.writes.insert(
            op,
            WriteInfo {
                key,
                value,
                context,
                dot: None,
                acked: false,
                superseded: false,
                lost_to_crash: false,
            },
        );
    }

    /// A coordinator made `dot` for write `op`.
    pub fn coordinated(&mut self, op: u64, dot: Dot) -> Result<(), String> {
        if let Some(first) = self.dots.insert(dot.clone(), op) {
            return Err(format!(
                "dot {dot:?} made twice: for write {first} and for write {op}"
            ));
        }
        let Some(info) = self.writes.get_mut(&op) else {
            return Err(format!("unknown write {op} coordinated"));
        };
        if info.dot.is_some() {
            return Err(format!("write {op} coordinated twice"));
        }
        self.revision += 1;
        info.dot = Some(dot);
        let (key, context) = (info.key.clone(), info.context.clone());
        *self.key_revision.entry(key.clone()).or_default() += 1;
        for other in self.by_key.get(&key).into_iter().flatten() {
            if let Some(w) = self.writes.get_mut(other)
                && *other != op
                && w.dot.as_ref().is_some_and(|d| context.contains(d))
            {
                w.superseded = true;
            }
        }
        Ok(())
    }

    /// Write `op` was acknowledged to its client.
    pub fn acked(&mut self, op: u64) {
        if let Some(info) = self.writes.get_mut(&op) {
            info.acked = true;
            self.revision += 1;
            *self.key_revision.entry(info.key.clone()).or_default() += 1;
        }
    }

    /// Write `op` reached its client acknowledged after a crash in memory that came after its
    /// coordination: if no node holds it now, that crash took its copies while the answer
    /// was on its way, and it is excused as the crash's other writes are.
    pub fn acked_after_crash(&mut self, op: u64, nodes: &[&SimNode]) {
        self.acked(op);
        let Some(w) = self.writes.get_mut(&op) else {
            return;
        };
        let Some(dot) = &w.dot else {
            return;
        };
        if !(nodes.iter()).any(|n| everything_held(n, &w.key).context().contains(dot)) {
            w.lost_to_crash = true;
            self.lost_to_crash += 1;
        }
    }

    /// Write `op` is answered as acknowledged after `required` acks: at least that many
    /// running nodes must hold it now (its dot covered by what each stores or hints). The
    /// caller skips the writes a crash, a restart or a ring change raced, which may have
    /// taken or moved a copy since an ack came.
    pub fn held_at_ack(
        &mut self,
        op: u64,
        nodes: &[&SimNode],
        required: usize,
    ) -> Result<(), String> {
        let Some(w) = self.writes.get(&op) else {
            return Err(format!("unknown write {op} acknowledged"));
        };
        let Some(dot) = w.dot.clone() else {
            return Err(format!("write {op} acknowledged before it was coordinated"));
        };
        let key = w.key.clone();
        if self.purged.get(&key).is_some_and(|p| p.contains(&dot)) {
            return Ok(());
        }
        let mut holders = Vec::new();
        for node in nodes {
            if self.held(node, &key).context().contains(&dot) {
                holders.push(node.name.to_string());
            }
        }
        if holders.len() < required {
            return Err(format!(
                "write {op} ({dot:?}) of key {key:?} acknowledged after {required} acks but held by {holders:?} only"
            ));
        }
        Ok(())
    }

    /// What `node` holds of `key`, stored or hinted, from the cache while neither changed.
    fn held(&mut self, node: &SimNode, key: &Key) -> VersionSet {
        let stamp = (
            node.membership.own().incarnation,
            node.store.digest(key),
            node.hint_changes.load(std::sync::atomic::Ordering::Relaxed),
        );
        let slot = (node.name.clone(), key.clone());
        match self.held_cache.get(&slot) {
            Some((cached, set)) if *cached == stamp => set.clone(),
            _ => {
                let set = everything_held(node, key);
                self.held_cache.insert(slot, (stamp, set.clone()));
                set
            }
        }
    }

    /// A node purged `key`'s set of this context (told again, it changes nothing).
    pub fn purged(&mut self, key: Key, context: &VClock) {
        if let Some(known) = self.purged.get(&key)
            && crate::core::vclock::tests::descends(known, context)
        {
            return;
        }
        self.revision += 1;
        *self.key_revision.entry(key.clone()).or_default() += 1;
        self.by_key.entry(key.clone()).or_default();
        self.purged.entry(key).or_default().merge_from(context);
    }

    /// The acknowledged writes no later write saw and no crash took: values must survive,
    /// and deletes until their tombstones are purged.
    fn must_survive(&self) -> impl Iterator<Item = (u64, &WriteInfo, &Dot)> {
        self.writes.iter().filter_map(|(op, w)| {
            let dot = w.dot.as_ref()?;
            let purged = || self.purged.get(&w.key).is_some_and(|p| p.contains(dot));
            (w.acked && !w.superseded && !w.lost_to_crash && (w.value.is_some() || !purged()))
                .then_some((*op, w, dot))
        })
    }

    /// Checks the invariants over the running nodes. `crash` says the step crashed a node:
    /// writes whose last copy it held are excused instead of reported. A key is looked at
    /// again only when what some node holds of it, or what the checks know of it, changed.
    pub fn check(&mut self, nodes: &[&SimNode], crash: bool) -> Result<(), String> {
        let keys: Vec<Key> = self.by_key.keys().cloned().collect();
        for key in keys {
            let mut stamps = Vec::with_capacity(nodes.len());
            let mut print = std::collections::hash_map::DefaultHasher::new();
            self.key_revision.get(&key).hash(&mut print);
            for node in nodes {
                let stamp = (
                    node.membership.own().incarnation,
                    node.store.digest(&key),
                    node.hint_changes.load(std::sync::atomic::Ordering::Relaxed),
                );
                (&node.name, stamp).hash(&mut print);
                stamps.push(stamp);
            }
            let print = print.finish();
            if !crash && self.key_stamps.get(&key) == Some(&print) {
                continue;
            }
            self.key_stamps.insert(key.clone(), print);
            let mut sets = Vec::with_capacity(nodes.len());
            for (node, stamp) in nodes.iter().zip(stamps) {
                let slot = (node.name.clone(), key.clone());
                let set = match self.held_cache.get(&slot) {
                    Some((cached, set)) if *cached == stamp => set.clone(),
                    _ => {
                        let set = everything_held(node, &key);
                        self.held_cache.insert(slot, (stamp, set.clone()));
                        set
                    }
                };
                sets.push((node.name.to_string(), set));
            }
            self.check_key(&key, &sets, crash)?;
        }
        Ok(())
    }

    fn check_key(
        &mut self,
        key: &Key,
        held: &[(String, VersionSet)],
        crash: bool,
    ) -> Result<(), String> {
        // Writes held nowhere any more: a violation unless a later write saw them, or the
        // step crashed a node, which excuses them (and, for a write a later one saw, the
        // crash took the later one too, so what the write did is gone with it).
        let purged = self.purged.get(key);
        let mut vanished = Vec::new();
        // What each copy has seen: its versions' dots and every dot their contexts cover.
        let seen: Vec<_> = held.iter().map(|(_, set)| set.context()).collect();
        for op in self.by_key.get(key).into_iter().flatten() {
            let w = &self.writes[op];
            let Some(dot) = &w.dot else { continue };
            if !w.acked || w.lost_to_crash || purged.is_some_and(|p| p.contains(dot)) {
                continue;
            }
            if !seen.iter().any(|clock| clock.contains(dot)) {
                vanished.push((*op, dot.clone(), w.superseded));
            }
        }
        for (op, dot, superseded) in vanished {
            if crash {
                if let Some(w) = self.writes.get_mut(&op) {
                    w.lost_to_crash = true;
                    self.lost_to_crash += 1;
                }
            } else if !superseded {
                return Err(format!(
                    "acknowledged write {op} ({dot:?}) of key {key:?} is held nowhere (and no purge took it)"
                ));
            }
        }
        if let Some(deleted) = self.purged.get(key) {
            for (node, set) in held {
                if let Some(v) = set
                    .versions()
                    .iter()
                    .find(|v| !v.is_tombstone() && deleted.contains(&v.dot))
                {
                    return Err(format!(
                        "delete undone: {node} holds {:?} ({:?}) of key {key:?}, which a purged delete covered",
                        v.value, v.dot
                    ));
                }
            }
        }
        Ok(())
    }

    /// The final checks, once the cluster is quiet: see the module docs. `owners` gives each
    /// key's owners on the (common) ring.
    pub fn check_final(
        &self,
        nodes: &[&SimNode],
        owners: impl Fn(&Key) -> Vec<String>,
    ) -> Result<FinalReport, String> {
        let mut report = FinalReport::default();
        let mut undone_example: Option<String> = None;
        let keys: Vec<Key> = {
            let mut keys: Vec<Key> = self.writes.values().map(|w| w.key.clone()).collect();
            keys.sort();
            keys.dedup();
            keys
        };
        for key in &keys {
            let owners = owners(key);
            let mut sets = Vec::new();
            for node in nodes {
                let set = everything_held(node, key);
                let owner = owners.contains(&node.name.to_string());
                if !owner && !set.is_empty() {
                    return Err(format!(
                        "{} holds {key:?} but does not own it (owners {owners:?})",
                        node.name
                    ));
                }
                if owner {
                    sets.push((node.name.to_string(), set));
                }
            }
            if let Some((first, set)) = sets.first()
                && let Some((other, differs)) = sets.iter().find(|(_, s)| s != set)
            {
                return Err(format!(
                    "replicas of {key:?} differ: {first} holds {set:?}, {other} holds {differs:?}"
                ));
            }
            let seen: Vec<_> = sets
                .iter()
                .map(|(node, set)| (node, set.context()))
                .collect();
            for (op, _, dot) in self
                .must_survive()
                .filter(|(_, w, _)| w.key == *key && w.value.is_some())
            {
                for (node, clock) in &seen {
                    if !clock.contains(dot) {
                        return Err(format!(
                            "acknowledged write {op} ({dot:?}) of {key:?} is missing on owner {node}"
                        ));
                    }
                }
                report.acked_values += 1;
            }
            // Deletes undone: an acknowledged delete's context covers a value still held.
            for (op, d) in self
                .writes
                .iter()
                .filter(|(_, w)| w.acked && w.value.is_none() && !w.lost_to_crash && w.key == *key)
            {
                report.acked_deletes += 1;
                let undone = sets.iter().find_map(|(node, set)| {
                    set.versions()
                        .iter()
                        .find(|v| !v.is_tombstone() && d.context.contains(&v.dot))
                        .map(|v| (node, v))
                });
                if let Some((node, v)) = undone {
                    report.deletes_undone += 1;
                    undone_example.get_or_insert_with(|| {
                        let set = &sets.iter().find(|(n, _)| n == node).map(|(_, s)| s);
                        format!(
                            "delete {op} of {key:?} (context {:?}) undone: {node} holds {:?} ({:?}) in {set:?}",
                            d.context, v.value, v.dot
                        )
                    });
                }
            }
        }
        match undone_example {
            Some(example) => Err(format!(
                "{} of {} acknowledged deletes undone; first: {example}",
                report.deletes_undone, report.acked_deletes
            )),
            None => Ok(report),
        }
    }
}

/// What the final checks counted.
#[derive(Clone, Debug, Default)]
pub struct FinalReport {
    /// Acknowledged values found on every owner.
    pub acked_values: usize,
    /// Acknowledged deletes.
    pub acked_deletes: usize,
    /// Deletes undone (always 0 when the checks pass).
    pub deletes_undone: usize,
}

/// A node's stored set of `key` merged with the hints it holds for it.
fn everything_held(node: &SimNode, key: &[u8]) -> VersionSet {
    let mut set = node.store.get(key);
    let hints = node.hints.lock();
    if hints.holds(key) {
        set.merge(&hints.versions_for(key));
    }
    set
}
