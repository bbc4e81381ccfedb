//! `dynamo-node cluster` as a black box over fake nodes: this test executable, re-run as a
//! "node" that serves the real HTTP API with a fixed, all-alive membership. It checks the
//! cluster command itself (addresses, convergence wait, crash restarts, Ctrl-C) without the
//! node runtime; `cli_cluster.rs` runs the same against real nodes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dynamo_node::http::HttpClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::{children_of, is_gone, start_cluster_command};

const ARGS_ENV: &str = "CLI_FAKE_NODE_ARGS";
const MEMBERS_ENV: &str = "CLI_FAKE_NODE_MEMBERS";

/// A no-op in a normal run; re-run by the script of `fake_binary`, serves as node `--name`.
#[test]
fn fake_node() {
    let Ok(args) = std::env::var(ARGS_ENV) else {
        return;
    };
    let members = std::env::var(MEMBERS_ENV)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    dynamo_node::testing::FakeNode::serve_from_args(&args, members);
}

fn fake_binary(dir: &Path, members: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("fake-node");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{MEMBERS_ENV}='{members}' {ARGS_ENV}=\"$*\" exec '{}' cli_cluster_fake::fake_node --exact --nocapture --test-threads 1\n",
            std::env::current_exe().unwrap().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// The fake node gets its arguments through the environment (see `fake_binary`).
fn environ(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The script wrapping the fake node forks nothing (`exec`): the child is the node.
fn node_pid(cluster: u32, name: &str) -> Option<u32> {
    children_of(cluster)
        .into_iter()
        .find(|&p| environ(p).contains(&format!("--name {name} ")))
}

async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_prints_addresses_restarts_a_crashed_node_and_stops_on_sigint() {
    let dir = std::env::temp_dir().join(format!("dynamo-cli-fake-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let binary = fake_binary(&dir, "n1 n2 n3");
    let log_dir = dir.join("logs");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dynamo-node"));
    cmd.args(["cluster", "--nodes", "3", "--n", "3", "--binary"])
        .arg(&binary)
        .arg("--log-dir")
        .arg(&log_dir);
    let (mut guard, pid, lines, urls) = start_cluster_command(cmd, Duration::from_secs(60)).await;
    assert_eq!(urls.len(), 3, "{lines:?}");
    for (i, url) in urls.iter().enumerate() {
        assert!(
            url.starts_with(&format!("http://127.0.0.{}:", i + 2)),
            "{url}"
        );
        let health = HttpClient::new(url.clone()).health().await.unwrap();
        assert_eq!(health.node, format!("n{}", i + 1));
    }
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("for the client commands: export DYNAMO_NODE={}", urls[0])),
        "{lines:?}"
    );
    let n1_log = std::fs::read_to_string(log_dir.join("n1.log")).unwrap();
    assert!(
        n1_log.contains(" --n 3\n"),
        "flags passed through: {n1_log}"
    );

    // Crash n2: the cluster starts it again on the same address.
    let n2 = node_pid(pid, "n2").expect("n2 runs under the cluster");
    kill(Pid::from_raw(n2 as i32), Signal::SIGKILL).unwrap();
    eventually("n2 runs again", Duration::from_secs(30), || {
        node_pid(pid, "n2").is_some_and(|p| p != n2)
    })
    .await;
    let n2_client = HttpClient::new(urls[1].clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while n2_client.health().await.is_err() {
        assert!(Instant::now() < deadline, "the new n2 does not serve");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let nodes = children_of(pid);
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    kill(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "a clean stop");
    for node in nodes {
        eventually("the nodes are gone", Duration::from_secs(5), || {
            is_gone(node)
        })
        .await;
    }
    assert!(log_dir.join("n3.log").is_file(), "the log dir is kept");
    std::fs::remove_dir_all(dir).unwrap();
}
