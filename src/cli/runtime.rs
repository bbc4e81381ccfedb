//! The tokio runtime a command runs on.
//!
//! A node given one worker thread (`TOKIO_WORKER_THREADS=1`, as local clusters start their
//! nodes when the nodes outnumber the cores, or a machine of one core) runs on a
//! current-thread runtime rather than a multi-thread one of one worker. Both run the node's
//! tasks on one thread, but the multi-thread scheduler keeps its machinery for handing work
//! between threads and pays for it on every wake-up: on 2 cores, 3 nodes under YCSB-A spent
//! about 6% less CPU per operation on the current-thread one (BENCHMARKS.md). Other commands keep the multi-thread runtime: the
//! `cluster` shell blocks on the terminal, and `bench` drives 64 clients.

use std::ffi::OsStr;

use tokio::runtime::{Builder, Runtime};

use crate::config::WORKER_THREADS_ENV;

/// The multi-thread runtime commands run on; `None`, said on stderr, when it cannot start.
pub fn runtime() -> Option<Runtime> {
    build(Builder::new_multi_thread())
}

/// The runtime a node runs on: current-thread when it would have one worker, else as
/// [`runtime`].
pub fn node_runtime() -> Option<Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = std::env::var_os(WORKER_THREADS_ENV);
    if one_worker(workers.as_deref(), cores) {
        build(Builder::new_current_thread())
    } else {
        runtime()
    }
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
}
