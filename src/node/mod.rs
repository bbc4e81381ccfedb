//! A running node: the supervision tree of actors around the pure core.

use crate::api::KvService;
use crate::config::NodeConfig;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A listener or actor could not be started.
    #[error("start failed: {0}")]
    Start(String),
}

/// A running node (placeholder until the runtime lands).
pub struct Node {
    _config: NodeConfig,
}

impl Node {
    /// Starts a node with `config` and returns once it serves requests.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        config.validate()?;
        Err(NodeError::Start("the node runtime is not built yet".into()))
    }

    /// A client of this node's service.
    pub fn client(&self) -> impl KvService {
        unreachable_service()
    }

    /// Stops the node gracefully.
    pub async fn stop(self) {}
}

fn unreachable_service() -> impl KvService {
    #[derive(Clone)]
    struct Never;
    impl KvService for Never {
        async fn get(
            &self,
            _: crate::core::ids::Key,
            _: crate::api::ReadOptions,
        ) -> Result<crate::api::GetResult, crate::api::ClientError> {
            Err(crate::api::ClientError::Unavailable("stub".into()))
        }
        async fn put(
            &self,
            _: crate::core::ids::Key,
            _: bytes::Bytes,
            _: Option<crate::api::Context>,
            _: crate::api::WriteOptions,
        ) -> Result<crate::api::Context, crate::api::ClientError> {
            Err(crate::api::ClientError::Unavailable("stub".into()))
        }
        async fn delete(
            &self,
            _: crate::core::ids::Key,
            _: Option<crate::api::Context>,
            _: crate::api::WriteOptions,
        ) -> Result<(), crate::api::ClientError> {
            Err(crate::api::ClientError::Unavailable("stub".into()))
        }
        fn node_name(&self) -> String {
            String::new()
        }
        fn members(&self) -> Vec<crate::api::MemberInfo> {
            Vec::new()
        }
        fn ring(&self) -> crate::api::RingInfo {
            crate::api::RingInfo {
                version: 0,
                n: 0,
                nodes: Vec::new(),
            }
        }
        fn local(&self, _: &[u8]) -> crate::core::version::VersionSet {
            Default::default()
        }
        fn update_config(
            &self,
            _: crate::config::ConfigUpdate,
        ) -> Result<crate::config::QuorumConfig, crate::api::ClientError> {
            Err(crate::api::ClientError::Unavailable("stub".into()))
        }
        fn config(&self) -> crate::config::QuorumConfig {
            Default::default()
        }
        fn metrics(&self) -> String {
            String::new()
        }
        fn health(&self) -> crate::api::Health {
            crate::api::Health {
                status: "ok".into(),
                node: String::new(),
                alive: 0,
                members: 0,
            }
        }
    }
    Never
}
