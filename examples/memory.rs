//! Resident memory per key of real node processes: scrape the empty nodes, load records
//! through the HTTP API (the bench's load phase), wait until every replica holds them, and
//! print the memory report (a table, then one JSON line). On a cluster it started, it then
//! leaves the nodes alone for `--idle-secs` and reports the CPU each used at rest, in percent
//! of one core.
//!
//! ```text
//! cargo run --release --example memory -- --records 1000000
//! cargo run --release --example memory -- --node http://127.0.0.2:8001 --node ...
//! cargo run --release --example memory -- --no-load --node ...   # scrape only (gross figures)
//! ```
//!
//! Without `--node` it starts its own 3-node cluster (N = 3: every node holds every key).

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use clap::Parser;
use dynamo_node::bench::memory::{IdleCpu, MemoryReport, sample};
use dynamo_node::bench::{BenchConfig, Distribution, Limit, Workload, run_bench};
use dynamo_node::process::{LocalCluster, LoopbackNet};

/// How long the last replicas may take to receive the loaded records.
const SETTLE: Duration = Duration::from_secs(120);

#[derive(Parser, Debug)]
struct Args {
    /// Records to insert (keys like `user0000000042`)
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Bytes per value
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Concurrent loading clients
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Nodes of the cluster this starts (ignored with --node)
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Measure these (empty) nodes instead of starting a cluster
    #[arg(long = "node", value_name = "URL")]
    urls: Vec<String>,
    /// Only scrape the nodes as they are (no empty baseline, so no net figures)
    #[arg(long, requires = "urls")]
    no_load: bool,
    /// After the load, once the replicas hold every record, watch the started nodes' CPU for
    /// this long while nothing is asked of them (0: skip; not with --node, whose processes
    /// are not known)
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    idle_secs: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let idle = Duration::try_from_secs_f64(args.idle_secs)
        .map_err(|e| format!("--idle-secs {}: {e}", args.idle_secs))?;
    let mut cluster = None;
    // (url, pid) of each node process, when this example started them.
    let mut processes = Vec::new();
    let urls = if args.urls.is_empty() {
        let mut started = LocalCluster::builder()
            .nodes(args.nodes)
            .loopback_net(LoopbackNet::unique())
            .start()
            .await?;
        started.wait_converged(Duration::from_secs(60)).await?;
        let urls: Vec<String> = started.specs().iter().map(|s| s.http_url()).collect();
        for (i, url) in urls.iter().enumerate() {
            if let Some(pid) = started.pid(i + 1)? {
                processes.push((url.clone(), pid));
            }
        }
        cluster = Some(started);
        urls
    } else {
        args.urls.clone()
    };
    let outcome = async {
        let mut report = measure(&args, urls).await?;
        if !idle.is_zero() && !processes.is_empty() {
            eprintln!("watching the idle nodes' CPU for {idle:?}...");
            report.idle_cpu = IdleCpu::measure(&processes, idle).await;
        }
        Ok::<_, Box<dyn Error>>(report)
    }
    .await;
    if let Some(mut cluster) = cluster {
        cluster.stop_all().await?;
    }
    let report = outcome?;
    println!("{report}");
    println!("{}", report.json_line());
    Ok(())
}

async fn measure(args: &Args, urls: Vec<String>) -> Result<MemoryReport, Box<dyn Error>> {
    if args.no_load {
        return Ok(MemoryReport::scrape(&urls, &[]).await?);
    }
    let empty = sample(&urls).await?;
    let config = BenchConfig {
        urls: urls.clone(),
        workload: Workload::C,
        distribution: Distribution::Uniform,
        records: args.records,
        value_size: args.value_size,
        concurrency: args.concurrency,
        limit: Limit::Ops(1),
        load: true,
        seed: 1,
        progress: true,
    };
    // The bench's load phase reports its own progress and duration on stderr.
    run_bench(&config, Arc::new(AtomicBool::new(false))).await?;
    // W = 2 acknowledges before the last replica has the record: wait until no node's key
    // count moves any more.
    let deadline = Instant::now() + SETTLE;
    let mut last = sample(&urls).await?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sample(&urls).await?;
        let settled = now.iter().zip(&last).all(|(n, l)| n.keys == l.keys);
        if settled || Instant::now() > deadline {
            return Ok(MemoryReport::new(&now, &empty));
        }
        last = now;
    }
}
