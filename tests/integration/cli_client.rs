//! The client subcommands (`get`, `put`, `delete`, `status`, `leave`, `remove`) as a black
//! box, against the real HTTP server over a one-replica in-memory service (no node runtime
//! needed).

use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dynamo_node::config::{ConfigUpdate, QuorumConfig};
use dynamo_node::core::ids::Key;
use dynamo_node::core::membership::{HandoffProgress, RingStatus, Status};
use dynamo_node::core::version::VersionSet;
use dynamo_node::model::{
    ClientError, Context, GetResult, Health, KvService, MemberInfo, ReadOptions, RingInfo,
    RingNodeInfo, WriteOptions,
};
use dynamo_node::testing::LoneReplica;

/// One replica n1 among members n1 (alive), n2 (suspect, leaving, handing keys off) and n3
/// (alive): every write is coordinated here; `unavailable-*` keys answer 503. A first `leave`
/// makes n1 leaving, a second one finds it left: then it refuses writes and /health is 503.
#[derive(Clone)]
struct OneReplica {
    replica: LoneReplica,
    ring: Arc<Mutex<RingStatus>>,
    removed: Arc<Mutex<Vec<String>>>,
}

impl OneReplica {
    fn write(
        &self,
        key: Key,
        value: Option<Bytes>,
        context: Option<Context>,
    ) -> Result<Context, ClientError> {
        if key.starts_with(b"unavailable-") {
            return Err(ClientError::Unavailable("nobody home".into()));
        }
        if *self.ring.lock().unwrap() == RingStatus::Left {
            return Err(ClientError::NotAMember(
                "this node has left the cluster: it serves nothing".into(),
            ));
        }
        self.replica.write(&key, value, context)
    }
}

impl KvService for OneReplica {
    async fn get(&self, key: Key, _: ReadOptions) -> Result<GetResult, ClientError> {
        Ok(self.replica.get(&key))
    }

    async fn put(
        &self,
        key: Key,
        value: Bytes,
        context: Option<Context>,
        _: WriteOptions,
    ) -> Result<Context, ClientError> {
        self.write(key, Some(value), context)
    }

    async fn delete(
        &self,
        key: Key,
        context: Option<Context>,
        _: WriteOptions,
    ) -> Result<(), ClientError> {
        self.write(key, None, context).map(drop)
    }

    fn node_name(&self) -> String {
        "n1".into()
    }

    fn members(&self) -> Vec<MemberInfo> {
        let removed = self.removed.lock().unwrap().clone();
        ["n1", "n2", "n3"]
            .iter()
            .enumerate()
            .map(|(i, node)| MemberInfo {
                node: node.to_string(),
                cluster_addr: format!("127.0.0.{}:7000", i + 2),
                http_addr: format!("127.0.0.{}:8000", i + 2),
                status: if i == 1 {
                    Status::Suspect
                } else {
                    Status::Alive
                },
                heartbeat: 10,
                incarnation: 1,
                last_heard_ms_ago: if i == 1 { 6000 } else { 0 },
                connected: i != 1,
                ring: match i {
                    _ if removed.iter().any(|r| r == node) => RingStatus::Removed,
                    0 => *self.ring.lock().unwrap(),
                    1 => RingStatus::Leaving,
                    _ => RingStatus::Valid,
                },
                handoff: if i == 1 {
                    HandoffProgress {
                        handed: 7,
                        remaining: 5,
                    }
                } else {
                    HandoffProgress::default()
                },
            })
            .collect()
    }

    fn ring(&self) -> RingInfo {
        RingInfo {
            version: 2,
            n: 3,
            nodes: vec![RingNodeInfo {
                node: "n1".into(),
                vnodes: 128,
                primary_share: 0.5,
                replica_share: 1.0,
                keys: Some(self.replica.len()),
            }],
        }
    }

    fn local(&self, key: &[u8]) -> VersionSet {
        self.replica.local(key)
    }

    fn update_config(&self, _: ConfigUpdate) -> Result<QuorumConfig, ClientError> {
        Err(ClientError::Unavailable("fixed".into()))
    }

    fn config(&self) -> QuorumConfig {
        QuorumConfig::default()
    }

    fn metrics(&self) -> String {
        String::new()
    }

    fn health(&self) -> Health {
        let members = self.members();
        let left = *self.ring.lock().unwrap() == RingStatus::Left;
        Health {
            status: if left { "unavailable" } else { "ok" }.into(),
            reason: left.then(|| "this node has left the cluster".to_string()),
            node: "n1".into(),
            alive: members.iter().filter(|m| m.status == Status::Alive).count(),
            members: members.len(),
        }
    }

    fn leave(&self) -> Result<MemberInfo, ClientError> {
        {
            let mut ring = self.ring.lock().unwrap();
            *ring = match *ring {
                RingStatus::Valid => RingStatus::Leaving,
                _ => RingStatus::Left,
            };
        }
        Ok(self.members().remove(0))
    }

    fn remove(&self, node: &str) -> Result<MemberInfo, ClientError> {
        if node == "n1" {
            return Err(ClientError::Conflict(
                "n1 is this node: a node leaves, it does not remove itself".into(),
            ));
        }
        match self.members().into_iter().find(|m| m.node == node) {
            Some(m) if m.status == Status::Alive => {
                Err(ClientError::MemberAlive(format!("{node} is alive")))
            }
            Some(_) => {
                self.removed.lock().unwrap().push(node.to_string());
                Ok(self.members().into_iter().find(|m| m.node == node).unwrap())
            }
            None => Err(ClientError::UnknownMember(format!(
                "no member named {node} is known"
            ))),
        }
    }
}

/// Serves the API on a free port; returns its URL.
async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let service = OneReplica {
        replica: LoneReplica::new("n1"),
        ring: Arc::new(Mutex::new(RingStatus::Valid)),
        removed: Arc::default(),
    };
    tokio::spawn(dynamo_node::http::serve(
        listener,
        service,
        std::future::pending(),
    ));
    url
}

/// Runs the binary off the runtime's threads (the server answers on them).
async fn dynamo(args: &[&str]) -> Output {
    dynamo_with(args, None, None).await
}

async fn dynamo_with(args: &[&str], env_node: Option<&str>, stdin: Option<&[u8]>) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env_node = env_node.map(str::to_string);
    let stdin = stdin.map(<[u8]>::to_vec);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dynamo-node"));
        cmd.args(&args).env_remove("DYNAMO_NODE");
        if let Some(node) = env_node {
            cmd.env("DYNAMO_NODE", node);
        }
        let Some(input) = stdin else {
            return cmd.stdin(Stdio::null()).output().unwrap();
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&input).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn context_of(o: &Output) -> String {
    out(o)
        .lines()
        .find_map(|l| l.strip_prefix("context: "))
        .unwrap_or_else(|| panic!("no context in {:?}", out(o)))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_siblings_merge_and_delete_through_the_binary() {
    let url = serve().await;
    let put = dynamo(&["put", "cart", "milk", "--node", &url]).await;
    assert_eq!(put.status.code(), Some(0), "{}", err(&put));
    let first = context_of(&put);
    assert_eq!(out(&put), format!("context: {first}\n"));

    let get = dynamo(&["get", "cart", "--node", &url]).await;
    assert_eq!(get.status.code(), Some(0));
    assert_eq!(out(&get), format!("milk\ncontext: {first}\n"));

    // A blind write from stdin makes a sibling.
    let blind = dynamo_with(&["put", "cart", "--node", &url], None, Some(b"bread")).await;
    assert_eq!(blind.status.code(), Some(0), "{}", err(&blind));
    let both = dynamo(&["get", "cart", "--node", &url]).await;
    let ctx = context_of(&both);
    assert_eq!(
        out(&both),
        format!("2 siblings:\n[1] milk\n[2] bread\ncontext: {ctx}\n")
    );

    // Writing with the context of both replaces both.
    let merged = dynamo(&[
        "put",
        "cart",
        "milk,bread",
        "--context",
        &ctx,
        "--node",
        &url,
    ])
    .await;
    assert_eq!(merged.status.code(), Some(0));
    let now = dynamo(&["get", "cart", "--node", &url]).await;
    assert!(
        out(&now).starts_with("milk,bread\ncontext: "),
        "{}",
        out(&now)
    );

    let del = dynamo(&[
        "delete",
        "cart",
        "--context",
        &context_of(&now),
        "--node",
        &url,
    ])
    .await;
    assert_eq!(
        (del.status.code(), out(&del).as_str()),
        (Some(0), "deleted\n")
    );
    let gone = dynamo(&["get", "cart", "--node", &url]).await;
    assert_eq!(gone.status.code(), Some(3), "not found exits 3");
    assert!(
        out(&gone).starts_with("not found\ncontext: "),
        "tombstone context: {}",
        out(&gone)
    );

    let never = dynamo(&["get", "never", "--node", &url]).await;
    assert_eq!(
        (never.status.code(), out(&never).as_str()),
        (Some(3), "not found\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_comes_from_the_environment_and_failures_exit_1() {
    let url = serve().await;
    let put = dynamo_with(&["put", "k", "v"], Some(&url), None).await;
    assert_eq!(put.status.code(), Some(0), "{}", err(&put));
    let get = dynamo_with(&["get", "k"], Some(&url), None).await;
    assert!(out(&get).starts_with("v\n"));

    let down = dynamo(&["put", "unavailable-k", "v", "--node", &url]).await;
    assert_eq!(down.status.code(), Some(1));
    assert!(err(&down).contains("503"), "{}", err(&down));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_members_and_ring_tables() {
    let url = serve().await;
    let status = dynamo(&["status", "--node", &url]).await;
    assert_eq!(status.status.code(), Some(0), "{}", err(&status));
    let text = out(&status);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("node n1 at {url}: 2 of 3 members alive"));
    assert!(
        lines[2].starts_with("MEMBER  STATUS   RING     HEARTBEAT"),
        "{text}"
    );
    assert!(lines[2].ends_with("HTTP ADDRESS    HANDOFF"), "{text}");
    assert!(
        lines[3].starts_with("n1      alive    valid    10"),
        "{text}"
    );
    assert!(lines[3].ends_with("  -"), "{text}");
    // Liveness and ring status side by side; a leaving node shows its handoff.
    assert!(
        lines[4].starts_with("n2      suspect  leaving  10") && lines[4].contains("6000 ms ago"),
        "{text}"
    );
    assert!(lines[4].ends_with("  7 handed, 5 left"), "{text}");
    assert!(lines[5].starts_with("n3      alive    valid    "), "{text}");
    assert!(text.contains("ring version 2, n = 3\n"), "{text}");
    assert!(
        text.contains("n1    128     50.0%    100.0%   0\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_drains_the_node_and_a_node_that_left_says_so() {
    let url = serve().await;
    let leave = dynamo(&["leave", "--node", &url]).await;
    assert_eq!(leave.status.code(), Some(0), "{}", err(&leave));
    let text = out(&leave);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("node n1 at {url}: ring status leaving"));
    assert!(
        lines[1].contains("hands every key it holds to the other members, then reports `left`"),
        "{text}"
    );
    assert!(lines[1].ends_with("after that it can be stopped"), "{text}");
    assert!(
        lines[2].contains(&format!("dynamo-node status --node {url}")),
        "{text}"
    );
    let status = dynamo(&["status", "--node", &url]).await;
    let n1 = out(&status)
        .lines()
        .find(|l| l.starts_with("n1 "))
        .map(str::to_string)
        .unwrap();
    assert!(
        n1.starts_with("n1      alive    leaving  "),
        "{}",
        out(&status)
    );

    // Once it has left: leave says so, status still works (its /health is 503 with the
    // reason), and the node refuses writes.
    let again = dynamo(&["leave", "--node", &url]).await;
    assert_eq!(again.status.code(), Some(0), "{}", err(&again));
    assert!(
        out(&again).starts_with(&format!("node n1 at {url}: ring status left\n")),
        "{}",
        out(&again)
    );
    assert!(out(&again).contains("can be stopped"), "{}", out(&again));
    let status = dynamo(&["status", "--node", &url]).await;
    assert_eq!(status.status.code(), Some(0), "{}", err(&status));
    assert_eq!(
        out(&status).lines().next().unwrap(),
        format!(
            "node n1 at {url}: unavailable (this node has left the cluster); 2 of 3 members alive"
        )
    );
    let put = dynamo(&["put", "k", "v", "--node", &url]).await;
    assert_eq!(put.status.code(), Some(1));
    assert!(err(&put).contains("503 not_a_member"), "{}", err(&put));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_takes_a_member_that_is_gone_and_explains_each_refusal() {
    let url = serve().await;
    let alive = dynamo(&["remove", "n3", "--node", &url]).await;
    assert_eq!(alive.status.code(), Some(1));
    let e = err(&alive);
    assert!(
        e.starts_with(&format!("error: {url}: cannot remove n3: n3 is alive\n")),
        "{e}"
    );
    assert!(
        e.contains("hint: a live node drains instead (`dynamo-node leave --node <its URL>`)"),
        "{e}"
    );
    let itself = dynamo(&["remove", "n1", "--node", &url]).await;
    assert_eq!(itself.status.code(), Some(1));
    assert!(
        err(&itself).contains("cannot remove n1: n1 is this node")
            && err(&itself).contains("hint: a node does not remove itself"),
        "{}",
        err(&itself)
    );
    let ghost = dynamo(&["remove", "ghost", "--node", &url]).await;
    assert_eq!(ghost.status.code(), Some(1));
    assert!(
        err(&ghost).contains("cannot remove ghost: no member named ghost is known")
            && err(&ghost).contains(&format!("`dynamo-node status --node {url}` lists")),
        "{}",
        err(&ghost)
    );
    let empty = dynamo(&["remove", " ", "--node", &url]).await;
    assert_eq!(empty.status.code(), Some(2), "{}", err(&empty));
    assert!(out(&alive).is_empty() && out(&empty).is_empty());

    // n2 is suspect: it can go, through the node in $DYNAMO_NODE too.
    let removed = dynamo_with(&["remove", "n2"], Some(&url), None).await;
    assert_eq!(removed.status.code(), Some(0), "{}", err(&removed));
    assert_eq!(
        out(&removed),
        "node n2: ring status removed\nit owns nothing now: the other members take its ranges \
         and anti-entropy rebuilds its replicas; the name cannot come back\n"
    );
    let status = dynamo(&["status", "--node", &url]).await;
    let text = out(&status);
    let n2 = text.lines().find(|l| l.starts_with("n2 ")).unwrap();
    assert!(n2.starts_with("n2      suspect  removed  "), "{text}");
}
