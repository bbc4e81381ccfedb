//! `dynamo-node bench`: YCSB-style workloads against a cluster, over HTTP or the native client.
//!
//! The choice of operations and keys ([`workload`], [`zipf`]) is pure and seeded, so it is
//! tested without a cluster; [`run`] drives the clients against a [`target`] (the HTTP API or
//! the native client); [`latency`] holds the histograms and rounded figures that [`stats`]
//! (the run's summary) and [`transport`] (the raw remote-call rate) both report, so that
//! transport needs nothing of stats (which carries transport's summary); [`recovery`] measures latency while a node comes back; [`memory`]
//! measures each node's resident memory (and, durable, disk) per key; [`storage`] names the
//! storage a run was served by and counts its fsyncs; [`flood`] abuses the nodes' HTTP ports
//! beside a workload; [`cpu`] reads the CPU time of the node processes and of the bench;
//! [`timeline`] keeps the run second by second, [`plot`] draws it as an SVG and [`sparkline`]
//! as text; [`versus`] sets a durable run's figures against a memory run's of the same
//! invocation.

pub mod cpu;
pub mod flood;
pub mod latency;
pub mod memory;
pub mod plot;
pub mod recovery;
pub mod run;
pub mod sparkline;
pub mod stats;
pub mod storage;
pub mod target;
pub mod timeline;
pub mod transport;
pub mod versus;
pub mod workload;
pub mod zipf;

pub use latency::OpSummary;
pub use run::Limit;
pub use run::{Bench, BenchConfig, BenchError, Measured, run_bench, run_with};
pub use stats::{BenchSummary, OpKind, Scenario, Setup, Stats};
pub use storage::{Storage, observe};
pub use target::{BenchClient, ServiceClient};
pub use transport::{TransportConfig, TransportSummary, run_transport};
pub use workload::{Distribution, KeyChooser, Workload, key_name};
pub use zipf::ZipfianGenerator;
