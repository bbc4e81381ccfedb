//! Helpers shared by the tests of `dynamo-node cluster` (real and fake nodes).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// SIGKILLs the cluster command if the test fails midway; its nodes die with it.
/// Kills and reaps the child when the test ends, passed or not.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pids of the children of `pid`, whichever of its threads started them.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return kids;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            kids.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    kids
}

/// Gone, or a zombie waiting for init to reap it.
pub fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Starts `cmd` (a `dynamo-node cluster` command line), reads what it prints up to its
/// "Ctrl-C stops" line within `timeout`, and returns the process guard, its pid, the lines
/// and the nodes' HTTP URLs, in node order.
pub async fn start_cluster_command(
    mut cmd: Command,
    timeout: Duration,
) -> (KillOnDrop, u32, Vec<String>, Vec<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn dynamo-node cluster");
    let pid = child.id();
    let stdout = child.stdout.take().expect("a piped stdout");
    let guard = KillOnDrop(child);
    // The reader stops at the last line and closes the pipe: the cluster's later output
    // must not make it fail.
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let last = line.starts_with("Ctrl-C stops");
            lines.push(line);
            if last {
                break;
            }
        }
        lines
    });
    let lines = tokio::time::timeout(timeout, lines)
        .await
        .expect("the cluster printed its addresses in time")
        .expect("the reader thread");
    assert!(
        lines.iter().any(|l| l.starts_with("Ctrl-C stops")),
        "`dynamo-node cluster` exited before it was up (its stderr is above): {lines:?}"
    );
    let urls: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with('n'))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    (guard, pid, lines, urls)
}
