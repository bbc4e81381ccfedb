//! Under `--fsync never`: one hand-over of the store's buffered changes to the OS for every
//! write answered in the same turn of the runtime.
//!
//! A write applied here counts as an ack once its change reached the OS (it then survives a
//! process kill). One write system call of the engine's buffer hands over every change made
//! before it, and costs more than the change itself (an ext4 buffered write, ~2.7 µs), so the
//! writes that want one register ([`HandOver::after`]) and a task of the node's runtime makes
//! it for all of them: woken by the first, it yields once, so that the coordinators and
//! replica batches running in the same turn register too, then hands over once and answers
//! every waiter it took. A waiter registers after its change was applied, and the hand-over
//! it is answered by starts after it was taken, so it covers the change.
//!
//! This is the fsync thread's scheme (`syncer`) without the thread: a hand-over takes
//! microseconds, less than waking a thread would, and a task of the runtime is woken without
//! a system call while its workers run.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;

use super::syncer::{Done, Persist, answer};
use crate::core::engine::EngineError;

#[derive(Default)]
struct Waiting {
    done: Vec<Done>,
    closed: bool,
}

struct Inner {
    waiting: Mutex<Waiting>,
    wake: Notify,
    // Weak: the task must not keep the store (and its directory's lock) once the node let go
    // of it; a node reopened in the same process on the same directory would find it held.
    persist: Weak<Persist>,
}

/// Shares the hand-overs that writes applied here wait for under `--fsync never`.
pub struct HandOver {
    inner: Arc<Inner>,
    persist: Arc<Persist>,
    // False outside a runtime: each waiter then hands over for itself.
    task: bool,
}

impl HandOver {
    /// A hand-over made with `persist` (the engine's), on a task of the current runtime.
    pub fn new(persist: Arc<Persist>) -> Self {
        let inner = Arc::new(Inner {
            waiting: Mutex::new(Waiting::default()),
            wake: Notify::new(),
            persist: Arc::downgrade(&persist),
        });
        let task = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(run(Arc::clone(&inner)));
                true
            }
            Err(_) => false,
        };
        HandOver {
            inner,
            persist,
            task,
        }
    }

    /// Calls `done` once a hand-over that started after this call has finished, with its
    /// outcome. `done` runs on the runtime: it must only hand the outcome on.
    pub fn after(&self, done: impl FnOnce(Result<(), EngineError>) + Send + 'static) {
        let mut waiting = self.inner.lock();
        if !self.task {
            drop(waiting);
            done((self.persist)());
            return;
        }
        let first = waiting.done.is_empty();
        waiting.done.push(Box::new(done));
        drop(waiting);
        if first {
            // The task waits only when nobody does; a busy one finds us in its next round.
            self.inner.wake.notify_one();
        }
    }
}

impl Drop for HandOver {
    fn drop(&mut self) {
        // Whoever still waits is answered here, by a last hand-over; the task then ends.
        let covered = {
            let mut waiting = self.inner.lock();
            waiting.closed = true;
            std::mem::take(&mut waiting.done)
        };
        if !covered.is_empty() {
            answer(covered, &(self.persist)());
        }
        self.inner.wake.notify_one();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn run(inner: Arc<Inner>) {
    loop {
        inner.wake.notified().await;
        // The writes running in this turn of the runtime join the round.
        tokio::task::yield_now().await;
        let (covered, closed) = {
            let mut waiting = inner.lock();
            (std::mem::take(&mut waiting.done), waiting.closed)
        };
        if !covered.is_empty() {
            let outcome = match inner.persist.upgrade() {
                Some(persist) => persist(),
                // Gone since the waiters were taken: nothing can say their writes reached
                // the OS.
                None => Err(EngineError::Failed("the node's store was closed".into())),
            };
            answer(covered, &outcome);
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    // `written` counts changes; a hand-over covers those made before it started.
    fn counting() -> (HandOver, Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) {
        let written = Arc::new(AtomicU64::new(0));
        let handed = Arc::new(AtomicU64::new(0));
        let calls = Arc::new(AtomicU64::new(0));
        let hand_over = {
            let (written, handed, calls) = (
                Arc::clone(&written),
                Arc::clone(&handed),
                Arc::clone(&calls),
            );
            HandOver::new(Arc::new(move || {
                calls.fetch_add(1, Ordering::SeqCst);
                handed.fetch_max(written.load(Ordering::SeqCst), Ordering::SeqCst);
                Ok(())
            }))
        };
        (hand_over, written, handed, calls)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_is_answered_after_a_hand_over_that_covers_it_and_they_are_shared() {
        let (hand_over, written, handed, calls) = counting();
        let hand_over = Arc::new(hand_over);
        let writers: Vec<_> = (0..32)
            .map(|_| {
                let (hand_over, written, handed) = (
                    Arc::clone(&hand_over),
                    Arc::clone(&written),
                    Arc::clone(&handed),
                );
                tokio::spawn(async move {
                    for _ in 0..25 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        hand_over.after(move |outcome| {
                            let _ = tx.send(outcome);
                        });
                        rx.await.unwrap().unwrap();
                        assert!(
                            handed.load(Ordering::SeqCst) >= mine,
                            "acked before handed over"
                        );
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let calls = calls.load(Ordering::SeqCst);
        assert!(
            calls < 800,
            "{calls} hand-overs for 800 writes: nothing was shared"
        );
    }

    #[tokio::test]
    async fn a_failed_hand_over_fails_the_waiters_it_covered_and_a_panicking_one_harms_no_other() {
        let calls = Arc::new(AtomicU64::new(0));
        let hand_over = {
            let calls = Arc::clone(&calls);
            HandOver::new(Arc::new(move || {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(EngineError::Failed("disk gone".into()))
                } else {
                    Ok(())
                }
            }))
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..2 {
            let tx = tx.clone();
            hand_over.after(move |outcome| {
                let _ = tx.send(outcome.is_ok());
            });
        }
        hand_over.after(|_| panic!("a callback that panics"));
        assert_eq!(rx.recv().await, Some(false));
        assert_eq!(
            rx.recv().await,
            Some(false),
            "both covered by the failed one"
        );
        // Unlike an fsync, a failed hand-over loses nothing already handed over: the next
        // one is tried afresh.
        hand_over.after(move |outcome| {
            let _ = tx.send(outcome.is_ok());
        });
        assert_eq!(rx.recv().await, Some(true));
    }

    #[tokio::test]
    async fn dropped_it_answers_who_still_waits_and_lets_go_of_the_store() {
        let (hand_over, written, handed, _) = counting();
        written.store(5, Ordering::SeqCst);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        hand_over.after(move |outcome| {
            let _ = tx.send(outcome.is_ok());
        });
        let persist = Arc::downgrade(&hand_over.persist);
        // Dropped before the task ran: the waiter is answered all the same, covered.
        drop(hand_over);
        assert_eq!(rx.recv().await, Some(true));
        assert_eq!(handed.load(Ordering::SeqCst), 5);
        assert!(
            persist.upgrade().is_none(),
            "the task still holds what hands over (the store)"
        );
    }

    #[test]
    fn outside_a_runtime_each_waiter_hands_over_for_itself() {
        let (hand_over, written, handed, calls) = counting();
        written.store(3, Ordering::SeqCst);
        let answered = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&answered);
        hand_over.after(move |outcome| {
            assert!(outcome.is_ok());
            seen.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(answered.load(Ordering::SeqCst), 1, "answered at once");
        assert_eq!(handed.load(Ordering::SeqCst), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
