//! The run second by second: operations, errors and the p99 of each operation kind per
//! second, and the marks of the run (phases begun, faults made), for `bench --plot`.
//!
//! Each client keeps the second it is in and hands it to the shared timeline once the next
//! one begins, so the hot path takes no lock: one per client per second.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::latency::MAX_LATENCY_US;
use super::stats::OpKind;

/// What a mark on the timeline stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkKind {
    /// A phase begins (`load`, `run`, `steady`, ...).
    Phase,
    /// Something done to the cluster (a node killed, restarted, cut off).
    Fault,
}

/// A labelled moment of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    /// Seconds since the timeline began.
    pub at_s: f64,
    /// Phase or fault.
    pub kind: MarkKind,
    /// What happened, e.g. `run` or `kill n3`.
    pub label: String,
}

/// The figures of one second of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Which second since the timeline began (0-based).
    pub second: u64,
    /// Operations that succeeded in it.
    pub ops: u64,
    /// Operations that failed in it.
    pub errors: u64,
    /// The p99 latency (µs) of each operation kind that ran in it, by [`OpKind::ALL`] order.
    pub p99_us: [Option<u64>; 3],
    /// How much of the second the run covered: 1 but for the last second, which ends with the
    /// run's last operation (without this the picture shows a fall at the end of every run).
    pub covered_s: f64,
}

impl Point {
    /// Operations that succeeded, per second of the time covered.
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.covered_s
    }

    /// Operations that failed, per second of the time covered.
    pub fn errors_per_s(&self) -> f64 {
        self.errors as f64 / self.covered_s
    }
}

/// A copy of the timeline: one point per second from the first to the last with any
/// operation (seconds without one are points with zero operations), and the marks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Consecutive seconds.
    pub points: Vec<Point>,
    /// In the order they were made.
    pub marks: Vec<Mark>,
}

impl Series {
    /// Seconds from the start to the last point or mark.
    pub fn span_s(&self) -> f64 {
        let last_point = self.points.last().map_or(0.0, |p| (p.second + 1) as f64);
        self.marks.iter().map(|m| m.at_s).fold(last_point, f64::max)
    }
}

/// The latencies of each kind, and the errors, of one second.
#[derive(Debug, Default)]
struct Second {
    latencies: [Option<Histogram<u32>>; 3],
    errors: u64,
    /// When its last operation ended.
    last: Option<Instant>,
}

impl Second {
    /// Adds `other`'s figures, taking its histograms where this second has none yet.
    fn absorb(&mut self, other: &mut Second) {
        for (mine, theirs) in self.latencies.iter_mut().zip(other.latencies.iter_mut()) {
            match (mine.as_mut(), theirs.take()) {
                (_, None) => {}
                (None, Some(h)) => *mine = Some(h),
                // Same bounds on both sides, so adding cannot fail.
                (Some(m), Some(t)) => {
                    let _ = m.add(&t);
                }
            }
        }
        self.errors += std::mem::take(&mut other.errors);
        self.last = self.last.max(other.last.take());
    }
}

/// A histogram for one second: 2 significant digits are plenty for a picture and take a
/// tenth of the memory of the summary's.
fn second_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
        // The bounds are constants that hdrhistogram accepts.
        .expect("valid histogram bounds")
}

/// The shared timeline of a benchmark.
#[derive(Debug)]
pub struct Timeline {
    started: Instant,
    seconds: Mutex<Vec<Second>>,
    marks: Mutex<Vec<Mark>>,
}

/// A poisoned lock only means a client panicked mid-hand-over; its figures are still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Timeline {
    /// A timeline beginning now.
    pub fn new() -> Arc<Timeline> {
        Arc::new(Timeline {
            started: Instant::now(),
            seconds: Mutex::new(Vec::new()),
            marks: Mutex::new(Vec::new()),
        })
    }

    /// Marks this moment.
    pub fn mark(&self, kind: MarkKind, label: impl Into<String>) {
        let at_s = self.started.elapsed().as_secs_f64();
        lock(&self.marks).push(Mark {
            at_s,
            kind,
            label: label.into(),
        });
    }

    /// A client's recorder; it hands its seconds over as they end, and the last when dropped.
    pub fn recorder(self: &Arc<Self>) -> Recorder {
        Recorder {
            timeline: self.clone(),
            second: 0,
            current: Second::default(),
        }
    }

    fn second_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs()
    }

    fn absorb(&self, second: u64, figures: &mut Second) {
        let Ok(index) = usize::try_from(second) else {
            return;
        };
        let mut seconds = lock(&self.seconds);
        if seconds.len() <= index {
            seconds.resize_with(index + 1, Second::default);
        }
        seconds[index].absorb(figures);
    }

    /// The figures so far.
    pub fn series(&self) -> Series {
        let seconds = lock(&self.seconds);
        let count = |s: &Second| {
            s.latencies
                .iter()
                .flatten()
                .map(Histogram::len)
                .sum::<u64>()
        };
        let first = seconds.iter().position(|s| count(s) + s.errors > 0);
        let final_index = seconds.len().saturating_sub(1);
        // The shortest share of a second a point may cover, so that one operation just
        // after a second began does not read as a spike.
        const MIN_COVERED_S: f64 = 0.05;
        let covered = |i: usize, s: &Second| match s.last {
            Some(last) if i == final_index => {
                let into = last.saturating_duration_since(self.started).as_secs_f64() - i as f64;
                into.clamp(MIN_COVERED_S, 1.0)
            }
            _ => 1.0,
        };
        let points = match first {
            None => Vec::new(),
            Some(first) => seconds
                .iter()
                .enumerate()
                .skip(first)
                .map(|(i, s)| Point {
                    second: i as u64,
                    ops: count(s),
                    errors: s.errors,
                    p99_us: OpKind::ALL.map(|op| {
                        s.latencies[op.index()]
                            .as_ref()
                            .filter(|h| !h.is_empty())
                            .map(|h| h.value_at_quantile(0.99))
                    }),
                    covered_s: covered(i, s),
                })
                .collect(),
        };
        Series {
            points,
            marks: lock(&self.marks).clone(),
        }
    }
}

/// One client's current second.
#[derive(Debug)]
pub struct Recorder {
    timeline: Arc<Timeline>,
    second: u64,
    current: Second,
}

impl Recorder {
    /// An operation of kind `op` that succeeded at `at` after `took`.
    pub fn ok(&mut self, op: OpKind, took: Duration, at: Instant) {
        self.roll(at);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.current.latencies[op.index()]
            .get_or_insert_with(second_histogram)
            .saturating_record(micros);
    }

    /// An operation that failed at `at`.
    pub fn error(&mut self, at: Instant) {
        self.roll(at);
        self.current.errors += 1;
    }

    /// Hands the current second over when `at` is in another one.
    fn roll(&mut self, at: Instant) {
        let second = self.timeline.second_of(at);
        if second != self.second {
            self.flush();
            self.second = second;
        }
        self.current.last = self.current.last.max(Some(at));
    }

    fn flush(&mut self) {
        self.timeline.absorb(self.second, &mut self.current);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_seconds_add_up_and_marks_keep_their_order() {
        let timeline = Timeline::new();
        let t0 = timeline.started;
        let s = Duration::from_secs;
        timeline.mark(MarkKind::Phase, "run");
        let mut a = timeline.recorder();
        let mut b = timeline.recorder();
        // Nothing in second 0: the series starts at the first second with operations.
        for ms in 0..100 {
            a.ok(OpKind::Read, Duration::from_millis(1), t0 + s(1));
            b.ok(
                OpKind::Update,
                Duration::from_millis(2 + ms / 50),
                t0 + s(1),
            );
        }
        b.error(t0 + s(1));
        a.ok(OpKind::Read, Duration::from_millis(9), t0 + s(3));
        timeline.mark(MarkKind::Fault, "kill n3");
        drop(a);
        drop(b);
        let series = timeline.series();
        let seconds: Vec<u64> = series.points.iter().map(|p| p.second).collect();
        assert_eq!(seconds, [1, 2, 3]);
        let one = &series.points[0];
        assert_eq!((one.ops, one.errors), (200, 1));
        let [read, update, insert] = one.p99_us;
        assert!((990..=1010).contains(&read.unwrap()), "{one:?}");
        assert!((2970..=3030).contains(&update.unwrap()), "{one:?}");
        assert_eq!(insert, None);
        assert_eq!(series.points[1].ops, 0, "a second without operations");
        let slow = series.points[2].p99_us[0].unwrap();
        assert!((8900..=9100).contains(&slow), "{slow}");
        let labels: Vec<&str> = series.marks.iter().map(|m| m.label.as_str()).collect();
        assert_eq!(labels, ["run", "kill n3"]);
        assert_eq!(series.marks[1].kind, MarkKind::Fault);
        assert!(series.span_s() >= 4.0);
        assert_eq!(Timeline::new().series(), Series::default());
    }

    #[test]
    fn the_last_second_counts_only_the_time_the_run_covered() {
        let timeline = Timeline::new();
        let t0 = timeline.started;
        let mut client = timeline.recorder();
        let ms = Duration::from_millis;
        for i in 0..100 {
            client.ok(OpKind::Read, ms(1), t0 + ms(1_000 + i * 10));
        }
        // The run ends a quarter into second 2, at the same rate.
        for i in 0..25 {
            client.ok(OpKind::Read, ms(1), t0 + ms(2_000 + i * 10));
        }
        drop(client);
        let series = timeline.series();
        let [full, last] = &series.points[..] else {
            panic!("two seconds expected: {series:?}");
        };
        assert_eq!((full.covered_s, full.ops_per_s()), (1.0, 100.0));
        assert!((last.covered_s - 0.24).abs() < 1e-9, "{last:?}");
        assert!((last.ops_per_s() - 25.0 / 0.24).abs() < 1e-6, "{last:?}");
    }
}
