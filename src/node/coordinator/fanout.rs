//! The fan-out drivers: run a coordination's replica calls and feed their answers to it.
//!
//! The client is answered as soon as the run is settled (W acks or R replies, or too many
//! failures for them to come). A write needs nothing after that: its replica puts were queued
//! on the links before anyone waited and are sent whether or not anyone still waits, so
//! [`settle`] drives them in the caller's own task, under one timer, and drops the rest. A
//! read's late replies still feed its repair, which needs them all, so [`drive`] runs its calls
//! in a task of their own until every one ended.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::oneshot;

use crate::core::ids::NodeId;
use crate::core::quorum::{Failure, Progress, Shortfall, Target};
use crate::core::read::ReadRun;
use crate::core::vclock::VClock;
use crate::core::version::VersionSet;
use crate::core::write::WriteRun;

/// One replica call: the node asked and what came of it.
pub(super) type Call<T> = Pin<Box<dyn Future<Output = (NodeId, Result<T, Failure>)> + Send>>;

/// A coordination the fan-out driver can feed: write or read.
pub(super) trait Fanout: Send + 'static {
    /// What one replica answers.
    type Reply: Send + 'static;
    /// What the client gets.
    type Answer: Send + 'static;
    /// Records one replica's answer; says whether the run is settled now.
    fn feed(&mut self, from: &NodeId, result: Result<Self::Reply, Failure>) -> Progress;
    /// The settled answer with the count of successes, if settled.
    fn answer(&self) -> Option<Result<(Self::Answer, usize), Shortfall>>;
    /// The replicas asked.
    fn targets(&self) -> &[Target];
}

impl Fanout for WriteRun {
    type Reply = ();
    type Answer = VClock;
    fn feed(&mut self, from: &NodeId, result: Result<(), Failure>) -> Progress {
        match result {
            Ok(()) => self.on_ack(from),
            Err(kind) => self.on_failure(from, kind),
        }
    }
    fn answer(&self) -> Option<Result<(Self::Answer, usize), Shortfall>> {
        self.outcome().map(|o| o.map(|ctx| (ctx, self.acks())))
    }
    fn targets(&self) -> &[Target] {
        WriteRun::targets(self)
    }
}

impl Fanout for ReadRun {
    type Reply = VersionSet;
    type Answer = VersionSet;
    fn feed(&mut self, from: &NodeId, result: Result<VersionSet, Failure>) -> Progress {
        match result {
            Ok(set) => self.on_reply(from, set),
            Err(kind) => self.on_failure(from, kind),
        }
    }
    fn answer(&self) -> Option<Result<(Self::Answer, usize), Shortfall>> {
        self.outcome().map(|o| o.map(|set| (set, self.replies())))
    }
    fn targets(&self) -> &[Target] {
        ReadRun::targets(self)
    }
}

/// The answer of a settled run: `None` only if the calls ended and left it unsettled.
pub(super) type Settled<F> = Option<Result<(<F as Fanout>::Answer, usize), Shortfall>>;

/// Feeds `run` the answers of `calls` in the caller's task until it is settled, or until
/// `deadline`, when every replica not heard from counts as timed out; the calls still out are
/// left in `calls`, for the caller to drop (or drive on).
pub(super) async fn settle<F, C>(
    run: &mut F,
    calls: &mut FuturesUnordered<C>,
    deadline: Instant,
) -> Settled<F>
where
    F: Fanout,
    C: Future<Output = (NodeId, Result<F::Reply, Failure>)>,
{
    if let Some(answer) = run.answer() {
        return Some(answer);
    }
    let fed = tokio::time::timeout_at(deadline.into(), async {
        while let Some((node, result)) = calls.next().await {
            if run.feed(&node, result).is_settled() {
                break;
            }
        }
    })
    .await;
    if fed.is_err() {
        // A replica that already answered keeps its answer: the run counts each one once.
        let targets: Vec<NodeId> = run.targets().iter().map(|t| t.node.clone()).collect();
        for node in &targets {
            run.feed(node, Err(Failure::Timeout));
        }
    }
    run.answer()
}

/// Drives the calls in a task of their own, feeding the run. The receiver gets the answer as
/// soon as it is settled; the task goes on until every call ended and then hands the run to
/// `finally`.
pub(super) fn drive<F: Fanout>(
    mut run: F,
    calls: Vec<Call<F::Reply>>,
    finally: impl FnOnce(F) + Send + 'static,
) -> oneshot::Receiver<Result<(F::Answer, usize), Shortfall>> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let answer_once = |run: &F, tx: &mut Option<oneshot::Sender<_>>| {
            if tx.is_none() {
                return;
            }
            if let Some(answer) = run.answer()
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(answer);
            }
        };
        answer_once(&run, &mut tx);
        let mut calls: FuturesUnordered<Call<F::Reply>> = calls.into_iter().collect();
        while let Some((node, result)) = calls.next().await {
            run.feed(&node, result);
            answer_once(&run, &mut tx);
        }
        finally(run);
    });
    rx
}
