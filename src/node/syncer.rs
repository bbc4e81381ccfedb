//! Group commit: the one place where writes applied on this node wait for an fsync.
//!
//! A write that must be durable before it counts registers *after* it was applied, with a
//! callback ([`Syncer::after_sync`]) or by awaiting [`Syncer::sync`]. Each fsync round takes
//! every waiter registered before it starts and answers exactly those, so every
//! acknowledgement follows an fsync that started after the write it covers.
//!
//! The rounds run on threads of the node's own, [`IN_FLIGHT`] at most at once: a write that
//! arrives while a round runs gets a round of its own at once instead of waiting for the
//! running one (which may have started before it) to end first, and the next round starts
//! the moment a thread is free, without waiting for a task to be woken on a busy runtime. A
//! waiter is woken once, by the round that covers it. Rounds are answered in the order they
//! started, and once one failed every later one fails too (the disk engine's fsync failure
//! is final, see `disk/journal_sync.rs`): a round that overlapped a failed one is never taken
//! for a success. Callbacks run on these threads, so they must be short (send a reply or a
//! oneshot).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::core::engine::EngineError;

/// Rounds that may run at once (the disk engine syncs on as many descriptor lanes).
pub const IN_FLIGHT: usize = 2;

/// What makes the writes so far durable (the store's fsync); called from several threads.
pub type Persist = dyn Fn() -> Result<(), EngineError> + Send + Sync;

/// What a waiter runs once an fsync covering its write finished, with that fsync's outcome.
type Done = Box<dyn FnOnce(Result<(), EngineError>) + Send>;

#[derive(Default)]
struct State {
    // Registered since the last round started: the next round's to answer.
    waiting: Vec<Done>,
    started: u64,
    answered: u64,
    // Rounds finished, not yet answered (one that started before them still runs).
    finished: BTreeMap<u64, (Vec<Done>, Result<(), EngineError>)>,
    failed: Option<EngineError>,
    closed: bool,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    persist: Arc<Persist>,
}

/// Shares fsyncs between the writes waiting for one at the same time.
pub struct Syncer {
    inner: Arc<Inner>,
    // Empty when no thread could be started: each waiter then fsyncs for itself.
    threads: Vec<JoinHandle<()>>,
}

impl Syncer {
    /// A syncer that makes writes durable with `persist`, on threads of its own.
    pub fn new(persist: Arc<Persist>) -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            persist,
        });
        let mut threads = Vec::with_capacity(IN_FLIGHT);
        for _ in 0..IN_FLIGHT {
            let runner = Arc::clone(&inner);
            match std::thread::Builder::new()
                .name("fsync".into())
                .spawn(move || runner.run())
            {
                Ok(thread) => threads.push(thread),
                Err(e) => tracing::warn!(error = %e, "an fsync thread could not be started"),
            }
        }
        Syncer { inner, threads }
    }

    /// Calls `done` once an fsync that started after this call has finished, with its
    /// outcome: everything written before the call is durable when `done` gets `Ok`. `done`
    /// runs on an fsync thread: it must only hand the outcome on.
    pub fn after_sync(&self, done: impl FnOnce(Result<(), EngineError>) + Send + 'static) {
        if self.threads.is_empty() {
            done((self.inner.persist)());
            return;
        }
        let mut state = self.inner.lock();
        let first = state.waiting.is_empty();
        state.waiting.push(Box::new(done));
        drop(state);
        if first {
            // A thread waits only when nobody does; a busy one finds us after its round.
            self.inner.wake.notify_one();
        }
    }

    /// Returns once an fsync that started after this call began has finished.
    pub async fn sync(&self) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        self.after_sync(move |outcome| {
            // The caller may be gone (a request that timed out): nothing to tell then.
            let _ = tx.send(outcome);
        });
        rx.await
            .unwrap_or_else(|_| Err(EngineError::Failed("the fsync thread went away".into())))
    }

    /// Number of fsync rounds answered so far.
    #[cfg(test)]
    fn rounds(&self) -> u64 {
        self.inner.lock().answered
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.inner.lock().closed = true;
        self.inner.wake.notify_all();
        // Waited for, so that the store the fsyncs hold is released when the node is gone
        // (a node reopened on the same directory finds it unlocked); never from one of the
        // threads itself, should a callback drop the last owner.
        let me = std::thread::current().id();
        for thread in self.threads.drain(..) {
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
    }
}

impl Inner {
    fn run(&self) {
        let mut state = self.lock();
        loop {
            if state.waiting.is_empty() {
                // Closed only once every waiter was taken by a round.
                if state.closed {
                    return;
                }
                state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let covered = std::mem::take(&mut state.waiting);
            let round = state.started;
            state.started += 1;
            drop(state);
            let outcome = (self.persist)();
            state = self.lock();
            state.finished.insert(round, (covered, outcome));
            let answers = state.answerable();
            drop(state);
            for (covered, outcome) in answers {
                for done in covered {
                    let outcome = outcome.clone();
                    // A callback that panics must not take the thread, and every later ack,
                    // with it.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(move || done(outcome)));
                }
            }
            state = self.lock();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    // The finished rounds whose turn it is, in order, each with what its waiters are told.
    fn answerable(&mut self) -> Vec<(Vec<Done>, Result<(), EngineError>)> {
        let mut answers = Vec::new();
        while let Some((covered, outcome)) = self.finished.remove(&self.answered) {
            self.answered += 1;
            let outcome = match (&self.failed, outcome) {
                (Some(first), _) => Err(first.clone()),
                (None, Err(why)) => {
                    self.failed = Some(why.clone());
                    Err(why)
                }
                (None, Ok(())) => Ok(()),
            };
            answers.push((covered, outcome));
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    // `written` counts writes; an fsync makes durable what was written when it started.
    fn counting_syncer(fsync_ms: u64) -> (Syncer, Arc<AtomicU64>, Arc<AtomicU64>) {
        let written = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let syncer = {
            let (written, durable) = (Arc::clone(&written), Arc::clone(&durable));
            Syncer::new(Arc::new(move || {
                let upto = written.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(fsync_ms));
                durable.fetch_max(upto, Ordering::SeqCst);
                Ok(())
            }))
        };
        (syncer, written, durable)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_is_covered_by_an_fsync_that_started_after_it_and_fsyncs_are_shared() {
        let (syncer, written, durable) = counting_syncer(1);
        let syncer = Arc::new(syncer);
        let writers: Vec<_> = (0..16)
            .map(|_| {
                let (syncer, written, durable) = (
                    Arc::clone(&syncer),
                    Arc::clone(&written),
                    Arc::clone(&durable),
                );
                tokio::spawn(async move {
                    for _ in 0..25 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        syncer.sync().await.unwrap();
                        assert!(
                            durable.load(Ordering::SeqCst) >= mine,
                            "acked before durable"
                        );
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let rounds = syncer.rounds();
        assert!(
            rounds < 400,
            "{rounds} fsyncs for 400 writes: nothing was shared"
        );
    }

    #[test]
    fn callbacks_are_answered_only_after_an_fsync_that_started_after_them() {
        // Callbacks from plain threads, as the Storage actor's replies are answered: each
        // checks, when called, that its write is durable.
        let (syncer, written, durable) = counting_syncer(2);
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..200 {
            let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
            let (durable, tx) = (Arc::clone(&durable), tx.clone());
            syncer.after_sync(move |outcome| {
                let covered = outcome.is_ok() && durable.load(Ordering::SeqCst) >= mine;
                let _ = tx.send(covered);
            });
            std::thread::sleep(Duration::from_micros(100));
        }
        drop(tx);
        let answers: Vec<bool> = rx.iter().collect();
        assert_eq!(answers.len(), 200, "every waiter is answered");
        assert!(
            answers.iter().all(|&covered| covered),
            "acked before durable"
        );
        let rounds = syncer.rounds();
        assert!(
            (2..200).contains(&rounds),
            "{rounds} fsyncs for 200 waiters"
        );
    }

    #[tokio::test]
    async fn a_failed_fsync_fails_the_callers_it_covered_and_every_later_one() {
        let calls = Arc::new(AtomicU64::new(0));
        let syncer = {
            let calls = Arc::clone(&calls);
            Syncer::new(Arc::new(move || {
                // The first fsync fails; the kernel may report the next ones clean.
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(EngineError::Failed("disk gone".into()))
                } else {
                    Ok(())
                }
            }))
        };
        let gone = Err(EngineError::Failed("disk gone".into()));
        assert_eq!(syncer.sync().await, gone);
        assert_eq!(syncer.sync().await, gone, "a failure is final");
        assert_eq!(syncer.rounds(), 2);
    }

    #[test]
    fn a_round_that_ends_first_waits_for_the_one_that_started_before_it() {
        // The first fsync is slow and fails; the second, started while it runs, succeeds
        // at once. Its waiter must not be told before the first is known, nor be told Ok.
        let calls = Arc::new(AtomicU64::new(0));
        let syncer = {
            let calls = Arc::clone(&calls);
            Syncer::new(Arc::new(move || {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_millis(100));
                    Err(EngineError::Failed("write-back failed".into()))
                } else {
                    Ok(())
                }
            }))
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let first = tx.clone();
        syncer.after_sync(move |outcome| {
            let _ = first.send(("first", outcome));
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while calls.load(Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "no round started");
            std::thread::yield_now();
        }
        syncer.after_sync(move |outcome| {
            let _ = tx.send(("second", outcome));
        });
        let answers: Vec<_> = rx.iter().take(2).collect();
        let failed = Err(EngineError::Failed("write-back failed".into()));
        assert_eq!(
            answers,
            vec![("first", failed.clone()), ("second", failed)],
            "answered in order, and the overlapping round is no success"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the second ran beside the first"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_dropped_during_its_fsync_does_not_stall_the_next_ones() {
        let started = Arc::new(AtomicU64::new(0));
        let syncer = {
            let started = Arc::clone(&started);
            Arc::new(Syncer::new(Arc::new(move || {
                started.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
                Ok(())
            })))
        };
        let first = tokio::spawn({
            let syncer = Arc::clone(&syncer);
            async move { syncer.sync().await }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while started.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the first round never started"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        first.abort();
        let next = tokio::time::timeout(Duration::from_secs(5), syncer.sync()).await;
        assert_eq!(next, Ok(Ok(())), "the round of a dropped caller still ends");
        let later = tokio::time::timeout(Duration::from_secs(5), syncer.sync()).await;
        assert_eq!(later, Ok(Ok(())));
    }

    #[test]
    fn a_panicking_callback_does_not_stop_the_fsyncs_and_dropping_answers_every_waiter() {
        let (syncer, _, _) = counting_syncer(1);
        syncer.after_sync(|_| panic!("a broken waiter"));
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..3 {
            let tx = tx.clone();
            syncer.after_sync(move |outcome| {
                let _ = tx.send(outcome);
            });
        }
        drop(syncer);
        drop(tx);
        let answers: Vec<_> = rx.iter().collect();
        assert_eq!(answers, vec![Ok(()), Ok(()), Ok(())]);
    }
}
