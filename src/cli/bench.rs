//! `dynamo-node bench`: a YCSB-style benchmark against `--node`s or a cluster it starts, over
//! HTTP or through the native client; `dynamo-node bench transport`: the raw remote-call rate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::{CliError, NodeFlags, TlsFlags, shutdown_signal};
use crate::bench::recovery::{RecoverySummary, RepairWork};
use crate::bench::timeline::Series;
use crate::bench::versus::{Versus, VersusRounds};
use crate::bench::{
    Bench, BenchClient, BenchConfig, BenchError, BenchSummary, Distribution, Limit, ServiceClient,
    Storage, TransportConfig, TransportSummary, Workload, observe, run_transport,
};
use crate::config::{Fsync, NodeConfig};
use crate::model::KvService;
use crate::node::{NativeClient, NativeConfig};
use crate::process::{BINARY_ENV, LocalCluster, LoopbackNet, MAX_NODES};

/// How the benchmark's clients reach the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientKind {
    /// The HTTP API, round-robin over the nodes.
    Http,
    /// The native client: joins the cluster, coordinates reads itself, writes to an owner.
    Native,
}

/// `dynamo-node bench` modes other than the YCSB workloads.
#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum BenchMode {
    /// The raw ractor_cluster remote-call rate from this process to one node
    Transport(TransportArgs),
}

/// `dynamo-node bench transport`.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct TransportArgs {
    /// Concurrent callers
    #[arg(long, value_name = "C", default_value_t = 64)]
    pub concurrency: usize,
    /// Length of the run
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Bytes per ping (echoed back)
    #[arg(long, value_name = "B", default_value_t = 100)]
    pub payload_bytes: usize,
    /// Node HTTP URL whose cluster address to call; without it, a node is started
    #[arg(long = "node", value_name = "URL")]
    pub node_url: Option<String>,
    /// Passed to the started node (and --cookie to the handshake).
    #[command(flatten)]
    pub flags: NodeFlags,
    /// The native client's TLS, with --node.
    #[command(flatten)]
    pub tls: NativeTlsArgs,
}

/// The native client's TLS, for a cluster whose nodes run with `--tls-*` (reached with
/// `--node`; a cluster the bench starts runs without TLS).
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct NativeTlsArgs {
    /// The client's certificate, key and the cluster's CA.
    #[command(flatten)]
    pub files: TlsFlags,
    /// The native client's name in the mesh: the DNS name of its --tls-cert
    #[arg(long, value_name = "NAME", requires = "tls_cert")]
    pub client_name: Option<String>,
}

/// `dynamo-node bench`.
#[derive(Args, Clone, Debug, PartialEq)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Another kind of benchmark than the YCSB workloads.
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
    /// How clients reach the nodes: http, or native (client-driven coordination)
    #[arg(long, value_name = "http|native", default_value = "http")]
    pub client: ClientKind,
    /// Before the workload, measure the raw remote-call rate for S seconds, so quorum writes
    /// are compared with it in the same run
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    pub transport_secs: f64,
    /// Three windows of --duration-secs: steady, the last node killed, the node restarted
    /// empty (hints drain, anti-entropy refills it); compares the p99s
    #[arg(long, conflicts_with_all = ["nodes_urls", "ops"])]
    pub recovery: bool,
    /// While the workload runs, C connections abuse the nodes' HTTP ports (malformed
    /// requests, bad keys, oversized bodies, headers that never end); compare its p99s with
    /// a run without
    #[arg(long, value_name = "C", conflicts_with = "recovery")]
    pub flood: Option<usize>,
    /// a: 50% read 50% update; b: 95/5; c: read only; w: insert only
    #[arg(long, value_name = "a|b|c|w", default_value = "a")]
    pub workload: Workload,
    /// How records are picked: uniform or zipfian (YCSB's, theta 0.99, scrambled)
    #[arg(long, value_name = "D", default_value = "zipfian")]
    pub distribution: Distribution,
    /// Records inserted by the load phase and used by reads and updates
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub records: u64,
    /// Bytes per value
    #[arg(long, value_name = "B", default_value_t = 100)]
    pub value_size: usize,
    /// Concurrent clients (each goes round-robin over the nodes)
    #[arg(long, value_name = "C", default_value_t = 64)]
    pub concurrency: usize,
    /// Length of the measured phase [default: 10]
    #[arg(long, value_name = "S", conflicts_with = "ops")]
    pub duration_secs: Option<f64>,
    /// Operations of the measured phase, instead of a duration
    #[arg(long, value_name = "N")]
    pub ops: Option<u64>,
    /// Skip the load phase (the records are already there)
    #[arg(long)]
    pub no_load: bool,
    /// Seed of the key and operation choices
    #[arg(long, value_name = "SEED", default_value_t = 1)]
    pub seed: u64,
    /// Node HTTP URL to benchmark (repeatable); without it, a local cluster is started
    #[arg(long = "node", value_name = "URL")]
    pub nodes_urls: Vec<String>,
    /// Nodes of the started cluster (on a loopback net of its own)
    #[arg(
        long,
        value_name = "K",
        default_value_t = 3,
        conflicts_with = "nodes_urls"
    )]
    pub nodes: usize,
    /// Keep the started nodes' data on disk, node i under DIR/n{i} (created; they must be
    /// absent or empty: a bench does not reuse old data; kept after the run) [default: in
    /// memory]. Not with --node: those nodes keep the storage they were started with
    #[arg(long, value_name = "DIR", conflicts_with = "nodes_urls")]
    pub data_dir: Option<PathBuf>,
    /// With --data-dir: when the started nodes acknowledge a write: always (after an fsync
    /// that covers it) or never (once the OS has it) [default: always]
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        requires = "data_dir",
        conflicts_with = "nodes_urls"
    )]
    pub fsync: Option<Fsync>,
    /// Passed to every node of the started cluster.
    #[command(flatten)]
    pub flags: NodeFlags,
    /// The native client's TLS, with --node.
    #[command(flatten)]
    pub tls: NativeTlsArgs,
    /// Draw ops/s and p99 per second over the whole run, with its phases and faults, into
    /// this SVG file (and as text on stderr)
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// With --data-dir: first run the same workload on a cluster in memory (stopped before
    /// the durable one starts), then print the durable figures against it: the ratios the
    /// durable goals name, from one run rather than two taken minutes apart
    #[arg(
        long,
        requires = "data_dir",
        conflicts_with_all = ["recovery", "flood", "plot"]
    )]
    pub versus_memory: bool,
    /// With --versus-memory: measure both N times, memory and disk first in turn, the durable
    /// round k under DIR/round{k} (with N above 1), and judge the goals on the medians
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        requires = "versus_memory",
        value_parser = clap::value_parser!(u32).range(1..=MAX_ROUNDS as i64)
    )]
    pub rounds: u32,
}

/// Most rounds one `--versus-memory` run takes.
pub const MAX_ROUNDS: u32 = 20;

impl BenchArgs {
    /// True for a YCSB run on a cluster the bench starts here (no `--node`, no subcommand).
    pub fn starts_cluster(&self) -> bool {
        self.mode.is_none() && self.nodes_urls.is_empty()
    }

    /// The storage of the cluster the bench starts, or `None` for `--node`s (their metrics
    /// tell); `--data-dir` and `--fsync` are refused where they would change nothing.
    pub fn storage(&self) -> Result<Option<Storage>, CliError> {
        if !self.nodes_urls.is_empty() {
            if self.data_dir.is_some() || self.fsync.is_some() {
                return Err(CliError::Usage(
                    "--data-dir and --fsync apply to the cluster the bench starts; the --node \
                     URLs keep the storage they were started with"
                        .into(),
                ));
            }
            return Ok(None);
        }
        match (&self.data_dir, self.fsync) {
            (None, None) => Ok(Some(Storage::Memory)),
            (None, Some(_)) => Err(CliError::Usage(
                "--fsync needs --data-dir: nodes in memory make no fsyncs".into(),
            )),
            (Some(_), fsync) => Ok(Some(Storage::Disk(Some(fsync.unwrap_or_default())))),
        }
    }
}

/// Runs the benchmark and prints the table and the JSON line on stdout.
pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    if let Some(BenchMode::Transport(transport)) = &args.mode {
        return run_transport_mode(transport).await;
    }
    let limit = match (args.ops, args.duration_secs) {
        (Some(ops), _) => Limit::Ops(ops),
        (None, secs) => Limit::Duration(seconds("--duration-secs", secs.unwrap_or(10.0))?),
    };
    let transport_time = seconds("--transport-secs", args.transport_secs)?;
    let storage = args.storage()?;
    if let Some(plot) = &args.plot {
        check_plot_path(plot)?;
    }
    let mut config = BenchConfig {
        urls: args.nodes_urls.clone(),
        workload: args.workload,
        distribution: args.distribution,
        records: args.records,
        value_size: args.value_size,
        concurrency: args.concurrency,
        limit,
        load: !args.no_load,
        seed: args.seed,
        progress: true,
    };
    let mut cluster = None;
    if config.urls.is_empty() {
        if args.nodes == 0 || args.nodes > MAX_NODES {
            return Err(CliError::Usage(format!(
                "--nodes must be between 1 and {MAX_NODES}, got {}",
                args.nodes
            )));
        }
        args.flags.validate()?;
        // Checked before starting nodes that would only be stopped again.
        config.urls.push(String::new());
        config
            .validate()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let data = match (&args.data_dir, storage) {
            (Some(dir), Some(Storage::Disk(fsync))) => {
                let dir = prepare_data_dir(dir, args.nodes)?;
                Some((dir, fsync.unwrap_or_default()))
            }
            _ => None,
        };
        if let (true, Some((dir, fsync))) = (args.versus_memory, data.as_ref()) {
            return versus_memory(&args, &config, dir, *fsync, transport_time).await;
        }
        let started = start_cluster(args.nodes, &args.flags, data).await?;
        config.urls = started.specs().iter().map(|s| s.http_url()).collect();
        cluster = Some(started);
    }
    config
        .validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;

    let result = match cluster.as_mut() {
        Some(cluster) if args.recovery => {
            let storage = storage.unwrap_or(Storage::Unknown);
            run_recovery(&args, config, cluster, storage).await
        }
        _ => {
            let pids = cluster.as_mut().and_then(node_pids);
            run_workload(
                &args,
                &config,
                cluster.as_ref(),
                transport_time,
                storage,
                pids,
            )
            .await
        }
    };
    stop_cluster(cluster).await;
    let report = result?;
    super::emit(&report.text);
    if let Some(path) = &args.plot {
        crate::bench::plot::write_svg(path, &report.series, &report.title)
            .map_err(|e| CliError::Failed(format!("--plot: {e}")))?;
        eprintln!("plot written to {}", path.display());
        // The same run as text, for a terminal or a Markdown file.
        for line in crate::bench::sparkline::sparkline(&report.series) {
            eprintln!("{line}");
        }
    }
    Ok(())
}

/// What a run prints, and what `--plot` draws.
struct Report {
    /// The tables and the JSON line.
    text: String,
    /// The run second by second.
    series: Series,
    /// The picture's title.
    title: String,
    /// The figures of a single workload run (none for `--recovery`).
    summary: Option<BenchSummary>,
}

/// The title of a run's picture.
fn plot_title(summary: &BenchSummary) -> String {
    format!(
        "{}: workload {} ({}), {} records, {} clients, {} nodes, {}",
        summary.bench,
        summary.scenario.workload,
        summary.scenario.distribution,
        summary.scenario.records,
        summary.scenario.concurrency,
        summary.scenario.nodes,
        summary.storage
    )
}

/// `--plot FILE`: refused before any node starts if FILE's directory does not exist.
fn check_plot_path(path: &Path) -> Result<(), CliError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if path.file_name().is_none() || !dir.is_dir() {
        return Err(CliError::Usage(format!(
            "--plot {}: not a file in an existing directory",
            path.display()
        )));
    }
    Ok(())
}

/// `--versus-memory`: the workload on a cluster in memory and on a durable one (under `dir`,
/// with `fsync`), `--rounds` times, memory first in odd rounds and disk first in even ones;
/// prints every run, each round's ratios and, over several rounds, their medians. A stop
/// signal ends the run under way and starts no other.
async fn versus_memory(
    args: &BenchArgs,
    config: &BenchConfig,
    dir: &Path,
    fsync: Fsync,
    transport_time: Duration,
) -> Result<(), CliError> {
    let rounds = args.rounds as usize;
    // Every round's directories are checked before the first node starts.
    let roots = if rounds == 1 {
        vec![dir.to_path_buf()]
    } else {
        (1..=rounds)
            .map(|k| prepare_data_dir(&dir.join(format!("round{k}")), args.nodes))
            .collect::<Result<Vec<_>, _>>()?
    };
    let stopped = stop_on_signal();
    let mut judged = Vec::with_capacity(rounds);
    for (k, root) in roots.into_iter().enumerate() {
        let round = if rounds == 1 {
            String::new()
        } else {
            format!("round {} of {rounds}, ", k + 1)
        };
        // Taking turns, so that a machine speeding up or slowing down over the rounds
        // favours neither side.
        let memory_first = k % 2 == 0;
        let mut sides = [None, Some((root, fsync))];
        if !memory_first {
            sides.reverse();
        }
        let mut figures = Vec::with_capacity(2);
        for data in sides {
            if stopped.load(Ordering::Relaxed) {
                break;
            }
            let (what, transport) = match data {
                None => ("memory", Duration::ZERO),
                Some(_) => ("durable", transport_time),
            };
            let (text, summary) = separate_run(args, config, data, transport).await?;
            super::emit(&format!("{round}{what} run, for --versus-memory:\n{text}"));
            figures.push(summary);
        }
        let Ok([first, second]) = <[BenchSummary; 2]>::try_from(figures) else {
            let which = if rounds == 1 {
                "the comparison".to_string()
            } else {
                format!("round {}", k + 1)
            };
            eprintln!("stopped before both runs of {which} were made: it has no ratio");
            break;
        };
        let (memory, durable) = if memory_first {
            (first, second)
        } else {
            (second, first)
        };
        let versus = Versus::of(&memory, &durable, fsync);
        super::emit(&versus.report());
        judged.push(versus);
        if stopped.load(Ordering::Relaxed) {
            break;
        }
    }
    if rounds > 1 && !judged.is_empty() {
        super::emit(&VersusRounds::of(&judged).report());
    }
    Ok(())
}

/// One workload run on a cluster of its own, in memory or with `data`, stopped before this
/// returns so that runs never share the machine: the printed report and its figures.
async fn separate_run(
    args: &BenchArgs,
    config: &BenchConfig,
    data: Option<(PathBuf, Fsync)>,
    transport_time: Duration,
) -> Result<(String, BenchSummary), CliError> {
    let storage = match &data {
        None => Storage::Memory,
        Some((_, fsync)) => Storage::Disk(Some(*fsync)),
    };
    let mut cluster = start_cluster(args.nodes, &args.flags, data).await?;
    let mut config = config.clone();
    config.urls = cluster.specs().iter().map(|s| s.http_url()).collect();
    let pids = node_pids(&mut cluster);
    let result = run_workload(
        args,
        &config,
        Some(&cluster),
        transport_time,
        Some(storage),
        pids,
    )
    .await;
    stop_cluster(Some(cluster)).await;
    let report = result?;
    let summary = report
        .summary
        .ok_or_else(|| CliError::Failed(format!("the run on {storage} gave no figures")))?;
    Ok((report.text, summary))
}

/// The pids of the cluster's live node processes, whose CPU time the bench counts; `None`
/// if none is alive.
fn node_pids(cluster: &mut LocalCluster) -> Option<Vec<u32>> {
    let pids: Vec<u32> = (1..=cluster.len())
        .filter_map(|i| cluster.pid(i).ok().flatten())
        .collect();
    (!pids.is_empty()).then_some(pids)
}

/// The workload with the storage observed (see [`observe`]), counting the CPU time of
/// `pids`; answers with the summary and the timeline.
async fn observed<C: BenchClient>(
    config: &BenchConfig,
    clients: Vec<C>,
    via: &str,
    stop: Arc<AtomicBool>,
    storage: Option<Storage>,
    pids: Option<Vec<u32>>,
) -> Result<(BenchSummary, Series), BenchError> {
    let mut bench = Bench::new(config.clone(), clients, via, stop)?;
    bench.set_node_pids(pids);
    let summary = observe(&mut bench, storage).await;
    Ok((summary, bench.series()))
}

/// The native client (if asked for), the transport phase (if asked for), then the workload
/// on nodes of `storage` (`None`: as their metrics say), counting the CPU time of the node
/// processes `pids` (`None`: not known); answers with what to print.
async fn run_workload(
    args: &BenchArgs,
    config: &BenchConfig,
    cluster: Option<&LocalCluster>,
    transport_time: Duration,
    storage: Option<Storage>,
    pids: Option<Vec<u32>>,
) -> Result<Report, CliError> {
    let stop = stop_on_signal();
    let native = if args.client == ClientKind::Native || !transport_time.is_zero() {
        let seeds = match cluster {
            Some(cluster) => cluster.specs().iter().map(|s| s.cluster_addr).collect(),
            None => seeds_of(&config.urls).await?,
        };
        Some(connect_native(seeds, &args.flags, &args.tls, cluster.is_some()).await?)
    } else {
        None
    };
    let mut transport = None;
    if let Some(native) = &native
        && !transport_time.is_zero()
    {
        let summary =
            transport_phase(native, args.concurrency, transport_time, stop.clone()).await?;
        eprint!("{}", summary.table());
        transport = Some(summary);
    }
    let flood = args.flood.map(|connections| {
        let addrs: Vec<SocketAddr> = config.urls.iter().filter_map(|u| http_addr(u)).collect();
        let done = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(crate::bench::flood::flood(addrs, connections, done.clone()));
        (connections, done, task)
    });
    let summary = match (&native, args.client) {
        (Some(native), ClientKind::Native) => {
            let clients = vec![ServiceClient(native.service())];
            observed(config, clients, "native", stop.clone(), storage, pids).await
        }
        _ => {
            let clients = config
                .urls
                .iter()
                .map(|u| crate::http::env_client(u, crate::http::DEFAULT_TIMEOUT))
                .collect();
            observed(config, clients, "http", stop.clone(), storage, pids).await
        }
    };
    if let Some((connections, done, task)) = flood {
        done.store(true, Ordering::Relaxed);
        let sent = task.await.unwrap_or(0);
        eprintln!("flood: {sent} abusive requests over {connections} connections");
    }
    if let Some(native) = native {
        native.stop().await;
    }
    let (mut summary, series) = summary.map_err(|e| CliError::Usage(e.to_string()))?;
    summary.transport = transport;
    Ok(Report {
        text: format!("{}{}\n", summary.table(), summary.json_line()),
        title: plot_title(&summary),
        series,
        summary: Some(summary),
    })
}

/// `--recovery`: the three windows, through the client kind asked for, on nodes of `storage`.
async fn run_recovery(
    args: &BenchArgs,
    config: BenchConfig,
    cluster: &mut LocalCluster,
    storage: Storage,
) -> Result<Report, CliError> {
    let Limit::Duration(window) = config.limit else {
        return Err(CliError::Usage(
            "--recovery measures windows of --duration-secs".into(),
        ));
    };
    let stop = stop_on_signal();
    let usage = |e: crate::bench::BenchError| CliError::Usage(e.to_string());
    let (summary, series) = match args.client {
        ClientKind::Native => {
            let seeds = cluster.specs().iter().map(|s| s.cluster_addr).collect();
            let native = connect_native(seeds, &args.flags, &args.tls, true).await?;
            let clients = vec![ServiceClient(native.service())];
            let bench = Bench::new(config, clients, "native", stop).map_err(usage);
            let summary = match bench {
                Ok(bench) => recovery_windows(bench, cluster, window, storage).await,
                Err(e) => Err(e),
            };
            // The client coordinates reads, so the read repairs are counted in its metrics.
            let own = native.service().metrics();
            native.stop().await;
            let (mut summary, series) = summary?;
            summary.repair.read_repairs +=
                crate::http::metric_sum(&own, "dynamo_read_repairs_total", |_| true).unwrap_or(0.0);
            (summary, series)
        }
        ClientKind::Http => {
            let clients = config
                .urls
                .iter()
                .map(|u| crate::http::env_client(u, crate::http::DEFAULT_TIMEOUT))
                .collect();
            let bench = Bench::new(config, clients, "http", stop).map_err(usage)?;
            recovery_windows(bench, cluster, window, storage).await?
        }
    };
    Ok(Report {
        text: format!("{}{}\n", summary.table(), summary.json_line()),
        title: format!(
            "recovery of {}, {}",
            summary.node,
            plot_title(&summary.steady)
        ),
        series,
        summary: None,
    })
}

/// Steady window, the last node killed, the node restarted while the load goes on; with
/// the run's timeline.
async fn recovery_windows<C: BenchClient>(
    mut bench: Bench<C>,
    cluster: &mut LocalCluster,
    window: Duration,
    storage: Storage,
) -> Result<(RecoverySummary, Series), CliError> {
    let failed = |e: crate::process::ProcessError| CliError::Failed(e.to_string());
    bench.set_storage(storage);
    bench.load().await;
    bench.set_node_pids(node_pids(cluster));
    let measured = bench.measure(Limit::Duration(window), "steady").await;
    let steady = bench.summary(&measured);
    let victim = cluster.specs().len();
    let name = cluster.spec(victim).map_err(failed)?.name.clone();
    bench.mark_fault(format!("kill {name}"));
    cluster.kill(victim).map_err(failed)?;
    eprintln!("killed {name}");
    bench.set_node_pids(node_pids(cluster));
    let measured = bench.measure(Limit::Duration(window), "outage").await;
    let outage = bench.summary(&measured);
    // A durable node comes back with what its database held; one in memory, with nothing.
    let comes_back = if storage.durable() {
        "with its data"
    } else {
        "empty"
    };
    eprintln!("restarting {name} ({comes_back})");
    bench.mark_fault(format!("restart {name}"));
    let (restarted, measured) = tokio::join!(
        cluster.restart(victim),
        bench.measure(Limit::Duration(window), "recovery")
    );
    restarted.map_err(failed)?;
    let mut recovery = bench.summary(&measured);
    // The restarted process began within the window: all of its CPU time belongs to it.
    if let Some(cpu) = cluster
        .pid(victim)
        .ok()
        .flatten()
        .and_then(crate::bench::cpu::process_cpu)
    {
        recovery.add_node_cpu(cpu);
    }
    let repair = repair_work(cluster, victim).await;
    let summary = RecoverySummary::new(name, steady, outage, recovery, repair);
    Ok((summary, bench.series()))
}

/// The repair counters, summed over the nodes (a node that does not answer adds nothing).
async fn repair_work(cluster: &LocalCluster, restarted: usize) -> RepairWork {
    let mut work = RepairWork::default();
    for spec in cluster.specs() {
        let Ok(text) = crate::http::env_client(&spec.http_url(), crate::http::DEFAULT_TIMEOUT)
            .metrics()
            .await
        else {
            continue;
        };
        let sum = |name: &str| crate::http::metric_sum(&text, name, |_| true).unwrap_or(0.0);
        work.hints_drained += sum("dynamo_hints_drained_total");
        work.hints_pending += sum("dynamo_hints_pending");
        work.anti_entropy_keys_repaired += sum("dynamo_anti_entropy_keys_repaired_total");
        work.read_repairs += sum("dynamo_read_repairs_total");
        if spec.index == restarted {
            work.restarted_node_keys = sum("dynamo_keys");
        }
    }
    work
}

/// `dynamo-node bench transport`.
async fn run_transport_mode(args: &TransportArgs) -> Result<(), CliError> {
    let duration = seconds("--duration-secs", args.duration_secs)?;
    if args.concurrency == 0 {
        return Err(CliError::Usage("--concurrency must be at least 1".into()));
    }
    let mut cluster = None;
    let seeds = match &args.node_url {
        Some(url) => seeds_of(std::slice::from_ref(url)).await?,
        None => {
            args.flags.validate()?;
            let started = start_cluster(1, &args.flags, None).await?;
            let seeds = started.specs().iter().map(|s| s.cluster_addr).collect();
            cluster = Some(started);
            seeds
        }
    };
    let result = async {
        let native = connect_native(seeds, &args.flags, &args.tls, cluster.is_some()).await?;
        let summary = transport_phase(&native, args.concurrency, duration, stop_on_signal()).await;
        native.stop().await;
        summary
    }
    .await;
    stop_cluster(cluster).await;
    let summary = result?;
    super::emit(&format!("{}{}\n", summary.table(), summary.json_line()));
    Ok(())
}

/// Pings the first node the client is connected to.
async fn transport_phase(
    native: &NativeClient,
    concurrency: usize,
    duration: Duration,
    stop: Arc<AtomicBool>,
) -> Result<TransportSummary, CliError> {
    let service = native.service();
    let Some(node) = service.connected_nodes().into_iter().next() else {
        return Err(CliError::Failed(
            "the native client has no session to any node".into(),
        ));
    };
    eprintln!("transport: {concurrency} callers -> {node} for {duration:?}...");
    let config = TransportConfig {
        concurrency,
        duration,
        payload_bytes: 100,
    };
    Ok(run_transport(&service, &node, config, stop).await)
}

/// Joins the cluster through `seeds` with the nodes' quorum and gossip settings.
async fn connect_native(
    seeds: Vec<SocketAddr>,
    flags: &NodeFlags,
    tls: &NativeTlsArgs,
    started_here: bool,
) -> Result<NativeClient, CliError> {
    let tls_given = tls.files != TlsFlags::default();
    if tls_given && started_here {
        return Err(CliError::Usage(
            "--tls-cert/--tls-key/--tls-ca need --node: a cluster the bench starts runs without TLS"
                .into(),
        ));
    }
    let tls_paths = match (&tls.client_name, tls_given) {
        (Some(name), _) => tls.files.paths(name)?,
        (None, false) => None,
        (None, true) => {
            return Err(CliError::Usage(
                "--tls-cert needs --client-name, the DNS name of the certificate".into(),
            ));
        }
    };
    // The client reads with the nodes' N and R, so it takes the same flags.
    let mut node = NodeConfig::new("bench", SocketAddr::from(([127, 0, 0, 1], 0)));
    flags.apply(&mut node);
    let mut config = NativeConfig::new(seeds);
    // As the nodes get it: `--cookie`, else `$DYNAMO_COOKIE`, else the default.
    config.cookie = flags.given_cookie().unwrap_or(node.cookie);
    config.quorum = node.quorum;
    config.gossip = node.gossip;
    config.name.clone_from(&tls.client_name);
    config.tls = tls_paths;
    NativeClient::connect(config)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))
}

/// The cluster addresses of the nodes behind `urls`, as their members lists give them.
async fn seeds_of(urls: &[String]) -> Result<Vec<SocketAddr>, CliError> {
    let mut seeds = Vec::new();
    for url in urls {
        let members = crate::http::env_client(url, crate::http::DEFAULT_TIMEOUT)
            .members()
            .await
            .map_err(|e| CliError::Failed(format!("{url}: {e}")))?;
        seeds.extend(
            members
                .iter()
                .filter_map(|m| m.cluster_addr.parse::<SocketAddr>().ok()),
        );
    }
    seeds.sort();
    seeds.dedup();
    if seeds.is_empty() {
        return Err(CliError::Failed(format!(
            "no cluster address from {urls:?}"
        )));
    }
    Ok(seeds)
}

fn seconds(flag: &str, secs: f64) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(secs).map_err(|e| CliError::Usage(format!("{flag} {secs}: {e}")))
}

/// A flag that Ctrl-C (or SIGTERM) sets, ending the run early; it is still reported.
/// The address of a node's HTTP URL (`http://IP:PORT`), for the flood's raw connections.
fn http_addr(url: &str) -> Option<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.trim_end_matches('/').parse().ok()
}

fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        let name = shutdown_signal().await;
        eprintln!("{name}: ending the run");
        flag.store(true, Ordering::Relaxed);
    });
    stop
}

/// Stops the cluster the benchmark started, if any; a failure only warns, the figures stand.
async fn stop_cluster(cluster: Option<LocalCluster>) {
    if let Some(mut cluster) = cluster
        && let Err(e) = cluster.stop_all().await
    {
        eprintln!("warning: stopping the cluster: {e}");
    }
}

/// Makes `dir` (the bench's `--data-dir`) and checks that none of the directories the nodes
/// will use, `dir/n1..n{nodes}`, holds anything: figures measured on top of an earlier run's
/// data would not be those of the run asked for. Answers with the absolute path, which the
/// node processes get.
fn prepare_data_dir(dir: &Path, nodes: usize) -> Result<PathBuf, CliError> {
    let usage = |what: String| CliError::Usage(format!("--data-dir {}: {what}", dir.display()));
    std::fs::create_dir_all(dir).map_err(|e| usage(format!("cannot be created: {e}")))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| usage(e.to_string()))?;
    for i in 1..=nodes {
        let node = dir.join(format!("n{i}"));
        let held = match std::fs::read_dir(&node) {
            Ok(mut entries) => entries.next().is_some(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(usage(format!("{}: {e}", node.display()))),
        };
        if held {
            return Err(usage(format!(
                "{} is not empty (data of an earlier run?); a bench starts from empty nodes: \
                 remove it or choose another directory",
                node.display()
            )));
        }
    }
    Ok(dir)
}

/// Starts K nodes on a loopback net of their own (never the hand-made cluster's), in memory
/// or, with `data`, each under `dir/n{i}` with that fsync policy, and waits until they all
/// see each other.
async fn start_cluster(
    nodes: usize,
    flags: &NodeFlags,
    data: Option<(PathBuf, Fsync)>,
) -> Result<LocalCluster, CliError> {
    let mut builder = LocalCluster::builder()
        .nodes(nodes)
        .loopback_net(LoopbackNet::unique())
        .node_args(flags.to_args());
    // The client is given the same cookie (`connect_native`); none given, both use the default.
    if let Some(cookie) = flags.given_cookie() {
        builder = builder.cookie(cookie);
    }
    if let Some((dir, fsync)) = data {
        // Named explicitly, so the report's policy is the nodes' whatever their default.
        let policy = fsync.flag_value();
        eprintln!(
            "data under {}/n1..n{nodes} (fsync {policy}), kept after the run",
            dir.display()
        );
        builder = builder.data_dirs(dir).node_args(["--fsync", policy]);
    }
    // This executable is a node binary too; `$DYNAMO_NODE_BIN` still wins over it.
    if std::env::var_os(BINARY_ENV).is_none()
        && let Ok(exe) = std::env::current_exe()
    {
        builder = builder.binary(exe);
    }
    eprintln!("starting {nodes} nodes...");
    let mut cluster = builder
        .start()
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(argv: &[&str]) -> Result<BenchArgs, clap::Error> {
        let argv = ["dynamo-node", "bench"]
            .into_iter()
            .chain(argv.iter().copied());
        match Cli::try_parse_from(argv)?.command {
            Command::Bench(args) => Ok(*args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_and_flags_parse() {
        let d = parse(&[]).unwrap();
        assert_eq!(
            (d.workload, d.distribution),
            (Workload::A, Distribution::Zipfian)
        );
        assert_eq!(
            (d.records, d.value_size, d.concurrency, d.nodes),
            (10_000, 100, 64, 3)
        );
        assert_eq!((d.ops, d.duration_secs, d.no_load), (None, None, false));
        let b = parse(&[
            "--workload",
            "w",
            "--distribution",
            "uniform",
            "--ops",
            "5",
            "--node",
            "http://a:1",
            "--node",
            "http://b:2",
            "--no-load",
            "--n",
            "1",
        ])
        .unwrap();
        assert_eq!(
            (b.workload, b.distribution, b.ops),
            (Workload::W, Distribution::Uniform, Some(5))
        );
        assert_eq!(b.nodes_urls, ["http://a:1", "http://b:2"]);
        assert_eq!(b.flags.n, Some(1));
        assert_eq!(
            (d.client, d.transport_secs, d.mode),
            (ClientKind::Http, 0.0, None)
        );
        let native = parse(&["--client", "native", "--transport-secs", "2.5"]).unwrap();
        assert_eq!(
            (native.client, native.transport_secs),
            (ClientKind::Native, 2.5)
        );
        let transport = parse(&["transport", "--concurrency", "8", "--cookie", "c"]).unwrap();
        match transport.mode {
            Some(BenchMode::Transport(t)) => {
                assert_eq!(
                    (t.concurrency, t.payload_bytes, t.duration_secs),
                    (8, 100, 10.0)
                );
                assert_eq!(t.flags.cookie.as_deref(), Some("c"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["--client", "carrier-pigeon"]).is_err());
        assert!(parse(&["--recovery"]).unwrap().recovery);
        assert!(parse(&["--recovery", "--node", "http://a:1"]).is_err());
        assert!(parse(&["--recovery", "--ops", "5"]).is_err());
        assert!(parse(&["--workload", "z"]).is_err());
        assert!(parse(&["--ops", "1", "--duration-secs", "2"]).is_err());
    }

    #[test]
    fn versus_memory_needs_a_data_dir_and_a_plain_workload_run_and_takes_rounds() {
        let data = ["--data-dir", "/tmp/x"];
        assert!(
            parse(&["--versus-memory"]).is_err(),
            "nothing durable to compare"
        );
        assert!(parse(&[&data[..], &["--versus-memory"]].concat()).is_ok());
        for other in [&["--recovery"][..], &["--flood", "2"], &["--plot", "a.svg"]] {
            let argv = [&data[..], &["--versus-memory"], other].concat();
            assert!(parse(&argv).is_err(), "accepted with {other:?}");
        }
        let versus = [&data[..], &["--versus-memory"]].concat();
        assert_eq!(parse(&versus).unwrap().rounds, 1);
        assert_eq!(
            parse(&[&versus[..], &["--rounds", "3"]].concat())
                .unwrap()
                .rounds,
            3
        );
        assert!(
            parse(&[&data[..], &["--rounds", "3"]].concat()).is_err(),
            "rounds of nothing"
        );
        for bad in ["0", "21", "x"] {
            let argv = [&versus[..], &["--rounds", bad]].concat();
            assert!(parse(&argv).is_err(), "accepted --rounds {bad}");
        }
    }

    #[tokio::test]
    async fn bad_settings_are_usage_errors_before_any_node_starts() {
        let mut args = parse(&["--concurrency", "0"]).unwrap();
        assert!(matches!(run(args.clone()).await, Err(CliError::Usage(_))));
        args.concurrency = 1;
        args.nodes = 0;
        assert!(matches!(run(args).await, Err(CliError::Usage(_))));
        let negative = parse(&["--duration-secs=-1", "--node", "http://127.0.0.1:1"]).unwrap();
        assert!(matches!(run(negative).await, Err(CliError::Usage(_))));
        let nobody = parse(&[
            "transport",
            "--concurrency",
            "0",
            "--node",
            "http://127.0.0.1:1",
        ]);
        assert!(matches!(
            run(nobody.unwrap()).await,
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn data_dir_and_fsync_choose_the_started_cluster_s_storage() {
        let memory = parse(&[]).unwrap();
        assert_eq!((&memory.data_dir, memory.fsync), (&None, None));
        assert_eq!(memory.storage().unwrap(), Some(Storage::Memory));
        let disk = parse(&["--data-dir", "/tmp/b", "--fsync", "never"]).unwrap();
        assert_eq!(disk.data_dir.as_deref(), Some(Path::new("/tmp/b")));
        assert_eq!(disk.fsync, Some(Fsync::Never));
        let storage = disk.storage().unwrap();
        assert_eq!(storage, Some(Storage::Disk(Some(Fsync::Never))));
        assert_eq!(storage.unwrap().to_string(), "disk (fsync never)");
        // The nodes' own default, named in the report all the same.
        let default = parse(&["--data-dir", "/tmp/b"]).unwrap();
        assert_eq!(
            default.storage().unwrap(),
            Some(Storage::Disk(Some(Fsync::Always)))
        );
        let recovery = parse(&["--recovery", "--data-dir", "/tmp/b"]).unwrap();
        assert!(recovery.recovery && recovery.data_dir.is_some());
        assert_eq!(
            parse(&["--node", "http://a:1"]).unwrap().storage().unwrap(),
            None,
            "nodes the bench did not start: their metrics tell"
        );
    }

    #[test]
    fn data_dir_and_fsync_are_refused_where_they_change_nothing() {
        use clap::error::ErrorKind;
        let refused: [&[&str]; 5] = [
            &["--data-dir", "/tmp/b", "--node", "http://a:1"],
            &[
                "--data-dir",
                "/tmp/b",
                "--fsync",
                "always",
                "--node",
                "http://a:1",
            ],
            &["--fsync", "never"],
            &["--fsync", "sometimes", "--data-dir", "/tmp/b"],
            &["transport", "--data-dir", "/tmp/b"],
        ];
        for argv in refused {
            let err = parse(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}: {err}");
        }
        let conflict = parse(&["--data-dir", "/tmp/b", "--node", "http://a:1"]).unwrap_err();
        assert_eq!(conflict.kind(), ErrorKind::ArgumentConflict);
        let alone = parse(&["--fsync", "never"]).unwrap_err();
        assert_eq!(alone.kind(), ErrorKind::MissingRequiredArgument);

        // Built without the parser (clap is not the only caller): the same refusals, in words.
        let mut args = parse(&["--node", "http://127.0.0.1:1"]).unwrap();
        args.data_dir = Some("/tmp/b".into());
        let err = args.storage().unwrap_err();
        assert!(
            matches!(&err, CliError::Usage(m) if m.contains("--node")),
            "{err}"
        );
        args.data_dir = None;
        args.fsync = Some(Fsync::Always);
        assert!(matches!(args.storage(), Err(CliError::Usage(_))));
        let mut args = parse(&[]).unwrap();
        args.fsync = Some(Fsync::Never);
        let err = args.storage().unwrap_err();
        assert!(
            matches!(&err, CliError::Usage(m) if m.contains("--fsync needs --data-dir")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_data_dir_holding_an_earlier_run_is_refused_before_any_node_starts() {
        let dir = crate::testing::TempDir::new("bench-data-dir");
        // Absent and empty node directories are fine, and an absent root is made.
        std::fs::create_dir(dir.join("n1")).unwrap();
        let root = dir.join("new");
        assert_eq!(
            prepare_data_dir(&root, 3).unwrap(),
            std::fs::canonicalize(&root).unwrap()
        );
        assert!(prepare_data_dir(dir.path(), 3).unwrap().is_absolute());
        // n4 is not one of the three nodes' directories.
        std::fs::create_dir_all(dir.join("n4/journals")).unwrap();
        assert!(prepare_data_dir(dir.path(), 3).is_ok());

        std::fs::write(dir.join("n2"), b"").unwrap();
        let err = prepare_data_dir(dir.path(), 3).unwrap_err();
        assert!(
            matches!(err, CliError::Usage(_)),
            "a file where a node's directory goes"
        );
        std::fs::remove_file(dir.join("n2")).unwrap();
        std::fs::create_dir_all(dir.join("n2/journals")).unwrap();
        let path = dir.path().to_str().unwrap();
        let args = parse(&["--data-dir", path, "--records", "1", "--ops", "1"]).unwrap();
        match run(args).await {
            Err(CliError::Usage(m)) => {
                assert!(m.contains("n2 is not empty"), "{m}");
                assert!(m.contains("earlier run"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        let file = dir.join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            prepare_data_dir(&file, 1),
            Err(CliError::Usage(_))
        ));
    }
}
