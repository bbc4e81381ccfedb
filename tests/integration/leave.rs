//! Leave (drain): a node of four hands every key it holds to the other three before it
//! reports `left`, shows its progress while it does, then refuses client requests, and its
//! name cannot come back. The last two members told to leave at once wait for a node to join.
//!
//! Anti-entropy is off, and nothing is read before the node has left: the only way a key can
//! reach the node that did not own it yet is the leaving node's handoff. Needs iptables and
//! root (a short cut keeps the handoff under way long enough to watch it); without them it
//! fails, saying so.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::core::membership::RingStatus;
use dynamo_node::process::{ProcessError, ProcessStatus};
use dynamo_node::testing::{TestCluster, wait_until};

const KEYS: usize = 200;
const LEAVER: usize = 4;
const STAYING: [usize; 3] = [1, 2, 3];

/// The keys written, each with its own value.
fn keys() -> Vec<(String, Bytes)> {
    (0..KEYS)
        .map(|i| (format!("drained-{i}"), Bytes::from(format!("value-{i}"))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_hands_every_key_to_the_others_before_it_reports_left() {
    let mut cluster = TestCluster::builder()
        .nodes(4)
        .fast_failure_detection()
        .node_args(["--n", "3", "--anti-entropy-interval-ms", "0"])
        .start()
        .await;
    let keys = keys();
    cluster.put_all(&keys, Some(3)).await;
    let held_by_leaver = KEYS - cluster.missing_on(LEAVER, &keys).await.len();
    assert!(held_by_leaver > 0, "n4 owns about 3/4 of the keys");
    // Each staying node lacks the keys n4 owned in its place: the handoff must bring them.
    let mut lacking = 0;
    for node in STAYING {
        lacking += cluster.missing_on(node, &keys).await.len();
    }
    assert!(
        lacking > 0,
        "some keys are not yet on all three staying nodes"
    );

    // A cut between the leaver and n1 (only that link) holds the handoff up, since every key
    // needs n1's ack, long enough to watch the progress while the node is leaving.
    cluster.cut_links(&[(1, LEAVER)]);
    let entry = cluster
        .client(LEAVER)
        .leave()
        .await
        .expect("POST /admin/leave");
    assert_eq!(entry.ring, RingStatus::Leaving, "{entry:?}");
    let leaver = cluster.client(LEAVER);
    wait_until(
        Duration::from_secs(20),
        "n4 reports leaving with keys remaining in /admin/members and /metrics",
        || async {
            let own = cluster.member_seen_by(LEAVER, LEAVER).await;
            let members =
                own.is_some_and(|m| m.ring == RingStatus::Leaving && m.handoff.remaining > 0);
            let metric = cluster
                .metric(LEAVER, "dynamo_handoff_keys_remaining")
                .await
                .is_some_and(|v| v > 0.0);
            members && metric
        },
    )
    .await;
    // The others hear of the leave and of its progress by gossip.
    wait_until(
        Duration::from_secs(20),
        "n2 sees n4 leaving with keys remaining",
        || async {
            cluster
                .member_seen_by(2, LEAVER)
                .await
                .is_some_and(|m| m.ring == RingStatus::Leaving && m.handoff.remaining > 0)
        },
    )
    .await;
    assert_ne!(
        cluster.member_seen_by(LEAVER, LEAVER).await.unwrap().ring,
        RingStatus::Left,
        "n4 must not report left while n1, which owns every key now, is cut off"
    );
    cluster.heal();

    // Poll n4's own word until it says left, then check at once that the keys were there.
    wait_until(Duration::from_secs(60), "n4 reports left", || async {
        cluster
            .member_seen_by(LEAVER, LEAVER)
            .await
            .is_some_and(|m| m.ring == RingStatus::Left)
    })
    .await;
    for node in STAYING {
        let missing = cluster.missing_on(node, &keys).await;
        assert!(
            missing.is_empty(),
            "n4 reported left, but n{node} lacks {} keys, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    // What it reports: everything handed, nothing left; and it kept nothing.
    let own = cluster.member_seen_by(LEAVER, LEAVER).await.unwrap();
    assert_eq!(own.handoff.remaining, 0, "{own:?}");
    assert!(
        own.handoff.handed >= held_by_leaver as u64,
        "n4 handed {} keys, it held {held_by_leaver}",
        own.handoff.handed
    );
    let handed = cluster
        .metric(LEAVER, "dynamo_handoff_keys_handed_total")
        .await
        .expect("n4 serves /metrics after leaving");
    assert!(handed >= held_by_leaver as f64, "metric: {handed}");
    assert_eq!(
        cluster
            .metric(LEAVER, "dynamo_handoff_keys_remaining")
            .await,
        Some(0.0)
    );
    assert_eq!(
        cluster.missing_on(LEAVER, &keys).await.len(),
        KEYS,
        "n4 dropped its copies"
    );

    // The staying nodes agree that n4 left and serve every key at R = 3.
    for node in STAYING {
        wait_until(
            Duration::from_secs(20),
            &format!("n{node} sees n4 left and off its ring"),
            || async {
                let left = cluster
                    .member_seen_by(node, LEAVER)
                    .await
                    .is_some_and(|m| m.ring == RingStatus::Left);
                let ring = cluster.client(node).ring().await;
                left && ring.is_ok_and(|r| r.nodes.iter().all(|n| n.node != "n4"))
            },
        )
        .await;
    }
    cluster.assert_all_read(&keys, &STAYING, Some(3)).await;

    // The node that left refuses client requests, saying why.
    let refusals = [
        leaver.get(b"drained-0", None).await.err(),
        leaver
            .put(b"drained-0", keys[0].1.clone(), None, None)
            .await
            .err(),
        leaver.delete(b"drained-0", None, None).await.err(),
    ];
    for refusal in refusals {
        let refusal = refusal.expect("a node that left must refuse client requests");
        assert_eq!(
            (refusal.status(), refusal.kind()),
            (Some(503), Some("not_a_member")),
            "{refusal}"
        );
    }
    let health = leaver.health().await.unwrap_err();
    assert_eq!(health.status(), Some(503), "{health}");
    // It can be stopped; the cluster does not miss it.
    cluster.stop(LEAVER).await;
    cluster.wait_converged().await;
    cluster
        .client(2)
        .put(b"after-the-leave", Bytes::from("v"), None, Some(3))
        .await
        .expect("three nodes take a write at W = 3");

    // Its name is spent: started again, it learns from the others that it left, and exits.
    match cluster.processes().restart(LEAVER).await {
        Ok(()) | Err(ProcessError::EarlyExit { .. }) => {}
        Err(e) => panic!("n4 could not be started again at all: {e}"),
    }
    let started = Instant::now();
    let exit = loop {
        if let ProcessStatus::Exited(exit) = cluster.status(LEAVER) {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "n4 still runs 30 s after it was started again; its log:\n{}",
            cluster.log_tail(LEAVER, 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = cluster.log_tail(LEAVER, 40);
    assert!(
        exit.code.is_some_and(|c| c != 0) && !exit.requested,
        "the restarted n4 must exit by itself with a non-zero code, not {exit}; its log:\n{log}"
    );
    assert!(log.contains("left the cluster"), "its log says why: {log}");
    for node in STAYING {
        let seen = cluster.member_seen_by(node, LEAVER).await.unwrap();
        assert_eq!(seen.ring, RingStatus::Left, "n{node} about n4");
    }
}

/// The last two members told to leave while cut off from each other both accept. Their ring
/// does not empty: they keep their places and serve every key until a node joins, then hand
/// everything to it and report `left`. Needs iptables and root, as the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_two_members_leaving_at_once_serve_until_a_node_joins_and_takes_everything() {
    const WAIT: Duration = Duration::from_secs(30);
    let mut cluster = TestCluster::builder()
        .nodes(2)
        .fast_failure_detection()
        .node_args(["--n", "2"])
        .start()
        .await;
    let keys: Vec<(String, Bytes)> = keys().into_iter().take(50).collect();
    cluster.put_all(&keys, Some(2)).await;

    // Cut off, neither hears of the other's leave before accepting its own.
    cluster.cut_links(&[(1, 2)]);
    for node in [1, 2] {
        let entry = cluster.client(node).leave().await;
        let entry = entry.unwrap_or_else(|e| panic!("n{node} accepts its leave: {e}"));
        assert_eq!(entry.ring, RingStatus::Leaving, "{entry:?}");
    }
    cluster.heal();
    for node in [1, 2] {
        let what = format!("n{node} sees both leaving, and both still on its ring");
        wait_until(WAIT, &what, || async {
            let other = cluster.member_seen_by(node, 3 - node).await;
            let ring = cluster.client(node).ring().await;
            other.is_some_and(|m| m.ring == RingStatus::Leaving)
                && ring.is_ok_and(|r| r.nodes.len() == 2)
        })
        .await;
    }
    cluster.assert_all_read(&keys, &[1, 2], Some(2)).await;
    for node in [1, 2] {
        let own = cluster.member_seen_by(node, node).await.unwrap();
        assert_eq!(own.ring, RingStatus::Leaving, "n{node} waits: {own:?}");
    }

    let joined = cluster.processes().add_node(Vec::<String>::new()).await;
    assert_eq!(joined.expect("n3 joins"), 3);
    for node in [1, 2] {
        wait_until(WAIT, &format!("n{node} reports left"), || async {
            let own = cluster.member_seen_by(node, node).await;
            own.is_some_and(|m| m.ring == RingStatus::Left)
        })
        .await;
    }
    let missing = cluster.missing_on(3, &keys).await;
    assert!(missing.is_empty(), "n3 lacks keys {missing:?}");
    cluster.assert_all_read(&keys, &[3], None).await;
}
