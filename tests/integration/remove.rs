//! Remove (a node gone for good): refused while the node is alive; once it is dead and
//! removed, its ranges go to the other three, anti-entropy rebuilds every key on each of them,
//! and the removed name started again refuses to run instead of pushing anything back. The
//! last member left by removes keeps the hints it held for them.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::core::membership::{RingStatus, Status};
use dynamo_node::process::{ProcessError, ProcessStatus};
use dynamo_node::testing::{TestCluster, wait_until};

const KEYS: usize = 200;
const GONE: usize = 4;
const STAYING: [usize; 3] = [1, 2, 3];

/// The keys written, each with its own value.
fn keys() -> Vec<(String, Bytes)> {
    (0..KEYS)
        .map(|i| (format!("rebuilt-{i}"), Bytes::from(format!("value-{i}"))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_is_rebuilt_on_the_others_and_cannot_come_back() {
    let mut cluster = TestCluster::builder()
        .nodes(4)
        .fast_failure_detection()
        .node_args(["--n", "3", "--anti-entropy-interval-ms", "300"])
        .start()
        .await;
    let keys = keys();
    cluster.put_all(&keys, Some(3)).await;
    let mut lacking = 0;
    for node in STAYING {
        lacking += cluster.missing_on(node, &keys).await.len();
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
            || async { cluster.missing_on(node, &keys).await.is_empty() },
        )
        .await;
    }
    println!("rebuilt in {} ms", started.elapsed().as_millis());
    cluster.assert_all_read(&keys, &STAYING, Some(3)).await;

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
    let sample: Vec<(String, Bytes)> = keys.iter().step_by(10).cloned().collect();
    cluster.assert_all_read(&sample, &[1], Some(3)).await;
}

/// The last member after two removes: the hints it held for a removed owner have nowhere
/// else to go, so they join its own store (synced), survive its restart and leave no hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_member_keeps_a_removed_owners_hints_in_its_own_store() {
    const WAIT: Duration = Duration::from_secs(20);
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .durable()
        .fast_failure_detection()
        .node_args(["--n", "2"])
        .start()
        .await;
    // Owned by n1 and n3; n2 is its fallback.
    let key = cluster.key_owned_by("last-", &[1, 3]);
    let key = key.as_bytes();
    let value = Bytes::from("held for n3");

    cluster.kill(3);
    cluster.wait_status(&[1, 2], 3, Status::Dead, WAIT).await;
    cluster
        .client(1)
        .put(key, value.clone(), None, Some(2))
        .await
        .expect("n1 and the fallback n2 make W = 2");
    let hints = cluster.metric(2, "dynamo_hints_pending").await;
    assert!(
        hints.is_some_and(|h| h >= 1.0),
        "n2 keeps a hint: {hints:?}"
    );

    cluster.kill(1);
    cluster.wait_status(&[2], 1, Status::Dead, WAIT).await;
    for gone in ["n3", "n1"] {
        let entry = cluster.client(2).remove(gone).await;
        let entry = entry.unwrap_or_else(|e| panic!("remove the dead {gone}: {e}"));
        assert_eq!(entry.ring, RingStatus::Removed, "{entry:?}");
    }
    wait_until(WAIT, "n2 holds the write itself and no hint", || async {
        cluster.metric(2, "dynamo_hints_pending").await == Some(0.0)
            && cluster.stores(2, key, &value).await
    })
    .await;

    cluster.restart(2).await;
    assert!(
        cluster.stores(2, key, &value).await,
        "the write survives n2's restart"
    );
    let got = cluster.client(2).get(key, None).await.expect("read on n2");
    assert_eq!(got.values(), vec![value.clone()]);
}
