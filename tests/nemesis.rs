//! A randomized fault run: clients add unique elements to a few keys by read-merge-write
//! while a nemesis kills, restarts, pauses and partitions nodes. At the end every
//! acknowledged element must be on every replica, and the replicas must agree.
//!
//! Runs for `DYNAMO_NEMESIS_SECS` seconds (default 45) of faults; set it higher for a soak.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::core::ids::NodeId;
use dynamo_node::core::ring::Ring;
use dynamo_node::http::HttpClient;
use dynamo_node::testing::{TestCluster, wait_until};
use rand::Rng;

const NODES: usize = 5;
const KEYS: [&str; 3] = ["set-a", "set-b", "set-c"];
const CLIENTS: usize = 4;

type Acked = Arc<Mutex<BTreeMap<&'static str, BTreeSet<String>>>>;

fn elements(values: &[Bytes]) -> BTreeSet<String> {
    values
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|e| !e.is_empty())
        .collect()
}

fn encode(set: &BTreeSet<String>) -> Bytes {
    Bytes::from(set.iter().cloned().collect::<Vec<_>>().join("\n"))
}

/// One client: read (R), union the siblings, add a unique element, write with the context.
async fn client(
    id: usize,
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    acked: Acked,
    ops: Arc<AtomicUsize>,
) {
    let clients: Vec<HttpClient> = urls
        .iter()
        .map(|u| HttpClient::with_timeout(u.clone(), Duration::from_secs(3)))
        .collect();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let (key, node) = {
            let mut rng = rand::rng();
            (
                KEYS[rng.random_range(0..KEYS.len())],
                rng.random_range(0..clients.len()),
            )
        };
        let c = &clients[node];
        let Ok(read) = c.get(key.as_bytes(), None).await else {
            tokio::task::yield_now().await;
            continue;
        };
        let mut set = elements(&read.values());
        let element = format!("c{id}-{n}");
        n += 1;
        set.insert(element.clone());
        let context = (!read.context().is_empty()).then(|| read.context().clone());
        if c.put(key.as_bytes(), encode(&set), context.as_ref(), None)
            .await
            .is_ok()
        {
            acked
                .lock()
                .unwrap()
                .entry(key)
                .or_default()
                .insert(element);
        }
        ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// The nodes (1-based) that own `key` on the full ring.
fn owners(key: &str) -> Vec<usize> {
    let ring =
        Ring::with_default_vnodes((1..=NODES).map(|i| NodeId::new(format!("n{i}")))).unwrap();
    ring.owners(key.as_bytes(), 3)
        .unwrap()
        .iter()
        .map(|n| n.as_str()[1..].parse().unwrap())
        .collect()
}

/// Elements each owner of `key` holds in its own store (no read, so no repair).
async fn held(cluster: &TestCluster, key: &str) -> Vec<(usize, BTreeSet<String>, Vec<String>)> {
    let mut out = Vec::new();
    for i in owners(key) {
        let versions = cluster
            .client(i)
            .local(key.as_bytes())
            .await
            .unwrap_or_default();
        let values: Vec<Bytes> = versions.iter().filter_map(|v| v.value.clone()).collect();
        let mut dots: Vec<String> = versions.iter().map(|v| format!("{:?}", v.dot)).collect();
        dots.sort();
        out.push((i, elements(&values), dots));
    }
    out
}

/// Waits until every owner of every key holds all of `snapshot`.
async fn wait_replicated(
    cluster: &TestCluster,
    snapshot: &BTreeMap<&'static str, BTreeSet<String>>,
    why: &str,
) {
    wait_until(Duration::from_secs(60), why, || async {
        for (key, want) in snapshot {
            for (_, have, _) in held(cluster, key).await {
                if !want.is_subset(&have) {
                    return false;
                }
            }
        }
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_elements_survive_kills_pauses_and_partitions() {
    let secs: u64 = std::env::var("DYNAMO_NEMESIS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let mut cluster = TestCluster::builder()
        .nodes(NODES)
        .node_args([
            "--put-timeout-ms",
            "1500",
            "--get-timeout-ms",
            "1500",
            "--suspect-after-ms",
            "1000",
            "--dead-after-ms",
            "3000",
            "--anti-entropy-interval-ms",
            "300",
        ])
        .start()
        .await;
    let urls: Vec<String> = (1..=NODES).map(|i| cluster.url(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let ops = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                urls.clone(),
                stop.clone(),
                acked.clone(),
                ops.clone(),
            ))
        })
        .collect();

    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let (kind, victim, hold) = {
            let mut rng = rand::rng();
            (
                rng.random_range(0..3),
                rng.random_range(1..=NODES),
                rng.random_range(500..2000),
            )
        };
        let hold = Duration::from_millis(hold);
        match kind {
            0 => {
                // A crash loses the node's in-memory data, so first make sure every
                // acknowledged element has all its replicas: otherwise a later crash of another
                // replica could take the last copy, which no store survives.
                let snapshot = acked.lock().unwrap().clone();
                wait_replicated(
                    &cluster,
                    &snapshot,
                    "acknowledged elements fully replicated before a crash",
                )
                .await;
                cluster.kill(victim);
                tokio::time::sleep(hold).await; // the fault lasts this long
                cluster.restart(victim).await;
                *faults.entry("kill+restart").or_default() += 1;
            }
            1 => {
                cluster.pause(victim);
                tokio::time::sleep(hold).await;
                cluster.resume(victim);
                *faults.entry("pause+resume").or_default() += 1;
            }
            _ => {
                let mut others: Vec<usize> = (1..=NODES).filter(|&i| i != victim).collect();
                let split = rand::rng().random_range(0..2);
                let side: Vec<usize> = std::iter::once(victim)
                    .chain(others.drain(..split))
                    .collect();
                let groups: [&[usize]; 2] = [&side, &others];
                cluster.partition(&groups);
                tokio::time::sleep(hold).await;
                cluster.heal();
                *faults.entry("partition+heal").or_default() += 1;
            }
        }
        cluster.wait_converged().await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    // Healed: every replica converges to the same set holding every acknowledged element.
    let acked = acked.lock().unwrap().clone();
    wait_replicated(
        &cluster,
        &acked,
        "every acknowledged element on every replica",
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "replicas hold identical version sets",
        || async {
            for key in KEYS {
                let views = held(&cluster, key).await;
                if views.iter().any(|(_, _, dots)| *dots != views[0].2) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let mut lost = 0;
    for (key, want) in &acked {
        let read = cluster
            .client(1)
            .get(key.as_bytes(), Some(3))
            .await
            .unwrap();
        lost += want.difference(&elements(&read.values())).count();
    }
    let total: usize = acked.values().map(BTreeSet::len).sum();
    println!(
        "nemesis: {secs} s, {} operations, {total} acknowledged, {lost} lost, faults {faults:?}",
        ops.load(Ordering::Relaxed)
    );
    assert_eq!(lost, 0);
    assert!(
        total > 0,
        "no write was acknowledged: the run tested nothing"
    );
}
