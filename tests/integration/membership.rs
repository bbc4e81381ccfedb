//! Membership over real processes: liveness changes routing, never ownership. A node that is
//! dead for longer than `dead_after` keeps its place on every ring, comes back as the same
//! valid member when it restarts, and a node started with another N than the cluster's is
//! refused. Joining nodes never make a cluster among themselves: a cluster starts from a node
//! started alone.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::core::membership::{RingStatus, Status};
use dynamo_node::process::ProcessError;
use dynamo_node::testing::{TestCluster, wait_until};

const VIEW_CHANGE: Duration = Duration::from_secs(20);

/// The node names on node `i`'s ring, sorted.
async fn ring_nodes(cluster: &TestCluster, i: usize) -> Vec<String> {
    let ring = cluster
        .client(i)
        .ring()
        .await
        .unwrap_or_else(|e| panic!("n{i} /admin/ring: {e}"));
    let mut nodes: Vec<String> = ring.nodes.into_iter().map(|n| n.node).collect();
    nodes.sort();
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_keeps_its_ranges_and_comes_back_valid_after_a_restart() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .fast_failure_detection()
        .node_args(["--anti-entropy-interval-ms", "300"])
        .start()
        .await;
    let all = vec!["n1".to_string(), "n2".to_string(), "n3".to_string()];
    let versions: Vec<u64> = {
        let mut v = Vec::new();
        for i in 1..=3 {
            assert_eq!(ring_nodes(&cluster, i).await, all, "n{i} before the kill");
            v.push(cluster.client(i).ring().await.unwrap().version);
        }
        v
    };
    let first_life = cluster.member_seen_by(3, 3).await.expect("n3 lists itself");
    assert_eq!(first_life.ring, RingStatus::Valid);

    cluster.kill(3);
    cluster
        .wait_status(&[1, 2], 3, Status::Dead, VIEW_CHANGE)
        .await;
    // Dead is a liveness verdict: n3 is still a valid member and still on both rings, which
    // were not even rebuilt.
    for i in [1, 2] {
        let seen = cluster.member_seen_by(i, 3).await.expect("n3 is listed");
        assert_eq!(
            (seen.status, seen.ring),
            (Status::Dead, RingStatus::Valid),
            "n{i} about n3"
        );
        assert_eq!(
            ring_nodes(&cluster, i).await,
            all,
            "n{i}'s ring with n3 dead"
        );
        let version = cluster.client(i).ring().await.unwrap().version;
        assert_eq!(
            version,
            versions[i - 1],
            "n{i} rebuilt its ring for a death"
        );
    }

    // Every key has n3 among its three owners; W = 2 and R = 2 are met by n1 and n2.
    let keys: Vec<String> = (0..10).map(|i| format!("while-dead-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let via = 1 + i % 2;
        cluster
            .client(via)
            .put(key.as_bytes(), Bytes::from(format!("v{i}")), None, None)
            .await
            .unwrap_or_else(|e| panic!("put {key} through n{via} with n3 dead: {e}"));
    }
    for (i, key) in keys.iter().enumerate() {
        for via in [1, 2] {
            let got = cluster.client(via).get(key.as_bytes(), None).await;
            let got = got.unwrap_or_else(|e| panic!("get {key} through n{via}: {e}"));
            assert_eq!(got.values(), vec![Bytes::from(format!("v{i}"))], "{key}");
        }
    }

    // A restart (in memory: a new incarnation, no data) comes back as the same valid member.
    cluster.restart(3).await;
    let second_life = cluster.member_seen_by(3, 3).await.expect("n3 lists itself");
    assert!(
        second_life.incarnation > first_life.incarnation,
        "{second_life:?} after {first_life:?}"
    );
    for i in 1..=3 {
        let seen = cluster.member_seen_by(i, 3).await.expect("n3 is listed");
        assert_eq!(
            (seen.status, seen.ring, seen.incarnation),
            (Status::Alive, RingStatus::Valid, second_life.incarnation),
            "n{i} about the restarted n3"
        );
        assert_eq!(
            ring_nodes(&cluster, i).await,
            all,
            "n{i}'s ring after the restart"
        );
    }
    // The writes it missed come back to it (hints, anti-entropy), without a read.
    let n3 = cluster.client(3);
    wait_until(
        Duration::from_secs(30),
        "the restarted n3 holds every key written while it was dead",
        || async {
            for key in &keys {
                match n3.local(key.as_bytes()).await {
                    Ok(versions) if versions.iter().any(|v| v.value.is_some()) => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_with_another_n_is_refused_and_says_why() {
    // The cluster runs with the default N = 3; a fourth node comes with --n 2.
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .fast_failure_detection()
        .start()
        .await;
    let added = cluster.processes().add_node(["--n", "2"]).await;
    let index = match added {
        Ok(index) => index,
        // It may be refused before it even serves HTTP.
        Err(ProcessError::EarlyExit { .. }) => 4,
        Err(e) => panic!("the node with --n 2 could not be started at all: {e}"),
    };
    assert_eq!(index, 4);
    let started = Instant::now();
    let exit = loop {
        if let dynamo_node::process::ProcessStatus::Exited(exit) = cluster.status(4) {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the node with --n 2 still runs after 30 s; its log:\n{}",
            cluster.log_tail(4, 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = cluster.log_tail(4, 50);
    assert!(
        exit.code.is_some_and(|c| c != 0) && !exit.requested,
        "it must exit by itself with a non-zero code, not {exit}; its log:\n{log}"
    );
    assert!(
        log.contains("n = 3") && log.contains("--n 3"),
        "its log says the cluster's N and how to start it: {log}"
    );
    // The cluster never took it in: no ring holds it, and it is no member anywhere but as
    // a stranger kept out.
    for i in 1..=3 {
        let ring = ring_nodes(&cluster, i).await;
        assert_eq!(ring, ["n1", "n2", "n3"], "n{i}'s ring");
        let members = cluster.client(i).members().await.unwrap();
        assert!(
            members.iter().all(|m| m.node != "n4"),
            "n{i} lists the refused node: {members:?}"
        );
    }
    cluster
        .client(1)
        .put(b"after-refusal", Bytes::from("v"), None, Some(3))
        .await
        .expect("the cluster still writes at W = 3");
}

/// Node `i`'s own ring status, as it lists itself.
async fn own_ring(cluster: &TestCluster, i: usize) -> Option<RingStatus> {
    cluster.member_seen_by(i, i).await.map(|m| m.ring)
}

/// Every node of three is valid and has the three on its ring.
async fn assert_one_ring_of_three(cluster: &TestCluster) {
    for i in 1..=3 {
        assert_eq!(own_ring(cluster, i).await, Some(RingStatus::Valid), "n{i}");
        assert_eq!(
            ring_nodes(cluster, i).await,
            ["n1", "n2", "n3"],
            "n{i}'s ring"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_nodes_cut_off_from_the_cluster_never_make_one_of_their_own() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .fast_failure_detection()
        .start()
        .await;
    cluster.kill(2);
    cluster.kill(3);
    cluster.partition(&[&[1], &[2, 3]]);
    // Both come back in memory (no table, no data), seeded with every node; each reaches
    // only the other, which knows no member of the cluster either.
    for i in [2, 3] {
        if let Err(e) = cluster.processes().restart(i).await {
            panic!("n{i} did not start again: {e}");
        }
    }
    wait_until(
        Duration::from_secs(20),
        "n2 and n3 heard each other for several gossip rounds",
        || async {
            let heard = |seen: Option<dynamo_node::model::MemberInfo>| {
                seen.is_some_and(|m| m.heartbeat >= 10)
            };
            heard(cluster.member_seen_by(2, 3).await) && heard(cluster.member_seen_by(3, 2).await)
        },
    )
    .await;
    for i in [2, 3] {
        assert_eq!(
            own_ring(&cluster, i).await,
            Some(RingStatus::Joining),
            "n{i} took a place on a ring of joining nodes"
        );
        assert!(ring_nodes(&cluster, i).await.is_empty(), "n{i}'s ring");
    }
    let refused = cluster
        .client(2)
        .put(b"between-joiners", Bytes::from("v"), None, None)
        .await;
    assert!(
        refused.is_err(),
        "a write acknowledged by joining nodes alone: {refused:?}"
    );

    // Once they reach the cluster they join it, and it keeps its one ring.
    cluster.heal();
    cluster.wait_converged().await;
    assert_one_ring_of_three(&cluster).await;
    cluster
        .client(2)
        .put(b"after-the-heal", Bytes::from("v"), None, None)
        .await
        .expect("a write after the heal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_every_node_restarted_in_memory_forms_again() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .fast_failure_detection()
        .start()
        .await;
    cluster.kill_all();
    // The first node started again finds nobody running: it starts alone, as node 1 did at
    // the first start, and the others join it (joining nodes alone would wait forever).
    for i in [2, 3, 1] {
        cluster.restart(i).await;
    }
    assert_one_ring_of_three(&cluster).await;
    cluster
        .client(3)
        .put(b"new-cluster", Bytes::from("v"), None, Some(3))
        .await
        .expect("the cluster formed again writes at W = 3");
}
