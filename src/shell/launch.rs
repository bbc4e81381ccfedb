//! Starting the local cluster a shell runs on, with progress a person can follow.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::format::secs;
use super::session::{Session, ShellError};
use crate::process::{LocalCluster, LoopbackNet, MAX_NODES, ProcessError, random_cookie};

/// How to start the local cluster of a shell.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Number of nodes, n1..nK.
    pub nodes: usize,
    /// Where the nodes live: [`LoopbackNet::DEFAULT`] (127.0.0.2..) for people, a unique net
    /// for tests that run side by side.
    pub net: LoopbackNet,
    /// The node executable; `None`: see [`crate::process::locate_node_binary`].
    pub binary: Option<PathBuf>,
    /// Flags for every node's `start`, e.g. `["--suspect-after-ms", "1000"]`.
    pub node_args: Vec<String>,
    /// Where the node logs go (kept); `None`: a temporary directory removed at the end.
    pub log_dir: Option<PathBuf>,
    /// Where node i keeps its data (`DIR/n{i}`, kept across restarts and runs); `None`: in
    /// memory.
    pub data_dir: Option<PathBuf>,
    /// How long the nodes may take to all see each other alive.
    pub converge_timeout: Duration,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            nodes: 3,
            net: LoopbackNet::DEFAULT,
            binary: None,
            node_args: Vec::new(),
            log_dir: None,
            data_dir: None,
            converge_timeout: Duration::from_secs(60),
        }
    }
}

/// Starts the nodes, waits until they all see each other, and returns a session on them.
/// `progress` gets the text to show as it happens: `starting n1..n3 ... converged in 0.8 s`,
/// then one line per node with its HTTP address.
pub async fn start_local(
    options: &LocalOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Session, ShellError> {
    if options.nodes == 0 || options.nodes > MAX_NODES {
        return Err(ProcessError::Size(options.nodes).into());
    }
    let names = match options.nodes {
        1 => "n1".to_string(),
        k => format!("n1..n{k}"),
    };
    progress(&format!("starting {names} ... "));
    let started = Instant::now();
    // A cookie of its own, handed to the nodes through their environment (a `--cookie` among
    // the node arguments still wins).
    let mut builder = LocalCluster::builder()
        .nodes(options.nodes)
        .loopback_net(options.net)
        .node_args(&options.node_args)
        .cookie(random_cookie());
    if let Some(binary) = &options.binary {
        builder = builder.binary(binary);
    }
    if let Some(dir) = &options.log_dir {
        builder = builder.log_dir(dir);
    }
    if let Some(dir) = &options.data_dir {
        builder = builder.data_dirs(dir);
    }
    let booted = async {
        let mut cluster = builder.start().await?;
        cluster.wait_converged(options.converge_timeout).await?;
        Ok::<_, ProcessError>(cluster)
    };
    let cluster = match booted.await {
        Ok(cluster) => cluster,
        Err(e) => {
            progress("failed\n");
            return Err(e.into());
        }
    };
    progress(&format!("converged in {}\n", secs(started.elapsed())));
    for spec in cluster.specs() {
        progress(&format!("  {}  {}\n", spec.name, spec.http_url()));
    }
    Ok(Session::local(cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_size_out_of_range_fails_before_showing_progress() {
        for nodes in [0, MAX_NODES + 1] {
            let options = LocalOptions {
                nodes,
                ..LocalOptions::default()
            };
            let mut shown = String::new();
            let err = start_local(&options, &mut |t| shown.push_str(t))
                .await
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("a local cluster has 1 to 253 nodes, got {nodes}")
            );
            assert_eq!(shown, "");
        }
    }
}
