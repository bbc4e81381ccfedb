//! Network partitions between real node processes (iptables rules between their loopback
//! addresses): failure detection across the cut, and hinted handoff once it heals.
//!
//! These tests need iptables and root; without them they fail, saying so.

use std::time::Duration;

use bytes::Bytes;
use dynamo_node::core::membership::Status;
use dynamo_node::testing::{TestCluster, wait_until};

/// Bound of every wait for a view to change; detection itself takes 1 s to 3 s.
const VIEW_CHANGE: Duration = Duration::from_secs(20);
/// Bound of the wait until a healed cluster is whole again. A partition does not break the
/// TCP sessions, it stalls them: after the heal, the kernel resends their backlog on its own
/// backoff (seconds after a cut of several seconds), so this is generous.
const REJOIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_node_is_suspect_then_dead_on_both_sides_and_alive_again_after_the_heal() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        // Suspect after 1 s of silence (10 gossip rounds), dead after 3 s.
        .fast_failure_detection()
        .start()
        .await;
    cluster.partition(&[&[1], &[2, 3]]);

    // Each side sees the other suspect first, then dead ...
    for (observers, node) in [(&[2, 3][..], 1), (&[1][..], 2), (&[1][..], 3)] {
        cluster
            .wait_status(observers, node, Status::Suspect, VIEW_CHANGE)
            .await;
    }
    for (observers, node) in [(&[2, 3][..], 1), (&[1][..], 2), (&[1][..], 3)] {
        cluster
            .wait_status(observers, node, Status::Dead, VIEW_CHANGE)
            .await;
    }
    // ... while the nodes of one side still hear each other.
    for (observer, node) in [(2, 3), (3, 2)] {
        let seen = cluster.member_seen_by(observer, node).await.unwrap();
        assert_eq!(seen.status, Status::Alive, "n{observer} about n{node}");
    }

    cluster.heal();
    // Every node sees every node alive, with a session to it.
    cluster.processes().wait_converged(REJOIN).await.unwrap();
    for observer in 1..=3 {
        let members = cluster.client(observer).members().await.unwrap();
        assert_eq!(members.len(), 3, "{members:?}");
        assert!(
            members
                .iter()
                .all(|m| m.status == Status::Alive && m.connected),
            "n{observer}: {members:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_for_a_cut_off_owner_waits_as_a_hint_and_reaches_it_after_the_heal() {
    // Four nodes and N = 3: every key has one fallback. The cut node stays suspect for the
    // whole test (dead only after a minute); a dead owner would be routed around the same
    // way, with hints (see faults_dead_owners.rs).
    let mut cluster = TestCluster::builder()
        .nodes(4)
        .node_args([
            "--n",
            "3",
            "--w",
            "2",
            "--gossip-interval-ms",
            "100",
            "--suspect-after-ms",
            "1000",
            "--dead-after-ms",
            "60000",
        ])
        .start()
        .await;
    // A key that n1 (the writer) and n4 (the node cut off) own: n1 coordinates it, and the
    // fallback receives the copy meant for n4 as a hint.
    let (key, preference) = (0..1000)
        .map(|i| format!("handoff-{i}"))
        .map(|key| {
            let preference = cluster.preference(key.as_bytes());
            (key, preference)
        })
        .find(|(_, p)| p[..3].contains(&1) && p[..3].contains(&4))
        .expect("some key is owned by n1 and n4");
    let fallback = preference[3];
    let other_owner = *preference[..3].iter().find(|&&i| i != 1 && i != 4).unwrap();

    cluster.partition(&[&[4], &[1, 2, 3]]);
    cluster
        .wait_status(&[1, other_owner, fallback], 4, Status::Suspect, VIEW_CHANGE)
        .await;

    let writer = cluster.client(1);
    writer
        .put(key.as_bytes(), Bytes::from("handed-off"), None, None)
        .await
        .expect("W = 2 is met by n1 and a live replica");
    // The fallback holds the copy for n4 as a hint; n4 has nothing yet.
    wait_until(
        VIEW_CHANGE,
        &format!("n{fallback} holds a hint"),
        || async {
            cluster
                .metric(fallback, "dynamo_hints_pending")
                .await
                .is_some_and(|pending| pending >= 1.0)
        },
    )
    .await;
    let n4 = cluster.client(4);
    assert!(
        n4.local(key.as_bytes()).await.unwrap().is_empty(),
        "n4 is cut off"
    );
    for owner in [1, other_owner] {
        let local = cluster.client(owner).local(key.as_bytes()).await.unwrap();
        assert_eq!(local.len(), 1, "n{owner}: {local:?}");
    }

    cluster.heal();
    wait_until(REJOIN, "n4 holds the write handed off to it", || async {
        n4.local(key.as_bytes()).await.is_ok_and(|versions| {
            versions.len() == 1 && versions[0].value == Some(Bytes::from("handed-off"))
        })
    })
    .await;
    // Delivered means acknowledged by n4: the hint is gone from the fallback.
    wait_until(VIEW_CHANGE, "the fallback's hint is drained", || async {
        cluster.metric(fallback, "dynamo_hints_pending").await == Some(0.0)
    })
    .await;
    let drained = cluster.metric(fallback, "dynamo_hints_drained_total").await;
    assert_eq!(drained, Some(1.0), "n{fallback} handed one hint back");
}
