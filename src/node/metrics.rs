//! The node's Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::resident::resident_bytes;
use crate::core::hints::HintStore;
use crate::core::store::Store;

/// Labels of a client request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// get, put or delete.
    pub op: &'static str,
    /// ok, not_found, siblings, or an error kind.
    pub outcome: &'static str,
}

/// Labels naming a member status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// alive, suspect or dead.
    pub status: &'static str,
}

/// Labels naming a ring status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RingLabels {
    /// joining, valid, leaving, left or removed.
    pub ring: &'static str,
}

/// Labels of an anti-entropy round.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoundLabels {
    /// in_sync, repaired (something differed), scope_mismatch or failed.
    pub outcome: &'static str,
}

/// Labels of a message dropped because it claimed a sender its session does not carry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForgedLabels {
    /// actor (a remote actor named for another node), gossip, anti_entropy or purge.
    pub kind: &'static str,
}

/// The kinds of [`ForgedLabels`], all exported from the start.
pub const FORGED_KINDS: [&str; 4] = ["actor", "gossip", "anti_entropy", "purge"];

/// Labels naming a per-peer link.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    /// storage (replica reads and writes) or coordinator (forwarded writes).
    pub link: &'static str,
}

/// The durable engine's figures, as read at the last scrape.
#[derive(Debug, Default)]
struct DiskFigures {
    durable: AtomicBool,
    bytes: AtomicU64,
    fsyncs: AtomicU64,
}

/// Exports `dynamo_disk_bytes` and `dynamo_fsyncs_total` for a node whose engine is durable,
/// nothing for one in memory: absent series say "no disk" where a 0 could be misread as an
/// empty database. A collector, because whether the engine is durable is only known once the
/// store is observed, after the registry is built.
#[derive(Debug)]
struct DiskCollector(Arc<DiskFigures>);

impl Collector for DiskCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = &self.0;
        if !figures.durable.load(Ordering::Relaxed) {
            return Ok(());
        }
        let bytes = figures.bytes.load(Ordering::Relaxed);
        let gauge = ConstGauge::new(i64::try_from(bytes).unwrap_or(i64::MAX));
        gauge.encode(encoder.encode_descriptor(
            "disk_bytes",
            "Bytes the node's database takes on disk",
            None,
            gauge.metric_type(),
        )?)?;
        let counter = ConstCounter::new(figures.fsyncs.load(Ordering::Relaxed));
        counter.encode(encoder.encode_descriptor(
            "fsyncs",
            "Fsyncs made by the database's group commit",
            None,
            counter.metric_type(),
        )?)?;
        Ok(())
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Every metric a node exports.
pub struct Metrics {
    registry: Registry,
    /// Client requests by operation and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Client request latency by operation and outcome.
    pub latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// Reads that returned more than one value.
    pub sibling_reads: Counter,
    /// Hints stored on this node, waiting for their owners.
    pub hints_pending: Gauge,
    /// Bytes of the hints stored on this node.
    pub hint_bytes: Gauge,
    /// Hints handed back to their owners (or, for a removed owner, to the keys' replicas).
    pub hints_drained: Counter,
    /// Hints this node refused because its hint store was at its limit.
    pub hints_refused: Counter,
    /// Replicas sent reconciled versions after a read.
    pub read_repairs: Counter,
    /// Members by status, as this node sees them.
    pub members: Family<StatusLabels, Gauge>,
    /// Members by ring status, as this node sees them.
    pub ring_members: Family<RingLabels, Gauge>,
    /// Rebuilds of the ring on this node.
    pub ring_version: Gauge,
    /// Keys stored on this node.
    pub keys: Gauge,
    /// Sum of the lengths of the keys stored on this node.
    pub key_bytes: Gauge,
    /// Sum of the lengths of the values stored on this node, siblings included.
    pub value_bytes: Gauge,
    /// The process's resident memory; registered only where the OS reports it.
    pub resident_memory: Gauge,
    /// Writes forwarded to another coordinator.
    pub forwarded: Counter,
    /// Keys handed to their new owners after a ring change (or a leave) and dropped here.
    pub handoffs: Counter,
    /// Keys and hints held here that belong elsewhere, still to hand off.
    pub handoff_remaining: Gauge,
    /// Fresh actor epochs taken by the store (after a handoff dropped its own writes, or on
    /// seeing a forged claim about its actor).
    pub actor_epochs: Gauge,
    /// Payload bytes this node sent for anti-entropy and the tombstone purge (both as the
    /// initiator of a round and as the peer answering one).
    pub anti_entropy_bytes: Counter,
    /// Keys whose stored set anti-entropy changed on this node.
    pub anti_entropy_keys_repaired: Counter,
    /// Anti-entropy rounds this node initiated, by outcome.
    pub anti_entropy_rounds: Family<RoundLabels, Counter>,
    /// Keys whose tombstones this node purged.
    pub tombstones_purged: Counter,
    /// Messages and remote actors dropped because they claimed another sender than their
    /// session's peer, by kind.
    pub forged: Family<ForgedLabels, Counter>,
    /// Requests refused at once because a per-peer link's queue was full, by link.
    pub link_queue_full: Family<LinkLabels, Counter>,
    /// Cluster sessions closed because the peer's TLS certificate is not for the node name
    /// it announced.
    pub tls_name_mismatches: Counter,
    /// What the disk collector exports, set by [`Metrics::observe`].
    disk: Arc<DiskFigures>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dynamo");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            sibling_reads: Counter::default(),
            hints_pending: Gauge::default(),
            hint_bytes: Gauge::default(),
            hints_drained: Counter::default(),
            hints_refused: Counter::default(),
            read_repairs: Counter::default(),
            members: Family::default(),
            ring_members: Family::default(),
            ring_version: Gauge::default(),
            keys: Gauge::default(),
            key_bytes: Gauge::default(),
            value_bytes: Gauge::default(),
            resident_memory: Gauge::default(),
            forwarded: Counter::default(),
            handoffs: Counter::default(),
            handoff_remaining: Gauge::default(),
            actor_epochs: Gauge::default(),
            anti_entropy_bytes: Counter::default(),
            anti_entropy_keys_repaired: Counter::default(),
            anti_entropy_rounds: Family::default(),
            tombstones_purged: Counter::default(),
            forged: Family::default(),
            link_queue_full: Family::default(),
            tls_name_mismatches: Counter::default(),
            disk: Arc::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Client requests by operation and outcome",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Client request latency",
            m.latency.clone(),
        );
        registry.register(
            "sibling_reads",
            "Reads that returned siblings",
            m.sibling_reads.clone(),
        );
        registry.register(
            "hints_pending",
            "Hints waiting for their owners",
            m.hints_pending.clone(),
        );
        registry.register(
            "hint_bytes",
            "Bytes of the hints waiting for their owners",
            m.hint_bytes.clone(),
        );
        registry.register(
            "hints_drained",
            "Hints delivered where they belong",
            m.hints_drained.clone(),
        );
        registry.register(
            "hints_refused",
            "Hints refused because the hint store was full",
            m.hints_refused.clone(),
        );
        registry.register(
            "read_repairs",
            "Replicas repaired after a read",
            m.read_repairs.clone(),
        );
        registry.register("members", "Members by status", m.members.clone());
        registry.register(
            "ring_members",
            "Members by ring status",
            m.ring_members.clone(),
        );
        registry.register(
            "ring_version",
            "Ring rebuilds on this node",
            m.ring_version.clone(),
        );
        registry.register("keys", "Keys stored on this node", m.keys.clone());
        registry.register(
            "key_bytes",
            "Sum of the lengths of the keys stored on this node",
            m.key_bytes.clone(),
        );
        registry.register(
            "value_bytes",
            "Sum of the lengths of the values stored on this node, siblings included",
            m.value_bytes.clone(),
        );
        // Absent rather than a misleading 0 where the OS does not report it.
        if resident_bytes().is_some() {
            registry.register(
                "resident_memory_bytes",
                "Resident memory of the node process",
                m.resident_memory.clone(),
            );
        }
        registry.register(
            "forwarded_writes",
            "Writes forwarded to a coordinator",
            m.forwarded.clone(),
        );
        registry.register(
            "handoff_keys_handed",
            "Keys handed to their owners and dropped here",
            m.handoffs.clone(),
        );
        registry.register(
            "handoff_keys_remaining",
            "Keys and hints held here that belong elsewhere",
            m.handoff_remaining.clone(),
        );
        registry.register(
            "actor_epochs",
            "Fresh actor epochs taken by the store",
            m.actor_epochs.clone(),
        );
        registry.register(
            "anti_entropy_bytes",
            "Payload bytes sent for anti-entropy and tombstone purges",
            m.anti_entropy_bytes.clone(),
        );
        registry.register(
            "anti_entropy_keys_repaired",
            "Keys changed here by anti-entropy",
            m.anti_entropy_keys_repaired.clone(),
        );
        registry.register(
            "anti_entropy_rounds",
            "Anti-entropy rounds initiated here, by outcome",
            m.anti_entropy_rounds.clone(),
        );
        registry.register(
            "tombstones_purged",
            "Keys whose tombstones were purged here",
            m.tombstones_purged.clone(),
        );
        for kind in FORGED_KINDS {
            let _ = m.forged.get_or_create(&ForgedLabels { kind });
        }
        registry.register(
            "forged_messages",
            "Messages and remote actors dropped for claiming another sender than their session's peer",
            m.forged.clone(),
        );
        for link in ["storage", "coordinator"] {
            let _ = m.link_queue_full.get_or_create(&LinkLabels { link });
        }
        registry.register(
            "link_queue_full",
            "Requests refused at once because a per-peer link's queue was full",
            m.link_queue_full.clone(),
        );
        registry.register(
            "tls_name_mismatches",
            "Cluster sessions closed because the peer's certificate is not for the name it announced",
            m.tls_name_mismatches.clone(),
        );
        registry.register_collector(Box::new(DiskCollector(m.disk.clone())));
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts one forged message or actor of `kind` (one of [`FORGED_KINDS`]).
    pub fn forged(&self, kind: &'static str) {
        self.forged.get_or_create(&ForgedLabels { kind }).inc();
    }

    /// The counter of requests refused by full queues of the `link` links.
    pub fn link_queue_full(&self, link: &'static str) -> Counter {
        self.link_queue_full
            .get_or_create(&LinkLabels { link })
            .clone()
    }

    /// Sets the gauges that are read at scrape time: the store's size, the hints, the process
    /// memory, and for a durable engine its size on disk and its fsyncs.
    pub fn observe(&self, store: &Store, hints: &HintStore) {
        let gauge = |g: &Gauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        gauge(&self.keys, store.len() as u64);
        gauge(&self.key_bytes, store.key_bytes());
        gauge(&self.value_bytes, store.value_bytes());
        gauge(&self.actor_epochs, store.epoch_changes());
        gauge(&self.hints_pending, hints.len() as u64);
        gauge(&self.hint_bytes, hints.bytes());
        if let Some(rss) = resident_bytes() {
            gauge(&self.resident_memory, rss);
        }
        let engine = store.engine();
        self.disk
            .bytes
            .store(engine.disk_bytes(), Ordering::Relaxed);
        self.disk.fsyncs.store(engine.fsyncs(), Ordering::Relaxed);
        self.disk.durable.store(engine.durable(), Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Fsync;
    use crate::core::ids::ActorId;
    use crate::core::store::{SetLimits, Store};
    use crate::http::metric_sum;
    use crate::node::disk::DiskEngine;
    use crate::testing::TempDir;

    #[test]
    fn disk_series_are_exported_for_a_durable_store_only() {
        let hints = HintStore::default();
        let memory = Metrics::default();
        memory.observe(&Store::new(ActorId::new("m", 1)), &hints);
        let text = memory.render();
        assert!(
            metric_sum(&text, "dynamo_keys", |_| true).is_some(),
            "{text}"
        );
        assert!(!text.contains("dynamo_disk_bytes"), "{text}");
        assert!(!text.contains("dynamo_fsyncs"), "{text}");

        let dir = TempDir::new("metrics-disk");
        let engine = DiskEngine::open(&dir.join("db"), Fsync::Always, 0).unwrap();
        let store = Store::open(Box::new(engine), ActorId::new("d", 1), SetLimits::NONE).unwrap();
        store.engine().sync().unwrap();
        let disk = Metrics::default();
        disk.observe(&store, &hints);
        let text = disk.render();
        let fsyncs = metric_sum(&text, "dynamo_fsyncs_total", |_| true);
        // Opening a store writes its actor id and counter lease, each made durable at once.
        assert!(fsyncs.is_some_and(|n| n >= 1.0), "{text}");
        assert!(
            metric_sum(&text, "dynamo_disk_bytes", |_| true).is_some(),
            "{text}"
        );
        assert!(text.contains("# TYPE dynamo_fsyncs counter"), "{text}");
    }
}
