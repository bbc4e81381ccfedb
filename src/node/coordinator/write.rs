//! The write path: where a write is coordinated, and its coordination.
//!
//! Only a node among the key's live top N (or, when none is live, the first live fallback)
//! makes the write's dot, so any other node hands the write there (`forward`), trying the next
//! coordinator when one does not answer before the deadline. To coordinate, the pure
//! [`WriteRun`] applies the write here and names the replica writes; they go out through the
//! batching replica links, and the client is answered at W acks while the other replicas
//! still get theirs. On a node that acks only what an fsync covers, the local ack waits for
//! the shared fsync like any remote one. A delete is a tombstone write: without a context it
//! covers what a read sees now.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::Either;
use futures::stream::FuturesUnordered;
use tokio::sync::oneshot;

use super::fanout::settle;
use super::forward::{forward, remaining_ms};
use super::spans::{record_answers, record_fan_out, record_forward};
use super::{check_member, read};
use crate::config::QuorumConfig;
use crate::core::hash::stable_hash;
use crate::core::ids::{Key, NodeId};
use crate::core::quorum::{Failure, Route, route};
use crate::core::write::{WriteError, WriteRequest, WriteRun};
use crate::model::{
    ClientError, Context, GetResult, ReadOptions, WriteOptions, validate_key, validate_value,
};
use crate::node::shared::NodeShared;
use crate::node::wire::ForwardedWrite;

/// Writes `value` (`None`: a tombstone) under `context`; answers with a context covering it.
pub async fn write(
    shared: &Arc<NodeShared>,
    key: Key,
    value: Option<Bytes>,
    context: Context,
    opts: WriteOptions,
) -> Result<Context, ClientError> {
    let (quorum, w) = admit(shared, &key, value.as_ref(), opts)?;
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
                return coordinate(shared, key, value, context, w, deadline).await;
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

/// Checks a write before it is routed or coordinated (key and value within the limits, this
/// node a member, `w` within N), whether it came from a client here or from another node.
/// Returns the settings in force and the W to wait for.
pub(super) fn admit(
    shared: &NodeShared,
    key: &[u8],
    value: Option<&Bytes>,
    opts: WriteOptions,
) -> Result<(QuorumConfig, usize), ClientError> {
    validate_key(key)?;
    if let Some(value) = value {
        validate_value(value)?;
    }
    check_member(shared)?;
    let quorum = **shared.quorum.load();
    opts.check(quorum.n)?;
    Ok((quorum, opts.w.unwrap_or(quorum.w)))
}

/// Coordinates the write here: applies it, sends the replica writes, and answers at `w` acks
/// (or when they can no longer come) before `deadline`. The replica writes still out then are
/// sent all the same; their acks are not waited for.
pub(super) async fn coordinate(
    shared: &Arc<NodeShared>,
    key: Key,
    value: Option<Bytes>,
    context: Context,
    w: usize,
    deadline: Instant,
) -> Result<Context, ClientError> {
    let request = WriteRequest {
        key: key.clone(),
        value,
        context: context.into_clock(),
        w,
    };
    let now = NodeShared::wall_ms();
    let local = shared.local();
    let (mut run, outgoing) = shared
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
    // The local ack, when it waits for an fsync or a hand-over to the OS: registered now, so
    // that one covers the write (and a failure is told) whether or not anyone still waits.
    let local_sync = run.awaits_local_sync().then(|| {
        let (tx, rx) = oneshot::channel();
        shared.after_sync(move |synced| {
            if let Err(e) = &synced {
                tracing::warn!(error = %e, "a write applied here could not be made durable");
            }
            let _ = tx.send(synced.is_ok());
        });
        let me = shared.me.clone();
        async move {
            // No answer: the fsync thread or the hand-over task went away, and nothing says
            // the write is durable.
            let synced = rx.await.unwrap_or(false);
            (me, if synced { Ok(()) } else { Err(Failure::Error) })
        }
    });
    // Queued on the links now, and sent even once nobody waits for them.
    let remote = outgoing.into_iter().map(|out| {
        let ack = shared.replicas.put_untimed(&out.to, out.put, deadline);
        async move { (out.to, ack.await) }
    });
    let mut calls: FuturesUnordered<_> = local_sync
        .into_iter()
        .map(Either::Left)
        .chain(remote.map(Either::Right))
        .collect();
    let acked = settle(&mut run, &mut calls, deadline).await.ok_or(());
    // The calls still out are dropped: their puts reach the replicas all the same, and
    // nothing here needs their acks.
    drop(calls);
    tracing::debug!(
        key_hash = stable_hash(&key),
        acks = run.acks(),
        "write answered"
    );
    record_answers("acks", &acked);
    match acked {
        Ok(Ok((answer, _))) => Ok(Context::from_clock(answer)),
        Ok(Err(shortfall)) => Err(ClientError::InsufficientAcks(shortfall)),
        Err(_) => Err(ClientError::Internal(
            "write fan-out ended without an answer".into(),
        )),
    }
}
