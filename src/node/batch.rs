//! Opportunistic batching of the RPCs sent to one peer.
//!
//! A remote call through ractor_cluster crosses several actor mailboxes and spawns tasks on
//! both sides, whatever its size; under load that fixed cost, not the payload, bounds a node.
//! A [`Link`] carries the requests of many callers in one RPC: callers queue a request and a
//! reply slot, and the link's task takes the first one waiting, yields once (so that the task
//! that queued it, and the others ready on its thread, can queue theirs), drains whatever else
//! is queued (up to [`BatchLimits`]) and sends it all as one message. It never waits for an
//! answer before sending the next batch, so under light load every batch holds one request and
//! adds only that one pass of the scheduler; under load batches grow by themselves and the
//! per-message cost is shared. Without the yield, a thread with nothing else to do would take
//! the link's task as soon as it is woken and send most requests alone.
//!
//! Semantics stay those of one RPC per request: each caller gets its own reply, its own
//! timeout holds, and a batch that fails or times out is a failure (never an ack) for every
//! request in it. A peer may answer only a prefix of a batch (when the whole answer would be
//! too large for one frame); the link sends the rest again.
//!
//! The links to peers' Storage actors (`replicas`) and to their Coordinators (`forwarding`)
//! both send their batches with [`send_batch`].

use std::collections::HashMap;
use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot};

use super::wire::Payload;
use crate::core::ids::NodeId;
use crate::core::quorum::Failure;

/// Requests one per-peer link holds waiting to be sent; more fail at once. The link's task
/// sends without waiting for answers, so a queue this long means a peer far behind (32 full
/// batches): a failed replica then costs less than memory that grows until the node dies.
pub const LINK_QUEUE: usize = 4096;

/// How large one batch may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Requests per batch.
    pub max_requests: usize,
    /// Sum of the requests' size bounds per batch. A single request above it still goes, alone.
    pub max_bytes: usize,
    /// Requests waiting in one link's queue: one more fails at once (a peer that does not keep
    /// up costs failed requests, never memory).
    pub max_queued: usize,
}

/// Why a whole batch went unanswered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// No answer within the batch's timeout.
    Timeout,
    /// The peer could not be asked, or the RPC failed.
    Failed(String),
}

/// The answer to a batch: one reply per request, in order, for a prefix of the batch (at least
/// its first request); the requests after that prefix were not served and are sent again.
pub type BatchAnswer<R> = Pin<Box<dyn Future<Output = Result<Vec<R>, BatchError>> + Send>>;

/// Sends batches of requests to one peer.
pub trait BatchSender: Send + 'static {
    /// One request.
    type Request: Send + 'static;
    /// The answer to one request.
    type Reply: Send + 'static;

    /// Sends one RPC carrying `requests`, bounded by `timeout`. The message is made before this
    /// returns (the link keeps the requests, to send again those left unanswered); the future
    /// only waits for the answer.
    fn send(&mut self, requests: &[Self::Request], timeout: Duration) -> BatchAnswer<Self::Reply>;

    /// True for a request that is sent once queued even if its caller stopped waiting (before
    /// its deadline still): a write whose caller was answered by others must still reach its
    /// replica. Other requests are left out when nobody waits for their reply.
    fn must_deliver(_request: &Self::Request) -> bool {
        false
    }
}

/// Sends one batch RPC to `actor` (the `role` of `node`, if connected) and gives the future of
/// its answer. As `ActorRef::call` does, but the message leaves now, in the link's order, not
/// when the future is first polled.
pub fn send_batch<M, T>(
    actor: Option<ActorRef<M>>,
    node: &NodeId,
    role: &str,
    timeout: Duration,
    message: impl FnOnce(RpcReplyPort<Payload<Vec<T>>>) -> M,
) -> BatchAnswer<T>
where
    M: ractor::Message,
    T: Send + 'static,
{
    let failed =
        |reason: String| -> BatchAnswer<T> { Box::pin(ready(Err(BatchError::Failed(reason)))) };
    let Some(actor) = actor else {
        return failed(format!("{node} is not connected"));
    };
    let (tx, rx) = ractor::concurrency::oneshot();
    let port = RpcReplyPort::from((tx, timeout));
    if actor.send_message(message(port)).is_err() {
        return failed(format!("{node}'s {role} is gone"));
    }
    let node = node.clone();
    Box::pin(async move {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Payload(Ok(replies)))) => Ok(replies),
            Ok(Ok(Payload(Err(e)))) => {
                tracing::warn!(node = %node, error = %e, "peer refused a batch");
                Err(BatchError::Failed(e))
            }
            // ractor_cluster drops the reply port of a call it cannot complete.
            Ok(Err(_)) => Err(BatchError::Failed(format!("{node} dropped the batch"))),
            Err(_) => Err(BatchError::Timeout),
        }
    })
}

/// What a link has sent so far.
#[derive(Debug, Default)]
pub struct LinkStats {
    batches: AtomicU64,
    requests: AtomicU64,
}

impl LinkStats {
    /// RPCs sent.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Requests sent in them (a request sent again counts again).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

type ReplySlot<R> = oneshot::Sender<Result<R, Failure>>;

// A request waiting in the queue.
struct Queued<Q, R> {
    request: Q,
    size: usize,
    deadline: Instant,
    reply: ReplySlot<R>,
}

// Everything of a queued request but the request itself, which goes into the message.
struct Waiter<R> {
    size: usize,
    deadline: Instant,
    reply: ReplySlot<R>,
}

/// One link per peer, made on first use, and made again when its task died with the runtime
/// that ran it (a node or client used from another runtime than its own).
pub struct PeerLinks<S: BatchSender> {
    links: RwLock<HashMap<NodeId, Arc<Link<S>>>>,
    limits: BatchLimits,
    full: Counter,
}

impl<S: BatchSender> PeerLinks<S> {
    /// No links yet; each one made will batch within `limits`, and count in `full` every
    /// request its full queue refused.
    pub fn new(limits: BatchLimits, full: Counter) -> Self {
        PeerLinks {
            links: RwLock::new(HashMap::new()),
            limits,
            full,
        }
    }

    /// `node`'s link, spawning one with the sender `make` gives if there is none alive.
    pub fn link(&self, node: &NodeId, make: impl FnOnce() -> S) -> Arc<Link<S>> {
        // A poisoned lock only means a panic elsewhere while the map was touched; it holds
        // nothing a panic could leave half-made.
        if let Some(link) = self
            .links
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .filter(|link| !link.is_closed())
        {
            return Arc::clone(link);
        }
        let mut links = self.links.write().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = links.get(node).filter(|link| !link.is_closed()) {
            return Arc::clone(link);
        }
        let link = Arc::new(Link::spawn(make(), self.limits, self.full.clone()));
        links.insert(node.clone(), Arc::clone(&link));
        link
    }

    /// Requests and RPCs sent to each peer so far: (peer, batches, requests).
    pub fn stats(&self) -> Vec<(NodeId, u64, u64)> {
        let links = self.links.read().unwrap_or_else(|p| p.into_inner());
        let mut stats: Vec<_> = links
            .iter()
            .map(|(node, link)| {
                let s = link.stats();
                (node.clone(), s.batches(), s.requests())
            })
            .collect();
        stats.sort();
        stats
    }
}

/// The batching channel to one peer: cheap to share, its task ends when it is dropped.
pub struct Link<S: BatchSender> {
    queue: mpsc::Sender<Queued<S::Request, S::Reply>>,
    stats: Arc<LinkStats>,
    full: Counter,
}

impl<S: BatchSender> Link<S> {
    /// Starts the link's task (on the current tokio runtime); `full` counts the requests its
    /// full queue refused.
    pub fn spawn(sender: S, limits: BatchLimits, full: Counter) -> Self {
        let (queue, rx) = mpsc::channel(limits.max_queued.max(1));
        let stats = Arc::new(LinkStats::default());
        tokio::spawn(run(
            sender,
            limits,
            rx,
            queue.downgrade(),
            Arc::clone(&stats),
            full.clone(),
        ));
        Link { queue, stats, full }
    }

    /// Queues `request` (whose encoded size is at most `size`) at once, and gives the future of
    /// its reply: a failure when the batch carrying it failed, or `Failure::Timeout` at
    /// `deadline`.
    pub fn call(
        &self,
        request: S::Request,
        size: usize,
        deadline: Instant,
    ) -> impl Future<Output = Result<S::Reply, Failure>> + Send + use<S> {
        let reply = self.call_untimed(request, size, deadline);
        async move {
            match tokio::time::timeout_at(deadline.into(), reply).await {
                Ok(result) => result,
                Err(_) => Err(Failure::Timeout),
            }
        }
    }

    /// As [`Link::call`], without a timer of its own: the reply comes when the batch carrying
    /// the request was answered or failed (its RPC is bounded by the deadline of its most
    /// patient request), so it may come after `deadline`. For a caller that bounds the wait
    /// for several calls with one timer.
    pub fn call_untimed(
        &self,
        request: S::Request,
        size: usize,
        deadline: Instant,
    ) -> impl Future<Output = Result<S::Reply, Failure>> + Send + use<S> {
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            request,
            size,
            deadline,
            reply,
        };
        let sent = Instant::now() < deadline
            && match self.queue.try_send(queued) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.full.inc();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            };
        let expired = move || {
            if Instant::now() >= deadline {
                Failure::Timeout
            } else {
                Failure::Error
            }
        };
        async move {
            if !sent {
                return Err(expired());
            }
            match answer.await {
                Ok(result) => result,
                // Dropped without an answer: its deadline passed before it was sent, or the
                // link is shutting down.
                Err(_) => Err(expired()),
            }
        }
    }

    /// True when the link's task is gone (its runtime shut down): every call would fail.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// What the link has sent.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }
}

async fn run<S: BatchSender>(
    mut sender: S,
    limits: BatchLimits,
    mut rx: mpsc::Receiver<Queued<S::Request, S::Reply>>,
    requeue: mpsc::WeakSender<Queued<S::Request, S::Reply>>,
    stats: Arc<LinkStats>,
    full: Counter,
) {
    let mut carried = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => {
                    // Woken by the first request of a burst: let the task that queued it
                    // (and the others ready on this thread) queue the rest before the batch
                    // is cut, rather than have an idle thread send it alone.
                    tokio::task::yield_now().await;
                    first
                }
                None => return,
            },
        };
        let now = Instant::now();
        let mut requests = Vec::new();
        let mut waiters = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(queued) = next.take() {
            // A caller that gave up (timed out, or dropped its future) needs no request sent,
            // unless the request must be delivered all the same.
            let wanted = !queued.reply.is_closed() || S::must_deliver(&queued.request);
            if wanted && queued.deadline > now {
                if !requests.is_empty() && bytes + queued.size > limits.max_bytes {
                    carried = Some(queued);
                    break;
                }
                bytes += queued.size;
                requests.push(queued.request);
                waiters.push(Waiter {
                    size: queued.size,
                    deadline: queued.deadline,
                    reply: queued.reply,
                });
            }
            if requests.len() < limits.max_requests {
                next = rx.try_recv().ok();
            }
        }
        let Some(latest) = waiters.iter().map(|w| w.deadline).max() else {
            continue;
        };
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .requests
            .fetch_add(requests.len() as u64, Ordering::Relaxed);
        // The RPC may take as long as its most patient caller; the others time out on their own.
        let answer = sender.send(&requests, latest.saturating_duration_since(now));
        let (requeue, full) = (requeue.clone(), full.clone());
        tokio::spawn(async move {
            settle(requests, waiters, answer.await, &requeue, &full);
        });
    }
}

// Hands each caller its reply, sends again what the peer left out, fails everything on error.
fn settle<Q, R>(
    requests: Vec<Q>,
    waiters: Vec<Waiter<R>>,
    answer: Result<Vec<R>, BatchError>,
    requeue: &mpsc::WeakSender<Queued<Q, R>>,
    full: &Counter,
) {
    let replies = match answer {
        Ok(replies) if !replies.is_empty() && replies.len() <= waiters.len() => replies,
        Ok(replies) => {
            tracing::warn!(
                sent = waiters.len(),
                answered = replies.len(),
                "a peer answered a batch with the wrong number of replies"
            );
            return fail_all(waiters, Failure::Error);
        }
        Err(BatchError::Timeout) => return fail_all(waiters, Failure::Timeout),
        Err(BatchError::Failed(reason)) => {
            tracing::debug!(%reason, requests = waiters.len(), "a replica batch failed");
            return fail_all(waiters, Failure::Error);
        }
    };
    let mut replies = replies.into_iter();
    let queue = requeue.upgrade();
    for (request, waiter) in requests.into_iter().zip(waiters) {
        match replies.next() {
            Some(reply) => {
                // The caller may have given up already; nothing to do then.
                let _ = waiter.reply.send(Ok(reply));
            }
            None => {
                let again = Queued {
                    request,
                    size: waiter.size,
                    deadline: waiter.deadline,
                    reply: waiter.reply,
                };
                // Sent again behind what is queued now; a full queue fails it as it would
                // fail a new request.
                match &queue {
                    Some(queue) => {
                        let lost = match queue.try_send(again) {
                            Ok(()) => None,
                            Err(mpsc::error::TrySendError::Full(lost)) => {
                                full.inc();
                                Some(lost)
                            }
                            Err(mpsc::error::TrySendError::Closed(lost)) => Some(lost),
                        };
                        if let Some(lost) = lost {
                            let _ = lost.reply.send(Err(Failure::Error));
                        }
                    }
                    None => {
                        let _ = again.reply.send(Err(Failure::Error));
                    }
                }
            }
        }
    }
}

fn fail_all<R>(waiters: Vec<Waiter<R>>, failure: Failure) {
    let now = Instant::now();
    for waiter in waiters {
        // ractor_cluster may report a remote timeout as a failed send.
        let failure = if now >= waiter.deadline {
            Failure::Timeout
        } else {
            failure
        };
        let _ = waiter.reply.send(Err(failure));
    }
}

#[cfg(test)]
mod tests;
