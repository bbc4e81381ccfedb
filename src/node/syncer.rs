//! Group commit for the node's async writers: one fsync at a time on one blocking thread.
//!
//! Each write that waits for durability used to hold a blocking thread parked in the
//! engine's group commit; with 64 clients that was dozens of threads woken per fsync. Here a
//! waiter is a task awaiting a watch channel, and only the fsync itself runs on a blocking
//! thread. The rule is the engine's: a caller returns once an fsync that *started after the
//! call began* has finished, so everything written before the call is durable. The first
//! caller that finds no fsync running starts one for everyone; callers arriving during it
//! wait for the next, which the first of them starts.
//!
//! The fsync and the bookkeeping after it run inside the blocking closure, which completes
//! even when the caller that started it is dropped (a timed-out request), so a round can
//! never be left marked as running.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::core::engine::EngineError;

/// What makes the writes so far durable (the store's fsync).
pub type Persist = dyn Fn() -> Result<(), EngineError> + Send + Sync;

#[derive(Default)]
struct State {
    // Rounds (fsyncs) started and finished; a caller needs one started after it arrived.
    started: u64,
    finished: u64,
    running: bool,
    // The last round that failed, and why: every caller it was to cover gets the error.
    failed: Option<(u64, EngineError)>,
}

/// Shares fsyncs between concurrent async writers.
pub struct Syncer {
    state: Mutex<State>,
    finished: watch::Sender<u64>,
    persist: Arc<Persist>,
}

impl Syncer {
    /// A syncer that makes writes durable with `persist`.
    pub fn new(persist: Arc<Persist>) -> Arc<Self> {
        Arc::new(Syncer {
            state: Mutex::new(State::default()),
            finished: watch::Sender::new(0),
            persist,
        })
    }

    /// Returns once an fsync that started after this call began has finished.
    pub async fn sync(self: &Arc<Self>) -> Result<(), EngineError> {
        let mut ticket = None;
        loop {
            let mut finished = {
                let mut state = self.lock();
                let ticket = *ticket.get_or_insert(state.started + 1);
                if state.finished >= ticket {
                    return match &state.failed {
                        Some((round, why)) if *round >= ticket => Err(why.clone()),
                        _ => Ok(()),
                    };
                }
                if !state.running {
                    state.running = true;
                    state.started += 1;
                    self.start_round(state.started);
                }
                // Subscribed under the lock: the round's end, published under it, is not missed.
                self.finished.subscribe()
            };
            if finished.changed().await.is_err() {
                // The sender lives in `self`, which we hold: cannot close.
                return Err(EngineError::Failed("the fsync task went away".into()));
            }
        }
    }

    /// Number of fsyncs finished so far.
    #[cfg(test)]
    fn rounds(&self) -> u64 {
        self.lock().finished
    }

    fn start_round(self: &Arc<Self>, round: u64) {
        let syncer = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let outcome = (syncer.persist)();
            let mut state = syncer.lock();
            state.running = false;
            state.finished = round;
            if let Err(why) = outcome {
                state.failed = Some((round, why));
            }
            syncer.finished.send_replace(round);
        });
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_is_covered_by_an_fsync_that_started_after_it_and_fsyncs_are_shared() {
        // `written` counts writes; an fsync makes durable what was written when it started.
        let written = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let syncer = {
            let (written, durable) = (Arc::clone(&written), Arc::clone(&durable));
            Syncer::new(Arc::new(move || {
                let upto = written.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
                durable.fetch_max(upto, Ordering::SeqCst);
                Ok(())
            }))
        };
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

    #[tokio::test]
    async fn a_failed_fsync_fails_the_callers_it_covered_and_a_later_one_covers_new_callers() {
        let fail = Arc::new(AtomicU64::new(1));
        let syncer = {
            let fail = Arc::clone(&fail);
            Syncer::new(Arc::new(move || {
                if fail.swap(0, Ordering::SeqCst) == 1 {
                    Err(EngineError::Failed("disk gone".into()))
                } else {
                    Ok(())
                }
            }))
        };
        assert_eq!(
            syncer.sync().await,
            Err(EngineError::Failed("disk gone".into()))
        );
        assert_eq!(syncer.sync().await, Ok(()));
        assert_eq!(syncer.rounds(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_dropped_during_its_fsync_does_not_stall_the_next_ones() {
        let syncer = Syncer::new(Arc::new(|| {
            std::thread::sleep(Duration::from_millis(50));
            Ok(())
        }));
        let first = tokio::spawn({
            let syncer = Arc::clone(&syncer);
            async move { syncer.sync().await }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !syncer.lock().running {
            assert!(
                std::time::Instant::now() < deadline,
                "the first round never started"
            );
            tokio::task::yield_now().await;
        }
        first.abort();
        let next = tokio::time::timeout(Duration::from_secs(5), syncer.sync()).await;
        assert_eq!(next, Ok(Ok(())), "the round of a dropped caller still ends");
    }
}
