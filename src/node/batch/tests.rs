use std::time::{Duration, Instant};

use futures::future::join_all;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

use super::*;

type Answer = oneshot::Sender<Result<Vec<u32>, BatchError>>;

// A peer played by the test: every batch arrives on a channel with the slot for its answer.
struct FakePeer {
    batches: mpsc::UnboundedSender<(Vec<u32>, Answer)>,
}

impl BatchSender for FakePeer {
    type Request = u32;
    type Reply = u32;

    fn send(&mut self, requests: &[u32], _timeout: Duration) -> BatchAnswer<u32> {
        let (answer, answered) = oneshot::channel();
        let _ = self.batches.send((requests.to_vec(), answer));
        Box::pin(async move {
            answered
                .await
                .unwrap_or_else(|_| Err(BatchError::Failed("test ended".into())))
        })
    }

    // Requests from 100 up play writes: sent even when their caller gave up.
    fn must_deliver(request: &u32) -> bool {
        *request >= 100
    }
}

fn link(limits: BatchLimits) -> (Link<FakePeer>, mpsc::UnboundedReceiver<(Vec<u32>, Answer)>) {
    let (batches, rx) = mpsc::unbounded_channel();
    (
        Link::spawn(FakePeer { batches }, limits, Counter::default()),
        rx,
    )
}

const ROOMY: BatchLimits = BatchLimits {
    max_requests: 100,
    max_bytes: 1 << 20,
    max_queued: 1000,
};

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

// Answers every batch with each request times ten, recording the batches.
fn answer_all(
    mut rx: mpsc::UnboundedReceiver<(Vec<u32>, Answer)>,
) -> tokio::task::JoinHandle<Vec<Vec<u32>>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((batch, answer)) = rx.recv().await {
            let _ = answer.send(Ok(batch.iter().map(|r| r * 10).collect()));
            seen.push(batch);
        }
        seen
    })
}

#[tokio::test]
async fn queued_requests_are_cut_into_batches_by_count_and_each_caller_gets_its_reply() {
    let (link, rx) = link(BatchLimits {
        max_requests: 3,
        ..ROOMY
    });
    // All queued before the link's task runs (one thread, no await yet).
    let calls: Vec<_> = (1..=7).map(|r| link.call(r, 1, soon())).collect();
    let answers = answer_all(rx);
    let replies = join_all(calls).await;
    assert_eq!(
        replies,
        (1..=7).map(|r| Ok(r * 10)).collect::<Vec<_>>(),
        "replies in the callers' order"
    );
    drop(link);
    let batches = answers.await.unwrap();
    assert_eq!(batches, vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
}

#[tokio::test]
async fn batches_are_cut_by_bytes_and_an_oversized_request_goes_alone() {
    let (link, rx) = link(BatchLimits {
        max_bytes: 25,
        ..ROOMY
    });
    let sizes = [10, 10, 10, 100, 10, 10];
    let calls: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, size)| link.call(i as u32, *size, soon()))
        .collect();
    let answers = answer_all(rx);
    let replies = join_all(calls).await;
    assert!(replies.iter().all(Result::is_ok));
    assert_eq!(link.stats().requests(), 6);
    drop(link);
    let batches = answers.await.unwrap();
    assert_eq!(batches, vec![vec![0, 1], vec![2], vec![3], vec![4, 5]]);
}

#[tokio::test]
async fn a_failed_batch_fails_every_request_in_it() {
    for (error, expected) in [
        (BatchError::Failed("session lost".into()), Failure::Error),
        (BatchError::Timeout, Failure::Timeout),
    ] {
        let (link, mut rx) = link(ROOMY);
        let calls: Vec<_> = (0..4).map(|r| link.call(r, 1, soon())).collect();
        let peer = tokio::spawn(async move {
            let (batch, answer) = rx.recv().await.unwrap();
            let _ = answer.send(Err(error));
            batch.len()
        });
        let replies = join_all(calls).await;
        assert_eq!(peer.await.unwrap(), 4);
        assert_eq!(replies, vec![Err(expected); 4]);
    }
}

#[tokio::test]
async fn a_reply_count_that_does_not_fit_the_batch_is_a_failure_not_an_ack() {
    for answered in [vec![], vec![1, 2, 3, 4]] {
        let (link, mut rx) = link(ROOMY);
        let calls: Vec<_> = (0..3).map(|r| link.call(r, 1, soon())).collect();
        tokio::spawn(async move {
            let (_, answer) = rx.recv().await.unwrap();
            let _ = answer.send(Ok(answered));
        });
        let replies = join_all(calls).await;
        assert_eq!(replies, vec![Err(Failure::Error); 3]);
    }
}

#[tokio::test]
async fn requests_a_peer_left_unanswered_are_sent_again() {
    let (link, mut rx) = link(ROOMY);
    let calls: Vec<_> = (1..=3).map(|r| link.call(r, 1, soon())).collect();
    // The peer answers only the first request of every batch.
    let peer = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((batch, answer)) = rx.recv().await {
            let _ = answer.send(Ok(vec![batch[0] * 10]));
            seen.push(batch);
        }
        seen
    });
    let replies = join_all(calls).await;
    assert_eq!(replies, vec![Ok(10), Ok(20), Ok(30)]);
    drop(link);
    assert_eq!(
        peer.await.unwrap(),
        vec![vec![1, 2, 3], vec![2, 3], vec![3]]
    );
}

#[tokio::test]
async fn each_request_times_out_at_its_own_deadline_when_the_peer_is_silent() {
    let (link, mut rx) = link(ROOMY);
    let started = Instant::now();
    let short = link.call(1, 1, started + Duration::from_millis(50));
    let long = link.call(2, 1, started + Duration::from_millis(300));
    let peer = tokio::spawn(async move {
        // Holds every answer slot: the peer never answers.
        let mut held = Vec::new();
        while let Some(batch) = rx.recv().await {
            held.push(batch);
        }
        held.len()
    });
    let short = tokio::spawn(short);
    let long = tokio::spawn(long);
    assert_eq!(short.await.unwrap(), Err(Failure::Timeout));
    assert!(
        !long.is_finished(),
        "the other request keeps its own deadline"
    );
    assert_eq!(long.await.unwrap(), Err(Failure::Timeout));
    assert!(started.elapsed() >= Duration::from_millis(300));
    drop(link);
    assert_eq!(peer.await.unwrap(), 1, "both went in one batch");
}

#[tokio::test]
async fn callers_that_gave_up_are_left_out_of_the_batch() {
    let (link, rx) = link(ROOMY);
    let first = link.call(1, 1, soon());
    drop(link.call(2, 1, soon()));
    let expired = link.call(3, 1, Instant::now());
    let last = link.call(4, 1, soon());
    let answers = answer_all(rx);
    assert_eq!(first.await, Ok(10));
    assert_eq!(expired.await, Err(Failure::Timeout));
    assert_eq!(last.await, Ok(40));
    drop(link);
    assert_eq!(answers.await.unwrap(), vec![vec![1, 4]]);
}

#[tokio::test]
async fn a_request_that_must_be_delivered_is_sent_though_its_caller_gave_up() {
    let (link, mut rx) = link(ROOMY);
    let first = link.call(1, 1, soon());
    drop(link.call(2, 1, soon()));
    drop(link.call(100, 1, soon()));
    drop(link.call_untimed(101, 1, soon()));
    // Its deadline still holds: past it, nobody could count its ack.
    drop(link.call(102, 1, Instant::now()));
    let (batch, answer) = rx.recv().await.unwrap();
    assert_eq!(batch, vec![1, 100, 101], "the abandoned read is left out");
    // Answered in part: the abandoned write left out of the answer goes again.
    let _ = answer.send(Ok(vec![10, 1000]));
    assert_eq!(first.await, Ok(10));
    let (again, answer) = rx.recv().await.unwrap();
    assert_eq!(again, vec![101]);
    let _ = answer.send(Ok(vec![1010]));
    drop(link);
    assert!(rx.recv().await.is_none(), "nothing else was sent");
}

#[tokio::test]
async fn an_untimed_call_gets_its_reply_or_a_timeout_once_its_deadline_passed() {
    let (link, rx) = link(ROOMY);
    let answers = answer_all(rx);
    assert_eq!(link.call_untimed(7, 1, soon()).await, Ok(70));
    assert_eq!(
        link.call_untimed(8, 1, Instant::now()).await,
        Err(Failure::Timeout)
    );
    drop(link);
    assert_eq!(answers.await.unwrap(), vec![vec![7]]);
}

#[tokio::test]
async fn one_caller_at_a_time_sends_batches_of_one() {
    let (link, rx) = link(ROOMY);
    let answers = answer_all(rx);
    for r in 0..5 {
        assert_eq!(link.call(r, 1, soon()).await, Ok(r * 10));
    }
    assert_eq!((link.stats().batches(), link.stats().requests()), (5, 5));
    drop(link);
    assert!(answers.await.unwrap().iter().all(|b| b.len() == 1));
}

#[tokio::test]
async fn a_dropped_link_fails_what_it_would_have_sent_again() {
    let (link, mut rx) = link(ROOMY);
    let calls: Vec<_> = (1..=2).map(|r| link.call(r, 1, soon())).collect();
    let replies = tokio::spawn(join_all(calls));
    let (batch, answer) = rx.recv().await.unwrap();
    assert_eq!(batch, vec![1, 2]);
    drop(link);
    // Only the first is answered; the second would go again, but the link is gone.
    let _ = answer.send(Ok(vec![10]));
    assert_eq!(replies.await.unwrap(), vec![Ok(10), Err(Failure::Error)]);
}

#[test]
fn a_link_whose_runtime_ended_says_so() {
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (link, _rx) = first.block_on(async { link(ROOMY) });
    assert!(!link.is_closed());
    drop(first);
    assert!(link.is_closed(), "its task ended with its runtime");
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    assert_eq!(
        second.block_on(link.call(1, 1, soon())),
        Err(Failure::Error)
    );
}

#[tokio::test]
async fn a_full_queue_fails_the_request_at_once_and_counts_it() {
    let (batches, mut rx) = mpsc::unbounded_channel();
    let full = Counter::default();
    let limits = BatchLimits {
        max_requests: 1,
        max_queued: 2,
        ..ROOMY
    };
    let link = Link::spawn(FakePeer { batches }, limits, full.clone());
    // The first request is taken by the link's task and held unanswered by the peer.
    let first = link.call(1, 1, soon());
    let (sent, answer) = rx.recv().await.unwrap();
    assert_eq!(sent, vec![1]);
    // While the link's task is busy, two requests fill the queue: the third one fails.
    let queued: Vec<_> = (2..=3).map(|r| link.call(r, 1, soon())).collect();
    let started = Instant::now();
    assert_eq!(link.call(4, 1, soon()).await, Err(Failure::Error));
    assert!(started.elapsed() < Duration::from_secs(1), "failed at once");
    assert_eq!(full.get(), 1);
    let _ = answer.send(Ok(vec![10]));
    assert_eq!(first.await, Ok(10));
    let answers = answer_all(rx);
    assert_eq!(join_all(queued).await, vec![Ok(20), Ok(30)]);
    drop(link);
    answers.await.unwrap();
}
