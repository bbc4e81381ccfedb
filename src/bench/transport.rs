//! `dynamo-node bench transport`: the raw ractor_cluster remote-call rate from this process to
//! one node, C callers at once, each call a `Ping` that the node's Storage actor echoes. It is
//! the ceiling a quorum operation (several such calls, plus the store's work) is measured
//! against.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::latency::{MAX_LATENCY_US, OpSummary, latency_histogram, per_sec, round3};

use crate::core::ids::NodeId;
use crate::node::NativeService;

/// A call that takes longer than this counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Concurrent callers.
    pub concurrency: usize,
    /// How long to call.
    pub duration: Duration,
    /// Bytes per ping (echoed back).
    pub payload_bytes: usize,
}

/// The figures of a transport run; serialized as the `{"bench":"transport",...}` JSON line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransportSummary {
    /// Always `transport` (first, so the line is easy to grep).
    pub bench: &'static str,
    /// The node called.
    pub node: String,
    /// Concurrent callers.
    pub concurrency: usize,
    /// Bytes per ping.
    pub payload_bytes: usize,
    /// Length of the run (s).
    pub duration_s: f64,
    /// Calls answered.
    pub calls: u64,
    /// `calls / duration_s`.
    pub calls_per_sec: f64,
    /// Median round trip (µs).
    pub p50_us: u64,
    /// 99th percentile round trip (µs).
    pub p99_us: u64,
    /// 99.9th percentile round trip (µs).
    pub p999_us: u64,
    /// Slowest round trip (µs).
    pub max_us: u64,
    /// Calls that failed or timed out.
    pub errors: u64,
}

impl TransportSummary {
    /// The one-line JSON form.
    pub fn json_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"bench\":null,\"error\":\"{e}\"}}"))
    }

    /// The human-readable lines.
    pub fn table(&self) -> String {
        format!(
            "transport: {} callers -> {}, {} B pings\n\
             {} calls in {:.2} s: {:.1} calls/s, {} errors\n\
             p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs\n",
            self.concurrency,
            self.node,
            self.payload_bytes,
            self.calls,
            self.duration_s,
            self.calls_per_sec,
            self.errors,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us
        )
    }
}

/// Pings `node` from `config.concurrency` callers for `config.duration` (or until `stop`).
pub async fn run_transport(
    service: &NativeService,
    node: &NodeId,
    config: TransportConfig,
    stop: Arc<AtomicBool>,
) -> TransportSummary {
    let payload = Bytes::from(vec![0x5a; config.payload_bytes]);
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut callers = Vec::with_capacity(config.concurrency);
    for _ in 0..config.concurrency.max(1) {
        let (service, node, payload, stop) =
            (service.clone(), node.clone(), payload.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let mut latencies = latency_histogram();
            let mut errors = 0u64;
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match service.ping(&node, payload.clone(), CALL_TIMEOUT).await {
                    Ok(echo) if echo.len() == payload.len() => {
                        let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let _ = latencies.record(us.clamp(1, MAX_LATENCY_US));
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = latency_histogram();
    let mut errors = 0;
    for caller in callers {
        match caller.await {
            Ok((h, e)) => {
                let _ = latencies.add(&h);
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let summary = OpSummary::of(&latencies);
    TransportSummary {
        bench: "transport",
        node: node.to_string(),
        concurrency: config.concurrency,
        payload_bytes: config.payload_bytes,
        duration_s: round3(secs),
        calls: summary.ops,
        calls_per_sec: per_sec(summary.ops, secs),
        p50_us: summary.p50_us,
        p99_us: summary.p99_us,
        p999_us: summary.p999_us,
        max_us: summary.max_us,
        errors,
    }
}
