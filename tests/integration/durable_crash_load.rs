//! Writes under load while a durable replica is killed with SIGKILL and restarted on its
//! directory again and again: every acknowledged write ends up on every replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::http::HttpClient;
use dynamo_node::testing::TestCluster;

/// Writers, spread over the nodes that stay up.
const WRITERS: usize = 4;
/// The nodes the writers go through (1-based); the last node is the one that crashes.
const VIA: [usize; 2] = [1, 2];
const VICTIM: usize = 3;
const CRASHES: usize = 4;
/// Writing time before each crash, and how long the victim stays down.
const UP: Duration = Duration::from_millis(1500);
const DOWN: Duration = Duration::from_millis(500);
/// How long anti-entropy may take to bring every replica up to date afterwards.
const CONVERGE: Duration = Duration::from_secs(30);
/// Anti-entropy every half second, so that the victim catches up on what it missed soon.
const AE_INTERVAL_MS: &str = "500";

/// Writes distinct keys blind, one at a time, until `stop`; returns those acknowledged (200)
/// and the number of writes that failed.
async fn writer(
    id: usize,
    client: HttpClient,
    stop: Arc<AtomicBool>,
) -> (Vec<(String, Bytes)>, usize) {
    let mut acked = Vec::new();
    let mut failed = 0;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("crash-w{id}-{seq:06}");
        let value = Bytes::from(format!("v-{id}-{seq}"));
        seq += 1;
        match client.put(key.as_bytes(), value.clone(), None, None).await {
            Ok(_) => acked.push((key, value)),
            // Not acknowledged: it may or may not be stored, and nothing is promised for it.
            Err(_) => failed += 1,
        }
    }
    (acked, failed)
}

/// How many keys the node's last start found in its directory: the `keys=` of its `data
/// directory opened` log line after the last start header. Read from the log, not from
/// `/metrics`, since anti-entropy may refill the node before it is asked.
fn keys_reopened(log: &str) -> u64 {
    let last_start = log.rfind("=== ").expect("a start header in the log");
    let line = log[last_start..]
        .lines()
        .find(|l| l.contains("data directory opened"))
        .unwrap_or_else(|| panic!("no `data directory opened` line after the last start:\n{log}"));
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("keys="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no keys=N in {line:?}"))
}

/// Writes one key with `w` = 3 (every replica, the victim among them, with three nodes and
/// N = 3) until it is acknowledged; the writers' load can make an attempt time out.
async fn all_replicas_synced(cluster: &TestCluster, crash: usize) {
    let client = cluster.client(VIA[0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let key = format!("crash-barrier-{crash}");
    loop {
        match client
            .put(
                key.as_bytes(),
                Bytes::from_static(b"barrier"),
                None,
                Some(3),
            )
            .await
        {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("barrier write before crash {crash}: {e}")
            }
            Err(e) => {
                panic!("no write acknowledged by all three replicas before crash {crash}: {e}")
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_repeated_crashes_of_a_durable_replica() {
    let started = Instant::now();
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .durable()
        .node_args(["--anti-entropy-interval-ms", AE_INTERVAL_MS])
        // The victim's `data directory opened` line is at info.
        .rust_log("info")
        .start()
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            let client = cluster.client(VIA[id % VIA.len()]);
            tokio::spawn(writer(id, client, Arc::clone(&stop)))
        })
        .collect();

    for crash in 1..=CRASHES {
        // The pace of the scenario, not a wait for some condition: writes flow meanwhile.
        tokio::time::sleep(UP).await;
        // Keys are only added, so the victim must reopen with at least what it held here.
        let held = cluster
            .metric(VICTIM, "dynamo_keys")
            .await
            .expect("the victim's key count") as u64;
        // Under `--fsync always` a replica's change is only promised once it acknowledged
        // it; the count can include writes still in flight. A write that all three replicas
        // acknowledge needs one of the victim's syncs after the count was read, and each sync
        // covers every change made before it: after it, all that was counted is on disk.
        all_replicas_synced(&cluster, crash).await;
        cluster.kill(VICTIM);
        tokio::time::sleep(DOWN).await;
        cluster.restart(VICTIM).await;
        let reopened = keys_reopened(&cluster.log_tail(VICTIM, 400));
        assert!(
            reopened >= held,
            "crash {crash}: n{VICTIM} held {held} keys before the kill and reopened its directory with {reopened}"
        );
    }
    tokio::time::sleep(UP).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut failed = 0;
    for w in writers {
        let (ok, bad) = w.await.expect("writer task");
        acked.extend(ok);
        failed += bad;
    }
    eprintln!(
        "{} writes acknowledged, {failed} failed, in {} ms of faults",
        acked.len(),
        started.elapsed().as_millis()
    );
    assert!(
        acked.len() >= 100,
        "too few writes acknowledged to prove anything: {} ({failed} failed)",
        acked.len()
    );

    // Whatever the victim missed while down comes back through anti-entropy; what it held
    // when killed it must still hold from its disk.
    for i in 1..=3 {
        cluster.wait_all_held(i, &acked, CONVERGE).await;
    }
    eprintln!(
        "converged after {} ms in all",
        started.elapsed().as_millis()
    );
}
