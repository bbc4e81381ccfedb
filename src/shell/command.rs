//! One line of shell input into a typed [`Command`], with errors that say how to fix it.
//!
//! Words are separated by blanks; `"..."` (with `\"`, `\\`, `\n`, `\t` escapes) and `'...'`
//! quote a word with blanks in it, and a backslash outside quotes takes the next character
//! as it is. A line starting with `#` is a comment. `@NODE` before a command sends that one
//! command to NODE instead of the current node.

use std::time::Duration;

use bytes::Bytes;

use crate::config::ConfigUpdate;
use crate::core::membership::{RingStatus, Status};
use crate::model::{MemberInfo, validate_key, validate_value};

/// One parsed line: a command and the node it goes to when `@NODE` named one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The node named by an `@NODE` prefix, if any.
    pub target: Option<String>,
    /// What to do.
    pub command: Command,
}

/// Everything the shell can do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Blind write: `put KEY VALUE`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Read: `get KEY`.
    Get {
        /// The key.
        key: Bytes,
    },
    /// Write with the context of the last read of the key: `merge KEY VALUE`.
    Merge {
        /// The key.
        key: Bytes,
        /// The value that replaces what the last read saw.
        value: Bytes,
    },
    /// Delete what the last read of the key saw (reading it first if it was not read).
    Delete {
        /// The key.
        key: Bytes,
    },
    /// The membership as the target node sees it.
    Members,
    /// Ring shares and key counts.
    Ring,
    /// The shell's nodes: names, addresses, processes.
    Nodes,
    /// Shows (no settings) or changes quorum settings: `config w=2 r=2`.
    Config(ConfigUpdate),
    /// Drains a node (the target when `None`): it hands its keys to the others, then is `left`.
    Leave(Option<String>),
    /// Declares a member that is gone for good removed: `remove NODE`.
    Remove(String),
    /// Makes a node the target of the following commands.
    Use(String),
    /// SIGKILL a node of the local cluster.
    Kill(String),
    /// Start a node of the local cluster again: with empty memory, or on its data directory.
    Restart(String),
    /// SIGSTOP a node of the local cluster.
    Pause(String),
    /// SIGCONT a paused node.
    Resume(String),
    /// Cut the local cluster into groups of node names; one group means "it against the rest".
    Partition(Vec<Vec<String>>),
    /// Remove every partition rule.
    Heal,
    /// Poll until a condition holds, or fail after a deadline.
    Wait {
        /// The condition.
        until: WaitFor,
        /// The deadline, if not the session's default.
        within: Option<Duration>,
    },
    /// The command list, or one command's usage.
    Help(Option<String>),
    /// Stop every process the shell started, and leave.
    Quit,
}

/// What a member can be seen as: its liveness, or its place on the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Alive, suspect or dead (each node judges on its own clock).
    Liveness(Status),
    /// Joining, valid, leaving, left or removed (the cluster agrees on it).
    Ring(RingStatus),
}

impl NodeState {
    /// Every word `wait` takes for a state, liveness first.
    pub const WORDS: [&'static str; 8] = [
        "alive", "suspect", "dead", "joining", "valid", "leaving", "left", "removed",
    ];

    /// The state a word names.
    pub fn parse(word: &str) -> Option<NodeState> {
        use NodeState::{Liveness, Ring};
        Some(match word {
            "alive" => Liveness(Status::Alive),
            "suspect" => Liveness(Status::Suspect),
            "dead" => Liveness(Status::Dead),
            "joining" => Ring(RingStatus::Joining),
            "valid" => Ring(RingStatus::Valid),
            "leaving" => Ring(RingStatus::Leaving),
            "left" => Ring(RingStatus::Left),
            "removed" => Ring(RingStatus::Removed),
            _ => return None,
        })
    }

    /// What `member` shows of the same kind (its liveness, or its ring status).
    pub fn of(self, member: &MemberInfo) -> NodeState {
        match self {
            NodeState::Liveness(_) => NodeState::Liveness(member.status),
            NodeState::Ring(_) => NodeState::Ring(member.ring),
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeState::Liveness(status) => status.fmt(f),
            NodeState::Ring(ring) => ring.fmt(f),
        }
    }
}

/// What `wait` waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// Observers list `node` with `status`.
    Status {
        /// The node looked at.
        node: String,
        /// The liveness or ring status it must have.
        status: NodeState,
        /// Who must see it so; empty: every other running node.
        observers: Vec<String>,
    },
    /// Every running node sees every running node alive, with a session open.
    Converged,
}

/// Why a line is not a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first word names no command.
    #[error("unknown command `{0}`; `help` lists the commands")]
    UnknownCommand(String),
    /// The command's words do not fit its usage.
    #[error("{problem}; usage: {}", usage.replace('\n', " or "))]
    Usage {
        /// What is wrong.
        problem: String,
        /// The command's usage line.
        usage: &'static str,
    },
    /// A quote was opened and never closed.
    #[error("unclosed {0} quote")]
    UnclosedQuote(char),
    /// `@NODE` with nothing after it.
    #[error("`@{0}` needs a command after it, e.g. `@{0} get KEY`")]
    NoCommandAfterTarget(String),
}

/// A command's name, usage and one-line summary: the source of `help`, of usage errors and of
/// tab completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// The word that starts it.
    pub name: &'static str,
    /// Its usage: one line per form.
    pub usage: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Whether its arguments are node names (for completion).
    pub takes_nodes: bool,
    /// Whether it needs the local cluster the shell started.
    pub local_only: bool,
}

const fn spec(
    name: &'static str,
    usage: &'static str,
    summary: &'static str,
    takes_nodes: bool,
    local_only: bool,
) -> CommandSpec {
    CommandSpec {
        name,
        usage,
        summary,
        takes_nodes,
        local_only,
    }
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[CommandSpec] = &[
    spec(
        "put",
        "put KEY VALUE",
        "blind write: a new sibling of whatever is there",
        false,
        false,
    ),
    spec(
        "get",
        "get KEY",
        "read: the value, or the siblings numbered, and a short context",
        false,
        false,
    ),
    spec(
        "merge",
        "merge KEY VALUE",
        "write with the context of your last `get KEY`: VALUE replaces what it saw",
        false,
        false,
    ),
    spec(
        "delete",
        "delete KEY",
        "delete what your last `get KEY` saw (reads it first if you did not)",
        false,
        false,
    ),
    spec(
        "members",
        "members",
        "membership as the node sees it: name, address, status, last heard",
        false,
        false,
    ),
    spec(
        "ring",
        "ring",
        "ring share and key count of every node",
        false,
        false,
    ),
    spec(
        "nodes",
        "nodes",
        "the shell's nodes, their HTTP addresses and processes (* = current)",
        false,
        false,
    ),
    spec(
        "config",
        "config [w=W] [r=R] [put_timeout_ms=T] [get_timeout_ms=T]",
        "show or change the quorum settings of every node (of one with @NODE); N is the cluster's, set when the nodes start",
        false,
        false,
    ),
    spec(
        "leave",
        "leave [NODE]",
        "drain a node (default: the current one): it hands its keys to the others, then is `left` and can be stopped",
        true,
        false,
    ),
    spec(
        "remove",
        "remove NODE",
        "a node gone for good: it stops owning anything, the others rebuild its replicas (refused while it is alive)",
        true,
        false,
    ),
    spec(
        "use",
        "use NODE",
        "send the following commands to NODE (one command: @NODE COMMAND)",
        true,
        false,
    ),
    spec(
        "kill",
        "kill NODE",
        "SIGKILL the node's process: a crash",
        true,
        true,
    ),
    spec(
        "restart",
        "restart NODE",
        "start the node again (same addresses; empty memory, or its --data-dir)",
        true,
        true,
    ),
    spec(
        "pause",
        "pause NODE",
        "SIGSTOP the node: silent, connections open",
        true,
        true,
    ),
    spec("resume", "resume NODE", "SIGCONT a paused node", true, true),
    spec(
        "partition",
        "partition A,B | C",
        "cut the nodes of different groups apart (one group: it against the rest); needs root and iptables",
        true,
        true,
    ),
    spec("heal", "heal", "end the partition", false, true),
    spec(
        "wait",
        "wait NODE STATUS [on NODE,..] [within SECS]\nwait converged [within SECS]",
        "poll until the observers (default: every other running node) see NODE so (STATUS: alive, suspect, dead, or a ring status: joining, valid, leaving, left, removed); or until every running node sees every one alive",
        true,
        false,
    ),
    spec(
        "help",
        "help [COMMAND]",
        "this list, or one command's usage",
        false,
        false,
    ),
    spec(
        "quit",
        "quit",
        "stop every node the shell started, and leave (also: exit, Ctrl-D)",
        false,
        false,
    ),
];

/// The spec of a command word (aliases included).
pub fn find_spec(word: &str) -> Option<&'static CommandSpec> {
    let name = match word {
        "exit" => "quit",
        "?" => "help",
        other => other,
    };
    COMMANDS.iter().find(|c| c.name == name)
}

/// Parses one line; `Ok(None)` for a blank line or a comment.
pub fn parse(line: &str) -> Result<Option<Line>, ParseError> {
    if line.trim_start().starts_with('#') {
        return Ok(None);
    }
    let mut words = tokenize(line)?;
    if words.is_empty() {
        return Ok(None);
    }
    let target = match words[0].strip_prefix('@') {
        Some(node) => {
            let node = node.to_string();
            words.remove(0);
            if words.is_empty() {
                return Err(ParseError::NoCommandAfterTarget(node));
            }
            Some(node)
        }
        None => None,
    };
    let name = words.remove(0);
    let spec = find_spec(&name).ok_or(ParseError::UnknownCommand(name))?;
    let command = parse_command(spec, words)?;
    Ok(Some(Line { target, command }))
}

fn parse_command(spec: &'static CommandSpec, mut args: Vec<String>) -> Result<Command, ParseError> {
    let usage = |problem: String| ParseError::Usage {
        problem,
        usage: spec.usage,
    };
    let given = args.len();
    let count = |n: usize| -> Result<(), ParseError> {
        match given.cmp(&n) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(usage(format!(
                "{} needs {n} argument{}",
                spec.name,
                if n == 1 { "" } else { "s" }
            ))),
            std::cmp::Ordering::Greater => Err(usage(format!(
                "{} takes {n} argument{}, got {} (quote a value with blanks: \"a b\")",
                spec.name,
                if n == 1 { "" } else { "s" },
                given
            ))),
        }
    };
    let command = match spec.name {
        "put" | "merge" => {
            count(2)?;
            let value = Bytes::from(args.pop().unwrap_or_default());
            let key = key(args.pop().unwrap_or_default()).map_err(usage)?;
            validate_value(&value).map_err(|e| usage(e.to_string()))?;
            if spec.name == "put" {
                Command::Put { key, value }
            } else {
                Command::Merge { key, value }
            }
        }
        "get" | "delete" => {
            count(1)?;
            let key = key(args.pop().unwrap_or_default()).map_err(usage)?;
            if spec.name == "get" {
                Command::Get { key }
            } else {
                Command::Delete { key }
            }
        }
        "members" | "ring" | "nodes" | "heal" | "quit" => {
            count(0)?;
            match spec.name {
                "members" => Command::Members,
                "ring" => Command::Ring,
                "nodes" => Command::Nodes,
                "heal" => Command::Heal,
                _ => Command::Quit,
            }
        }
        "use" | "kill" | "restart" | "pause" | "resume" => {
            count(1)?;
            let node = args.pop().unwrap_or_default();
            match spec.name {
                "use" => Command::Use(node),
                "kill" => Command::Kill(node),
                "restart" => Command::Restart(node),
                "pause" => Command::Pause(node),
                _ => Command::Resume(node),
            }
        }
        "config" => Command::Config(config_update(&args).map_err(usage)?),
        "leave" => {
            if given > 1 {
                return Err(usage(format!(
                    "leave takes at most 1 argument, got {given}"
                )));
            }
            Command::Leave(args.pop())
        }
        "remove" => {
            count(1)?;
            Command::Remove(args.pop().unwrap_or_default())
        }
        "partition" => Command::Partition(groups(&args).map_err(usage)?),
        "wait" => wait(args).map_err(usage)?,
        "help" => {
            if args.len() > 1 {
                return Err(usage(format!(
                    "help takes at most 1 argument, got {}",
                    args.len()
                )));
            }
            Command::Help(args.pop())
        }
        other => return Err(ParseError::UnknownCommand(other.to_string())),
    };
    Ok(command)
}

fn key(word: String) -> Result<Bytes, String> {
    validate_key(word.as_bytes()).map_err(|e| e.to_string())?;
    Ok(Bytes::from(word))
}

/// `w=2 r=1 ...` into a [`ConfigUpdate`]; no words is an empty update (show the settings).
fn config_update(args: &[String]) -> Result<ConfigUpdate, String> {
    let mut update = ConfigUpdate::default();
    for arg in args {
        let Some((name, value)) = arg.split_once('=') else {
            return Err(format!("`{arg}` is not NAME=VALUE"));
        };
        let number = |what: &str| -> Result<u64, String> {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("{what} must be a whole number, got `{value}`"))
        };
        let small = |what: &str| -> Result<usize, String> {
            usize::try_from(number(what)?).map_err(|_| format!("{what} is too large"))
        };
        match name.trim() {
            "n" => {
                return Err(
                    "n is the cluster's: it is set when the nodes start (--n), not at runtime"
                        .into(),
                );
            }
            "w" => update.w = Some(small("w")?),
            "r" => update.r = Some(small("r")?),
            "put_timeout_ms" => update.put_timeout_ms = Some(number("put_timeout_ms")?),
            "get_timeout_ms" => update.get_timeout_ms = Some(number("get_timeout_ms")?),
            other => {
                return Err(format!(
                    "unknown setting `{other}` (settings: w, r, put_timeout_ms, get_timeout_ms)"
                ));
            }
        }
    }
    Ok(update)
}

/// `A,B | C` (in any spacing) into groups of names.
fn groups(args: &[String]) -> Result<Vec<Vec<String>>, String> {
    let text = args.join(" ");
    if text.trim().is_empty() {
        return Err("partition needs at least one group of nodes".into());
    }
    let groups: Vec<Vec<String>> = text
        .split('|')
        .map(|group| {
            group
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|name| !name.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect();
    if groups.iter().any(Vec::is_empty) {
        return Err("every group between `|` needs at least one node".into());
    }
    Ok(groups)
}

fn wait(args: Vec<String>) -> Result<Command, String> {
    let (args, within) = match args.iter().position(|a| a == "within") {
        Some(at) => {
            let rest = &args[at + 1..];
            let [secs] = rest else {
                return Err(
                    "`within` takes one duration, e.g. `within 30` or `within 500ms`".into(),
                );
            };
            (args[..at].to_vec(), Some(duration(secs)?))
        }
        None => (args, None),
    };
    let until = match args.as_slice() {
        [] => return Err("wait for what?".into()),
        [word] if word == "converged" => WaitFor::Converged,
        [node, status, rest @ ..] => {
            let status = NodeState::parse(status).ok_or_else(|| {
                format!(
                    "`{status}` is no status (alive, suspect, dead; joining, valid, leaving, \
                     left, removed)"
                )
            })?;
            let observers = match rest {
                [] => Vec::new(),
                [on, names @ ..] if on == "on" && !names.is_empty() => names
                    .join(",")
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect(),
                _ => return Err("after the status comes `on NODE,..` or `within SECS`".into()),
            };
            WaitFor::Status {
                node: node.clone(),
                status,
                observers,
            }
        }
        [other] => {
            return Err(format!(
                "`wait {other}`: give a status after the node, or say `wait converged`"
            ));
        }
    };
    Ok(Command::Wait { until, within })
}

/// `30`, `2.5`, `30s` or `500ms`.
fn duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is no duration (e.g. 30, 2.5s, 500ms)");
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else {
        (text.strip_suffix('s').unwrap_or(text), 1.0)
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let secs = value * scale;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Splits a line into words, honouring quotes and backslashes.
pub fn tokenize(line: &str) -> Result<Vec<String>, ParseError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            quote @ ('"' | '\'') => {
                in_word = true;
                quoted(&mut chars, quote, &mut word)?;
            }
            '\\' => {
                in_word = true;
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Appends to `word` what stands before the closing `quote`; within double quotes a backslash
/// escapes the next character (`\n` and `\t` make a newline and a tab), within single quotes
/// it is itself.
fn quoted(
    chars: &mut impl Iterator<Item = char>,
    quote: char,
    word: &mut String,
) -> Result<(), ParseError> {
    loop {
        match chars.next() {
            None => return Err(ParseError::UnclosedQuote(quote)),
            Some(c) if c == quote => return Ok(()),
            Some('\\') if quote == '"' => match chars.next() {
                None => return Err(ParseError::UnclosedQuote(quote)),
                Some('n') => word.push('\n'),
                Some('t') => word.push('\t'),
                Some(other) => word.push(other),
            },
            Some(other) => word.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cmd(line: &str) -> Command {
        parse(line).unwrap().unwrap().command
    }

    fn err(line: &str) -> String {
        parse(line).unwrap_err().to_string()
    }

    #[test]
    fn key_value_commands() {
        assert_eq!(
            cmd("put cart:alice milk"),
            Command::Put {
                key: Bytes::from_static(b"cart:alice"),
                value: Bytes::from_static(b"milk"),
            }
        );
        assert_eq!(
            cmd("  merge cart \"milk, bread\"  "),
            Command::Merge {
                key: Bytes::from_static(b"cart"),
                value: Bytes::from_static(b"milk, bread"),
            }
        );
        assert_eq!(
            cmd("get 'a b'"),
            Command::Get {
                key: Bytes::from_static(b"a b")
            }
        );
        assert_eq!(
            cmd("delete k"),
            Command::Delete {
                key: Bytes::from_static(b"k")
            }
        );
        assert_eq!(
            cmd("put k ''"),
            Command::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::new(),
            },
            "an empty value is a value"
        );
    }

    #[test]
    fn a_target_prefix_names_the_node_of_one_command() {
        let line = parse("@n2 get k").unwrap().unwrap();
        assert_eq!(line.target.as_deref(), Some("n2"));
        assert_eq!(
            line.command,
            Command::Get {
                key: Bytes::from_static(b"k")
            }
        );
        assert_eq!(parse("get k").unwrap().unwrap().target, None);
        assert!(err("@n2").contains("`@n2` needs a command after it"));
    }

    #[test]
    fn blank_lines_and_comments_are_nothing() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("   \t").unwrap(), None);
        assert_eq!(parse("  # put k v").unwrap(), None);
    }

    #[test]
    fn wrong_words_say_what_is_wrong_and_show_the_usage() {
        assert_eq!(
            err("frob k"),
            "unknown command `frob`; `help` lists the commands"
        );
        assert_eq!(err("put k"), "put needs 2 arguments; usage: put KEY VALUE");
        assert!(err("put k a b").starts_with("put takes 2 arguments, got 3"));
        assert_eq!(err("get"), "get needs 1 argument; usage: get KEY");
        assert!(err("get ''").contains("key is empty"));
        assert!(
            err(&format!(
                "get {}",
                "k".repeat(crate::config::MAX_KEY_BYTES + 1)
            ))
            .contains("longer than")
        );
        assert_eq!(
            err("members now"),
            "members takes 0 arguments, got 1 (quote a value with blanks: \"a b\"); usage: members"
        );
        assert_eq!(err("put k \"v"), "unclosed \" quote");
        assert_eq!(err("get 'k"), "unclosed ' quote");
    }

    #[test]
    fn node_commands_and_aliases() {
        assert_eq!(cmd("kill n2"), Command::Kill("n2".into()));
        assert_eq!(cmd("restart 3"), Command::Restart("3".into()));
        assert_eq!(cmd("pause n1"), Command::Pause("n1".into()));
        assert_eq!(cmd("resume n1"), Command::Resume("n1".into()));
        assert_eq!(cmd("use n3"), Command::Use("n3".into()));
        assert_eq!(cmd("exit"), Command::Quit);
        assert_eq!(cmd("quit"), Command::Quit);
        assert_eq!(cmd("?"), Command::Help(None));
        assert_eq!(cmd("help put"), Command::Help(Some("put".into())));
        assert!(err("kill").contains("usage: kill NODE"));
    }

    #[test]
    fn leave_takes_an_optional_node_and_remove_one() {
        assert_eq!(cmd("leave"), Command::Leave(None));
        assert_eq!(cmd("leave n3"), Command::Leave(Some("n3".into())));
        let line = parse("@n2 leave").unwrap().unwrap();
        assert_eq!(
            (line.target.as_deref(), line.command),
            (Some("n2"), Command::Leave(None))
        );
        assert_eq!(cmd("remove n4"), Command::Remove("n4".into()));
        assert_eq!(
            err("leave n2 n3"),
            "leave takes at most 1 argument, got 2; usage: leave [NODE]"
        );
        assert_eq!(err("remove"), "remove needs 1 argument; usage: remove NODE");
    }

    #[test]
    fn config_takes_named_numbers() {
        assert_eq!(cmd("config"), Command::Config(ConfigUpdate::default()));
        assert_eq!(
            cmd("config w=1 r=1 put_timeout_ms=800"),
            Command::Config(ConfigUpdate {
                n: None,
                w: Some(1),
                r: Some(1),
                put_timeout_ms: Some(800),
                get_timeout_ms: None,
            })
        );
        assert!(err("config w=two").contains("w must be a whole number, got `two`"));
        assert!(err("config q=1").contains("unknown setting `q`"));
        assert!(err("config w").contains("`w` is not NAME=VALUE"));
        assert!(
            err("config n=3").contains("n is the cluster's: it is set when the nodes start"),
            "{}",
            err("config n=3")
        );
    }

    #[test]
    fn partition_groups_in_any_spacing() {
        let expected = Command::Partition(vec![vec!["n1".into()], vec!["n2".into(), "n3".into()]]);
        assert_eq!(cmd("partition n1 | n2,n3"), expected);
        assert_eq!(cmd("partition n1|n2, n3"), expected);
        assert_eq!(cmd("partition n1 | n2 n3"), expected);
        assert_eq!(
            cmd("partition n2"),
            Command::Partition(vec![vec!["n2".into()]])
        );
        assert!(err("partition").contains("at least one group"));
        assert!(err("partition n1 | | n2").contains("every group"));
        assert!(err("partition n1 |").contains("every group"));
    }

    #[test]
    fn wait_for_a_status_or_convergence_with_an_optional_deadline() {
        assert_eq!(
            cmd("wait n1 suspect on n2"),
            Command::Wait {
                until: WaitFor::Status {
                    node: "n1".into(),
                    status: NodeState::Liveness(Status::Suspect),
                    observers: vec!["n2".into()],
                },
                within: None,
            }
        );
        assert_eq!(
            cmd("wait n1 alive on n2, n3 within 2.5s"),
            Command::Wait {
                until: WaitFor::Status {
                    node: "n1".into(),
                    status: NodeState::Liveness(Status::Alive),
                    observers: vec!["n2".into(), "n3".into()],
                },
                within: Some(Duration::from_millis(2500)),
            }
        );
        assert_eq!(
            cmd("wait n3 dead"),
            Command::Wait {
                until: WaitFor::Status {
                    node: "n3".into(),
                    status: NodeState::Liveness(Status::Dead),
                    observers: vec![],
                },
                within: None,
            }
        );
        assert_eq!(
            cmd("wait converged within 500ms"),
            Command::Wait {
                until: WaitFor::Converged,
                within: Some(Duration::from_millis(500)),
            }
        );
        assert_eq!(
            err("wait"),
            "wait for what?; usage: wait NODE STATUS [on NODE,..] [within SECS] \
             or wait converged [within SECS]"
        );
        assert_eq!(
            cmd("wait n3 left on n1"),
            Command::Wait {
                until: WaitFor::Status {
                    node: "n3".into(),
                    status: NodeState::Ring(RingStatus::Left),
                    observers: vec!["n1".into()],
                },
                within: None,
            }
        );
        for word in NodeState::WORDS {
            let state = NodeState::parse(word).unwrap();
            assert_eq!(state.to_string(), word, "a state shows as its word");
        }
        assert!(err("wait n1 sleepy").contains("`sleepy` is no status"));
        assert!(err("wait n1 alive within").contains("`within` takes one duration"));
        assert!(err("wait n1 alive within soon").contains("`soon` is no duration"));
        assert!(err("wait n1 alive on").contains("after the status"));
        assert!(err("wait n1").contains("give a status"));
    }

    #[test]
    fn every_command_has_a_spec_with_its_name_first_in_the_usage() {
        for spec in COMMANDS {
            for form in spec.usage.lines() {
                assert!(form.starts_with(spec.name), "{spec:?}");
            }
            assert_eq!(find_spec(spec.name), Some(spec));
        }
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(
            tokenize(r#"a "b c" 'd e' f\ g "h\"i" "\n""#).unwrap(),
            ["a", "b c", "d e", "f g", "h\"i", "\n"]
        );
        assert_eq!(
            tokenize(r#"x"y"z"#).unwrap(),
            ["xyz"],
            "quotes join within a word"
        );
        assert_eq!(
            tokenize(r#""""#).unwrap(),
            [""],
            "an empty quoted word is a word"
        );
    }

    proptest! {
        /// Any word survives a round trip through double quotes with escapes.
        #[test]
        fn quoted_words_round_trip(words in proptest::collection::vec(".*", 0..5)) {
            let line: Vec<String> = words
                .iter()
                .map(|w| format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            prop_assert_eq!(tokenize(&line.join(" ")).unwrap(), words);
        }

        /// The parser never panics, whatever the line.
        #[test]
        fn any_line_parses_or_errs(line in ".*") {
            let _ = parse(&line);
        }
    }
}
