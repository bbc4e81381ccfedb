//! Membership over real processes: a dead node leaves every ring and comes back when heard.

use std::time::Duration;

use dynamo_node::core::membership::Status;
use dynamo_node::testing::{TestCluster, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_leaves_the_ring_and_returns_when_heard_again() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .node_args(["--suspect-after-ms", "600", "--dead-after-ms", "1500"])
        .start()
        .await;
    let ring_version = cluster.client(1).ring().await.unwrap().version;
    cluster.kill(3);
    for i in 1..=2 {
        let client = cluster.client(i);
        wait_until(
            Duration::from_secs(20),
            &format!("n{i} sees n3 dead and off its ring"),
            || async {
                let members = client.members().await.unwrap_or_default();
                let dead = members
                    .iter()
                    .any(|m| m.node == "n3" && m.status == Status::Dead);
                let ring = client.ring().await.map(|r| r.nodes.len()).unwrap_or(0);
                dead && ring == 2
            },
        )
        .await;
    }
    // Keys stay writable and readable on the shrunken ring.
    let c1 = cluster.client(1);
    c1.put(b"while-dead", "v".into(), None, None).await.unwrap();
    assert_eq!(c1.get(b"while-dead", None).await.unwrap().values().len(), 1);

    cluster.restart(3).await;
    for i in 1..=3 {
        let client = cluster.client(i);
        wait_until(
            Duration::from_secs(20),
            &format!("n{i} has all three nodes on its ring"),
            || async {
                client
                    .ring()
                    .await
                    .map(|r| r.nodes.len() == 3)
                    .unwrap_or(false)
            },
        )
        .await;
    }
    assert!(cluster.client(1).ring().await.unwrap().version > ring_version + 1);
}
