//! An interactive shell on a live cluster.
//!
//! ```sh
//! cargo run --release --example shell                 # a local 3-node cluster, then a prompt
//! cargo run --release --example shell -- --nodes 5    # another size
//! cargo run --release --example shell -- --connect http://127.0.0.2:8098   # a running cluster
//! ```
//!
//! The local cluster's nodes are real node processes, and they run this very executable:
//! `shell start --name n1 ...` is the node's `start` path (the same code as `dynamo-node
//! start`), so nothing else has to be built first. With standard input not a terminal, the
//! shell reads one command per line, prints only the results, and stops the cluster at the end
//! of the input (exit code 1 if a command failed). `help` lists the commands (key-value ones;
//! membership ones such as `leave n3`, `wait n3 left` and `remove n3`; faults such as `kill`,
//! `pause` and `partition`); the parsing, running and printing of commands lives in
//! `dynamo_node::shell`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use clap::Parser;
use dynamo_node::cli::NodeFlags;
use dynamo_node::process::{BINARY_ENV, LoopbackNet};
use dynamo_node::shell::{self, LocalOptions, Reply, Session};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Editor, Helper};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// Command-line options of the shell.
#[derive(Parser, Debug)]
#[command(
    name = "shell",
    about = "An interactive shell on a dynamo-node cluster: a local one it starts, or a running one",
    after_help = "Type `help` at the prompt for the commands. Piped input: one command per line, \
                  results only, exit code 1 if a command failed."
)]
struct Args {
    /// Start a local cluster of K node processes, n1..nK, node i on 127.0.0.(i+1)
    #[arg(long, value_name = "K", default_value_t = 3)]
    nodes: usize,
    /// Attach to a running cluster through this node's HTTP URL instead of starting one
    #[arg(long, value_name = "URL", conflicts_with_all = ["nodes", "unique_net", "binary", "log_dir"])]
    connect: Option<String>,
    /// Put the local nodes on a loopback net of their own (127.a.b.x) instead of 127.0.0.x, so
    /// that several shells (tests) can partition side by side
    #[arg(long)]
    unique_net: bool,
    /// Node executable [default: $DYNAMO_NODE_BIN, else this executable]
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Directory for the node logs n1.log.. (kept) [default: a temporary one, removed on quit]
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Node i keeps its data in DIR/n{i}, kept across restarts and runs [default: in memory]
    #[arg(long, value_name = "DIR", conflicts_with = "connect")]
    data_dir: Option<PathBuf>,
    /// How long the local nodes may take to all see each other alive
    #[arg(long, value_name = "T", default_value_t = 60_000)]
    converge_timeout_ms: u64,
    /// How long `wait` polls when the command gives no `within`
    #[arg(long, value_name = "T", default_value_t = 60_000)]
    wait_timeout_ms: u64,
    /// Passed to every local node.
    #[command(flatten)]
    flags: NodeFlags,
}

fn main() -> ExitCode {
    // The local cluster's nodes run this executable as `shell start ...`: be the node then.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "start") {
        return dynamo_node::cli::main();
    }
    let args = Args::parse();
    let Some(runtime) = dynamo_node::cli::runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let interactive = std::io::stdin().is_terminal();
    let mut session = match open(&args).await {
        Ok(session) => session,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    session.set_wait_timeout(Duration::from_millis(args.wait_timeout_ms));
    if interactive {
        eprintln!("type `help` for the commands, `quit` (or Ctrl-D) to stop the cluster and leave");
    }
    let input = Input::spawn(interactive, session.node_names());
    let failed = repl(&mut session, &input, interactive).await;
    input.close();
    let local = session.is_local();
    if local {
        eprint!("stopping the nodes ... ");
    }
    let closed = session.close().await;
    if closed.is_ok() && local {
        eprintln!("done");
    }
    match closed {
        Ok(()) if failed => ExitCode::FAILURE,
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the local cluster, or attaches to the running one.
async fn open(args: &Args) -> Result<Session, String> {
    if let Some(url) = &args.connect {
        if args.flags != NodeFlags::default() {
            return Err("node flags (--n, --suspect-after-ms, ...) only apply to a local cluster, not with --connect".into());
        }
        let session = Session::connect(url).await.map_err(|e| e.to_string())?;
        eprintln!(
            "attached to {} through {}: nodes {}",
            session.current(),
            url,
            session.node_names().join(", ")
        );
        return Ok(session);
    }
    args.flags.validate().map_err(|e| e.to_string())?;
    // This executable is a node too (see `main`); `$DYNAMO_NODE_BIN` still wins over it.
    let binary = args.binary.clone().or_else(|| {
        std::env::var_os(BINARY_ENV)
            .is_none()
            .then(|| std::env::current_exe().ok())
            .flatten()
    });
    let options = LocalOptions {
        nodes: args.nodes,
        net: if args.unique_net {
            LoopbackNet::unique()
        } else {
            LoopbackNet::DEFAULT
        },
        binary,
        node_args: args.flags.to_args(),
        log_dir: args.log_dir.clone(),
        data_dir: args.data_dir.clone(),
        converge_timeout: Duration::from_millis(args.converge_timeout_ms),
    };
    let mut progress = |text: &str| {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
    };
    let session = shell::start_local(&options, &mut progress)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(cluster) = session.cluster() {
        let kept = if args.log_dir.is_some() {
            ""
        } else {
            " (removed on quit)"
        };
        eprintln!("node logs in {}{kept}", cluster.log_dir().display());
    }
    Ok(session)
}

/// Reads and runs commands until `quit`, the end of the input, or a stop signal; returns
/// whether a command failed.
async fn repl(session: &mut Session, input: &Input, interactive: bool) -> bool {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("error: cannot handle signals");
        return true;
    };
    let mut failed = false;
    loop {
        input.request(format!("dynamo {}> ", session.current()));
        let line = loop {
            tokio::select! {
                event = input.next() => break event,
                _ = term.recv() => return failed,
                // At a terminal the editor reads Ctrl-C as a key; a SIGINT from elsewhere
                // while it waits changes nothing. A pipe has no such key: it means stop.
                _ = int.recv() => if !interactive { return failed },
            }
        };
        let line = match line {
            Event::Line(line) => line,
            Event::Interrupted => continue,
            Event::End => return failed,
            Event::Failed(e) => {
                eprintln!("error reading input: {e}");
                return true;
            }
        };
        tokio::select! {
            reply = session.execute(&line) => match reply {
                Ok(Reply::Text(text)) => emit(&text),
                Ok(Reply::Quit) => return failed,
                Err(e) => {
                    // At a terminal a failed command is part of the conversation; in a script
                    // it is what the exit code reports.
                    failed |= !interactive;
                    emit(&format!("error: {e}\n"));
                }
            },
            _ = term.recv() => return failed,
            _ = int.recv() => {
                failed |= !interactive;
                emit("interrupted\n");
                if !interactive {
                    return failed;
                }
            }
        }
    }
}

/// Writes to stdout and flushes; a closed stdout must not panic the shell.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// What the input thread read.
enum Event {
    Line(String),
    Interrupted,
    End,
    Failed(String),
}

/// Input read on a thread of its own (the line editor and stdin block), one line per request,
/// so that the prompt shows the current node and signals are handled while it waits.
struct Input {
    requests: std_mpsc::Sender<Option<String>>,
    events: tokio::sync::Mutex<mpsc::Receiver<Event>>,
}

impl Input {
    fn spawn(interactive: bool, nodes: Vec<String>) -> Input {
        let (requests, wanted) = std_mpsc::channel::<Option<String>>();
        let (events, received) = mpsc::channel(1);
        std::thread::spawn(move || {
            if interactive {
                edit(wanted, events, nodes);
            } else {
                pipe(wanted, events);
            }
        });
        Input {
            requests,
            events: tokio::sync::Mutex::new(received),
        }
    }

    /// Asks for the next line, shown after `prompt` at a terminal.
    fn request(&self, prompt: String) {
        let _ = self.requests.send(Some(prompt));
    }

    async fn next(&self) -> Event {
        self.events.lock().await.recv().await.unwrap_or(Event::End)
    }

    /// Lets the thread save the history and end.
    fn close(&self) {
        let _ = self.requests.send(None);
    }
}

fn pipe(wanted: std_mpsc::Receiver<Option<String>>, events: mpsc::Sender<Event>) {
    let mut lines = std::io::stdin().lock().lines();
    while let Ok(Some(_prompt)) = wanted.recv() {
        let event = match lines.next() {
            Some(Ok(line)) => Event::Line(line),
            Some(Err(e)) => Event::Failed(e.to_string()),
            None => Event::End,
        };
        if events.blocking_send(event).is_err() {
            return;
        }
    }
}

fn edit(
    wanted: std_mpsc::Receiver<Option<String>>,
    events: mpsc::Sender<Event>,
    nodes: Vec<String>,
) {
    let config = Config::builder()
        .auto_add_history(true)
        .history_ignore_space(true)
        .completion_type(CompletionType::List)
        .build();
    let mut editor = match Editor::<ShellHelper, FileHistory>::with_config(config) {
        Ok(editor) => editor,
        Err(e) => {
            let _ = events.blocking_send(Event::Failed(format!("line editor: {e}")));
            return;
        }
    };
    editor.set_helper(Some(ShellHelper { nodes }));
    let history = history_path();
    let _ = editor.load_history(&history);
    while let Ok(Some(prompt)) = wanted.recv() {
        let event = match editor.readline(&prompt) {
            Ok(line) => Event::Line(line),
            Err(ReadlineError::Interrupted) => Event::Interrupted,
            Err(ReadlineError::Eof) => Event::End,
            Err(e) => Event::Failed(e.to_string()),
        };
        if events.blocking_send(event).is_err() {
            break;
        }
    }
    let _ = editor.save_history(&history);
}

/// `~/.dynamo_node_shell_history`, or one in the temporary directory without a home.
fn history_path() -> PathBuf {
    const NAME: &str = ".dynamo_node_shell_history";
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(NAME),
        _ => std::env::temp_dir().join(NAME),
    }
}

/// Tab completion of command and node names for the line editor.
struct ShellHelper {
    nodes: Vec<String>,
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(shell::complete(line, pos, &self.nodes))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}
