//! Anti-entropy, read repair and the tombstone purge, on real node processes.
//!
//! Replicas are inspected through `GET /admin/local/{key}` only: a normal GET would repair
//! them by itself and prove nothing about anti-entropy.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::http::HttpClient;
use dynamo_node::testing::{TestCluster, wait_until};
use futures::StreamExt;
use futures::stream;

const KEYS: usize = 1000;
/// Anti-entropy interval of the catch-up test.
const AE_INTERVAL_MS: u64 = 1000;
/// The stated bound: a restarted empty node holds every key within this time of its restart
/// (process start, gossip convergence, then a round or two: its own first round, with either
/// peer, already finds everything).
const CATCH_UP_BOUND: Duration = Duration::from_secs(20);

/// A counter or gauge of a node's `/metrics` (0 when absent), by its exact series name.
async fn metric(client: &HttpClient, series: &str) -> u64 {
    let text = client.metrics().await.expect("metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn ae_bytes(client: &HttpClient) -> u64 {
    metric(client, "dynamo_anti_entropy_bytes_total").await
}

async fn in_sync_rounds(client: &HttpClient) -> u64 {
    metric(
        client,
        "dynamo_anti_entropy_rounds_total{outcome=\"in_sync\"}",
    )
    .await
}

fn key(i: usize) -> String {
    format!("ae-key-{i:04}")
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("value-{i:04}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_empty_node_gets_every_key_from_anti_entropy_without_any_read() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .node_args(["--anti-entropy-interval-ms", &AE_INTERVAL_MS.to_string()])
        .start()
        .await;
    cluster.kill(3);
    let n1 = cluster.client(1);
    stream::iter(0..KEYS)
        .map(|i| {
            let n1 = n1.clone();
            async move {
                n1.put(key(i).as_bytes(), value(i), None, Some(2))
                    .await
                    .unwrap_or_else(|e| panic!("put {}: {e}", key(i)))
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let before: Vec<u64> = vec![
        ae_bytes(&cluster.client(1)).await,
        ae_bytes(&cluster.client(2)).await,
    ];

    // n3 restarts empty (in-memory data); it may be repaired before `restart` even returns.
    let restarted = Instant::now();
    cluster.restart(3).await;
    let converged = restarted.elapsed();
    let n3 = cluster.client(3);
    let left = CATCH_UP_BOUND.saturating_sub(restarted.elapsed());
    wait_until(left, "n3 stores every key", || async {
        metric(&n3, "dynamo_keys").await == KEYS as u64
    })
    .await;
    let caught_up = restarted.elapsed();

    // Every key, with its value, from n3's own store.
    let missing: Vec<String> = stream::iter(0..KEYS)
        .map(|i| {
            let n3 = n3.clone();
            async move {
                let local = n3.local(key(i).as_bytes()).await.expect("local read");
                let ok = local.len() == 1 && local[0].value.as_ref() == Some(&value(i));
                (!ok).then(|| format!("{}: {local:?}", key(i)))
            }
        })
        .buffer_unordered(32)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    assert!(
        missing.is_empty(),
        "{} keys wrong on n3: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    // No read ran, so nothing but anti-entropy can have brought the keys.
    for i in 1..=3 {
        assert_eq!(
            metric(&cluster.client(i), "dynamo_read_repairs_total").await,
            0
        );
    }
    let repaired = metric(&n3, "dynamo_anti_entropy_keys_repaired_total").await;
    assert_eq!(repaired, KEYS as u64, "each key repaired once on n3");

    let sent = [
        ae_bytes(&cluster.client(1)).await - before[0],
        ae_bytes(&cluster.client(2)).await - before[1],
        ae_bytes(&n3).await,
    ];
    let total: u64 = sent.iter().sum();
    println!(
        "catch-up of {KEYS} keys: {} ms after the restart (bound {} ms; the cluster had \
         converged after {} ms); anti-entropy bytes sent: n1 {} n2 {} n3 {} = {total} ({} per key)",
        caught_up.as_millis(),
        CATCH_UP_BOUND.as_millis(),
        converged.as_millis(),
        sent[0],
        sent[1],
        sent[2],
        total / KEYS as u64
    );
    // A key and its value are 20 bytes; its set (dot, context, value) and listing cost about
    // 100 more. Digests add a fixed part (64 groups of 64 segment digests at most).
    assert!(
        total >= KEYS as u64 * 20,
        "the values themselves must have travelled: {total}"
    );
    assert!(
        total <= KEYS as u64 * 250 + 128 * 1024,
        "bytes out of proportion to the {KEYS} differing keys: {total}"
    );

    // In sync again: rounds cost a few dozen bytes each.
    let clients: Vec<HttpClient> = (1..=3).map(|i| cluster.client(i)).collect();
    let mut bytes_before = 0;
    let mut rounds_before = 0;
    for c in &clients {
        bytes_before += ae_bytes(c).await;
        rounds_before += in_sync_rounds(c).await;
    }
    tokio::time::sleep(Duration::from_millis(4 * AE_INTERVAL_MS)).await;
    let mut bytes_after = 0;
    let mut rounds_after = 0;
    for c in &clients {
        bytes_after += ae_bytes(c).await;
        rounds_after += in_sync_rounds(c).await;
    }
    let rounds = rounds_after - rounds_before;
    let bytes = bytes_after - bytes_before;
    println!("in sync: {rounds} rounds sent {bytes} bytes in total");
    assert!(
        rounds >= 6,
        "every node runs a round per interval: {rounds}"
    );
    // Requests and answers of the rounds counted, plus at most one round in flight.
    assert!(
        bytes <= (rounds + 3) * 48,
        "{bytes} bytes for {rounds} rounds in sync"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_repair_fixes_a_stale_replica_with_one_read() {
    // Anti-entropy off everywhere, so only the read can repair.
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .node_args(["--anti-entropy-interval-ms", "0"])
        .start()
        .await;
    cluster.kill(3);
    let n1 = cluster.client(1);
    n1.put(b"stale", Bytes::from("fresh"), None, Some(2))
        .await
        .unwrap();
    cluster.restart(3).await;
    let n3 = cluster.client(3);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        n3.local(b"stale").await.unwrap().is_empty(),
        "with anti-entropy off, nothing repairs n3 before the read"
    );

    let got = cluster.client(2).get(b"stale", Some(3)).await.unwrap();
    assert_eq!(got.values(), vec![Bytes::from("fresh")]);

    wait_until(Duration::from_secs(5), "n3 holds the version", || async {
        n3.local(b"stale")
            .await
            .is_ok_and(|v| v.len() == 1 && v[0].value == Some(Bytes::from("fresh")))
    })
    .await;
    assert!(metric(&cluster.client(2), "dynamo_read_repairs_total").await >= 1);
    assert_eq!(
        metric(&n3, "dynamo_anti_entropy_keys_repaired_total").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_purged_only_once_every_owner_holds_them() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .node_args([
            "--anti-entropy-interval-ms",
            "500",
            "--tombstone-grace-ms",
            "1000",
        ])
        .start()
        .await;
    let (n1, n2) = (cluster.client(1), cluster.client(2));
    cluster.kill(3);
    n1.put(b"doomed", Bytes::from("v"), None, Some(2))
        .await
        .unwrap();
    n1.delete(b"doomed", None, Some(2)).await.unwrap();
    let is_tombstone_only = |local: &[dynamo_node::http::LocalVersionView]| {
        !local.is_empty() && local.iter().all(|v| v.is_tombstone())
    };
    assert!(is_tombstone_only(&n1.local(b"doomed").await.unwrap()));

    // Well past the grace, with an owner down: nobody purges.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    for client in [&n1, &n2] {
        let local = client.local(b"doomed").await.unwrap();
        assert!(
            is_tombstone_only(&local),
            "{}: the tombstone must stay while n3 lacks it: {local:?}",
            client.base_url()
        );
    }

    // n3 comes back empty: anti-entropy gives it the tombstone, then every owner purges.
    cluster.restart(3).await;
    let clients: Vec<HttpClient> = (1..=3).map(|i| cluster.client(i)).collect();
    wait_until(
        Duration::from_secs(20),
        "every owner purged the key",
        || async {
            for c in &clients {
                if !c.local(b"doomed").await.is_ok_and(|l| l.is_empty()) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let mut purged = 0;
    for c in &clients {
        purged += metric(c, "dynamo_tombstones_purged_total").await;
    }
    assert_eq!(purged, 3, "one purge on each owner");
    // Nothing brings it back: neither anti-entropy nor a read.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for c in &clients {
        assert!(
            c.local(b"doomed").await.unwrap().is_empty(),
            "{}",
            c.base_url()
        );
    }
    assert!(
        n2.get(b"doomed", Some(3))
            .await
            .unwrap()
            .values()
            .is_empty()
    );
}
