//! Latencies as the bench records and reports them: HdrHistograms in µs, their percentiles,
//! and figures rounded as the JSON lines print them.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly (µs); slower operations count as this (60 s, above
/// any request timeout).
pub(crate) const MAX_LATENCY_US: u64 = 60_000_000;

/// An empty latency histogram: µs, from 1 to [`MAX_LATENCY_US`], 3 significant digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        // The bounds are constants that hdrhistogram accepts.
        .expect("valid histogram bounds")
}

/// `x` rounded to 3 decimals, as the JSON lines print figures.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `count` per second of `secs`, rounded as the JSON lines print it; 0 when no time passed.
pub(crate) fn per_sec(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        round3(count as f64 / secs)
    } else {
        0.0
    }
}

/// Latency percentiles of one operation kind (µs).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct OpSummary {
    /// Successful operations.
    pub ops: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
}

impl OpSummary {
    /// The count and percentiles of a latency histogram (µs).
    pub fn of(h: &Histogram<u64>) -> Self {
        OpSummary {
            ops: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}
