//! Running the node binary once, alone, for commands that must fail (a start on a bad data
//! directory, a bad flag): how it ended and what it printed.

use std::ffi::OsString;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::process::{ExitInfo, ManagedProcess, locate_node_binary};

/// How one run of the node binary ended.
#[derive(Clone, Debug)]
pub struct NodeRun {
    /// How it exited; `None` if it was still running at the deadline (it was killed then).
    pub exit: Option<ExitInfo>,
    /// What it printed, stdout and stderr interleaved, in order.
    pub output: String,
    /// How long it ran, until its exit or the deadline.
    pub elapsed: Duration,
}

impl NodeRun {
    /// Its exit code, if it exited by itself (not by a signal) before the deadline.
    pub fn code(&self) -> Option<i32> {
        self.exit.and_then(|exit| exit.code)
    }

    /// The last non-empty line it printed (the error line of a failed command).
    pub fn last_line(&self) -> &str {
        self.output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }
}

/// Runs the node binary (found as [`super::TestClusterBuilder::binary`] says by default)
/// with `args`, e.g. `["start", "--name", "n1", ...]`, and waits until it exits or `timeout`
/// passes; a process still running then is killed (and dies with the test in any case: see
/// [`ManagedProcess`]). Panics if the binary cannot be found or started.
pub async fn run_node_once<I, S>(args: I, timeout: Duration) -> NodeRun
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let binary =
        locate_node_binary(None).unwrap_or_else(|e| panic!("run_node_once: no binary: {e}"));
    let mut cmd = Command::new(&binary);
    cmd.args(args.into_iter().map(Into::into));
    let log = std::env::temp_dir().join(format!(
        "dynamo-once-{}-{}.log",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&log);
    let started = Instant::now();
    let mut proc = ManagedProcess::spawn("dynamo-node (once)", cmd, &log)
        .unwrap_or_else(|e| panic!("run_node_once: {e}"));
    let exit = proc.wait_until(started + timeout).await;
    let elapsed = started.elapsed();
    if exit.is_none() {
        let _ = proc.kill();
    }
    drop(proc);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    // The first line is the header ManagedProcess writes, naming the command and its
    // arguments: it must not count as something the node said.
    let output = text
        .split_once('\n')
        .map_or("", |(_, rest)| rest)
        .to_owned();
    NodeRun {
        exit,
        output,
        elapsed,
    }
}
