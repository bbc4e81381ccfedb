//! Memory per key of each node, measured from the outside: the nodes' own `/metrics`
//! (resident memory, keys, key and value bytes, and for a durable node its database's size on
//! disk), scraped once empty and once loaded.
//!
//! Every figure is compared with the raw bytes a node holds: the lengths of its keys plus
//! those of its values, siblings included (`dynamo_key_bytes + dynamo_value_bytes`). The
//! target (issue 6) is a resident set of at most [`TARGET_RATIO`] times the raw bytes for a
//! node that keeps its data in memory, and of at most [`DURABLE_TARGET_RATIO`] times for one
//! whose values live on disk (`--data-dir`), where the database's files are reported beside
//! it. It is judged on the gross figure, the whole resident set over the raw bytes, which is
//! the stricter one: it also charges the runtime, the thread stacks and the code that an
//! empty node already holds. The net figure subtracts the resident set the same node had when
//! it was empty, which shows what each stored key costs.
//!
//! Beside memory, the report can carry the CPU each node uses at rest ([`IdleCpu`]): once
//! the load is in and the replicas agree, an idle cluster should cost next to nothing, however
//! many keys it holds (at most [`IDLE_CPU_TARGET_PERCENT`] of a core per node).

use std::fmt;
use std::time::Duration;

use futures::future::try_join_all;
use serde::Serialize;

use super::cpu::{CpuMeter, CpuUsed};
use crate::http::{HttpError, metric_sum};

/// Most CPU an idle node holding its keys in sync may use, in percent of one core.
pub const IDLE_CPU_TARGET_PERCENT: f64 = 2.0;

/// Most resident memory per node, as a multiple of the raw key and value bytes it holds.
pub const TARGET_RATIO: f64 = 3.0;

/// Most resident memory per node whose engine is durable, as a multiple of the raw key and
/// value bytes it holds: the values live on disk, so memory must stay below the data itself.
pub const DURABLE_TARGET_RATIO: f64 = 1.0;

/// What every ratio of the report is taken against.
pub const BASELINE: &str = "raw key+value bytes";

/// The series a node exports for this report.
const RSS: &str = "dynamo_resident_memory_bytes";
const KEYS: &str = "dynamo_keys";
const KEY_BYTES: &str = "dynamo_key_bytes";
const VALUE_BYTES: &str = "dynamo_value_bytes";
/// Exported by durable nodes only.
const DISK_BYTES: &str = "dynamo_disk_bytes";
const FSYNCS: &str = "dynamo_fsyncs_total";

/// Why a node could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// `/metrics` did not answer.
    #[error("{url}: {source}")]
    Scrape {
        /// The node.
        url: String,
        /// What went wrong.
        source: HttpError,
    },
    /// A series is missing: an older node, or an OS that does not report resident memory.
    #[error("{url}: no {series} in /metrics")]
    Missing {
        /// The node.
        url: String,
        /// The missing series.
        series: &'static str,
    },
}

/// One scrape of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeSample {
    /// The node's HTTP base URL.
    pub url: String,
    /// Resident memory of the node process.
    pub rss_bytes: u64,
    /// Keys stored (tombstoned ones included until purged).
    pub keys: u64,
    /// Sum of the stored keys' lengths.
    pub key_bytes: u64,
    /// Sum of the stored values' lengths, siblings included.
    pub value_bytes: u64,
    /// Bytes the node's database takes on disk; `None` for a node that keeps its data in
    /// memory (it exports no `dynamo_disk_bytes`).
    pub disk_bytes: Option<u64>,
    /// Fsyncs the node's database made so far; `None` in memory.
    pub fsyncs: Option<u64>,
}

impl NodeSample {
    /// Reads a sample out of a node's `/metrics` text.
    pub fn from_metrics(url: &str, text: &str) -> Result<Self, MemoryError> {
        // Gauges and counters of counts and bytes: whole and non-negative.
        let optional =
            |series: &'static str| metric_sum(text, series, |_| true).map(|v| v.max(0.0) as u64);
        let read = |series: &'static str| {
            optional(series).ok_or_else(|| MemoryError::Missing {
                url: url.to_string(),
                series,
            })
        };
        Ok(NodeSample {
            url: url.to_string(),
            rss_bytes: read(RSS)?,
            keys: read(KEYS)?,
            key_bytes: read(KEY_BYTES)?,
            value_bytes: read(VALUE_BYTES)?,
            disk_bytes: optional(DISK_BYTES),
            fsyncs: optional(FSYNCS),
        })
    }

    /// True when the node keeps its data on disk.
    pub fn durable(&self) -> bool {
        self.disk_bytes.is_some()
    }

    /// Raw payload held: key bytes plus value bytes.
    pub fn raw_bytes(&self) -> u64 {
        self.key_bytes.saturating_add(self.value_bytes)
    }
}

/// Scrapes every node, concurrently, in the order given.
pub async fn sample(urls: &[String]) -> Result<Vec<NodeSample>, MemoryError> {
    try_join_all(urls.iter().map(|url| async move {
        let text = crate::http::env_client(url.as_str(), crate::http::DEFAULT_TIMEOUT)
            .metrics()
            .await
            .map_err(|source| MemoryError::Scrape {
                url: url.clone(),
                source,
            })?;
        NodeSample::from_metrics(url, &text)
    }))
    .await
}

/// The memory figures of one node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeMemory {
    /// The node's HTTP base URL.
    pub url: String,
    /// Keys stored.
    pub keys: u64,
    /// Raw key plus value bytes stored.
    pub raw_bytes: u64,
    /// Resident memory now.
    pub rss_bytes: u64,
    /// Resident memory of the same node when it held no key, if it was scraped then.
    pub empty_rss_bytes: Option<u64>,
    /// Raw bytes per key.
    pub raw_per_key: f64,
    /// Resident memory per key: rss / keys.
    pub gross_per_key: f64,
    /// What the keys added, per key: (rss - empty rss) / keys.
    pub net_per_key: Option<f64>,
    /// rss / raw: what the target is judged on.
    pub gross_ratio: f64,
    /// (rss - empty rss) / raw.
    pub net_ratio: Option<f64>,
    /// True when the node keeps its data on disk (its values are not in `rss_bytes`).
    pub durable: bool,
    /// The most resident memory allowed, as a multiple of the raw bytes: [`TARGET_RATIO`] in
    /// memory, [`DURABLE_TARGET_RATIO`] on disk.
    pub target_ratio: f64,
    /// Bytes the database takes on disk (durable nodes only).
    pub disk_bytes: Option<u64>,
    /// Bytes on disk per key: disk / keys.
    pub disk_per_key: Option<f64>,
    /// disk / raw.
    pub disk_ratio: Option<f64>,
}

impl NodeMemory {
    /// The figures of `now`, with `empty` the same node's sample before it held any key.
    pub fn new(now: &NodeSample, empty: Option<&NodeSample>) -> Self {
        let per = |bytes: f64, count: u64| {
            if count == 0 {
                f64::NAN
            } else {
                bytes / count as f64
            }
        };
        // A sample of a node that already held keys is no empty baseline.
        let empty_rss = empty.filter(|e| e.keys == 0).map(|e| e.rss_bytes);
        let raw = now.raw_bytes();
        let added = empty_rss.map(|e| now.rss_bytes.saturating_sub(e) as f64);
        NodeMemory {
            url: now.url.clone(),
            keys: now.keys,
            raw_bytes: raw,
            rss_bytes: now.rss_bytes,
            empty_rss_bytes: empty_rss,
            raw_per_key: per(raw as f64, now.keys),
            gross_per_key: per(now.rss_bytes as f64, now.keys),
            net_per_key: added.map(|a| per(a, now.keys)),
            gross_ratio: per(now.rss_bytes as f64, raw),
            net_ratio: added.map(|a| per(a, raw)),
            durable: now.durable(),
            target_ratio: if now.durable() {
                DURABLE_TARGET_RATIO
            } else {
                TARGET_RATIO
            },
            disk_bytes: now.disk_bytes,
            disk_per_key: now.disk_bytes.map(|d| per(d as f64, now.keys)),
            disk_ratio: now.disk_bytes.map(|d| per(d as f64, raw)),
        }
    }

    /// True when the resident set is within the node's target (judged on gross).
    pub fn meets_target(&self) -> bool {
        self.gross_ratio <= self.target_ratio
    }
}

/// Memory per key of every node, with the target it is judged against.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryReport {
    /// The most resident memory allowed, as a multiple of the raw bytes:
    /// [`DURABLE_TARGET_RATIO`] when every node is durable, else [`TARGET_RATIO`] (each node
    /// is judged on its own target, see [`NodeMemory::target_ratio`]).
    pub target_ratio: f64,
    /// What the ratios are taken against: always [`BASELINE`].
    pub baseline: &'static str,
    /// Which figure the target is judged on: always `"gross"`, the stricter.
    pub judged_by: &'static str,
    /// True when every node meets the target.
    pub meets_target: bool,
    /// Per node, in the order scraped.
    pub nodes: Vec<NodeMemory>,
    /// The CPU each node used at rest after the load, when it was measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_cpu: Option<IdleCpu>,
}

/// The CPU of one node over an idle window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeIdleCpu {
    /// The node's HTTP base URL.
    pub url: String,
    /// CPU time over the window's length, in percent of one core.
    pub percent_of_core: f64,
}

/// The CPU every node used over a window in which no client asked anything of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdleCpu {
    /// Length of the window (s).
    pub window_s: f64,
    /// Always [`IDLE_CPU_TARGET_PERCENT`].
    pub target_percent_of_core: f64,
    /// True when every node stayed under the target.
    pub meets_target: bool,
    /// The busiest node's figure.
    pub max_percent_of_core: f64,
    /// Per node, in the order given.
    pub nodes: Vec<NodeIdleCpu>,
}

impl IdleCpu {
    /// The figures of the node processes at `urls` from what their clocks advanced by
    /// (`used.per_node`, in the same order); `None` if those could not be read.
    pub fn new(urls: &[String], used: &CpuUsed) -> Option<IdleCpu> {
        let shares = used.percent_of_core()?;
        let nodes: Vec<NodeIdleCpu> = urls
            .iter()
            .zip(shares)
            .map(|(url, share)| NodeIdleCpu {
                url: url.clone(),
                percent_of_core: round2(share),
            })
            .collect();
        let max = nodes.iter().map(|n| n.percent_of_core).fold(0.0, f64::max);
        Some(IdleCpu {
            window_s: round2(used.wall.as_secs_f64()),
            target_percent_of_core: IDLE_CPU_TARGET_PERCENT,
            meets_target: !nodes.is_empty() && max < IDLE_CPU_TARGET_PERCENT,
            max_percent_of_core: max,
            nodes,
        })
    }

    /// Watches the node processes `(url, pid)` for `window`, doing nothing else meanwhile.
    pub async fn measure(nodes: &[(String, u32)], window: Duration) -> Option<IdleCpu> {
        let pids: Vec<u32> = nodes.iter().map(|(_, pid)| *pid).collect();
        let urls: Vec<String> = nodes.iter().map(|(url, _)| url.clone()).collect();
        let meter = CpuMeter::start(Some(&pids));
        tokio::time::sleep(window).await;
        IdleCpu::new(&urls, &meter.stop())
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl fmt::Display for IdleCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "idle CPU over {:.1} s at rest, in sync (target: under {}% of one core per node)",
            self.window_s, self.target_percent_of_core
        )?;
        for n in &self.nodes {
            writeln!(f, "{:<26} {:>7.2}% of a core", n.url, n.percent_of_core)?;
        }
        let met = self
            .nodes
            .iter()
            .filter(|n| n.percent_of_core < self.target_percent_of_core)
            .count();
        write!(f, "Idle target met by {met} of {} nodes", self.nodes.len())
    }
}

impl MemoryReport {
    /// The report of `now`, with `empty` (matched by URL) the nodes' samples before the load.
    pub fn new(now: &[NodeSample], empty: &[NodeSample]) -> Self {
        let nodes: Vec<NodeMemory> = now
            .iter()
            .map(|n| NodeMemory::new(n, empty.iter().find(|e| e.url == n.url)))
            .collect();
        let durable = !nodes.is_empty() && nodes.iter().all(|n| n.durable);
        MemoryReport {
            target_ratio: if durable {
                DURABLE_TARGET_RATIO
            } else {
                TARGET_RATIO
            },
            baseline: BASELINE,
            judged_by: "gross",
            meets_target: !nodes.is_empty() && nodes.iter().all(NodeMemory::meets_target),
            nodes,
            idle_cpu: None,
        }
    }

    /// Scrapes the nodes now and reports against `empty` (from [`sample`] before the load;
    /// empty slice if there was none: then only the gross figures are shown).
    pub async fn scrape(urls: &[String], empty: &[NodeSample]) -> Result<Self, MemoryError> {
        Ok(MemoryReport::new(&sample(urls).await?, empty))
    }

    /// The report as one JSON line, `{"memory": ...}`.
    pub fn json_line(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            memory: &'a MemoryReport,
        }
        serde_json::to_string(&Line { memory: self })
            .unwrap_or_else(|e| format!("{{\"memory\":null,\"error\":\"{e}\"}}"))
    }
}

impl fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: f64 = 1024.0 * 1024.0;
        let opt = |v: Option<f64>, scale: f64, digits: usize| {
            v.map_or("-".to_string(), |v| format!("{:.digits$}", v / scale))
        };
        let times = |v: Option<f64>| v.map_or("-".to_string(), |r| format!("{r:.2}x"));
        let durable = self.nodes.iter().filter(|n| n.durable).count();
        match durable {
            0 => writeln!(
                f,
                "memory per node (target: resident <= {TARGET_RATIO}x the {BASELINE}, \
                 judged on gross)"
            )?,
            d if d == self.nodes.len() => writeln!(
                f,
                "memory per node, durable engine (values on disk): target resident <= \
                 {DURABLE_TARGET_RATIO}x the {BASELINE}, judged on gross; disk beside it"
            )?,
            _ => writeln!(
                f,
                "memory per node (target: resident <= {DURABLE_TARGET_RATIO}x the {BASELINE} \
                 on disk, {TARGET_RATIO}x in memory, judged on gross)"
            )?,
        }
        write!(
            f,
            "{:<26} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9} {:>9} {:>8}",
            "node",
            "keys",
            "raw B/key",
            "rss MiB",
            "empty MiB",
            "gross B/key",
            "net B/key",
            "gross/raw",
            "net/raw"
        )?;
        if durable > 0 {
            write!(f, " {:>10} {:>8}", "disk B/key", "disk/raw")?;
        }
        writeln!(f)?;
        for n in &self.nodes {
            write!(
                f,
                "{:<26} {:>9} {:>9.1} {:>9.1} {:>9} {:>11.1} {:>9} {:>8.2}x {:>8}",
                n.url,
                n.keys,
                n.raw_per_key,
                n.rss_bytes as f64 / MIB,
                opt(n.empty_rss_bytes.map(|b| b as f64), MIB, 1),
                n.gross_per_key,
                opt(n.net_per_key, 1.0, 1),
                n.gross_ratio,
                times(n.net_ratio),
            )?;
            if durable > 0 {
                write!(
                    f,
                    " {:>10} {:>8}",
                    opt(n.disk_per_key, 1.0, 1),
                    times(n.disk_ratio)
                )?;
            }
            writeln!(f)?;
        }
        let met = self.nodes.iter().filter(|n| n.meets_target()).count();
        write!(
            f,
            "raw = key + value bytes held (siblings included); gross = resident / keys; \
             net = (resident - the empty node's) / keys"
        )?;
        if durable > 0 {
            write!(f, "; disk = the database's files / keys")?;
        }
        write!(
            f,
            ". Target met (on gross) by {met} of {} nodes",
            self.nodes.len()
        )?;
        if let Some(idle) = &self.idle_cpu {
            write!(f, "\n{idle}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(url: &str, rss: u64, keys: u64, key_bytes: u64, value_bytes: u64) -> NodeSample {
        NodeSample {
            url: url.into(),
            rss_bytes: rss,
            keys,
            key_bytes,
            value_bytes,
            disk_bytes: None,
            fsyncs: None,
        }
    }

    fn durable(mut sample: NodeSample, disk_bytes: u64) -> NodeSample {
        sample.disk_bytes = Some(disk_bytes);
        sample.fsyncs = Some(7);
        sample
    }

    #[test]
    fn reads_a_sample_from_metrics_text() {
        let text = "# TYPE dynamo_keys gauge\ndynamo_keys 10\ndynamo_key_bytes 140\n\
            dynamo_value_bytes 1000\ndynamo_resident_memory_bytes 4096000\n";
        assert_eq!(
            NodeSample::from_metrics("u", text).unwrap(),
            node("u", 4_096_000, 10, 140, 1000)
        );
        let text = format!(
            "{text}# TYPE dynamo_disk_bytes gauge\ndynamo_disk_bytes 2048\n\
             # TYPE dynamo_fsyncs counter\ndynamo_fsyncs_total 7\n"
        );
        assert_eq!(
            NodeSample::from_metrics("u", &text).unwrap(),
            durable(node("u", 4_096_000, 10, 140, 1000), 2048)
        );
        let missing = NodeSample::from_metrics("u", "dynamo_keys 1\n");
        assert!(matches!(
            missing,
            Err(MemoryError::Missing { series: RSS, .. })
        ));
    }

    #[test]
    fn gross_and_net_figures_per_node() {
        let empty = [node("a", 10_000_000, 0, 0, 0), node("b", 5, 3, 1, 1)];
        let now = [
            node("a", 40_000_000, 100_000, 1_400_000, 10_000_000),
            node("b", 3_000, 10, 40, 960),
        ];
        let report = MemoryReport::new(&now, &empty);
        let a = &report.nodes[0];
        assert_eq!(a.raw_per_key, 114.0);
        assert_eq!(a.gross_per_key, 400.0);
        assert_eq!(a.net_per_key, Some(300.0));
        assert!((a.gross_ratio - 400.0 / 114.0).abs() < 1e-9);
        assert!(!a.meets_target(), "judged on gross, not on net");
        let b = &report.nodes[1];
        assert_eq!(
            b.empty_rss_bytes, None,
            "a node holding keys is no baseline"
        );
        assert_eq!((b.net_per_key, b.gross_ratio), (None, 3.0));
        assert!(b.meets_target());
        assert!(!report.meets_target);
        let table = report.to_string();
        assert!(table.contains("judged on gross"), "{table}");
        assert!(table.contains("300.0"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&report.json_line()).unwrap();
        assert_eq!(json["memory"]["nodes"][0]["net_per_key"], 300.0);
        assert_eq!(json["memory"]["judged_by"], "gross");
    }

    #[test]
    fn idle_cpu_is_a_share_of_one_core_per_node_against_the_target() {
        let urls = ["http://a".to_string(), "http://b".to_string()];
        let used = CpuUsed {
            wall: Duration::from_secs(10),
            per_node: Some(vec![Duration::from_millis(80), Duration::from_millis(250)]),
            own: None,
        };
        let idle = IdleCpu::new(&urls, &used).unwrap();
        assert_eq!(idle.nodes[0].percent_of_core, 0.8);
        assert_eq!(idle.nodes[1].percent_of_core, 2.5);
        assert_eq!((idle.max_percent_of_core, idle.window_s), (2.5, 10.0));
        assert!(!idle.meets_target, "b is over 2%");
        let mut report = MemoryReport::new(&[node("http://a", 100, 1, 1, 1)], &[]);
        assert!(!report.json_line().contains("idle_cpu"), "not measured");
        report.idle_cpu = Some(idle);
        let table = report.to_string();
        assert!(table.contains("idle CPU over 10.0 s"), "{table}");
        assert!(table.contains("   2.50% of a core"), "{table}");
        assert!(table.contains("Idle target met by 1 of 2 nodes"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&report.json_line()).unwrap();
        assert_eq!(
            json["memory"]["idle_cpu"]["nodes"][1]["percent_of_core"],
            2.5
        );
        assert_eq!(json["memory"]["idle_cpu"]["target_percent_of_core"], 2.0);
        let unknown = CpuUsed {
            per_node: None,
            ..used
        };
        assert_eq!(IdleCpu::new(&urls, &unknown), None);
    }

    #[test]
    fn a_node_without_keys_has_no_per_key_figure() {
        let report = MemoryReport::new(&[node("a", 100, 0, 0, 0)], &[]);
        assert!(report.nodes[0].gross_per_key.is_nan());
        assert!(!report.meets_target);
        assert!(report.json_line().contains("\"gross_per_key\":null"));
    }

    #[test]
    fn durable_nodes_are_judged_on_the_stricter_target_with_disk_beside() {
        let empty = [durable(node("a", 20_000_000, 0, 0, 0), 4096)];
        // 100,000 keys of 114 raw bytes: 11.4 MB raw.
        let now = [durable(
            node("a", 30_000_000, 100_000, 1_400_000, 10_000_000),
            15_000_000,
        )];
        let report = MemoryReport::new(&now, &empty);
        let a = &report.nodes[0];
        assert!(a.durable);
        assert_eq!(a.target_ratio, DURABLE_TARGET_RATIO);
        assert_eq!(report.target_ratio, DURABLE_TARGET_RATIO);
        assert_eq!(a.gross_per_key, 300.0);
        assert_eq!(a.net_per_key, Some(100.0));
        assert_eq!(a.disk_per_key, Some(150.0));
        assert!((a.disk_ratio.unwrap() - 150.0 / 114.0).abs() < 1e-9);
        assert!(
            !a.meets_target(),
            "2.6x the raw bytes is within 3x, not within 1x"
        );
        let table = report.to_string();
        for needle in [
            "durable engine",
            "raw key+value bytes",
            "disk B/key",
            "150.0",
        ] {
            assert!(table.contains(needle), "{needle}: {table}");
        }
        let json: serde_json::Value = serde_json::from_str(&report.json_line()).unwrap();
        assert_eq!(json["memory"]["baseline"], BASELINE);
        assert_eq!(json["memory"]["nodes"][0]["disk_per_key"], 150.0);

        let lean = [durable(
            node("a", 10_000_000, 100_000, 1_400_000, 10_000_000),
            15_000_000,
        )];
        assert!(MemoryReport::new(&lean, &empty).meets_target);
        // A node in memory beside it keeps its own target, and the table says both.
        let mixed = MemoryReport::new(
            &[
                lean[0].clone(),
                node("b", 30_000_000, 100_000, 1_400_000, 10_000_000),
            ],
            &[],
        );
        assert_eq!(mixed.nodes[1].target_ratio, TARGET_RATIO);
        assert_eq!(mixed.target_ratio, TARGET_RATIO);
        assert!(mixed.meets_target);
        assert!(mixed.to_string().contains("in memory"));
        assert!(
            !MemoryReport::new(&[node("b", 1, 1, 1, 1)], &[])
                .to_string()
                .contains("disk")
        );
    }
}
