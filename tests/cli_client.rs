//! The client subcommands (`get`, `put`, `delete`, `status`) as a black box, against the real
//! HTTP server over a one-replica in-memory service (no node runtime needed).

use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use dynamo_node::api::{
    ClientError, Context, GetResult, Health, KvService, MemberInfo, ReadOptions, RingInfo,
    RingNodeInfo, WriteOptions,
};
use dynamo_node::config::{ConfigUpdate, QuorumConfig};
use dynamo_node::core::ids::{ActorId, Key};
use dynamo_node::core::membership::{RingStatus, Status};
use dynamo_node::core::store::Store;
use dynamo_node::core::version::VersionSet;

/// One replica: every write is coordinated here; `unavailable-*` keys answer 503.
#[derive(Clone)]
struct OneReplica(Arc<Store>);

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
        let context = context.unwrap_or_default();
        let done = self
            .0
            .coordinate(&key, context.clock(), value, 0)
            .map_err(|e| ClientError::Internal(e.to_string()))?;
        Ok(Context::from_clock(done.versions.context()))
    }
}

impl KvService for OneReplica {
    async fn get(&self, key: Key, _: ReadOptions) -> Result<GetResult, ClientError> {
        Ok(GetResult::from_set(&self.0.get(&key)))
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
        ["n1", "n2"]
            .iter()
            .enumerate()
            .map(|(i, node)| MemberInfo {
                node: node.to_string(),
                cluster_addr: format!("127.0.0.{}:7000", i + 2),
                http_addr: format!("127.0.0.{}:8000", i + 2),
                status: if i == 0 {
                    Status::Alive
                } else {
                    Status::Suspect
                },
                heartbeat: 10,
                incarnation: 1,
                last_heard_ms_ago: if i == 0 { 0 } else { 6000 },
                connected: i == 0,
                ring: RingStatus::Valid,
                handoff: Default::default(),
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
                keys: Some(self.0.len()),
            }],
        }
    }

    fn local(&self, key: &[u8]) -> VersionSet {
        self.0.get(key)
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
        Health {
            status: "ok".into(),
            reason: None,
            node: "n1".into(),
            alive: 1,
            members: 2,
        }
    }

    fn leave(&self) -> Result<MemberInfo, ClientError> {
        let mut me = self.members().remove(0);
        me.ring = RingStatus::Leaving;
        Ok(me)
    }

    fn remove(&self, node: &str) -> Result<MemberInfo, ClientError> {
        match self.members().into_iter().find(|m| m.node == node) {
            Some(m) if m.connected => Err(ClientError::MemberAlive(format!("{node} is alive"))),
            Some(mut m) => {
                m.ring = RingStatus::Removed;
                Ok(m)
            }
            None => Err(ClientError::UnknownMember(format!(
                "no member named {node}"
            ))),
        }
    }
}

/// Serves the API on a free port; returns its URL.
async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let service = OneReplica(Arc::new(Store::new(ActorId::new("n1", 1))));
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
    assert_eq!(lines[0], format!("node n1 at {url}: 1 of 2 members alive"));
    assert!(lines[2].starts_with("MEMBER  STATUS   HEARTBEAT"), "{text}");
    assert!(lines[3].starts_with("n1      alive    10"), "{text}");
    assert!(
        lines[4].contains("suspect") && lines[4].contains("6000 ms ago"),
        "{text}"
    );
    assert!(text.contains("ring version 2, n = 3\n"), "{text}");
    assert!(
        text.contains("n1    128     50.0%    100.0%   0\n"),
        "{text}"
    );
}
