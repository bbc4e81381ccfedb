//! A paused node (SIGSTOP): a silent peer whose sessions stay open. Writes keep succeeding
//! with W = 2, each bounded by put_timeout; gossip marks it suspect, then dead, and it keeps
//! its ranges all along (liveness moves routing, never ownership), so the writes meant for it
//! wait as hints on fallbacks; once resumed it is alive again and catches up from them.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::core::membership::Status;
use dynamo_node::testing::{TestCluster, wait_until};

const PUT_TIMEOUT: Duration = Duration::from_millis(2000);
/// Scheduling slack on top of put_timeout (a forwarded write gets 250 ms more by design).
const SLACK: Duration = Duration::from_millis(1500);
const PAUSED: usize = 3;
const WRITERS: [usize; 3] = [1, 2, 4];
const VIEW_CHANGE: Duration = Duration::from_secs(20);

/// One write: how long it took and whether it succeeded, after checking the time bound.
async fn timed_put(cluster: &TestCluster, writer: usize, key: &str) -> bool {
    let started = Instant::now();
    let result = cluster
        .client(writer)
        .put(key.as_bytes(), Bytes::from(key.to_string()), None, None)
        .await;
    let took = started.elapsed();
    assert!(
        took <= PUT_TIMEOUT + SLACK,
        "a write through n{writer} took {took:?} ({result:?}): more than put_timeout"
    );
    result.is_ok()
}

/// Whether every writer sees the paused node with `status`.
async fn all_writers_see(cluster: &TestCluster, status: Status) -> bool {
    for writer in WRITERS {
        match cluster.member_seen_by(writer, PAUSED).await {
            Some(m) if m.status == status => {}
            _ => return false,
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_around_a_paused_node_which_catches_up_when_resumed() {
    // Four nodes, N = 3: keys of the paused node have a fallback to hold their hints. Dead
    // comes 5 s after suspect, so that a batch of writes fits in between.
    let mut cluster = TestCluster::builder()
        .nodes(4)
        .node_args([
            "--n",
            "3",
            "--w",
            "2",
            "--put-timeout-ms",
            "2000",
            "--gossip-interval-ms",
            "100",
            "--suspect-after-ms",
            "1000",
            "--dead-after-ms",
            "6000",
        ])
        .start()
        .await;
    cluster.pause(PAUSED);
    let paused_at = Instant::now();

    // Until every writer suspects it, a write may fail (e.g. forwarded to the paused node),
    // but only after put_timeout, never later.
    let mut i = 0;
    let (mut before_ok, mut before_failed) = (0, 0);
    while !all_writers_see(&cluster, Status::Suspect).await {
        assert!(
            paused_at.elapsed() < VIEW_CHANGE,
            "the writers did not suspect n{PAUSED} within {VIEW_CHANGE:?}"
        );
        let writer = WRITERS[i % WRITERS.len()];
        if timed_put(&cluster, writer, &format!("early-{i}")).await {
            before_ok += 1;
        } else {
            before_failed += 1;
        }
        i += 1;
    }
    eprintln!(
        "n{PAUSED} suspect everywhere {} ms after the pause; {before_ok} writes succeeded and {before_failed} failed in time before",
        paused_at.elapsed().as_millis()
    );

    // Suspect everywhere: every write succeeds; those meant for the paused node become hints.
    let hinted: Vec<String> = (0..12).map(|i| format!("suspect-{i}")).collect();
    for (i, key) in hinted.iter().enumerate() {
        let writer = WRITERS[i % WRITERS.len()];
        assert!(
            timed_put(&cluster, writer, key).await,
            "{key} through n{writer} failed while n{PAUSED} is suspect"
        );
    }
    // Nobody saw it dead yet, so every one of those writes was coordinated with it suspect.
    assert!(
        all_writers_see(&cluster, Status::Suspect).await,
        "the batch outlasted the suspect period; lengthen --dead-after-ms"
    );

    // Dead next, and writes still succeed. It is still an owner: those meant for it become
    // hints too.
    let mut dead_phase = Vec::new();
    let mut j = 0;
    while !all_writers_see(&cluster, Status::Dead).await || dead_phase.len() < 6 {
        assert!(
            paused_at.elapsed() < VIEW_CHANGE,
            "the writers did not see n{PAUSED} dead within {VIEW_CHANGE:?}"
        );
        let key = format!("late-{j}");
        let writer = WRITERS[j % WRITERS.len()];
        assert!(
            timed_put(&cluster, writer, &key).await,
            "{key} through n{writer} failed while n{PAUSED} is suspect or dead"
        );
        if all_writers_see(&cluster, Status::Dead).await {
            dead_phase.push(key);
        }
        j += 1;
    }

    cluster.resume(PAUSED);
    cluster.wait_converged().await;
    let resumed = cluster.client(PAUSED);
    let owned_by_paused = |key: &str| cluster.preference(key.as_bytes())[..3].contains(&PAUSED);

    // Hints drain without anyone reading: it holds every key it owns from the suspect and the
    // dead phases.
    let hinted_for_it: Vec<&String> = hinted
        .iter()
        .chain(&dead_phase)
        .filter(|k| owned_by_paused(k))
        .collect();
    assert!(
        !hinted_for_it.is_empty(),
        "no key of n{PAUSED} in {hinted:?}"
    );
    for key in &hinted_for_it {
        wait_until(
            VIEW_CHANGE,
            &format!("n{PAUSED} holds {key} (hint drain)"),
            || async {
                resumed.local(key.as_bytes()).await.is_ok_and(|versions| {
                    versions.len() == 1 && versions[0].value == Some(Bytes::from(key.to_string()))
                })
            },
        )
        .await;
    }

    // Every key reads back with R = N, through a node that was never paused.
    for key in hinted.iter().chain(&dead_phase) {
        let got = cluster
            .client(1)
            .get(key.as_bytes(), Some(3))
            .await
            .unwrap();
        assert_eq!(got.values(), vec![Bytes::from(key.to_string())], "{key}");
    }
    eprintln!(
        "n{PAUSED} caught up on {} hinted keys, {} of them written while it was dead",
        hinted_for_it.len(),
        dead_phase.iter().filter(|k| owned_by_paused(k)).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_nodes_all_stall_at_once_finds_itself_again() {
    // Every node frozen together for longer than suspect_after, as when the laptop running
    // `dynamo-node cluster` sleeps: on waking, each node has heard nobody for too long.
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .fast_failure_detection()
        .start()
        .await;
    for i in 1..=3 {
        cluster.pause(i);
    }
    // The stall's length is the fault itself, not a wait for something to happen.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 1..=3 {
        cluster.resume(i);
    }
    // Nothing is wrong with the network: they must see each other alive again.
    let converged = cluster
        .processes()
        .wait_converged(Duration::from_secs(30))
        .await;
    if let Err(e) = converged {
        let mut views = String::new();
        for i in 1..=3 {
            let members = cluster.client(i).members().await.unwrap();
            let seen: Vec<String> = members
                .iter()
                .map(|m| {
                    format!(
                        "{} {} (heartbeat {}, connected {})",
                        m.node, m.status, m.heartbeat, m.connected
                    )
                })
                .collect();
            views.push_str(&format!("\n  n{i} sees: {}", seen.join("; ")));
        }
        panic!("{e}{views}");
    }
}
