//! A fake node: the real HTTP API over a service with a fixed, all-alive membership and no
//! data. Lets process management (starting, converging, restarting node processes) be tested
//! without the node runtime: a test binary re-runs itself as such a "node".

use bytes::Bytes;

use crate::config::{ConfigUpdate, QuorumConfig};
use crate::core::ids::Key;
use crate::core::membership::Status;
use crate::core::version::VersionSet;
use crate::model::{
    ClientError, Context, GetResult, Health, KvService, MemberInfo, ReadOptions, RingInfo,
    WriteOptions,
};

/// A service that reports `members` alive and connected, stores nothing, and answers reads
/// with "not found".
#[derive(Clone, Debug)]
pub struct FakeNode {
    /// The node's name.
    pub name: String,
    /// Names it lists as alive members.
    pub members: Vec<String>,
}

impl FakeNode {
    /// Serves the HTTP API as the node that `start_args` (a `dynamo-node start` command line)
    /// describes, on its `--http` address, until the process is killed.
    ///
    /// # Panics
    /// If `--name` or `--http` is missing or the address cannot be bound: this runs only as a
    /// stand-in node process in tests, where a loud failure is the right outcome.
    pub fn serve_from_args(start_args: &str, members: Vec<String>) {
        let words: Vec<&str> = start_args.split_whitespace().collect();
        let flag = |name: &str| {
            let at = words.iter().position(|w| *w == name);
            at.and_then(|i| words.get(i + 1))
                .unwrap_or_else(|| panic!("fake node: no {name} in {start_args:?}"))
                .to_string()
        };
        let service = FakeNode {
            name: flag("--name"),
            members,
        };
        let http = flag("--http");
        println!("fake node {} serving on {http}", service.name);
        let runtime = tokio::runtime::Runtime::new().expect("fake node: a tokio runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(&http)
                .await
                .unwrap_or_else(|e| panic!("fake node: bind {http}: {e}"));
            crate::http::serve(listener, service, std::future::pending())
                .await
                .expect("fake node: HTTP server");
        });
    }
}

impl KvService for FakeNode {
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
                ring: crate::core::membership::RingStatus::Valid,
                handoff: Default::default(),
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
        Err(ClientError::Unavailable("fake node".into()))
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
            node: self.name.clone(),
            alive: self.members.len(),
            members: self.members.len(),
        }
    }

    fn leave(&self) -> Result<MemberInfo, ClientError> {
        Err(ClientError::Conflict("fake node: no membership".into()))
    }

    fn remove(&self, _: &str) -> Result<MemberInfo, ClientError> {
        Err(ClientError::Conflict("fake node: no membership".into()))
    }
}
