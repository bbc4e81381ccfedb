//! `dynamo-node cluster`: K local node processes, restarted when they crash.

use std::path::PathBuf;
use std::pin::pin;
use std::time::{Duration, Instant};

use clap::Args;

use super::{CliError, NodeFlags, force_exit_on_second_signal, init_tracing, shutdown_signal};
use crate::config::Fsync;
use crate::process::{BINARY_ENV, LocalCluster, MAX_NODES, ProcessStatus, random_cookie};

/// `dynamo-node cluster`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct ClusterArgs {
    /// Number of nodes, n1..nK; node i listens on 127.0.0.(i+1)
    #[arg(long, value_name = "K", default_value_t = 3)]
    pub nodes: usize,
    /// Passed to every node.
    #[command(flatten)]
    pub flags: NodeFlags,
    /// Directory of the node logs n1.log.. [default: a new temporary directory, kept]
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Node i keeps its data in DIR/n{i} (kept across restarts and runs) [default: in memory]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// With --data-dir: the nodes' `start --fsync` (always: a write counts after an fsync that
    /// covers it; never: once the OS has it) [default: always]
    #[arg(long, value_enum, value_name = "WHEN", requires = "data_dir")]
    pub fsync: Option<Fsync>,
    /// Node executable [default: $DYNAMO_NODE_BIN, else this executable]
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// How long the nodes may take to all see each other alive
    #[arg(long, value_name = "T", default_value_t = 60_000)]
    pub converge_timeout_ms: u64,
}

/// When to restart a crashed node: exponential backoff from `base` up to `max`, forgotten
/// once a node has run for `stable_after`.
#[derive(Clone, Debug)]
pub struct RestartBackoff {
    base: Duration,
    max: Duration,
    stable_after: Duration,
    failures: u32,
    started_at: Instant,
}

impl RestartBackoff {
    /// 0.5 s, doubling up to 30 s; a node that ran 30 s starts over at 0.5 s.
    pub fn new(now: Instant) -> Self {
        RestartBackoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
            failures: 0,
            started_at: now,
        }
    }

    /// The node was (re)spawned at `now`.
    pub fn started(&mut self, now: Instant) {
        self.started_at = now;
    }

    /// The node crashed at `now`: how long to wait before restarting it.
    pub fn crashed(&mut self, now: Instant) -> Duration {
        if now.saturating_duration_since(self.started_at) >= self.stable_after {
            self.failures = 0;
        }
        let factor = 1u32.checked_shl(self.failures.min(16)).unwrap_or(u32::MAX);
        self.failures = self.failures.saturating_add(1);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Starts the cluster, waits for convergence, prints the addresses, and supervises it.
pub async fn run(args: ClusterArgs) -> Result<(), CliError> {
    if args.nodes == 0 || args.nodes > MAX_NODES {
        return Err(CliError::Usage(format!(
            "--nodes must be between 1 and {MAX_NODES}, got {}",
            args.nodes
        )));
    }
    args.flags.validate()?;
    init_tracing();
    let mut stop = pin!(shutdown_signal());

    // The nodes get the cookie through their environment: the one given, else a fresh one.
    let cookie = args.flags.given_cookie().unwrap_or_else(random_cookie);
    let mut builder = LocalCluster::builder()
        .nodes(args.nodes)
        .node_args(args.flags.to_args())
        .cookie(cookie)
        .keep_logs(true);
    // This executable is a node binary too; `$DYNAMO_NODE_BIN` still wins over it.
    let binary = args.binary.clone().or_else(|| {
        std::env::var_os(BINARY_ENV)
            .is_none()
            .then(|| std::env::current_exe().ok())
            .flatten()
    });
    if let Some(binary) = binary {
        builder = builder.binary(binary);
    }
    if let Some(dir) = &args.log_dir {
        builder = builder.log_dir(dir);
    }
    if let Some(dir) = &args.data_dir {
        builder = builder.data_dirs(dir);
    }
    if let Some(fsync) = args.fsync {
        builder = builder.node_args(["--fsync", fsync.flag_value()]);
    }
    let converge = Duration::from_millis(args.converge_timeout_ms);
    let started = async {
        let mut cluster = builder.start().await?;
        cluster.wait_converged(converge).await?;
        Ok::<_, crate::process::ProcessError>(cluster)
    };
    // A stop signal while booting drops the half-built cluster, which kills its nodes.
    let mut cluster = tokio::select! {
        signal = &mut stop => {
            eprintln!("{signal} while starting: nodes stopped");
            return Ok(());
        }
        started = started => started.map_err(|e| CliError::Failed(e.to_string()))?,
    };

    super::emit(&format!("{}\n", describe(&cluster)));
    supervise(&mut cluster, stop.as_mut()).await;
    force_exit_on_second_signal();
    let stopped = cluster.stop_all().await;
    super::emit(&format!(
        "cluster stopped; logs in {}\n",
        cluster.log_dir().display()
    ));
    stopped.map_err(|e| CliError::Failed(e.to_string()))
}

/// The lines printed once the cluster is up.
fn describe(cluster: &LocalCluster) -> String {
    let mut out = String::new();
    for spec in cluster.specs() {
        out.push_str(&format!(
            "{}  {}  (cluster {})\n",
            spec.name,
            spec.http_url(),
            spec.cluster_addr
        ));
    }
    out.push_str(&format!(
        "{} nodes up, every one sees {} alive; logs in {}\n",
        cluster.len(),
        cluster.len(),
        cluster.log_dir().display()
    ));
    if let Some(first) = cluster.specs().first() {
        out.push_str(&format!(
            "for the client commands: export {}={}\n",
            super::NODE_ENV,
            first.http_url()
        ));
    }
    out.push_str("Ctrl-C stops the cluster.");
    out
}

/// Restarts nodes that exit without being asked, until a stop signal.
async fn supervise(
    cluster: &mut LocalCluster,
    mut stop: std::pin::Pin<&mut impl std::future::Future<Output = &'static str>>,
) {
    let now = Instant::now();
    let mut backoff = vec![RestartBackoff::new(now); cluster.len()];
    let mut due: Vec<Option<Instant>> = vec![None; cluster.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            signal = &mut stop => {
                tracing::info!(signal, "stopping the cluster");
                return;
            }
            _ = tick.tick() => {}
        }
        for pos in 0..cluster.len() {
            let index = pos + 1;
            let name = cluster.specs()[pos].name.clone();
            let now = Instant::now();
            if due[pos].is_none()
                && let Ok(ProcessStatus::Exited(exit)) = cluster.status(index)
                && !exit.requested
            {
                let delay = backoff[pos].crashed(now);
                let tail = cluster.log_tail(index, 5).unwrap_or_default();
                tracing::warn!(node = %name, %exit, ?delay, "node crashed; restarting after the delay; its last log lines:\n{tail}");
                due[pos] = Some(now + delay);
            }
            if due[pos].is_some_and(|at| at <= now) {
                due[pos] = None;
                backoff[pos].started(now);
                tokio::select! {
                    signal = &mut stop => {
                        tracing::info!(signal, "stopping the cluster");
                        return;
                    }
                    restarted = cluster.restart(index) => match restarted {
                        Ok(()) => tracing::info!(node = %name, "node restarted"),
                        // An early exit shows up as a crash at the next tick.
                        Err(e) => tracing::warn!(node = %name, "restart failed: {e}"),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_after_a_stable_run() {
        let t0 = Instant::now();
        let mut b = RestartBackoff::new(t0);
        let ms = |d: Duration| d.as_millis();
        let mut delays = Vec::new();
        let mut t = t0;
        for _ in 0..9 {
            t += Duration::from_secs(1);
            let d = b.crashed(t);
            delays.push(ms(d));
            b.started(t + d);
        }
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        // After 30 s of running, a crash starts over.
        let later = t + Duration::from_secs(31 + 30);
        assert_eq!(ms(b.crashed(later)), 500);
        b.started(later);
        assert_eq!(ms(b.crashed(later)), 1000, "a crash right away doubles");
        for _ in 0..100 {
            b.crashed(later);
        }
        assert_eq!(ms(b.crashed(later)), 30000, "no overflow");
    }

    #[test]
    fn cluster_flags_parse_with_node_flags_passed_through() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "dynamo-node",
            "cluster",
            "--nodes",
            "5",
            "--n",
            "3",
            "--w",
            "1",
            "--gossip-interval-ms",
            "200",
            "--log-dir",
            "/tmp/x",
        ])
        .unwrap();
        let crate::cli::Command::Cluster(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.nodes, 5);
        assert_eq!(args.log_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(args.converge_timeout_ms, 60_000);
        assert_eq!(
            args.flags.to_args(),
            ["--n", "3", "--w", "1", "--gossip-interval-ms", "200"]
        );
    }

    #[test]
    fn fsync_is_taken_only_with_a_data_dir() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            crate::cli::Cli::try_parse_from([&["dynamo-node", "cluster"][..], args].concat())
        };
        assert!(
            parse(&["--fsync", "never"]).is_err(),
            "nothing to fsync in memory"
        );
        let cli = parse(&["--data-dir", "/tmp/d", "--fsync", "never"]).unwrap();
        let crate::cli::Command::Cluster(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.fsync, Some(Fsync::Never));
        assert_eq!(Fsync::Never.flag_value(), "never");
        assert_eq!(Fsync::Always.flag_value(), "always");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_supervisor_restarts_a_crashed_node_but_not_a_stopped_one() {
        use crate::process::testutil::{fake_local_cluster, scratch};
        let dir = scratch("supervise");
        let mut cluster = fake_local_cluster(&dir, &["n1", "n2", "n3"]).await;
        let crashed = cluster.pid(2).unwrap().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(crashed as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        cluster.stop(3).await.unwrap();
        let log = cluster.log_path(2).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            // Two starts of n2 in its log: the supervisor restarted it.
            while std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("=== [unix")
                .count()
                < 2
            {
                assert!(Instant::now() < deadline, "n2 was not restarted");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = tx.send(());
        });
        let stop = pin!(async {
            let _ = rx.await;
            "test"
        });
        supervise(&mut cluster, stop).await;
        watcher.await.unwrap();
        assert_eq!(cluster.starts(2).unwrap(), 2);
        let pid = cluster.pid(2).unwrap();
        assert!(pid.is_some_and(|p| p != crashed), "a new n2 runs");
        assert_eq!(
            cluster.starts(3).unwrap(),
            1,
            "a requested stop is no crash"
        );
        assert!(!cluster.status(3).unwrap().is_alive());
        drop(cluster);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
