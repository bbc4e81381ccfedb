//! Starting, stopping, pausing and restarting node processes on this machine.
//!
//! [`LocalCluster`] runs K `dynamo-node start` children named `n1..nK`; node `i` (1-based)
//! binds both its cluster port and its HTTP port on its own loopback address `127.a.b.(i+1)`
//! (`127.0.0.(i+1)` unless a [`LoopbackNet`] is chosen), so that a firewall rule between two
//! loopback addresses cuts exactly those two nodes apart: [`LocalCluster::partition`] does
//! that with a [`Firewall`] (iptables). It is the engine of the `cluster` subcommand and of
//! `testing::TestCluster`, which gives every cluster a net of its own.
//! [`ManagedProcess`] is one such child, usable for any program: it dies with this process
//! (parent-death signal), logs to a file, and is killed when dropped.

mod binary;
mod child;
mod cluster;
mod converge;
mod firewall;
mod ports;
#[cfg(test)]
pub(crate) mod testutil;

use std::path::PathBuf;

pub use binary::{BINARY_ENV, BINARY_NAME, locate_node_binary};
pub use child::{ExitInfo, ManagedProcess, ProcessStatus};
pub use cluster::{
    LocalCluster, LocalClusterBuilder, MAX_NODES, NodeRef, NodeSpec, core_share, machine_cores,
    random_cookie,
};
pub use firewall::{Firewall, IPTABLES, cut_pairs};
pub use ports::{LoopbackNet, node_ip, pick_free_port};

/// Why a process operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The `dynamo-node` binary is in none of the places looked at.
    #[error(
        "the {BINARY_NAME} binary was not found; looked at: {}. Build it (`cargo build`), or set {BINARY_ENV} to its path",
        looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    BinaryNotFound {
        /// Every path tried, in order.
        looked: Vec<PathBuf>,
    },
    /// A system call (spawn, bind, file) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A signal could not be delivered.
    #[error("sending {signal} to pid {pid}: {source}")]
    Signal {
        /// The target.
        pid: u32,
        /// Signal name.
        signal: &'static str,
        /// The underlying error.
        source: nix::errno::Errno,
    },
    /// The operation needs a live process and this one has exited.
    #[error("{name} is not running ({status})")]
    NotRunning {
        /// Node name (or program).
        name: String,
        /// What it is instead.
        status: ProcessStatus,
    },
    /// No node of this cluster has that index or name.
    #[error("no node {0} in this cluster (nodes are n1..nK, indices 1..=K)")]
    UnknownNode(String),
    /// Cluster size out of range.
    #[error("a local cluster has 1 to {MAX_NODES} nodes, got {0}")]
    Size(usize),
    /// A node exited before it served HTTP.
    #[error("{name} exited before serving ({exit}); last lines of {log}:\n{tail}")]
    EarlyExit {
        /// Node name.
        name: String,
        /// How it exited.
        exit: ExitInfo,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The running nodes did not all see each other alive before the deadline.
    #[error("the cluster did not converge within {waited_ms} ms: {gap}")]
    NotConverged {
        /// How long we waited.
        waited_ms: u128,
        /// The last reason seen why it had not.
        gap: String,
    },
    /// Partition rules could not be set or removed (no iptables, no right to use it, ...).
    #[error("{0}")]
    Firewall(String),
    /// The groups of a partition do not name every node exactly once.
    #[error("bad partition: {0}")]
    BadPartition(String),
    /// A node did not serve HTTP before the deadline.
    #[error(
        "{name} did not serve HTTP on {addr} within {waited_ms} ms; last lines of {log}:\n{tail}"
    )]
    NotReady {
        /// Node name.
        name: String,
        /// Its HTTP address.
        addr: std::net::SocketAddr,
        /// How long we waited.
        waited_ms: u128,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
}

impl ProcessError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ProcessError::Io {
            what: what.into(),
            source,
        }
    }
}
