//! Coordination of client requests: where a request is served, the fan-out to replicas, the
//! quorum, and read repair.
//!
//! A write is coordinated by a node among the key's live top N (or, if none is live, the first
//! live fallback); any other node forwards it there. Reads are coordinated wherever they
//! arrive: they make no dot, so forwarding would only add a hop. The decisions are the pure
//! [`WriteRun`] and [`ReadRun`]'s; this module sends what they ask for through the batching
//! links and feeds the answers back. The fan-out runs in a spawned task that outlives the
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
use super::shared::NodeShared;
use super::wire::{CoordinatorMsg, ForwardedWrite, Payload};
use crate::api::{
    ClientError, Context, GetResult, ReadOptions, WriteOptions, validate_key, validate_value,
};
use crate::core::hash::stable_hash;
use crate::core::ids::{Key, NodeId};
use crate::core::quorum::{Failure, Route, Shortfall, Target, route};
use crate::core::read::{ReadError, ReadRun};
use crate::core::version::VersionSet;
use crate::core::write::{WriteError, WriteRequest, WriteRun};

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
                        Ok(read) => read_set(&shared, read.key, ReadOptions { r: read.r }).await,
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
    opts: WriteOptions,
) -> Result<Context, ClientError> {
    validate_key(&key)?;
    if let Some(value) = &value {
        validate_value(value)?;
    }
    check_member(shared)?;
    let quorum = **shared.quorum.load();
    opts.check(quorum.n)?;
    let w = opts.w.unwrap_or(quorum.w);
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
                return coordinate_write(shared, key, value, &context, w, deadline).await;
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

/// Deletes `key` by writing a tombstone over what `context` covers (see [`delete_context`]
/// for a delete without one).
pub async fn delete(
    shared: &Arc<NodeShared>,
    key: Key,
    context: Context,
    opts: WriteOptions,
) -> Result<(), ClientError> {
    let read = read(shared, key.clone(), ReadOptions::default());
    let Some(context) = delete_context(context, opts, shared.quorum.load().n, read).await? else {
        return Ok(());
    };
    write(shared, key, None, context, opts).await.map(|_| ())
}

/// What a delete's tombstone covers: `context`, or without one what `read` sees now (as
/// Riak's clients do), so that a write concurrent with the delete still survives as a
/// sibling; `None` when nothing is there to delete. Nodes and native clients delete alike,
/// each reading its own way. A bad `w` is refused before anything is read.
pub async fn delete_context(
    context: Context,
    opts: WriteOptions,
    n: usize,
    read: impl Future<Output = Result<GetResult, ClientError>>,
) -> Result<Option<Context>, ClientError> {
    opts.check(n)?;
    if !context.is_empty() {
        return Ok(Some(context));
    }
    Ok(match read.await? {
        GetResult::NotFound { context } if context.is_empty() => None,
        found => Some(found.context().clone()),
    })
}

/// Reads `key` from R replicas (or `r`), merging their sets, and repairs stale replicas.
pub async fn read(
    shared: &Arc<NodeShared>,
    key: Key,
    opts: ReadOptions,
) -> Result<GetResult, ClientError> {
    read_set(shared, key, opts)
        .await
        .map(|set| GetResult::from_set(&set))
}

/// [`read`], answering with the merged set of the replies.
pub async fn read_set(
    shared: &Arc<NodeShared>,
    key: Key,
    opts: ReadOptions,
) -> Result<VersionSet, ClientError> {
    validate_key(&key)?;
    check_member(shared)?;
    let quorum = **shared.quorum.load();
    opts.check(quorum.n)?;
    let r = opts.r.unwrap_or(quorum.r);
    let deadline = Instant::now() + Duration::from_millis(quorum.get_timeout_ms);
    let local = shared.local();
    let (run, ask) = shared
        .with_view(|view, _| ReadRun::start(&local, view, key, r))
        .map_err(|e| match e {
            ReadError::Ring(_) => ClientError::Unavailable("the ring is empty".into()),
            ReadError::Quorum(e) => ClientError::Internal(e.to_string()),
        })?;
    record_fan_out(&shared.me, run.targets(), r);
    let mut calls: Vec<Call<VersionSet>> = Vec::new();
    for node in ask {
        let reply = shared.replicas.get(&node, run.key().clone(), deadline);
        calls.push(Box::pin(async move { (node, reply.await) }));
    }
    let repair = {
        let shared = Arc::clone(shared);
        move |run: ReadRun| read_repair(&shared, &run)
    };
    let replied = drive(run, calls, repair).await;
    record_answers("replies", &replied);
    match replied {
        Ok(Ok((set, _))) => Ok(set),
        Ok(Err(shortfall)) => Err(ClientError::InsufficientReplies(shortfall)),
        Err(_) => Err(ClientError::Internal(
            "read fan-out ended without an answer".into(),
        )),
    }
}

/// Refuses requests on a node that left the cluster or was removed from it.
fn check_member(shared: &NodeShared) -> Result<(), ClientError> {
    let status = shared.ring_status();
    if status.is_final() {
        return Err(ClientError::NotAMember(format!(
            "this node is {status}: it is no longer a member of the cluster; send requests to another node"
        )));
    }
    Ok(())
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
    check_member(shared)?;
    let quorum = **shared.quorum.load();
    let opts = WriteOptions { w: write.w };
    opts.check(quorum.n)?;
    let w = opts.w.unwrap_or(quorum.w);
    let deadline = Instant::now() + Duration::from_millis(write.budget_ms);
    coordinate_write(shared, write.key, write.value, &write.context, w, deadline).await
}

async fn coordinate_write(
    shared: &Arc<NodeShared>,
    key: Key,
    value: Option<Bytes>,
    context: &Context,
    w: usize,
    deadline: Instant,
) -> Result<Context, ClientError> {
    let request = WriteRequest {
        key: key.clone(),
        value,
        context: context.clock().clone(),
        w,
    };
    let now = NodeShared::wall_ms();
    let local = shared.local();
    let (run, outgoing) = shared
        .with_view(|view, _| WriteRun::start(&local, view, request, now))
        .map_err(|e| match e {
            WriteError::Ring(_) => ClientError::Unavailable("the ring is empty".into()),
            WriteError::Store(e) => ClientError::from(e),
            WriteError::Quorum(e) => ClientError::Internal(e.to_string()),
        })?;
    if run
        .targets()
        .iter()
        .any(|t| t.node == shared.me && t.is_hinted())
        && run.acks() == 0
    {
        shared.metrics.hints_refused.inc();
    }
    tracing::debug!(dot = %run.dot().counter, "coordinating write");
    record_fan_out(&shared.me, run.targets(), w);
    let mut calls: Vec<Call<()>> = Vec::new();
    if run.awaits_local_sync() {
        let (shared, me) = (Arc::clone(shared), shared.me.clone());
        calls.push(Box::pin(async move {
            let synced = shared.sync_store().await;
            if let Err(e) = &synced {
                tracing::warn!(error = %e, "a write applied here could not be made durable");
            }
            (me, synced.map_err(|_| Failure::Error))
        }));
    }
    for out in outgoing {
        let ack = shared.replicas.put(&out.to, out.put, deadline);
        calls.push(Box::pin(async move { (out.to, ack.await) }));
    }
    let key_hash = stable_hash(&key);
    let finished = move |run: WriteRun| {
        tracing::debug!(key_hash, acks = run.acks(), "write fan-out finished");
    };
    let acked = drive(run, calls, finished).await;
    record_answers("acks", &acked);
    match acked {
        Ok(Ok((answer, _))) => Ok(Context::from_clock(answer)),
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
fn record_answers<T, E>(field: &str, answer: &Result<Result<(T, usize), Shortfall>, E>) {
    let Some(span) = request_span() else {
        return;
    };
    let count = match answer {
        Ok(Ok((_, answers))) => *answers,
        Ok(Err(shortfall)) => shortfall.succeeded,
        Err(_) => 0,
    };
    span.record(field, count);
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

/// A coordination the fan-out driver can feed: write or read.
trait Fanout: Send + 'static {
    /// What one replica answers.
    type Reply: Send + 'static;
    /// What the client gets.
    type Answer: Send + 'static;
    /// Records one replica's answer.
    fn feed(&mut self, from: &NodeId, result: Result<Self::Reply, Failure>);
    /// The settled answer with the count of successes, if settled.
    fn answer(&self) -> Option<Result<(Self::Answer, usize), Shortfall>>;
}

impl Fanout for WriteRun {
    type Reply = ();
    type Answer = crate::core::vclock::VClock;
    fn feed(&mut self, from: &NodeId, result: Result<(), Failure>) {
        match result {
            Ok(()) => self.on_ack(from),
            Err(kind) => self.on_failure(from, kind),
        };
    }
    fn answer(&self) -> Option<Result<(Self::Answer, usize), Shortfall>> {
        self.outcome().map(|o| o.map(|ctx| (ctx, self.acks())))
    }
}

impl Fanout for ReadRun {
    type Reply = VersionSet;
    type Answer = VersionSet;
    fn feed(&mut self, from: &NodeId, result: Result<VersionSet, Failure>) {
        match result {
            Ok(set) => self.on_reply(from, set),
            Err(kind) => self.on_failure(from, kind),
        };
    }
    fn answer(&self) -> Option<Result<(Self::Answer, usize), Shortfall>> {
        self.outcome().map(|o| o.map(|set| (set, self.replies())))
    }
}

/// Drives the calls in a task of their own, feeding the run. The receiver gets the answer as
/// soon as it is settled; the task goes on until every call ended and then hands the run to
/// `finally` (read repair needs every reply).
fn drive<F: Fanout>(
    mut run: F,
    calls: Vec<Call<F::Reply>>,
    finally: impl FnOnce(F) + Send + 'static,
) -> oneshot::Receiver<Result<(F::Answer, usize), Shortfall>> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let settle = |run: &F, tx: &mut Option<oneshot::Sender<_>>| {
            if tx.is_none() {
                return;
            }
            if let Some(answer) = run.answer()
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(answer);
            }
        };
        settle(&run, &mut tx);
        let mut calls: FuturesUnordered<Call<F::Reply>> = calls.into_iter().collect();
        while let Some((node, result)) = calls.next().await {
            run.feed(&node, result);
            settle(&run, &mut tx);
        }
        finally(run);
    });
    rx
}

/// Sends the reconciled set to every owner whose reply differed from it.
fn read_repair(shared: &Arc<NodeShared>, run: &ReadRun) {
    let repairs = run.repairs(&shared.local());
    shared.metrics.read_repairs.inc_by(repairs.len() as u64);
    let deadline = Instant::now() + Duration::from_millis(shared.quorum.load().put_timeout_ms);
    for out in repairs {
        // Awaited by a task of its own: a request nobody waits for is never sent.
        tokio::spawn(shared.replicas.put(&out.to, out.put, deadline));
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
