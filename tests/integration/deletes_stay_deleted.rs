//! Deletes stay deleted (issue 10's first scenario): an owner cut off past `dead_after` while
//! its keys are deleted must not bring them back when the cut heals. Before ownership
//! followed membership, the tombstones were purged as soon as the cut-off owner stopped being
//! "an owner", and its old copies then won: every delete was undone on every node.
//!
//! Needs iptables and root; without them it fails, saying so.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::core::membership::{RingStatus, Status};
use dynamo_node::model::Context;
use dynamo_node::testing::{TestCluster, wait_until};

const KEYS: usize = 20;
const VIEW_CHANGE: Duration = Duration::from_secs(20);
/// A healed partition leaves stalled TCP sessions that the kernel retries on its own backoff.
const REJOIN: Duration = Duration::from_secs(60);

fn key(i: usize) -> String {
    format!("doomed-{i}")
}

/// What is wrong with the deleted keys as the whole cluster sees them now: a live value in
/// some node's own store, or a read at R = 3 through some node that is not a 404.
async fn resurrected(cluster: &TestCluster) -> Vec<String> {
    let mut wrong = Vec::new();
    for node in 1..=3 {
        let client = cluster.client(node);
        for i in 0..KEYS {
            let k = key(i);
            match client.local(k.as_bytes()).await {
                Ok(versions) => {
                    let values: Vec<_> = versions.iter().filter(|v| !v.is_tombstone()).collect();
                    if !values.is_empty() {
                        wrong.push(format!("n{node} stores {k} = {values:?}"));
                    }
                }
                Err(e) => wrong.push(format!("n{node} /admin/local/{k}: {e}")),
            }
            match client.get(k.as_bytes(), Some(3)).await {
                Ok(got) if got.values().is_empty() => {}
                Ok(got) => wrong.push(format!("n{node} reads {k} = {:?}", got.values())),
                Err(e) => wrong.push(format!("n{node} reads {k} at r=3: {e}")),
            }
        }
    }
    wrong
}

/// Versions (tombstones included) of the deleted keys stored on any node.
async fn stored_versions(cluster: &TestCluster) -> usize {
    let mut count = 0;
    for node in 1..=3 {
        for i in 0..KEYS {
            count += cluster
                .client(node)
                .local(key(i).as_bytes())
                .await
                .map_or(1, |v| v.len());
        }
    }
    count
}

/// Checks `resurrected` again and again for `period`: a resurrection comes from background
/// work (anti-entropy, hints, handoff, purges), so one look is not enough.
async fn stays_deleted(cluster: &TestCluster, period: Duration, when: &str) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        let wrong = resurrected(cluster).await;
        assert!(
            wrong.is_empty(),
            "deletes undone {when}:\n  {}",
            wrong.join("\n  ")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_made_while_an_owner_was_cut_off_past_dead_after_stay_deleted_after_the_heal() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .fast_failure_detection()
        .node_args([
            "--anti-entropy-interval-ms",
            "300",
            "--tombstone-grace-ms",
            "500",
        ])
        .start()
        .await;
    let n1 = cluster.client(1);
    let mut contexts: Vec<Context> = Vec::new();
    for i in 0..KEYS {
        let context = n1
            .put(
                key(i).as_bytes(),
                Bytes::from(format!("old-{i}")),
                None,
                Some(3),
            )
            .await
            .unwrap_or_else(|e| panic!("put {} at w=3: {e}", key(i)));
        contexts.push(context);
    }

    cluster.partition(&[&[1, 2], &[3]]);
    cluster
        .wait_status(&[1, 2], 3, Status::Dead, VIEW_CHANGE)
        .await;
    // Dead, but still an owner of every key.
    for i in [1, 2] {
        let seen = cluster.member_seen_by(i, 3).await.unwrap();
        assert_eq!(seen.ring, RingStatus::Valid, "n{i} about n3: {seen:?}");
    }
    for (i, context) in contexts.iter().enumerate() {
        n1.delete(key(i).as_bytes(), Some(context), None)
            .await
            .unwrap_or_else(|e| panic!("delete {} through n1: {e}", key(i)));
    }
    // Give the old bug every chance: many anti-entropy intervals and purge passes, far past the
    // tombstone grace, with the owner that still holds the values dead. The tombstones must
    // stay on n1 and n2, since n3 does not hold them yet.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for node in [1, 2] {
            for i in 0..KEYS {
                let versions = cluster.client(node).local(key(i).as_bytes()).await.unwrap();
                assert!(
                    !versions.is_empty() && versions.iter().all(|v| v.is_tombstone()),
                    "n{node} must keep exactly the tombstone of {} while n3 is cut off: {versions:?}",
                    key(i)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cluster.heal();
    cluster.processes().wait_converged(REJOIN).await.unwrap();
    // n3 learns the deletes (anti-entropy), and then the tombstones may go: each key ends up
    // with nothing stored anywhere, and is a 404 on every node all along.
    wait_until(
        Duration::from_secs(60),
        "every key is a 404 at r=3 on every node and no node stores a value",
        || async { resurrected(&cluster).await.is_empty() },
    )
    .await;
    stays_deleted(&cluster, Duration::from_secs(3), "after the heal").await;
    wait_until(
        Duration::from_secs(60),
        "every tombstone is purged once all three nodes hold it",
        || async { stored_versions(&cluster).await == 0 },
    )
    .await;
    // The purged keys must not come back either: no node may hold an old copy to offer.
    stays_deleted(&cluster, Duration::from_secs(3), "after the purge").await;
}
