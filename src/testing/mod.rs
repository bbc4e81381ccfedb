//! `TestCluster`: node processes for tests (yours and ours).
//!
//! ```no_run
//! # async fn demo() {
//! use dynamo_node::testing::TestCluster;
//! let mut cluster = TestCluster::start(3).await; // n1..n3, converged
//! let ctx = cluster.client(1).put(b"k", "v".into(), None, None).await.unwrap();
//! cluster.kill(2);
//! cluster.restart(2).await; // up again and seen alive by the others
//! # }
//! ```
//!
//! Nodes are addressed by 1-based index (`n1` is `1`). Every helper panics with a clear
//! message instead of returning an error; [`TestCluster::processes`] gives the fallible
//! [`LocalCluster`] underneath. On drop every node is killed and partition rules are removed;
//! if the test is panicking, the tail of each node's log is printed to stderr and the log
//! directory is kept.
//!
//! With [`TestClusterBuilder::durable`] every node keeps its data in a directory of its own
//! (`--data-dir`), which outlives [`TestCluster::restart`], [`TestCluster::kill`] and
//! [`TestCluster::kill_all`] and is removed with the cluster, also when the test fails.
//! [`run_node_once`] runs the binary alone, for start-ups that must fail.
//!
//! Every cluster lives in a loopback net of its own ([`LoopbackNet::unique`], node `i` on
//! `127.a.b.(i+1)`), so that [`TestCluster::partition`] in one test never cuts the nodes of
//! another test running in parallel, in this test binary or in another one.
//!
//! Beside the cluster, the pieces tests build with: [`TempDir`], a scratch directory removed
//! at the end; [`LoneReplica`], one in-memory replica for stand-in services behind the real
//! HTTP server; [`FakeNode`], the HTTP API over a fixed membership, for testing process
//! management without the node runtime.

mod fake;
mod lone;
mod once;
mod temp;

pub use fake::FakeNode;
pub use lone::LoneReplica;
pub use once::{NodeRun, run_node_once};
pub use temp::TempDir;

use std::ffi::OsString;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, stream};

use crate::core::ids::NodeId;
use crate::core::membership::Status;
use crate::core::ring::Ring;
use crate::http::HttpClient;
use crate::model::MemberInfo;
use crate::process::{LocalCluster, LocalClusterBuilder, LoopbackNet, ProcessError, ProcessStatus};

/// Gossip interval of test nodes unless the test sets `--gossip-interval-ms` itself: fast
/// convergence without touching the failure-detection timeouts.
pub const TEST_GOSSIP_INTERVAL_MS: u64 = 200;
/// Timeout of the requests that poll a node's views.
const QUICK_TIMEOUT: Duration = Duration::from_secs(2);
/// Log lines of each node printed when a test fails.
const PANIC_TAIL_LINES: usize = 40;

/// Settings of a [`TestCluster`].
#[derive(Clone, Debug)]
pub struct TestClusterBuilder {
    nodes: usize,
    args: Vec<OsString>,
    processes: LocalClusterBuilder,
    converge_timeout: Duration,
}

impl TestClusterBuilder {
    /// Number of nodes (default 3).
    pub fn nodes(mut self, k: usize) -> Self {
        self.nodes = k;
        self
    }

    /// Flags for every node's `start`, e.g. `["--n", "3", "--w", "2", "--dead-after-ms", "3000"]`.
    pub fn node_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Flags of node `i` alone, after the cluster's (which they must not repeat), from its
    /// first start on; e.g. each node's own TLS certificate.
    pub fn own_node_args<I, S>(mut self, i: usize, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.processes = self.processes.own_node_args(i, args);
        self
    }

    /// Fast failure detection for fault tests: gossip every 100 ms, suspect after 1 s of
    /// silence, dead after 3 s.
    pub fn fast_failure_detection(self) -> Self {
        self.node_args([
            "--gossip-interval-ms",
            "100",
            "--suspect-after-ms",
            "1000",
            "--dead-after-ms",
            "3000",
        ])
    }

    /// The node executable (default: `$DYNAMO_NODE_BIN`, else `dynamo-node` next to the test
    /// executable or in its parent directory).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.processes = self.processes.binary(path);
        self
    }

    /// `RUST_LOG` of the nodes (default: the test's, else the node's own default filter).
    pub fn rust_log(mut self, filter: impl Into<String>) -> Self {
        self.processes = self.processes.rust_log(filter);
        self
    }

    /// Where node logs go (default: a temporary directory, removed unless the test fails).
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.processes = self.processes.log_dir(dir);
        self
    }

    /// Durable nodes: node `i` runs with `--data-dir` on a fresh temporary directory of its
    /// own (see [`TestCluster::data_dir`]), kept across restarts and removed when the cluster
    /// is dropped, after its nodes are killed, also on panic.
    pub fn durable(mut self) -> Self {
        self.processes = self.processes.temp_data_dirs();
        self
    }

    /// Like [`Self::durable`] with the directories under `dir` (`dir/n{i}`), never removed.
    pub fn data_dirs(mut self, dir: impl Into<PathBuf>) -> Self {
        self.processes = self.processes.data_dirs(dir);
        self
    }

    /// How long the nodes may take to all see each other alive (default 60 s).
    pub fn converge_timeout(mut self, timeout: Duration) -> Self {
        self.converge_timeout = timeout;
        self
    }

    /// Starts the nodes and waits until every one sees all of them alive.
    pub async fn try_start(self) -> Result<TestCluster, ProcessError> {
        let mut args = self.args;
        if !args.iter().any(|a| a == "--gossip-interval-ms") {
            args.extend([
                "--gossip-interval-ms".into(),
                TEST_GOSSIP_INTERVAL_MS.to_string().into(),
            ]);
        }
        let processes = self
            .processes
            .nodes(self.nodes)
            .node_args(args)
            .start()
            .await?;
        let mut cluster = TestCluster {
            processes,
            converge_timeout: self.converge_timeout,
        };
        cluster
            .processes
            .wait_converged(cluster.converge_timeout)
            .await?;
        Ok(cluster)
    }

    /// Like [`Self::try_start`], panicking with the reason (and the node's log) on failure.
    pub async fn start(self) -> TestCluster {
        match self.try_start().await {
            Ok(cluster) => cluster,
            Err(e) => panic!("TestCluster did not start: {e}"),
        }
    }
}

/// K `dynamo-node` processes on this machine, converged; see the module docs.
#[derive(Debug)]
pub struct TestCluster {
    processes: LocalCluster,
    converge_timeout: Duration,
}

impl TestCluster {
    /// A builder: 3 nodes in a loopback net of their own, gossip every
    /// [`TEST_GOSSIP_INTERVAL_MS`], other settings default.
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder {
            nodes: 3,
            args: Vec::new(),
            processes: LocalCluster::builder().loopback_net(LoopbackNet::unique()),
            converge_timeout: Duration::from_secs(60),
        }
    }

    /// `k` nodes with the builder's defaults, converged.
    pub async fn start(k: usize) -> TestCluster {
        TestCluster::builder().nodes(k).start().await
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    /// Never true (a cluster has at least one node).
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// A client of node `i`'s HTTP API.
    pub fn client(&self, i: usize) -> HttpClient {
        HttpClient::new(self.url(i))
    }

    /// Node `i`'s HTTP base URL.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.http_addr(i))
    }

    /// Node `i`'s HTTP address.
    pub fn http_addr(&self, i: usize) -> SocketAddr {
        self.spec(i).http_addr
    }

    /// Node `i`'s cluster address.
    pub fn cluster_addr(&self, i: usize) -> SocketAddr {
        self.spec(i).cluster_addr
    }

    /// Node `i`'s name (`n{i}`).
    pub fn name(&self, i: usize) -> &str {
        &self.spec(i).name
    }

    /// What node `i`'s process is doing.
    pub fn status(&mut self, i: usize) -> ProcessStatus {
        let status = self.processes.status(i);
        expect(status, "status of", i)
    }

    /// SIGKILL node `i` (a crash); it stays down until [`Self::restart`].
    pub fn kill(&mut self, i: usize) {
        let killed = self.processes.kill(i);
        expect(killed, "kill", i);
    }

    /// SIGKILL every node at the same moment (a power loss of the whole cluster); they stay
    /// down until [`Self::restart_all`].
    pub fn kill_all(&mut self) {
        if let Err(e) = self.processes.kill_all() {
            panic!("TestCluster: cannot kill every node: {e}");
        }
    }

    /// Starts every node again at once (killing those that run), with their names, addresses,
    /// flags and data directories; returns once they all see each other alive.
    pub async fn restart_all(&mut self) {
        if let Err(e) = self.processes.restart_all().await {
            panic!("TestCluster: cannot restart every node: {e}");
        }
        self.wait_converged().await;
    }

    /// Node `i`'s data directory; panics unless the cluster is [durable](TestClusterBuilder::durable).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        match expect(self.processes.data_dir(i), "find the data directory of", i) {
            Some(dir) => dir,
            None => panic!("TestCluster: node {i} keeps no data directory (not durable)"),
        }
    }

    /// SIGTERM node `i` and wait for it to exit (SIGKILL after 5 s).
    pub async fn stop(&mut self, i: usize) {
        let stopped = self.processes.stop(i).await;
        expect(stopped, "stop", i);
    }

    /// Starts node `i` again (killing it first if it runs), with its name, addresses, flags
    /// and data directory (without its data unless [durable](TestClusterBuilder::durable));
    /// returns once the running nodes all see it alive.
    pub async fn restart(&mut self, i: usize) {
        let restarted = self.processes.restart(i).await;
        expect(restarted, "restart", i);
        self.wait_converged().await;
    }

    /// Like [`Self::restart`] with `args` as node `i`'s own flags (after the cluster's, which
    /// they must not repeat), from this start on.
    pub async fn restart_with_args<I, S>(&mut self, i: usize, args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        expect(self.processes.set_own_args(i, args), "set the flags of", i);
        self.restart(i).await;
    }

    /// SIGSTOP node `i`: it stops answering but keeps its connections (a silent peer).
    pub fn pause(&mut self, i: usize) {
        let paused = self.processes.pause(i);
        expect(paused, "pause", i);
    }

    /// SIGCONT node `i` after [`Self::pause`].
    pub fn resume(&mut self, i: usize) {
        let resumed = self.processes.resume(i);
        expect(resumed, "resume", i);
    }

    /// Cuts the cluster into `groups` of 1-based node indices, e.g. `&[&[1], &[2, 3]]`: nodes
    /// in different groups exchange no packet until [`Self::heal`]. Every node must be in
    /// exactly one group. Panics (failing the test, never skipping it) if iptables is missing
    /// or may not be used.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        if let Err(e) = self.processes.partition(groups) {
            panic!("TestCluster: cannot partition {groups:?}: {e}");
        }
    }

    /// Cuts exactly the links between the given pairs of nodes, e.g. `&[(1, 4)]`: those
    /// two exchange no packet until [`Self::heal`], while each still reaches every other
    /// node. Replaces any partition in force. Panics like [`Self::partition`].
    pub fn cut_links(&mut self, pairs: &[(usize, usize)]) {
        if let Err(e) = self.processes.cut_links(pairs) {
            panic!("TestCluster: cannot cut {pairs:?}: {e}");
        }
    }

    /// Ends the partition; nodes find each other again by themselves (see
    /// [`Self::wait_converged`]).
    pub fn heal(&mut self) {
        if let Err(e) = self.processes.heal() {
            panic!("TestCluster: cannot heal: {e}");
        }
    }

    /// The key's preference list as 1-based node indices, owners first, then fallbacks: the
    /// ring every node builds while all of `n1..nK` are members, assuming they run with the
    /// default `--vnodes`.
    pub fn preference(&self, key: &[u8]) -> Vec<usize> {
        let names = (1..=self.len()).map(|i| NodeId::new(format!("n{i}")));
        let ring = Ring::with_default_vnodes(names).expect("n1..nK make a ring");
        ring.preference_list(key)
            .expect("the ring has nodes")
            .map(|node| index_of(node.as_str()))
            .collect()
    }

    /// The first key `{prefix}{i}` (i < 10,000) whose first `owners.len()` preferred nodes are
    /// exactly `owners` (1-based, any order), for tests that cut a key's owners off.
    pub fn key_owned_by(&self, prefix: &str, owners: &[usize]) -> String {
        let mut wanted = owners.to_vec();
        wanted.sort_unstable();
        (0..10_000)
            .map(|i| format!("{prefix}{i}"))
            .find(|key| {
                let mut first: Vec<usize> = self
                    .preference(key.as_bytes())
                    .into_iter()
                    .take(wanted.len())
                    .collect();
                first.sort_unstable();
                first == wanted
            })
            .unwrap_or_else(|| panic!("no key {prefix}* is owned by exactly {owners:?}"))
    }

    /// What node `observer` says about node `node` (`None`: no answer, or it does not know it).
    /// Never ask a paused node: the request would wait for its client timeout.
    pub async fn member_seen_by(&self, observer: usize, node: usize) -> Option<MemberInfo> {
        let members = self.quick_client(observer).members().await.ok()?;
        let name = self.name(node);
        members.into_iter().find(|m| m.node == name)
    }

    /// Waits until each of `observers` sees `node` with `status`; panics naming the last
    /// view otherwise.
    pub async fn wait_status(
        &self,
        observers: &[usize],
        node: usize,
        status: Status,
        timeout: Duration,
    ) {
        for &observer in observers {
            let what = format!("n{observer} sees n{node} {status}");
            wait_until(timeout, &what, || async {
                self.member_seen_by(observer, node)
                    .await
                    .is_some_and(|m| m.status == status)
            })
            .await;
        }
    }

    /// The sum of node `i`'s `/metrics` samples named `name` (all label sets), e.g.
    /// `dynamo_hints_pending`; `None` if it does not answer or has no such sample.
    pub async fn metric(&self, i: usize, name: &str) -> Option<f64> {
        let text = self.quick_client(i).metrics().await.ok()?;
        crate::http::metric_sum(&text, name, |_| true)
    }

    /// Writes every `(key, value)` of `keys` blind with `?w=`, through the nodes in turn and
    /// a few at a time; panics on the first write that fails.
    pub async fn put_all(&self, keys: &[(String, Bytes)], w: Option<usize>) {
        let writes: Vec<(usize, Result<_, _>)> = stream::iter(keys.iter().enumerate())
            .map(|(i, (key, value))| {
                let client = self.client(1 + i % self.len());
                async move { (i, client.put(key.as_bytes(), value.clone(), None, w).await) }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (i, written) in writes {
            written.unwrap_or_else(|e| panic!("put {} at w={w:?}: {e}", keys[i].0));
        }
    }

    /// Whether node `i` stores a live version of `key` with `value` itself (its
    /// `/admin/local`, where hints do not count).
    pub async fn stores(&self, i: usize, key: &[u8], value: &Bytes) -> bool {
        stores_on(&self.client(i), key, value).await
    }

    /// The positions in `keys` of the keys whose value node `i` does not store itself (see
    /// [`Self::stores`]), sorted.
    pub async fn missing_on(&self, i: usize, keys: &[(String, Bytes)]) -> Vec<usize> {
        let client = &self.client(i);
        let held: Vec<(usize, bool)> = stream::iter(keys.iter().enumerate())
            .map(|(at, (key, value))| async move {
                (at, stores_on(client, key.as_bytes(), value).await)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut missing: Vec<usize> = held
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(at, _)| at)
            .collect();
        missing.sort_unstable();
        missing
    }

    /// Waits until node `i` stores every `(key, value)` of `keys` itself (see
    /// [`Self::missing_on`]), asking again only for what it still missed; panics after
    /// `timeout`, naming how many it misses and the first of them.
    pub async fn wait_all_held(&self, i: usize, keys: &[(String, Bytes)], timeout: Duration) {
        let started = Instant::now();
        let mut pending: Vec<(String, Bytes)> = keys.to_vec();
        loop {
            let missing = self.missing_on(i, &pending).await;
            pending = missing.into_iter().map(|at| pending[at].clone()).collect();
            if pending.is_empty() {
                return;
            }
            if started.elapsed() >= timeout {
                let first: Vec<&str> = pending.iter().take(5).map(|(k, _)| k.as_str()).collect();
                panic!(
                    "after {} ms n{i} still misses {} of {} keys, e.g. {first:?}",
                    started.elapsed().as_millis(),
                    pending.len(),
                    keys.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads every key of `keys` with `?r=`, through the nodes of `via` in turn, and panics
    /// unless each answers exactly its one value. A read that fails (a replica missing its
    /// timeout on busy cores) is tried again for up to 20 s; a wrong answer fails at once.
    pub async fn assert_all_read(&self, keys: &[(String, Bytes)], via: &[usize], r: Option<usize>) {
        let reads: Vec<(usize, usize, Result<_, _>)> = stream::iter(keys.iter().enumerate())
            .map(|(i, (key, _))| {
                let node = via[i % via.len()];
                let client = self.client(node);
                async move {
                    let until = Instant::now() + Duration::from_secs(20);
                    loop {
                        match client.get(key.as_bytes(), r).await {
                            Err(_) if Instant::now() < until => {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            answer => return (i, node, answer),
                        }
                    }
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (i, node, read) in reads {
            let (key, value) = &keys[i];
            let read = read.unwrap_or_else(|e| panic!("get {key} at r={r:?} through n{node}: {e}"));
            assert_eq!(read.values(), vec![value.clone()], "{key} through n{node}");
        }
    }

    /// A client that gives up soon, for polling views.
    fn quick_client(&self, i: usize) -> HttpClient {
        HttpClient::with_timeout(self.url(i), QUICK_TIMEOUT)
    }

    /// Waits until every running node sees every running node alive.
    pub async fn wait_converged(&mut self) {
        if let Err(e) = self.processes.wait_converged(self.converge_timeout).await {
            panic!("{e}");
        }
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        expect(self.processes.log_tail(i, lines), "read the log of", i)
    }

    /// The process manager underneath, for fallible or finer control.
    pub fn processes(&mut self) -> &mut LocalCluster {
        &mut self.processes
    }

    fn spec(&self, i: usize) -> &crate::process::NodeSpec {
        expect(self.processes.spec(i), "address", i)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // The nodes' own words are usually the fastest way to see why a test failed.
        self.processes.keep_logs();
        let mut report = format!(
            "\n--- TestCluster: the test panicked; node logs are kept in {} ---\n",
            self.processes.log_dir().display()
        );
        for spec in self.processes.specs().to_vec() {
            let status = self
                .processes
                .status(spec.index)
                .map_or_else(|e| e.to_string(), |s| s.to_string());
            let tail = self
                .processes
                .log_tail(spec.index, PANIC_TAIL_LINES)
                .unwrap_or_default();
            report.push_str(&format!(
                "--- {} ({status}), last {PANIC_TAIL_LINES} lines ---\n{tail}\n",
                spec.name
            ));
        }
        eprintln!("{report}");
    }
}

/// Whether the node behind `client` stores a live version of `key` with `value` itself.
async fn stores_on(client: &HttpClient, key: &[u8], value: &Bytes) -> bool {
    let versions = client.local(key).await;
    versions.is_ok_and(|v| v.iter().any(|v| v.value.as_ref() == Some(value)))
}

/// Polls `check` every 50 ms until it returns true; panics naming `what` if `timeout` passes
/// first. For conditions such as "n3 sees n1 dead" or "every replica holds the key".
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        if check().await {
            return;
        }
        if started.elapsed() >= timeout {
            panic!(
                "timed out after {} ms ({attempts} checks) waiting until {what}",
                started.elapsed().as_millis()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The index of node `nI`.
fn index_of(name: &str) -> usize {
    name.strip_prefix('n')
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("TestCluster: {name:?} is not a node name n1..nK"))
}

fn expect<T>(result: Result<T, ProcessError>, what: &str, i: usize) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("TestCluster: cannot {what} node {i}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn wait_until_returns_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        wait_until(Duration::from_secs(5), "the third call", || async {
            calls.fetch_add(1, Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting until pigs fly")]
    async fn wait_until_panics_with_what_it_waited_for() {
        wait_until(Duration::from_millis(120), "pigs fly", || async { false }).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_test_cluster_of_fake_nodes_converges_and_survives_kill_restart_pause() {
        use crate::process::testutil::{fake_binary, scratch};
        let dir = scratch("testcluster");
        let mut cluster = TestCluster::builder()
            .nodes(3)
            .binary(fake_binary(&dir, &["n1", "n2", "n3"]))
            .log_dir(dir.join("logs"))
            .node_args(["--n", "3"])
            .start()
            .await;
        assert_eq!(cluster.len(), 3);
        assert_eq!(cluster.name(2), "n2");
        assert_eq!(cluster.url(2), format!("http://{}", cluster.http_addr(2)));
        assert_eq!(cluster.client(3).health().await.unwrap().node, "n3");
        let log = cluster.log_tail(1, 50);
        assert!(
            log.contains("--n 3 --gossip-interval-ms 200"),
            "default gossip added: {log}"
        );

        cluster.kill(2);
        assert!(!cluster.status(2).is_alive());
        assert!(cluster.client(2).health().await.is_err());
        cluster.restart(2).await;
        assert_eq!(cluster.status(2), ProcessStatus::Running);
        assert!(cluster.client(2).health().await.is_ok());

        cluster.pause(3);
        assert_eq!(cluster.status(3), ProcessStatus::Paused);
        cluster.resume(3);
        cluster.wait_converged().await;
        cluster.stop(1).await;
        assert!(!cluster.status(1).is_alive());
        drop(cluster);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_panicking_test_keeps_the_logs_and_kills_the_nodes() {
        use crate::process::testutil::{exists, fake_binary, scratch};
        let dir = scratch("testcluster-panic");
        let binary = fake_binary(&dir, &["n1"]);
        let pid = std::sync::Arc::new(AtomicU32::new(0));
        let seen = pid.clone();
        let marker = dir.join("log-dir");
        let unwound = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let mut cluster = TestCluster::builder().nodes(1).binary(binary).start().await;
                seen.store(
                    cluster.processes().pid(1).unwrap().unwrap(),
                    Ordering::SeqCst,
                );
                let log_dir = cluster.processes().log_dir().to_path_buf();
                std::fs::write(marker, log_dir.display().to_string()).unwrap();
                panic!("the test failed");
            })
        })
        .join();
        assert!(unwound.is_err());
        let pid = pid.load(Ordering::SeqCst);
        assert!(!exists(pid), "node {pid} survived the panic");
        let log_dir = std::fs::read_to_string(dir.join("log-dir")).unwrap();
        assert!(
            std::path::Path::new(&log_dir).join("n1.log").is_file(),
            "the temporary logs are kept for a failed test"
        );
        std::fs::remove_dir_all(log_dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
