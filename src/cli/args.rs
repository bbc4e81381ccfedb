//! Command-line flags of a node and how they map onto [`NodeConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::CliError;
use super::security::{COOKIE_ENV, SecurityFlags};
use crate::config::{DEFAULT_MIN_FREE_BYTES, Fsync, NodeConfig};
use crate::http::HttpGuard;
use crate::tls::{NodeTls, TlsPaths};

/// The tuning flags shared by `start` (applied to the node) and `cluster` (passed to every node).
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFlags {
    /// Shared secret of the cluster handshake, for loopback nodes (a command line shows in
    /// `ps`: elsewhere use $DYNAMO_COOKIE, or --cookie-file on `start`) [default:
    /// $DYNAMO_COOKIE, else "dynamo"; `cluster` makes a random one]
    #[arg(long, value_name = "SECRET")]
    pub cookie: Option<String>,
    /// Replicas per key [default: 3]
    #[arg(long, value_name = "N")]
    pub n: Option<usize>,
    /// Acks a write waits for [default: 2]
    #[arg(long, value_name = "W")]
    pub w: Option<usize>,
    /// Replies a read waits for [default: 2]
    #[arg(long, value_name = "R")]
    pub r: Option<usize>,
    /// Ring tokens the node takes [default: 128]
    #[arg(long, value_name = "V")]
    pub vnodes: Option<u32>,
    /// How long a write waits for W acks [default: 5000]
    #[arg(long, value_name = "T")]
    pub put_timeout_ms: Option<u64>,
    /// How long a read waits for R replies [default: 5000]
    #[arg(long, value_name = "T")]
    pub get_timeout_ms: Option<u64>,
    /// Time between gossip rounds [default: 1000]
    #[arg(long, value_name = "T")]
    pub gossip_interval_ms: Option<u64>,
    /// Silence after which a peer is suspect [default: 5000]
    #[arg(long, value_name = "T")]
    pub suspect_after_ms: Option<u64>,
    /// Silence after which a peer is dead [default: 30000]
    #[arg(long, value_name = "T")]
    pub dead_after_ms: Option<u64>,
    /// Time between anti-entropy rounds; 0 turns anti-entropy off [default: 2000]
    #[arg(long, value_name = "T")]
    pub anti_entropy_interval_ms: Option<u64>,
    /// Minimum age of a tombstone before it may be purged (every member must agree too)
    /// [default: 10000]
    #[arg(long, value_name = "T")]
    pub tombstone_grace_ms: Option<u64>,
    /// Hints kept at most for unreachable owners; past it a write's fallback refuses the hint
    /// and is no ack [default: 1000000]
    #[arg(long, value_name = "COUNT")]
    pub max_hints: Option<usize>,
    /// Bytes of hints kept at most [default: 268435456]
    #[arg(long, value_name = "BYTES")]
    pub max_hint_bytes: Option<u64>,
}

impl NodeFlags {
    /// Overrides the settings of `config` that a flag was given for.
    pub fn apply(&self, config: &mut NodeConfig) {
        if let Some(cookie) = &self.cookie {
            config.cookie.clone_from(cookie);
        }
        let q = &mut config.quorum;
        set(&mut q.n, self.n);
        set(&mut q.w, self.w);
        set(&mut q.r, self.r);
        set(&mut q.put_timeout_ms, self.put_timeout_ms);
        set(&mut q.get_timeout_ms, self.get_timeout_ms);
        set(&mut config.vnodes, self.vnodes);
        let g = &mut config.gossip;
        set(&mut g.interval_ms, self.gossip_interval_ms);
        set(&mut g.timeouts.suspect_after_ms, self.suspect_after_ms);
        set(&mut g.timeouts.dead_after_ms, self.dead_after_ms);
        let ae = &mut config.anti_entropy;
        set(&mut ae.interval_ms, self.anti_entropy_interval_ms);
        set(&mut ae.tombstone_grace_ms, self.tombstone_grace_ms);
        set(&mut config.hints.max_hints, self.max_hints);
        set(&mut config.hints.max_bytes, self.max_hint_bytes);
    }

    /// The cookie this command was given: `--cookie`, else `$DYNAMO_COOKIE` (its trailing
    /// newline dropped, as `start` reads it); a blank one counts as none.
    pub fn given_cookie(&self) -> Option<String> {
        self.cookie
            .clone()
            .or_else(|| std::env::var(COOKIE_ENV).ok())
            .map(|c| c.trim_end_matches(['\n', '\r']).to_owned())
            .filter(|c| !c.trim().is_empty())
    }

    /// The same flags as command-line arguments, for a child `dynamo-node start`; the cookie
    /// is not among them (a child gets it through its environment).
    pub fn to_args(&self) -> Vec<String> {
        let numbers = [
            ("--n", self.n.map(|v| v as u64)),
            ("--w", self.w.map(|v| v as u64)),
            ("--r", self.r.map(|v| v as u64)),
            ("--vnodes", self.vnodes.map(u64::from)),
            ("--put-timeout-ms", self.put_timeout_ms),
            ("--get-timeout-ms", self.get_timeout_ms),
            ("--gossip-interval-ms", self.gossip_interval_ms),
            ("--suspect-after-ms", self.suspect_after_ms),
            ("--dead-after-ms", self.dead_after_ms),
            ("--anti-entropy-interval-ms", self.anti_entropy_interval_ms),
            ("--tombstone-grace-ms", self.tombstone_grace_ms),
            ("--max-hints", self.max_hints.map(|v| v as u64)),
            ("--max-hint-bytes", self.max_hint_bytes),
        ];
        let mut args = Vec::new();
        for (flag, value) in numbers {
            if let Some(value) = value {
                args.extend([flag.to_string(), value.to_string()]);
            }
        }
        args
    }

    /// Checks the flags as a node would, with the defaults for what is not given.
    pub fn validate(&self) -> Result<(), CliError> {
        let mut config = NodeConfig::new("check", SocketAddr::from(([127, 0, 0, 1], 0)));
        self.apply(&mut config);
        config
            .validate()
            .map_err(|e| CliError::Usage(format!("invalid node settings: {e}")))
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// `dynamo-node start`: one node in the foreground.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct StartArgs {
    /// The node's unique name in the cluster
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Cluster (node-to-node) address; outgoing cluster connections bind its IP too
    #[arg(long, value_name = "IP:PORT")]
    pub bind: SocketAddr,
    /// HTTP API address
    #[arg(long, value_name = "IP:PORT")]
    pub http: SocketAddr,
    /// Cluster address of a node to join through; HOST:PORT with a DNS name works too,
    /// resolved again at each dial (repeatable)
    #[arg(long = "seed", value_name = "IP:PORT", value_parser = parse_seed)]
    pub seeds: Vec<String>,
    /// Tuning.
    #[command(flatten)]
    pub flags: NodeFlags,
    /// Where data is kept [default: in memory; a restart then takes a new incarnation]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// With --data-dir: acknowledge a write after an fsync that covers it (always: survives
    /// a power loss), or once the OS has it (never: survives a process crash only)
    #[arg(long, value_enum, value_name = "WHEN", default_value = "always")]
    pub fsync: Fsync,
    /// With --data-dir: refuse writes (507) while less than this many MiB are free
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MIN_FREE_BYTES >> 20)]
    pub min_free_mb: u64,
    /// Mutual TLS between nodes.
    #[command(flatten)]
    pub tls: TlsFlags,
    /// Secrets, HTTPS and HTTP bounds.
    #[command(flatten)]
    pub security: SecurityFlags,
}

/// Mutual TLS between cluster members: all three or none.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFlags {
    /// PEM certificate (chain) whose DNS name (SAN) is this node's (or client's) name; with
    /// --tls-key and --tls-ca, cluster connections are mutual TLS only
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate(s) of the CA every member's certificate must chain to
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Tests only: start even though --tls-cert is not for the node's name, to play a node
    /// that poses as another (its peers must refuse it)
    #[arg(long, hide = true, requires = "tls_cert")]
    pub tls_impostor: bool,
}

impl TlsFlags {
    /// The paths, checked by loading them for `name`; a bad file or a missing flag is a
    /// usage error naming the flag.
    pub fn paths(&self, name: &str) -> Result<Option<TlsPaths>, CliError> {
        let usage = |e: crate::tls::TlsError| CliError::Usage(e.to_string());
        let paths = TlsPaths::from_flags(
            self.tls_cert.clone(),
            self.tls_key.clone(),
            self.tls_ca.clone(),
        )
        .map_err(usage)?
        .map(|paths| TlsPaths {
            impostor: self.tls_impostor,
            ..paths
        });
        if let Some(paths) = &paths {
            NodeTls::load(paths, name).map_err(usage)?;
        }
        Ok(paths)
    }
}

/// A seed: `ip:port`, or `host:port` with a DNS name resolved at each dial.
pub fn parse_seed(seed: &str) -> Result<String, String> {
    if seed.parse::<SocketAddr>().is_ok() {
        return Ok(seed.to_string());
    }
    let valid = seed.rsplit_once(':').is_some_and(|(host, port)| {
        port.parse::<u16>().is_ok_and(|p| p != 0)
            && !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    });
    if valid {
        Ok(seed.to_string())
    } else {
        Err(format!(
            "{seed:?} is neither IP:PORT nor HOST:PORT (a DNS name and a port)"
        ))
    }
}

impl StartArgs {
    /// The node's configuration and its HTTP API's guard, validated; a bad value is a usage
    /// error.
    pub fn to_config(&self) -> Result<(NodeConfig, HttpGuard), CliError> {
        self.to_config_with_env(std::env::var(COOKIE_ENV).ok())
    }

    /// [`StartArgs::to_config`] with `env_cookie` as the value of `$DYNAMO_COOKIE`.
    pub fn to_config_with_env(
        &self,
        env_cookie: Option<String>,
    ) -> Result<(NodeConfig, HttpGuard), CliError> {
        if self.name.trim().is_empty() {
            return Err(CliError::Usage("--name must not be empty".into()));
        }
        let mut config = NodeConfig::new(self.name.clone(), self.bind);
        config.http = Some(self.http);
        config.seeds.clone_from(&self.seeds);
        config.tls = self.tls.paths(&self.name)?;
        config.data_dir.clone_from(&self.data_dir);
        config.fsync = self.fsync;
        config.min_free_bytes = self.min_free_mb.saturating_mul(1 << 20);
        self.flags.apply(&mut config);
        config
            .validate()
            .map_err(|e| CliError::Usage(format!("invalid configuration: {e}")))?;
        let guard = self
            .security
            .apply(&mut config, self.flags.cookie.as_deref(), env_cookie)?;
        Ok((config, guard))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::config::{AntiEntropyConfig, GossipConfig, QuorumConfig};
    use crate::core::hints::HintLimits;
    use crate::core::membership::FailureTimeouts;

    fn start(args: &[&str]) -> Result<StartArgs, clap::Error> {
        let argv = ["dynamo-node", "start"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Start(args) => Ok(*args),
            other => panic!("parsed as {other:?}"),
        }
    }

    const BASE: [&str; 6] = [
        "--name",
        "n1",
        "--bind",
        "127.0.0.2:7001",
        "--http",
        "127.0.0.2:8001",
    ];

    #[test]
    fn every_flag_reaches_the_config() {
        let mut argv = BASE.to_vec();
        argv.extend([
            "--seed",
            "127.0.0.3:7002",
            "--seed",
            "127.0.0.4:7003",
            "--cookie",
            "s3cret",
            "--n",
            "5",
            "--w",
            "3",
            "--r",
            "4",
            "--vnodes",
            "64",
            "--put-timeout-ms",
            "1500",
            "--get-timeout-ms",
            "2500",
            "--gossip-interval-ms",
            "200",
            "--suspect-after-ms",
            "800",
            "--dead-after-ms",
            "4000",
            "--anti-entropy-interval-ms",
            "0",
            "--tombstone-grace-ms",
            "60000",
            "--max-hints",
            "500",
            "--max-hint-bytes",
            "65536",
            "--data-dir",
            "/var/lib/dynamo",
            "--fsync",
            "never",
            "--min-free-mb",
            "10",
        ]);
        let config = start(&argv).unwrap().to_config_with_env(None).unwrap().0;
        let expected = NodeConfig {
            name: "n1".into(),
            bind: "127.0.0.2:7001".parse().unwrap(),
            http: Some("127.0.0.2:8001".parse().unwrap()),
            seeds: vec!["127.0.0.3:7002".into(), "127.0.0.4:7003".into()],
            cookie: "s3cret".into(),
            quorum: QuorumConfig {
                n: 5,
                w: 3,
                r: 4,
                put_timeout_ms: 1500,
                get_timeout_ms: 2500,
            },
            vnodes: 64,
            gossip: GossipConfig {
                interval_ms: 200,
                timeouts: FailureTimeouts {
                    suspect_after_ms: 800,
                    dead_after_ms: 4000,
                },
            },
            anti_entropy: AntiEntropyConfig {
                interval_ms: 0,
                tombstone_grace_ms: 60_000,
            },
            data_dir: Some("/var/lib/dynamo".into()),
            fsync: Fsync::Never,
            min_free_bytes: 10 << 20,
            hints: HintLimits {
                max_hints: 500,
                max_bytes: 65_536,
            },
            tls: None,
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn omitted_flags_keep_the_documented_defaults() {
        let config = start(&BASE).unwrap().to_config_with_env(None).unwrap().0;
        let mut expected = NodeConfig::new("n1", "127.0.0.2:7001".parse().unwrap());
        expected.http = Some("127.0.0.2:8001".parse().unwrap());
        assert_eq!(config, expected);
        assert_eq!(config.quorum, QuorumConfig::default());
        assert_eq!(config.cookie, "dynamo");
    }

    #[test]
    fn name_bind_and_http_are_required_and_addresses_must_parse() {
        for missing in [0, 2, 4] {
            let mut argv = BASE.to_vec();
            argv.drain(missing..missing + 2);
            let err = start(&argv).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
            assert_eq!(err.exit_code(), 2);
        }
        let mut argv = BASE.to_vec();
        argv[3] = "localhost";
        assert_eq!(
            start(&argv).unwrap_err().kind(),
            clap::error::ErrorKind::ValueValidation
        );
        let mut argv = BASE.to_vec();
        argv.extend(["--n", "three"]);
        assert_eq!(start(&argv).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn out_of_range_settings_are_usage_errors() {
        let cases: [(&[&str], &str); 6] = [
            (&["--w", "4"], "w must be between 1 and n = 3, got 4"),
            (&["--n", "17"], "n must be between 1 and 16"),
            (&["--r", "0"], "r must be between 1"),
            (&["--put-timeout-ms", "0"], "put_timeout_ms"),
            (&["--vnodes", "0"], "vnodes"),
            (
                &["--suspect-after-ms", "5000", "--dead-after-ms", "5000"],
                "",
            ),
        ];
        for (extra, needle) in cases {
            let mut argv = BASE.to_vec();
            argv.extend(extra);
            let err = start(&argv).unwrap().to_config().unwrap_err();
            assert!(matches!(err, CliError::Usage(_)), "{extra:?}");
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(needle), "{extra:?}: {err}");
        }
        let mut argv = BASE.to_vec();
        argv[1] = " ";
        assert!(start(&argv).unwrap().to_config().is_err());
    }

    #[test]
    fn seeds_are_ip_or_dns_name_with_a_port() {
        let mut argv = BASE.to_vec();
        argv.extend([
            "--seed",
            "dynamo-0.dynamo.default.svc:7000",
            "--seed",
            "[::1]:7000",
        ]);
        let config = start(&argv).unwrap().to_config().unwrap().0;
        assert_eq!(
            config.seeds,
            ["dynamo-0.dynamo.default.svc:7000", "[::1]:7000"]
        );
        for bad in [
            "dynamo-0",
            "host:0",
            ":7000",
            "host:port",
            "a b:7000",
            "h/x:1",
        ] {
            let mut argv = BASE.to_vec();
            argv.extend(["--seed", bad]);
            let err = start(&argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains("HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn tls_flags_come_together_and_their_files_are_checked_at_start() {
        let mut argv = BASE.to_vec();
        argv.extend(["--tls-cert", "/nonexistent/n1.crt"]);
        let err = start(&argv).unwrap().to_config().unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--tls-key is missing"), "{err}");
        argv.extend([
            "--tls-key",
            "/nonexistent/n1.key",
            "--tls-ca",
            "/nonexistent/ca.crt",
        ]);
        let err = start(&argv).unwrap().to_config().unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .starts_with("--tls-cert /nonexistent/n1.crt"),
            "{err}"
        );
    }

    #[test]
    fn flags_round_trip_through_child_arguments() {
        let flags = NodeFlags {
            cookie: None,
            n: Some(4),
            w: Some(3),
            r: Some(1),
            vnodes: Some(32),
            put_timeout_ms: Some(10),
            get_timeout_ms: Some(20),
            gossip_interval_ms: Some(30),
            suspect_after_ms: Some(40),
            dead_after_ms: Some(50),
            anti_entropy_interval_ms: Some(60),
            tombstone_grace_ms: Some(70),
            max_hints: Some(80),
            max_hint_bytes: Some(90),
        };
        let mut argv: Vec<String> = BASE.iter().map(|s| s.to_string()).collect();
        argv.extend(flags.to_args());
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        assert_eq!(start(&refs).unwrap().flags, flags);
        assert!(NodeFlags::default().to_args().is_empty());
        // The cookie never goes on a child's command line.
        let secret = NodeFlags {
            cookie: Some("s3cret".into()),
            ..Default::default()
        };
        assert!(
            secret
                .to_args()
                .iter()
                .all(|a| !a.contains("cookie") && a != "s3cret")
        );
    }

    #[test]
    fn cluster_flags_are_validated_against_the_defaults() {
        let ok = NodeFlags {
            n: Some(1),
            w: Some(1),
            r: Some(1),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let bad = NodeFlags {
            n: Some(1),
            ..Default::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(
            err.to_string().contains("w must be between 1 and n = 1"),
            "{err}"
        );
    }
}
