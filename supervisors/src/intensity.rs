//! Restart intensity: OTP's `intensity`/`period` pair and the sliding window that enforces it.
//!
//! The window is pure: callers pass the current time in, so it can be tested without a clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The most restarts a supervisor may perform within a sliding time window (OTP `intensity`/`period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed inside the window; one more makes the supervisor give up (0 = never restart).
    pub max_restarts: u32,
    /// Length of the sliding window.
    pub within: Duration,
}

impl Intensity {
    /// Builds an intensity limit of `max_restarts` restarts per `within`.
    pub fn new(max_restarts: u32, within: Duration) -> Self {
        Self {
            max_restarts,
            within,
        }
    }
}

impl Default for Intensity {
    /// 3 restarts in 5 seconds, like an OTP supervisor with default flags.
    fn default() -> Self {
        Self::new(3, Duration::from_secs(5))
    }
}

/// Timestamps of recent restarts, trimmed to the window of an [`Intensity`].
#[derive(Debug, Clone)]
pub struct RestartWindow {
    limit: Intensity,
    // Oldest first; never longer than `max_restarts + 1`, since older entries cannot change a verdict.
    stamps: VecDeque<Instant>,
}

impl RestartWindow {
    /// An empty window enforcing `limit`.
    pub fn new(limit: Intensity) -> Self {
        Self {
            limit,
            stamps: VecDeque::new(),
        }
    }

    /// The limit this window enforces.
    pub fn limit(&self) -> Intensity {
        self.limit
    }

    /// Records a restart at `now`; returns `false` when it pushes the count over the limit.
    ///
    /// A restart at `t` still counts at `now` while `now - t < within`. Times are expected to be
    /// non-decreasing; an earlier `now` is treated as simultaneous with the newest stamp.
    pub fn record(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.stamps.front() {
            if now.saturating_duration_since(oldest) >= self.limit.within {
                self.stamps.pop_front();
            } else {
                break;
            }
        }
        self.stamps.push_back(now);
        let cap = self.cap();
        while self.stamps.len() > cap {
            self.stamps.pop_front();
        }
        self.stamps.len() <= self.limit.max_restarts as usize
    }

    /// Number of restarts currently remembered inside the window (as of the last `record`).
    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    /// True when no restart is remembered.
    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }

    fn cap(&self) -> usize {
        (self.limit.max_restarts as usize).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn default_is_three_in_five_seconds() {
        assert_eq!(Intensity::default(), Intensity::new(3, ms(5000)));
    }

    #[test]
    fn allows_max_restarts_then_refuses_one_more() {
        let t0 = Instant::now();
        let mut w = RestartWindow::new(Intensity::new(3, ms(1000)));
        assert!(w.record(t0));
        assert!(w.record(t0 + ms(10)));
        assert!(w.record(t0 + ms(20)));
        assert!(!w.record(t0 + ms(30)));
    }

    #[test]
    fn zero_intensity_refuses_first_restart() {
        let mut w = RestartWindow::new(Intensity::new(0, ms(1000)));
        assert!(!w.record(Instant::now()));
    }

    #[test]
    fn old_restarts_slide_out_of_the_window() {
        let t0 = Instant::now();
        let mut w = RestartWindow::new(Intensity::new(2, ms(100)));
        assert!(w.record(t0));
        assert!(w.record(t0 + ms(50)));
        // t0 is exactly `within` old at t0+100 and no longer counts.
        assert!(w.record(t0 + ms(100)));
        assert_eq!(w.len(), 2);
        assert!(!w.record(t0 + ms(120)));
    }

    #[test]
    fn earlier_time_counts_as_inside_window() {
        let t0 = Instant::now();
        let mut w = RestartWindow::new(Intensity::new(1, ms(100)));
        assert!(w.record(t0 + ms(500)));
        assert!(!w.record(t0));
    }

    proptest! {
        // The window must agree with a naive count over the full history.
        #[test]
        fn matches_naive_model(
            max in 0u32..5,
            within in 1u64..200,
            gaps in proptest::collection::vec(0u64..100, 1..40),
        ) {
            let t0 = Instant::now();
            let mut w = RestartWindow::new(Intensity::new(max, ms(within)));
            let mut history: Vec<u64> = Vec::new();
            let mut now = 0u64;
            for gap in gaps {
                now += gap;
                history.push(now);
                let in_window = history.iter().filter(|&&t| now - t < within).count();
                prop_assert_eq!(w.record(t0 + ms(now)), in_window <= max as usize);
            }
        }
    }
}
