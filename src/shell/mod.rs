//! The interactive shell behind `examples/shell.rs`: commands typed at a prompt (or piped
//! in), run against a cluster's HTTP API and, when the shell started the cluster itself,
//! against its node processes (kill, pause, partition, ...).
//!
//! The parts are here so that they can be tested without a terminal: [`command`] turns a
//! line into a typed [`Command`], [`Session`] runs it and keeps what the shell remembers (the
//! current node, the context of the last read of each key, the [`LocalCluster`]), and
//! [`format`](mod@format) says what gets printed. [`start_local`] boots a cluster for a session.
//!
//! Timing is never left to a sleep: `wait NODE STATUS [on NODE,..] [within SECS]` and
//! `wait converged` poll the nodes' member lists until the condition holds or the deadline
//! passes, so a script (or a test) can say "until n2 sees n1 suspect" or, after `leave n3`,
//! "until the others see n3 left" (STATUS is a liveness or a ring status).
//!
//! [`LocalCluster`]: crate::process::LocalCluster

pub mod command;
mod complete;
pub mod format;
mod launch;
mod session;

pub use command::{COMMANDS, Command, CommandSpec, Line, NodeState, ParseError, WaitFor, parse};
pub use complete::complete;
pub use launch::{LocalOptions, start_local};
pub use session::{DEFAULT_WAIT, Reply, Session, ShellError};
#[cfg(test)]
mod tests;
