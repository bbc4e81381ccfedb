//! A local cluster: K `dynamo-node start` processes, each on its own loopback address.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::child::{ExitInfo, ManagedProcess, ProcessStatus};
use super::firewall::{Firewall, cut_pairs};
use super::ports::{LoopbackNet, pick_free_ports};
use super::{ProcessError, locate_node_binary};
use crate::config::WORKER_THREADS_ENV;

/// Most nodes a local cluster can have: one per loopback address 127.a.b.2..=127.a.b.254.
pub const MAX_NODES: usize = 253;
/// Spawns of a booting node whose ports were taken between picking and binding.
const BOOT_ATTEMPTS: usize = 3;
/// Log lines quoted in errors.
const TAIL_LINES: usize = 30;

/// Where one node of a local cluster lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// 1-based index: node `i` is named `n{i}`.
    pub index: usize,
    /// Node name.
    pub name: String,
    /// Its own loopback address, `127.a.b.(index + 1)` in the cluster's [`LoopbackNet`].
    pub ip: Ipv4Addr,
    /// Cluster (ractor_cluster) address, on `ip`.
    pub cluster_addr: SocketAddr,
    /// HTTP address, on `ip`.
    pub http_addr: SocketAddr,
}

impl NodeSpec {
    fn new(net: LoopbackNet, index: usize, ports: &[u16]) -> NodeSpec {
        let ip = net.node_ip(index);
        NodeSpec {
            index,
            name: format!("n{index}"),
            ip,
            cluster_addr: SocketAddr::from((ip, ports[0])),
            http_addr: SocketAddr::from((ip, ports[1])),
        }
    }

    /// Base URL of its HTTP API, e.g. `http://127.0.0.2:41234`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }
}

/// Names a node of a cluster: a 1-based index (`2`) or a name (`"n2"`).
pub trait NodeRef {
    /// Its 0-based position among `nodes`, if there.
    fn position(&self, nodes: &[NodeSpec]) -> Option<usize>;
    /// How to name it in an error.
    fn describe(&self) -> String;
}

impl NodeRef for usize {
    fn position(&self, nodes: &[NodeSpec]) -> Option<usize> {
        (1..=nodes.len()).contains(self).then(|| self - 1)
    }
    fn describe(&self) -> String {
        format!("#{self}")
    }
}

impl NodeRef for &str {
    fn position(&self, nodes: &[NodeSpec]) -> Option<usize> {
        nodes.iter().position(|n| n.name == *self)
    }
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl NodeRef for String {
    fn position(&self, nodes: &[NodeSpec]) -> Option<usize> {
        self.as_str().position(nodes)
    }
    fn describe(&self) -> String {
        self.as_str().describe()
    }
}

impl NodeRef for &String {
    fn position(&self, nodes: &[NodeSpec]) -> Option<usize> {
        self.as_str().position(nodes)
    }
    fn describe(&self) -> String {
        self.as_str().describe()
    }
}

/// Settings of a [`LocalCluster`] before it starts.
#[derive(Clone, Debug)]
pub struct LocalClusterBuilder {
    nodes: usize,
    net: LoopbackNet,
    node_args: Vec<OsString>,
    binary: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    keep_logs: bool,
    rust_log: Option<String>,
    stop_grace: Duration,
    ready_timeout: Duration,
    data: DataDirs,
    own_args: Vec<(usize, Vec<OsString>)>,
    cookie: Option<ChildCookie>,
}

/// The cluster cookie handed to every node through its environment, never on its command
/// line (which every local user can read); not printed by `Debug`.
#[derive(Clone)]
struct ChildCookie(String);

impl std::fmt::Debug for ChildCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildCookie(***)")
    }
}

/// A fresh random cluster cookie (128 bits, hex) for a local cluster.
pub fn random_cookie() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// Where the nodes of a [`LocalCluster`] keep their data.
#[derive(Clone, Debug, Default)]
enum DataDirs {
    /// In memory (no `--data-dir`): a restarted node comes back empty.
    #[default]
    Memory,
    /// Under this directory, kept after the cluster.
    Under(PathBuf),
    /// Under a fresh temporary directory, removed with the cluster.
    Temporary,
}

impl Default for LocalClusterBuilder {
    fn default() -> Self {
        LocalClusterBuilder {
            nodes: 3,
            net: LoopbackNet::DEFAULT,
            node_args: Vec::new(),
            binary: None,
            log_dir: None,
            keep_logs: false,
            rust_log: None,
            stop_grace: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(30),
            data: DataDirs::Memory,
            own_args: Vec::new(),
            cookie: None,
        }
    }
}

impl LocalClusterBuilder {
    /// Number of nodes (default 3, at most [`MAX_NODES`]).
    pub fn nodes(mut self, k: usize) -> Self {
        self.nodes = k;
        self
    }

    /// The loopback net of the nodes (default [`LoopbackNet::DEFAULT`], `127.0.0.(i+1)`).
    /// Clusters that may be partitioned at the same time need different nets.
    pub fn loopback_net(mut self, net: LoopbackNet) -> Self {
        self.net = net;
        self
    }

    /// Flags appended to every node's `start` command, e.g. `["--n", "3", "--w", "2"]`.
    pub fn node_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.node_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Flags of node `index` (1-based) alone, after the cluster's (which they must not
    /// repeat), from its first start on; e.g. each node's own certificate.
    pub fn own_node_args<I, S>(mut self, index: usize, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.own_args
            .push((index, args.into_iter().map(Into::into).collect()));
        self
    }

    /// The node executable (default: see [`locate_node_binary`]).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Directory for the per-node logs `n1.log..`; created if missing, never deleted.
    /// Default: a fresh temporary directory, deleted on drop unless [`Self::keep_logs`].
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// Keeps the temporary log directory after drop.
    pub fn keep_logs(mut self, keep: bool) -> Self {
        self.keep_logs = keep;
        self
    }

    /// The cluster cookie, handed to every node in `$DYNAMO_COOKIE` (never as an argument).
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = Some(ChildCookie(cookie.into()));
        self
    }

    /// `RUST_LOG` of the nodes (default: ours, else the node's own default filter).
    pub fn rust_log(mut self, filter: impl Into<String>) -> Self {
        self.rust_log = Some(filter.into());
        self
    }

    /// How long `stop` waits after SIGTERM before SIGKILL (default 5 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// How long a starting node may take to serve HTTP (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Every node keeps its data in `dir/n{i}` (`--data-dir`, created by the node), so that a
    /// restart finds it again. The directories are never deleted.
    pub fn data_dirs(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data = DataDirs::Under(dir.into());
        self
    }

    /// Like [`Self::data_dirs`] under a fresh temporary directory, which is removed when the
    /// cluster is dropped (after its nodes are killed), also when a test fails.
    pub fn temp_data_dirs(mut self) -> Self {
        self.data = DataDirs::Temporary;
        self
    }

    /// Starts node 1, waits until it serves HTTP, then starts the others (seeded with node 1)
    /// and waits until each serves HTTP. Membership convergence is not awaited here.
    pub async fn start(self) -> Result<LocalCluster, ProcessError> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(ProcessError::Size(self.nodes));
        }
        let binary = locate_node_binary(self.binary.as_deref())?;
        let (log_dir, owned) = match self.log_dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| ProcessError::io(format!("creating {}", dir.display()), e))?;
                (dir, false)
            }
            None => (fresh_temp_dir("cluster")?, true),
        };
        // Made before the first node starts, so that no node runs without its directory.
        let (data_root, remove_data_root) = match self.data {
            DataDirs::Memory => (None, false),
            DataDirs::Under(dir) => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| ProcessError::io(format!("creating {}", dir.display()), e))?;
                (Some(dir), false)
            }
            DataDirs::Temporary => (Some(fresh_temp_dir("data")?), true),
        };
        let mut cluster = LocalCluster {
            net: self.net,
            firewall: Firewall::new(),
            binary,
            node_args: self.node_args,
            rust_log: self.rust_log,
            remove_log_dir: owned && !self.keep_logs,
            log_dir,
            stop_grace: self.stop_grace,
            ready_timeout: self.ready_timeout,
            specs: Vec::new(),
            procs: Vec::new(),
            starts: Vec::new(),
            own_args: Vec::new(),
            data_root,
            remove_data_root,
            cookie: self.cookie,
            worker_threads: workers_per_node(self.nodes),
        };
        for index in 1..=self.nodes {
            let ports = pick_free_ports(self.net.node_ip(index), 2)?;
            cluster.specs.push(NodeSpec::new(self.net, index, &ports));
            cluster.procs.push(None);
            cluster.starts.push(0);
            let own = self.own_args.iter().filter(|(i, _)| *i == index);
            cluster
                .own_args
                .push(own.flat_map(|(_, args)| args.clone()).collect());
        }
        let booted = cluster.boot().await;
        if booted.is_err() && owned {
            // The error quotes the log tail; keep the full logs for a closer look.
            cluster.remove_log_dir = false;
        }
        booted.map(|()| cluster)
    }
}

/// The tokio workers each of `nodes` nodes sharing this machine gets: its cores shared out,
/// at least one each; `None` when the caller chose (`$TOKIO_WORKER_THREADS` is set).
///
/// Each node's runtime would otherwise start one worker per core, so K nodes run K times as
/// many workers as there are cores, which wake, steal work from each other and switch
/// between themselves for nothing: on 2 cores, 3 nodes of one worker each spent 12-16% less
/// CPU per operation than 3 nodes of two. A node told one worker runs on a current-thread
/// runtime (`cli::runtime`).
fn workers_per_node(nodes: usize) -> Option<usize> {
    if std::env::var_os(WORKER_THREADS_ENV).is_some() {
        return None;
    }
    Some(core_share(machine_cores(), nodes))
}

/// The cores this process may run on (1 when the system cannot tell).
pub fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One share of `cores` split between `parties` processes: at least one core each.
pub fn core_share(cores: usize, parties: usize) -> usize {
    (cores / parties.max(1)).max(1)
}

/// K node processes on this machine; see the module docs. Nodes are addressed by 1-based
/// index or by name ([`NodeRef`]). Dropping it SIGKILLs every node it started and removes
/// its partition rules; call [`LocalCluster::stop_all`] first for a graceful stop.
#[derive(Debug)]
pub struct LocalCluster {
    net: LoopbackNet,
    firewall: Firewall,
    binary: PathBuf,
    node_args: Vec<OsString>,
    /// Given to every node as `$RUST_LOG`; unset, the nodes inherit this process's, or use
    /// their own default (which leaves out ractor's per-message span, a cost under load).
    rust_log: Option<String>,
    log_dir: PathBuf,
    remove_log_dir: bool,
    stop_grace: Duration,
    ready_timeout: Duration,
    specs: Vec<NodeSpec>,
    procs: Vec<Option<ManagedProcess>>,
    starts: Vec<u32>,
    /// Flags of one node only, after the cluster's (see [`LocalCluster::add_node`]).
    own_args: Vec<Vec<OsString>>,
    /// Given to every node as `$DYNAMO_COOKIE`; unset, the nodes inherit this process's.
    cookie: Option<ChildCookie>,
    /// Each node's tokio workers (`$TOKIO_WORKER_THREADS`); unset, they inherit this process's.
    worker_threads: Option<usize>,
    /// Node `n{i}` runs with `--data-dir {data_root}/n{i}` when set.
    data_root: Option<PathBuf>,
    /// Whether the data root is ours to delete on drop.
    remove_data_root: bool,
}

impl LocalCluster {
    /// A builder with the defaults (3 nodes, temporary logs).
    pub fn builder() -> LocalClusterBuilder {
        LocalClusterBuilder::default()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Never true for a started cluster (it has at least one node).
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Every node's place, in index order.
    pub fn specs(&self) -> &[NodeSpec] {
        &self.specs
    }

    /// The loopback net the nodes live in.
    pub fn loopback_net(&self) -> LoopbackNet {
        self.net
    }

    /// Splits the cluster: nodes in different `groups` (1-based indices; every node in
    /// exactly one group) can no longer exchange a single packet, in either direction,
    /// while nodes of one group and this process still reach every node. Replaces any
    /// partition in force. Needs iptables and the right to change rules (root): without
    /// them it fails, saying so, before changing anything.
    pub fn partition(&mut self, groups: &[&[usize]]) -> Result<(), ProcessError> {
        let pairs: Vec<_> = cut_pairs(groups, self.len())?
            .into_iter()
            .map(|(a, b)| (self.specs[a - 1].ip, self.specs[b - 1].ip))
            .collect();
        self.firewall.cut(&pairs)
    }

    /// Cuts exactly the links between the given pairs of nodes (1-based indices), e.g.
    /// `&[(1, 4)]`: n1 and n4 no longer exchange a packet while both still reach every other
    /// node, a cut that groups cannot express. Replaces any partition in force; needs what
    /// [`LocalCluster::partition`] needs.
    pub fn cut_links(&mut self, pairs: &[(usize, usize)]) -> Result<(), ProcessError> {
        let mut ips = Vec::with_capacity(pairs.len());
        for &(a, b) in pairs {
            if a == b {
                return Err(ProcessError::BadPartition(format!(
                    "cannot cut node {a} from itself"
                )));
            }
            let (a, b) = (self.pos(&a)?, self.pos(&b)?);
            ips.push((self.specs[a].ip, self.specs[b].ip));
        }
        self.firewall.cut(&ips)
    }

    /// Ends any partition: every node reaches every node again.
    pub fn heal(&mut self) -> Result<(), ProcessError> {
        self.firewall.heal()
    }

    /// One node's place.
    pub fn spec(&self, node: impl NodeRef) -> Result<&NodeSpec, ProcessError> {
        Ok(&self.specs[self.pos(&node)?])
    }

    /// The executable the nodes run.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The flags every node gets after its own.
    pub fn node_args(&self) -> &[OsString] {
        &self.node_args
    }

    /// The directory holding `n1.log..`.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The directory node `node` keeps its data in (`--data-dir`), if the cluster is durable
    /// (see [`LocalClusterBuilder::data_dirs`]). It may not exist before the node first ran.
    pub fn data_dir(&self, node: impl NodeRef) -> Result<Option<PathBuf>, ProcessError> {
        let pos = self.pos(&node)?;
        Ok(self.data_dir_of(pos))
    }

    /// Keeps a temporary log directory after drop (e.g. when a test failed).
    pub fn keep_logs(&mut self) {
        self.remove_log_dir = false;
    }

    /// A node's log file (stdout and stderr of all its runs, appended).
    pub fn log_path(&self, node: impl NodeRef) -> Result<PathBuf, ProcessError> {
        let pos = self.pos(&node)?;
        Ok(self.log_of(pos))
    }

    /// The last `lines` lines of a node's log (empty if there is none yet).
    pub fn log_tail(&self, node: impl NodeRef, lines: usize) -> Result<String, ProcessError> {
        let pos = self.pos(&node)?;
        Ok(tail(&self.log_of(pos), lines))
    }

    /// What a node's process is doing.
    pub fn status(&mut self, node: impl NodeRef) -> Result<ProcessStatus, ProcessError> {
        let pos = self.pos(&node)?;
        Ok(self.status_at(pos))
    }

    /// Every node's status, in index order.
    pub fn statuses(&mut self) -> Vec<ProcessStatus> {
        (0..self.len()).map(|pos| self.status_at(pos)).collect()
    }

    /// The pid of a node's current process, if it has one that is not reaped.
    pub fn pid(&mut self, node: impl NodeRef) -> Result<Option<u32>, ProcessError> {
        let pos = self.pos(&node)?;
        let alive = self.status_at(pos).is_alive();
        Ok(self.procs[pos].as_ref().filter(|_| alive).map(|p| p.pid()))
    }

    /// How many times a node has been spawned (1 after start, +1 per restart or boot retry).
    pub fn starts(&self, node: impl NodeRef) -> Result<u32, ProcessError> {
        Ok(self.starts[self.pos(&node)?])
    }

    /// SIGKILL: the node dies at once, without a goodbye (a crash).
    pub fn kill(&mut self, node: impl NodeRef) -> Result<ExitInfo, ProcessError> {
        let pos = self.pos(&node)?;
        self.proc_mut(pos)?.kill()
    }

    /// SIGKILL to every running or paused node at the same moment (all signals are sent
    /// before any node is waited for), as when the machine loses power; nodes that already
    /// exited are left as they are. Restart them with [`LocalCluster::restart_all`].
    pub fn kill_all(&mut self) -> Result<(), ProcessError> {
        let mut first_error = None;
        for proc in self.procs.iter_mut().flatten() {
            if let Err(e) = proc.start_kill() {
                first_error.get_or_insert(e);
            }
        }
        for proc in self.procs.iter_mut().flatten() {
            if let Err(e) = proc.kill() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// SIGSTOP: the node freezes with its connections open (a silent, not a dead, peer).
    pub fn pause(&mut self, node: impl NodeRef) -> Result<(), ProcessError> {
        let pos = self.pos(&node)?;
        self.proc_mut(pos)?.pause()
    }

    /// SIGCONT after [`LocalCluster::pause`].
    pub fn resume(&mut self, node: impl NodeRef) -> Result<(), ProcessError> {
        let pos = self.pos(&node)?;
        self.proc_mut(pos)?.resume()
    }

    /// SIGTERM, then SIGKILL after the grace period.
    pub async fn stop(&mut self, node: impl NodeRef) -> Result<ExitInfo, ProcessError> {
        let pos = self.pos(&node)?;
        let grace = self.stop_grace;
        self.proc_mut(pos)?.stop(grace).await
    }

    /// SIGTERM to every node at once, then SIGKILL to those still there after the grace period.
    pub async fn stop_all(&mut self) -> Result<(), ProcessError> {
        let mut first_error = None;
        for proc in self.procs.iter_mut().flatten() {
            if let Err(e) = proc.terminate() {
                first_error.get_or_insert(e);
            }
        }
        let deadline = Instant::now() + self.stop_grace;
        for proc in self.procs.iter_mut().flatten() {
            if proc.wait_until(deadline).await.is_none()
                && let Err(e) = proc.kill()
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Starts a node again with the same name, addresses, flags and data directory (killing it
    /// first if it runs), seeded with every other node (node 1 first, or node 2 for node 1), and
    /// waits until it serves HTTP. Its in-memory data is gone, as after a real crash; what it
    /// keeps under `--data-dir` it finds again. While no other node runs it starts alone, as
    /// node 1 did at the first start: joining nodes never make a cluster among themselves.
    pub async fn restart(&mut self, node: impl NodeRef) -> Result<(), ProcessError> {
        let pos = self.pos(&node)?;
        if let Some(proc) = self.procs[pos].as_mut() {
            proc.kill()?;
        }
        let others_run = (0..self.len()).any(|p| p != pos && self.status_at(p).is_alive());
        let seeds = if others_run {
            self.restart_seeds(pos)
        } else {
            Vec::new()
        };
        self.spawn_at(pos, &seeds)?;
        self.wait_ready_at(pos, self.ready_timeout).await
    }

    /// Starts every node again at the same time (killing those that run first), each seeded
    /// with all the others as in [`LocalCluster::restart`] but node 1, which starts alone as
    /// at the first start, and waits until each serves HTTP. (In memory every node comes back
    /// joining, and joining nodes never make a cluster among themselves; on disk node 1 takes
    /// its members back from its directory.)
    pub async fn restart_all(&mut self) -> Result<(), ProcessError> {
        self.kill_all()?;
        for pos in 0..self.len() {
            let seeds = if pos == 0 {
                Vec::new()
            } else {
                self.restart_seeds(pos)
            };
            self.spawn_at(pos, &seeds)?;
        }
        for pos in 0..self.len() {
            self.wait_ready_at(pos, self.ready_timeout).await?;
        }
        Ok(())
    }

    /// Replaces the flags of node `node` alone (those after the cluster's, see
    /// [`LocalCluster::add_node`]) from its next start on, e.g. to restart it with another
    /// setting; the running process is not touched.
    pub fn set_own_args<I, S>(&mut self, node: impl NodeRef, args: I) -> Result<(), ProcessError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let pos = self.pos(&node)?;
        self.own_args[pos] = args.into_iter().map(Into::into).collect();
        Ok(())
    }

    /// Starts one more node, `n{K+1}` on the next address of the net, seeded with every other
    /// node, with the cluster's flags followed by `args` (which must not repeat a flag of the
    /// cluster's), and waits until it serves HTTP. Returns its index. The node is part of the
    /// cluster from then on (restart keeps its flags), even when this fails: a node that
    /// exits before serving (e.g. one the cluster refuses) is an `EarlyExit` error, and its
    /// status and log stay available.
    pub async fn add_node<I, S>(&mut self, args: I) -> Result<usize, ProcessError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let index = self.len() + 1;
        if index > MAX_NODES {
            return Err(ProcessError::Size(index));
        }
        let ports = pick_free_ports(self.net.node_ip(index), 2)?;
        self.specs.push(NodeSpec::new(self.net, index, &ports));
        self.procs.push(None);
        self.starts.push(0);
        self.own_args
            .push(args.into_iter().map(Into::into).collect());
        let pos = index - 1;
        let seeds = self.restart_seeds(pos);
        self.spawn_at(pos, &seeds)?;
        self.wait_ready_at(pos, self.ready_timeout).await?;
        Ok(index)
    }

    /// Waits until a node accepts connections on its HTTP port; fails at once if it exits.
    pub async fn wait_ready(
        &mut self,
        node: impl NodeRef,
        timeout: Duration,
    ) -> Result<(), ProcessError> {
        let pos = self.pos(&node)?;
        self.wait_ready_at(pos, timeout).await
    }

    fn pos(&self, node: &impl NodeRef) -> Result<usize, ProcessError> {
        node.position(&self.specs)
            .ok_or_else(|| ProcessError::UnknownNode(node.describe()))
    }

    fn proc_mut(&mut self, pos: usize) -> Result<&mut ManagedProcess, ProcessError> {
        match self.procs[pos].as_mut() {
            Some(proc) => Ok(proc),
            None => Err(ProcessError::NotRunning {
                name: self.specs[pos].name.clone(),
                status: ProcessStatus::NotStarted,
            }),
        }
    }

    fn status_at(&mut self, pos: usize) -> ProcessStatus {
        self.procs[pos]
            .as_mut()
            .map_or(ProcessStatus::NotStarted, ManagedProcess::status)
    }

    fn log_of(&self, pos: usize) -> PathBuf {
        self.log_dir.join(format!("{}.log", self.specs[pos].name))
    }

    fn data_dir_of(&self, pos: usize) -> Option<PathBuf> {
        let root = self.data_root.as_ref()?;
        Some(root.join(&self.specs[pos].name))
    }

    /// First start: node 1 alone, every other node through node 1.
    fn boot_seeds(&self, pos: usize) -> Vec<SocketAddr> {
        if pos == 0 {
            Vec::new()
        } else {
            vec![self.specs[0].cluster_addr]
        }
    }

    /// A restarted node may find any one peer down, so it gets them all.
    fn restart_seeds(&self, pos: usize) -> Vec<SocketAddr> {
        self.specs
            .iter()
            .enumerate()
            .filter(|&(p, _)| p != pos)
            .map(|(_, s)| s.cluster_addr)
            .collect()
    }

    fn command(&self, pos: usize, seeds: &[SocketAddr]) -> Command {
        let spec = &self.specs[pos];
        let mut cmd = Command::new(&self.binary);
        cmd.arg("start")
            .arg("--name")
            .arg(&spec.name)
            .arg("--bind")
            .arg(spec.cluster_addr.to_string())
            .arg("--http")
            .arg(spec.http_addr.to_string());
        for seed in seeds {
            cmd.arg("--seed").arg(seed.to_string());
        }
        cmd.args(&self.node_args).args(&self.own_args[pos]);
        if let Some(dir) = self.data_dir_of(pos) {
            cmd.arg("--data-dir").arg(dir);
        }
        if let Some(filter) = &self.rust_log {
            cmd.env("RUST_LOG", filter);
        }
        if let Some(workers) = self.worker_threads {
            cmd.env(WORKER_THREADS_ENV, workers.to_string());
        }
        if let Some(ChildCookie(cookie)) = &self.cookie {
            cmd.env(crate::config::COOKIE_ENV, cookie);
        }
        cmd
    }

    fn spawn_at(&mut self, pos: usize, seeds: &[SocketAddr]) -> Result<(), ProcessError> {
        let cmd = self.command(pos, seeds);
        let proc = ManagedProcess::spawn(self.specs[pos].name.clone(), cmd, &self.log_of(pos))?;
        self.procs[pos] = Some(proc);
        self.starts[pos] += 1;
        Ok(())
    }

    async fn boot(&mut self) -> Result<(), ProcessError> {
        self.boot_one(0, false).await?;
        for pos in 1..self.len() {
            self.spawn_at(pos, &self.boot_seeds(pos))?;
        }
        for pos in 1..self.len() {
            self.boot_one(pos, true).await?;
        }
        Ok(())
    }

    /// Spawns (unless `spawned`) and waits until ready; a node that exits early is given fresh
    /// ports and tried again, since nobody knows its addresses yet.
    async fn boot_one(&mut self, pos: usize, spawned: bool) -> Result<(), ProcessError> {
        if !spawned {
            self.spawn_at(pos, &self.boot_seeds(pos))?;
        }
        let mut attempt = 1;
        loop {
            match self.wait_ready_at(pos, self.ready_timeout).await {
                Err(ProcessError::EarlyExit { .. }) if attempt < BOOT_ATTEMPTS => {
                    attempt += 1;
                    let index = self.specs[pos].index;
                    let ports = pick_free_ports(self.net.node_ip(index), 2)?;
                    self.specs[pos] = NodeSpec::new(self.net, index, &ports);
                    self.spawn_at(pos, &self.boot_seeds(pos))?;
                }
                other => return other,
            }
        }
    }

    async fn wait_ready_at(&mut self, pos: usize, timeout: Duration) -> Result<(), ProcessError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let addr = self.specs[pos].http_addr;
        loop {
            if let ProcessStatus::Exited(exit) = self.status_at(pos) {
                return Err(ProcessError::EarlyExit {
                    name: self.specs[pos].name.clone(),
                    exit,
                    log: self.log_of(pos),
                    tail: tail(&self.log_of(pos), TAIL_LINES),
                });
            }
            let attempt = Duration::from_millis(250);
            if let Ok(Ok(_)) =
                tokio::time::timeout(attempt, tokio::net::TcpStream::connect(addr)).await
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ProcessError::NotReady {
                    name: self.specs[pos].name.clone(),
                    addr,
                    waited_ms: started.elapsed().as_millis(),
                    log: self.log_of(pos),
                    tail: tail(&self.log_of(pos), TAIL_LINES),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // All at once, then reaped: no node may still write when its directory goes.
        let _ = self.kill_all();
        if self.remove_log_dir {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
        if self.remove_data_root
            && let Some(root) = &self.data_root
        {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// A new directory `dynamo-{what}-...` under the system temp dir, unique across processes
/// and clusters.
fn fresh_temp_dir(what: &str) -> Result<PathBuf, ProcessError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "dynamo-{what}-{}-{nanos:08x}-{n}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ProcessError::io(format!("creating {}", dir.display()), e)),
        }
    }
}

/// The last `lines` lines of a file, reading at most its last 64 KiB.
fn tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    if file
        .seek(SeekFrom::Start(len.saturating_sub(WINDOW)))
        .is_err()
        || file.read_to_end(&mut bytes).is_err()
    {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::testutil::{
        FAKE_FAIL_ENV, FAKE_FLAKY_ENV, exists, fake_binary, fake_binary_with, scratch,
    };

    #[test]
    fn nodes_share_the_cores_out_at_one_worker_each_at_least() {
        // Unless the caller chose for them; the variable is not set under `cargo test`.
        if std::env::var_os(WORKER_THREADS_ENV).is_some() {
            assert_eq!(workers_per_node(3), None);
            return;
        }
        let cores = machine_cores();
        assert_eq!(workers_per_node(1), Some(cores));
        assert_eq!(workers_per_node(cores * 2), Some(1));
        assert_eq!(workers_per_node(0), Some(cores));
    }

    fn specs(k: usize) -> Vec<NodeSpec> {
        (1..=k)
            .map(|i| NodeSpec::new(LoopbackNet::DEFAULT, i, &[7000 + i as u16, 8000 + i as u16]))
            .collect()
    }

    #[test]
    fn nodes_are_found_by_index_or_name() {
        let nodes = specs(3);
        assert_eq!(1.position(&nodes), Some(0));
        assert_eq!(3.position(&nodes), Some(2));
        assert_eq!(0.position(&nodes), None);
        assert_eq!(4.position(&nodes), None);
        assert_eq!("n2".position(&nodes), Some(1));
        assert_eq!(String::from("n3").position(&nodes), Some(2));
        assert_eq!("n4".position(&nodes), None);
    }

    #[test]
    fn every_node_binds_its_own_loopback_address() {
        let nodes = specs(3);
        assert_eq!(nodes[1].name, "n2");
        assert_eq!(nodes[1].cluster_addr.to_string(), "127.0.0.3:7002");
        assert_eq!(nodes[1].http_url(), "http://127.0.0.3:8002");
    }

    fn fake_cluster(dir: &Path, k: usize) -> LocalClusterBuilder {
        LocalCluster::builder()
            .nodes(k)
            .binary(fake_binary(dir, &[]))
            .node_args(["--n", "2", "--gossip-interval-ms", "100"])
            .rust_log("debug,ractor=warn")
            .stop_grace(Duration::from_secs(3))
            .ready_timeout(Duration::from_secs(20))
    }

    #[tokio::test]
    async fn boots_every_node_on_its_own_address_with_seeds_flags_and_logs() {
        let dir = scratch("boot");
        let mut cluster = fake_cluster(&dir, 3).start().await.unwrap();
        assert_eq!(cluster.len(), 3);
        assert_eq!(cluster.statuses(), vec![ProcessStatus::Running; 3]);
        let n1 = cluster.spec(1).unwrap().clone();
        for (i, spec) in cluster.specs().iter().enumerate() {
            assert_eq!(spec.name, format!("n{}", i + 1));
            assert_eq!(spec.ip, Ipv4Addr::new(127, 0, 0, i as u8 + 2));
            assert_eq!(spec.cluster_addr.ip(), spec.ip);
            assert_eq!(spec.http_addr.ip(), spec.ip);
            let log = std::fs::read_to_string(cluster.log_path(i + 1).unwrap()).unwrap();
            let expected_seed = if i == 0 {
                String::new()
            } else {
                format!(" --seed {}", n1.cluster_addr)
            };
            let args = format!(
                "fake node args: start --name {} --bind {} --http {}{expected_seed} --n 2 --gossip-interval-ms 100\n",
                spec.name, spec.cluster_addr, spec.http_addr
            );
            assert!(log.contains(&args), "{log}");
        }
        let log = std::fs::read_to_string(cluster.log_path("n1").unwrap()).unwrap();
        assert!(
            log.contains("fake-dynamo-node start --name n1"),
            "header: {log}"
        );
        assert!(
            log.contains("fake node RUST_LOG=debug,ractor=warn\n"),
            "{log}"
        );
        let log_dir = cluster.log_dir().to_path_buf();
        assert!(log_dir.is_dir());
        let pids: Vec<u32> = (1..=3).map(|i| cluster.pid(i).unwrap().unwrap()).collect();
        drop(cluster);
        for pid in pids {
            assert!(!exists(pid), "pid {pid} survived the cluster");
        }
        assert!(!log_dir.exists(), "the temporary log dir is removed");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn kill_restart_pause_resume_and_stop_by_index_or_name() {
        let dir = scratch("ops");
        let mut cluster = fake_cluster(&dir, 3)
            .log_dir(dir.join("logs"))
            .start()
            .await
            .unwrap();
        let before = cluster.spec("n1").unwrap().clone();
        let old_pid = cluster.pid(1).unwrap().unwrap();

        let exit = cluster.kill("n1").unwrap();
        assert!(exit.requested && exit.signal == Some(9));
        assert_eq!(cluster.status(1).unwrap(), ProcessStatus::Exited(exit));
        assert_eq!(cluster.pid(1).unwrap(), None);
        assert!(!exists(old_pid));

        cluster.restart(1).await.unwrap();
        assert_eq!(cluster.status(1).unwrap(), ProcessStatus::Running);
        assert_eq!(cluster.spec(1).unwrap(), &before, "same name and addresses");
        assert_eq!(cluster.starts(1).unwrap(), 2);
        let log = std::fs::read_to_string(cluster.log_path(1).unwrap()).unwrap();
        let n2 = cluster.spec(2).unwrap().cluster_addr;
        let n3 = cluster.spec(3).unwrap().cluster_addr;
        assert!(
            log.contains(&format!("--seed {n2} --seed {n3} --n 2")),
            "a restarted n1 is seeded with the others: {log}"
        );

        cluster.pause(2).unwrap();
        assert_eq!(cluster.status("n2").unwrap(), ProcessStatus::Paused);
        cluster.resume(2).unwrap();
        assert_eq!(cluster.status("n2").unwrap(), ProcessStatus::Running);

        let exit = cluster.stop(3).await.unwrap();
        assert_eq!(exit.signal, Some(15), "a graceful stop: {exit}");
        assert!(matches!(
            cluster.pause(3),
            Err(ProcessError::NotRunning { .. })
        ));
        assert!(matches!(cluster.kill(4), Err(ProcessError::UnknownNode(_))));
        assert!(matches!(
            cluster.kill("n9"),
            Err(ProcessError::UnknownNode(_))
        ));

        cluster.pause(2).unwrap();
        cluster.stop_all().await.unwrap();
        assert!(cluster.statuses().iter().all(|s| !s.is_alive()));
        drop(cluster);
        assert!(dir.join("logs/n1.log").is_file(), "a given log dir is kept");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn durable_nodes_keep_their_directories_across_kill_all_and_restart_all() {
        let dir = scratch("durable");
        let mut cluster = fake_cluster(&dir, 2)
            .temp_data_dirs()
            .log_dir(dir.join("logs"))
            .start()
            .await
            .unwrap();
        let root = cluster
            .data_dir(1)
            .unwrap()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        assert!(root.is_dir(), "the data root exists before any node runs");
        // The fake node prints its arguments: count its runs with the node's own directory.
        let runs_with_dir = |cluster: &LocalCluster, i: usize| {
            let log = std::fs::read_to_string(cluster.log_path(i).unwrap()).unwrap();
            let flag = format!("--data-dir {}", root.join(format!("n{i}")).display());
            log.lines()
                .filter(|l| l.contains("fake node args: ") && l.ends_with(&flag))
                .count()
        };
        for i in 1..=2 {
            assert_eq!(
                cluster.data_dir(i).unwrap(),
                Some(root.join(format!("n{i}")))
            );
            let runs = runs_with_dir(&cluster, i);
            assert_eq!(runs, 1, "{}", cluster.log_tail(i, 20).unwrap());
        }
        let pids: Vec<u32> = (1..=2).map(|i| cluster.pid(i).unwrap().unwrap()).collect();

        cluster.kill_all().unwrap();
        for (i, status) in cluster.statuses().into_iter().enumerate() {
            match status {
                ProcessStatus::Exited(exit) => {
                    assert!(
                        exit.requested && exit.signal == Some(9),
                        "n{}: {exit}",
                        i + 1
                    )
                }
                other => panic!("n{} is {other} after kill_all", i + 1),
            }
        }
        assert!(pids.iter().all(|&pid| !exists(pid)));

        cluster.restart_all().await.unwrap();
        assert_eq!(cluster.statuses(), vec![ProcessStatus::Running; 2]);
        for i in 1..=2 {
            assert_eq!(cluster.starts(i).unwrap(), 2);
            let runs = runs_with_dir(&cluster, i);
            assert_eq!(
                runs,
                2,
                "same directory: {}",
                cluster.log_tail(i, 20).unwrap()
            );
        }
        // Node 1 starts alone, as at the first start; the others are seeded with it.
        let n1 = cluster.spec(1).unwrap().cluster_addr;
        let log = cluster.log_tail(1, 20).unwrap();
        let last_start = log.rsplit("=== ").next().unwrap_or_default();
        assert!(!last_start.contains("--seed"), "node 1 alone: {log}");
        let log = cluster.log_tail(2, 20).unwrap();
        assert!(
            log.contains(&format!("--seed {n1}")),
            "seeded with the others: {log}"
        );

        cluster.set_own_args(2, ["--vnodes", "7"]).unwrap();
        cluster.restart(2).await.unwrap();
        let log = cluster.log_tail(2, 20).unwrap();
        assert!(log.contains("--vnodes 7 --data-dir"), "{log}");

        drop(cluster);
        assert!(
            !root.exists(),
            "the temporary data root is removed with the cluster"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn an_added_node_is_seeded_with_the_others_and_keeps_its_own_flags() {
        let dir = scratch("add");
        let mut cluster = fake_cluster(&dir, 2)
            .log_dir(dir.join("logs"))
            .start()
            .await
            .unwrap();
        let index = cluster.add_node(["--vnodes", "7"]).await.unwrap();
        assert_eq!(index, 3);
        assert_eq!(cluster.len(), 3);
        let n3 = cluster.spec("n3").unwrap().clone();
        assert_eq!(n3.ip, LoopbackNet::DEFAULT.node_ip(3));
        let (n1, n2) = (
            cluster.spec(1).unwrap().cluster_addr,
            cluster.spec(2).unwrap().cluster_addr,
        );
        let expected = format!(
            "fake node args: start --name n3 --bind {} --http {} --seed {n1} --seed {n2} --n 2 --gossip-interval-ms 100 --vnodes 7\n",
            n3.cluster_addr, n3.http_addr
        );
        let log = || std::fs::read_to_string(cluster.log_path(3).unwrap()).unwrap();
        assert_eq!(log().matches(&expected).count(), 1, "{}", log());
        cluster.restart(3).await.unwrap();
        let log = std::fs::read_to_string(cluster.log_path(3).unwrap()).unwrap();
        assert_eq!(
            log.matches(&expected).count(),
            2,
            "a restart keeps the flags: {log}"
        );
        let other = cluster.log_tail(1, 20).unwrap();
        assert!(
            !other.contains("--vnodes 7"),
            "the flags are n3's only: {other}"
        );
        drop(cluster);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_node_that_exits_while_booting_gets_fresh_ports_and_another_try() {
        let dir = scratch("flaky");
        let marker = dir.join("marker");
        let builder = fake_cluster(&dir, 1);
        let wrapped = fake_binary_with(&dir, &[], FAKE_FLAKY_ENV, &marker.display().to_string());
        let mut cluster = builder.binary(&wrapped).start().await.unwrap();
        assert_eq!(cluster.starts(1).unwrap(), 2);
        assert_eq!(cluster.status(1).unwrap(), ProcessStatus::Running);
        let log = cluster.log_tail(1, 100).unwrap();
        assert!(log.contains("address in use (first attempt)"), "{log}");
        drop(cluster);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_node_that_cannot_start_is_a_clear_error_quoting_its_log() {
        let dir = scratch("fail");
        let wrapped = fake_binary_with(&dir, &[], FAKE_FAIL_ENV, "1");
        let err = fake_cluster(&dir, 2)
            .binary(&wrapped)
            .log_dir(dir.join("logs"))
            .start()
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ProcessError::EarlyExit { .. }), "{msg}");
        assert!(
            msg.contains("n1 exited before serving (exited with code 4, unrequested)"),
            "{msg}"
        );
        assert!(msg.contains("refusing to start"), "{msg}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    async fn reaches(from: Ipv4Addr, to: SocketAddr) -> bool {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        let attempt = tokio::time::timeout(Duration::from_millis(300), socket.connect(to));
        matches!(attempt.await, Ok(Ok(_)))
    }

    /// Needs iptables and root, as every partition test does: fails, never skips, without.
    #[tokio::test]
    async fn a_partition_cuts_exactly_the_nodes_of_different_groups() {
        let dir = scratch("partition");
        let net = LoopbackNet::unique();
        let mut cluster = fake_cluster(&dir, 3)
            .loopback_net(net)
            .log_dir(dir.join("logs"))
            .start()
            .await
            .unwrap();
        assert_eq!(cluster.loopback_net(), net);
        let spec = |i: usize| cluster.spec(i).unwrap().clone();
        let (n1, n2, n3) = (spec(1), spec(2), spec(3));
        assert_eq!(n2.ip, net.node_ip(2));
        assert!(reaches(n1.ip, n2.http_addr).await);

        let err = cluster.partition(&[&[1], &[2]]).unwrap_err();
        assert!(matches!(err, ProcessError::BadPartition(_)), "{err}");
        cluster.partition(&[&[1], &[2, 3]]).unwrap();
        assert!(!reaches(n1.ip, n2.http_addr).await, "n1 -> n2 cut");
        assert!(!reaches(n3.ip, n1.http_addr).await, "n3 -> n1 cut");
        assert!(
            reaches(n2.ip, n3.http_addr).await,
            "n2 -> n3 within a group"
        );
        for node in [&n1, &n2, &n3] {
            assert!(
                tokio::net::TcpStream::connect(node.http_addr).await.is_ok(),
                "this process reaches {} from 127.0.0.1",
                node.name
            );
        }
        cluster.heal().unwrap();
        assert!(reaches(n1.ip, n2.http_addr).await, "healed");
        cluster.partition(&[&[1, 2], &[3]]).unwrap();
        assert!(!reaches(n3.ip, n2.http_addr).await);
        assert!(
            reaches(n1.ip, n2.http_addr).await,
            "n1 -> n2 within a group"
        );
        assert!(
            reaches(n2.ip, n1.http_addr).await,
            "n2 -> n1 within a group"
        );
        drop(cluster);
        // The nodes are gone; a fresh listener on n2's address shows the rules are too.
        let listener = tokio::net::TcpListener::bind((n2.ip, 0)).await.unwrap();
        assert!(reaches(n3.ip, listener.local_addr().unwrap()).await);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn sizes_out_of_range_are_refused() {
        for k in [0, MAX_NODES + 1] {
            let err = LocalCluster::builder().nodes(k).start().await.unwrap_err();
            assert!(matches!(err, ProcessError::Size(got) if got == k));
        }
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let path = std::env::temp_dir().join(format!("dynamo-tail-{}", std::process::id()));
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&path, 2), "c\nd");
        assert_eq!(tail(&path, 10), "a\nb\nc\nd");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(tail(&path, 2), "");
    }
}
