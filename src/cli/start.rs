//! `dynamo-node start`: one node in the foreground until Ctrl-C or SIGTERM.

use super::{CliError, StartArgs, force_exit_on_second_signal, init_tracing, shutdown_signal};
use crate::node::{Node, NodeError};

/// Validates the flags, starts the node, serves until a stop signal, stops gracefully.
pub async fn run(args: StartArgs) -> Result<(), CliError> {
    let config = args.to_config()?;
    init_tracing();
    // Installed before the start, so that a SIGTERM during it still ends in a graceful stop.
    let stop = shutdown_signal();
    let (name, bind, http) = (config.name.clone(), config.bind, config.http);
    let node = Node::start(config).await.map_err(|e| match e {
        NodeError::Config(e) => CliError::Usage(format!("invalid configuration: {e}")),
        // Exit code 2 like a usage error: the operator must fix the directory or the flag.
        NodeError::Storage(e) => CliError::Usage(format!("node {name} cannot start: {e}")),
        other => CliError::Failed(format!("node {name} could not start: {other}")),
    })?;
    tracing::info!(node = %name, %bind, http = ?http, "node serving; Ctrl-C or SIGTERM stops it");
    let failure = tokio::select! {
        signal = stop => {
            tracing::info!(node = %name, signal, "stopping");
            None
        }
        reason = node.failed() => Some(reason),
    };
    force_exit_on_second_signal();
    node.stop().await;
    match failure {
        None => {
            tracing::info!(node = %name, "stopped");
            Ok(())
        }
        // Never serve on with a frozen ring or under a name the cluster no longer knows.
        Some(reason) => Err(CliError::Failed(format!("node {name} stopped: {reason}"))),
    }
}
