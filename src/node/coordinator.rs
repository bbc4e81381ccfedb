//! Coordination of client requests: where a request is served, the fan-out to replicas, the
//! quorum, and read repair.
//!
//! A write is coordinated by a node among the key's live top N (or, if none is live, the first
//! live fallback); any other node forwards it there. The coordinator makes the dot and applies
//! the write to its own set in one step, then sends that whole set to the other targets and
//! answers at the W-th ack. Reads are coordinated wherever they arrive: they make no dot, so
//! forwarding would only add a hop. The fan-out runs in a spawned task that outlives the
//! answer, so every replica still receives its write and late read replies still feed repair.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ractor::{Actor, ActorProcessingErr, ActorRef, pg};
use tokio::sync::oneshot;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::peers::Role;
use super::shared::{NodeShared, RingView};
use super::storage_actor::local_read;
use super::wire::{CoordinatorMsg, ForwardedWrite, Payload, ReplicaPut};
use crate::api::{ClientError, Context, ContextError, GetResult, validate_key, validate_value};
use crate::config::MAX_SET_BYTES;
use crate::core::hash::stable_hash;
use crate::core::ids::{Key, NodeId};
use crate::core::quorum::{
    Failure, Progress, QuorumTracker, Route, Shortfall, Target, route, select_targets,
};
use crate::core::version::VersionSet;

// A forwarded write gets this much beyond its budget, for the answer's trip back.
const FORWARD_MARGIN: Duration = Duration::from_millis(250);

/// Coordinates writes that other nodes forward here.
#[derive(Clone)]
pub struct CoordinatorActor;

impl Actor for CoordinatorActor {
    type Msg = CoordinatorMsg;
    type State = Arc<NodeShared>;
    type Arguments = Arc<NodeShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        shared: Arc<NodeShared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        pg::join(
            Role::Coordinator.group().to_string(),
            vec![myself.get_cell()],
        );
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<CoordinatorMsg>,
        msg: CoordinatorMsg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CoordinatorMsg::WriteBatch(Payload(writes), reply) => {
                // Off the handler: the fan-outs wait on the network.
                let shared = Arc::clone(shared);
                tokio::spawn(async move {
                    let answer = match writes {
                        Ok(writes) => Ok(futures::future::join_all(
                            writes
                                .into_iter()
                                .map(|write| serve_forwarded(&shared, write)),
                        )
                        .await),
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(Payload(answer));
                });
            }
            CoordinatorMsg::Read(Payload(read), reply) => {
                let shared = Arc::clone(shared);
                tokio::spawn(async move {
                    let answer = match read {
                        Ok(read) => read_set(&shared, read.key, read.r).await,
                        Err(e) => Err(ClientError::Internal(e)),
                    };
                    let _ = reply.send(Payload::ok(answer));
                });
            }
        }
        Ok(())
    }
}

/// Writes `value` (`None`: a tombstone) under `context`; answers with a context covering it.
pub async fn write(
    shared: &Arc<NodeShared>,
    key: Key,
    value: Option<Bytes>,
    context: Context,
    w: Option<usize>,
) -> Result<Context, ClientError> {
    validate_key(&key)?;
    if let Some(value) = &value {
        validate_value(value)?;
    }
    let quorum = **shared.quorum.load();
    let w = quorum_size(w, quorum.w, quorum.n, "w")?;
    let deadline = Instant::now() + Duration::from_millis(quorum.put_timeout_ms);
    let mut excluded: Vec<NodeId> = Vec::new();
    loop {
        let ring = shared.ring.load_full();
        let preference = ring
            .ring
            .preference_list(&key)
            .map_err(|_| ClientError::Unavailable("the ring is empty".into()))?;
        let live = |node: &NodeId| shared.is_live(node) && !excluded.contains(node);
        match route(&shared.me, preference, quorum.n, live) {
            Route::Coordinate => {
                return coordinate_write(
                    shared, &ring, key, value, &context, w, quorum.n, deadline,
                )
                .await;
            }
            Route::Forward(node) => {
                record_forward(&node);
                let forwarded = ForwardedWrite {
                    key: key.clone(),
                    value: value.clone(),
                    context: context.clone(),
                    w: Some(w),
                    budget_ms: remaining_ms(deadline),
                };
                match forward(shared, &node, forwarded, deadline).await {
                    Some(answer) => return answer,
                    // Unreachable before the deadline: try the next coordinator.
                    None if Instant::now() < deadline => excluded.push(node),
                    None => {
                        return Err(ClientError::Unavailable(format!(
                            "coordinator {node} did not answer in time"
                        )));
                    }
                }
            }
            Route::Unavailable => {
                return Err(ClientError::Unavailable("no live node for this key".into()));
            }
        }
    }
}

/// Deletes `key` by writing a tombstone over what `context` covers. Without a context the
/// key is read first (as Riak's clients do), so the tombstone covers what is visible now; a
/// write concurrent with the delete still survives as a sibling.
pub async fn delete(
    shared: &Arc<NodeShared>,
    key: Key,
    context: Context,
    w: Option<usize>,
) -> Result<(), ClientError> {
    let context = if context.is_empty() {
        match read(shared, key.clone(), None).await? {
            GetResult::NotFound { context } if context.is_empty() => return Ok(()),
            found => found.context().clone(),
        }
    } else {
        context
    };
    write(shared, key, None, context, w).await.map(|_| ())
}

/// Reads `key` from R replicas (or `r`), merging their sets, and repairs stale replicas.
pub async fn read(
    shared: &Arc<NodeShared>,
    key: Key,
    r: Option<usize>,
) -> Result<GetResult, ClientError> {
    read_set(shared, key, r)
        .await
        .map(|set| GetResult::from_set(&set))
}

/// [`read`], answering with the merged set of the replies.
pub async fn read_set(
    shared: &Arc<NodeShared>,
    key: Key,
    r: Option<usize>,
) -> Result<VersionSet, ClientError> {
    validate_key(&key)?;
    let quorum = **shared.quorum.load();
    let r = quorum_size(r, quorum.r, quorum.n, "r")?;
    let deadline = Instant::now() + Duration::from_millis(quorum.get_timeout_ms);
    let ring = shared.ring.load_full();
    let preference = ring
        .ring
        .preference_list(&key)
        .map_err(|_| ClientError::Unavailable("the ring is empty".into()))?;
    let targets = select_targets(preference, quorum.n, |n| shared.is_live(n));
    record_fan_out(&shared.me, &targets, r);
    let mut tracker = new_tracker(r, &targets)?;
    let owners: Vec<NodeId> = targets
        .iter()
        .filter(|t| t.stands_in_for.is_none())
        .map(|t| t.node.clone())
        .collect();
    let mut calls: Vec<Call<VersionSet>> = Vec::new();
    for target in targets {
        if target.node == shared.me {
            tracker.on_reply(&shared.me, local_read(shared, &key));
            continue;
        }
        let reply = shared.replicas.get(&target.node, key.clone(), deadline);
        calls.push(Box::pin(async move { (target.node, reply.await) }));
    }
    let repair = {
        let (shared, key) = (Arc::clone(shared), key.clone());
        move |replies: Vec<(NodeId, VersionSet)>| read_repair(&shared, key, &owners, replies)
    };
    let replied = drive(tracker, calls, repair).await;
    record_answers("replies", &replied);
    match replied {
        Ok(Ok(replies)) => Ok(merge_all(replies.iter().map(|(_, set)| set))),
        Ok(Err(shortfall)) => Err(ClientError::InsufficientReplies(shortfall)),
        Err(_) => Err(ClientError::Internal(
            "read fan-out ended without an answer".into(),
        )),
    }
}

/// Coordinates one write of a forwarded batch inside its own `kv_forwarded` span.
async fn serve_forwarded(
    shared: &Arc<NodeShared>,
    write: ForwardedWrite,
) -> Result<Context, ClientError> {
    let span = forwarded_span(&shared.me, &write);
    let answer = coordinate_forwarded(shared, write)
        .instrument(span.clone())
        .await;
    span.record(
        "outcome",
        match &answer {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        },
    );
    answer
}

/// A forwarded write is coordinated here, whatever this node's view of the ring: it must not
/// bounce between nodes whose views differ for a moment.
async fn coordinate_forwarded(
    shared: &Arc<NodeShared>,
    write: ForwardedWrite,
) -> Result<Context, ClientError> {
    validate_key(&write.key)?;
    if let Some(value) = &write.value {
        validate_value(value)?;
    }
    let quorum = **shared.quorum.load();
    let w = quorum_size(write.w, quorum.w, quorum.n, "w")?;
    let deadline = Instant::now() + Duration::from_millis(write.budget_ms);
    let ring = shared.ring.load_full();
    coordinate_write(
        shared,
        &ring,
        write.key,
        write.value,
        &write.context,
        w,
        quorum.n,
        deadline,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn coordinate_write(
    shared: &Arc<NodeShared>,
    ring: &RingView,
    key: Key,
    value: Option<Bytes>,
    context: &Context,
    w: usize,
    n: usize,
    deadline: Instant,
) -> Result<Context, ClientError> {
    let preference = ring
        .ring
        .preference_list(&key)
        .map_err(|_| ClientError::Unavailable("the ring is empty".into()))?;
    let targets = select_targets(preference, n, |node| shared.is_live(node));
    check_set_size(shared, &key, context, value.as_ref())?;
    let now = NodeShared::wall_ms();
    let coordinated = shared
        .store
        .coordinate(&key, context.clock(), value, now)
        .map_err(|_| ClientError::InvalidContext(ContextError::Malformed))?;
    let mut answer = context.clock().clone();
    answer.add_dot(&coordinated.dot, now);

    tracing::debug!(dot = %coordinated.dot.counter, "coordinating write");
    record_fan_out(&shared.me, &targets, w);
    let mut tracker = new_tracker(w, &targets)?;
    let mut calls: Vec<Call<()>> = Vec::new();
    for target in targets {
        if target.node == shared.me {
            // Applied above; as a fallback we also keep it as a hint for the absent owner.
            if let Some(owner) = target.stands_in_for {
                shared.hints().add(
                    owner,
                    key.clone(),
                    coordinated.versions.clone(),
                    shared.mono_ms(),
                );
            }
            tracker.on_reply(&shared.me, ());
            continue;
        }
        let put = ReplicaPut {
            key: key.clone(),
            versions: coordinated.versions.clone(),
            hint_for: target.stands_in_for.clone(),
        };
        let ack = shared.replicas.put(&target.node, put, deadline);
        calls.push(Box::pin(async move { (target.node, ack.await) }));
    }
    let key_hash = stable_hash(&key);
    let finished = move |acks: Vec<(NodeId, ())>| {
        let acked: Vec<&NodeId> = acks.iter().map(|(n, _)| n).collect();
        tracing::debug!(key_hash, ?acked, "write fan-out finished");
    };
    let acked = drive(tracker, calls, finished).await;
    record_answers("acks", &acked);
    match acked {
        Ok(Ok(_)) => Ok(Context::from_clock(answer)),
        Ok(Err(shortfall)) => Err(ClientError::InsufficientAcks(shortfall)),
        Err(_) => Err(ClientError::Internal(
            "write fan-out ended without an answer".into(),
        )),
    }
}

/// The debug span of a write that another node forwarded here, with the fields of the client's
/// `kv_request` span that this node fills in.
fn forwarded_span(me: &NodeId, write: &ForwardedWrite) -> Span {
    tracing::debug_span!(
        "kv_forwarded",
        op = if write.value.is_some() { "put" } else { "delete" },
        key_hash = stable_hash(&write.key),
        node = %me,
        coordinator = Empty,
        targets = Empty,
        required = Empty,
        acks = Empty,
        outcome = Empty,
    )
}

/// The request span being recorded, if any. Checked before any field value is built, so a
/// disabled span costs no allocation; a span of the caller's own is left alone.
fn request_span() -> Option<Span> {
    if !tracing::level_enabled!(tracing::Level::DEBUG) {
        return None;
    }
    let span = Span::current();
    let ours = matches!(
        span.metadata().map(|m| m.name()),
        Some("kv_request" | "kv_forwarded")
    );
    (ours && !span.is_disabled()).then_some(span)
}

/// Records that the request was handed to `node` to coordinate.
fn record_forward(node: &NodeId) {
    if let Some(span) = request_span() {
        span.record("coordinator", node.as_str());
    }
}

/// Records this node as the coordinator, the replicas it contacts and the quorum it needs.
fn record_fan_out(me: &NodeId, targets: &[Target], required: usize) {
    let Some(span) = request_span() else {
        return;
    };
    let mut list = String::new();
    for (i, target) in targets.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str(target.node.as_str());
        if let Some(owner) = &target.stands_in_for {
            list.push_str("(for ");
            list.push_str(owner.as_str());
            list.push(')');
        }
    }
    span.record("coordinator", me.as_str());
    span.record("targets", list.as_str());
    span.record("required", required);
}

/// Records how many successful answers (`acks` or `replies`) the request had when it answered.
fn record_answers<T, E>(field: &str, answer: &Result<Result<Vec<T>, Shortfall>, E>) {
    let Some(span) = request_span() else {
        return;
    };
    let count = match answer {
        Ok(Ok(answers)) => answers.len(),
        Ok(Err(shortfall)) => shortfall.succeeded,
        Err(_) => 0,
    };
    span.record(field, count);
}

/// Refuses a write that would grow the key's siblings past [`MAX_SET_BYTES`].
fn check_set_size(
    shared: &NodeShared,
    key: &[u8],
    context: &Context,
    value: Option<&Bytes>,
) -> Result<(), ClientError> {
    let current = shared.store.get(key);
    let surviving: usize = current
        .versions()
        .iter()
        .filter(|v| !context.clock().contains(&v.dot))
        .map(|v| v.value.as_ref().map_or(0, Bytes::len))
        .sum();
    let size = surviving + value.map_or(0, Bytes::len);
    if size > MAX_SET_BYTES {
        return Err(ClientError::SetTooLarge {
            size,
            max: MAX_SET_BYTES,
        });
    }
    Ok(())
}

/// Sends a write to `node`'s coordinator; `None` when it could not be asked or did not answer.
pub(super) async fn forward(
    shared: &NodeShared,
    node: &NodeId,
    write: ForwardedWrite,
    deadline: Instant,
) -> Option<Result<Context, ClientError>> {
    if !shared.peers.connected(node) {
        return None;
    }
    shared.metrics.forwarded.inc();
    shared
        .forwards
        .write(node, write, deadline + FORWARD_MARGIN)
        .await
        .ok()
}

type Call<T> = Pin<Box<dyn Future<Output = (NodeId, Result<T, Failure>)> + Send>>;

/// Drives the calls in a task of their own, feeding the tracker. The receiver gets the replies
/// at the quorum (or the shortfall once it is out of reach); the task goes on until every call
/// ended and then hands all replies to `finally`.
fn drive<T: Clone + Send + 'static>(
    mut tracker: QuorumTracker<T>,
    calls: Vec<Call<T>>,
    finally: impl FnOnce(Vec<(NodeId, T)>) + Send + 'static,
) -> oneshot::Receiver<Result<Vec<(NodeId, T)>, Shortfall>> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let settle = |tracker: &QuorumTracker<T>, tx: &mut Option<oneshot::Sender<_>>| {
            let answer = match tracker.progress() {
                Progress::Pending => return,
                Progress::Done => Ok(tracker.replies().to_vec()),
                Progress::Failed => Err(tracker.shortfall()),
            };
            if let Some(tx) = tx.take() {
                let _ = tx.send(answer);
            }
        };
        settle(&tracker, &mut tx);
        let mut calls: FuturesUnordered<Call<T>> = calls.into_iter().collect();
        while let Some((node, result)) = calls.next().await {
            match result {
                Ok(reply) => tracker.on_reply(&node, reply),
                Err(kind) => tracker.on_failure(&node, kind),
            };
            settle(&tracker, &mut tx);
        }
        finally(tracker.into_replies());
    });
    rx
}

/// Sends the reconciled set to every owner whose reply differed from it.
fn read_repair(
    shared: &Arc<NodeShared>,
    key: Key,
    owners: &[NodeId],
    replies: Vec<(NodeId, VersionSet)>,
) {
    let merged = merge_all(replies.iter().map(|(_, set)| set));
    let digest = merged.digest();
    for (node, set) in replies {
        if !owners.contains(&node) || set.digest() == digest {
            continue;
        }
        shared.metrics.read_repairs.inc();
        if node == shared.me {
            shared.store.merge(&key, &merged);
            continue;
        }
        let put = ReplicaPut {
            key: key.clone(),
            versions: merged.clone(),
            hint_for: None,
        };
        let deadline = Instant::now() + Duration::from_millis(shared.quorum.load().put_timeout_ms);
        // Awaited by a task of its own: a request nobody waits for is never sent.
        tokio::spawn(shared.replicas.put(&node, put, deadline));
    }
}

/// The merge of `sets`. The first is taken as it is: merging into an empty set would rebuild it.
fn merge_all<'a>(sets: impl IntoIterator<Item = &'a VersionSet>) -> VersionSet {
    let mut sets = sets.into_iter();
    let mut merged = sets.next().cloned().unwrap_or_default();
    for set in sets {
        merged.merge(set);
    }
    merged
}

fn new_tracker<T>(required: usize, targets: &[Target]) -> Result<QuorumTracker<T>, ClientError> {
    QuorumTracker::new(required, targets.iter().map(|t| t.node.clone()))
        .map_err(|e| ClientError::Internal(e.to_string()))
}

/// The quorum size for a request: the override if valid, else the configured one.
fn quorum_size(
    requested: Option<usize>,
    configured: usize,
    n: usize,
    which: &str,
) -> Result<usize, ClientError> {
    match requested {
        None => Ok(configured),
        Some(q) if (1..=n).contains(&q) => Ok(q),
        Some(q) => Err(ClientError::InvalidOption(format!(
            "{which} must be between 1 and n = {n}, got {q}"
        ))),
    }
}

fn remaining_ms(deadline: Instant) -> u64 {
    u64::try_from(
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}
