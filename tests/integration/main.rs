//! The integration tests, one module per subject, in one test executable: compiled and
//! linked against the library once, rather than once per file.
//!
//! Run one module with `cargo test --test integration nemesis::`, one test with its full
//! name. The tests share this process: at most two run at once (cargo's default on two
//! cores), each node they start lives in a process of its own, on a loopback net of its own
//! (`LoopbackNet::unique`), and the few that run ractor in this process (an in-process node,
//! a native client, a mesh member of their own) take turns through `ractor_turn`.

mod common;
mod ractor_turn;

mod anti_entropy;
mod bad_data_dir;
mod bench_smoke;
mod cli_client;
mod cli_cluster;
mod cli_cluster_fake;
mod cli_usage;
mod cluster_http;
mod deletes_stay_deleted;
mod disk_full;
mod durable_crash_load;
mod durable_restart;
mod examples;
mod faults_cart;
mod faults_dead_owners;
mod faults_partition;
mod faults_pause;
mod flood;
mod forged_context;
mod forged_sender;
mod layers;
mod leave;
mod membership;
mod native_client;
mod nemesis;
mod protected_mode;
mod remove;
mod request_spans;
mod shell;
mod single_node;
mod tls_cluster;
mod zombie_guard;
