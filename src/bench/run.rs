//! Drives the benchmark: a load phase, then the measured phase, with C concurrent clients
//! that each go round-robin over the nodes.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::stats::{BenchSummary, OpKind, Setup, Stats};
use super::workload::{Distribution, KeyChooser, Workload, key_name};
use crate::api::GetResult;
use crate::http::{HttpClient, HttpError};

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
struct Shared {
    clients: Vec<HttpClient>,
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
}

/// Runs the load phase (unless skipped) and the measured phase; `stop` ends the measured
/// phase early (Ctrl-C), which is still reported.
pub async fn run_bench(
    config: &BenchConfig,
    stop: Arc<AtomicBool>,
) -> Result<BenchSummary, BenchError> {
    config.validate()?;
    let clients: Vec<HttpClient> = config.urls.iter().map(HttpClient::new).collect();
    let mut setup = Setup {
        workload: config.workload.to_string(),
        distribution: config.distribution.to_string(),
        records: config.records,
        value_size: config.value_size,
        concurrency: config.concurrency,
        nodes: clients.len(),
        load_errors: 0,
    };
    let value = Bytes::from(vec![b'x'; config.value_size]);
    let shared = |deadline, remaining, next_insert| {
        Arc::new(Shared {
            clients: clients.clone(),
            workload: config.workload,
            chooser: KeyChooser::new(config.distribution, config.records),
            value: value.clone(),
            next_insert: AtomicU64::new(next_insert),
            load_end: config.records,
            remaining: AtomicU64::new(remaining),
            deadline,
            stop: stop.clone(),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    };

    if config.load && config.workload.needs_load() {
        let load = shared(None, u64::MAX, 0);
        let started = Instant::now();
        let stats = phase(config, &load, "load", true).await;
        setup.load_errors = stats.error_ops();
        if config.progress {
            eprintln!(
                "loaded {} records in {:.2} s ({} failed)",
                config.records,
                started.elapsed().as_secs_f64(),
                setup.load_errors
            );
        }
    }

    let started = Instant::now();
    let (deadline, remaining) = match config.limit {
        Limit::Duration(d) => (Some(started + d), u64::MAX),
        Limit::Ops(n) => (None, n),
    };
    let measured = shared(deadline, remaining, 0);
    let stats = phase(config, &measured, "run", false).await;
    Ok(stats.summary(&setup, started.elapsed()))
}

/// Runs `concurrency` clients until the phase ends, with a progress reporter beside them.
async fn phase(
    config: &BenchConfig,
    shared: &Arc<Shared>,
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
async fn load_client(id: usize, shared: &Shared) -> Stats {
    let mut stats = Stats::new();
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
            .put(key_name(index).as_bytes(), shared.value.clone(), None, None)
            .await;
        count(
            shared,
            &mut stats,
            OpKind::Insert,
            started,
            outcome.map(|_| ()),
        );
    }
}

/// One client of the measured phase.
async fn client(id: usize, shared: &Shared, mut rng: StdRng) -> Stats {
    let mut stats = Stats::new();
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
        let key = key_name(index);
        let started = Instant::now();
        let outcome = match op {
            OpKind::Read => node.get(key.as_bytes(), None).await.map(|got| match got {
                GetResult::Siblings { .. } => stats.sibling_read(),
                GetResult::NotFound { .. } => stats.not_found(),
                GetResult::Value { .. } => {}
            }),
            OpKind::Update | OpKind::Insert => node
                .put(key.as_bytes(), shared.value.clone(), None, None)
                .await
                .map(|_| ()),
        };
        count(shared, &mut stats, op, started, outcome);
    }
}

/// Records one finished operation.
fn count(
    shared: &Shared,
    stats: &mut Stats,
    op: OpKind,
    started: Instant,
    outcome: Result<(), HttpError>,
) {
    match outcome {
        Ok(()) => stats.record(op, started.elapsed()),
        Err(e) => {
            stats.error(error_kind(&e));
            shared.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    shared.done.fetch_add(1, Ordering::Relaxed);
}

/// The kind an error is counted under: the API's kind, else what went wrong.
pub fn error_kind(e: &HttpError) -> &str {
    match e {
        HttpError::Api { kind, .. } => kind,
        HttpError::Transport(_) => "transport",
        HttpError::Decode(_) => "decode",
        HttpError::InvalidKey(_) => "invalid_key",
    }
}

/// Prints the phase's progress: a rewritten line twice a second on a terminal, else a line
/// every five seconds (logs stay readable).
async fn report_progress(shared: Arc<Shared>, phase: &'static str) {
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
