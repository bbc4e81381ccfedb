//! Remove (a node gone for good): refused while the node is alive; once it is dead and
//! removed, its ranges go to the other three, anti-entropy rebuilds every key on each of them,
//! and the removed name started again refuses to run instead of pushing anything back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::core::membership::{RingStatus, Status};
use dynamo_node::process::{ProcessError, ProcessStatus};
use dynamo_node::testing::{TestCluster, wait_until};
use futures::{StreamExt, stream};

const KEYS: usize = 200;
const GONE: usize = 4;
const STAYING: [usize; 3] = [1, 2, 3];

fn key(i: usize) -> String {
    format!("rebuilt-{i}")
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("value-{i}"))
}

/// The keys (by number) that node `node` does not hold a live copy of.
async fn missing_on(cluster: &TestCluster, node: usize) -> Vec<usize> {
    let client = cluster.client(node);
    let held: Vec<(usize, bool)> = stream::iter(0..KEYS)
        .map(|i| {
            let client = client.clone();
            async move {
                let versions = client.local(key(i).as_bytes()).await;
                let ok = versions.is_ok_and(|v| v.iter().any(|v| v.value == Some(value(i))));
                (i, ok)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut missing: Vec<usize> = held
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(i, _)| i)
        .collect();
    missing.sort_unstable();
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_is_rebuilt_on_the_others_and_cannot_come_back() {
    let mut cluster = TestCluster::builder()
        .nodes(4)
        .node_args([
            "--n",
            "3",
            "--gossip-interval-ms",
            "100",
            "--suspect-after-ms",
            "1000",
            "--dead-after-ms",
            "3000",
            "--anti-entropy-interval-ms",
            "300",
        ])
        .start()
        .await;
    let writes: Vec<(usize, Result<_, _>)> = stream::iter(0..KEYS)
        .map(|i| {
            let client = cluster.client(1 + i % 4);
            async move {
                (
                    i,
                    client.put(key(i).as_bytes(), value(i), None, Some(3)).await,
                )
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (i, written) in writes {
        written.unwrap_or_else(|e| panic!("put {} at w=3: {e}", key(i)));
    }
    let mut lacking = 0;
    for node in STAYING {
        lacking += missing_on(&cluster, node).await.len();
    }
    assert!(
        lacking > 0,
        "n4 held some keys in place of one of the others"
    );

    // A live node is not removed: it should leave instead.
    let refused = cluster.client(1).remove("n4").await.unwrap_err();
    assert_eq!(
        (refused.status(), refused.kind()),
        (Some(409), Some("member_alive")),
        "{refused}"
    );
    let members = cluster.client(1).members().await.unwrap();
    let n4 = members.iter().find(|m| m.node == "n4").unwrap();
    assert_eq!(
        n4.ring,
        RingStatus::Valid,
        "a refused remove changes nothing"
    );
    let unknown = cluster.client(1).remove("n9").await.unwrap_err();
    assert_eq!(
        (unknown.status(), unknown.kind()),
        (Some(404), Some("unknown_member")),
        "{unknown}"
    );

    cluster.kill(GONE);
    cluster
        .wait_status(&[1], GONE, Status::Dead, Duration::from_secs(20))
        .await;
    let entry = cluster
        .client(1)
        .remove("n4")
        .await
        .expect("remove a dead node");
    assert_eq!(entry.ring, RingStatus::Removed, "{entry:?}");
    for node in STAYING {
        wait_until(
            Duration::from_secs(20),
            &format!("n{node} sees n4 removed and off its ring"),
            || async {
                let removed = cluster
                    .member_seen_by(node, GONE)
                    .await
                    .is_some_and(|m| m.ring == RingStatus::Removed);
                let ring = cluster.client(node).ring().await;
                removed
                    && ring
                        .is_ok_and(|r| r.nodes.len() == 3 && r.nodes.iter().all(|n| n.node != "n4"))
            },
        )
        .await;
    }
    // Anti-entropy rebuilds the replicas n4 held: each of the three holds every key. Nothing
    // reads in the meantime, so read repair cannot be what brought them.
    let started = Instant::now();
    for node in STAYING {
        wait_until(
            Duration::from_secs(60),
            &format!("n{node} holds every key"),
            || async { missing_on(&cluster, node).await.is_empty() },
        )
        .await;
    }
    println!("rebuilt in {} ms", started.elapsed().as_millis());
    let reads: Vec<(usize, usize, Result<_, _>)> = stream::iter(0..KEYS)
        .map(|i| {
            let via = STAYING[i % 3];
            let client = cluster.client(via);
            async move { (i, via, client.get(key(i).as_bytes(), Some(3)).await) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (i, via, read) in reads {
        let read = read.unwrap_or_else(|e| panic!("get {} at r=3 through n{via}: {e}", key(i)));
        assert_eq!(read.values(), vec![value(i)], "{} through n{via}", key(i));
    }

    // The removed name started again (seeded with the others) must refuse to run.
    match cluster.processes().restart(GONE).await {
        Ok(()) | Err(ProcessError::EarlyExit { .. }) => {}
        Err(e) => panic!("n4 could not be started again at all: {e}"),
    }
    let started = Instant::now();
    let exit = loop {
        if let ProcessStatus::Exited(exit) = cluster.status(GONE) {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the removed n4 still runs 30 s after its restart; its log:\n{}",
            cluster.log_tail(GONE, 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = cluster.log_tail(GONE, 40);
    assert!(
        exit.code.is_some_and(|c| c != 0) && !exit.requested,
        "the removed n4 must exit by itself with a non-zero code, not {exit}; its log:\n{log}"
    );
    assert!(
        log.contains("removed from the cluster"),
        "its log says why: {log}"
    );
    // The others still call it removed, it is on no ring, and the data is as it was.
    cluster.wait_converged().await;
    for node in STAYING {
        let seen = cluster.member_seen_by(node, GONE).await.unwrap();
        assert_eq!(seen.ring, RingStatus::Removed, "n{node} about n4");
        let ring = cluster.client(node).ring().await.unwrap();
        assert!(
            ring.nodes.iter().all(|n| n.node != "n4"),
            "n{node}: {ring:?}"
        );
    }
    for i in (0..KEYS).step_by(10) {
        let read = cluster
            .client(1)
            .get(key(i).as_bytes(), Some(3))
            .await
            .unwrap();
        assert_eq!(read.values(), vec![value(i)], "{}", key(i));
    }
}
