//! The CI benchmark smoke run: the real binary starts its own cluster, loads, runs 400
//! operations, and prints a JSON line with the figures.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn bench_runs_against_a_cluster_it_starts_and_prints_a_json_line() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dynamo-node"))
        .args([
            "bench",
            "--records",
            "200",
            "--ops",
            "400",
            "--concurrency",
            "4",
        ])
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
    let line = stdout
        .lines()
        .find(|l| l.starts_with("{\"bench\":"))
        .unwrap_or_else(|| panic!("no JSON line in:\n{stdout}"));
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
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
