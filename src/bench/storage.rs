//! Which storage served a run, and what it did: figures of nodes in memory and of durable
//! nodes (`--data-dir`, with either fsync policy) are not comparable, so every report names
//! it. For durable nodes the run also counts the fsyncs made during the measured phase
//! (`dynamo_fsyncs_total` before and after it) and ends with the memory report, resident
//! memory and bytes on disk per key.

use std::fmt;

use super::memory::{MemoryReport, NodeSample, sample};
use super::run::Bench;
use super::stats::BenchSummary;
use super::target::BenchClient;
use crate::config::Fsync;

/// Where the benchmarked nodes keep their data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In memory: nothing outlives a node process.
    Memory,
    /// In a database under `--data-dir`, made durable as the fsync policy says (`None`: not
    /// known, for nodes the bench did not start).
    Disk(Option<Fsync>),
    /// Some nodes in memory, some on disk.
    Mixed,
    /// The nodes could not be asked.
    Unknown,
}

impl Storage {
    /// The storage of the nodes as their `/metrics` samples show it (only durable nodes
    /// export `dynamo_disk_bytes`); the fsync policy is not among them.
    pub fn of_samples(samples: &[NodeSample]) -> Storage {
        let durable = samples.iter().filter(|s| s.durable()).count();
        match durable {
            _ if samples.is_empty() => Storage::Unknown,
            0 => Storage::Memory,
            d if d == samples.len() => Storage::Disk(None),
            _ => Storage::Mixed,
        }
    }

    /// True when (some of) the nodes keep their data on disk.
    pub fn durable(self) -> bool {
        matches!(self, Storage::Disk(_) | Storage::Mixed)
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Storage::Memory => f.write_str("memory"),
            Storage::Disk(Some(Fsync::Always)) => f.write_str("disk (fsync always)"),
            Storage::Disk(Some(Fsync::Never)) => f.write_str("disk (fsync never)"),
            Storage::Disk(None) => f.write_str("disk (fsync unknown)"),
            Storage::Mixed => f.write_str("mixed (memory and disk)"),
            Storage::Unknown => f.write_str("unknown"),
        }
    }
}

/// Fsyncs made between two scrapes of the same nodes (matched by URL), summed; `None` when no
/// node reported fsyncs both times.
pub fn fsyncs_between(before: &[NodeSample], after: &[NodeSample]) -> Option<u64> {
    let mut total = None;
    for now in after {
        let earlier = before.iter().find(|b| b.url == now.url);
        if let (Some(then), Some(now)) = (earlier.and_then(|b| b.fsyncs), now.fsyncs) {
            // A node restarted in between starts counting again from 0.
            let made = now.checked_sub(then).unwrap_or(now);
            *total.get_or_insert(0) += made;
        }
    }
    total
}

/// Runs a benchmark already made (so that the caller can give it the node processes' pids
/// first and draw its timeline after), and scrapes the nodes' `/metrics` (at `config.urls`)
/// before the load and around the measured phase: the summary names the storage (`storage`,
/// or else as the nodes report it) and, for durable nodes, gives the fsyncs of the measured
/// phase and the memory report after it. A node that cannot be scraped only leaves those
/// figures out.
pub async fn observe<C: BenchClient>(
    bench: &mut Bench<C>,
    storage: Option<Storage>,
) -> BenchSummary {
    let urls = bench.config().urls.clone();
    let limit = bench.config().limit;
    let empty = scrape(&urls, "before the load").await;
    bench.load().await;
    let before = scrape(&urls, "before the run").await;
    let storage = storage.unwrap_or_else(|| {
        before
            .as_deref()
            .map_or(Storage::Unknown, Storage::of_samples)
    });
    bench.set_storage(storage);
    let measured = bench.measure(limit, "run").await;
    let after = scrape(&urls, "after the run").await;
    let mut summary = bench.summary(&measured);
    if storage.durable()
        && let Some(after) = after
    {
        if let Some(fsyncs) = before.and_then(|before| fsyncs_between(&before, &after)) {
            summary.set_fsyncs(fsyncs);
        }
        summary.memory = Some(MemoryReport::new(&after, empty.as_deref().unwrap_or(&[])));
    }
    summary
}

/// Every node's sample, or `None` (with a warning) if one could not be taken.
async fn scrape(urls: &[String], when: &str) -> Option<Vec<NodeSample>> {
    match sample(urls).await {
        Ok(samples) => Some(samples),
        Err(e) => {
            eprintln!("warning: no metrics {when}: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(url: &str, disk: Option<u64>, fsyncs: Option<u64>) -> NodeSample {
        NodeSample {
            url: url.into(),
            rss_bytes: 1,
            keys: 0,
            key_bytes: 0,
            value_bytes: 0,
            disk_bytes: disk,
            fsyncs,
        }
    }

    #[test]
    fn storage_is_named_for_the_report() {
        assert_eq!(Storage::Memory.to_string(), "memory");
        assert_eq!(
            Storage::Disk(Some(Fsync::Always)).to_string(),
            "disk (fsync always)"
        );
        assert_eq!(
            Storage::Disk(Some(Fsync::Never)).to_string(),
            "disk (fsync never)"
        );
        assert!(!Storage::Memory.durable() && !Storage::Unknown.durable());
        assert!(Storage::Disk(None).durable() && Storage::Mixed.durable());
    }

    #[test]
    fn storage_of_nodes_the_bench_did_not_start_comes_from_their_metrics() {
        let memory = node("a", None, None);
        let disk = node("b", Some(10), Some(1));
        assert_eq!(Storage::of_samples(&[]), Storage::Unknown);
        assert_eq!(
            Storage::of_samples(std::slice::from_ref(&memory)),
            Storage::Memory
        );
        assert_eq!(
            Storage::of_samples(std::slice::from_ref(&disk)),
            Storage::Disk(None)
        );
        assert_eq!(Storage::of_samples(&[memory, disk]), Storage::Mixed);
    }

    #[test]
    fn fsyncs_are_summed_over_the_nodes_between_two_scrapes() {
        let before = [node("a", Some(1), Some(10)), node("b", Some(1), Some(5))];
        let after = [
            node("b", Some(1), Some(8)),
            node("a", Some(1), Some(110)),
            node("c", Some(1), Some(1000)),
        ];
        assert_eq!(fsyncs_between(&before, &after), Some(103));
        // Restarted: its counter began again.
        assert_eq!(
            fsyncs_between(&before, &[node("a", Some(1), Some(4))]),
            Some(4)
        );
        let memory = [node("a", None, None)];
        assert_eq!(fsyncs_between(&memory, &memory), None);
    }
}
