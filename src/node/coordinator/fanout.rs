//! The fan-out driver: runs a coordination's replica calls and feeds their answers to it.
//!
//! The client is answered as soon as the run is settled (W acks or R replies, or too many
//! failures for them to come), but the calls go on in a task of their own until every one
//! ended: every replica still receives its write, and a read's late replies still feed its
//! repair, which needs them all.

use std::future::Future;
use std::pin::Pin;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::oneshot;

use crate::core::ids::NodeId;
use crate::core::quorum::{Failure, Shortfall};
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
    /// Records one replica's answer.
    fn feed(&mut self, from: &NodeId, result: Result<Self::Reply, Failure>);
    /// The settled answer with the count of successes, if settled.
    fn answer(&self) -> Option<Result<(Self::Answer, usize), Shortfall>>;
}

impl Fanout for WriteRun {
    type Reply = ();
    type Answer = VClock;
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
/// `finally`.
pub(super) fn drive<F: Fanout>(
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
