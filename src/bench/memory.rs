//! Memory per key of each node, measured from the outside: the nodes' own `/metrics`
//! (resident memory, keys, key and value bytes), scraped once empty and once loaded.
//!
//! The target (issue 6) is a resident set of at most [`TARGET_RATIO`] times the raw key and
//! value bytes a node holds. It is judged on the gross figure, the whole resident set over
//! the raw bytes, which is the stricter one: it also charges the runtime, the thread stacks
//! and the code that an empty node already holds. The net figure subtracts the resident set
//! the same node had when it was empty, which shows what each stored key costs.

use std::fmt;

use futures::future::try_join_all;
use serde::Serialize;

use crate::http::{HttpClient, HttpError, metric_sum};

/// Most resident memory per node, as a multiple of the raw key and value bytes it holds.
pub const TARGET_RATIO: f64 = 3.0;

/// The series a node exports for this report.
const RSS: &str = "dynamo_resident_memory_bytes";
const KEYS: &str = "dynamo_keys";
const KEY_BYTES: &str = "dynamo_key_bytes";
const VALUE_BYTES: &str = "dynamo_value_bytes";

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
}

impl NodeSample {
    /// Reads a sample out of a node's `/metrics` text.
    pub fn from_metrics(url: &str, text: &str) -> Result<Self, MemoryError> {
        let read = |series: &'static str| {
            metric_sum(text, series, |_| true)
                // Gauges of counts and bytes: whole and non-negative.
                .map(|v| v.max(0.0) as u64)
                .ok_or_else(|| MemoryError::Missing {
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
        })
    }

    /// Raw payload held: key bytes plus value bytes.
    pub fn raw_bytes(&self) -> u64 {
        self.key_bytes.saturating_add(self.value_bytes)
    }
}

/// Scrapes every node, concurrently, in the order given.
pub async fn sample(urls: &[String]) -> Result<Vec<NodeSample>, MemoryError> {
    try_join_all(urls.iter().map(|url| async move {
        let text = HttpClient::new(url.as_str())
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
        }
    }

    /// True when the resident set is within the target (judged on gross).
    pub fn meets_target(&self) -> bool {
        self.gross_ratio <= TARGET_RATIO
    }
}

/// Memory per key of every node, with the target it is judged against.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryReport {
    /// The most resident memory allowed, as a multiple of the raw bytes.
    pub target_ratio: f64,
    /// Which figure the target is judged on: always `"gross"`, the stricter.
    pub judged_by: &'static str,
    /// True when every node meets the target.
    pub meets_target: bool,
    /// Per node, in the order scraped.
    pub nodes: Vec<NodeMemory>,
}

impl MemoryReport {
    /// The report of `now`, with `empty` (matched by URL) the nodes' samples before the load.
    pub fn new(now: &[NodeSample], empty: &[NodeSample]) -> Self {
        let nodes: Vec<NodeMemory> = now
            .iter()
            .map(|n| NodeMemory::new(n, empty.iter().find(|e| e.url == n.url)))
            .collect();
        MemoryReport {
            target_ratio: TARGET_RATIO,
            judged_by: "gross",
            meets_target: !nodes.is_empty() && nodes.iter().all(NodeMemory::meets_target),
            nodes,
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
        writeln!(
            f,
            "memory per node (target: resident <= {}x the raw key+value bytes, judged on gross)",
            self.target_ratio
        )?;
        writeln!(
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
        for n in &self.nodes {
            writeln!(
                f,
                "{:<26} {:>9} {:>9.1} {:>9.1} {:>9} {:>11.1} {:>9} {:>8.2}x {:>7}",
                n.url,
                n.keys,
                n.raw_per_key,
                n.rss_bytes as f64 / MIB,
                opt(n.empty_rss_bytes.map(|b| b as f64), MIB, 1),
                n.gross_per_key,
                opt(n.net_per_key, 1.0, 1),
                n.gross_ratio,
                n.net_ratio.map_or("-".to_string(), |r| format!("{r:.2}x")),
            )?;
        }
        let met = self.nodes.iter().filter(|n| n.meets_target()).count();
        write!(
            f,
            "gross = resident / keys; net = (resident - the empty node's) / keys. \
             Target met (on gross) by {met} of {} nodes",
            self.nodes.len()
        )
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
        }
    }

    #[test]
    fn reads_a_sample_from_metrics_text() {
        let text = "# TYPE dynamo_keys gauge\ndynamo_keys 10\ndynamo_key_bytes 140\n\
            dynamo_value_bytes 1000\ndynamo_resident_memory_bytes 4096000\n";
        assert_eq!(
            NodeSample::from_metrics("u", text).unwrap(),
            node("u", 4_096_000, 10, 140, 1000)
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
    fn a_node_without_keys_has_no_per_key_figure() {
        let report = MemoryReport::new(&[node("a", 100, 0, 0, 0)], &[]);
        assert!(report.nodes[0].gross_per_key.is_nan());
        assert!(!report.meets_target);
        assert!(report.json_line().contains("\"gross_per_key\":null"));
    }
}
