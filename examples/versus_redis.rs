//! dynamo-node beside a Redis cluster of the same shape, in one run.
//!
//! Starts a Redis cluster on loopback (3 masters + 3 replicas, free ports, a scratch
//! directory), runs `redis-benchmark --cluster` with SET and GET, stops it, then runs
//! `dynamo-node bench --client native` with workloads W (quorum inserts), A and C (reads) on
//! a 3-node cluster the bench starts, with the same clients, value size and key count, and
//! prints both and the ratios: our quorum inserts against SET, our reads against GET. Redis
//! replicates asynchronously and keeps no versions, so it does less per write; it is what a
//! user weighs us against all the same.
//!
//! ```text
//! cargo build --release && cargo run --release --example versus_redis
//! cargo run --release --example versus_redis -- --duration-secs 5 --redis-requests 500000
//! ```
//!
//! It installs nothing: it needs `redis-server`, `redis-cli` and `redis-benchmark` on PATH
//! (Debian: `apt-get install redis-server redis-tools`) and the `dynamo-node` binary built
//! beside this example (`target/release/`, or `$DYNAMO_NODE_BIN`). Every process it starts is
//! stopped when it ends, fails or is interrupted.

use std::collections::BTreeMap;
use std::error::Error;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use dynamo_node::process::{ManagedProcess, locate_node_binary};
use serde_json::{Value, json};
use tokio::process::Command;

const REDIS_PROGRAMS: [&str; 3] = ["redis-server", "redis-cli", "redis-benchmark"];
/// A Redis cluster node talks to its peers on its port + 10000.
const BUS_OFFSET: u16 = 10_000;
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[derive(Parser, Debug)]
struct Args {
    /// Requests of each redis-benchmark test (SET, then GET)
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    redis_requests: u64,
    /// Length of each of our three measured runs
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    duration_secs: f64,
    /// Concurrent clients, on both sides
    #[arg(long, value_name = "C", default_value_t = 64)]
    clients: usize,
    /// Bytes per value, on both sides
    #[arg(long, value_name = "B", default_value_t = 100)]
    value_size: usize,
    /// Distinct keys, on both sides (redis-benchmark -r, our --records)
    #[arg(long, value_name = "K", default_value_t = 10_000)]
    keys: u64,
}

type Failure = Box<dyn Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let missing: Vec<&str> = REDIS_PROGRAMS
        .into_iter()
        .filter(|p| on_path(p).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "versus_redis needs {} on PATH, and it installs nothing itself: missing {}. \
             On Debian or Ubuntu: apt-get install redis-server redis-tools",
            REDIS_PROGRAMS.join(", "),
            missing.join(", ")
        );
        return ExitCode::from(2);
    }
    let node_binary = match locate_node_binary(None) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("{e}\n(for this example: cargo build --release)");
            return ExitCode::from(2);
        }
    };
    // Whatever is running when the signal comes is dropped, and with it every process
    // started so far (each is killed on drop) and the scratch directory.
    let outcome = tokio::select! {
        outcome = compare(&args, &node_binary) => outcome,
        name = interrupted() => Err(format!("{name}: stopped every process started").into()),
    };
    match outcome {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("versus_redis: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn interrupted() -> &'static str {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        // Without a SIGTERM handler, Ctrl-C still ends the run cleanly.
        let _ = tokio::signal::ctrl_c().await;
        return "Ctrl-C";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

/// The whole comparison: Redis first (stopped before ours starts), then our three runs.
async fn compare(args: &Args, node_binary: &Path) -> Result<String, Failure> {
    let redis = {
        let scratch = Scratch::new()?;
        let mut cluster = RedisCluster::start(&scratch).await?;
        let figures = redis_benchmark(args, cluster.entry_port()).await;
        cluster.stop().await;
        figures?
    };
    let mut ours = BTreeMap::new();
    for workload in ["w", "a", "c"] {
        ours.insert(workload, our_bench(args, node_binary, workload).await?);
    }
    Ok(report(args, &redis, &ours))
}

/// A scratch directory, removed with everything in it when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, Failure> {
        let path = std::env::temp_dir().join(format!("versus-redis-{}", std::process::id()));
        // Left by an earlier process with our pid: nothing of ours is in it.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Six `redis-server`s in cluster mode: three masters, a replica of each.
struct RedisCluster {
    ports: Vec<u16>,
    servers: Vec<ManagedProcess>,
}

impl RedisCluster {
    async fn start(scratch: &Scratch) -> Result<RedisCluster, Failure> {
        let ports = free_cluster_ports(6)?;
        let mut servers = Vec::new();
        for &port in &ports {
            let dir = scratch.0.join(port.to_string());
            std::fs::create_dir_all(&dir)?;
            let mut cmd = std::process::Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&dir);
            let log = dir.join("redis.log");
            servers.push(ManagedProcess::spawn(format!("redis-{port}"), cmd, &log)?);
        }
        let cluster = RedisCluster { ports, servers };
        for &port in &cluster.ports {
            wait_for(
                "redis-server to answer PING",
                Duration::from_secs(20),
                || async move {
                    redis_cli(port, &["ping"])
                        .await
                        .is_ok_and(|out| out.trim() == "PONG")
                },
            )
            .await?;
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        eprintln!("creating a Redis cluster on {}...", addrs.join(" "));
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create").args(&addrs).args([
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ]);
        run(create, "redis-cli --cluster create").await?;
        let ports = cluster.ports.clone();
        wait_for(
            "every Redis node to report cluster_state:ok",
            Duration::from_secs(60),
            || {
                let ports = ports.clone();
                async move {
                    for port in ports {
                        match redis_cli(port, &["cluster", "info"]).await {
                            Ok(info) if info.contains("cluster_state:ok") => {}
                            _ => return false,
                        }
                    }
                    true
                }
            },
        )
        .await?;
        // Every master has its replica attached before the benchmark writes.
        let ports = cluster.ports.clone();
        wait_for(
            "three replicas to be in sync",
            Duration::from_secs(60),
            || {
                let ports = ports.clone();
                async move {
                    let mut synced = 0;
                    for port in ports {
                        if let Ok(info) = redis_cli(port, &["info", "replication"]).await {
                            synced += usize::from(info.contains("master_link_status:up"));
                        }
                    }
                    synced == 3
                }
            },
        )
        .await?;
        Ok(cluster)
    }

    fn entry_port(&self) -> u16 {
        self.ports[0]
    }

    async fn stop(&mut self) {
        for server in &mut self.servers {
            if let Err(e) = server.stop(Duration::from_secs(5)).await {
                eprintln!("warning: stopping {}: {e}", server.name());
            }
        }
    }
}

/// `count` ports free on 127.0.0.1 whose cluster bus port (+10000) is free too.
fn free_cluster_ports(count: usize) -> Result<Vec<u16>, Failure> {
    // Held until all are chosen, so they differ; released before the servers bind them.
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..1000 {
        if ports.len() == count {
            return Ok(ports);
        }
        let listener = TcpListener::bind((LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        held.push(listener);
        let Some(bus) = port.checked_add(BUS_OFFSET) else {
            continue;
        };
        if let Ok(bus_listener) = TcpListener::bind((LOCALHOST, bus)) {
            held.push(bus_listener);
            ports.push(port);
        }
    }
    Err("no free ports for the Redis cluster".into())
}

/// Polls `check` until it holds, failing after `limit`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<(), Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn redis_cli(port: u16, args: &[&str]) -> Result<String, Failure> {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    run(cmd, "redis-cli").await
}

/// Runs `cmd` to its end (killed if this future is dropped) and answers with its stdout;
/// a failure carries its stderr.
async fn run(mut cmd: Command, what: &str) -> Result<String, Failure> {
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(stdout)
}

/// One redis-benchmark test's figures.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct RedisFigures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// SET and GET through `redis-benchmark --cluster`.
async fn redis_benchmark(
    args: &Args,
    port: u16,
) -> Result<BTreeMap<String, RedisFigures>, Failure> {
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["--cluster", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", &args.clients.to_string()])
        .args(["-d", &args.value_size.to_string()])
        .args(["-r", &args.keys.to_string()])
        .args(["-n", &args.redis_requests.to_string()])
        .args(["-t", "set,get", "--csv"]);
    eprintln!(
        "redis-benchmark: {} SETs, then {} GETs...",
        args.redis_requests, args.redis_requests
    );
    let out = run(cmd, "redis-benchmark").await?;
    let figures = parse_redis_csv(&out);
    for test in ["SET", "GET"] {
        if !figures.contains_key(test) {
            return Err(format!("no {test} line in redis-benchmark's output:\n{out}").into());
        }
    }
    Ok(figures)
}

/// The rows of `redis-benchmark --csv`, by test name: the header names the columns.
fn parse_redis_csv(out: &str) -> BTreeMap<String, RedisFigures> {
    let cells = |line: &str| -> Vec<String> {
        line.split(',')
            .map(|c| c.trim().trim_matches('"').to_string())
            .collect()
    };
    let mut rows = out.lines().filter(|l| l.starts_with('"'));
    let Some(header) = rows.next().map(cells) else {
        return BTreeMap::new();
    };
    let column = |name: &str| header.iter().position(|h| h == name);
    let (Some(rps), Some(p50), Some(p99)) = (
        column("rps"),
        column("p50_latency_ms"),
        column("p99_latency_ms"),
    ) else {
        return BTreeMap::new();
    };
    rows.map(cells)
        .filter_map(|row| {
            let number = |i: usize| row.get(i)?.parse::<f64>().ok();
            let figures = RedisFigures {
                rps: number(rps)?,
                p50_ms: number(p50)?,
                p99_ms: number(p99)?,
            };
            Some((row.first()?.clone(), figures))
        })
        .collect()
}

/// `dynamo-node bench --client native --workload W` on a cluster it starts; its JSON line.
async fn our_bench(args: &Args, binary: &Path, workload: &str) -> Result<Value, Failure> {
    let mut cmd = Command::new(binary);
    cmd.args(["bench", "--client", "native", "--workload", workload])
        .args(["--distribution", "uniform"])
        .args(["--concurrency", &args.clients.to_string()])
        .args(["--value-size", &args.value_size.to_string()])
        .args(["--records", &args.keys.to_string()])
        .args(["--duration-secs", &args.duration_secs.to_string()])
        // Our own nodes too: no leftover from a shell that set it.
        .env_remove("DYNAMO_NODE");
    eprintln!("dynamo-node bench: workload {workload}...");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Progress lines go straight to the terminal.
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        use tokio::io::AsyncReadExt;
        pipe.read_to_string(&mut stdout).await?;
    }
    let status = child.wait().await?;
    if !status.success() {
        return Err(format!(
            "dynamo-node bench --workload {workload} failed ({status}):\n{stdout}"
        )
        .into());
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("{\"bench\":"))
        .ok_or_else(|| format!("no JSON line in dynamo-node bench's output:\n{stdout}"))?;
    Ok(serde_json::from_str(line)?)
}

/// The program `name` in a directory of PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn ms(us: &Value) -> String {
    us.as_f64()
        .map_or("-".to_string(), |us| format!("{:.2}", us / 1000.0))
}

fn ratio(ours: f64, theirs: f64) -> f64 {
    if theirs > 0.0 {
        (ours / theirs * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// Both sides, the ratios, and one JSON line.
fn report(
    args: &Args,
    redis: &BTreeMap<String, RedisFigures>,
    ours: &BTreeMap<&str, Value>,
) -> String {
    let mut out = String::new();
    let version = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let v = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
            Some(v.to_string())
        })
        .unwrap_or_else(|| "?".to_string());
    out.push_str(&format!(
        "== Redis {version} cluster, 3 masters + 3 replicas (asynchronous) on loopback ==\n\
         redis-benchmark --cluster -c {} -d {} -r {} -n {} -t set,get\n",
        args.clients, args.value_size, args.keys, args.redis_requests
    ));
    for test in ["SET", "GET"] {
        let Some(f) = redis.get(test) else {
            continue;
        };
        out.push_str(&format!(
            "{test:<24} {:>10.0} ops/s   p50 {:.2} ms   p99 {:.2} ms\n",
            f.rps, f.p50_ms, f.p99_ms
        ));
    }
    out.push_str(&format!(
        "== dynamo-node, 3 nodes (N=3 W=2 R=2) on loopback, native client ==\n\
         bench --client native --distribution uniform --concurrency {} --value-size {} \
         --records {} --duration-secs {}\n",
        args.clients, args.value_size, args.keys, args.duration_secs
    ));
    let names = [
        ("w", "W (quorum inserts)"),
        ("a", "A (50% read, 50% update)"),
        ("c", "C (reads)"),
    ];
    for (workload, name) in names {
        let Some(json) = ours.get(workload) else {
            continue;
        };
        let mut line = format!(
            "{name:<24} {:>10.0} ops/s",
            json["ops_per_sec"].as_f64().unwrap_or(0.0)
        );
        if let Some(kinds) = json["latency_us"].as_object() {
            for (kind, l) in kinds {
                line.push_str(&format!(
                    "   {kind} p50 {} ms p99 {} ms",
                    ms(&l["p50_us"]),
                    ms(&l["p99_us"])
                ));
            }
        }
        let cpu = |field: &str| {
            json[field]
                .as_f64()
                .map_or("n/a".to_string(), |us| format!("{us:.1} µs"))
        };
        line.push_str(&format!(
            "   node CPU/op {}, bench CPU/op {}",
            cpu("node_cpu_us_per_op"),
            cpu("bench_cpu_us_per_op")
        ));
        let errors = json["errors"].as_object().map_or(0, |e| e.len());
        if errors > 0 {
            line.push_str(&format!("   errors: {}", json["errors"]));
        }
        out.push_str(&line);
        out.push('\n');
    }
    let rate = |w: &str| {
        ours.get(w)
            .and_then(|j| j["ops_per_sec"].as_f64())
            .unwrap_or(0.0)
    };
    let set = redis.get("SET").map_or(0.0, |f| f.rps);
    let get = redis.get("GET").map_or(0.0, |f| f.rps);
    let inserts_vs_set = ratio(rate("w"), set);
    let reads_vs_get = ratio(rate("c"), get);
    out.push_str(&format!(
        "== side by side ==\n\
         quorum inserts (W) / Redis SET: {:.0} / {set:.0} = {inserts_vs_set:.2}x\n\
         reads (C) / Redis GET:          {:.0} / {get:.0} = {reads_vs_get:.2}x\n",
        rate("w"),
        rate("c"),
    ));
    let redis_json: BTreeMap<&String, Value> = redis
        .iter()
        .map(|(test, f)| {
            (
                test,
                json!({"ops_per_sec": f.rps, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms}),
            )
        })
        .collect();
    let line = json!({
        "versus": "redis",
        "redis_version": version,
        "clients": args.clients,
        "value_size": args.value_size,
        "keys": args.keys,
        "redis": redis_json,
        "dynamo": ours,
        "inserts_vs_set": inserts_vs_set,
        "reads_vs_get": reads_vs_get,
    });
    out.push_str(&line.to_string());
    out
}
