//! One simulated node: the state a node process holds, and its handlers.
//!
//! Every decision is the core's, made by the same calls the actors make: the Storage actor's
//! [`LocalReplica::serve`], the coordinator's [`WriteRun`] and [`ReadRun`] with
//! [`quorum::route`], the Gossip actor's [`Membership`] calls, the Replicator's
//! [`drain::plan`] and [`Handoff::scan`], the AntiEntropy actor's [`Initiator`], [`respond`]
//! and [`PurgeRound`]. What is the simulation's own is only the shell: answers arrive as
//! messages instead of futures, and timers as events.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;

use super::wire::{ClientOp, ClientWrite, Effect, Message, Outcome, Payload, Timer};
use crate::core::anti_entropy::{
    AeReply, AeRequest, Initiator, Replica, Scope, SharedDigests, Step, pick_peer, respond,
};
use crate::core::drain::{self, Delivery, DrainScope};
use crate::core::encoded_set::EncodedSet;
use crate::core::handoff::{Handoff, Transfer};
use crate::core::hints::{Hint, HintId, HintJournal, HintLimits, HintStore, SharedHints};
use crate::core::ids::{ActorId, Key, NodeId};
use crate::core::leave;
use crate::core::membership::{FailureTimeouts, Membership, RingStatus};
use crate::core::purge::{PurgeRound, PurgeScope, purge_agreed, purge_orders};
use crate::core::quorum::{self, Failure, Route};
use crate::core::read::ReadRun;
use crate::core::replica::{LocalReplica, ReplicaPut, ReplicaReply, ReplicaRequest};
use crate::core::ring::Ring;
use crate::core::store::{SetLimits, Store};
use crate::core::vclock::VClock;
use crate::core::version::VersionSet;
use crate::core::view::View;
use crate::core::volatile_disk::{Image, VolatileDisk, VolatileHints};
use crate::core::write::{Outgoing, WriteRequest, WriteRun};

/// What every simulated node runs with.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Replicas per key.
    pub n: usize,
    /// Ring tokens per node.
    pub vnodes: u32,
    /// Gossip round interval.
    pub gossip_ms: u64,
    /// Hint drain and handoff interval.
    pub replicate_ms: u64,
    /// Anti-entropy and purge interval.
    pub ae_ms: u64,
    /// How long an RPC waits for its answer.
    pub rpc_timeout_ms: u64,
    /// Tombstone grace.
    pub grace_ms: u64,
    /// Failure detection.
    pub timeouts: FailureTimeouts,
    /// Hint store bounds.
    pub hints: HintLimits,
    /// Sibling set bounds.
    pub set_limits: SetLimits,
    /// Hints and handoff keys per round.
    pub batch: usize,
    /// A deliberately broken replica, for proving the checks can fail: it answers a replica
    /// write as stored without storing it. Always false in the simulation's runs.
    pub acks_without_storing: bool,
    /// Data on a disk (`--data-dir`, `--fsync always`): a replica acks a write once a sync
    /// covered it, and a crash keeps what was synced. Otherwise in memory, lost at a crash.
    pub durable: bool,
    /// A deliberately broken durable node, for proving the checks can fail: it never syncs
    /// before an acknowledgement. Always false in the simulation's runs.
    pub acks_before_sync: bool,
}

/// What the durable node records of its membership (as `NodeShared::persist_membership`
/// does): the whole digest, written whenever who is in it or a ring status changed.
const META_MEMBERSHIP: &str = "membership";

/// Where a coordinated write's answer goes.
#[derive(Clone, Debug)]
enum Origin {
    Client,
    Forwarded { to: NodeId, rpc: u64 },
}

struct WriteState {
    run: WriteRun,
    /// The acks it waits for (W, capped by the ring's members), for the checks.
    required: usize,
    op: u64,
    origin: Origin,
    answered: bool,
    waiting: usize,
}

struct ReadState {
    run: ReadRun,
    op: u64,
    answered: bool,
    waiting: usize,
}

struct GroupState<T> {
    item: T,
    waiting: usize,
    all_acked: bool,
}

struct AeRound {
    peer: NodeId,
    initiator: Initiator,
}

struct PurgePass {
    round: PurgeRound,
    answers: HashMap<NodeId, Vec<u64>>,
    waiting: usize,
    ordering: bool,
    now_wall: u64,
}

/// An RPC waiting for its answer.
enum Pending {
    WriteAck(u64),
    ReadReply(u64),
    Delivery(u64),
    Transfer(u64),
    Repair,
    Forward(u64),
    Gossip,
    Ae,
    PurgeDigests,
    PurgeOrder,
}

/// A node process.
pub struct SimNode {
    /// Its name.
    pub name: NodeId,
    /// Its stored data.
    pub store: Store,
    /// Its hints.
    pub hints: SharedHints,
    /// How many times its hints changed (added, grown or acknowledged): what the checks look
    /// at to know whether to look again.
    pub hint_changes: Arc<AtomicU64>,
    /// Its membership table.
    pub membership: Membership,
    /// Its ring.
    pub ring: Ring,
    /// Its disk, when durable.
    disk: Option<Arc<VolatileDisk>>,
    /// The members and ring statuses it last recorded on its disk.
    recorded_layout: Vec<(NodeId, RingStatus)>,
    /// The peers it has a session with (the world keeps this up to date).
    pub connected: BTreeSet<NodeId>,
    /// How many times its ring changed: the checks excuse what a ring change may move.
    pub ring_changes: u64,
    ring_version: u64,
    handoff: Handoff,
    caches: BTreeMap<NodeId, SharedDigests>,
    rpcs: BTreeMap<u64, (NodeId, Pending)>,
    next_id: u64,
    writes: BTreeMap<u64, WriteState>,
    reads: BTreeMap<u64, ReadState>,
    deliveries: BTreeMap<u64, GroupState<Delivery>>,
    transfers: BTreeMap<u64, GroupState<Transfer>>,
    ae: Option<AeRound>,
    purge: Option<PurgePass>,
    purge_cursor: Option<Key>,
    wall_skew: u64,
    config: NodeConfig,
}

/// A hint journal that counts what it is told (every change of a node's hints is recorded
/// or forgotten through its journal), and writes it to the node's disk when it has one.
struct SimJournal {
    changes: Arc<AtomicU64>,
    disk: Option<VolatileHints>,
}

impl HintJournal for SimJournal {
    fn record(&self, hint: &Hint) -> Result<(), String> {
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.disk.as_ref().map_or(Ok(()), |disk| disk.record(hint))
    }

    fn forget(&self, id: HintId) -> bool {
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.disk.as_ref().is_none_or(|disk| disk.forget(id))
    }
}

impl SimNode {
    /// A node process starting at `now` with an empty store (a first start, or a restart of
    /// an in-memory node: a new incarnation). With seeds it joins; alone it makes a cluster.
    pub fn start(
        name: NodeId,
        incarnation: u64,
        joins: bool,
        wall_skew: u64,
        config: NodeConfig,
        now: u64,
    ) -> (SimNode, Vec<Effect>) {
        let membership = Self::membership_at(&name, incarnation, joins, &config, now);
        let actor = ActorId::new(name.clone(), incarnation << 20);
        let disk = config.durable.then(|| Arc::new(VolatileDisk::default()));
        let store = match &disk {
            Some(disk) => Store::open(Box::new(Arc::clone(disk)), actor, config.set_limits)
                .unwrap_or_else(|e| panic!("{name}: a new disk opens: {e}")),
            None => Store::with_limits(actor, config.set_limits),
        };
        let hints = HintStore::with_limits(config.hints);
        let mut node = SimNode::assemble(name, store, hints, disk, membership, wall_skew, config);
        node.sync_ring();
        (node, Self::first_timers())
    }

    /// A durable node's disk after a crash, opened again (what the node does first when it
    /// restarts): its store and hints as last synced, its actor id and dot lease as recorded.
    /// It does not run until [`SimNode::resume`].
    pub fn reopen(
        name: NodeId,
        image: Image,
        incarnation: u64,
        wall_skew: u64,
        config: NodeConfig,
        now: u64,
    ) -> SimNode {
        let mut hints = HintStore::with_limits(config.hints);
        for hint in image.hints() {
            hints.restore(hint.clone());
        }
        let disk = Arc::new(VolatileDisk::from_image(image));
        // A fresh actor id, which the recorded one replaces.
        let actor = ActorId::new(name.clone(), incarnation << 20);
        let store = Store::open_with_hints(
            Box::new(Arc::clone(&disk)),
            actor,
            config.set_limits,
            Some(&hints),
        )
        .unwrap_or_else(|e| panic!("{name}: a crashed disk reopens: {e}"));
        let membership = Self::membership_at(&name, incarnation, true, &config, now);
        SimNode::assemble(
            name,
            store,
            hints,
            Some(disk),
            membership,
            wall_skew,
            config,
        )
    }

    /// Starts a reopened node at `now`, as a restart does: a new incarnation of the member,
    /// which takes back the membership it recorded (its own ring status included).
    pub fn resume(&mut self, now: u64) -> Vec<Effect> {
        let incarnation = self.membership.own().incarnation;
        self.membership = Self::membership_at(&self.name, incarnation, true, &self.config, now);
        let recorded = self.store.engine().meta(META_MEMBERSHIP).ok().flatten();
        let mut fx = Self::first_timers();
        if let Some(bytes) = recorded {
            let digest: Vec<crate::core::membership::MemberDigest> = postcard::from_bytes(&bytes)
                .unwrap_or_else(|e| panic!("{}: recorded membership: {e}", self.name));
            let report = self.membership.restore(&digest, now);
            self.after_merge(report, &mut fx);
        }
        self.sync_ring();
        fx
    }

    /// Crashes this node: what its disk keeps, when it has one.
    pub fn crash(&self) -> Option<Image> {
        self.disk.as_ref().map(|disk| disk.crash())
    }

    fn membership_at(
        name: &NodeId,
        incarnation: u64,
        joins: bool,
        config: &NodeConfig,
        now: u64,
    ) -> Membership {
        Membership::new(
            name.clone(),
            format!("{name}:cluster"),
            format!("{name}:http"),
            config.vnodes,
            incarnation,
            config.timeouts,
            now,
        )
        .unwrap_or_else(|e| panic!("simulation timeouts are valid: {e}"))
        .with_ring(if joins {
            RingStatus::Joining
        } else {
            RingStatus::Valid
        })
        .with_n(config.n as u32)
    }

    fn assemble(
        name: NodeId,
        store: Store,
        hints: HintStore,
        disk: Option<Arc<VolatileDisk>>,
        membership: Membership,
        wall_skew: u64,
        config: NodeConfig,
    ) -> SimNode {
        let hint_changes = Arc::new(AtomicU64::new(0));
        let journal = SimJournal {
            changes: Arc::clone(&hint_changes),
            disk: disk.as_ref().map(|disk| VolatileHints(Arc::clone(disk))),
        };
        SimNode {
            store,
            hints: SharedHints::from_store(hints.with_journal(Box::new(journal))),
            hint_changes,
            membership,
            ring: Ring::default(),
            disk,
            recorded_layout: Vec::new(),
            connected: BTreeSet::new(),
            ring_changes: 0,
            ring_version: u64::MAX,
            handoff: Handoff::new(),
            caches: BTreeMap::new(),
            rpcs: BTreeMap::new(),
            next_id: 0,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            transfers: BTreeMap::new(),
            ae: None,
            purge: None,
            purge_cursor: None,
            wall_skew,
            name,
            config,
        }
    }

    fn first_timers() -> Vec<Effect> {
        vec![
            Effect::Timer {
                after: 1,
                timer: Timer::Gossip,
            },
            Effect::Timer {
                after: 2,
                timer: Timer::Replicate,
            },
            Effect::Timer {
                after: 3,
                timer: Timer::AntiEntropy,
            },
        ]
    }

    /// This node's ring status.
    pub fn ring_status(&self) -> RingStatus {
        self.membership.own().ring
    }

    /// Keys held here that the ring says belong elsewhere (handoff not done).
    pub fn misplaced_keys(&self, keys: &[Key]) -> Vec<Key> {
        let live = |_: &NodeId| true;
        let view = View {
            me: &self.name,
            ring: &self.ring,
            n: self.config.n,
            live: &live,
        };
        keys.iter()
            .filter(|k| self.store.digest(k) != 0 && !view.owns(k))
            .cloned()
            .collect()
    }

    fn wall(&self, now: u64) -> u64 {
        now + self.wall_skew
    }

    fn sync_ring(&mut self) {
        // Not only when the ring changes: a node's own leave ending (leaving -> left) changes
        // no ring, and must be on disk all the same.
        self.record_membership();
        if self.membership.version() == self.ring_version {
            return;
        }
        self.ring_version = self.membership.version();
        // Ring building is validated at construction: a failure here is a simulation bug.
        let ring = Ring::build(self.membership.ring_layout())
            .unwrap_or_else(|e| panic!("{}: ring: {e}", self.name));
        if ring != self.ring {
            self.ring_changes += 1;
            self.ring = ring;
        }
    }

    // Writes the membership to the disk when who is in it or a ring status changed, as the
    // node does (not for heartbeats). Recording it syncs everything written before it.
    fn record_membership(&mut self) {
        if self.disk.is_none() {
            return;
        }
        let unchanged = (self.membership.members())
            .map(|m| (&m.node, m.ring))
            .eq(self
                .recorded_layout
                .iter()
                .map(|(node, ring)| (node, *ring)));
        if unchanged {
            return;
        }
        let layout = (self.membership.members())
            .map(|m| (m.node.clone(), m.ring))
            .collect();
        let bytes = postcard::to_allocvec(&self.membership.digest())
            .unwrap_or_else(|e| panic!("{}: membership encodes: {e}", self.name));
        self.store
            .engine()
            .set_meta(META_MEMBERSHIP, &bytes)
            .unwrap_or_else(|e| panic!("{}: a running node's disk takes metadata: {e}", self.name));
        self.recorded_layout = layout;
    }

    // Makes what was written so far durable, as the node's group commit does before the
    // acknowledgements that wait for it. Nothing to do in memory.
    fn sync_disk(&self) {
        if self.config.acks_before_sync {
            return;
        }
        self.store
            .engine()
            .sync()
            .unwrap_or_else(|e| panic!("{}: a running node's disk syncs: {e}", self.name));
    }

    fn is_live(&self, node: &NodeId) -> bool {
        *node == self.name || (self.membership.is_reachable(node) && self.connected.contains(node))
    }

    /// Runs `f` with this node's routing view, as the node's `NodeShared::with_view` does.
    fn with_view<T>(&self, f: impl FnOnce(&View<'_>) -> T) -> T {
        let live = |n: &NodeId| self.is_live(n);
        let view = View {
            me: &self.name,
            ring: &self.ring,
            n: self.config.n,
            live: &live,
        };
        f(&view)
    }

    fn local(&self, now: u64) -> LocalReplica<'_> {
        LocalReplica {
            me: &self.name,
            store: &self.store,
            hints: &self.hints,
            member: !self.ring_status().is_final(),
            now_ms: now,
            ack_after_sync: self.config.durable,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends a request and arms its timeout.
    fn call(&mut self, to: NodeId, payload: Payload, pending: Pending, fx: &mut Vec<Effect>) {
        let rpc = self.id();
        self.rpcs.insert(rpc, (to.clone(), pending));
        fx.push(Effect::Send(Message {
            from: self.name.clone(),
            to,
            rpc,
            answer: false,
            payload,
        }));
        fx.push(Effect::Timer {
            after: self.config.rpc_timeout_ms,
            timer: Timer::Rpc(rpc),
        });
    }

    fn answer(&self, msg: &Message, payload: Payload, fx: &mut Vec<Effect>) {
        fx.push(Effect::Send(Message {
            from: self.name.clone(),
            to: msg.from.clone(),
            rpc: msg.rpc,
            answer: true,
            payload,
        }));
    }

    fn put(&mut self, out: Outgoing, pending: Pending, fx: &mut Vec<Effect>) {
        let payload = Payload::Replica(vec![ReplicaRequest::Put(out.put)]);
        self.call(out.to, payload, pending, fx);
    }

    // ---- clients ----

    /// A client operation reaches this node.
    pub fn on_client(&mut self, op: ClientOp, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.ring_status().is_final() {
            let op = match op {
                ClientOp::Get { op, .. } => op,
                ClientOp::Write(w) => w.op,
            };
            fx.push(Effect::Answer {
                op,
                outcome: Outcome::Failed("not a member".into()),
            });
            return fx;
        }
        match op {
            ClientOp::Get { op, key, r } => self.read(op, key, r, now, &mut fx),
            ClientOp::Write(write) => {
                let preference: Vec<NodeId> = match self.ring.preference_list(&write.key) {
                    Ok(list) => list.cloned().collect(),
                    Err(_) => Vec::new(),
                };
                let live = |n: &NodeId| self.is_live(n);
                match quorum::route(&self.name, &preference, self.config.n, live) {
                    Route::Coordinate => self.coordinate(write, Origin::Client, now, &mut fx),
                    Route::Forward(to) => {
                        let op = write.op;
                        self.call(to, Payload::Forward(write), Pending::Forward(op), &mut fx);
                    }
                    Route::Unavailable => fx.push(Effect::Answer {
                        op: write.op,
                        outcome: Outcome::Failed("unavailable".into()),
                    }),
                }
            }
        }
        fx
    }

    fn coordinate(&mut self, write: ClientWrite, origin: Origin, now: u64, fx: &mut Vec<Effect>) {
        let request = WriteRequest {
            key: write.key,
            value: write.value,
            context: write.context,
            w: write.w,
        };
        let wall = self.wall(now);
        let started = self.with_view(|view| WriteRun::start(&self.local(now), view, request, wall));
        let (mut run, outgoing) = match started {
            Ok(started) => started,
            Err(e) => {
                self.write_done(write.op, &origin, Err(e.to_string()), fx);
                return;
            }
        };
        if run.awaits_local_sync() {
            self.sync_disk();
            run.on_ack(&self.name);
        }
        fx.push(Effect::Coordinated {
            op: write.op,
            dot: run.dot().clone(),
        });
        let wid = self.id();
        let required = self.with_view(|view| view.quorum(write.w));
        let state = WriteState {
            run,
            required,
            op: write.op,
            origin,
            answered: false,
            waiting: outgoing.len(),
        };
        self.writes.insert(wid, state);
        for out in outgoing {
            self.put(out, Pending::WriteAck(wid), fx);
        }
        self.settle_write(wid, fx);
    }

    fn settle_write(&mut self, wid: u64, fx: &mut Vec<Effect>) {
        let Some(state) = self.writes.get_mut(&wid) else {
            return;
        };
        if !state.answered
            && let Some(outcome) = state.run.outcome()
        {
            state.answered = true;
            let (op, origin) = (state.op, state.origin.clone());
            if outcome.is_ok() {
                fx.push(Effect::Acked {
                    op,
                    required: state.required,
                });
            }
            let result = outcome.map_err(|s| format!("insufficient acks: {s}"));
            self.write_done(op, &origin, result, fx);
        }
        if self.writes.get(&wid).is_some_and(|s| s.waiting == 0) {
            self.writes.remove(&wid);
        }
    }

    fn write_done(
        &self,
        op: u64,
        origin: &Origin,
        result: Result<VClock, String>,
        fx: &mut Vec<Effect>,
    ) {
        match origin {
            Origin::Client => fx.push(Effect::Answer {
                op,
                outcome: match result {
                    Ok(context) => Outcome::Written(context),
                    Err(e) => Outcome::Failed(e),
                },
            }),
            Origin::Forwarded { to, rpc } => fx.push(Effect::Send(Message {
                from: self.name.clone(),
                to: to.clone(),
                rpc: *rpc,
                answer: true,
                payload: Payload::ForwardAnswer(result),
            })),
        }
    }

    fn read(&mut self, op: u64, key: Key, r: usize, now: u64, fx: &mut Vec<Effect>) {
        let started = self.with_view(|view| ReadRun::start(&self.local(now), view, key, r));
        let (run, ask) = match started {
            Ok(started) => started,
            Err(e) => {
                fx.push(Effect::Answer {
                    op,
                    outcome: Outcome::Failed(e.to_string()),
                });
                return;
            }
        };
        let rid = self.id();
        let key = run.key().clone();
        self.reads.insert(
            rid,
            ReadState {
                run,
                op,
                answered: false,
                waiting: ask.len(),
            },
        );
        for node in ask {
            let payload = Payload::Replica(vec![ReplicaRequest::Get(key.clone())]);
            self.call(node, payload, Pending::ReadReply(rid), fx);
        }
        self.settle_read(rid, now, fx);
    }

    fn settle_read(&mut self, rid: u64, now: u64, fx: &mut Vec<Effect>) {
        let Some(state) = self.reads.get_mut(&rid) else {
            return;
        };
        if !state.answered
            && let Some(outcome) = state.run.outcome()
        {
            state.answered = true;
            fx.push(Effect::Answer {
                op: state.op,
                outcome: match outcome {
                    Ok(set) => Outcome::Read(set),
                    Err(s) => Outcome::Failed(format!("insufficient replies: {s}")),
                },
            });
        }
        if self.reads.get(&rid).is_some_and(|s| s.waiting == 0)
            && let Some(state) = self.reads.remove(&rid)
        {
            let repairs = state.run.repairs(&self.local(now));
            for out in repairs {
                self.put(out, Pending::Repair, fx);
            }
        }
    }

    // ---- messages ----

    /// A message reaches this node.
    pub fn on_message(&mut self, msg: Message, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        if msg.answer {
            let Some((from, pending)) = self.rpcs.remove(&msg.rpc) else {
                return fx; // late: its timeout fired already
            };
            self.on_answer(from, pending, Ok(msg.payload), now, &mut fx);
        } else {
            self.on_request(msg, now, &mut fx);
        }
        self.sync_ring();
        fx
    }

    /// An RPC's timeout fired.
    fn on_timeout(&mut self, rpc: u64, now: u64, fx: &mut Vec<Effect>) {
        if let Some((from, pending)) = self.rpcs.remove(&rpc) {
            self.on_answer(from, pending, Err(Failure::Timeout), now, fx);
        }
    }

    fn on_request(&mut self, msg: Message, now: u64, fx: &mut Vec<Effect>) {
        match &msg.payload {
            Payload::Replica(requests) => {
                let replies = if self.config.acks_without_storing {
                    let serve = |r: &ReplicaRequest| match r {
                        ReplicaRequest::Put(_) => ReplicaReply::Stored,
                        _ => (self.local(now).serve(vec![r.clone()], usize::MAX).pop())
                            .unwrap_or_else(|| ReplicaReply::Refused("not served".into())),
                    };
                    requests.iter().map(serve).collect()
                } else {
                    self.local(now).serve(requests.clone(), usize::MAX)
                };
                // The Storage actor answers once a sync covered what it applied.
                self.sync_disk();
                self.answer(&msg, Payload::ReplicaAnswer(replies), fx);
            }
            Payload::Gossip(digest) => {
                self.merge(digest, now, fx);
                let mine = self.membership.digest();
                self.answer(&msg, Payload::GossipAnswer(mine), fx);
            }
            Payload::Ae(request) => {
                let reply = self.respond_ae(&msg.from, request.clone(), now);
                let held = matches!(request.step, Step::Digests { .. });
                self.answer(&msg, Payload::AeAnswer(reply), fx);
                if held {
                    fx.push(Effect::Unsynced);
                }
            }
            Payload::Forward(write) => {
                if self.ring_status().is_final() {
                    let refused = Payload::ForwardAnswer(Err("not a member".into()));
                    self.answer(&msg, refused, fx);
                    return;
                }
                let origin = Origin::Forwarded {
                    to: msg.from.clone(),
                    rpc: msg.rpc,
                };
                self.coordinate(write.clone(), origin, now, fx);
            }
            // Answers never arrive as requests.
            _ => {}
        }
    }

    fn on_answer(
        &mut self,
        from: NodeId,
        pending: Pending,
        answer: Result<Payload, Failure>,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        let stored = |answer: &Result<Payload, Failure>| {
            matches!(answer, Ok(Payload::ReplicaAnswer(replies))
                if matches!(replies.first(), Some(ReplicaReply::Stored)))
        };
        match pending {
            Pending::WriteAck(wid) => {
                let acked = stored(&answer);
                if let Some(state) = self.writes.get_mut(&wid) {
                    state.waiting -= 1;
                    if acked {
                        state.run.on_ack(&from);
                    } else {
                        state.run.on_failure(&from, failure_of(&answer));
                    }
                }
                self.settle_write(wid, fx);
            }
            Pending::ReadReply(rid) => {
                if let Some(state) = self.reads.get_mut(&rid) {
                    state.waiting -= 1;
                    match answer {
                        Ok(Payload::ReplicaAnswer(mut replies)) => match replies.pop() {
                            Some(ReplicaReply::Got(set)) => match set.decode() {
                                Ok(set) => {
                                    state.run.on_reply(&from, set);
                                }
                                Err(_) => {
                                    state.run.on_failure(&from, Failure::Error);
                                }
                            },
                            _ => {
                                state.run.on_failure(&from, Failure::Error);
                            }
                        },
                        other => {
                            state.run.on_failure(&from, failure_of(&other));
                        }
                    }
                }
                self.settle_read(rid, now, fx);
            }
            Pending::Delivery(id) => {
                let acked = stored(&answer);
                if let Some(group) = self.deliveries.get_mut(&id) {
                    group.waiting -= 1;
                    group.all_acked &= acked;
                    if group.waiting == 0
                        && let Some(group) = self.deliveries.remove(&id)
                    {
                        let gone = drain::gone_in(&self.membership);
                        let item = &group.item;
                        if drain::settle(&mut self.hints.lock(), item, group.all_acked, &gone) {
                            fx.push(Effect::Unsynced);
                        }
                    }
                }
            }
            Pending::Transfer(id) => {
                let acked = stored(&answer);
                if let Some(group) = self.transfers.get_mut(&id) {
                    group.waiting -= 1;
                    group.all_acked &= acked;
                    if group.waiting == 0
                        && let Some(group) = self.transfers.remove(&id)
                    {
                        // Taken out for the call: `with_view` borrows the whole node.
                        let mut handoff = std::mem::take(&mut self.handoff);
                        let gone = drain::gone_in(&self.membership);
                        let dropped = self.with_view(|view| {
                            handoff.finish(&self.store, view, &group.item, group.all_acked, &gone)
                        });
                        self.handoff = handoff;
                        if dropped {
                            fx.push(Effect::Unsynced);
                        }
                    }
                }
            }
            Pending::Repair => {}
            Pending::Forward(op) => {
                let outcome = match answer {
                    Ok(Payload::ForwardAnswer(Ok(context))) => Outcome::Written(context),
                    Ok(Payload::ForwardAnswer(Err(e))) => Outcome::Failed(e),
                    _ => Outcome::Failed("coordinator did not answer".into()),
                };
                fx.push(Effect::Answer { op, outcome });
            }
            Pending::Gossip => {
                if let Ok(Payload::GossipAnswer(digest)) = answer {
                    self.merge(&digest, now, fx);
                }
            }
            Pending::Ae => self.ae_step(answer, now, fx),
            Pending::PurgeDigests => {
                if let Some(pass) = &mut self.purge {
                    pass.waiting -= 1;
                    if let Ok(Payload::AeAnswer(Ok(AeReply::Digests(digests)))) = answer {
                        pass.answers.insert(from, digests);
                    }
                }
                self.purge_step(fx);
            }
            Pending::PurgeOrder => {
                if let Some(pass) = &mut self.purge {
                    pass.waiting -= 1;
                }
                self.purge_step(fx);
            }
        }
    }

    // ---- timers ----

    /// A timer of this node fired.
    pub fn on_timer(&mut self, timer: Timer, now: u64, rng: &mut impl Rng) -> Vec<Effect> {
        let mut fx = Vec::new();
        match timer {
            Timer::Rpc(rpc) => self.on_timeout(rpc, now, &mut fx),
            Timer::Gossip => {
                self.gossip_round(now, rng, &mut fx);
                fx.push(Effect::Timer {
                    after: self.config.gossip_ms,
                    timer: Timer::Gossip,
                });
            }
            Timer::Replicate => {
                if matches!(self.ring_status(), RingStatus::Valid | RingStatus::Leaving) {
                    self.drain_hints(now, &mut fx);
                    self.hand_off(&mut fx);
                }
                fx.push(Effect::Timer {
                    after: self.config.replicate_ms,
                    timer: Timer::Replicate,
                });
            }
            Timer::AntiEntropy => {
                self.anti_entropy(now, rng, &mut fx);
                fx.push(Effect::Timer {
                    after: self.config.ae_ms,
                    timer: Timer::AntiEntropy,
                });
            }
        }
        self.sync_ring();
        fx
    }

    // ---- gossip (the Gossip actor's round) ----

    fn gossip_round(&mut self, now: u64, rng: &mut impl Rng, fx: &mut Vec<Effect>) {
        let leaving = self.ring_status() == RingStatus::Leaving;
        let progress = crate::core::membership::HandoffProgress {
            handed: self.handoff.handed(),
            remaining: if leaving {
                (self.store.len() + self.hints.lock().len()) as u64
            } else {
                self.handoff.remaining()
            },
        };
        self.membership.tick(now);
        self.membership.set_handoff_progress(progress);
        self.membership.detect(now);
        let handoff_idle = self.handoff.in_flight() == 0;
        leave::finish_if_drained(&mut self.membership, &self.store, &self.hints, handoff_idle);
        self.sync_ring();
        let connected: Vec<NodeId> = self.connected.iter().cloned().collect();
        if let Some(peer) = self.membership.pick_gossip_peer(&connected, rng) {
            let digest = self.membership.digest();
            self.call(peer, Payload::Gossip(digest), Pending::Gossip, fx);
        }
    }

    fn merge(
        &mut self,
        digest: &[crate::core::membership::MemberDigest],
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        let report = self.membership.merge(digest, now);
        self.after_merge(report, fx);
    }

    fn after_merge(&mut self, report: crate::core::membership::MergeReport, fx: &mut Vec<Effect>) {
        if let Some(fatal) = report.fatal {
            fx.push(Effect::Stop(fatal.to_string()));
        }
        self.sync_ring();
    }

    // ---- replicator ----

    fn drain_hints(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let leaving = self.ring_status() == RingStatus::Leaving;
        let deliveries = self.with_view(|view| {
            let gone = drain::gone_in(&self.membership);
            let scope = DrainScope {
                view: *view,
                gone: &gone,
                leaving,
            };
            drain::plan(&mut self.hints.lock(), &scope, self.config.batch)
        });
        for delivery in deliveries {
            let id = self.id();
            // What goes to this node's own store is applied and synced at once, as the
            // Replicator's delivery does; only the other sends wait for answers.
            let (sends, here) = drain::apply_here(&self.local(now), delivery.sends.clone());
            let kept_here = here.is_none_or(|applied| {
                self.sync_disk();
                applied.is_ok()
            });
            if sends.is_empty() {
                let gone = drain::gone_in(&self.membership);
                if drain::settle(&mut self.hints.lock(), &delivery, kept_here, &gone) {
                    fx.push(Effect::Unsynced);
                }
                continue;
            }
            self.deliveries.insert(
                id,
                GroupState {
                    item: delivery,
                    waiting: sends.len(),
                    all_acked: kept_here,
                },
            );
            for out in sends {
                self.put(out, Pending::Delivery(id), fx);
            }
        }
    }

    fn hand_off(&mut self, fx: &mut Vec<Effect>) {
        let mut handoff = std::mem::take(&mut self.handoff);
        let transfers = self.with_view(|view| {
            handoff.scan(&self.store, view, self.ring_version, self.config.batch)
        });
        self.handoff = handoff;
        for transfer in transfers {
            let id = self.id();
            let versions = EncodedSet::encode(&transfer.versions);
            let sends: Vec<Outgoing> = transfer
                .targets
                .iter()
                .map(|t| Outgoing {
                    to: t.node.clone(),
                    put: ReplicaPut {
                        key: transfer.key.clone(),
                        versions: versions.clone(),
                        hint_for: t.stands_in_for.clone(),
                    },
                })
                .collect();
            self.transfers.insert(
                id,
                GroupState {
                    item: transfer,
                    waiting: sends.len(),
                    all_acked: true,
                },
            );
            for out in sends {
                self.put(out, Pending::Transfer(id), fx);
            }
        }
    }

    // ---- anti-entropy and purge ----

    fn anti_entropy(&mut self, now: u64, rng: &mut impl Rng, fx: &mut Vec<Effect>) {
        let ring = &self.ring;
        self.caches.retain(|peer, _| ring.contains(peer));
        if self.ae.is_none() && !self.ring_status().is_final() {
            let candidates: Vec<NodeId> = self
                .ring
                .nodes()
                .iter()
                .filter(|n| **n != self.name && self.is_live(n))
                .cloned()
                .collect();
            if let Some(peer) = pick_peer(&candidates, rng) {
                let request = self.with_replica(&peer, now, Initiator::start);
                let (initiator, request) = request;
                self.ae = Some(AeRound {
                    peer: peer.clone(),
                    initiator,
                });
                self.call(peer, Payload::Ae(request), Pending::Ae, fx);
            }
        }
        if self.purge.is_none()
            && self.store.tombstone_count() > 0
            && !self.ring_status().is_final()
        {
            self.start_purge(now, fx);
        }
    }

    fn with_replica<T>(&mut self, peer: &NodeId, now: u64, f: impl FnOnce(&Replica<'_>) -> T) -> T {
        let cache = self
            .caches
            .entry(peer.clone())
            .or_insert_with(|| SharedDigests::new(self.name.clone(), peer.clone()));
        cache.refresh(&self.store, &self.ring, self.config.n);
        let hints = &self.hints;
        let hinted = |key: &[u8]| hints.lock().holds(key);
        let replica = Replica {
            store: &self.store,
            ring: &self.ring,
            n: self.config.n,
            me: &self.name,
            digests: cache,
            hinted: &hinted,
            now_ms: now + self.wall_skew,
        };
        f(&replica)
    }

    fn respond_ae(
        &mut self,
        from: &NodeId,
        request: AeRequest,
        now: u64,
    ) -> Result<AeReply, String> {
        if *from == self.name || !self.ring.contains(from) {
            return Err(format!("{from} is not a peer on this ring"));
        }
        // What a purge check is answered must be on disk (read first, then synced).
        let held = matches!(request.step, Step::Digests { .. });
        let answer = self.with_replica(from, now, |replica| respond(replica, request));
        if held {
            self.sync_disk();
        }
        Ok(answer.reply)
    }

    fn ae_step(&mut self, answer: Result<Payload, Failure>, now: u64, fx: &mut Vec<Effect>) {
        let Some(round) = self.ae.take() else {
            return;
        };
        let Ok(Payload::AeAnswer(Ok(reply))) = answer else {
            return; // refused or silent: the round ends, the next tick starts another
        };
        let AeRound {
            peer,
            mut initiator,
        } = round;
        let next = self.with_replica(&peer, now, |replica| initiator.step(replica, reply));
        if let Ok(Some(request)) = next {
            self.ae = Some(AeRound {
                peer: peer.clone(),
                initiator,
            });
            self.call(peer, Payload::Ae(request), Pending::Ae, fx);
        }
    }

    fn start_purge(&mut self, now: u64, fx: &mut Vec<Effect>) {
        const PAGE: usize = 64;
        let mut candidates = self
            .store
            .tombstone_candidates(self.purge_cursor.as_deref(), PAGE);
        let next = if candidates.len() < PAGE {
            if self.purge_cursor.is_some() {
                candidates.extend(
                    self.store
                        .tombstone_candidates(None, PAGE - candidates.len()),
                );
            }
            None
        } else {
            candidates.last().cloned()
        };
        self.purge_cursor = next;
        let members: Vec<NodeId> = self
            .membership
            .data_holders()
            .map(|m| m.node.clone())
            .collect();
        let wall = now + self.wall_skew;
        let round = {
            let live = |n: &NodeId| self.is_live(n);
            let hints = &self.hints;
            let hinted_here = |key: &[u8]| hints.lock().holds(key);
            let scope = PurgeScope {
                store: &self.store,
                ring: &self.ring,
                n: self.config.n,
                me: &self.name,
                members: &members,
            };
            PurgeRound::new(
                &scope,
                candidates,
                wall,
                self.config.grace_ms,
                live,
                hinted_here,
            )
        };
        if round.checks().is_empty() {
            return;
        }
        // Our own tombstones count as held only once they are on disk.
        self.sync_disk();
        let questions = round.questions();
        let scope = Scope::of(&self.ring, self.config.n);
        self.purge = Some(PurgePass {
            round,
            answers: HashMap::new(),
            waiting: questions.len(),
            ordering: false,
            now_wall: wall,
        });
        for (node, keys) in questions {
            let request = AeRequest {
                from: self.name.clone(),
                scope,
                step: Step::Digests { keys },
            };
            self.call(node, Payload::Ae(request), Pending::PurgeDigests, fx);
        }
    }

    fn purge_step(&mut self, fx: &mut Vec<Effect>) {
        let Some(pass) = &mut self.purge else {
            return;
        };
        if pass.waiting > 0 {
            return;
        }
        if pass.ordering {
            // Every order answered or timed out: purge here too.
            let Some(pass) = self.purge.take() else {
                return;
            };
            for agreed in pass.round.agreed(&pass.answers) {
                // What a purge deletes: the set's tombstones (the whole set, or the agreed
                // tombstones beside a write taken since the check).
                let tombstones = VersionSet::from_versions(
                    (self.store.get(&agreed.key).versions().iter())
                        .filter(|v| v.is_tombstone())
                        .cloned(),
                );
                let hinted = self.hints.lock().holds(&agreed.key);
                if purge_agreed(
                    &self.store,
                    &agreed.key,
                    agreed.digest,
                    hinted,
                    pass.now_wall,
                ) {
                    fx.push(Effect::Purged {
                        key: agreed.key.clone(),
                        context: tombstones.context(),
                    });
                }
            }
            return;
        }
        let agreed = pass.round.agreed(&pass.answers);
        if agreed.is_empty() {
            self.purge = None;
            return;
        }
        let orders = purge_orders(&agreed);
        pass.ordering = true;
        pass.waiting = orders.len();
        let scope = Scope::of(&self.ring, self.config.n);
        for (node, keys) in orders {
            let request = AeRequest {
                from: self.name.clone(),
                scope,
                step: Step::Purge { keys },
            };
            self.call(node, Payload::Ae(request), Pending::PurgeOrder, fx);
        }
        self.purge_step(fx);
    }

    // ---- operators ----

    /// An operator drains this node.
    pub fn leave(&mut self) -> bool {
        let ok = self.membership.start_leaving().is_ok_and(|c| !c.is_empty());
        self.sync_ring();
        ok
    }

    /// An operator declares `node` gone for good, through this node.
    pub fn remove(&mut self, node: &NodeId) -> bool {
        let ok = self.membership.remove(node).is_ok_and(|c| !c.is_empty());
        self.sync_ring();
        ok
    }
}

fn failure_of(answer: &Result<Payload, Failure>) -> Failure {
    match answer {
        Err(kind) => *kind,
        Ok(_) => Failure::Error,
    }
}
