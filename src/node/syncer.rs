//! Group commit: the one place where writes applied on this node wait for an fsync.
//!
//! A write that must be durable before it counts registers *after* it was applied, with a
//! callback ([`Syncer::after_sync`]; `NodeShared::sync_store` awaits one). A thread of the node's
//! own makes the fsyncs while anyone waits: each round takes every waiter registered before
//! it starts, fsyncs, then answers exactly those. A waiter that registers while a round runs
//! is taken by the next one, since the running fsync may have started before its write; so
//! every acknowledgement follows an fsync that started after the write it covers.
//!
//! Why a thread of its own: the next round starts as soon as it is due, without waiting for a
//! task to be woken and polled on a busy runtime, and a waiter is woken once, by the round
//! that covers it. The thread asks for a short scheduler slice (`short_slice`), so that it
//! runs as soon as its fsync returns. Callbacks run on this thread, so they must be short
//! (send a reply or a oneshot). Once a round failed every later one fails too: after a failed
//! fsync the kernel may report the next one clean although the pages it could not write are
//! gone.
//!
//! When a round covered several writers, or writers registered while its fsync ran, the next
//! round starts [`ROUND_SPACING`] after it began, not at once: on a fast disk, rounds back to
//! back under load fsync a handful of writes each, and a round costs about the same CPU
//! whatever it covers (on a virtual disk about 120 µs: the exits to the hypervisor that
//! submit and complete its writes and flush, the thread's wake-ups, the runtime's wake-ups
//! for the answers). Spaced rounds share each fsync between more writes, for at most the
//! spacing of extra wait; a writer that finds the thread idle is never held back, and a disk
//! slower than the spacing sees no change. 3 ms was the best of 1, 2, 3 and 5 ms under YCSB-A with 64 clients on a
//! disk whose fsync takes 0.3 ms (BENCHMARKS.md): throughput and p99 both got better up to
//! 3 ms, as the CPU that rounds freed outweighed their wait, and worse at 5 ms.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::core::engine::EngineError;

/// The least time between the starts of two rounds while writers keep the syncer busy.
pub const ROUND_SPACING: Duration = Duration::from_millis(3);

// The fsync thread's scheduler slice (see `short_slice`): the shortest Linux takes.
const THREAD_SLICE: Duration = Duration::from_micros(100);

/// What makes the writes so far durable (the store's fsync).
pub type Persist = dyn Fn() -> Result<(), EngineError> + Send + Sync;

/// What a waiter runs once an fsync covering its write finished, with that fsync's outcome.
pub(super) type Done = Box<dyn FnOnce(Result<(), EngineError>) + Send>;

#[derive(Default)]
struct State {
    // Registered since the running round (if any) started: the next round's to answer.
    waiting: Vec<Done>,
    rounds: u64,
    failed: Option<EngineError>,
    closed: bool,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    persist: Arc<Persist>,
    // The least time from the start of one round to the start of the next.
    spacing: Duration,
}

/// Shares fsyncs between the writes waiting for one at the same time.
pub struct Syncer {
    inner: Arc<Inner>,
    // None when the thread could not be started: each waiter then fsyncs for itself.
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// A syncer that makes writes durable with `persist`, on a thread of its own; while
    /// writers keep it busy, its rounds start at least `spacing` apart.
    pub fn new(persist: Arc<Persist>, spacing: Duration) -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            persist,
            spacing,
        });
        let runner = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("fsync".into())
            .spawn(move || {
                super::short_slice::request(THREAD_SLICE);
                runner.run()
            });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::warn!(error = %e, "no fsync thread: each write waits for an fsync of its own");
                None
            }
        };
        Syncer { inner, thread }
    }

    /// Calls `done` once an fsync that started after this call has finished, with its
    /// outcome: everything written before the call is durable when `done` gets `Ok`. `done`
    /// runs on the fsync thread: it must only hand the outcome on.
    pub fn after_sync(&self, done: impl FnOnce(Result<(), EngineError>) + Send + 'static) {
        if self.thread.is_none() {
            done(self.inner.round());
            return;
        }
        let mut state = self.inner.lock();
        let first = state.waiting.is_empty();
        state.waiting.push(Box::new(done));
        drop(state);
        if first {
            // The thread waits only when nobody does; a busy one finds us after its round.
            self.inner.wake.notify_one();
        }
    }

    /// Returns once an fsync that started after this call began has finished.
    #[cfg(test)]
    pub async fn sync(&self) -> Result<(), EngineError> {
        awaited(
            |done| self.after_sync(done),
            || EngineError::Failed("the fsync thread went away".into()),
        )
        .await
    }

    /// Number of fsync rounds finished so far.
    #[cfg(test)]
    fn rounds(&self) -> u64 {
        self.inner.lock().rounds
    }
}

/// The outcome that `register` hands the callback it is given, awaited; `gone()` when the
/// callback was dropped unanswered.
pub(super) async fn awaited<E: Send + 'static>(
    register: impl FnOnce(Box<dyn FnOnce(Result<(), E>) + Send>),
    gone: impl FnOnce() -> E,
) -> Result<(), E> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    register(Box::new(move |outcome| {
        // The caller may be gone (a request that timed out): nothing to tell then.
        let _ = tx.send(outcome);
    }));
    rx.await.unwrap_or_else(|_| Err(gone()))
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.inner.lock().closed = true;
        self.inner.wake.notify_one();
        // Waited for, so that the store the fsync holds is released when the node is gone
        // (a node reopened on the same directory finds it unlocked); never from the thread
        // itself, should a callback drop the last owner.
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// Answers every waiter a round covered with its outcome.
pub(super) fn answer(covered: Vec<Done>, outcome: &Result<(), EngineError>) {
    for done in covered {
        let outcome = outcome.clone();
        // A callback that panics must not take the round's runner, and every later ack, with it.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(move || done(outcome)));
    }
}

impl Inner {
    fn run(&self) {
        let mut state = self.lock();
        let mut last_start: Option<Instant> = None;
        // Whether the last round saw load: several writers, or writers registering during it.
        let mut busy = false;
        loop {
            if state.waiting.is_empty() {
                // Closed only once every waiter was answered.
                if state.closed {
                    return;
                }
                state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            if busy
                && !state.closed
                && let Some(wait) = last_start
                    .map(|start| start + self.spacing)
                    .and_then(|due| due.checked_duration_since(Instant::now()))
                    .filter(|wait| !wait.is_zero())
            {
                // Writers that register meanwhile join this round.
                state = self
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                continue;
            }
            let covered = std::mem::take(&mut state.waiting);
            last_start = Some(Instant::now());
            drop(state);
            let outcome = self.round();
            // Counted before the answers go out: a lone writer's next write, which follows
            // its answer, is no sign of load; a round shared by several writers is.
            busy = covered.len() > 1 || !self.lock().waiting.is_empty();
            answer(covered, &outcome);
            state = self.lock();
        }
    }

    // One fsync, or the failure of an earlier one.
    fn round(&self) -> Result<(), EngineError> {
        if let Some(why) = &self.lock().failed {
            return Err(why.clone());
        }
        let outcome = (self.persist)();
        let mut state = self.lock();
        state.rounds += 1;
        if let Err(why) = &outcome {
            state.failed.get_or_insert_with(|| why.clone());
        }
        match &state.failed {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
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

    // `written` counts writes; an fsync makes durable what was written when it started.
    fn counting_syncer(fsync_ms: u64) -> (Syncer, Arc<AtomicU64>, Arc<AtomicU64>) {
        spaced_counting_syncer(fsync_ms, Duration::ZERO)
    }

    fn spaced_counting_syncer(
        fsync_ms: u64,
        spacing: Duration,
    ) -> (Syncer, Arc<AtomicU64>, Arc<AtomicU64>) {
        let written = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let syncer = {
            let (written, durable) = (Arc::clone(&written), Arc::clone(&durable));
            Syncer::new(
                Arc::new(move || {
                    let upto = written.load(Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(fsync_ms));
                    durable.fetch_max(upto, Ordering::SeqCst);
                    Ok(())
                }),
                spacing,
            )
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
            Syncer::new(
                Arc::new(move || {
                    // The first fsync fails; the kernel may report the next ones clean.
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        Err(EngineError::Failed("disk gone".into()))
                    } else {
                        Ok(())
                    }
                }),
                Duration::ZERO,
            )
        };
        let gone = Err(EngineError::Failed("disk gone".into()));
        assert_eq!(syncer.sync().await, gone);
        assert_eq!(syncer.sync().await, gone, "a failure is final");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "no fsync is trusted after it"
        );
        assert_eq!(syncer.rounds(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_dropped_during_its_fsync_does_not_stall_the_next_ones() {
        let started = Arc::new(AtomicU64::new(0));
        let syncer = {
            let started = Arc::clone(&started);
            Arc::new(Syncer::new(
                Arc::new(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    Ok(())
                }),
                Duration::ZERO,
            ))
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

    /// A syncer whose rounds each wait for a token, so that a test decides when a round ends,
    /// and which records when each round started and which writer each answer went to.
    struct Gated {
        syncer: Syncer,
        starts: Arc<Mutex<Vec<Instant>>>,
        gate: std::sync::mpsc::Sender<()>,
        tell: std::sync::mpsc::Sender<(u32, Result<(), EngineError>)>,
        answers: std::sync::mpsc::Receiver<(u32, Result<(), EngineError>)>,
    }

    impl Gated {
        fn new(spacing: Duration) -> Self {
            let starts = Arc::new(Mutex::new(Vec::<Instant>::new()));
            let (gate, tokens) = std::sync::mpsc::channel::<()>();
            let syncer = {
                let (starts, tokens) = (Arc::clone(&starts), Mutex::new(tokens));
                Syncer::new(
                    Arc::new(move || {
                        starts.lock().unwrap().push(Instant::now());
                        let _ = tokens.lock().unwrap().recv();
                        Ok(())
                    }),
                    spacing,
                )
            };
            let (tell, answers) = std::sync::mpsc::channel();
            Gated {
                syncer,
                starts,
                gate,
                tell,
                answers,
            }
        }

        /// Registers writer `name`, whose answer `answers` will carry.
        fn write(&self, name: u32) {
            let tell = self.tell.clone();
            self.syncer.after_sync(move |outcome| {
                let _ = tell.send((name, outcome));
            });
        }

        /// Lets one round end.
        fn end_a_round(&self) {
            self.gate.send(()).unwrap();
        }

        fn wait_for_rounds(&self, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.starts.lock().unwrap().len() < n {
                assert!(Instant::now() < deadline, "round {n} never started");
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        /// The next `n` writers answered, in the order their answers came.
        fn answered(&self, n: usize) -> Vec<u32> {
            (0..n)
                .map(|_| {
                    let (name, outcome) =
                        self.answers.recv_timeout(Duration::from_secs(10)).unwrap();
                    assert_eq!(outcome, Ok(()));
                    name
                })
                .collect()
        }

        /// The time between the starts of rounds `i` and `i + 1` (from 0).
        fn gap_after(&self, i: usize) -> Duration {
            let starts = self.starts.lock().unwrap();
            starts[i + 1] - starts[i]
        }
    }

    #[test]
    fn a_round_that_writers_waited_through_is_followed_by_one_the_spacing_after_its_start() {
        let spacing = Duration::from_millis(300);
        let gated = Gated::new(spacing);
        gated.write(1);
        gated.wait_for_rounds(1);
        // Registered while the first round runs: the next round's, which is due a spacing
        // after the first one started.
        gated.write(2);
        gated.end_a_round();
        gated.end_a_round();
        assert_eq!(gated.answered(2), [1, 2]);
        assert_eq!(gated.starts.lock().unwrap().len(), 2);
        assert!(gated.gap_after(0) >= spacing, "{:?}", gated.gap_after(0));
    }

    #[test]
    fn a_round_shared_by_several_writers_is_followed_by_one_the_spacing_after_its_start() {
        // Nobody registers while the second round's fsync runs, but it covered two writers:
        // load, so the writer that comes after it waits for the spacing all the same.
        let spacing = Duration::from_millis(300);
        let gated = Gated::new(spacing);
        gated.write(1);
        gated.wait_for_rounds(1);
        gated.write(2);
        gated.write(3);
        gated.end_a_round();
        gated.wait_for_rounds(2);
        gated.end_a_round();
        assert_eq!(gated.answered(3), [1, 2, 3]);
        gated.write(4);
        gated.end_a_round();
        assert_eq!(gated.answered(1), [4]);
        assert_eq!(gated.starts.lock().unwrap().len(), 3);
        assert!(gated.gap_after(1) >= spacing, "{:?}", gated.gap_after(1));
    }

    #[tokio::test]
    async fn a_lone_writer_does_not_wait_for_the_spacing() {
        // Nobody waits when a round ends, so the next writer's round starts at once.
        let spacing = Duration::from_secs(30);
        let (syncer, written, durable) = spaced_counting_syncer(1, spacing);
        for _ in 0..3 {
            let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
            let sync = tokio::time::timeout(Duration::from_secs(10), syncer.sync()).await;
            assert_eq!(sync, Ok(Ok(())), "the round waited for the spacing");
            assert!(
                durable.load(Ordering::SeqCst) >= mine,
                "acked before durable"
            );
        }
        assert_eq!(syncer.rounds(), 3);
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
