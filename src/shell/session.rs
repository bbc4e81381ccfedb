//! A shell session: commands run against the nodes' HTTP APIs, and against the processes of
//! the local cluster when the shell started one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;

use super::command::{Command, Line, NodeState, ParseError, WaitFor, parse};
use super::format::{
    NodeRow, format_config, format_delete, format_get, format_help, format_leave, format_members,
    format_merge, format_nodes, format_put, format_remove, format_ring, secs,
};
use crate::cli::client::health_of;
use crate::config::ConfigUpdate;
use crate::core::membership::Status;
use crate::http::{HttpClient, HttpError};
use crate::model::{Context, GetResult, MemberInfo};
use crate::process::{LocalCluster, ProcessError, ProcessStatus};

/// How long `wait` polls unless told otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// Time between two polls of `wait`.
const POLL: Duration = Duration::from_millis(100);
/// Per-request timeout of polls and of the side requests of `ring`: a frozen node must not
/// stall them.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a command failed; the shell prints it and goes on.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The line is not a command.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A node answered with an error, or did not answer.
    #[error("{node}: {source}")]
    Request {
        /// The node asked.
        node: String,
        /// What went wrong.
        source: HttpError,
    },
    /// Starting, signalling or partitioning node processes failed (boxed: it is large).
    #[error(transparent)]
    Process(Box<ProcessError>),
    /// A command for the processes of a local cluster, in a shell attached with `--connect`.
    #[error(
        "`{0}` works on the local cluster the shell started; this shell is attached to a running cluster"
    )]
    NotLocal(&'static str),
    /// No node of the session has that name.
    #[error("no node `{name}` (nodes: {known})")]
    UnknownNode {
        /// The name given.
        name: String,
        /// The names there are.
        known: String,
    },
    /// Neither the session nor the member list of the node asked knows that name.
    #[error("no node `{name}`: neither this shell nor {observer} knows it (members: {known})")]
    UnknownMember {
        /// The name given.
        name: String,
        /// The node whose member list was looked in.
        observer: String,
        /// The members it lists.
        known: String,
    },
    /// A member that cannot be reached over HTTP (it gossips no HTTP address).
    #[error("{observer} knows no HTTP address of {name}")]
    NoAddress {
        /// The member.
        name: String,
        /// The node whose member list was looked in.
        observer: String,
    },
    /// `remove` of a node that the asked node sees alive.
    #[error(
        "{observer} sees {name} alive, and a live node cannot be removed: drain it with \
         `leave {name}`, or stop it and remove it once it is suspect or dead ({message})"
    )]
    StillAlive {
        /// The node asked.
        observer: String,
        /// The node to remove.
        name: String,
        /// The node's own words.
        message: String,
    },
    /// `merge` of a key the session has not read.
    #[error("merge writes with the context of your last read of the key: `get {0}` first")]
    NoRead(String),
    /// The groups of a partition do not split the cluster.
    #[error("bad partition: {0}")]
    BadPartition(String),
    /// `wait` reached its deadline.
    #[error("not within {waited}: {gap}")]
    WaitTimedOut {
        /// How long it polled.
        waited: String,
        /// The last reason why the condition did not hold.
        gap: String,
    },
    /// A command run on several nodes failed on some (the text has a line per node).
    #[error("{0}")]
    SomeNodes(String),
    /// Attaching to a running cluster failed.
    #[error("cannot attach to {url}: {source}")]
    Connect {
        /// The URL given.
        url: String,
        /// Why.
        source: HttpError,
    },
}

impl From<ProcessError> for ShellError {
    fn from(e: ProcessError) -> Self {
        ShellError::Process(Box::new(e))
    }
}

/// What the caller does after a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Print this (empty for a blank line).
    Text(String),
    /// `quit`: close the session and leave.
    Quit,
}

/// One node the shell talks to.
#[derive(Clone, Debug)]
struct ShellNode {
    name: String,
    client: HttpClient,
    probe: HttpClient,
}

impl ShellNode {
    fn new(name: String, url: &str) -> ShellNode {
        ShellNode {
            name,
            client: crate::http::env_client(url, crate::http::DEFAULT_TIMEOUT),
            probe: crate::http::env_client(url, PROBE_TIMEOUT),
        }
    }
}

/// What the last read of a key saw: `merge` writes with its full context.
#[derive(Clone, Debug)]
struct LastRead {
    context: Context,
    values: usize,
}

impl LastRead {
    fn of(result: &GetResult) -> LastRead {
        LastRead {
            context: result.context().clone(),
            values: result.values().len(),
        }
    }
}

/// The state of one shell: its nodes, the current node, the last read of each key, and the
/// local cluster if the shell started it (dropping the session stops it).
#[derive(Debug)]
pub struct Session {
    nodes: Vec<ShellNode>,
    current: usize,
    cluster: Option<LocalCluster>,
    reads: HashMap<Bytes, LastRead>,
    wait_timeout: Duration,
}

impl Session {
    /// A session on nodes given as (name, HTTP URL) pairs, the first one current; `None` if
    /// there is none.
    pub fn attached(nodes: Vec<(String, String)>) -> Option<Session> {
        if nodes.is_empty() {
            return None;
        }
        Some(Session {
            nodes: nodes
                .into_iter()
                .map(|(name, url)| ShellNode::new(name, &url))
                .collect(),
            current: 0,
            cluster: None,
            reads: HashMap::new(),
            wait_timeout: DEFAULT_WAIT,
        })
    }

    /// A session on the nodes of a local cluster, which it owns from now on.
    pub fn local(cluster: LocalCluster) -> Session {
        let nodes = cluster
            .specs()
            .iter()
            .map(|s| ShellNode::new(s.name.clone(), &s.http_url()))
            .collect();
        Session {
            nodes,
            current: 0,
            cluster: Some(cluster),
            reads: HashMap::new(),
            wait_timeout: DEFAULT_WAIT,
        }
    }

    /// Attaches to a running cluster through one node: every member it lists with an HTTP
    /// address becomes a node of the session, the one at `url` current. A node that cannot
    /// serve (it left, say) still lists the members, so the shell attaches through it too.
    pub async fn connect(url: &str) -> Result<Session, ShellError> {
        let entry = crate::http::env_client(url, crate::http::DEFAULT_TIMEOUT);
        let failed = |source| ShellError::Connect {
            url: url.to_string(),
            source,
        };
        let me = health_of(&entry).await.map_err(failed)?.node;
        let members = entry.members().await.map_err(failed)?;
        let mut nodes: Vec<(String, String)> = members
            .into_iter()
            .filter(|m| m.node != me && !m.http_addr.is_empty())
            .map(|m| (m.node, m.http_addr))
            .collect();
        nodes.push((me.clone(), entry.base_url().to_string()));
        // n1, n2, .., n10: shorter names first, so numbered names sort as numbers.
        nodes.sort_by(|a, b| (a.0.len(), &a.0).cmp(&(b.0.len(), &b.0)));
        let current = nodes.iter().position(|(name, _)| *name == me).unwrap_or(0);
        let mut session = Session::attached(nodes).ok_or_else(|| ShellError::Connect {
            url: url.to_string(),
            source: HttpError::Decode("no members".into()),
        })?;
        session.current = current;
        Ok(session)
    }

    /// Changes how long `wait` polls when the command gives no `within`.
    pub fn set_wait_timeout(&mut self, timeout: Duration) {
        self.wait_timeout = timeout;
    }

    /// The nodes' names, in order.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The node that commands without `@NODE` go to.
    pub fn current(&self) -> &str {
        &self.nodes[self.current].name
    }

    /// The local cluster, if the shell started one.
    pub fn cluster(&self) -> Option<&LocalCluster> {
        self.cluster.as_ref()
    }

    /// Whether the shell started its nodes (so kill, partition and the like work).
    pub fn is_local(&self) -> bool {
        self.cluster.is_some()
    }

    /// The `nodes` table: names, addresses and, for a local cluster, processes.
    pub fn nodes_table(&mut self) -> String {
        let statuses = self.cluster.as_mut().map(LocalCluster::statuses);
        let rows: Vec<NodeRow> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeRow {
                name: n.name.clone(),
                url: n.client.base_url().to_string(),
                current: i == self.current,
                process: statuses
                    .as_ref()
                    .and_then(|s| s.get(i))
                    .map(ToString::to_string),
            })
            .collect();
        format_nodes(&rows)
    }

    /// Parses and runs one line of input.
    pub async fn execute(&mut self, input: &str) -> Result<Reply, ShellError> {
        match parse(input)? {
            None => Ok(Reply::Text(String::new())),
            Some(line) => self.run(line).await,
        }
    }

    /// Runs one parsed command.
    pub async fn run(&mut self, line: Line) -> Result<Reply, ShellError> {
        let at = match &line.target {
            Some(name) => self.resolve(name)?,
            None => self.current,
        };
        let text = match line.command {
            Command::Put { key, value } => {
                let context = self.put(at, &key, value, None).await?;
                format_put(&context)
            }
            Command::Get { key } => {
                let result = self.get(at, &key).await?;
                self.reads.insert(key, LastRead::of(&result));
                format_get(&result)
            }
            Command::Merge { key, value } => {
                let Some(read) = self.reads.get(&key).cloned() else {
                    return Err(ShellError::NoRead(String::from_utf8_lossy(&key).into()));
                };
                let context = self.put(at, &key, value, Some(&read.context)).await?;
                // The next merge builds on this write, as a client keeping its context would.
                self.reads.insert(
                    key,
                    LastRead {
                        context: context.clone(),
                        values: 1,
                    },
                );
                format_merge(read.values, &context)
            }
            Command::Delete { key } => self.delete(at, key).await?,
            Command::Members => {
                let node = &self.nodes[at];
                let members = node.client.members().await.map_err(self.failed(at))?;
                format_members(&node.name, &members)
            }
            Command::Ring => self.ring(at).await?,
            Command::Nodes => self.nodes_table(),
            Command::Config(update) => {
                let targets = match line.target {
                    Some(_) => vec![at],
                    None => (0..self.nodes.len()).collect(),
                };
                self.config(&targets, &update).await?
            }
            Command::Leave(node) => self.leave(at, node.as_deref()).await?,
            Command::Remove(name) => self.remove(at, &name).await?,
            Command::Use(name) => {
                self.current = self.resolve(&name)?;
                let node = &self.nodes[self.current];
                format!(
                    "commands now go to {} ({})\n",
                    node.name,
                    node.client.base_url()
                )
            }
            Command::Kill(name) => {
                let name = self.local_name("kill", &name)?;
                let exit = self.cluster_mut("kill")?.kill(&name)?;
                format!("{name} {exit}\n")
            }
            Command::Restart(name) => {
                let name = self.local_name("restart", &name)?;
                let cluster = self.cluster_mut("restart")?;
                cluster.restart(&name).await?;
                let url = cluster.spec(&name)?.http_url();
                match cluster.data_dir(&name)? {
                    Some(dir) => format!(
                        "{name} restarted on its data in {}, serving at {url}\n",
                        dir.display()
                    ),
                    None => format!("{name} restarted with empty memory, serving at {url}\n"),
                }
            }
            Command::Pause(name) => {
                let name = self.local_name("pause", &name)?;
                self.cluster_mut("pause")?.pause(&name)?;
                format!("{name} paused\n")
            }
            Command::Resume(name) => {
                let name = self.local_name("resume", &name)?;
                self.cluster_mut("resume")?.resume(&name)?;
                format!("{name} resumed\n")
            }
            Command::Partition(groups) => self.partition(&groups)?,
            Command::Heal => {
                self.cluster_mut("heal")?.heal()?;
                "healed\n".to_string()
            }
            Command::Wait { until, within } => {
                let within = within.unwrap_or(self.wait_timeout);
                match until {
                    WaitFor::Converged => self.wait_converged(within).await?,
                    WaitFor::Status {
                        node,
                        status,
                        observers,
                    } => self.wait_status(&node, status, &observers, within).await?,
                }
            }
            Command::Help(topic) => format_help(topic.as_deref(), self.is_local())
                .ok_or_else(|| ParseError::UnknownCommand(topic.unwrap_or_default()))?,
            Command::Quit => return Ok(Reply::Quit),
        };
        Ok(Reply::Text(text))
    }

    /// Stops the nodes the shell started (SIGTERM, then SIGKILL after a grace period) and
    /// removes any partition rules.
    pub async fn close(mut self) -> Result<(), ShellError> {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.stop_all().await?;
        }
        Ok(())
    }

    // ---- key-value commands ----

    async fn get(&self, at: usize, key: &[u8]) -> Result<GetResult, ShellError> {
        self.nodes[at]
            .client
            .get(key, None)
            .await
            .map_err(self.failed(at))
    }

    async fn put(
        &self,
        at: usize,
        key: &[u8],
        value: Bytes,
        context: Option<&Context>,
    ) -> Result<Context, ShellError> {
        self.nodes[at]
            .client
            .put(key, value, context, None)
            .await
            .map_err(self.failed(at))
    }

    /// Deletes what the last read saw, reading first if there was none.
    async fn delete(&mut self, at: usize, key: Bytes) -> Result<String, ShellError> {
        let read = match self.reads.get(&key) {
            Some(read) => read.clone(),
            None => LastRead::of(&self.get(at, &key).await?),
        };
        if read.values == 0 {
            self.reads.remove(&key);
            return Ok("not found: nothing to delete\n".to_string());
        }
        self.nodes[at]
            .client
            .delete(&key, Some(&read.context), None)
            .await
            .map_err(self.failed(at))?;
        self.reads.remove(&key);
        Ok(format_delete(read.values))
    }

    // ---- membership ----

    /// Drains `node` (the node `at` when `None`): a node of the shell by name or number, or
    /// any member that the node `at` lists, reached at the HTTP address it gossips.
    async fn leave(&self, at: usize, node: Option<&str>) -> Result<String, ShellError> {
        let (name, client) = match node {
            None => (self.nodes[at].name.clone(), self.nodes[at].client.clone()),
            Some(name) => match self.resolve(name) {
                Ok(i) => (self.nodes[i].name.clone(), self.nodes[i].client.clone()),
                Err(_) => {
                    let url = self.member_url(at, name).await?;
                    (
                        name.to_string(),
                        crate::http::env_client(&url, crate::http::DEFAULT_TIMEOUT),
                    )
                }
            },
        };
        let member = client.leave().await.map_err(|source| ShellError::Request {
            node: name.clone(),
            source,
        })?;
        Ok(format_leave(&member))
    }

    /// The HTTP address of member `name` as the node `at` lists it.
    async fn member_url(&self, at: usize, name: &str) -> Result<String, ShellError> {
        let observer = &self.nodes[at];
        let members = observer.client.members().await.map_err(self.failed(at))?;
        let Some(member) = members.iter().find(|m| m.node == name) else {
            let mut known: Vec<&str> = members.iter().map(|m| m.node.as_str()).collect();
            known.sort_unstable();
            return Err(ShellError::UnknownMember {
                name: name.to_string(),
                observer: observer.name.clone(),
                known: known.join(", "),
            });
        };
        if member.http_addr.is_empty() {
            return Err(ShellError::NoAddress {
                name: name.to_string(),
                observer: observer.name.clone(),
            });
        }
        Ok(member.http_addr.clone())
    }

    /// Asks the node `at` to remove `name` (a node of the shell by name or number, else the
    /// member name as given).
    async fn remove(&self, at: usize, name: &str) -> Result<String, ShellError> {
        let name = match self.resolve(name) {
            Ok(i) => self.nodes[i].name.clone(),
            Err(_) => name.to_string(),
        };
        match self.nodes[at].client.remove(&name).await {
            Ok(member) => Ok(format_remove(&member)),
            Err(HttpError::Api { kind, message, .. }) if kind == "member_alive" => {
                Err(ShellError::StillAlive {
                    observer: self.nodes[at].name.clone(),
                    name,
                    message,
                })
            }
            Err(e) => Err(self.failed(at)(e)),
        }
    }

    // ---- views ----

    /// The ring as the target sees it, with every node's own key count.
    async fn ring(&self, at: usize) -> Result<String, ShellError> {
        let ring = self.nodes[at]
            .client
            .ring()
            .await
            .map_err(self.failed(at))?;
        let own_counts = join_all(self.nodes.iter().map(|node| async move {
            let keys = node.probe.ring().await.ok().and_then(|r| {
                r.nodes
                    .into_iter()
                    .find(|n| n.node == node.name)
                    .and_then(|n| n.keys)
            });
            (node.name.clone(), keys)
        }))
        .await;
        Ok(format_ring(&self.nodes[at].name, &ring, &own_counts))
    }

    /// Shows (empty update) or changes the settings of the `targets`, a line per node.
    async fn config(&self, targets: &[usize], update: &ConfigUpdate) -> Result<String, ShellError> {
        let show = *update == ConfigUpdate::default();
        let answers = join_all(targets.iter().map(|&i| async move {
            let client = &self.nodes[i].client;
            let answer = if show {
                client.config().await
            } else {
                client.update_config(update).await
            };
            (i, answer)
        }))
        .await;
        let mut text = String::new();
        let mut failed = false;
        for (i, answer) in answers {
            let name = &self.nodes[i].name;
            match answer {
                Ok(config) => text.push_str(&format_config(name, &config)),
                Err(e) => {
                    failed = true;
                    text.push_str(&format!("{name}: error: {e}\n"));
                }
            }
        }
        if failed {
            Err(ShellError::SomeNodes(text.trim_end().to_string()))
        } else {
            Ok(text)
        }
    }

    // ---- processes ----

    fn cluster_mut(&mut self, command: &'static str) -> Result<&mut LocalCluster, ShellError> {
        self.cluster.as_mut().ok_or(ShellError::NotLocal(command))
    }

    /// The name of a node of the local cluster.
    fn local_name(&self, command: &'static str, name: &str) -> Result<String, ShellError> {
        if self.cluster.is_none() {
            return Err(ShellError::NotLocal(command));
        }
        Ok(self.nodes[self.resolve(name)?].name.clone())
    }

    fn partition(&mut self, groups: &[Vec<String>]) -> Result<String, ShellError> {
        if self.cluster.is_none() {
            return Err(ShellError::NotLocal("partition"));
        }
        let mut indices: Vec<Vec<usize>> = Vec::with_capacity(groups.len() + 1);
        for group in groups {
            let members = group
                .iter()
                .map(|name| self.resolve(name).map(|i| i + 1))
                .collect::<Result<Vec<_>, _>>()?;
            indices.push(members);
        }
        if let [alone] = indices.as_slice() {
            let rest: Vec<usize> = (1..=self.nodes.len())
                .filter(|i| !alone.contains(i))
                .collect();
            if rest.is_empty() {
                return Err(ShellError::BadPartition(
                    "one group holding every node cuts nothing; name two groups, A,B | C".into(),
                ));
            }
            indices.push(rest);
        }
        let slices: Vec<&[usize]> = indices.iter().map(Vec::as_slice).collect();
        self.cluster_mut("partition")?.partition(&slices)?;
        let shown: Vec<String> = indices
            .iter()
            .map(|g| {
                g.iter()
                    .map(|&i| self.nodes[i - 1].name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        Ok(format!("partitioned: {}\n", shown.join(" | ")))
    }

    // ---- waiting ----

    /// Polls until every observer lists `node` with `status` (a liveness or a ring status).
    async fn wait_status(
        &mut self,
        node: &str,
        status: NodeState,
        observers: &[String],
        within: Duration,
    ) -> Result<String, ShellError> {
        let target = self.resolve(node)?;
        let observers: Vec<usize> = if observers.is_empty() {
            let running = self.running();
            (0..self.nodes.len())
                .filter(|&i| i != target && running[i])
                .collect()
        } else {
            observers
                .iter()
                .map(|o| self.resolve(o))
                .collect::<Result<_, _>>()?
        };
        if observers.is_empty() {
            return Err(ShellError::BadPartition(format!(
                "no running node is left to ask about {node}; name one with `on NODE`"
            )));
        }
        let name = self.nodes[target].name.clone();
        let started = Instant::now();
        loop {
            let views = self.views(&observers).await;
            let gap = views.iter().find_map(|(observer, view)| match view {
                Err(e) => Some(format!("{observer} did not answer: {e}")),
                Ok(members) => match members.iter().find(|m| m.node == name) {
                    None => Some(format!("{observer} does not know {name}")),
                    Some(m) if status.of(m) != status => {
                        Some(format!("{observer} sees {name} {}", status.of(m)))
                    }
                    Some(_) => None,
                },
            });
            match gap {
                None => {
                    let who: Vec<&str> = views.iter().map(|(o, _)| o.as_str()).collect();
                    let verb = if who.len() == 1 { "sees" } else { "see" };
                    return Ok(format!(
                        "{} {verb} {name} {status} (after {})\n",
                        who.join(", "),
                        secs(started.elapsed())
                    ));
                }
                Some(gap) => self.not_yet(started, within, gap).await?,
            }
        }
    }

    /// Polls until every running node sees every running node alive, with a session open
    /// (nodes that left or were removed aside).
    async fn wait_converged(&mut self, within: Duration) -> Result<String, ShellError> {
        let started = Instant::now();
        if let Some(cluster) = self.cluster.as_mut() {
            return match cluster.wait_converged(within).await {
                Ok(()) => Ok(format!("converged (after {})\n", secs(started.elapsed()))),
                Err(ProcessError::NotConverged { gap, .. }) => Err(ShellError::WaitTimedOut {
                    waited: secs(started.elapsed()),
                    gap,
                }),
                Err(other) => Err(other.into()),
            };
        }
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        loop {
            let views = self.views(&all).await;
            // A node that some member lists as left or removed is no longer part of the
            // cluster: it is neither asked nor expected (it may well be stopped).
            let departed: Vec<&str> = views
                .iter()
                .filter_map(|(_, view)| view.as_ref().ok())
                .flatten()
                .filter(|m| m.ring.is_final())
                .map(|m| m.node.as_str())
                .collect();
            let gap = views.iter().find_map(|(observer, view)| {
                if departed.contains(&observer.as_str()) {
                    return None;
                }
                let members = match view {
                    Err(e) => return Some(format!("{observer} did not answer: {e}")),
                    Ok(members) => members,
                };
                self.nodes.iter().find_map(|node| {
                    if departed.contains(&node.name.as_str()) {
                        return None;
                    }
                    let seen = members.iter().find(|m| m.node == node.name);
                    match seen {
                        None => Some(format!("{observer} does not know {}", node.name)),
                        Some(m) if m.status != Status::Alive => {
                            Some(format!("{observer} sees {} {}", node.name, m.status))
                        }
                        Some(m) if !m.connected => {
                            Some(format!("{observer} has no session to {} yet", node.name))
                        }
                        Some(_) => None,
                    }
                })
            });
            match gap {
                None => return Ok(format!("converged (after {})\n", secs(started.elapsed()))),
                Some(gap) => self.not_yet(started, within, gap).await?,
            }
        }
    }

    /// Sleeps one poll interval, or fails with `gap` once `within` has passed.
    async fn not_yet(
        &self,
        started: Instant,
        within: Duration,
        gap: String,
    ) -> Result<(), ShellError> {
        if started.elapsed() >= within {
            return Err(ShellError::WaitTimedOut {
                waited: secs(started.elapsed()),
                gap,
            });
        }
        tokio::time::sleep(POLL).await;
        Ok(())
    }

    /// Each of the `nodes`' member lists, by name.
    async fn views(&self, nodes: &[usize]) -> Vec<(String, Result<Vec<MemberInfo>, HttpError>)> {
        join_all(nodes.iter().map(|&i| async move {
            let node = &self.nodes[i];
            (node.name.clone(), node.probe.members().await)
        }))
        .await
    }

    /// Which nodes have a running process (all of them for an attached session).
    fn running(&mut self) -> Vec<bool> {
        match self.cluster.as_mut() {
            Some(cluster) => cluster
                .statuses()
                .into_iter()
                .map(|s| s == ProcessStatus::Running)
                .collect(),
            None => vec![true; self.nodes.len()],
        }
    }

    // ---- names ----

    /// The position of a node given by name, or by number (`2` for `n2`).
    fn resolve(&self, name: &str) -> Result<usize, ShellError> {
        let exact = self.nodes.iter().position(|n| n.name == name);
        let numbered = || {
            name.chars()
                .all(|c| c.is_ascii_digit())
                .then(|| format!("n{name}"))
                .and_then(|n| self.nodes.iter().position(|node| node.name == n))
        };
        exact
            .or_else(numbered)
            .ok_or_else(|| ShellError::UnknownNode {
                name: name.to_string(),
                known: self.node_names().join(", "),
            })
    }

    fn failed(&self, at: usize) -> impl FnOnce(HttpError) -> ShellError + use<> {
        let node = self.nodes[at].name.clone();
        move |source| ShellError::Request { node, source }
    }
}
