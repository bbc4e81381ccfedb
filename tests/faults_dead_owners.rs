//! A partition that lasts past `dead_after`: each side drops the other side's nodes from its
//! ring, and writes go to the nodes left, as owners, without hints. After the heal the ring
//! is whole again and those writes must still be found: the store promises never to lose an
//! acknowledged write silently.

use std::time::Duration;

use bytes::Bytes;
use dynamo_node::core::membership::Status;
use dynamo_node::testing::TestCluster;

const VIEW_CHANGE: Duration = Duration::from_secs(20);
const CONVERGE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_acknowledged_while_its_owners_were_dead_is_readable_after_the_heal() {
    // A node gossips with one random peer per round: with three of its four peers cut off, a
    // node of the two-node side hears its partner only by chance until the far side is
    // suspect, so suspicion waits 20 rounds, not 5, lest the pair suspect each other.
    let mut cluster = TestCluster::builder()
        .nodes(5)
        .node_args([
            "--n",
            "3",
            "--gossip-interval-ms",
            "100",
            "--suspect-after-ms",
            "2000",
            "--dead-after-ms",
            "4000",
        ])
        .start()
        .await;
    // A key owned by n3, n4 and n5 on the whole ring; n1 and n2 are its fallbacks.
    let key = cluster.key_owned_by("stranded-", &[3, 4, 5]);
    let key = key.as_bytes();

    cluster.partition(&[&[1, 2], &[3, 4, 5]]);
    for node in [3, 4, 5] {
        cluster
            .wait_status(&[1, 2], node, Status::Dead, VIEW_CHANGE)
            .await;
    }
    // The left side's ring is {n1, n2} now: the write lands on both, acknowledged.
    cluster
        .client(1)
        .put(key, Bytes::from("acknowledged"), None, None)
        .await
        .expect("W = 2 is met by n1 and n2");
    for i in [1, 2] {
        let local = cluster.client(i).local(key).await.unwrap();
        assert_eq!(local.len(), 1, "n{i} holds the write: {local:?}");
    }

    cluster.heal();
    cluster.processes().wait_converged(CONVERGE).await.unwrap();

    // The owners are n3, n4, n5 again; read repair, hints and anti-entropy are what could
    // bring them the write that n1 and n2 hold.
    let found_everywhere = || async {
        for reader in 1..=5 {
            let got = cluster.client(reader).get(key, None).await;
            if !got.is_ok_and(|got| got.values() == vec![Bytes::from("acknowledged")]) {
                return false;
            }
        }
        true
    };
    let started = std::time::Instant::now();
    while !found_everywhere().await {
        if started.elapsed() > CONVERGE {
            let mut report = String::new();
            for i in 1..=5 {
                let client = cluster.client(i);
                let read = client.get(key, None).await;
                let local = client.local(key).await.map(|v| v.len());
                report.push_str(&format!(
                    "\n  n{i}: read {read:?}, stores {local:?} version(s)"
                ));
            }
            panic!(
                "the acknowledged write is not read back {} s after the heal:{report}",
                CONVERGE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
