//! Node configuration: what is fixed at start, the quorum settings that change at runtime,
//! and the size bounds (keys, values, sibling sets, frames) that every node and client shares.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::core::hints::HintLimits;
pub use crate::core::membership::FailureTimeouts;
use crate::core::ring::{DEFAULT_VNODES, PREFIX};

/// Environment variable from which the binary reads the cluster cookie, so that it is never
/// on a command line (local clusters hand theirs to their nodes through it).
pub const COOKIE_ENV: &str = "DYNAMO_COOKIE";

/// What tokio reads for its number of worker threads: local clusters set it for their nodes,
/// and a node told 1 runs on a current-thread runtime.
pub const WORKER_THREADS_ENV: &str = "TOKIO_WORKER_THREADS";

/// Largest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Largest sibling set a write may produce, in value bytes. With the frame limit below this
/// keeps every cluster message far under ractor_cluster's frame size, whose breach would kill
/// the whole session to a peer.
pub const MAX_SET_BYTES: usize = 8 * 1024 * 1024;
/// Most versions a key's sibling set may hold after a write, tombstones and empty values
/// included: a client that keeps writing blind (or deleting blind) must merge at some point.
pub const MAX_SET_VERSIONS: usize = 100;
/// Inbound frame limit set on every node's cluster server (all nodes must agree).
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Hints a node keeps at most unless configured otherwise.
pub const DEFAULT_MAX_HINTS: usize = 1_000_000;
/// Bytes of hints a node keeps at most unless configured otherwise (256 MiB).
pub const DEFAULT_MAX_HINT_BYTES: u64 = 256 * 1024 * 1024;

/// Replication and timeout settings, changeable at runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuorumConfig {
    /// Replicas per key.
    pub n: usize,
    /// Acks a write waits for.
    pub w: usize,
    /// Replies a read waits for.
    pub r: usize,
    /// How long a write waits for W acks.
    pub put_timeout_ms: u64,
    /// How long a read waits for R replies.
    pub get_timeout_ms: u64,
}

impl Default for QuorumConfig {
    fn default() -> Self {
        QuorumConfig {
            n: 3,
            w: 2,
            r: 2,
            put_timeout_ms: 5000,
            get_timeout_ms: 5000,
        }
    }
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// N outside 1..=16 (the ring precomputes 16 nodes per position).
    #[error("n must be between 1 and {max}, got {got}")]
    N {
        /// Largest N allowed.
        max: usize,
        /// The value given.
        got: usize,
    },
    /// W or R outside 1..=N.
    #[error("{which} must be between 1 and n = {n}, got {got}")]
    Quorum {
        /// "w" or "r".
        which: &'static str,
        /// The N in force.
        n: usize,
        /// The value given.
        got: usize,
    },
    /// A timeout of zero.
    #[error("{0} must be greater than 0")]
    ZeroTimeout(&'static str),
    /// Failure-detection timeouts out of order.
    #[error(transparent)]
    Timeouts(#[from] crate::core::membership::TimeoutsError),
    /// Zero vnodes.
    #[error("vnodes must be at least 1")]
    Vnodes,
    /// N is the cluster's, fixed when the cluster is made; it does not change at runtime.
    #[error(
        "n is the cluster's and cannot change at runtime (it is {n}); w, r and the timeouts can"
    )]
    NIsTheClusters {
        /// The N in force.
        n: usize,
    },
    /// A hint limit of zero would refuse every hint.
    #[error("{0} must be at least 1")]
    ZeroHintLimit(&'static str),
}

impl QuorumConfig {
    /// Checks the ranges: 1 <= w, r <= n <= 16 and non-zero timeouts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.n == 0 || self.n > PREFIX {
            return Err(ConfigError::N {
                max: PREFIX,
                got: self.n,
            });
        }
        for (which, got) in [("w", self.w), ("r", self.r)] {
            if got == 0 || got > self.n {
                return Err(ConfigError::Quorum {
                    which,
                    n: self.n,
                    got,
                });
            }
        }
        if self.put_timeout_ms == 0 {
            return Err(ConfigError::ZeroTimeout("put_timeout_ms"));
        }
        if self.get_timeout_ms == 0 {
            return Err(ConfigError::ZeroTimeout("get_timeout_ms"));
        }
        Ok(())
    }

    /// This config with `update` applied, if the result is valid. N is refused: it is the
    /// cluster's, and a node that changed it alone would build other preference lists.
    pub fn apply(&self, update: &ConfigUpdate) -> Result<QuorumConfig, ConfigError> {
        if update.n.is_some() {
            return Err(ConfigError::NIsTheClusters { n: self.n });
        }
        let next = QuorumConfig {
            n: self.n,
            w: update.w.unwrap_or(self.w),
            r: update.r.unwrap_or(self.r),
            put_timeout_ms: update.put_timeout_ms.unwrap_or(self.put_timeout_ms),
            get_timeout_ms: update.get_timeout_ms.unwrap_or(self.get_timeout_ms),
        };
        next.validate()?;
        Ok(next)
    }
}

/// A partial change of the runtime settings (`Node::update_config`, `PUT /admin/config`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigUpdate {
    /// Always refused when given ([`ConfigError::NIsTheClusters`]); accepted by the parser so
    /// that the answer says why.
    pub n: Option<usize>,
    /// New W.
    pub w: Option<usize>,
    /// New R.
    pub r: Option<usize>,
    /// New write timeout.
    pub put_timeout_ms: Option<u64>,
    /// New read timeout.
    pub get_timeout_ms: Option<u64>,
}

/// Gossip timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GossipConfig {
    /// Time between gossip rounds.
    pub interval_ms: u64,
    /// Silence after which a node is suspect, and after which it is dead.
    pub timeouts: FailureTimeouts,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            interval_ms: 1000,
            timeouts: FailureTimeouts::default(),
        }
    }
}

/// Anti-entropy and tombstone-purge timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AntiEntropyConfig {
    /// Time between anti-entropy rounds (one random peer per round); 0 turns rounds off.
    pub interval_ms: u64,
    /// How old a key's newest tombstone must be before the purge considers it. Never enough
    /// alone: every owner must also hold exactly the same tombstones.
    pub tombstone_grace_ms: u64,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        AntiEntropyConfig {
            interval_ms: 2000,
            tombstone_grace_ms: 10_000,
        }
    }
}

/// Free bytes below which a node with `--data-dir` refuses writes, by default.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

/// When a replica acknowledges a write it keeps on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Fsync {
    /// After an fsync that covers it (shared with the writes in flight): survives a power
    /// loss.
    #[default]
    Always,
    /// Once it reached the OS: survives a crash of the process, not of the machine.
    Never,
}

impl Fsync {
    /// The policy as `--fsync` names it.
    pub fn flag_value(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Never => "never",
        }
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeConfig {
    /// The node's unique name in the cluster.
    pub name: String,
    /// Address of the cluster (ractor_cluster) endpoint; outgoing connections bind its IP too.
    pub bind: SocketAddr,
    /// Address of the HTTP API this node announces to peers and clients, if any. The node
    /// does not serve it: whoever starts the node does (`http::HttpListener`).
    pub http: Option<SocketAddr>,
    /// Cluster addresses of nodes to join through, `ip:port` or `host:port` (a DNS name is
    /// resolved again at each dial).
    pub seeds: Vec<String>,
    /// Shared secret of the cluster handshake.
    pub cookie: String,
    /// Quorum settings at start.
    pub quorum: QuorumConfig,
    /// Ring tokens this node takes.
    pub vnodes: u32,
    /// Gossip timing.
    pub gossip: GossipConfig,
    /// Anti-entropy and tombstone-purge timing.
    pub anti_entropy: AntiEntropyConfig,
    /// Where data is kept; `None` keeps it in memory (a restart then takes a new incarnation).
    pub data_dir: Option<PathBuf>,
    /// When a write kept under `data_dir` is acknowledged.
    pub fsync: Fsync,
    /// Free bytes on the data directory's file system below which writes are refused.
    pub min_free_bytes: u64,
    /// How many hints this node keeps for unreachable owners at most.
    pub hints: HintLimits,
    /// Mutual TLS between nodes (`--tls-cert`, `--tls-key`, `--tls-ca`); `None`: plain TCP.
    pub tls: Option<crate::tls::TlsPaths>,
}

impl NodeConfig {
    /// A config with the defaults for everything but the name and the cluster address.
    pub fn new(name: impl Into<String>, bind: SocketAddr) -> Self {
        NodeConfig {
            name: name.into(),
            bind,
            http: None,
            seeds: Vec::new(),
            cookie: "dynamo".to_string(),
            quorum: QuorumConfig::default(),
            vnodes: DEFAULT_VNODES,
            gossip: GossipConfig::default(),
            anti_entropy: AntiEntropyConfig::default(),
            data_dir: None,
            fsync: Fsync::Always,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            hints: HintLimits {
                max_hints: DEFAULT_MAX_HINTS,
                max_bytes: DEFAULT_MAX_HINT_BYTES,
            },
            tls: None,
        }
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.quorum.validate()?;
        self.gossip.timeouts.validate()?;
        if self.gossip.interval_ms == 0 {
            return Err(ConfigError::ZeroTimeout("gossip_interval_ms"));
        }
        if self.vnodes == 0 {
            return Err(ConfigError::Vnodes);
        }
        if self.hints.max_hints == 0 {
            return Err(ConfigError::ZeroHintLimit("max_hints"));
        }
        if self.hints.max_bytes == 0 {
            return Err(ConfigError::ZeroHintLimit("max_hint_bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let q = QuorumConfig::default();
        assert_eq!(
            (q.n, q.w, q.r, q.put_timeout_ms, q.get_timeout_ms),
            (3, 2, 2, 5000, 5000)
        );
        let c = NodeConfig::new("n1", "127.0.0.1:7000".parse().unwrap());
        assert_eq!(c.vnodes, 128);
        assert_eq!(c.gossip.interval_ms, 1000);
        assert_eq!(
            (
                c.anti_entropy.interval_ms,
                c.anti_entropy.tombstone_grace_ms
            ),
            (2000, 10_000)
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn updates_are_validated_as_a_whole() {
        let q = QuorumConfig::default();
        let bad_w = ConfigUpdate {
            w: Some(4),
            ..Default::default()
        };
        assert!(matches!(
            q.apply(&bad_w),
            Err(ConfigError::Quorum { which: "w", .. })
        ));
        let quorums = ConfigUpdate {
            w: Some(3),
            r: Some(1),
            ..Default::default()
        };
        assert_eq!(q.apply(&quorums).map(|c| (c.n, c.w, c.r)), Ok((3, 3, 1)));
        for n in [1, 3, 5] {
            let change_n = ConfigUpdate {
                n: Some(n),
                ..Default::default()
            };
            assert_eq!(
                q.apply(&change_n),
                Err(ConfigError::NIsTheClusters { n: 3 }),
                "n is the cluster's"
            );
        }
        let zero = ConfigUpdate {
            get_timeout_ms: Some(0),
            ..Default::default()
        };
        assert_eq!(
            q.apply(&zero),
            Err(ConfigError::ZeroTimeout("get_timeout_ms"))
        );
    }

    #[test]
    fn unknown_update_fields_are_refused() {
        assert!(serde_json::from_str::<ConfigUpdate>(r#"{"w": 1}"#).is_ok());
        assert!(serde_json::from_str::<ConfigUpdate>(r#"{"quorum": 1}"#).is_err());
    }
}
