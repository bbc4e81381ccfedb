//! `dynamo-node bench --recovery`: latency while a node comes back. Three measured windows of
//! the same workload: steady state; a node killed (writes meant for it go to fallbacks as
//! hints, when the cluster has nodes to spare); the node restarted empty (with `--data-dir`:
//! with what its database held), while hints drain to it and anti-entropy refills it. The
//! report compares the recovery window's p99 with the steady one's.

use serde::Serialize;

use super::stats::BenchSummary;

/// Counters summed over the nodes after the recovery window: evidence that the repair work
/// the window is about really ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RepairWork {
    /// Hints handed back to their owners.
    pub hints_drained: f64,
    /// Hints still waiting.
    pub hints_pending: f64,
    /// Keys changed by anti-entropy.
    pub anti_entropy_keys_repaired: f64,
    /// Replicas repaired after reads.
    pub read_repairs: f64,
    /// Keys the restarted node holds at the end.
    pub restarted_node_keys: f64,
}

/// The three windows and how they compare; serialized as the `{"bench":"recovery",...}` line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecoverySummary {
    /// Always `recovery`.
    pub bench: &'static str,
    /// The node killed and restarted.
    pub node: String,
    /// Before the kill.
    pub steady: BenchSummary,
    /// While the node was down.
    pub outage: BenchSummary,
    /// From the restart on, while hints drain and anti-entropy runs.
    pub recovery: BenchSummary,
    /// The largest recovery p99 / steady p99 over the operation kinds.
    pub p99_ratio: f64,
    /// What the repair mechanisms did.
    pub repair: RepairWork,
}

impl RecoverySummary {
    /// Puts the windows together and computes the p99 ratio.
    pub fn new(
        node: String,
        steady: BenchSummary,
        outage: BenchSummary,
        recovery: BenchSummary,
        repair: RepairWork,
    ) -> Self {
        let p99_ratio = steady
            .latency_us
            .iter()
            .filter_map(|(op, before)| {
                let after = recovery.latency_us.get(op)?;
                (before.p99_us > 0).then(|| after.p99_us as f64 / before.p99_us as f64)
            })
            .fold(0.0, f64::max);
        RecoverySummary {
            bench: "recovery",
            node,
            steady,
            outage,
            recovery,
            p99_ratio: (p99_ratio * 1000.0).round() / 1000.0,
            repair,
        }
    }

    /// The one-line JSON form.
    pub fn json_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"bench\":null,\"error\":\"{e}\"}}"))
    }

    /// The three tables and the comparison.
    pub fn table(&self) -> String {
        let r = &self.repair;
        format!(
            "== steady ==\n{}== {} down ==\n{}== {} restarted: hints drain, anti-entropy refills ==\n{}\
             recovery p99 = {:.2} x steady p99\n\
             repair work: {} hints drained ({} pending), {} keys repaired by anti-entropy, \
             {} read repairs; {} holds {} keys\n",
            self.steady.table(),
            self.node,
            self.outage.table(),
            self.node,
            self.recovery.table(),
            self.p99_ratio,
            r.hints_drained,
            r.hints_pending,
            r.anti_entropy_keys_repaired,
            r.read_repairs,
            self.node,
            r.restarted_node_keys
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::{OpKind, Setup, Stats};
    use std::time::Duration;

    fn window(read_us: u64, update_us: u64) -> BenchSummary {
        let mut stats = Stats::new();
        for _ in 0..100 {
            stats.record(OpKind::Read, Duration::from_micros(read_us));
            stats.record(OpKind::Update, Duration::from_micros(update_us));
        }
        stats.summary(&Setup::default(), Duration::from_secs(1))
    }

    #[test]
    fn the_ratio_is_the_worst_operation_kind() {
        let s = RecoverySummary::new(
            "n3".into(),
            window(1000, 2000),
            window(5000, 5000),
            window(1500, 5000),
            RepairWork::default(),
        );
        // Histogram buckets round a little; updates went from 2 ms to 5 ms.
        assert!((2.45..=2.55).contains(&s.p99_ratio), "{}", s.p99_ratio);
        let line = s.json_line();
        assert!(line.starts_with("{\"bench\":\"recovery\""), "{line}");
        assert!(s.table().contains("n3 restarted"));
    }
}
