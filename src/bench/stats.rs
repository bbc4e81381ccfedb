//! Latencies and outcomes of a run: per-operation HdrHistograms, errors by kind, siblings,
//! and the summary printed as a table and as one JSON line.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::cpu::CpuUsed;
use super::latency::{OpSummary, latency_histogram, per_sec, round3};
use super::memory::MemoryReport;
use super::transport::TransportSummary;

/// One kind of operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// A get of an existing record.
    Read,
    /// A put over an existing record, with the newest context seen for it.
    Update,
    /// A put of a new record.
    Insert,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 3] = [OpKind::Read, OpKind::Update, OpKind::Insert];

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
        }
    }

    /// Its place in [`OpKind::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What one client (or, merged, the whole run) measured.
#[derive(Clone, Debug)]
pub struct Stats {
    latencies: [Histogram<u64>; 3],
    errors: BTreeMap<String, u64>,
    siblings: u64,
    not_found: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty statistics (µs, 3 significant digits).
    pub fn new() -> Self {
        Stats {
            latencies: [
                latency_histogram(),
                latency_histogram(),
                latency_histogram(),
            ],
            errors: BTreeMap::new(),
            siblings: 0,
            not_found: 0,
        }
    }

    /// A successful operation that took `took`.
    pub fn record(&mut self, op: OpKind, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latencies[op.index()].saturating_record(micros);
    }

    /// A failed operation, by error kind.
    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    /// A read that returned siblings.
    pub fn sibling_read(&mut self) {
        self.siblings += 1;
    }

    /// A read that found no value.
    pub fn not_found(&mut self) {
        self.not_found += 1;
    }

    /// Successful operations of every kind.
    pub fn ok_ops(&self) -> u64 {
        self.latencies.iter().map(Histogram::len).sum()
    }

    /// Failed operations.
    pub fn error_ops(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds another client's figures.
    pub fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.latencies.iter_mut().zip(&other.latencies) {
            // Same bounds on both sides, so adding cannot fail.
            let _ = mine.add(theirs);
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        self.siblings += other.siblings;
        self.not_found += other.not_found;
    }

    /// The summary of a measured phase of `elapsed` under `setup`.
    pub fn summary(&self, setup: &Setup, elapsed: Duration) -> BenchSummary {
        let ops = self.ok_ops() + self.error_ops();
        let secs = elapsed.as_secs_f64();
        let per_op = OpKind::ALL
            .iter()
            .filter(|op| !self.latencies[op.index()].is_empty())
            .map(|op| {
                let summary = OpSummary::of(&self.latencies[op.index()]);
                (op.name().to_owned(), summary)
            })
            .collect();
        BenchSummary {
            bench: format!("ycsb-{}", setup.client),
            scenario: setup.scenario.clone(),
            storage: setup.storage.clone(),
            duration_s: round3(secs),
            ops,
            ops_per_sec: per_sec(ops, secs),
            latency_us: per_op,
            errors: self.errors.clone(),
            siblings: self.siblings,
            not_found: self.not_found,
            load_errors: setup.load_errors,
            writes_per_sec: per_sec(
                [OpKind::Update, OpKind::Insert]
                    .iter()
                    .map(|op| self.latencies[op.index()].len())
                    .sum(),
                secs,
            ),
            node_cpu_us_per_op: None,
            bench_cpu_us_per_op: None,
            fsyncs: None,
            fsyncs_per_sec: None,
            transport: None,
            memory: None,
        }
    }
}

/// What a run was asked to do, as the summary reports it (right after `bench`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Scenario {
    /// Workload name.
    pub workload: String,
    /// Key distribution name.
    pub distribution: String,
    /// Records in the keyspace.
    pub records: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Nodes the clients talk to.
    pub nodes: usize,
}

/// The settings of a run as they appear in the summary.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// What the run does.
    pub scenario: Scenario,
    /// How the clients reach the nodes: `http` or `native`.
    pub client: String,
    /// Where the nodes keep their data (see [`super::storage::Storage`]).
    pub storage: String,
    /// Failed inserts of the load phase.
    pub load_errors: u64,
}

/// The result of a run; serialized as the `{"bench":...}` JSON line (field order kept).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchSummary {
    /// What kind of benchmark and through which client, e.g. `ycsb-native` (first, so the
    /// line is easy to grep).
    pub bench: String,
    /// What the run did; its fields stand in the line as the summary's own.
    #[serde(flatten)]
    pub scenario: Scenario,
    /// Where the nodes keep their data, e.g. `memory` or `disk (fsync always)`: figures of
    /// different storage are not comparable.
    pub storage: String,
    /// Length of the measured phase (s).
    pub duration_s: f64,
    /// Operations of the measured phase, failed ones included.
    pub ops: u64,
    /// `ops / duration_s`.
    pub ops_per_sec: f64,
    /// Percentiles of the successful operations, by kind.
    pub latency_us: BTreeMap<String, OpSummary>,
    /// Failed operations by error kind (`transport` when no answer came).
    pub errors: BTreeMap<String, u64>,
    /// Reads that returned siblings.
    pub siblings: u64,
    /// Reads that found no value.
    pub not_found: u64,
    /// Failed inserts of the load phase.
    pub load_errors: u64,
    /// Successful writes (updates and inserts) per second: the quorum write rate.
    pub writes_per_sec: f64,
    /// CPU time (user + system) the node processes used during the measured phase, summed
    /// over the nodes, per operation (µs); `null` when their pids are not known (nodes the
    /// bench did not start) or not readable (not Linux).
    pub node_cpu_us_per_op: Option<f64>,
    /// CPU time the bench process (clients included) used during the measured phase, per
    /// operation (µs); `null` when not readable.
    pub bench_cpu_us_per_op: Option<f64>,
    /// Fsyncs the nodes made during the measured phase, summed over the nodes (durable nodes
    /// only: each replica of a write is made durable by its own node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsyncs: Option<u64>,
    /// `fsyncs / duration_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsyncs_per_sec: Option<f64>,
    /// The raw remote-call rate measured before the workload (`--transport-secs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportSummary>,
    /// Resident memory and disk per key of each node after the run (durable nodes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryReport>,
}

impl BenchSummary {
    /// Sets the fsyncs the nodes made during the measured phase (and their rate).
    pub fn set_fsyncs(&mut self, fsyncs: u64) {
        self.fsyncs = Some(fsyncs);
        self.fsyncs_per_sec = Some(per_sec(fsyncs, self.duration_s));
    }

    /// Sets the CPU per operation from the CPU time the nodes and the bench used during the
    /// measured phase.
    pub fn set_cpu(&mut self, cpu: &CpuUsed) {
        self.node_cpu_us_per_op = cpu.nodes().map(|d| self.per_op_us(d));
        self.bench_cpu_us_per_op = cpu.own.map(|d| self.per_op_us(d));
    }

    /// Adds `cpu` to the nodes' CPU per operation: a node started during the phase, whose
    /// whole CPU time belongs to it. A no-op when the nodes' CPU is not known.
    pub fn add_node_cpu(&mut self, cpu: Duration) {
        let extra = self.per_op_us(cpu);
        if let Some(per_op) = self.node_cpu_us_per_op.as_mut() {
            *per_op = round3(*per_op + extra);
        }
    }

    fn per_op_us(&self, cpu: Duration) -> f64 {
        if self.ops == 0 {
            return 0.0;
        }
        round3(cpu.as_secs_f64() * 1e6 / self.ops as f64)
    }

    /// The CPU line of the table: per operation, and as cores kept busy.
    fn cpu_line(&self) -> String {
        let per_op = |us: Option<f64>, whose: &str| match us {
            Some(us) => {
                let cores = if self.duration_s > 0.0 {
                    us * self.ops as f64 / 1e6 / self.duration_s
                } else {
                    0.0
                };
                format!("{us:.1} µs ({whose}{cores:.2} cores busy)")
            }
            None => "n/a".to_string(),
        };
        format!(
            "node CPU/op {}, bench CPU/op {}\n",
            per_op(self.node_cpu_us_per_op, "all nodes, "),
            per_op(self.bench_cpu_us_per_op, "")
        )
    }

    /// The one-line JSON form, starting with `{"bench":`.
    pub fn json_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"bench\":null,\"error\":\"{e}\"}}"))
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{}: workload {} ({}), {} records of {} B, {} clients, {} nodes, storage: {}\n",
            self.bench,
            self.scenario.workload,
            self.scenario.distribution,
            self.scenario.records,
            self.scenario.value_size,
            self.scenario.concurrency,
            self.scenario.nodes,
            self.storage
        );
        out.push_str(&format!(
            "{} ops in {:.2} s: {:.1} ops/s",
            self.ops, self.duration_s, self.ops_per_sec
        ));
        if let (Some(fsyncs), Some(rate)) = (self.fsyncs, self.fsyncs_per_sec) {
            out.push_str(&format!(
                ", {rate:.1} fsyncs/s ({fsyncs} fsyncs over the {} nodes)",
                self.scenario.nodes
            ));
        }
        out.push('\n');
        out.push_str(&self.cpu_line());
        out.push_str(&format!(
            "{:<8} {:>9} {:>10} {:>10} {:>10} {:>10}\n",
            "op", "ok", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
        ));
        for (name, op) in &self.latency_us {
            out.push_str(&format!(
                "{:<8} {:>9} {:>10} {:>10} {:>10} {:>10}\n",
                name, op.ops, op.p50_us, op.p99_us, op.p999_us, op.max_us
            ));
        }
        if self.errors.is_empty() {
            out.push_str("errors: none\n");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            out.push_str(&format!("errors: {}\n", list.join(", ")));
        }
        out.push_str(&format!(
            "siblings seen: {}, reads not found: {}, load errors: {}\n",
            self.siblings, self.not_found, self.load_errors
        ));
        if let Some(transport) = &self.transport {
            let ratio = if transport.calls_per_sec > 0.0 {
                self.writes_per_sec / transport.calls_per_sec
            } else {
                0.0
            };
            out.push_str(&format!(
                "quorum writes {:.1}/s = {:.2} x the raw remote-call rate ({:.1} calls/s, p99 {} µs)\n",
                self.writes_per_sec, ratio, transport.calls_per_sec, transport.p99_us
            ));
        }
        if let Some(memory) = &self.memory {
            out.push_str(&format!("{memory}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_errors_and_siblings_add_up_across_clients() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for us in 1..=1000u64 {
            a.record(OpKind::Read, Duration::from_micros(us));
        }
        b.record(OpKind::Update, Duration::from_millis(5));
        b.error("transport");
        b.error("insufficient_acks");
        a.error("transport");
        a.sibling_read();
        b.not_found();
        a.merge(&b);
        assert_eq!((a.ok_ops(), a.error_ops()), (1001, 3));
        let setup = Setup {
            scenario: Scenario {
                workload: "a".into(),
                distribution: "zipfian".into(),
                ..Scenario::default()
            },
            ..Setup::default()
        };
        let s = a.summary(&setup, Duration::from_secs(2));
        assert_eq!(s.ops, 1004);
        assert_eq!(s.ops_per_sec, 502.0);
        let read = &s.latency_us["read"];
        assert_eq!(read.ops, 1000);
        assert!((495..=505).contains(&read.p50_us), "{read:?}");
        assert!((985..=995).contains(&read.p99_us), "{read:?}");
        assert!((999..=1001).contains(&read.max_us), "{read:?}");
        assert!(!s.latency_us.contains_key("insert"));
        assert_eq!(s.errors["transport"], 2);
        assert_eq!((s.siblings, s.not_found), (1, 1));
        let line = s.json_line();
        assert!(
            line.starts_with(
                "{\"bench\":\"ycsb-\",\"workload\":\"a\",\"distribution\":\"zipfian\",\"records\":0,\
                 \"value_size\":0,\"concurrency\":0,\"nodes\":0,\"storage\":\"\",\"duration_s\":2.0,"
            ),
            "the scenario's fields stand right after `bench`: {line}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["latency_us"]["update"]["ops"], 1);
        assert!(s.table().contains("transport 2"));
    }

    #[test]
    fn cpu_per_operation_is_reported_beside_the_throughput_or_said_to_be_unknown() {
        let mut stats = Stats::new();
        for _ in 0..1000 {
            stats.record(OpKind::Read, Duration::from_millis(1));
        }
        let setup = Setup {
            scenario: Scenario {
                nodes: 3,
                ..Scenario::default()
            },
            ..Setup::default()
        };
        let mut s = stats.summary(&setup, Duration::from_secs(2));
        let used = CpuUsed {
            wall: Duration::from_secs(2),
            per_node: Some(vec![Duration::from_millis(30), Duration::from_millis(12)]),
            own: Some(Duration::from_millis(18)),
        };
        s.set_cpu(&used);
        assert_eq!(s.node_cpu_us_per_op, Some(42.0));
        assert_eq!(s.bench_cpu_us_per_op, Some(18.0));
        let table = s.table();
        assert!(
            table.contains("node CPU/op 42.0 µs (all nodes, 0.02 cores busy)"),
            "{table}"
        );
        assert!(
            table.contains("bench CPU/op 18.0 µs (0.01 cores busy)"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&s.json_line()).unwrap();
        assert_eq!(json["node_cpu_us_per_op"], 42.0);
        assert_eq!(json["bench_cpu_us_per_op"], 18.0);
        // A node started during the phase adds all of its CPU time.
        s.add_node_cpu(Duration::from_millis(8));
        assert_eq!(s.node_cpu_us_per_op, Some(50.0));

        // Nodes the bench did not start: unknown, and said so in both forms.
        s.set_cpu(&CpuUsed {
            per_node: None,
            ..used
        });
        s.add_node_cpu(Duration::from_millis(8));
        assert_eq!(s.node_cpu_us_per_op, None);
        assert!(s.table().contains("node CPU/op n/a"), "{}", s.table());
        let json: serde_json::Value = serde_json::from_str(&s.json_line()).unwrap();
        assert!(json["node_cpu_us_per_op"].is_null(), "{json}");
        assert_eq!(json["bench_cpu_us_per_op"], 18.0);
    }

    #[test]
    fn an_empty_run_reports_zero_rates() {
        let s = Stats::new().summary(&Setup::default(), Duration::ZERO);
        assert_eq!((s.ops, s.ops_per_sec), (0, 0.0));
        assert!(s.latency_us.is_empty());
    }

    #[test]
    fn the_storage_and_the_fsync_rate_are_reported_beside_the_throughput() {
        let mut stats = Stats::new();
        stats.record(OpKind::Update, Duration::from_millis(1));
        let setup = Setup {
            scenario: Scenario {
                nodes: 3,
                ..Scenario::default()
            },
            storage: "disk (fsync always)".into(),
            ..Setup::default()
        };
        let mut s = stats.summary(&setup, Duration::from_secs(4));
        let plain = s.json_line();
        assert!(
            plain.contains("\"storage\":\"disk (fsync always)\""),
            "{plain}"
        );
        assert!(!plain.contains("fsyncs"), "{plain}");
        s.set_fsyncs(1000);
        assert_eq!((s.fsyncs, s.fsyncs_per_sec), (Some(1000), Some(250.0)));
        let table = s.table();
        assert!(table.contains("storage: disk (fsync always)"), "{table}");
        assert!(
            table.contains("ops/s, 250.0 fsyncs/s (1000 fsyncs over the 3 nodes)"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&s.json_line()).unwrap();
        assert_eq!(json["fsyncs_per_sec"], 250.0);
        assert_eq!(json["storage"], "disk (fsync always)");
    }
}
