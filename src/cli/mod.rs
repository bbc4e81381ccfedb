//! The `dynamo-node` command line: a node (`start`), a local cluster (`cluster`), the client
//! commands, the benchmark (`bench`) and a walk-through of the core (`demo`, hidden), one file
//! each; `args` maps a node's flags onto its configuration, `security` guards a node reachable
//! from other machines, `client_auth` finds a client's tokens and CA.
//!
//! Exit codes: 0 success; 1 the request or the command failed (node unreachable, 503, a node
//! that could not start, a membership change the cluster refused); 2 usage error (bad flag or
//! value, malformed context, invalid key or member name); 3 `get` found no value (it prints
//! `not found`, and the context if tombstones were seen).
//!
//! Client commands talk to `--node URL`, else `$DYNAMO_NODE`, else [`DEFAULT_NODE_URL`];
//! `cluster` prints the `export DYNAMO_NODE=...` line that points them at its first node.
//! `leave` is the exception: it is final for the node it reaches, so it needs `--node`.

mod args;
mod bench;
pub(crate) mod client;
mod client_auth;
mod cluster;
mod demo;
mod runtime;
mod security;
mod start;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use args::{NodeFlags, StartArgs, TlsFlags, parse_seed};
pub use bench::BenchArgs;
pub use client::{format_get, format_leave, format_remove, format_status};
pub use client_auth::ClientAuthArgs;
pub use cluster::{ClusterArgs, RestartBackoff};
pub use runtime::{bench_runtime, node_runtime, runtime};
pub use security::{
    COOKIE_ENV, CookieSource, DEFAULT_COOKIE, SecurityFlags, protected_mode, read_secret,
};

/// Exit code of a success.
pub const EXIT_OK: u8 = 0;
/// Exit code of a failed request or command.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a usage error (the same as clap's).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a `get` that found no value.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Environment variable naming the node that client commands talk to.
pub const NODE_ENV: &str = "DYNAMO_NODE";
/// Node of client commands without `--node` or `$DYNAMO_NODE` (Riak's HTTP port).
pub const DEFAULT_NODE_URL: &str = "http://127.0.0.1:8098";

/// The `dynamo-node` command line.
#[derive(Parser, Debug)]
#[command(
    name = "dynamo-node",
    version,
    about = "A Dynamo-style distributed key-value store",
    after_help = "Exit codes: 0 ok, 1 request failed, 2 usage error, 3 not found (get)."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node in the foreground (logs through RUST_LOG, default info,ractor::actor=warn)
    Start(Box<StartArgs>),
    /// Run a local cluster of K node processes, restarted when they crash; Ctrl-C stops them
    Cluster(ClusterArgs),
    /// Read a key: prints the value (or numbered siblings) and the context
    Get(GetArgs),
    /// Write a value (from VALUE or stdin); prints the new context
    Put(PutArgs),
    /// Delete what the context covers; without one, every value the key has now
    Delete(DeleteArgs),
    /// Print the members (liveness, ring status, handoff) and ring shares as a node sees them
    Status(Target),
    /// Drain a node: it hands every key it holds to the other members, then reports `left`
    Leave(LeaveArgs),
    /// Declare a node gone for good (refused while it is alive): the others take its ranges
    Remove(RemoveArgs),
    /// YCSB-style benchmark over HTTP or the native client, against --node URLs or a cluster it starts
    Bench(Box<BenchArgs>),
    /// Walk through the pure core in one process (no network)
    #[command(hide = true)]
    Demo,
}

/// Which node a client command talks to.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// Node HTTP URL [default: $DYNAMO_NODE, else http://127.0.0.1:8098]
    #[arg(long, value_name = "URL")]
    pub node: Option<String>,
    /// Tokens and CA.
    #[command(flatten)]
    pub auth: ClientAuthArgs,
}

impl Target {
    /// The URL: the flag, else the environment, else the default.
    pub fn url(&self) -> String {
        self.url_with(std::env::var(NODE_ENV).ok())
    }

    /// A client of the node, with the tokens and CA of the flags or the environment.
    pub fn client(&self) -> Result<crate::http::HttpClient, CliError> {
        self.auth.client(self.url(), crate::http::DEFAULT_TIMEOUT)
    }

    fn url_with(&self, env: Option<String>) -> String {
        self.node
            .clone()
            .or(env.filter(|v| !v.trim().is_empty()))
            .unwrap_or_else(|| DEFAULT_NODE_URL.to_string())
    }
}

/// `dynamo-node get`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct GetArgs {
    /// The key (its bytes as given)
    pub key: OsString,
    /// Replies to wait for instead of the node's R
    #[arg(long, value_name = "R")]
    pub r: Option<usize>,
    /// Accepted for symmetry with put and delete (the usage line of the design lists it for
    /// all three) and ignored: a read needs no context.
    #[arg(long, value_name = "CTX", hide = true)]
    pub context: Option<String>,
    /// The node.
    #[command(flatten)]
    pub target: Target,
}

/// `dynamo-node put`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct PutArgs {
    /// The key
    pub key: OsString,
    /// The value; read from stdin when omitted
    pub value: Option<OsString>,
    /// Context of a previous get: replaces the values it saw (blind write without it)
    #[arg(long, value_name = "CTX")]
    pub context: Option<String>,
    /// Acks to wait for instead of the node's W
    #[arg(long, value_name = "W")]
    pub w: Option<usize>,
    /// The node.
    #[command(flatten)]
    pub target: Target,
}

/// `dynamo-node delete`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct DeleteArgs {
    /// The key
    pub key: OsString,
    /// Context of a previous get: deletes the values it saw
    #[arg(long, value_name = "CTX")]
    pub context: Option<String>,
    /// Acks to wait for instead of the node's W
    #[arg(long, value_name = "W")]
    pub w: Option<usize>,
    /// The node.
    #[command(flatten)]
    pub target: Target,
}

/// `dynamo-node leave`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct LeaveArgs {
    /// HTTP URL of the node that leaves (required: leaving is final for its name, so it is
    /// never sent to $DYNAMO_NODE or the default node by accident)
    #[arg(long, value_name = "URL")]
    pub node: String,
    /// Tokens and CA.
    #[command(flatten)]
    pub auth: ClientAuthArgs,
}

/// `dynamo-node remove`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct RemoveArgs {
    /// Name of the member that is gone for good (as `status` lists it)
    pub name: String,
    /// The node asked to record the removal (any member).
    #[command(flatten)]
    pub target: Target,
}

/// Why a command did not succeed; each maps to one exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input from the user.
    #[error("{0}")]
    Usage(String),
    /// The request or command failed.
    #[error("{0}")]
    Failed(String),
    /// `get` found no value (already reported on stdout).
    #[error("not found")]
    NotFound,
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Failed(_) => EXIT_FAILED,
            CliError::NotFound => EXIT_NOT_FOUND,
        }
    }
}

/// Entry point of the binary: parses the arguments, runs the command, maps the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Prints help or the usage error; exit code 0 for --help, 2 for errors.
        Err(e) => e.exit(),
    };
    if let Command::Demo = cli.command {
        return match demo::run() {
            Ok(()) => ExitCode::from(EXIT_OK),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    let runtime = match &cli.command {
        Command::Start(_) => node_runtime(),
        Command::Bench(args) => bench_runtime(args.starts_cluster(), args.nodes),
        _ => runtime(),
    };
    let Some(runtime) = runtime else {
        return ExitCode::from(EXIT_FAILED);
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(CliError::NotFound) => ExitCode::from(EXIT_NOT_FOUND),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs one parsed command.
pub async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Start(args) => start::run(*args).await,
        Command::Cluster(args) => cluster::run(args).await,
        Command::Get(args) => client::get(args).await,
        Command::Put(args) => client::put(args).await,
        Command::Delete(args) => client::delete(args).await,
        Command::Status(target) => client::status(target).await,
        Command::Leave(args) => client::leave(args).await,
        Command::Remove(args) => client::remove(args).await,
        Command::Bench(args) => bench::run(*args).await,
        Command::Demo => demo::run().map_err(|e| CliError::Failed(e.to_string())),
    }
}

/// The log filter without `RUST_LOG`: `info`, but for ractor's `Actor` span (an info span of
/// `ractor::actor`, which logs nothing itself at info). The span is entered and left on every
/// message an actor handles, about 5% of a node's CPU under load; `RUST_LOG=info` has it.
pub const DEFAULT_LOG: &str = "info,ractor::actor=warn";

/// Logs through `tracing` to stderr, filtered by `RUST_LOG` (default [`DEFAULT_LOG`]); colours
/// only on a terminal, so log files stay plain.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. Handlers are installed when this is called, so
/// call it before a slow start for the signals to be caught during it.
pub fn shutdown_signal() -> impl std::future::Future<Output = &'static str> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        let term = async {
            match term {
                Some(mut s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let int = async {
            match int {
                Some(mut s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term => "SIGTERM",
            _ = int => "SIGINT",
        }
    }
}

/// Writes to stdout and flushes; a closed stdout (`| head`) must not turn into a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// After the first stop signal: a second one exits at once (children die with us).
fn force_exit_on_second_signal() {
    let second = shutdown_signal();
    tokio::spawn(async move {
        let name = second.await;
        eprintln!("{name} again: exiting without waiting");
        std::process::exit(130);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("dynamo-node").chain(argv.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn client_commands_parse_key_value_context_and_node() {
        let Command::Put(put) = parse(&[
            "put",
            "cart",
            "milk",
            "--context",
            "abc",
            "--node",
            "http://127.0.0.3:9000",
            "--w",
            "1",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(put.key, "cart");
        assert_eq!(put.value.as_deref(), Some("milk".as_ref()));
        assert_eq!(put.context.as_deref(), Some("abc"));
        assert_eq!(put.w, Some(1));
        assert_eq!(put.target.url(), "http://127.0.0.3:9000");
        let Command::Put(stdin) = parse(&["put", "k"]).unwrap() else {
            panic!()
        };
        assert_eq!(stdin.value, None);
        let Command::Get(get) = parse(&["get", "k", "--r", "3", "--context", "x"]).unwrap() else {
            panic!()
        };
        assert_eq!((get.key.as_os_str(), get.r), ("k".as_ref(), Some(3)));
        let Command::Delete(del) = parse(&["delete", "k", "--context", "c"]).unwrap() else {
            panic!()
        };
        assert_eq!(del.context.as_deref(), Some("c"));
        assert!(matches!(parse(&["status"]).unwrap(), Command::Status(_)));
        let Command::Leave(leave) = parse(&["leave", "--node", "http://127.0.0.4:8098"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(leave.node, "http://127.0.0.4:8098");
        let Command::Remove(remove) = parse(&["remove", "n4", "--node", "127.0.0.2:8098"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(remove.name, "n4");
        assert_eq!(remove.target.url(), "127.0.0.2:8098");
        assert_eq!(parse(&["remove"]).unwrap_err().exit_code(), 2);
        let no_node = parse(&["leave"]).unwrap_err();
        assert_eq!(
            no_node.kind(),
            clap::error::ErrorKind::MissingRequiredArgument,
            "leave is never sent to a default node"
        );
        assert!(matches!(parse(&["demo"]).unwrap(), Command::Demo));
        assert_eq!(parse(&["get"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["frobnicate"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn the_node_comes_from_the_flag_then_the_environment_then_the_default() {
        let flag = Target {
            node: Some("http://a:1".into()),
            ..Default::default()
        };
        assert_eq!(flag.url_with(Some("http://b:2".into())), "http://a:1");
        let none = Target::default();
        assert_eq!(none.url_with(Some("http://b:2".into())), "http://b:2");
        assert_eq!(none.url_with(Some(" ".into())), DEFAULT_NODE_URL);
        assert_eq!(none.url_with(None), DEFAULT_NODE_URL);
    }

    #[test]
    fn every_error_has_its_exit_code() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), EXIT_USAGE);
        assert_eq!(CliError::Failed("x".into()).exit_code(), EXIT_FAILED);
        assert_eq!(CliError::NotFound.exit_code(), EXIT_NOT_FOUND);
    }
}
