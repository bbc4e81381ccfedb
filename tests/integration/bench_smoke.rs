//! The CI benchmark smoke runs: the real binary starts its own cluster (in memory or durable),
//! loads, runs 400 operations over HTTP or through the native client, and prints a JSON line
//! with the figures; `bench transport` pings a node it starts.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Runs `dynamo-node bench ARGS` to the end and returns stdout and its JSON line.
fn run_bench(args: &[&str]) -> (String, serde_json::Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dynamo-node"))
        .arg("bench")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "bench did not finish in time; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let json = json_lines(&stdout)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no JSON line in:\n{stdout}"));
    (stdout.to_string(), json)
}

/// Every JSON line a bench printed, in order.
fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| l.starts_with("{\"bench\":"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The workload every smoke run uses (A, the default): 200 records, 400 operations, 4
/// clients; what [`check_workload_a`] expects.
const TINY_WORKLOAD: [&str; 6] = ["--records", "200", "--ops", "400", "--concurrency", "4"];

/// Checks a 400-operation workload A run that went without errors.
fn check_workload_a(stdout: &str, json: &serde_json::Value) {
    let line = json.to_string();
    assert_eq!(json["ops"], 400, "{line}");
    assert_eq!(json["workload"], "a");
    assert_eq!(json["nodes"], 3);
    assert_eq!(json["errors"], serde_json::json!({}), "{line}");
    assert_eq!(json["load_errors"], 0, "{line}");
    assert!(json["ops_per_sec"].as_f64().unwrap() > 0.0, "{line}");
    let latency = &json["latency_us"];
    let ok = latency["read"]["ops"].as_u64().unwrap_or(0)
        + latency["update"]["ops"].as_u64().unwrap_or(0);
    assert_eq!(ok, 400, "{line}");
    assert!(
        latency["read"]["p99_us"].as_u64().unwrap() >= latency["read"]["p50_us"].as_u64().unwrap()
    );
    assert!(stdout.contains("p99.9"), "no table in:\n{stdout}");
}

#[test]
fn bench_runs_against_a_cluster_it_starts_and_prints_a_json_line() {
    let (stdout, json) = run_bench(&TINY_WORKLOAD);
    assert_eq!(json["bench"], "ycsb-http");
    assert_eq!(json["storage"], "memory");
    assert!(stdout.contains("storage: memory"), "{stdout}");
    // Nodes in memory make no fsyncs and have no disk to report.
    assert!(
        json.get("fsyncs").is_none() && json.get("memory").is_none(),
        "{json}"
    );
    check_workload_a(&stdout, &json);
    // It started the nodes, so it knows their pids and counts their CPU time.
    for field in ["node_cpu_us_per_op", "bench_cpu_us_per_op"] {
        assert!(json[field].as_f64().unwrap() > 0.0, "{field}: {json}");
    }
    assert!(stdout.contains("node CPU/op "), "{stdout}");
}

#[test]
fn bench_on_a_durable_cluster_names_its_storage_counts_fsyncs_and_reports_disk_per_key() {
    let dir = dynamo_node::testing::TempDir::new("bench-smoke-disk");
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let durable = ["--data-dir", data, "--fsync", "always"];
    let (stdout, json) = run_bench(&[&durable[..], &TINY_WORKLOAD].concat());
    check_workload_a(&stdout, &json);
    assert_eq!(json["storage"], "disk (fsync always)", "{json}");
    assert!(stdout.contains("storage: disk (fsync always)"), "{stdout}");
    // Every acknowledged update waited for an fsync on W nodes.
    assert!(json["fsyncs"].as_u64().unwrap() > 0, "{json}");
    assert!(json["fsyncs_per_sec"].as_f64().unwrap() > 0.0, "{json}");
    assert!(stdout.contains("fsyncs/s"), "{stdout}");
    let nodes = json["memory"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{json}");
    for node in nodes {
        assert_eq!(node["durable"], true, "{node}");
        assert!(node["disk_per_key"].as_f64().unwrap() > 0.0, "{node}");
        assert!(node["gross_per_key"].as_f64().unwrap() > 0.0, "{node}");
    }
    assert_eq!(json["memory"]["baseline"], "raw key+value bytes");
    assert!(stdout.contains("disk B/key"), "{stdout}");
    for i in 1..=3 {
        let node_dir = dir.join(format!("data/n{i}"));
        assert!(
            node_dir.join("version").exists(),
            "no database in {node_dir:?}"
        );
    }

    // The data is kept, so a second run on it is refused instead of measuring on top of it.
    let again = Command::new(env!("CARGO_BIN_EXE_dynamo-node"))
        .args([
            "bench",
            "--data-dir",
            data,
            "--records",
            "10",
            "--ops",
            "10",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("n1 is not empty"), "{stderr}");
}

/// Runs `bench --versus-memory` under `--fsync never` on tiny sizes, with `extra` arguments,
/// in a data directory of its own: stdout, its JSON lines in order, and the directory (kept
/// until the returned guard drops).
fn run_versus(
    extra: &[&str],
) -> (
    String,
    Vec<serde_json::Value>,
    dynamo_node::testing::TempDir,
) {
    let dir = dynamo_node::testing::TempDir::new("bench-smoke-versus");
    let data = dir.join("data");
    let mut args = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--fsync",
        "never",
        "--versus-memory",
    ];
    args.extend_from_slice(&TINY_WORKLOAD);
    args.extend_from_slice(extra);
    let (stdout, first) = run_bench(&args);
    let runs = json_lines(&stdout);
    assert_eq!(first, runs[0]);
    (stdout, runs, dir)
}

#[test]
fn bench_versus_memory_runs_the_workload_in_memory_then_on_disk_and_prints_the_ratio() {
    let (stdout, runs, dir) = run_versus(&[]);
    assert_eq!(
        runs.len(),
        3,
        "memory run, durable run, comparison:\n{stdout}"
    );
    assert_eq!(runs[0]["storage"], "memory", "the memory run comes first");
    check_workload_a(&stdout, &runs[0]);
    assert_eq!(runs[1]["storage"], "disk (fsync never)");
    check_workload_a(&stdout, &runs[1]);
    let versus = &runs[2];
    assert_eq!(versus["bench"], "versus-memory");
    assert_eq!(versus["storage"], "disk (fsync never)");
    let ratio = versus["ops_ratio"].as_f64().unwrap();
    let expected =
        runs[1]["ops_per_sec"].as_f64().unwrap() / runs[0]["ops_per_sec"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-9, "{versus}");
    assert!(versus["node_cpu_ratio"].as_f64().unwrap() > 0.0, "{versus}");
    assert!(stdout.contains("against memory"), "{stdout}");
    assert_eq!(versus["ratio_goal"], 0.8, "{versus}");
    assert!(versus["meets_goals"].is_boolean(), "{versus}");
    assert!(
        dir.join("data/n1/version").exists(),
        "the durable run used the directory"
    );
}

#[test]
fn bench_versus_memory_in_rounds_takes_turns_and_judges_the_medians() {
    let (stdout, runs, dir) = run_versus(&["--rounds", "2"]);
    let storages: Vec<&str> = runs
        .iter()
        .map(|r| r["storage"].as_str().unwrap())
        .collect();
    let disk = "disk (fsync never)";
    assert_eq!(
        storages,
        [
            "memory", disk, disk, // round 1: memory first, then its comparison
            disk, "memory", disk, // round 2: disk first
            disk, // the medians
        ],
        "{stdout}"
    );
    for run in [&runs[0], &runs[1], &runs[3], &runs[4]] {
        check_workload_a(&stdout, run);
    }
    let (first, second) = (&runs[2], &runs[5]);
    assert_eq!(first["bench"], "versus-memory");
    assert_eq!(second["bench"], "versus-memory");
    let ratio = |durable: &serde_json::Value, memory: &serde_json::Value| {
        durable["ops_per_sec"].as_f64().unwrap() / memory["ops_per_sec"].as_f64().unwrap()
    };
    assert!((first["ops_ratio"].as_f64().unwrap() - ratio(&runs[1], &runs[0])).abs() < 1e-9);
    assert!((second["ops_ratio"].as_f64().unwrap() - ratio(&runs[3], &runs[4])).abs() < 1e-9);
    let judged = &runs[6];
    assert_eq!(judged["bench"], "versus-memory-rounds", "{judged}");
    assert_eq!(
        judged["ops_ratios"],
        serde_json::json!([first["ops_ratio"], second["ops_ratio"]])
    );
    let median =
        (first["ops_ratio"].as_f64().unwrap() + second["ops_ratio"].as_f64().unwrap()) / 2.0;
    assert!(
        (judged["median_ops_ratio"].as_f64().unwrap() - median).abs() < 1e-9,
        "{judged}"
    );
    assert!(judged["meets_goals"].is_boolean(), "{judged}");
    assert!(stdout.contains("over 2 rounds"), "{stdout}");
    for round in ["round1", "round2"] {
        assert!(
            dir.join("data").join(round).join("n1/version").exists(),
            "the durable run of {round} used its own directory"
        );
    }
}

#[test]
fn a_stop_signal_during_rounds_ends_the_run_under_way_and_starts_no_other() {
    let dir = dynamo_node::testing::TempDir::new("bench-smoke-rounds-stop");
    let data = dir.join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dynamo-node"))
        .args([
            "bench",
            "--data-dir",
            data.to_str().unwrap(),
            "--fsync",
            "never",
        ])
        .args(["--versus-memory", "--rounds", "3", "--records", "200"])
        .args(["--duration-secs", "120", "--concurrency", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed on every way out of this test, the panics included.
    struct Reaper(std::process::Child);
    impl Drop for Reaper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut child = Reaper(child);
    // The first run's measured phase reports its progress every 5 s (stderr is no terminal).
    let (seen, running) = std::sync::mpsc::channel();
    let lines = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.starts_with("run:") {
                let _ = seen.send(());
            }
            all.push(line);
        }
        all.join("\n")
    });
    running
        .recv_timeout(Duration::from_secs(60))
        .expect("the first run's measured phase never reported progress");
    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the bench did not end after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = lines.join().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{status:?}\n{stdout}\n{stderr}");
    let runs = json_lines(&stdout);
    assert_eq!(runs.len(), 1, "only the interrupted memory run:\n{stdout}");
    assert_eq!(runs[0]["storage"], "memory");
    assert!(
        stderr.contains("stopped before both runs of round 1 were made"),
        "{stderr}"
    );
    assert!(
        !data.join("round1/n1/version").exists(),
        "no durable cluster was started after the stop"
    );
}

#[test]
fn bench_through_the_native_client_compares_writes_with_the_raw_call_rate() {
    let native = ["--client", "native", "--transport-secs", "0.5"];
    let (stdout, json) = run_bench(&[&native[..], &TINY_WORKLOAD].concat());
    assert_eq!(json["bench"], "ycsb-native");
    check_workload_a(&stdout, &json);
    let transport = &json["transport"];
    assert_eq!(transport["bench"], "transport", "{json}");
    assert_eq!(transport["errors"], 0, "{json}");
    assert!(transport["calls"].as_u64().unwrap() > 0, "{json}");
    assert!(json["writes_per_sec"].as_f64().unwrap() > 0.0, "{json}");
    assert!(stdout.contains("x the raw remote-call rate"), "{stdout}");
}

#[test]
fn bench_transport_pings_a_node_it_starts_with_the_cookie_it_was_given() {
    // The node and the client must both take the cookie: a node on the default one would
    // refuse the client's handshake.
    let (stdout, json) = run_bench(&[
        "transport",
        "--duration-secs",
        "0.5",
        "--concurrency",
        "4",
        "--cookie",
        "bench-s3cret",
    ]);
    assert_eq!(json["bench"], "transport", "{stdout}");
    assert_eq!(json["concurrency"], 4);
    assert_eq!(json["errors"], 0, "{stdout}");
    assert!(json["calls"].as_u64().unwrap() > 0, "{stdout}");
    assert!(json["p99_us"].as_u64().unwrap() >= json["p50_us"].as_u64().unwrap());
    assert!(stdout.contains("calls/s"), "{stdout}");
}

#[test]
fn bench_recovery_kills_and_restarts_a_node_and_compares_the_windows() {
    let dir = dynamo_node::testing::TempDir::new("bench-smoke-plot");
    let plot = dir.join("recovery.svg");
    let (stdout, json) = run_bench(&[
        "--plot",
        plot.to_str().unwrap(),
        "--recovery",
        "--client",
        "native",
        "--nodes",
        "4",
        "--duration-secs",
        "1",
        "--records",
        "200",
        "--concurrency",
        "4",
    ]);
    assert_eq!(json["bench"], "recovery", "{stdout}");
    assert_eq!(json["node"], "n4");
    assert_eq!(json["steady"]["errors"], serde_json::json!({}), "{json}");
    for window in ["steady", "outage", "recovery"] {
        assert!(
            json[window]["ops"].as_u64().unwrap() > 0,
            "{window}: {json}"
        );
    }
    assert!(json["p99_ratio"].as_f64().unwrap() > 0.0, "{json}");
    // The restarted node came back empty and took writes (and repairs) again.
    assert!(
        json["repair"]["restarted_node_keys"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    assert!(stdout.contains("x steady p99"), "{stdout}");
    // The picture marks the three windows and the two faults between them.
    let svg = std::fs::read_to_string(&plot).unwrap();
    for label in ["steady", "outage", "recovery", "kill n4", "restart n4"] {
        assert!(
            svg.contains(&format!("\n{label}\n")),
            "no {label:?} in {}",
            plot.display()
        );
    }
    assert!(
        json["recovery"]["node_cpu_us_per_op"].as_f64().unwrap() > 0.0,
        "{json}"
    );
}
