//! The tokio runtime a command runs on.
//!
//! A node given one worker thread (`TOKIO_WORKER_THREADS=1`, as local clusters start their
//! nodes when the nodes outnumber the cores, or a machine of one core) runs on a
//! current-thread runtime rather than a multi-thread one of one worker. Both run the node's
//! tasks on one thread, but the multi-thread scheduler keeps its machinery for handing work
//! between threads (which part of it costs most was not profiled): on 2 cores, 3 nodes under
//! YCSB-A spent about 9% less CPU per operation on the current-thread one (BENCHMARKS.md). A
//! `bench` that starts its own cluster takes a share of the cores beside its nodes: on 2
//! cores its clients spent about 20% less CPU per operation on one worker than on two, and
//! 13% less again on a current-thread runtime than on a multi-thread one of one worker. Other
//! commands keep tokio's default multi-thread runtime (the `cluster` shell blocks on the
//! terminal).

use std::ffi::OsStr;

use tokio::runtime::{Builder, Runtime};

use crate::config::WORKER_THREADS_ENV;
use crate::process::{core_share, machine_cores};

/// The multi-thread runtime commands run on; `None`, said on stderr, when it cannot start.
pub fn runtime() -> Option<Runtime> {
    build(Builder::new_multi_thread())
}

/// The runtime a node runs on: current-thread when it would have one worker, else as
/// [`runtime`].
pub fn node_runtime() -> Option<Runtime> {
    let workers = std::env::var_os(WORKER_THREADS_ENV);
    if one_worker(workers.as_deref(), machine_cores()) {
        build(Builder::new_current_thread())
    } else {
        runtime()
    }
}

/// The runtime `bench` runs on. When it starts its own cluster of `nodes` on this machine it
/// takes a share of the cores as each node does (`cores / (nodes + 1)` workers, at least one),
/// unless `TOKIO_WORKER_THREADS` says otherwise; against nodes elsewhere, as [`runtime`]. One
/// worker means a current-thread runtime, as for a node.
pub fn bench_runtime(starts_cluster: bool, nodes: usize) -> Option<Runtime> {
    let workers = std::env::var_os(WORKER_THREADS_ENV);
    match bench_threads(workers.as_deref(), machine_cores(), starts_cluster, nodes) {
        BenchThreads::One => build(Builder::new_current_thread()),
        BenchThreads::Share(share) => {
            let mut builder = Builder::new_multi_thread();
            builder.worker_threads(share);
            build(builder)
        }
        BenchThreads::Default => runtime(),
    }
}

/// How many threads a bench's runtime gets.
#[derive(Debug, PartialEq, Eq)]
enum BenchThreads {
    /// One: a current-thread runtime.
    One,
    /// A multi-thread runtime of this many workers, its share beside its nodes.
    Share(usize),
    /// A multi-thread runtime as tokio sizes it (from the environment or the cores).
    Default,
}

/// The bench's threads, given `workers` (the value of [`WORKER_THREADS_ENV`]), the machine's
/// `cores`, and whether it starts a cluster of `nodes` beside itself.
fn bench_threads(
    workers: Option<&OsStr>,
    cores: usize,
    starts_cluster: bool,
    nodes: usize,
) -> BenchThreads {
    if one_worker(workers, cores) {
        return BenchThreads::One;
    }
    if !starts_cluster || workers.is_some() {
        return BenchThreads::Default;
    }
    match bench_workers(cores, nodes) {
        1 => BenchThreads::One,
        share => BenchThreads::Share(share),
    }
}

/// Worker threads of a bench sharing `cores` with the `nodes` it started: one share among
/// them all, as each node gets (`process::LocalCluster`).
fn bench_workers(cores: usize, nodes: usize) -> usize {
    core_share(cores, nodes + 1)
}

fn build(mut builder: Builder) -> Option<Runtime> {
    match builder.enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// True when a multi-thread runtime would start a single worker: `workers` (the value of
/// [`WORKER_THREADS_ENV`]) says 1, or it is unset and the machine has one core. A value that
/// is not a number is left to tokio, which refuses it.
fn one_worker(workers: Option<&OsStr>, cores: usize) -> bool {
    match workers {
        Some(value) => value.to_str().and_then(|v| v.parse::<usize>().ok()) == Some(1),
        None => cores <= 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_is_what_the_environment_or_a_single_core_says() {
        let env = |v: &str| Some(OsStr::new(v).to_owned());
        assert!(one_worker(env("1").as_deref(), 8));
        assert!(!one_worker(env("2").as_deref(), 1));
        assert!(!one_worker(env("many").as_deref(), 1));
        assert!(one_worker(None, 1));
        assert!(!one_worker(None, 2));
    }

    #[test]
    fn a_bench_takes_its_share_of_the_cores_beside_its_nodes() {
        assert_eq!(bench_workers(2, 3), 1);
        assert_eq!(bench_workers(8, 3), 2);
        assert_eq!(bench_workers(16, 3), 4);
        assert_eq!(bench_workers(1, 0), 1);
    }

    #[test]
    fn a_bench_of_one_worker_runs_on_a_current_thread_runtime() {
        let env = |v: &str| Some(OsStr::new(v).to_owned());
        // Its share beside a cluster of 3: 2 cores give it one worker, 8 cores two.
        assert_eq!(bench_threads(None, 2, true, 3), BenchThreads::One);
        assert_eq!(bench_threads(None, 8, true, 3), BenchThreads::Share(2));
        // The environment decides over the share, and one worker is one thread.
        assert_eq!(
            bench_threads(env("1").as_deref(), 8, true, 3),
            BenchThreads::One
        );
        assert_eq!(
            bench_threads(env("4").as_deref(), 2, true, 3),
            BenchThreads::Default
        );
        // Against nodes elsewhere: tokio's default, unless that is one worker.
        assert_eq!(bench_threads(None, 8, false, 3), BenchThreads::Default);
        assert_eq!(bench_threads(None, 1, false, 3), BenchThreads::One);
    }
}
