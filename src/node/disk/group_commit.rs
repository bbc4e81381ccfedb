//! Group commit: many writers, one fsync.
//!
//! A writer that needs its changes durable calls [`GroupCommit::sync`] after making them. The
//! first caller while no fsync runs starts one; callers that arrive while it runs wait for the
//! next one (the running fsync may have started before their changes), which one of them
//! starts for all the others. Under load every fsync covers the writes of every caller that
//! arrived during the previous one, so the fsync rate stays near 1 / fsync time whatever
//! the write rate.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    // Number of fsyncs started and finished; a caller needs one started after it arrived.
    started: u64,
    finished: u64,
    running: bool,
    // The last fsync that failed, and why: every caller it was to cover gets the error.
    failed: Option<(u64, String)>,
}

/// Coalesces concurrent fsync requests into as few fsyncs as possible.
#[derive(Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
}

impl GroupCommit {
    /// Returns once an fsync (made by `persist`, here or in another caller) that started
    /// after this call began has finished: everything written before the call is durable.
    pub fn sync(&self, persist: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
        let mut state = self.lock();
        let ticket = state.started + 1;
        let mut persist = Some(persist);
        loop {
            if state.finished >= ticket {
                return match &state.failed {
                    Some((round, why)) if *round >= ticket => Err(why.clone()),
                    _ => Ok(()),
                };
            }
            if !state.running {
                let Some(persist) = persist.take() else {
                    // Our own round finished above; unreachable, but never spin.
                    return Ok(());
                };
                state.running = true;
                state.started += 1;
                let round = state.started;
                drop(state);
                let outcome = persist();
                state = self.lock();
                state.running = false;
                state.finished = round;
                if let Err(why) = &outcome {
                    state.failed = Some((round, why.clone()));
                }
                self.done.notify_all();
                continue;
            }
            state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Number of fsyncs made so far.
    pub fn rounds(&self) -> u64 {
        self.lock().finished
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn concurrent_callers_share_fsyncs_and_each_is_covered_by_one_that_started_after_it() {
        let group = Arc::new(GroupCommit::default());
        // `written` counts writes; an fsync makes durable what was written when it started.
        let written = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (group, written, durable) = (
                    Arc::clone(&group),
                    Arc::clone(&written),
                    Arc::clone(&durable),
                );
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        group
                            .sync(|| {
                                let upto = written.load(Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(1));
                                durable.fetch_max(upto, Ordering::SeqCst);
                                Ok(())
                            })
                            .unwrap();
                        assert!(
                            durable.load(Ordering::SeqCst) >= mine,
                            "acked before durable"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let rounds = group.rounds();
        assert!(
            rounds < 400,
            "{rounds} fsyncs for 400 writes: nothing was shared"
        );
    }

    #[test]
    fn a_failed_fsync_fails_every_caller_it_was_to_cover() {
        let group = GroupCommit::default();
        assert_eq!(
            group.sync(|| Err("disk gone".into())),
            Err("disk gone".into())
        );
        assert_eq!(
            group.sync(|| Ok(())),
            Ok(()),
            "a later round that worked covers its callers"
        );
    }
}
