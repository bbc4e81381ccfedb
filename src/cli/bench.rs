//! `dynamo-node bench`: a YCSB-style benchmark against `--node`s or a cluster it starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;

use super::{CliError, NodeFlags, shutdown_signal};
use crate::bench::{BenchConfig, Distribution, Limit, Workload, run_bench};
use crate::process::{BINARY_ENV, LocalCluster, LoopbackNet, MAX_NODES};

/// `dynamo-node bench`.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct BenchArgs {
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
    /// Passed to every node of the started cluster.
    #[command(flatten)]
    pub flags: NodeFlags,
}

/// Runs the benchmark and prints the table and the JSON line on stdout.
pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    let limit = match (args.ops, args.duration_secs) {
        (Some(ops), _) => Limit::Ops(ops),
        (None, secs) => {
            let secs = secs.unwrap_or(10.0);
            let duration = Duration::try_from_secs_f64(secs)
                .map_err(|e| CliError::Usage(format!("--duration-secs {secs}: {e}")))?;
            Limit::Duration(duration)
        }
    };
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
        let started = start_cluster(&args).await?;
        config.urls = started.specs().iter().map(|s| s.http_url()).collect();
        cluster = Some(started);
    }
    config
        .validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;

    let stop = Arc::new(AtomicBool::new(false));
    let signal = shutdown_signal();
    let flag = stop.clone();
    let watcher = tokio::spawn(async move {
        let name = signal.await;
        eprintln!("{name}: ending the run");
        flag.store(true, Ordering::Relaxed);
    });
    let summary = run_bench(&config, stop).await;
    watcher.abort();
    if let Some(mut cluster) = cluster
        && let Err(e) = cluster.stop_all().await
    {
        eprintln!("warning: stopping the cluster: {e}");
    }
    let summary = summary.map_err(|e| CliError::Usage(e.to_string()))?;
    super::emit(&format!("{}{}\n", summary.table(), summary.json_line()));
    Ok(())
}

/// Starts K nodes on a loopback net of their own (never the hand-made cluster's) and waits
/// until they all see each other.
async fn start_cluster(args: &BenchArgs) -> Result<LocalCluster, CliError> {
    let mut builder = LocalCluster::builder()
        .nodes(args.nodes)
        .loopback_net(LoopbackNet::unique())
        .node_args(args.flags.to_args());
    // This executable is a node binary too; `$DYNAMO_NODE_BIN` still wins over it.
    if std::env::var_os(BINARY_ENV).is_none()
        && let Ok(exe) = std::env::current_exe()
    {
        builder = builder.binary(exe);
    }
    eprintln!("starting {} nodes...", args.nodes);
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
            Command::Bench(args) => Ok(args),
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
        assert!(parse(&["--workload", "z"]).is_err());
        assert!(parse(&["--ops", "1", "--duration-secs", "2"]).is_err());
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
    }
}
