//! A partition that lasts past `dead_after` and cuts off every owner of a key. Liveness moves
//! routing, never ownership: the owners stay owners on both sides, so a write on the other
//! side goes to fallbacks as hints (plus the coordinator's own copy), acknowledged. After the
//! heal the write must be found, the hints handed to the owners, and the copies on the nodes
//! that do not own the key dropped once the owners hold it.

use std::time::Duration;

use bytes::Bytes;
use dynamo_node::core::membership::{RingStatus, Status};
use dynamo_node::testing::{TestCluster, wait_until};

const VIEW_CHANGE: Duration = Duration::from_secs(20);
const CONVERGE: Duration = Duration::from_secs(60);

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
            "--anti-entropy-interval-ms",
            "300",
        ])
        .start()
        .await;
    // A key owned by n3, n4 and n5 on the ring; n1 and n2 are its fallbacks.
    let key = cluster.key_owned_by("stranded-", &[3, 4, 5]);
    let key = key.as_bytes();
    let value = Bytes::from("acknowledged");

    cluster.partition(&[&[1, 2], &[3, 4, 5]]);
    for node in [3, 4, 5] {
        cluster
            .wait_status(&[1, 2], node, Status::Dead, VIEW_CHANGE)
            .await;
    }
    // Dead, yet still valid members on the ring: ownership did not move.
    for i in [1, 2] {
        let ring = cluster.client(i).ring().await.unwrap();
        assert_eq!(ring.nodes.len(), 5, "n{i}'s ring: {ring:?}");
        for node in [3, 4, 5] {
            let seen = cluster.member_seen_by(i, node).await.unwrap();
            assert_eq!(seen.ring, RingStatus::Valid, "n{i} about n{node}");
        }
    }
    // The write goes to the fallbacks n1 and n2, as hints for the dead owners: W = 2 is met.
    // With no owner live, the first fallback of the key's walk coordinates it.
    let coordinator = cluster
        .preference(key)
        .into_iter()
        .find(|i| [1, 2].contains(i))
        .unwrap();
    cluster
        .client(1)
        .put(key, value.clone(), None, None)
        .await
        .expect("W = 2 is met by the fallbacks n1 and n2");
    for i in [1, 2] {
        let hints = cluster.metric(i, "dynamo_hints_pending").await;
        assert!(
            hints.is_some_and(|h| h >= 1.0),
            "n{i} keeps the write as a hint: {hints:?}"
        );
    }
    assert!(
        cluster.stores(coordinator, key, &value).await,
        "the coordinator n{coordinator} keeps its own copy"
    );

    cluster.heal();
    cluster.processes().wait_converged(CONVERGE).await.unwrap();

    // The hints reach the owners, which then hold the write themselves.
    wait_until(CONVERGE, "n3, n4 and n5 store the write", || async {
        for owner in [3, 4, 5] {
            if !cluster.stores(owner, key, &value).await {
                return false;
            }
        }
        true
    })
    .await;
    // n1 and n2 do not own the key: their hints are gone once delivered, and the
    // coordinator's own copy once the owners acknowledged it (handoff).
    wait_until(
        CONVERGE,
        "n1 and n2 hold neither a hint nor a copy of the key",
        || async {
            for i in [1, 2] {
                let hints = cluster.metric(i, "dynamo_hints_pending").await;
                let local = cluster.client(i).local(key).await;
                if hints != Some(0.0) || !local.is_ok_and(|v| v.is_empty()) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    // Read through every node.
    for reader in 1..=5 {
        let got = cluster.client(reader).get(key, None).await;
        let got = got.unwrap_or_else(|e| panic!("read through n{reader}: {e}"));
        assert_eq!(got.values(), vec![value.clone()], "read through n{reader}");
    }
}
