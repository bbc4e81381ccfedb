//! The read path: a read is coordinated wherever it arrives.
//!
//! A read makes no dot, so handing it to an owner would only add a hop. The pure [`ReadRun`]
//! picks the replicas (answering for this node at once when it is one of them); the others
//! are asked through the batching replica links, and the client is answered with the merge of
//! the first R replies. The fan-out goes on after that answer: once every reply is in (or
//! failed), the read repair is made from all of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::check_member;
use super::fanout::{Call, drive};
use super::repair::read_repair;
use super::spans::{record_answers, record_fan_out};
use crate::core::ids::Key;
use crate::core::read::{ReadError, ReadRun};
use crate::core::version::VersionSet;
use crate::model::{ClientError, GetResult, ReadOptions, validate_key};
use crate::node::shared::NodeShared;

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
