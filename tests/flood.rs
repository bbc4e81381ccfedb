//! A node under a flood of malformed requests, slow-header connections and oversized bodies
//! stays up, keeps serving good requests, and its resident memory stays bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::testing::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(4);
/// Growth of the node's resident memory allowed over the flood.
const MEMORY_SLACK: f64 = 128.0 * 1024.0 * 1024.0;

/// Sends `request` on a fresh connection and reads until the node answers or closes.
async fn exchange(addr: SocketAddr, request: &[u8]) {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = tcp.write_all(request).await;
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await;
}

/// One kind of abuse, repeated until `end`; returns how many it sent.
async fn abuse(addr: SocketAddr, end: Instant, kind: usize) -> u64 {
    let oversized = format!(
        "PUT /kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        64 << 20
    );
    let mut chunked =
        b"PUT /kv/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b'x'; 256 * 1024];
    for _ in 0..8 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    let mut sent = 0;
    while Instant::now() < end {
        match kind {
            0 => exchange(addr, b"GARBAGE \x00\xff nonsense\r\n\r\n").await,
            1 => {
                exchange(
                    addr,
                    b"GET /kv/%zz?r=abc HTTP/1.1\r\nHost: x\r\nX-Dynamo-Context: !!\r\n\r\n",
                )
                .await
            }
            2 => exchange(addr, oversized.as_bytes()).await,
            3 => exchange(addr, &chunked).await,
            _ => {
                // Headers that never end: held until the node cuts the connection off.
                exchange(addr, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await
            }
        }
        sent += 1;
    }
    sent
}

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
    // 4 connections of each kind at a time.
    let flood = (0..20).map(|i| tokio::spawn(abuse(addr, end, i % 5)));
    let sent: u64 = futures::future::join_all(flood)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    workload
        .await
        .unwrap()
        .expect("every good request succeeded during the flood");

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
