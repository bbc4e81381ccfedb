//! Drives the benchmark: a load phase, then the measured phase, with C concurrent clients
//! that each go round-robin over the nodes (or share one native client, which routes itself).
//!
//! Updates write with the newest context the run has seen for the record (from any client's
//! read or write), as an application that keeps its contexts would. Blind updates would turn
//! every update into a sibling and measure sibling growth instead of the store.

use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::cpu::{CpuMeter, CpuUsed};
use super::stats::{BenchSummary, OpKind, Scenario, Setup, Stats};
use super::target::BenchClient;
use super::timeline::{MarkKind, Recorder, Series, Timeline};
use super::workload::{Distribution, KeyChooser, Workload, key_name};
use crate::http::HttpClient;
use crate::model::{Context, GetResult};

/// When the measured phase ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// After this long (operations in flight finish).
    Duration(Duration),
    /// After this many operations, over all clients.
    Ops(u64),
}

/// What to run, and against which nodes.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// HTTP base URLs of the nodes.
    pub urls: Vec<String>,
    /// The operation mix.
    pub workload: Workload,
    /// How existing records are picked.
    pub distribution: Distribution,
    /// Records loaded and then read or updated.
    pub records: u64,
    /// Bytes per value written.
    pub value_size: usize,
    /// Concurrent clients.
    pub concurrency: usize,
    /// End of the measured phase.
    pub limit: Limit,
    /// Whether to insert the records first (ignored for W, which only inserts).
    pub load: bool,
    /// Seed of the clients' random choices.
    pub seed: u64,
    /// Whether to print progress on stderr.
    pub progress: bool,
}

/// A configuration the benchmark cannot run.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BenchError {
    /// No node to talk to.
    #[error("no node to benchmark")]
    NoNodes,
    /// Zero clients, records or operations or time.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

impl BenchConfig {
    /// Checks that the run can do something.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.urls.is_empty() {
            return Err(BenchError::NoNodes);
        }
        if self.concurrency == 0 {
            return Err(BenchError::Zero("concurrency"));
        }
        if self.records == 0 && self.workload.needs_load() {
            return Err(BenchError::Zero("records"));
        }
        match self.limit {
            Limit::Ops(0) => Err(BenchError::Zero("ops")),
            Limit::Duration(d) if d.is_zero() => Err(BenchError::Zero("duration")),
            _ => Ok(()),
        }
    }
}

/// What all clients of one phase share.
struct Shared<C> {
    clients: Vec<C>,
    /// The newest context seen per record index, for updates.
    contexts: Arc<DashMap<u64, Context>>,
    workload: Workload,
    chooser: KeyChooser,
    value: Bytes,
    /// Next record index to insert.
    next_insert: AtomicU64,
    /// Last index (exclusive) the load phase inserts.
    load_end: u64,
    /// Operations left under [`Limit::Ops`].
    remaining: AtomicU64,
    deadline: Option<Instant>,
    stop: Arc<AtomicBool>,
    done: AtomicU64,
    failed: AtomicU64,
    timeline: Arc<Timeline>,
}

/// Runs the load phase (unless skipped) and the measured phase over HTTP against
/// `config.urls`; `stop` ends the measured phase early (Ctrl-C), which is still reported.
pub async fn run_bench(
    config: &BenchConfig,
    stop: Arc<AtomicBool>,
) -> Result<BenchSummary, BenchError> {
    config.validate()?;
    let clients: Vec<HttpClient> = config
        .urls
        .iter()
        .map(|u| crate::http::env_client(u, crate::http::DEFAULT_TIMEOUT))
        .collect();
    run_with(config, clients, "http", stop).await
}

/// Runs the benchmark through `clients` (taken round-robin); `via` names them in the report.
pub async fn run_with<C: BenchClient>(
    config: &BenchConfig,
    clients: Vec<C>,
    via: &str,
    stop: Arc<AtomicBool>,
) -> Result<BenchSummary, BenchError> {
    let mut bench = Bench::new(config.clone(), clients, via, stop)?;
    bench.load().await;
    let measured = bench.measure(config.limit, "run").await;
    Ok(bench.summary(&measured))
}

/// What one measured phase gave.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Latencies, errors and the rest, over all clients.
    pub stats: Stats,
    /// How long the phase took.
    pub elapsed: Duration,
    /// The CPU time the node processes (if their pids are known) and the bench used in it.
    pub cpu: CpuUsed,
}

/// A benchmark that runs its measured phases one after another on the same records and
/// contexts, so a caller can change the cluster between them (see `--recovery`).
pub struct Bench<C> {
    config: BenchConfig,
    clients: Vec<C>,
    contexts: Arc<DashMap<u64, Context>>,
    /// Built once: a zipfian chooser sums over every record when made.
    chooser: KeyChooser,
    value: Bytes,
    /// Next record index a workload-W insert takes, across phases.
    next_insert: u64,
    setup: Setup,
    stop: Arc<AtomicBool>,
    /// Whose CPU time the measured phases count; `None`: nodes this process did not start.
    node_pids: Option<Vec<u32>>,
    timeline: Arc<Timeline>,
}

impl<C: BenchClient> Bench<C> {
    /// Checks the configuration; `via` names the clients in the report.
    pub fn new(
        config: BenchConfig,
        clients: Vec<C>,
        via: &str,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, BenchError> {
        config.validate()?;
        if clients.is_empty() {
            return Err(BenchError::NoNodes);
        }
        let setup = Setup {
            scenario: Scenario {
                workload: config.workload.to_string(),
                distribution: config.distribution.to_string(),
                records: config.records,
                value_size: config.value_size,
                concurrency: config.concurrency,
                nodes: config.urls.len(),
            },
            client: via.to_string(),
            // Only the caller knows; see `Bench::set_storage`.
            storage: "unknown".to_string(),
            load_errors: 0,
        };
        Ok(Bench {
            value: Bytes::from(vec![b'x'; config.value_size]),
            contexts: Arc::new(DashMap::new()),
            chooser: KeyChooser::new(config.distribution, config.records),
            next_insert: 0,
            clients,
            setup,
            stop,
            config,
            node_pids: None,
            timeline: Timeline::new(),
        })
    }

    fn shared(&self, deadline: Option<Instant>, remaining: u64) -> Arc<Shared<C>> {
        Arc::new(Shared {
            clients: self.clients.clone(),
            contexts: self.contexts.clone(),
            workload: self.config.workload,
            chooser: self.chooser.clone(),
            value: self.value.clone(),
            next_insert: AtomicU64::new(self.next_insert),
            load_end: self.config.records,
            remaining: AtomicU64::new(remaining),
            deadline,
            stop: self.stop.clone(),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            timeline: self.timeline.clone(),
        })
    }

    /// Inserts the records, unless the configuration skips it or the workload needs none.
    pub async fn load(&mut self) {
        if !(self.config.load && self.config.workload.needs_load()) {
            return;
        }
        let load = self.shared(None, u64::MAX);
        self.timeline.mark(MarkKind::Phase, "load");
        let started = Instant::now();
        let stats = phase(&self.config, &load, "load", true).await;
        self.setup.load_errors = stats.error_ops();
        if self.config.progress {
            eprintln!(
                "loaded {} records in {:.2} s ({} failed)",
                self.config.records,
                started.elapsed().as_secs_f64(),
                self.setup.load_errors
            );
        }
    }

    /// One measured phase until `limit`; `name` labels its progress lines and its mark on
    /// the timeline.
    pub async fn measure(&mut self, limit: Limit, name: &'static str) -> Measured {
        self.timeline.mark(MarkKind::Phase, name);
        let meter = CpuMeter::start(self.node_pids.as_deref());
        let started = Instant::now();
        let (deadline, remaining) = match limit {
            Limit::Duration(d) => (Some(started + d), u64::MAX),
            Limit::Ops(n) => (None, n),
        };
        let measured = self.shared(deadline, remaining);
        let stats = phase(&self.config, &measured, name, false).await;
        let elapsed = started.elapsed();
        let cpu = meter.stop();
        self.next_insert = measured.next_insert.load(Ordering::Relaxed);
        Measured {
            stats,
            elapsed,
            cpu,
        }
    }

    /// The node processes whose CPU time the next measured phases count (`None`: not known,
    /// and the reports say so). A process that exits during a phase leaves that phase's
    /// figure unknown.
    pub fn set_node_pids(&mut self, pids: Option<Vec<u32>>) {
        self.node_pids = pids;
    }

    /// Marks something done to the cluster, e.g. `kill n3`, on the timeline.
    pub fn mark_fault(&self, label: impl Into<String>) {
        self.timeline.mark(MarkKind::Fault, label);
    }

    /// The run so far, second by second, with its phases and faults.
    pub fn series(&self) -> Series {
        self.timeline.series()
    }

    /// The configuration it runs.
    pub fn config(&self) -> &BenchConfig {
        &self.config
    }

    /// Names the storage of the nodes in every later report (`memory`, `disk (fsync ..)`).
    pub fn set_storage(&mut self, storage: impl fmt::Display) {
        self.setup.storage = storage.to_string();
    }

    /// The report of a phase's figures.
    pub fn summary(&self, measured: &Measured) -> BenchSummary {
        let mut summary = measured.stats.summary(&self.setup, measured.elapsed);
        summary.set_cpu(&measured.cpu);
        summary
    }
}

/// Runs `concurrency` clients until the phase ends, with a progress reporter beside them.
async fn phase<C: BenchClient>(
    config: &BenchConfig,
    shared: &Arc<Shared<C>>,
    name: &'static str,
    load: bool,
) -> Stats {
    let reporter = config
        .progress
        .then(|| tokio::spawn(report_progress(shared.clone(), name)));
    let mut tasks = Vec::with_capacity(config.concurrency);
    for id in 0..config.concurrency {
        let shared = shared.clone();
        let seed = config.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        tasks.push(tokio::spawn(async move {
            if load {
                load_client(id, &shared).await
            } else {
                client(id, &shared, StdRng::seed_from_u64(seed)).await
            }
        }));
    }
    let mut total = Stats::new();
    for task in tasks {
        match task.await {
            Ok(stats) => total.merge(&stats),
            // A panicking client loses its figures; the others still count.
            Err(_) => total.error("client_panicked"),
        }
    }
    if let Some(reporter) = reporter {
        reporter.abort();
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[K");
        }
    }
    total
}

/// Inserts records until the load phase has inserted them all.
async fn load_client<C: BenchClient>(id: usize, shared: &Shared<C>) -> Stats {
    let mut stats = Stats::new();
    let mut seconds = shared.timeline.recorder();
    let mut turn = id;
    loop {
        let index = shared.next_insert.fetch_add(1, Ordering::Relaxed);
        if index >= shared.load_end || shared.stop.load(Ordering::Relaxed) {
            return stats;
        }
        let node = &shared.clients[turn % shared.clients.len()];
        turn += 1;
        let started = Instant::now();
        let outcome = node
            .put(key_name(index).into(), shared.value.clone(), None)
            .await
            .map(|context| {
                shared.contexts.insert(index, context);
            });
        count(
            shared,
            &mut stats,
            &mut seconds,
            OpKind::Insert,
            started,
            outcome,
        );
    }
}

/// One client of the measured phase.
async fn client<C: BenchClient>(id: usize, shared: &Shared<C>, mut rng: StdRng) -> Stats {
    let mut stats = Stats::new();
    let mut seconds = shared.timeline.recorder();
    let mut turn = id;
    loop {
        if shared.stop.load(Ordering::Relaxed)
            || shared.deadline.is_some_and(|d| Instant::now() >= d)
            || shared
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1))
                .is_err()
        {
            return stats;
        }
        let node = &shared.clients[turn % shared.clients.len()];
        turn += 1;
        let op = shared.workload.op(rng.random());
        let index = match op {
            OpKind::Insert => shared.next_insert.fetch_add(1, Ordering::Relaxed),
            _ => shared.chooser.pick(rng.random()),
        };
        let key = key_name(index).into();
        let started = Instant::now();
        let outcome = match op {
            OpKind::Read => node.get(key).await.map(|got| {
                match &got {
                    GetResult::Siblings { .. } => stats.sibling_read(),
                    GetResult::NotFound { .. } => stats.not_found(),
                    GetResult::Value { .. } => {}
                }
                shared.remember(index, got.context());
            }),
            OpKind::Update | OpKind::Insert => {
                let context = shared.contexts.get(&index).map(|c| c.clone());
                node.put(key, shared.value.clone(), context)
                    .await
                    .map(|context| shared.remember(index, &context))
            }
        };
        count(shared, &mut stats, &mut seconds, op, started, outcome);
    }
}

impl<C> Shared<C> {
    /// Keeps `context` as the record's newest unless it is empty (a miss teaches nothing).
    fn remember(&self, index: u64, context: &Context) {
        if !context.is_empty() {
            self.contexts.insert(index, context.clone());
        }
    }
}

/// Records one finished operation.
fn count<C>(
    shared: &Shared<C>,
    stats: &mut Stats,
    seconds: &mut Recorder,
    op: OpKind,
    started: Instant,
    outcome: Result<(), String>,
) {
    let now = Instant::now();
    match outcome {
        Ok(()) => {
            let took = now.saturating_duration_since(started);
            stats.record(op, took);
            seconds.ok(op, took, now);
        }
        Err(kind) => {
            stats.error(&kind);
            seconds.error(now);
            shared.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    shared.done.fetch_add(1, Ordering::Relaxed);
}

/// Prints the phase's progress: a rewritten line twice a second on a terminal, else a line
/// every five seconds (logs stay readable).
async fn report_progress<C>(shared: Arc<Shared<C>>, phase: &'static str) {
    let terminal = std::io::stderr().is_terminal();
    let every = Duration::from_millis(if terminal { 500 } else { 5000 });
    let started = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        let done = shared.done.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        let line = format!(
            "{phase}: {done} ops, {:.0} ops/s, {failed} errors, {secs:.1} s",
            done as f64 / secs.max(1e-9)
        );
        if terminal {
            eprint!("\r\x1b[K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BenchConfig {
        BenchConfig {
            urls: vec!["http://127.0.0.1:1".into()],
            workload: Workload::A,
            distribution: Distribution::Zipfian,
            records: 10,
            value_size: 10,
            concurrency: 2,
            limit: Limit::Ops(10),
            load: false,
            seed: 1,
            progress: false,
        }
    }

    #[test]
    fn configurations_that_cannot_run_are_refused() {
        assert_eq!(config().validate(), Ok(()));
        let mut c = config();
        c.urls.clear();
        assert_eq!(c.validate(), Err(BenchError::NoNodes));
        let mut c = config();
        c.concurrency = 0;
        assert_eq!(c.validate(), Err(BenchError::Zero("concurrency")));
        let mut c = config();
        c.limit = Limit::Ops(0);
        assert_eq!(c.validate(), Err(BenchError::Zero("ops")));
        let mut c = config();
        c.records = 0;
        assert_eq!(c.validate(), Err(BenchError::Zero("records")));
        c.workload = Workload::W;
        assert_eq!(c.validate(), Ok(()));
    }

    /// Counts writes that came without a context although one had been handed out.
    #[derive(Clone, Default)]
    struct Recorder {
        handed_out: Arc<DashMap<Vec<u8>, Context>>,
        blind_after_context: Arc<AtomicU64>,
        with_context: Arc<AtomicU64>,
    }

    impl BenchClient for Recorder {
        async fn get(&self, key: crate::core::ids::Key) -> Result<GetResult, String> {
            let context = self.handed_out.get(key.as_ref()).map(|c| c.clone());
            Ok(GetResult::Value {
                value: Bytes::from_static(b"v"),
                context: context.unwrap_or_default(),
            })
        }

        async fn put(
            &self,
            key: crate::core::ids::Key,
            _value: Bytes,
            context: Option<Context>,
        ) -> Result<Context, String> {
            let known = self.handed_out.contains_key(key.as_ref());
            match (known, &context) {
                (true, None) => self.blind_after_context.fetch_add(1, Ordering::Relaxed),
                (_, Some(_)) => self.with_context.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
            let mut clock = crate::core::vclock::VClock::new();
            let n1 = crate::core::ids::ActorId::new(crate::core::ids::NodeId::new("n1"), 1);
            clock.add_dot(&crate::core::vclock::Dot::new(n1, 1), 0);
            let next = Context::from_clock(clock);
            self.handed_out.insert(key.to_vec(), next.clone());
            Ok(next)
        }
    }

    #[tokio::test]
    async fn updates_carry_the_newest_context_seen_for_their_record() {
        let mut c = config();
        c.load = true;
        c.limit = Limit::Ops(200);
        let recorder = Recorder::default();
        let summary = run_with(
            &c,
            vec![recorder.clone()],
            "fake",
            Arc::new(AtomicBool::new(false)),
        )
        .await
        .unwrap();
        assert_eq!(summary.bench, "ycsb-fake");
        assert!(summary.latency_us.contains_key("update"), "{summary:?}");
        assert_eq!(recorder.blind_after_context.load(Ordering::Relaxed), 0);
        assert!(recorder.with_context.load(Ordering::Relaxed) > 0);
    }

    #[tokio::test]
    async fn an_unreachable_node_counts_transport_errors_for_every_operation() {
        let summary = run_bench(&config(), Arc::new(AtomicBool::new(false)))
            .await
            .unwrap();
        assert_eq!(summary.ops, 10);
        assert_eq!(summary.errors.get("transport"), Some(&10));
        assert!(summary.latency_us.is_empty());
    }
}
