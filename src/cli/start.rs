//! `dynamo-node start`: one node and its HTTP API in the foreground until Ctrl-C or SIGTERM,
//! or until the node can no longer serve (then it exits with an error rather than serve on
//! with a frozen ring or under a name the cluster no longer knows).

use super::{CliError, StartArgs, force_exit_on_second_signal, init_tracing, shutdown_signal};
use crate::http::{HttpListener, HttpStartError};
use crate::node::{Node, NodeError};

/// Validates the flags, starts the node and its HTTP API, serves until a stop signal, stops
/// gracefully.
pub async fn run(args: StartArgs) -> Result<(), CliError> {
    let (mut config, guard) = args.to_config()?;
    init_tracing();
    // Installed before the start, so that a SIGTERM during it still ends in a graceful stop.
    let stop = shutdown_signal();
    let name = config.name.clone();
    // Bound before the node starts, so that a taken port or a bad certificate fails cleanly
    // and the node announces the address really bound.
    let listener = match config.http {
        Some(addr) => {
            let listener = HttpListener::bind(addr, &guard)
                .await
                .map_err(|e| match e {
                    HttpStartError::Tls(e) => {
                        CliError::Usage(format!("--http-tls-cert/--http-tls-key: {e}"))
                    }
                    bind => CliError::Failed(format!("node {name} could not start: {bind}")),
                })?;
            config.http = Some(listener.local_addr());
            Some(listener)
        }
        None => None,
    };
    let (bind, http) = (config.bind, config.http);
    let node = Node::start(config).await.map_err(|e| match e {
        NodeError::Config(e) => CliError::Usage(format!("invalid configuration: {e}")),
        // Exit code 2 like a usage error: the operator must fix the directory or the flag.
        NodeError::Storage(e) => CliError::Usage(format!("node {name} cannot start: {e}")),
        other => CliError::Failed(format!("node {name} could not start: {other}")),
    })?;
    let server = listener.map(|listener| listener.serve(node.client()));
    tracing::info!(node = %name, %bind, http = ?http, "node serving; Ctrl-C or SIGTERM stops it");
    let failure = tokio::select! {
        signal = stop => {
            tracing::info!(node = %name, signal, "stopping");
            None
        }
        reason = node.failed() => Some(reason),
    };
    force_exit_on_second_signal();
    // The API first, so that its requests in flight finish on a running node.
    if let Some(server) = server {
        server.stop().await;
    }
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
