//! Test helpers: a fake node (this test binary re-run) that serves the real HTTP API over a
//! fake service, so process management is tested without the node runtime.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::api::{
    ClientError, Context, GetResult, Health, MemberInfo, ReadOptions, RingInfo, WriteOptions,
};
use crate::config::{ConfigUpdate, QuorumConfig};
use crate::core::ids::Key;
use crate::core::membership::Status;
use crate::core::version::VersionSet;

/// Environment of a re-run of this test binary that plays a node: its `start` arguments.
const FAKE_ARGS_ENV: &str = "DYNAMO_FAKE_NODE_ARGS";
/// Names the fake node lists as alive members, space separated.
const FAKE_MEMBERS_ENV: &str = "DYNAMO_FAKE_NODE_MEMBERS";
/// If set, a fake node exits with code 3 unless this file exists, which it then creates.
pub(crate) const FAKE_FLAKY_ENV: &str = "DYNAMO_FAKE_NODE_FLAKY";
/// If set, a fake node exits at once with code 4.
pub(crate) const FAKE_FAIL_ENV: &str = "DYNAMO_FAKE_NODE_FAIL";

/// A no-op in a normal run; as a fake node, prints its arguments and environment, then serves
/// the HTTP API on its `--http` address until killed.
#[test]
fn fake_node() {
    let Ok(args) = std::env::var(FAKE_ARGS_ENV) else {
        return;
    };
    println!("fake node args: {args}");
    println!(
        "fake node RUST_LOG={}",
        std::env::var("RUST_LOG").unwrap_or_default()
    );
    if std::env::var_os(FAKE_FAIL_ENV).is_some() {
        eprintln!("refusing to start");
        std::process::exit(4);
    }
    if let Some(marker) = std::env::var_os(FAKE_FLAKY_ENV)
        && std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_ok()
    {
        eprintln!("address in use (first attempt)");
        std::process::exit(3);
    }
    let words: Vec<&str> = args.split_whitespace().collect();
    let flag = |name: &str| words[words.iter().position(|w| *w == name).unwrap() + 1];
    let service = FakeNode {
        name: flag("--name").to_string(),
        members: std::env::var(FAKE_MEMBERS_ENV)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    };
    let http = flag("--http").to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&http).await.unwrap();
        crate::http::serve(listener, service, std::future::pending())
            .await
            .unwrap();
    });
}

/// A script that runs this test binary as a fake node listing `members` as alive.
pub(crate) fn fake_binary(dir: &Path, members: &[&str]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().unwrap();
    let script = dir.join("fake-dynamo-node");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{FAKE_MEMBERS_ENV}='{}' {FAKE_ARGS_ENV}=\"$*\" exec '{}' process::testutil::fake_node --exact --nocapture --test-threads 1\n",
            members.join(" "),
            exe.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// `fake_binary` wrapped in a script that sets `var=value` first.
pub(crate) fn fake_binary_with(dir: &Path, members: &[&str], var: &str, value: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let inner = fake_binary(dir, members);
    let script = dir.join(format!("fake-dynamo-node-{}", var.to_lowercase()));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{var}='{value}' exec '{}' \"$@\"\n",
            inner.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// A fresh scratch directory for one test.
pub(crate) fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dynamo-lc-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether a process with this pid exists (zombies included).
pub(crate) fn exists(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// Answers the admin views with a fixed membership; stores nothing.
#[derive(Clone)]
struct FakeNode {
    name: String,
    members: Vec<String>,
}

impl crate::api::KvService for FakeNode {
    async fn get(&self, _: Key, _: ReadOptions) -> Result<GetResult, ClientError> {
        Ok(GetResult::NotFound {
            context: Context::empty(),
        })
    }

    async fn put(
        &self,
        _: Key,
        _: Bytes,
        _: Option<Context>,
        _: WriteOptions,
    ) -> Result<Context, ClientError> {
        Ok(Context::empty())
    }

    async fn delete(&self, _: Key, _: Option<Context>, _: WriteOptions) -> Result<(), ClientError> {
        Ok(())
    }

    fn node_name(&self) -> String {
        self.name.clone()
    }

    fn members(&self) -> Vec<MemberInfo> {
        self.members
            .iter()
            .map(|node| MemberInfo {
                node: node.clone(),
                cluster_addr: String::new(),
                http_addr: String::new(),
                status: Status::Alive,
                heartbeat: 1,
                incarnation: 1,
                last_heard_ms_ago: 0,
                connected: true,
            })
            .collect()
    }

    fn ring(&self) -> RingInfo {
        RingInfo {
            version: 1,
            n: 3,
            nodes: Vec::new(),
        }
    }

    fn local(&self, _: &[u8]) -> VersionSet {
        VersionSet::default()
    }

    fn update_config(&self, _: ConfigUpdate) -> Result<QuorumConfig, ClientError> {
        Err(ClientError::Unavailable("fake".into()))
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
            node: self.name.clone(),
            alive: self.members.len(),
            members: self.members.len(),
        }
    }
}
