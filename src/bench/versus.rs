//! `bench --data-dir DIR --versus-memory`: the durable figures against those of a cluster in
//! memory, measured in the same run.
//!
//! The durable-storage goals are ratios to the in-memory figure "of the same run": a shared
//! machine's speed drifts by 2x within minutes, so two figures taken apart say little. The
//! bench runs the same workload on a memory cluster, stops it, then runs it on the durable
//! one, and prints both with their ratios. With `--rounds N` it does so N times, memory and
//! disk first in turn, and judges the goals on the rounds' medians ([`VersusRounds`]): on a
//! machine whose speed drifts, one pair of runs can land on either side of a goal.

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
        let meets_goals = meets(ops_ratio, ratio_goal, &durable_p99_us);
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
        text.push_str(&p99_lines(&self.durable_p99_us, ""));
        text.push_str(if self.meets_goals {
            "  goals met\n"
        } else {
            "  goals not met\n"
        });
        text + &json_line(self)
    }
}

/// Several rounds of [`Versus`], judged on their medians.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VersusRounds {
    /// Always `versus-memory-rounds`.
    pub bench: &'static str,
    /// The durable runs' storage.
    pub storage: String,
    /// Each round's `ops_ratio`, in the order run.
    pub ops_ratios: Vec<f64>,
    /// The median of `ops_ratios`.
    pub median_ops_ratio: f64,
    /// The median of the rounds' node CPU ratios; `null` when a round did not measure it.
    pub median_node_cpu_ratio: Option<f64>,
    /// Each operation kind's median p99 on disk (µs).
    pub median_durable_p99_us: BTreeMap<String, u64>,
    /// The least ratio the durable goals ask of this fsync policy.
    pub ratio_goal: f64,
    /// How many rounds met the goals on their own.
    pub rounds_meeting_goals: usize,
    /// Whether the median ratio and every median p99 met the goals.
    pub meets_goals: bool,
}

impl VersusRounds {
    /// The medians of `rounds` (at least one, all of the same fsync policy).
    pub fn of(rounds: &[Versus]) -> Self {
        let ratio_goal = rounds.first().map_or(0.0, |r| r.ratio_goal);
        let ops_ratios: Vec<f64> = rounds.iter().map(|r| r.ops_ratio).collect();
        let median_ops_ratio = median(ops_ratios.clone()).unwrap_or(0.0);
        let cpu: Option<Vec<f64>> = rounds.iter().map(|r| r.node_cpu_ratio).collect();
        let mut p99s: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for round in rounds {
            for (kind, p99) in &round.durable_p99_us {
                p99s.entry(kind.clone()).or_default().push(*p99 as f64);
            }
        }
        let median_durable_p99_us: BTreeMap<String, u64> = p99s
            .into_iter()
            .filter_map(|(kind, values)| Some((kind, median(values)?.round() as u64)))
            .collect();
        let meets_goals =
            !rounds.is_empty() && meets(median_ops_ratio, ratio_goal, &median_durable_p99_us);
        VersusRounds {
            bench: "versus-memory-rounds",
            storage: rounds
                .first()
                .map(|r| r.storage.clone())
                .unwrap_or_default(),
            ops_ratios,
            median_ops_ratio,
            median_node_cpu_ratio: cpu.and_then(median),
            median_durable_p99_us,
            ratio_goal,
            rounds_meeting_goals: rounds.iter().filter(|r| r.meets_goals).count(),
            meets_goals,
        }
    }

    /// A short table and the JSON line.
    pub fn report(&self) -> String {
        let ratios: Vec<String> = self.ops_ratios.iter().map(|r| format!("{r:.2}")).collect();
        let mut text = format!(
            "\n{} against memory over {} round{}:\n  ops/s ratio per round: {} (median {:.2}x, goal: at least {:.1}x)\n",
            self.storage,
            self.ops_ratios.len(),
            if self.ops_ratios.len() == 1 { "" } else { "s" },
            ratios.join(", "),
            self.median_ops_ratio,
            self.ratio_goal
        );
        if let Some(cpu) = self.median_node_cpu_ratio {
            text.push_str(&format!(
                "  node CPU per operation: {cpu:.2}x memory's (median)\n"
            ));
        }
        text.push_str(&p99_lines(&self.median_durable_p99_us, "median; "));
        text.push_str(&format!(
            "  goals {} on the medians; met by {} of {} rounds alone\n",
            if self.meets_goals { "met" } else { "not met" },
            self.rounds_meeting_goals,
            self.ops_ratios.len()
        ));
        text + &json_line(self)
    }
}

// Whether an ops/s ratio and the p99s (µs) meet the durable goals.
fn meets(ops_ratio: f64, ratio_goal: f64, p99s: &BTreeMap<String, u64>) -> bool {
    ops_ratio >= ratio_goal && p99s.values().all(|&p99| p99 < P99_GOAL_US)
}

// One line per operation kind: its p99 on disk against the goal, `note` before the goal.
fn p99_lines(p99s: &BTreeMap<String, u64>, note: &str) -> String {
    p99s.iter()
        .map(|(kind, p99)| {
            format!(
                "  {kind} p99 on disk: {:.1} ms ({note}goal: under {} ms)\n",
                *p99 as f64 / 1000.0,
                P99_GOAL_US / 1000
            )
        })
        .collect()
}

// The JSON line closing a report. A comparison always serializes; should it not, the lines
// above it still stand.
fn json_line(value: &impl Serialize) -> String {
    serde_json::to_string(value)
        .map(|json| json + "\n")
        .unwrap_or_default()
}

// The middle value, or the mean of the two middle ones; `None` for no values.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
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

    #[test]
    fn rounds_are_judged_on_their_medians() {
        let memory = summary("memory", 30_000.0, Some(30.0), 5_000);
        let round = |ops: f64, cpu: f64, p99: u64| {
            let durable = summary("disk (fsync always)", ops, Some(cpu), p99);
            Versus::of(&memory, &durable, Fsync::Always)
        };
        // One round short, one slow, one good: the medians meet the goals.
        let rounds = [
            round(15_000.0, 70.0, 8_000),
            round(21_000.0, 55.0, 12_000),
            round(19_500.0, 60.0, 9_000),
        ];
        let judged = VersusRounds::of(&rounds);
        assert_eq!(judged.ops_ratios, vec![0.5, 0.7, 0.65]);
        assert!((judged.median_ops_ratio - 0.65).abs() < 1e-9);
        assert_eq!(judged.median_node_cpu_ratio, Some(2.0));
        assert_eq!(judged.median_durable_p99_us["update"], 9_000);
        assert_eq!(judged.rounds_meeting_goals, 1, "only the third alone");
        assert!(judged.meets_goals);
        let report = judged.report();
        assert!(
            report.contains("0.50, 0.70, 0.65 (median 0.65x"),
            "{report}"
        );
        assert!(report.contains("met by 1 of 3 rounds"), "{report}");
        let json: serde_json::Value = serde_json::from_str(report.lines().last().unwrap()).unwrap();
        assert_eq!(json["bench"], "versus-memory-rounds");
        assert_eq!(json["meets_goals"], true);

        // An even count takes the mean of the middle two; a slow median p99 fails.
        let two = VersusRounds::of(&[round(15_000.0, 70.0, 9_000), round(18_000.0, 50.0, 12_000)]);
        assert!((two.median_ops_ratio - 0.55).abs() < 1e-9);
        assert_eq!(two.median_durable_p99_us["update"], 10_500);
        assert!(!two.meets_goals);
        assert!(!VersusRounds::of(&[]).meets_goals, "no rounds, no verdict");
    }
}
