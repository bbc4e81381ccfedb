//! A node under a flood of malformed requests, slow-header connections and oversized bodies
//! stays up, keeps serving good requests, and its resident memory stays bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::bench::flood::{KINDS, flood};
use dynamo_node::testing::TestCluster;

/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(4);
/// Growth of the node's resident memory allowed over the flood.
const MEMORY_SLACK: f64 = 128.0 * 1024.0 * 1024.0;

#[tokio::test]
async fn good_requests_keep_succeeding_under_a_flood_and_memory_stays_bounded() {
    let cluster = TestCluster::builder()
        .nodes(1)
        .node_args([
            "--n",
            "1",
            "--w",
            "1",
            "--r",
            "1",
            "--http-header-timeout-ms",
            "500",
        ])
        .start()
        .await;
    let client = cluster.client(1);
    let addr = cluster.http_addr(1);
    client
        .put(b"warm", Bytes::from("up"), None, None)
        .await
        .unwrap();
    let before = cluster
        .metric(1, "dynamo_resident_memory_bytes")
        .await
        .expect("the node exports its resident memory");

    let end = Instant::now() + FLOOD;
    let stop = Arc::new(AtomicBool::new(false));
    // 4 connections of each kind at a time.
    let flood = tokio::spawn(flood(vec![addr], 4 * KINDS, Arc::clone(&stop)));
    let good = Arc::new(AtomicU64::new(0));
    let workload = {
        let (client, good) = (client.clone(), Arc::clone(&good));
        tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < end {
                let key = format!("good-{}", i % 50);
                let value = Bytes::from(format!("v{i}"));
                client.put(key.as_bytes(), value, None, None).await?;
                client.get(key.as_bytes(), None).await?;
                good.fetch_add(2, Ordering::Relaxed);
                i += 1;
            }
            Ok::<_, dynamo_node::http::HttpError>(())
        })
    };
    workload
        .await
        .unwrap()
        .expect("every good request succeeded during the flood");
    stop.store(true, Ordering::Relaxed);
    let sent = flood.await.unwrap();

    let served = good.load(Ordering::Relaxed);
    assert!(served >= 100, "only {served} good requests in {FLOOD:?}");
    assert!(sent >= 1000, "the flood sent only {sent} requests");
    assert_eq!(client.health().await.unwrap().status, "ok");
    let after = cluster
        .metric(1, "dynamo_resident_memory_bytes")
        .await
        .unwrap();
    assert!(
        after < before + MEMORY_SLACK,
        "resident memory grew from {before} to {after}"
    );
    let hits = cluster
        .metric(1, "dynamo_http_limit_hits_total")
        .await
        .unwrap_or(0.0);
    assert!(hits >= 1.0, "no bound was hit by the flood");
    eprintln!(
        "flood: {sent} bad requests, {served} good ones, resident {before} -> {after} bytes, {hits} bound hits"
    );
}
