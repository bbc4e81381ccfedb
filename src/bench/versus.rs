//! `bench --data-dir DIR --versus-memory`: the durable figures against those of a cluster in
//! memory, measured in the same run.
//!
//! The durable-storage goals are ratios to the in-memory figure "of the same run": a shared
//! machine's speed drifts by 2x within minutes, so two figures taken apart say little. The
//! bench runs the same workload on a memory cluster, stops it, then runs it on the durable
//! one, and prints both with their ratios.

use std::collections::BTreeMap;

use serde::Serialize;

use super::stats::BenchSummary;
use crate::config::Fsync;

/// The p99 every operation kind should stay under on disk (µs).
pub const P99_GOAL_US: u64 = 10_000;

/// The least share of the memory run's ops/s a durable run should reach: an fsync per
/// group of writes costs more than a hand-over to the OS.
pub fn ratio_goal(fsync: Fsync) -> f64 {
    match fsync {
        Fsync::Always => 0.6,
        Fsync::Never => 0.8,
    }
}

/// The durable run against the memory run, as the ratios the goals name.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Versus {
    /// Always `versus-memory` (first, so the line is easy to grep).
    pub bench: &'static str,
    /// The durable run's storage, e.g. `disk (fsync always)`.
    pub storage: String,
    /// Operations per second in memory.
    pub memory_ops_per_sec: f64,
    /// Operations per second on disk.
    pub durable_ops_per_sec: f64,
    /// `durable_ops_per_sec / memory_ops_per_sec`.
    pub ops_ratio: f64,
    /// Node CPU per operation on disk over the same in memory; `null` when not measured.
    pub node_cpu_ratio: Option<f64>,
    /// Each operation kind's p99 on disk (µs).
    pub durable_p99_us: BTreeMap<String, u64>,
    /// The least `ops_ratio` the durable goals ask of this fsync policy.
    pub ratio_goal: f64,
    /// Whether the ratio and every p99 met their goals ([`ratio_goal`], [`P99_GOAL_US`]).
    pub meets_goals: bool,
}

impl Versus {
    /// The ratios of `durable`, run with `fsync`, to `memory`.
    pub fn of(memory: &BenchSummary, durable: &BenchSummary, fsync: Fsync) -> Self {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let ops_ratio = ratio(durable.ops_per_sec, memory.ops_per_sec);
        let durable_p99_us: BTreeMap<String, u64> = durable
            .latency_us
            .iter()
            .map(|(kind, op)| (kind.clone(), op.p99_us))
            .collect();
        let ratio_goal = ratio_goal(fsync);
        let meets_goals =
            ops_ratio >= ratio_goal && durable_p99_us.values().all(|&p99| p99 < P99_GOAL_US);
        Versus {
            bench: "versus-memory",
            storage: durable.storage.clone(),
            memory_ops_per_sec: memory.ops_per_sec,
            durable_ops_per_sec: durable.ops_per_sec,
            ops_ratio,
            node_cpu_ratio: memory
                .node_cpu_us_per_op
                .zip(durable.node_cpu_us_per_op)
                .map(|(m, d)| ratio(d, m)),
            durable_p99_us,
            ratio_goal,
            meets_goals,
        }
    }

    /// A short table and the JSON line.
    pub fn report(&self) -> String {
        let mut text = format!(
            "\n{} against memory, same workload, one run after the other:\n  ops/s: {:.0} against {:.0} in memory: {:.2}x (goal: at least {:.1}x)\n",
            self.storage,
            self.durable_ops_per_sec,
            self.memory_ops_per_sec,
            self.ops_ratio,
            self.ratio_goal
        );
        if let Some(cpu) = self.node_cpu_ratio {
            text.push_str(&format!("  node CPU per operation: {cpu:.2}x memory's\n"));
        }
        for (kind, p99) in &self.durable_p99_us {
            text.push_str(&format!(
                "  {kind} p99 on disk: {:.1} ms (goal: under {} ms)\n",
                *p99 as f64 / 1000.0,
                P99_GOAL_US / 1000
            ));
        }
        text.push_str(if self.meets_goals {
            "  goals met\n"
        } else {
            "  goals not met\n"
        });
        // A summary always serializes; should it not, the table above still stands.
        if let Ok(json) = serde_json::to_string(self) {
            text.push_str(&json);
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{OpSummary, Scenario};

    fn summary(storage: &str, ops_per_sec: f64, cpu: Option<f64>, p99_us: u64) -> BenchSummary {
        let op = OpSummary {
            ops: 10,
            p50_us: 1,
            p99_us,
            p999_us: p99_us,
            max_us: p99_us,
        };
        BenchSummary {
            bench: "ycsb-native".into(),
            scenario: Scenario::default(),
            storage: storage.into(),
            duration_s: 1.0,
            ops: ops_per_sec as u64,
            ops_per_sec,
            latency_us: BTreeMap::from([("update".to_string(), op)]),
            errors: BTreeMap::new(),
            siblings: 0,
            not_found: 0,
            load_errors: 0,
            writes_per_sec: ops_per_sec,
            node_cpu_us_per_op: cpu,
            bench_cpu_us_per_op: None,
            fsyncs: None,
            fsyncs_per_sec: None,
            transport: None,
            memory: None,
        }
    }

    #[test]
    fn the_ratios_are_the_durable_figures_over_the_memory_ones() {
        let memory = summary("memory", 30_000.0, Some(30.0), 5_000);
        let durable = summary("disk (fsync always)", 18_000.0, Some(60.0), 9_500);
        let versus = Versus::of(&memory, &durable, Fsync::Always);
        assert!((versus.ops_ratio - 0.6).abs() < 1e-9);
        assert_eq!(versus.node_cpu_ratio, Some(2.0));
        assert_eq!(versus.durable_p99_us["update"], 9_500);
        assert!(versus.meets_goals, "0.6x and a p99 under 10 ms");
        // The same figures fall short of `never`'s goal, and a slow p99 of any.
        assert!(!Versus::of(&memory, &durable, Fsync::Never).meets_goals);
        let slow = summary("disk (fsync always)", 18_000.0, Some(60.0), 10_000);
        assert!(!Versus::of(&memory, &slow, Fsync::Always).meets_goals);
        let report = versus.report();
        assert!(
            report.contains("disk (fsync always) against memory"),
            "{report}"
        );
        assert!(report.contains("0.60x (goal: at least 0.6x)"), "{report}");
        assert!(report.contains("goals met"), "{report}");
        let json = report.lines().last().unwrap();
        let parsed: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(parsed["bench"], "versus-memory");
        assert_eq!(parsed["ops_ratio"], 0.6);
    }

    #[test]
    fn a_memory_run_that_did_nothing_gives_no_ratio_rather_than_infinity() {
        let memory = summary("memory", 0.0, None, 0);
        let durable = summary("disk (fsync never)", 1_000.0, Some(40.0), 1_000);
        let versus = Versus::of(&memory, &durable, Fsync::Never);
        assert_eq!(versus.ops_ratio, 0.0);
        assert!(!versus.meets_goals);
        assert_eq!(versus.node_cpu_ratio, None);
        assert!(versus.report().contains("\"node_cpu_ratio\":null"));
    }
}
