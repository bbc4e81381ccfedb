//! The AntiEntropy actor: background rounds with one random peer per interval, the answering
//! side of peers' rounds, and the purge of tombstones every owner holds.
//!
//! Every decision is in [`crate::core::anti_entropy`]; this actor only times, sends and
//! counts. Rounds and purge passes run in spawned tasks (one of each at a time), their CPU
//! work (digest refreshes, merges) on the blocking pool, and each remote call has a timeout:
//! a peer that does not answer ends the round, which the next interval retries with some
//! peer. The per-peer digest caches live in [`NodeShared`], and the memory of purges in the
//! store, so a restarted actor keeps them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, pg};
use serde::Serialize;

use super::metrics::RoundLabels;
use super::origin;
use super::peers::Role;
use super::shared::NodeShared;
use super::wire::{self, AntiEntropyMsg, CallFailed, Payload, Vouched};
use crate::core::anti_entropy::{
    AeReply, AeRequest, Initiator, Replica, RoundStats, Scope, Step, pick_peer, respond,
};
use crate::core::ids::{Key, NodeId};
use crate::core::purge::{PurgeRound, PurgeScope, purge_agreed, purge_orders};

/// How long one remote step may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one round may go on; what is left is for the next round.
const ROUND_BUDGET: Duration = Duration::from_secs(60);
/// Purge passes run this often when anti-entropy rounds are off.
const PURGE_EVERY: Duration = Duration::from_millis(2000);
/// Purge candidates examined per pass.
const PURGE_BATCH: usize = 1024;
// A pass asks every member the digests of all its keys in one request.
const _: () = assert!(PURGE_BATCH <= crate::core::anti_entropy::DIGESTS_MAX);

/// Runs anti-entropy rounds and tombstone purges, and answers peers' rounds.
#[derive(Clone)]
pub struct AntiEntropyActor;

/// The actor's state.
pub struct AntiEntropyState {
    shared: Arc<NodeShared>,
    round_running: bool,
    purge_running: bool,
    purge_cursor: Option<Key>,
}

impl Actor for AntiEntropyActor {
    type Msg = AntiEntropyMsg;
    type State = AntiEntropyState;
    type Arguments = Arc<NodeShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<AntiEntropyMsg>,
        shared: Arc<NodeShared>,
    ) -> Result<AntiEntropyState, ActorProcessingErr> {
        pg::join(
            Role::AntiEntropy.group().to_string(),
            vec![myself.get_cell()],
        );
        let interval = match shared.config.anti_entropy.interval_ms {
            0 => PURGE_EVERY,
            ms => Duration::from_millis(ms),
        };
        myself.send_interval(interval, || AntiEntropyMsg::Tick(Payload::ok(())));
        Ok(AntiEntropyState {
            shared,
            round_running: false,
            purge_running: false,
            purge_cursor: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AntiEntropyMsg>,
        msg: AntiEntropyMsg,
        state: &mut AntiEntropyState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AntiEntropyMsg::Request(Payload(request), reply) => {
                answer(&state.shared, request, reply);
            }
            AntiEntropyMsg::Tick(_) => state.tick(&myself),
            AntiEntropyMsg::RoundDone(_) => state.round_running = false,
            AntiEntropyMsg::PurgeDone(Payload(cursor)) => {
                state.purge_running = false;
                state.purge_cursor = cursor.ok().flatten();
            }
        }
        Ok(())
    }
}

impl AntiEntropyState {
    fn tick(&mut self, myself: &ActorRef<AntiEntropyMsg>) {
        let shared = &self.shared;
        let ring = shared.ring.load();
        shared
            .digest_caches
            .keep_only(|peer| ring.ring.contains(peer));
        if shared.config.anti_entropy.interval_ms > 0
            && !self.round_running
            && let Some(peer) = peer_for_round(shared)
        {
            self.round_running = true;
            let (shared, myself) = (Arc::clone(shared), myself.clone());
            tokio::spawn(async move {
                let _ended = Ended {
                    myself,
                    purge_cursor: None,
                };
                let outcome = match run_round(&shared, &peer).await {
                    Ok(stats) => {
                        tracing::debug!(peer = %peer, ?stats, "anti-entropy round");
                        outcome_of(&stats)
                    }
                    Err(e) => {
                        tracing::debug!(peer = %peer, error = %e, "anti-entropy round failed");
                        "failed"
                    }
                };
                shared
                    .metrics
                    .anti_entropy_rounds
                    .get_or_create(&RoundLabels { outcome })
                    .inc();
            });
        }
        if !self.purge_running && shared.store.tombstone_count() > 0 {
            self.purge_running = true;
            let (shared, myself) = (Arc::clone(shared), myself.clone());
            let cursor = self.purge_cursor.clone();
            tokio::spawn(async move {
                let mut ended = Ended {
                    myself,
                    purge_cursor: Some(None),
                };
                ended.purge_cursor = Some(run_purge(&shared, cursor).await);
            });
        }
    }
}

/// Reports the end of a round (or, with a cursor, of a purge pass) when dropped, so that the
/// actor hears of it even if the task panicked and never waits for a task that is gone.
struct Ended {
    myself: ActorRef<AntiEntropyMsg>,
    purge_cursor: Option<Option<Key>>,
}

impl Drop for Ended {
    fn drop(&mut self) {
        let msg = match self.purge_cursor.take() {
            None => AntiEntropyMsg::RoundDone(Payload::ok(())),
            Some(cursor) => AntiEntropyMsg::PurgeDone(Payload::ok(cursor)),
        };
        let _ = self.myself.cast(msg);
    }
}

fn outcome_of(stats: &RoundStats) -> &'static str {
    if stats.in_sync {
        "in_sync"
    } else if stats.scope_mismatch {
        "scope_mismatch"
    } else {
        "repaired"
    }
}

/// A random ring member that is alive, connected and runs anti-entropy.
fn peer_for_round(shared: &NodeShared) -> Option<NodeId> {
    let ring = shared.ring.load();
    let candidates: Vec<NodeId> = ring
        .ring
        .nodes()
        .iter()
        .filter(|n| **n != shared.me && shared.is_live(n))
        .filter(|n| shared.peers.anti_entropy(n).is_some())
        .cloned()
        .collect();
    pick_peer(&candidates, &mut rand::rng())
}

/// Payload bytes of a message as sent: a tag byte, then postcard.
fn wire_size<T: Serialize>(value: &T) -> u64 {
    postcard::experimental::serialized_size(value).map_or(0, |n| n as u64 + 1)
}

/// Runs `f` on this node's side of a round with `peer`, digests refreshed, on the blocking
/// pool (a refresh after many writes, or a merge of many sets, is CPU work).
async fn on_replica<T: Send + 'static>(
    shared: &Arc<NodeShared>,
    peer: &NodeId,
    f: impl FnOnce(&Replica<'_>) -> T + Send + 'static,
) -> Result<T, String> {
    let (shared, peer) = (Arc::clone(shared), peer.clone());
    tokio::task::spawn_blocking(move || {
        let cache = shared.digest_caches.of(&shared.me, &peer);
        let mut digests = cache.lock().unwrap_or_else(|p| p.into_inner());
        let ring = shared.ring.load();
        let n = shared.quorum.load().n;
        digests.refresh(&shared.store, &ring.ring, n);
        let hinted = |key: &[u8]| shared.hints().holds(key);
        let replica = Replica {
            store: &shared.store,
            ring: &ring.ring,
            n,
            me: &shared.me,
            digests: &digests,
            hinted: &hinted,
            now_ms: NodeShared::wall_ms(),
        };
        f(&replica)
    })
    .await
    .map_err(|e| format!("anti-entropy task failed: {e}"))
}

/// Sends one request to `peer` and waits (bounded) for the answer.
async fn call(shared: &NodeShared, peer: &NodeId, request: AeRequest) -> Result<AeReply, String> {
    let remote = shared
        .peers
        .anti_entropy(peer)
        .ok_or_else(|| format!("{peer} has no anti-entropy actor connected"))?;
    // Without the peer's token it would refuse the request; the next round or pass retries.
    let token = shared
        .sessions
        .held(peer)
        .ok_or_else(|| format!("{peer} has not given this session a token yet"))?;
    let request = Vouched {
        token: Some(token),
        body: request,
    };
    shared
        .metrics
        .anti_entropy_bytes
        .inc_by(wire_size(&request.body));
    let ask = |reply| AntiEntropyMsg::Request(Payload::ok(request), reply);
    wire::call(&remote, ask, CALL_TIMEOUT)
        .await
        .map_err(|e| match e {
            CallFailed::Refused(e) => format!("{peer} refused: {e}"),
            CallFailed::NoAnswer => format!("{peer} did not answer"),
        })
}

/// One round with `peer`, this node initiating.
async fn run_round(shared: &Arc<NodeShared>, peer: &NodeId) -> Result<RoundStats, String> {
    let deadline = Instant::now() + ROUND_BUDGET;
    let (mut initiator, mut request) = on_replica(shared, peer, Initiator::start).await?;
    loop {
        let reply = call(shared, peer, request).await?;
        let (returned, next) = on_replica(shared, peer, move |replica| {
            let next = initiator.step(replica, reply);
            (initiator, next)
        })
        .await?;
        initiator = returned;
        let repaired = initiator.stats().repaired;
        match next {
            Ok(Some(next)) if Instant::now() < deadline => request = next,
            Ok(_) => break,
            Err(e) => {
                count_repaired(shared, repaired);
                return Err(e.to_string());
            }
        }
    }
    let stats = initiator.stats().clone();
    count_repaired(shared, stats.repaired);
    Ok(stats)
}

fn count_repaired(shared: &NodeShared, repaired: usize) {
    shared
        .metrics
        .anti_entropy_keys_repaired
        .inc_by(repaired as u64);
}

/// Answers a peer's request off the handler. A request its sender's session does not vouch
/// for is dropped (its `from` decides whose shared keys are compared, pushed and purged); one
/// from a node outside the ring (or from ourselves) is refused, so no one can make this node
/// keep caches for made-up peers.
fn answer(
    shared: &Arc<NodeShared>,
    request: Result<Vouched<AeRequest>, String>,
    reply: RpcReplyPort<Payload<AeReply>>,
) {
    let request = match request {
        Ok(Vouched { token, body }) => {
            let kind = match body.step {
                Step::Digests { .. } | Step::Purge { .. } => "purge",
                _ => "anti_entropy",
            };
            if !origin::vouched(shared, kind, &body.from, token.as_ref()) {
                let _ = reply.send(Payload::err("sender not vouched for by its session"));
                return;
            }
            body
        }
        Err(e) => {
            let _ = reply.send(Payload::err(e));
            return;
        }
    };
    let from = request.from.clone();
    if from == shared.me || !shared.ring.load().ring.contains(&from) {
        let _ = reply.send(Payload::err(format!("{from} is not a peer on this ring")));
        return;
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        // A purge asks which tombstones we hold; what we answer must be durable (on disk, or
        // with the OS under `--fsync never`), or a crash here after everyone purged would
        // bring back the value they covered. So the answer is read first, then made durable:
        // a write that lands after the sync began would be answered as held without being so.
        let held = matches!(request.step, Step::Digests { .. });
        let metrics_shared = Arc::clone(&shared);
        let answered = on_replica(&shared, &from, move |replica| respond(replica, request)).await;
        if held
            && answered.is_ok()
            && let Err(e) = shared.sync_store().await
        {
            let _ = reply.send(Payload::err(e.to_string()));
            return;
        }
        match answered {
            Ok(answer) => {
                let metrics = &metrics_shared.metrics;
                metrics.anti_entropy_bytes.inc_by(wire_size(&answer.reply));
                metrics
                    .anti_entropy_keys_repaired
                    .inc_by(answer.repaired as u64);
                metrics.tombstones_purged.inc_by(answer.purged as u64);
                let _ = reply.send(Payload::ok(answer.reply));
            }
            Err(e) => {
                let _ = reply.send(Payload::err(e));
            }
        }
    });
}

/// One purge pass over a page of candidates; returns where the next pass starts.
async fn run_purge(shared: &Arc<NodeShared>, cursor: Option<Key>) -> Option<Key> {
    let mut candidates = shared
        .store
        .tombstone_candidates(cursor.as_deref(), PURGE_BATCH);
    let next = if candidates.len() < PURGE_BATCH {
        // Wrapped: start again from the first candidates next time.
        if cursor.is_some() {
            let first = shared
                .store
                .tombstone_candidates(None, PURGE_BATCH - candidates.len());
            candidates.extend(first);
        }
        None
    } else {
        candidates.last().cloned()
    };
    let ring = shared.ring.load_full();
    let n = shared.quorum.load().n;
    let now = NodeShared::wall_ms();
    let grace = shared.config.anti_entropy.tombstone_grace_ms;
    let members: Vec<NodeId> = shared
        .membership
        .load()
        .data_holders()
        .map(|m| m.node.clone())
        .collect();
    let live = |node: &NodeId| shared.is_live(node) && shared.peers.anti_entropy(node).is_some();
    let hinted_here = |key: &[u8]| shared.hints().holds(key);
    let scope = PurgeScope {
        store: &shared.store,
        ring: &ring.ring,
        n,
        me: &shared.me,
        members: &members,
    };
    let round = PurgeRound::new(&scope, candidates, now, grace, live, hinted_here);
    if round.checks().is_empty() {
        return next;
    }
    // Our own tombstones count as held only once they are on disk (see `answer`).
    if shared.sync_store().await.is_err() {
        return next;
    }
    let scope = Scope::of(&ring.ring, n);
    let request = |step: Step| AeRequest {
        from: shared.me.clone(),
        scope,
        step,
    };
    let asks = round.questions().into_iter().map(|(node, keys)| {
        let request = request(Step::Digests { keys });
        async move {
            let answer = match call(shared, &node, request).await {
                Ok(AeReply::Digests(digests)) => Some(digests),
                _ => None,
            };
            (node, answer)
        }
    });
    let answers: HashMap<NodeId, Vec<u64>> = join_all(asks)
        .await
        .into_iter()
        .filter_map(|(node, answer)| answer.map(|a| (node, a)))
        .collect();
    let agreed = round.agreed(&answers);
    if agreed.is_empty() {
        return next;
    }
    // Every member holding a copy held exactly these tombstones: order the purge everywhere.
    // One that misses the order is caught up by anti-entropy through the memory of purges.
    let orders = purge_orders(&agreed).into_iter().map(|(node, keys)| {
        let request = request(Step::Purge { keys });
        async move { call(shared, &node, request).await }
    });
    join_all(orders).await;
    let purged = agreed
        .iter()
        .filter(|check| {
            let hinted = shared.hints().holds(&check.key);
            purge_agreed(&shared.store, &check.key, check.digest, hinted, now)
        })
        .count();
    shared.metrics.tombstones_purged.inc_by(purged as u64);
    tracing::debug!(purged, agreed = agreed.len(), "tombstones purged");
    next
}
