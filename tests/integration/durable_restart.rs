//! A whole durable cluster killed at once and restarted on its data directories: every key
//! comes back from disk, each node writes on under the same actor id, and no dot is reused.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use dynamo_node::core::ids::ActorId;
use dynamo_node::core::vclock::Dot;
use dynamo_node::http::LocalVersionView;
use dynamo_node::model::GetResult;
use dynamo_node::testing::TestCluster;
use futures::{StreamExt, stream};

const NODES: usize = 3;
const KEYS: usize = 300;
/// Keys per node rewritten after the restart with the context of a read, and blind.
const REWRITES: usize = 10;

fn keys() -> Vec<(String, Bytes)> {
    (0..KEYS)
        .map(|i| {
            (
                format!("durable-{i:03}"),
                Bytes::from(format!("value-{i:03}")),
            )
        })
        .collect()
}

/// What node `i` stores for each key, in key order; panics if it does not answer.
async fn local_sets(cluster: &TestCluster, i: usize, keys: &[(String, Bytes)]) -> Vec<Vec<Dot>> {
    let client = cluster.client(i);
    stream::iter(keys)
        .map(|(key, _)| {
            let client = client.clone();
            async move {
                let versions = client
                    .local(key.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("/admin/local/{key} on n{i}: {e}"));
                let mut dots: Vec<Dot> = versions.into_iter().map(|v| v.dot).collect();
                dots.sort();
                dots
            }
        })
        .buffered(16)
        .collect()
        .await
}

/// The dot node `i` made for its new write of `value` to `key`: under its actor of before the
/// kill, and past every counter it had made then.
async fn new_dot(
    cluster: &TestCluster,
    i: usize,
    key: &str,
    value: &Bytes,
    actor: &ActorId,
    max_before: u64,
) -> Dot {
    let dot = stored_version(cluster, i, key, value).await.dot;
    assert_eq!(&dot.actor, actor, "n{i} wrote {key} under its old actor id");
    assert!(
        dot.counter > max_before,
        "n{i} reissued counter {} (it had made up to {max_before}) for {key}",
        dot.counter
    );
    dot
}

/// The version of `key` with `value` as node `i` stores it.
async fn stored_version(
    cluster: &TestCluster,
    i: usize,
    key: &str,
    value: &Bytes,
) -> LocalVersionView {
    let versions = cluster
        .client(i)
        .local(key.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("/admin/local/{key} on n{i}: {e}"));
    versions
        .iter()
        .find(|v| v.value.as_ref() == Some(value))
        .cloned()
        .unwrap_or_else(|| panic!("n{i} does not hold {value:?} under {key}: {versions:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_killed_at_once_restarts_with_its_data_its_actor_ids_and_fresh_dots() {
    killed_at_once_and_restarted("always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fsyncs_a_cluster_killed_at_once_still_restarts_with_every_acked_change() {
    // `--fsync never` survives a process kill: what a node acknowledged had reached the OS.
    killed_at_once_and_restarted("never").await;
}

async fn killed_at_once_and_restarted(fsync: &str) {
    // Anti-entropy off: after the restart nothing but a node's own disk can give it back its
    // keys (no node is down, so no hints; no ring change, so no handoff; no read yet), so the
    // local sets compared below prove each node's own durability.
    let mut cluster = TestCluster::builder()
        .nodes(NODES)
        .durable()
        .node_args(["--anti-entropy-interval-ms", "0", "--fsync", fsync])
        .start()
        .await;
    let keys = keys();
    cluster.put_all(&keys, None).await;
    // A write is acknowledged by W = 2; the third copy is on its way. Wait for it, so that
    // every node holds every key (N = 3 of 3 nodes) before the power goes.
    for i in 1..=NODES {
        cluster
            .wait_all_held(i, &keys, Duration::from_secs(20))
            .await;
    }
    let before: Vec<Vec<Vec<Dot>>> = {
        let mut sets = Vec::new();
        for i in 1..=NODES {
            sets.push(local_sets(&cluster, i, &keys).await);
        }
        sets
    };
    // Every dot each node's actor made, over all keys and replicas.
    let mut actors: BTreeMap<String, HashSet<ActorId>> = BTreeMap::new();
    let mut max_counter: BTreeMap<ActorId, u64> = BTreeMap::new();
    for dot in before.iter().flatten().flatten() {
        actors
            .entry(dot.actor.node.as_str().to_owned())
            .or_default()
            .insert(dot.actor.clone());
        let max = max_counter.entry(dot.actor.clone()).or_default();
        *max = (*max).max(dot.counter);
    }
    let actor_of = |i: usize| -> ActorId {
        let name = format!("n{i}");
        let ids = actors
            .get(&name)
            .unwrap_or_else(|| panic!("{name} coordinated none of the {KEYS} writes"));
        assert_eq!(ids.len(), 1, "{name} wrote under one actor id: {ids:?}");
        ids.iter().next().cloned().expect("one actor id")
    };
    let old_actors: Vec<ActorId> = (1..=NODES).map(actor_of).collect();

    cluster.kill_all();
    cluster.restart_all().await;

    for i in 1..=NODES {
        let after = local_sets(&cluster, i, &keys).await;
        for (at, (key, _)) in keys.iter().enumerate() {
            assert_eq!(
                after[at],
                before[i - 1][at],
                "n{i} holds {key} as before the kill"
            );
        }
    }
    cluster.assert_all_read(&keys, &[1, 2, 3], Some(3)).await;

    let mut new_dots: Vec<Dot> = Vec::new();
    for i in 1..=NODES {
        let actor = &old_actors[i - 1];
        let max_before = max_counter[actor];
        let client = cluster.client(i);
        // Keys apart for each node and each kind of write.
        let start = (i - 1) * 2 * REWRITES;
        for (key, _) in &keys[start..start + REWRITES] {
            let read = client.get(key.as_bytes(), Some(3)).await.expect("read");
            let value = Bytes::from(format!("{key}-merged-by-n{i}"));
            client
                .put(key.as_bytes(), value.clone(), Some(read.context()), None)
                .await
                .unwrap_or_else(|e| panic!("read-modify-write of {key} through n{i}: {e}"));
            match client.get(key.as_bytes(), Some(3)).await.expect("read") {
                GetResult::Value { value: got, .. } => assert_eq!(got, value, "{key}"),
                other => panic!("{key} after a write with its context: {other:?}"),
            }
            new_dots.push(new_dot(&cluster, i, key, &value, actor, max_before).await);
        }
        for (key, old) in &keys[start + REWRITES..start + 2 * REWRITES] {
            let value = Bytes::from(format!("{key}-blind-by-n{i}"));
            client
                .put(key.as_bytes(), value.clone(), None, None)
                .await
                .unwrap_or_else(|e| panic!("blind write of {key} through n{i}: {e}"));
            match client.get(key.as_bytes(), Some(3)).await.expect("read") {
                GetResult::Siblings { values, .. } => {
                    let mut values = values;
                    values.sort();
                    let mut expected = vec![old.clone(), value.clone()];
                    expected.sort();
                    assert_eq!(values, expected, "{key}: the blind write is a sibling");
                }
                other => panic!("{key} after a blind write: {other:?}"),
            }
            new_dots.push(new_dot(&cluster, i, key, &value, actor, max_before).await);
        }
    }
    let distinct: HashSet<&Dot> = new_dots.iter().collect();
    assert_eq!(distinct.len(), new_dots.len(), "no dot made twice");
}
