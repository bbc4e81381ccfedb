//! A randomized fault run: clients add unique elements to a few keys by read-merge-write, and
//! now and then delete a key with the context of their read, while a nemesis kills, restarts,
//! pauses and partitions nodes, and once, midway, has a node leave or removes a dead one.
//!
//! At the end, healed, the replicas must agree and two promises must hold:
//! - no acknowledged write is lost: every acknowledged element is read back, unless a delete
//!   was attempted on a read that held it (a delete covers exactly what its read saw, so
//!   only such a delete may have removed it);
//! - no delete is undone: a version covered by an acknowledged delete never reads back, nor
//!   sits in any replica's store. Each version is named by a tag line (`@c1-7`, the element its
//!   write added), so the versions a delete's read saw are known by name.
//!
//! Runs for `DYNAMO_NEMESIS_SECS` seconds (default 40) of faults; set it higher for a soak.
//! The departure is a leave or a remove at random; `DYNAMO_NEMESIS_DEPARTURE=leave` (or
//! `remove`) picks one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::core::ids::NodeId;
use dynamo_node::core::membership::{RingStatus, Status};
use dynamo_node::core::ring::Ring;
use dynamo_node::core::vclock::VClock;
use dynamo_node::http::HttpClient;
use dynamo_node::model::GetResult;
use dynamo_node::testing::{TestCluster, wait_until};
use rand::Rng;

const NODES: usize = 5;
const KEYS: [&str; 3] = ["set-a", "set-b", "set-c"];
const CLIENTS: usize = 4;
/// One client operation in this many is a delete (when the read found something).
const DELETE_ONE_IN: u32 = 8;

/// An acknowledged delete: its context, which covers every version its read saw (the tags
/// name them, for the report).
#[derive(Clone, Debug)]
struct AckedDelete {
    key: &'static str,
    context: VClock,
    tags: BTreeSet<String>,
}

/// What the clients did, as far as they know.
#[derive(Clone, Debug, Default)]
struct Ledger {
    /// Elements whose write was acknowledged, by key.
    acked: BTreeMap<&'static str, BTreeSet<String>>,
    /// Elements some delete attempt's read held, by key: they may be gone legitimately.
    exempt: BTreeMap<&'static str, BTreeSet<String>>,
    /// Deletes acknowledged.
    deletes: Vec<AckedDelete>,
    /// Deletes attempted.
    delete_attempts: usize,
}

impl Ledger {
    /// Acknowledged elements of `key` that no delete may have removed: they must be kept.
    fn must_keep(&self, key: &str) -> BTreeSet<String> {
        let empty = BTreeSet::new();
        let exempt = self.exempt.get(key).unwrap_or(&empty);
        self.acked
            .get(key)
            .map(|acked| acked.difference(exempt).cloned().collect())
            .unwrap_or_default()
    }
}

type Shared = Arc<Mutex<Ledger>>;

/// The elements of some values (every line but the tag).
fn elements(values: &[Bytes]) -> BTreeSet<String> {
    lines(values).filter(|l| !l.starts_with('@')).collect()
}

/// The tags of some values: the names of the versions they are.
fn tags(values: &[Bytes]) -> BTreeSet<String> {
    lines(values)
        .filter_map(|l| l.strip_prefix('@').map(str::to_owned))
        .collect()
}

fn lines(values: &[Bytes]) -> impl Iterator<Item = String> + '_ {
    values.iter().flat_map(|v| {
        String::from_utf8_lossy(v)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    })
}

/// A version: its tag, then its elements.
fn encode(tag: &str, set: &BTreeSet<String>) -> Bytes {
    let mut text = format!("@{tag}\n");
    text.push_str(&set.iter().cloned().collect::<Vec<_>>().join("\n"));
    Bytes::from(text)
}

/// One client: read (R), union the siblings, then either delete what it read (with the
/// read's context) or add a unique element and write it back with the context.
async fn client(
    id: usize,
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    ledger: Shared,
    ops: Arc<AtomicUsize>,
) {
    let clients: Vec<HttpClient> = urls
        .iter()
        .map(|u| HttpClient::with_timeout(u.clone(), Duration::from_secs(3)))
        .collect();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let (key, node, delete) = {
            let mut rng = rand::rng();
            (
                KEYS[rng.random_range(0..KEYS.len())],
                rng.random_range(0..clients.len()),
                rng.random_range(0..DELETE_ONE_IN) == 0,
            )
        };
        let c = &clients[node];
        let Ok(read) = c.get(key.as_bytes(), None).await else {
            // A node that is down, paused, cut off, or gone: try another one soon.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let values = read.values();
        let context = (!read.context().is_empty()).then(|| read.context().clone());
        if delete && !values.is_empty() {
            {
                let mut ledger = ledger.lock().unwrap();
                ledger.delete_attempts += 1;
                ledger
                    .exempt
                    .entry(key)
                    .or_default()
                    .extend(elements(&values));
            }
            if c.delete(key.as_bytes(), context.as_ref(), None)
                .await
                .is_ok()
            {
                ledger.lock().unwrap().deletes.push(AckedDelete {
                    key,
                    context: read.context().clock().clone(),
                    tags: tags(&values),
                });
            }
        } else {
            let mut set = elements(&values);
            let element = format!("c{id}-{n}");
            n += 1;
            set.insert(element.clone());
            if c.put(
                key.as_bytes(),
                encode(&element, &set),
                context.as_ref(),
                None,
            )
            .await
            .is_ok()
            {
                ledger
                    .lock()
                    .unwrap()
                    .acked
                    .entry(key)
                    .or_default()
                    .insert(element);
            }
        }
        ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// The nodes (1-based) that own `key` on the ring of the nodes still members.
fn owners(key: &str, members: &[usize]) -> Vec<usize> {
    let ring =
        Ring::with_default_vnodes(members.iter().map(|i| NodeId::new(format!("n{i}")))).unwrap();
    ring.owners(key.as_bytes(), 3)
        .unwrap()
        .iter()
        .map(|n| n.as_str()[1..].parse().unwrap())
        .collect()
}

/// What one node stores for a key: its live values and its versions' dots.
struct Held {
    values: Vec<Bytes>,
    dots: Vec<String>,
}

/// What each owner of `key` holds in its own store (no read, so no repair).
async fn held(cluster: &TestCluster, key: &str, members: &[usize]) -> Vec<Held> {
    let mut out = Vec::new();
    for node in owners(key, members) {
        let versions = cluster
            .client(node)
            .local(key.as_bytes())
            .await
            .unwrap_or_default();
        let values: Vec<Bytes> = versions.iter().filter_map(|v| v.value.clone()).collect();
        let mut dots: Vec<String> = versions.iter().map(|v| format!("{:?}", v.dot)).collect();
        dots.sort();
        out.push(Held { values, dots });
    }
    out
}

/// Waits until every owner of every key holds every element that must be kept. The ledger
/// is read again at every check: a delete attempted meanwhile may release elements.
async fn wait_replicated(cluster: &TestCluster, ledger: &Shared, members: &[usize], why: &str) {
    wait_until(Duration::from_secs(60), why, || async {
        for key in KEYS {
            let want = ledger.lock().unwrap().must_keep(key);
            for h in held(cluster, key, members).await {
                if !want.is_subset(&elements(&h.values)) {
                    return false;
                }
            }
        }
        true
    })
    .await;
}

/// A read at `?r=3` of `key` through `node` once the cluster healed. On two shared cores a
/// replica can still miss the short read timeout for a moment (anti-entropy and handoff are
/// busy right after a heal), so the read is retried for a while: this looks at what the
/// cluster holds, not at whether the first read after a heal is served.
async fn read_healed(cluster: &TestCluster, node: usize, key: &str) -> GetResult {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match cluster.client(node).get(key.as_bytes(), Some(3)).await {
            Ok(read) => return read,
            Err(e) if Instant::now() >= until => {
                panic!("final read of {key} through n{node} failed for 20 s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// What the final look finds of the acknowledged deletes.
#[derive(Default)]
struct DeleteAudit {
    /// Versions covered by an acknowledged delete that an owner of their key stores (and so
    /// a read may return): deletes undone.
    undone: Vec<String>,
    /// Covered versions that a node which does not own the key still stores: a coordinator's
    /// own copy from when it stood in for unreachable owners, that its handoff has not yet
    /// given to the owners (a steady handoff pass takes about half a minute). Nobody reads
    /// it; it blocks the key's purge, and the owners drop it on arrival.
    awaiting_handoff: usize,
}

/// Looks for versions covered by an acknowledged delete on every member. A version is
/// covered when its dot is in the delete's context; a tag alone does not name a version: a
/// forwarded write whose answer was lost is retried by the next coordinator, which makes a
/// second version of the same bytes that the delete's read may not have seen.
async fn audit_deletes(cluster: &TestCluster, ledger: &Ledger, members: &[usize]) -> DeleteAudit {
    let mut audit = DeleteAudit::default();
    for key in KEYS {
        let deletes: Vec<&AckedDelete> = ledger.deletes.iter().filter(|d| d.key == key).collect();
        let owners = owners(key, members);
        for &node in members {
            let client = cluster.client(node);
            let read = read_healed(cluster, node, key).await;
            let read_tags = tags(&read.values());
            let local = client.local(key.as_bytes()).await.unwrap();
            for version in local {
                let Some(value) = &version.value else {
                    continue;
                };
                let tag = tags(std::slice::from_ref(value)).into_iter().next();
                let covering: Vec<&&AckedDelete> = deletes
                    .iter()
                    .filter(|d| d.context.contains(&version.dot))
                    .collect();
                if covering.is_empty() {
                    continue;
                }
                if !owners.contains(&node) {
                    audit.awaiting_handoff += 1;
                    continue;
                }
                let read_back = tag.as_ref().is_some_and(|t| read_tags.contains(t));
                audit.undone.push(format!(
                    "{key}: owner n{node} stores {tag:?} ({:?}; read back through n{node}: {read_back}), covered by {} acknowledged deletes, the first of which saw {:?}",
                    version.dot,
                    covering.len(),
                    covering[0].tags
                ));
            }
        }
    }
    audit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_and_deletes_survive_kills_pauses_partitions_and_a_departure() {
    let secs: u64 = std::env::var("DYNAMO_NEMESIS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
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
            "--tombstone-grace-ms",
            "500",
        ])
        .start()
        .await;
    let urls: Vec<String> = (1..=NODES).map(|i| cluster.url(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let ledger: Shared = Arc::default();
    let ops = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                urls.clone(),
                stop.clone(),
                ledger.clone(),
                ops.clone(),
            ))
        })
        .collect();

    let mut members: Vec<usize> = (1..=NODES).collect();
    let mut departure: Option<String> = None;
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    // Faults go on until the deadline, and past it until the departure was made: on a slow
    // machine a few kills, each waiting for full replication first, can fill the whole run.
    while Instant::now() < deadline || departure.is_none() {
        let (kind, victim, hold, long) = {
            let mut rng = rand::rng();
            (
                rng.random_range(0..3),
                members[rng.random_range(0..members.len())],
                rng.random_range(500..2000),
                rng.random_range(3500..4500),
            )
        };
        let hold = Duration::from_millis(hold);
        if departure.is_none() && started.elapsed() > Duration::from_secs(secs / 2) {
            let other = *members.iter().find(|&&m| m != victim).unwrap();
            let leave = match std::env::var("DYNAMO_NEMESIS_DEPARTURE").as_deref() {
                Ok("leave") => true,
                Ok("remove") => false,
                _ => rand::rng().random_bool(0.5),
            };
            if leave {
                // A drain: the node hands everything to the others, reports left, and stops.
                cluster
                    .client(victim)
                    .leave()
                    .await
                    .unwrap_or_else(|e| panic!("n{victim} leave: {e}"));
                wait_until(
                    Duration::from_secs(60),
                    &format!("n{victim} reports left"),
                    || async {
                        cluster
                            .member_seen_by(victim, victim)
                            .await
                            .is_some_and(|m| m.ring == RingStatus::Left)
                    },
                )
                .await;
                cluster.stop(victim).await;
            } else {
                // A machine gone for good: it crashes (replicas complete first, as for any
                // crash), and an operator removes it once the others see it down.
                wait_replicated(
                    &cluster,
                    &ledger,
                    &members,
                    "acknowledged elements fully replicated before a removal",
                )
                .await;
                cluster.kill(victim);
                wait_until(
                    Duration::from_secs(20),
                    &format!("n{other} sees n{victim} down"),
                    || async {
                        cluster
                            .member_seen_by(other, victim)
                            .await
                            .is_some_and(|m| m.status != Status::Alive)
                    },
                )
                .await;
                let entry = cluster
                    .client(other)
                    .remove(&format!("n{victim}"))
                    .await
                    .unwrap_or_else(|e| panic!("remove n{victim} through n{other}: {e}"));
                assert_eq!(entry.ring, RingStatus::Removed);
            }
            let what = if leave { "leave" } else { "remove" };
            departure = Some(format!("{what} of n{victim}"));
            *faults.entry(what).or_default() += 1;
            members.retain(|&m| m != victim);
            cluster.wait_converged().await;
            continue;
        }
        match kind {
            0 => {
                // A crash loses the node's in-memory data, so first make sure every
                // acknowledged element has all its replicas: otherwise a later crash of another
                // replica could take the last copy, which no store survives.
                wait_replicated(
                    &cluster,
                    &ledger,
                    &members,
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
                // Every node must be in a group: one that departed goes with the victim.
                let mut others: Vec<usize> =
                    members.iter().copied().filter(|&i| i != victim).collect();
                let split = rand::rng().random_range(0..2);
                let gone = (1..=NODES).filter(|i| !members.contains(i));
                let side: Vec<usize> = std::iter::once(victim)
                    .chain(others.drain(..split))
                    .chain(gone)
                    .collect();
                let groups: [&[usize]; 2] = [&side, &others];
                cluster.partition(&groups);
                // One cut in three lasts past dead-after: each side then sees the other dead,
                // which must change routing only, never ownership (and never undo a delete).
                let (hold, what) = if rand::rng().random_range(0..3) == 0 {
                    (Duration::from_millis(long), "long partition+heal")
                } else {
                    (hold, "partition+heal")
                };
                tokio::time::sleep(hold).await;
                cluster.heal();
                *faults.entry(what).or_default() += 1;
            }
        }
        cluster.wait_converged().await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    // Healed: every replica converges to the same set holding every element that must stay.
    wait_replicated(
        &cluster,
        &ledger,
        &members,
        "every acknowledged element on every replica",
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "replicas hold identical version sets",
        || async {
            for key in KEYS {
                let views = held(&cluster, key, &members).await;
                if views.iter().any(|h| h.dots != views[0].dots) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let ledger = ledger.lock().unwrap().clone();
    let mut lost = Vec::new();
    for key in KEYS {
        let read = read_healed(&cluster, members[0], key).await;
        let have = elements(&read.values());
        lost.extend(
            ledger
                .must_keep(key)
                .difference(&have)
                .map(|e| format!("{key}: {e}")),
        );
    }
    // A resurrection comes from background work (anti-entropy, hints, handoff, purges):
    // look again and again for a few seconds.
    let mut audit = DeleteAudit::default();
    let until = Instant::now() + Duration::from_secs(3);
    while audit.undone.is_empty() && Instant::now() < until {
        audit = audit_deletes(&cluster, &ledger, &members).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let undone = audit.undone;
    let total: usize = ledger.acked.values().map(BTreeSet::len).sum();
    println!(
        "nemesis: {secs} s, {} operations, {total} writes acknowledged, {} lost, {} deletes acknowledged of {} attempted, {} undone ({} deleted versions on non-owners awaiting handoff), {}, faults {faults:?}",
        ops.load(Ordering::Relaxed),
        lost.len(),
        ledger.deletes.len(),
        ledger.delete_attempts,
        undone.len(),
        audit.awaiting_handoff,
        departure.as_deref().unwrap_or("no departure"),
    );
    for node in &members {
        let members_seen = cluster.client(*node).members().await.unwrap();
        for m in members_seen.iter().filter(|m| m.ring.is_final()) {
            println!("  n{node} sees {} {}", m.node, m.ring);
        }
    }
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(undone.is_empty(), "deletes undone: {undone:?}");
    assert!(
        total > 0,
        "no write was acknowledged: the run tested nothing"
    );
    assert!(
        !ledger.deletes.is_empty(),
        "no delete was acknowledged: the run tested no delete"
    );
}
