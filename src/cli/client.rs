//! `get`, `put`, `delete`, `status`, `leave` and `remove`: one HTTP request (or three) to one
//! node.

use std::ffi::OsString;
use std::io::{IsTerminal, Read};
use std::os::unix::ffi::OsStringExt;

use std::time::Duration;

use bytes::Bytes;

use super::{CliError, DeleteArgs, GetArgs, LeaveArgs, PutArgs, RemoveArgs, Target};
use crate::core::membership::{HandoffProgress, RingStatus, Status};
use crate::http::{DEFAULT_TIMEOUT, HttpClient, HttpError, metric_sum};
use crate::model::{
    Context, GetResult, Health, MemberInfo, RingInfo, validate_key, validate_value,
};

/// `dynamo-node get`: prints the value or the numbered siblings, then the context.
pub async fn get(args: GetArgs) -> Result<(), CliError> {
    let key = key_bytes(args.key)?;
    let client = args.target.client()?;
    let result = client
        .get(&key, args.r)
        .await
        .map_err(|e| failed(&client, e))?;
    super::emit(&format_get(&result));
    match result {
        GetResult::NotFound { .. } => Err(CliError::NotFound),
        _ => Ok(()),
    }
}

/// `dynamo-node put`: prints the context of the new version.
pub async fn put(args: PutArgs) -> Result<(), CliError> {
    let key = key_bytes(args.key)?;
    let value = match args.value {
        Some(value) => value.into_vec(),
        None => read_stdin()?,
    };
    validate_value(&value).map_err(|e| CliError::Usage(e.to_string()))?;
    let context = parse_context(args.context.as_deref())?;
    let client = args.target.client()?;
    let context = client
        .put(&key, Bytes::from(value), context.as_ref(), args.w)
        .await
        .map_err(|e| failed(&client, e))?;
    super::emit(&format!("context: {context}\n"));
    Ok(())
}

/// `dynamo-node delete`: prints `deleted`.
pub async fn delete(args: DeleteArgs) -> Result<(), CliError> {
    let key = key_bytes(args.key)?;
    let context = parse_context(args.context.as_deref())?;
    let client = args.target.client()?;
    client
        .delete(&key, context.as_ref(), args.w)
        .await
        .map_err(|e| failed(&client, e))?;
    super::emit("deleted\n");
    Ok(())
}

/// `dynamo-node status`: health, members and ring of one node, as tables.
pub async fn status(target: Target) -> Result<(), CliError> {
    let client = target.client()?;
    let (health, members, ring) = tokio::join!(health_of(&client), client.members(), client.ring());
    let health = health.map_err(|e| failed(&client, e))?;
    let members = members.map_err(|e| failed(&client, e))?;
    let ring = ring.map_err(|e| failed(&client, e))?;
    // Each node counts its own activity: ask every member we can reach (a removed one is gone).
    let reachable = members.iter().filter(|m| {
        m.status != Status::Dead && m.ring != RingStatus::Removed && !m.http_addr.is_empty()
    });
    let this = &client;
    let activity = futures::future::join_all(reachable.map(|m| async move {
        let metrics = match this.peer(&m.http_addr, Duration::from_secs(2)) {
            Ok(node) => node.metrics().await.ok(),
            Err(_) => None,
        };
        (m.node.clone(), metrics)
    }))
    .await;
    let mut out = format_status(client.base_url(), &health, &members, &ring);
    out.push_str(&format_activity(&activity));
    super::emit(&out);
    Ok(())
}

/// A node's health, also when it answers 503: a node that cannot serve (it left, was removed,
/// or its actor tree gave up) still says who it is and why.
pub(crate) async fn health_of(client: &HttpClient) -> Result<Health, HttpError> {
    let answer = client.health().await;
    if let Err(HttpError::Api {
        status: 503, body, ..
    }) = &answer
        && let Ok(health) = serde_json::from_value::<Health>(body.clone())
    {
        return Ok(health);
    }
    answer
}

/// `dynamo-node leave`: the node starts draining; prints where it stands and what comes next.
pub async fn leave(args: LeaveArgs) -> Result<(), CliError> {
    if args.node.trim().is_empty() {
        return Err(CliError::Usage(
            "--node must name the node that leaves".into(),
        ));
    }
    let client = args.auth.client(args.node, DEFAULT_TIMEOUT)?;
    let member = client.leave().await.map_err(|e| match e.kind() {
        // A removed node and the last valid member cannot leave; a node that is no member
        // refuses.
        Some("conflict" | "not_a_member") => CliError::Failed(format!(
            "{}: cannot leave: {}",
            client.base_url(),
            api_message(&e)
        )),
        _ => failed(&client, e),
    })?;
    super::emit(&format_leave(client.base_url(), &member));
    Ok(())
}

/// `dynamo-node remove`: the named member stops owning anything; prints its entry.
pub async fn remove(args: RemoveArgs) -> Result<(), CliError> {
    let name = args.name.trim();
    if name.is_empty() {
        return Err(CliError::Usage(
            "NAME must name a member (`dynamo-node status` lists them)".into(),
        ));
    }
    let client = args.target.client()?;
    let url = client.base_url().to_string();
    let member = client.remove(name).await.map_err(|e| {
        let refused = |hint: String| {
            CliError::Failed(format!(
                "{url}: cannot remove {name}: {}\nhint: {hint}",
                api_message(&e)
            ))
        };
        match e.kind() {
            Some("member_alive") => refused(format!(
                "a live node drains instead (`dynamo-node leave --node <its URL>`); a node that \
                 is gone for good can be removed once {url} sees it suspect or dead \
                 (`dynamo-node status --node {url}`)"
            )),
            Some("conflict") => refused(format!(
                "a node does not remove itself: ask another member, or drain it with \
                 `dynamo-node leave --node {url}`"
            )),
            Some("unknown_member") => refused(format!(
                "`dynamo-node status --node {url}` lists the members"
            )),
            Some("invalid_member") => CliError::Usage(format!("{url}: {}", api_message(&e))),
            _ => failed(&client, e),
        }
    })?;
    super::emit(&format_remove(&member));
    Ok(())
}

/// The text `leave` prints for the node's entry after the request.
pub fn format_leave(url: &str, member: &MemberInfo) -> String {
    let name = &member.node;
    let mut out = format!("node {name} at {url}: ring status {}\n", member.ring);
    match member.ring {
        RingStatus::Left => out.push_str(&format!(
            "{name} has handed its keys to the other members and left the cluster: it serves \
             nothing and can be stopped\n"
        )),
        _ => out.push_str(&format!(
            "{name} hands every key it holds to the other members, then reports `left`; after \
             that it can be stopped\nfollow it with `dynamo-node status --node {url}` (HANDOFF: \
             keys handed, keys left)\n"
        )),
    }
    if let Some(progress) = handoff_cell(&member.handoff) {
        out.push_str(&format!("handoff so far: {progress}\n"));
    }
    out
}

/// The text `remove` prints for the removed member's entry.
pub fn format_remove(member: &MemberInfo) -> String {
    format!(
        "node {}: ring status {}\nit owns nothing now: the other members take its ranges and \
         anti-entropy rebuilds its replicas; the name cannot come back\n",
        member.node, member.ring
    )
}

/// A member's handoff progress, `12 handed, 3 left`; `None` when it reports none.
pub(crate) fn handoff_cell(progress: &HandoffProgress) -> Option<String> {
    (progress.handed > 0 || progress.remaining > 0)
        .then(|| format!("{} handed, {} left", progress.handed, progress.remaining))
}

/// Adds the HANDOFF column to a member table when some member reports progress (`-` for the
/// others); a cluster at rest keeps its table narrow.
pub(crate) fn with_handoff_column(
    headers: &mut Vec<&'static str>,
    rows: &mut [Vec<String>],
    members: &[&MemberInfo],
) {
    let cells: Vec<Option<String>> = members.iter().map(|m| handoff_cell(&m.handoff)).collect();
    if cells.iter().all(Option::is_none) {
        return;
    }
    headers.push("HANDOFF");
    for (row, cell) in rows.iter_mut().zip(cells) {
        row.push(cell.unwrap_or_else(|| "-".to_string()));
    }
}

/// The `message` of an API error, or the whole error.
fn api_message(error: &HttpError) -> String {
    match error {
        HttpError::Api { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The activity table of `status`: what each node's `/metrics` counts (`-` when unreachable).
pub fn format_activity(nodes: &[(String, Option<String>)]) -> String {
    const SUCCESS: [&str; 3] = ["\"ok\"", "\"not_found\"", "\"siblings\""];
    let rows = nodes
        .iter()
        .map(|(node, text)| {
            let Some(text) = text else {
                let mut row = vec![node.clone()];
                row.extend(std::iter::repeat_n("-".to_string(), 9));
                return row;
            };
            let sum = |name: &str| metric_sum(text, name, |_| true).unwrap_or(0.0);
            let requests = sum("dynamo_requests_total");
            let errors = metric_sum(text, "dynamo_requests_total", |labels| {
                !SUCCESS.iter().any(|ok| labels.contains(ok))
            })
            .unwrap_or(0.0);
            let seconds = sum("dynamo_request_duration_seconds_sum");
            let mean = if requests > 0.0 {
                format!("{:.2} ms", seconds / requests * 1000.0)
            } else {
                "-".to_string()
            };
            let count = |name: &str| format!("{}", sum(name) as u64);
            vec![
                node.clone(),
                count("dynamo_requests_total"),
                format!("{}", errors as u64),
                mean,
                count("dynamo_sibling_reads_total"),
                format!(
                    "{}/{}",
                    sum("dynamo_hints_pending") as u64,
                    sum("dynamo_hints_drained_total") as u64
                ),
                count("dynamo_read_repairs_total"),
                count("dynamo_handoffs_total"),
                format!(
                    "{}/{}",
                    sum("dynamo_anti_entropy_bytes_total") as u64,
                    sum("dynamo_anti_entropy_keys_repaired_total") as u64
                ),
                count("dynamo_keys"),
            ]
        })
        .collect();
    format!(
        "\nactivity (each node's own /metrics)\n{}",
        table(
            &[
                "NODE",
                "REQUESTS",
                "FAILED",
                "MEAN LATENCY",
                "SIBLING READS",
                "HINTS PENDING/DRAINED",
                "READ REPAIRS",
                "HANDOFFS",
                "AE BYTES/KEYS",
                "KEYS",
            ],
            rows,
        )
    )
}

/// The text `get` prints for a result.
pub fn format_get(result: &GetResult) -> String {
    let mut out = String::new();
    match result {
        GetResult::Value { value, .. } => {
            out.push_str(&show_bytes(value));
            out.push('\n');
        }
        GetResult::Siblings { values, .. } => {
            out.push_str(&format!("{} siblings:\n", values.len()));
            for (i, value) in values.iter().enumerate() {
                out.push_str(&format!("[{}] {}\n", i + 1, show_bytes(value)));
            }
        }
        GetResult::NotFound { .. } => out.push_str("not found\n"),
    }
    let context = result.context();
    // A miss without tombstones has nothing to supersede: no context to show.
    if !(matches!(result, GetResult::NotFound { .. }) && context.is_empty()) {
        out.push_str(&format!("context: {context}\n"));
    }
    out
}

/// The text `status` prints.
pub fn format_status(
    url: &str,
    health: &Health,
    members: &[MemberInfo],
    ring: &RingInfo,
) -> String {
    let mut members: Vec<&MemberInfo> = members.iter().collect();
    members.sort_by(|a, b| a.node.cmp(&b.node));
    let mut member_rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                m.node.clone(),
                m.status.to_string(),
                m.ring.to_string(),
                m.heartbeat.to_string(),
                m.incarnation.to_string(),
                if m.node == health.node {
                    "(self)".to_string()
                } else {
                    format!("{} ms ago", m.last_heard_ms_ago)
                },
                if m.connected { "yes" } else { "no" }.to_string(),
                m.cluster_addr.clone(),
                m.http_addr.clone(),
            ]
        })
        .collect();
    let mut member_headers = vec![
        "MEMBER",
        "STATUS",
        "RING",
        "HEARTBEAT",
        "INCARNATION",
        "LAST HEARD",
        "CONNECTED",
        "CLUSTER ADDRESS",
        "HTTP ADDRESS",
    ];
    with_handoff_column(&mut member_headers, &mut member_rows, &members);
    let serving = match (health.status.as_str(), &health.reason) {
        ("ok", _) => String::new(),
        (_, Some(reason)) => format!("unavailable ({reason}); "),
        (status, None) => format!("{status}; "),
    };
    let mut nodes: Vec<_> = ring.nodes.iter().collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let ring_rows = nodes
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                n.vnodes.to_string(),
                format!("{:.1}%", n.primary_share * 100.0),
                format!("{:.1}%", n.replica_share * 100.0),
                n.keys.map_or("-".to_string(), |k| k.to_string()),
            ]
        })
        .collect();
    format!(
        "node {} at {url}: {serving}{} of {} members alive\n\n{}\nring version {}, n = {}\n{}",
        health.node,
        health.alive,
        health.members,
        table(&member_headers, member_rows),
        ring.version,
        ring.n,
        table(&["NODE", "VNODES", "PRIMARY", "REPLICA", "KEYS"], ring_rows),
    )
}

/// Left-aligned columns separated by two spaces, without trailing blanks.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// UTF-8 values as they are; anything else with `\xNN` escapes.
pub(crate) fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

fn key_bytes(key: OsString) -> Result<Vec<u8>, CliError> {
    let key = key.into_vec();
    validate_key(&key).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(key)
}

/// `None` for no flag; a malformed token is a usage error.
fn parse_context(token: Option<&str>) -> Result<Option<Context>, CliError> {
    token
        .map(|t| Context::decode(t).map_err(|e| CliError::Usage(format!("--context: {e}"))))
        .transpose()
}

fn read_stdin() -> Result<Vec<u8>, CliError> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(CliError::Usage(
            "no VALUE given: pass it as an argument or pipe it on stdin".into(),
        ));
    }
    let mut value = Vec::new();
    stdin
        .read_to_end(&mut value)
        .map_err(|e| CliError::Failed(format!("reading the value from stdin: {e}")))?;
    Ok(value)
}

fn failed(client: &HttpClient, error: HttpError) -> CliError {
    match error {
        HttpError::InvalidKey(_) => CliError::Usage(error.to_string()),
        other => CliError::Failed(format!("{}: {other}", client.base_url())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_counts_requests_failures_and_background_work_per_node() {
        let text = "dynamo_requests_total{op=\"get\",outcome=\"ok\"} 6\n\
            dynamo_requests_total{op=\"get\",outcome=\"siblings\"} 1\n\
            dynamo_requests_total{op=\"put\",outcome=\"insufficient_acks\"} 3\n\
            dynamo_request_duration_seconds_sum{op=\"get\",outcome=\"ok\"} 0.02\n\
            dynamo_hints_pending 2\ndynamo_hints_drained_total 5\n\
            dynamo_anti_entropy_bytes_total 270\ndynamo_keys 12\n";
        let out = format_activity(&[("n1".into(), Some(text.into())), ("n2".into(), None)]);
        let n1 = out.lines().find(|l| l.starts_with("n1")).unwrap();
        let cells: Vec<&str> = n1.split_whitespace().collect();
        assert_eq!(cells[1..4], ["10", "3", "2.00"], "{out}");
        assert!(
            n1.contains("2/5") && n1.contains("270/0") && n1.ends_with("12"),
            "{n1}"
        );
        let n2 = out.lines().find(|l| l.starts_with("n2")).unwrap();
        assert!(n2.split_whitespace().skip(1).all(|c| c == "-"), "{n2}");
    }
    use crate::core::ids::ActorId;
    use crate::core::vclock::{Dot, VClock};
    use crate::model::RingNodeInfo;

    fn ctx() -> Context {
        let mut clock = VClock::new();
        clock.add_dot(&Dot::new(ActorId::new("n1", 1), 2), 0);
        Context::from_clock(clock)
    }

    #[test]
    fn get_prints_the_value_then_the_context() {
        let c = ctx();
        let one = GetResult::Value {
            value: Bytes::from_static(b"milk"),
            context: c.clone(),
        };
        assert_eq!(format_get(&one), format!("milk\ncontext: {c}\n"));
    }

    #[test]
    fn siblings_are_numbered_and_binary_values_escaped() {
        let c = ctx();
        let two = GetResult::Siblings {
            values: vec![
                Bytes::from_static(b"milk"),
                Bytes::from_static(b"\xff\x00z"),
            ],
            context: c.clone(),
        };
        assert_eq!(
            format_get(&two),
            format!("2 siblings:\n[1] milk\n[2] \\xff\\x00z\ncontext: {c}\n")
        );
    }

    #[test]
    fn a_miss_shows_a_context_only_if_tombstones_were_seen() {
        let empty = GetResult::NotFound {
            context: Context::empty(),
        };
        assert_eq!(format_get(&empty), "not found\n");
        let c = ctx();
        let deleted = GetResult::NotFound { context: c.clone() };
        assert_eq!(format_get(&deleted), format!("not found\ncontext: {c}\n"));
    }

    fn health(status: &str, reason: Option<&str>) -> Health {
        Health {
            status: status.into(),
            reason: reason.map(str::to_string),
            node: "n1".into(),
            alive: 1,
            members: 2,
        }
    }

    fn member(node: &str, status: Status, heard: u64) -> MemberInfo {
        MemberInfo {
            node: node.into(),
            cluster_addr: format!("127.0.0.2:700{}", &node[1..]),
            http_addr: format!("127.0.0.2:800{}", &node[1..]),
            status,
            heartbeat: 42,
            incarnation: 3,
            last_heard_ms_ago: heard,
            connected: heard < 1000,
            ring: RingStatus::Valid,
            handoff: HandoffProgress::default(),
        }
    }

    fn one_node_ring() -> RingInfo {
        RingInfo {
            version: 7,
            n: 3,
            nodes: vec![RingNodeInfo {
                node: "n1".into(),
                vnodes: 128,
                primary_share: 0.5,
                replica_share: 1.0,
                keys: Some(12),
            }],
        }
    }

    #[test]
    fn status_lists_members_and_ring_shares_in_aligned_columns() {
        let members = [
            member("n2", Status::Suspect, 6000),
            member("n1", Status::Alive, 0),
        ];
        let text = format_status(
            "http://127.0.0.2:8001",
            &health("ok", None),
            &members,
            &one_node_ring(),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "node n1 at http://127.0.0.2:8001: 1 of 2 members alive"
        );
        assert!(
            lines[2].starts_with("MEMBER  STATUS   RING   HEARTBEAT  INCARNATION  LAST HEARD"),
            "{text}"
        );
        assert!(lines[3].starts_with("n1      alive    valid  42         3            (self)"));
        assert!(
            lines[4].starts_with("n2      suspect  valid  42         3            6000 ms ago  no")
        );
        assert!(lines[4].ends_with("127.0.0.2:7002   127.0.0.2:8002"));
        assert!(!text.contains("HANDOFF"), "no handoff, no column: {text}");
        assert_eq!(lines[6], "ring version 7, n = 3");
        assert_eq!(lines[7], "NODE  VNODES  PRIMARY  REPLICA  KEYS");
        assert_eq!(lines[8], "n1    128     50.0%    100.0%   12");
    }

    #[test]
    fn status_shows_ring_statuses_and_the_handoff_of_members_that_have_one() {
        let mut leaving = member("n3", Status::Alive, 300);
        leaving.ring = RingStatus::Leaving;
        leaving.handoff = HandoffProgress {
            handed: 120,
            remaining: 30,
        };
        let mut gone = member("n2", Status::Dead, 90_000);
        gone.ring = RingStatus::Removed;
        let members = [leaving, gone, member("n1", Status::Alive, 0)];
        let text = format_status(
            "http://127.0.0.2:8001",
            &health("ok", None),
            &members,
            &one_node_ring(),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].ends_with("HTTP ADDRESS    HANDOFF"), "{text}");
        assert!(lines[3].starts_with("n1      alive   valid    "), "{text}");
        assert!(lines[3].ends_with("127.0.0.2:8001  -"), "{text}");
        assert!(lines[4].starts_with("n2      dead    removed  "), "{text}");
        assert!(lines[5].starts_with("n3      alive   leaving  "), "{text}");
        assert!(
            lines[5].ends_with("127.0.0.2:8003  120 handed, 30 left"),
            "{text}"
        );
    }

    #[test]
    fn status_of_a_node_that_cannot_serve_says_why() {
        let text = format_status(
            "http://127.0.0.2:8001",
            &health(
                "unavailable",
                Some("this node is left: it is no longer a member of the cluster"),
            ),
            &[member("n1", Status::Alive, 0)],
            &one_node_ring(),
        );
        assert!(
            text.starts_with(
                "node n1 at http://127.0.0.2:8001: unavailable (this node is left: it is no \
                 longer a member of the cluster); 1 of 2 members alive\n"
            ),
            "{text}"
        );
        let bare = format_status("u", &health("unavailable", None), &[], &one_node_ring());
        assert!(
            bare.starts_with("node n1 at u: unavailable; 1 of 2"),
            "{bare}"
        );
    }

    #[test]
    fn leave_says_where_the_node_stands_and_what_comes_next() {
        let mut me = member("n3", Status::Alive, 0);
        me.ring = RingStatus::Leaving;
        let text = format_leave("http://127.0.0.4:8098", &me);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "node n3 at http://127.0.0.4:8098: ring status leaving"
        );
        assert_eq!(
            lines[1],
            "n3 hands every key it holds to the other members, then reports `left`; after that \
             it can be stopped"
        );
        assert!(
            lines[2].contains("dynamo-node status --node http://127.0.0.4:8098"),
            "{text}"
        );
        assert_eq!(lines.len(), 3, "no progress yet: {text}");
        me.handoff = HandoffProgress {
            handed: 4,
            remaining: 1,
        };
        assert!(
            format_leave("u", &me).ends_with("\nhandoff so far: 4 handed, 1 left\n"),
            "{}",
            format_leave("u", &me)
        );
        me.ring = RingStatus::Left;
        let left = format_leave("u", &me);
        assert!(
            left.starts_with("node n3 at u: ring status left\n"),
            "{left}"
        );
        assert!(
            left.contains("it serves nothing and can be stopped"),
            "{left}"
        );
    }

    #[test]
    fn remove_says_the_member_owns_nothing_any_more() {
        let mut gone = member("n4", Status::Dead, 60_000);
        gone.ring = RingStatus::Removed;
        let text = format_remove(&gone);
        assert!(text.starts_with("node n4: ring status removed\n"), "{text}");
        assert!(text.contains("the name cannot come back"), "{text}");
    }

    #[test]
    fn bad_keys_and_contexts_are_usage_errors() {
        assert!(matches!(
            key_bytes(OsString::new()),
            Err(CliError::Usage(_))
        ));
        let long = OsString::from("k".repeat(crate::config::MAX_KEY_BYTES + 1));
        assert!(matches!(key_bytes(long), Err(CliError::Usage(_))));
        assert_eq!(key_bytes(OsString::from_vec(vec![0xff])).unwrap(), [0xff]);
        assert!(matches!(parse_context(Some("!!")), Err(CliError::Usage(_))));
        assert_eq!(parse_context(None).unwrap(), None);
        assert_eq!(parse_context(Some(&ctx().encode())).unwrap(), Some(ctx()));
    }
}
