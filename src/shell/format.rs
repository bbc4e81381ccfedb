//! What the shell prints: short, aligned, and the same for a person and for a test.

use std::time::Duration;

use super::command::{COMMANDS, find_spec};
use crate::cli::client::{handoff_cell, show_bytes, table, with_handoff_column};
use crate::config::QuorumConfig;
use crate::core::membership::RingStatus;
use crate::model::{Context, GetResult, MemberInfo, RingInfo};

/// Entries of a context's version vector shown before `+N`.
pub const CONTEXT_ENTRIES: usize = 4;

/// A context as the version vector it is, `n1:2 n3:1` (node: counter), so that a person sees
/// what a write with it supersedes; `-` for none. A node that restarted without its data has
/// a new actor id: its later lives show primed (`n3'`). `merge` keeps and sends the full token.
pub fn short_context(context: &Context) -> String {
    if context.is_empty() {
        return "-".to_string();
    }
    let mut entries: Vec<_> = context.clock().entries().collect();
    entries.sort_by(|a, b| (&a.0.node, a.0.incarnation).cmp(&(&b.0.node, b.0.incarnation)));
    let mut shown = Vec::with_capacity(entries.len());
    let mut lives = 0;
    for (i, (actor, entry)) in entries.iter().enumerate() {
        let same_node = i > 0 && entries[i - 1].0.node == actor.node;
        lives = if same_node { lives + 1 } else { 0 };
        shown.push(format!(
            "{}{}:{}",
            actor.node,
            "'".repeat(lives),
            entry.counter
        ));
    }
    if shown.len() > CONTEXT_ENTRIES {
        let more = shown.len() - CONTEXT_ENTRIES;
        shown.truncate(CONTEXT_ENTRIES);
        shown.push(format!("+{more}"));
    }
    shown.join(" ")
}

/// A value as text: UTF-8 as it is, other bytes escaped.
pub fn show_value(value: &[u8]) -> String {
    show_bytes(value)
}

/// What `get` prints: the value, or the siblings numbered, with the short context.
pub fn format_get(result: &GetResult) -> String {
    match result {
        GetResult::Value { value, context } => {
            format!(
                "{}  (context: {})\n",
                show_value(value),
                short_context(context)
            )
        }
        GetResult::Siblings { values, context } => {
            let mut out = format!(
                "{} siblings  (context: {})\n",
                values.len(),
                short_context(context)
            );
            for (i, value) in values.iter().enumerate() {
                out.push_str(&format!("  [{}] {}\n", i + 1, show_value(value)));
            }
            out
        }
        GetResult::NotFound { context } if context.is_empty() => "not found\n".to_string(),
        GetResult::NotFound { context } => format!(
            "not found  (deleted; context: {})\n",
            short_context(context)
        ),
    }
}

/// What `put` prints.
pub fn format_put(context: &Context) -> String {
    format!("ok  (context: {})\n", short_context(context))
}

/// What `merge` prints: how many values of the last read the write replaced.
pub fn format_merge(replaced: usize, context: &Context) -> String {
    format!(
        "ok, replaced {}  (context: {})\n",
        count(replaced, "value"),
        short_context(context)
    )
}

/// What `delete` prints.
pub fn format_delete(deleted: usize) -> String {
    format!("deleted {}\n", count(deleted, "value"))
}

/// The membership as `observer` sees it: liveness and ring status side by side, and the
/// handoff progress of members that report some.
pub fn format_members(observer: &str, members: &[MemberInfo]) -> String {
    let mut members: Vec<&MemberInfo> = members.iter().collect();
    members.sort_by(|a, b| a.node.cmp(&b.node));
    let mut rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let me = m.node == observer;
            vec![
                m.node.clone(),
                m.status.to_string(),
                m.ring.to_string(),
                m.http_addr.clone(),
                if me {
                    "(self)".to_string()
                } else {
                    format!("{} ago", secs(Duration::from_millis(m.last_heard_ms_ago)))
                },
                if me {
                    "-"
                } else if m.connected {
                    "yes"
                } else {
                    "no"
                }
                .to_string(),
            ]
        })
        .collect();
    let mut headers = vec![
        "NODE",
        "STATUS",
        "RING",
        "HTTP ADDRESS",
        "LAST HEARD",
        "CONNECTED",
    ];
    with_handoff_column(&mut headers, &mut rows, &members);
    format!(
        "members as {observer} sees them:\n{}",
        table(&headers, rows)
    )
}

/// What `leave` prints: where the node stands now and what comes next.
pub fn format_leave(member: &MemberInfo) -> String {
    let name = &member.node;
    let mut out = match member.ring {
        RingStatus::Left => format!(
            "{name} has left: its keys are with the other members; it serves nothing and can be stopped"
        ),
        RingStatus::Leaving => format!(
            "{name} is leaving: it hands its keys to the other members, then is `left` \
             (`wait {name} left`) and can be stopped"
        ),
        other => format!("{name} is {other}"),
    };
    if let Some(progress) = handoff_cell(&member.handoff) {
        out.push_str(&format!("  (handoff: {progress})"));
    }
    out.push('\n');
    out
}

/// What `remove` prints.
pub fn format_remove(member: &MemberInfo) -> String {
    match member.ring {
        RingStatus::Removed => format!(
            "{} removed: it owns nothing now; the others take its ranges and rebuild its replicas\n",
            member.node
        ),
        other => format!("{} is {other}\n", member.node),
    }
}

/// The ring as `observer` sees it, with each node's own key count (`None`: it did not say).
pub fn format_ring(observer: &str, ring: &RingInfo, keys: &[(String, Option<usize>)]) -> String {
    let mut nodes: Vec<_> = ring.nodes.iter().collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let rows = nodes
        .iter()
        .map(|n| {
            let count = keys
                .iter()
                .find(|(name, _)| *name == n.node)
                .and_then(|(_, k)| *k)
                .or(n.keys);
            vec![
                n.node.clone(),
                n.vnodes.to_string(),
                format!("{:.1}%", n.primary_share * 100.0),
                format!("{:.1}%", n.replica_share * 100.0),
                count.map_or("?".to_string(), |k| k.to_string()),
            ]
        })
        .collect();
    format!(
        "ring as {observer} sees it (version {}, n = {}); KEYS as each node counts its own:\n{}",
        ring.version,
        ring.n,
        table(&["NODE", "VNODES", "PRIMARY", "REPLICA", "KEYS"], rows)
    )
}

/// One node's quorum settings on one line.
pub fn format_config(node: &str, config: &QuorumConfig) -> String {
    format!(
        "{node}: n={} w={} r={} put_timeout_ms={} get_timeout_ms={}\n",
        config.n, config.w, config.r, config.put_timeout_ms, config.get_timeout_ms
    )
}

/// One row of `nodes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    /// Node name.
    pub name: String,
    /// Its HTTP base URL.
    pub url: String,
    /// Whether commands go to it by default.
    pub current: bool,
    /// What its process is doing, for a node the shell started.
    pub process: Option<String>,
}

/// The shell's nodes.
pub fn format_nodes(rows: &[NodeRow]) -> String {
    let local = rows.iter().any(|r| r.process.is_some());
    let mut headers = vec!["NODE", "HTTP"];
    if local {
        headers.push("PROCESS");
    }
    let cells = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                format!("{}{}", r.name, if r.current { " *" } else { "" }),
                r.url.clone(),
            ];
            if local {
                row.push(r.process.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    table(&headers, cells)
}

/// `0.8 s`: the precision a person reads at a glance.
pub fn secs(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// `help` (all commands, with those needing the local cluster marked when `local` is false)
/// or `help COMMAND`; `None` if there is no such command.
pub fn format_help(topic: Option<&str>, local: bool) -> Option<String> {
    if let Some(word) = topic {
        let spec = find_spec(word)?;
        let mut out = format!(
            "{}\n  {}\n",
            spec.usage.replace('\n', "\n  or: "),
            spec.summary
        );
        if spec.local_only && !local {
            out.push_str("  (only for the local cluster the shell started, not with --connect)\n");
        }
        return Some(out);
    }
    let mut out = String::from("commands:\n");
    for spec in COMMANDS {
        let mark = if spec.local_only && !local {
            " (local cluster only)"
        } else {
            ""
        };
        // Long usages take a line of their own, so the summaries stay in one column.
        let forms: Vec<&str> = spec.usage.lines().collect();
        for (i, form) in forms.iter().enumerate() {
            let last = i + 1 == forms.len();
            if !last || form.chars().count() > HELP_COLUMN {
                out.push_str(&format!("  {form}\n"));
                if last {
                    out.push_str(&format!("  {:HELP_COLUMN$}", ""));
                }
            } else {
                out.push_str(&format!("  {form:HELP_COLUMN$}"));
            }
        }
        out.push_str(&format!("  {}{mark}\n", spec.summary));
    }
    out.push_str(concat!(
        "Commands go to the node the prompt shows (`use NODE` changes it); `@NODE COMMAND` sends\n",
        "one command elsewhere. Nodes go by name or number (n2 or 2). Quote values with blanks:\n",
        "put k \"a b\". `help COMMAND` shows one command in full.\n",
    ));
    Some(out)
}

/// Width of the usage column of `help`.
const HELP_COLUMN: usize = 18;

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::ids::ActorId;
    use crate::core::membership::{HandoffProgress, Status};
    use crate::core::vclock::{Dot, VClock};
    use crate::model::RingNodeInfo;

    fn ctx(counter: u64) -> Context {
        let mut clock = VClock::new();
        clock.add_dot(&Dot::new(ActorId::new("n1", 1), counter), 0);
        clock.add_dot(&Dot::new(ActorId::new("n2", 7), counter), 0);
        Context::from_clock(clock)
    }

    #[test]
    fn contexts_show_as_version_vectors() {
        assert_eq!(short_context(&ctx(3)), "n1:3 n2:3");
        assert_eq!(short_context(&Context::empty()), "-");
        let mut clock = VClock::new();
        for (node, incarnation, counter) in [
            ("n3", 9, 1),
            ("n1", 5, 4),
            ("n3", 2, 7),
            ("n2", 1, 1),
            ("n4", 1, 2),
            ("n5", 1, 1),
        ] {
            clock.add_dot(&Dot::new(ActorId::new(node, incarnation), counter), 0);
        }
        assert_eq!(
            short_context(&Context::from_clock(clock)),
            "n1:4 n2:1 n3:7 n3':1 +2",
            "sorted by node, later lives primed, at most four entries"
        );
    }

    #[test]
    fn get_shows_a_clean_value_or_numbered_siblings() {
        let c = ctx(1);
        let short = short_context(&c);
        let one = GetResult::Value {
            value: Bytes::from_static(b"milk"),
            context: c.clone(),
        };
        assert_eq!(format_get(&one), format!("milk  (context: {short})\n"));
        let two = GetResult::Siblings {
            values: vec![Bytes::from_static(b"milk"), Bytes::from_static(b"\xffx")],
            context: c.clone(),
        };
        assert_eq!(
            format_get(&two),
            format!("2 siblings  (context: {short})\n  [1] milk\n  [2] \\xffx\n")
        );
        let none = GetResult::NotFound {
            context: Context::empty(),
        };
        assert_eq!(format_get(&none), "not found\n");
        let deleted = GetResult::NotFound { context: c };
        assert_eq!(
            format_get(&deleted),
            format!("not found  (deleted; context: {short})\n")
        );
    }

    #[test]
    fn writes_say_ok_with_the_new_context() {
        let c = ctx(2);
        let short = short_context(&c);
        assert_eq!(format_put(&c), format!("ok  (context: {short})\n"));
        assert_eq!(
            format_merge(2, &c),
            format!("ok, replaced 2 values  (context: {short})\n")
        );
        assert_eq!(
            format_merge(1, &c),
            format!("ok, replaced 1 value  (context: {short})\n")
        );
        assert_eq!(format_delete(1), "deleted 1 value\n");
    }

    fn member(node: &str, status: Status, heard: u64, connected: bool) -> MemberInfo {
        MemberInfo {
            node: node.into(),
            cluster_addr: String::new(),
            http_addr: format!("127.0.0.{}:8000", &node[1..]),
            status,
            heartbeat: 9,
            incarnation: 1,
            last_heard_ms_ago: heard,
            connected,
            ring: RingStatus::Valid,
            handoff: Default::default(),
        }
    }

    #[test]
    fn members_are_sorted_with_the_observer_as_self() {
        let text = format_members(
            "n1",
            &[
                member("n3", Status::Suspect, 6_300, false),
                member("n1", Status::Alive, 0, true),
                member("n2", Status::Alive, 400, true),
            ],
        );
        assert_eq!(
            text,
            "members as n1 sees them:\n\
             NODE  STATUS   RING   HTTP ADDRESS    LAST HEARD  CONNECTED\n\
             n1    alive    valid  127.0.0.1:8000  (self)      -\n\
             n2    alive    valid  127.0.0.2:8000  0.4 s ago   yes\n\
             n3    suspect  valid  127.0.0.3:8000  6.3 s ago   no\n"
        );
    }

    #[test]
    fn members_show_ring_statuses_and_handoff_progress_where_there_is_some() {
        let mut leaving = member("n3", Status::Alive, 200, true);
        leaving.ring = RingStatus::Leaving;
        leaving.handoff = HandoffProgress {
            handed: 7,
            remaining: 2,
        };
        let mut removed = member("n2", Status::Dead, 40_000, false);
        removed.ring = RingStatus::Removed;
        let text = format_members(
            "n1",
            &[leaving, removed, member("n1", Status::Alive, 0, true)],
        );
        assert_eq!(
            text,
            "members as n1 sees them:\n\
             NODE  STATUS  RING     HTTP ADDRESS    LAST HEARD  CONNECTED  HANDOFF\n\
             n1    alive   valid    127.0.0.1:8000  (self)      -          -\n\
             n2    dead    removed  127.0.0.2:8000  40.0 s ago  no         -\n\
             n3    alive   leaving  127.0.0.3:8000  0.2 s ago   yes        7 handed, 2 left\n"
        );
    }

    #[test]
    fn leave_and_remove_say_where_the_node_stands() {
        let mut me = member("n3", Status::Alive, 0, true);
        me.ring = RingStatus::Leaving;
        assert_eq!(
            format_leave(&me),
            "n3 is leaving: it hands its keys to the other members, then is `left` \
             (`wait n3 left`) and can be stopped\n"
        );
        me.ring = RingStatus::Left;
        me.handoff = HandoffProgress {
            handed: 12,
            remaining: 0,
        };
        assert_eq!(
            format_leave(&me),
            "n3 has left: its keys are with the other members; it serves nothing and can be \
             stopped  (handoff: 12 handed, 0 left)\n"
        );
        me.ring = RingStatus::Removed;
        assert_eq!(
            format_remove(&me),
            "n3 removed: it owns nothing now; the others take its ranges and rebuild its replicas\n"
        );
    }

    #[test]
    fn ring_shows_shares_and_each_nodes_own_key_count() {
        let node = |name: &str, share: f64, keys| RingNodeInfo {
            node: name.into(),
            vnodes: 128,
            primary_share: share,
            replica_share: 1.0,
            keys,
        };
        let ring = RingInfo {
            version: 5,
            n: 3,
            nodes: vec![node("n2", 0.5, None), node("n1", 0.5, Some(4))],
        };
        let keys = [("n2".to_string(), Some(7))];
        let text = format_ring("n1", &ring, &keys);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ring as n1 sees it (version 5, n = 3); KEYS as each node counts its own:"
        );
        assert_eq!(lines[1], "NODE  VNODES  PRIMARY  REPLICA  KEYS");
        assert_eq!(lines[2], "n1    128     50.0%    100.0%   4");
        assert_eq!(lines[3], "n2    128     50.0%    100.0%   7");
        let unknown = format_ring("n1", &ring, &[]);
        assert!(unknown.lines().nth(3).unwrap().ends_with('?'), "{unknown}");
    }

    #[test]
    fn nodes_mark_the_current_one_and_show_processes_when_local() {
        let row = |name: &str, current, process: Option<&str>| NodeRow {
            name: name.into(),
            url: format!("http://{name}"),
            current,
            process: process.map(str::to_string),
        };
        assert_eq!(
            format_nodes(&[
                row("n1", true, Some("running")),
                row("n2", false, Some("paused"))
            ]),
            "NODE  HTTP       PROCESS\nn1 *  http://n1  running\nn2    http://n2  paused\n"
        );
        assert_eq!(
            format_nodes(&[row("a", false, None), row("b", true, None)]),
            "NODE  HTTP\na     http://a\nb *   http://b\n"
        );
    }

    #[test]
    fn config_and_durations() {
        assert_eq!(
            format_config("n2", &QuorumConfig::default()),
            "n2: n=3 w=2 r=2 put_timeout_ms=5000 get_timeout_ms=5000\n"
        );
        assert_eq!(secs(Duration::from_millis(840)), "0.8 s");
        assert_eq!(secs(Duration::from_millis(12_960)), "13.0 s");
    }

    #[test]
    fn help_lists_every_command_and_explains_one() {
        let all = format_help(None, true).unwrap();
        for spec in COMMANDS {
            assert!(all.contains(spec.summary), "{} missing", spec.name);
        }
        assert!(!all.contains("local cluster only"));
        let attached = format_help(None, false).unwrap();
        assert!(attached.lines().any(
            |l| l.trim_start().starts_with("kill NODE") && l.ends_with("(local cluster only)")
        ));
        let wait = format_help(Some("wait"), true).unwrap();
        assert!(wait.starts_with("wait NODE STATUS [on NODE,..]"), "{wait}");
        assert!(wait.contains("leaving, left, removed"), "{wait}");
        let leave = format_help(Some("leave"), false).unwrap();
        assert!(leave.starts_with("leave [NODE]\n  drain a node"), "{leave}");
        assert!(!leave.contains("only for the local cluster"), "{leave}");
        assert!(
            wait.contains("\n  or: wait converged [within SECS]\n"),
            "{wait}"
        );
        assert!(
            all.contains(
                "  wait converged [within SECS]\n                      poll until the observers"
            ),
            "{all}"
        );
        assert!(all.contains("\n  ring                ring share"), "{all}");
        assert!(format_help(Some("exit"), true).unwrap().starts_with("quit"));
        assert_eq!(format_help(Some("frob"), true), None);
    }
}
