//! Forged contexts (issue 10): a client must not be able to disable a node by handing it a
//! context that claims dots the node never made.
//!
//! - A context claiming a dot of the coordinator's own current actor beyond its counter is
//!   refused with 400 `invalid_context`, and changes nothing.
//! - A context claiming a huge counter for another node's actor cannot be judged by the
//!   coordinator and is accepted; the named node, when the version reaches it, takes a fresh
//!   actor epoch, so the claim never covers (and silently drops) its later writes. Before the
//!   fix, every write coordinated by the named node failed with 400 from then on.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::core::ids::ActorId;
use dynamo_node::core::vclock::{Dot, VClock};
use dynamo_node::model::Context;
use dynamo_node::testing::{TestCluster, wait_until};

/// The actor of node `node` in a context it handed out.
fn actor_of(context: &Context, node: &str) -> ActorId {
    context
        .clock()
        .entries()
        .map(|(actor, _)| actor)
        .find(|actor| actor.node.as_str() == node)
        .unwrap_or_else(|| panic!("no actor of {node} in {context:?}"))
        .clone()
}

/// A context holding `clock` plus the dot `(actor, counter)`.
fn claiming(clock: &VClock, actor: &ActorId, counter: u64) -> Context {
    let mut clock = clock.clone();
    clock.add_dot(&Dot::new(actor.clone(), counter), 0);
    Context::from_clock(clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_context_does_not_stop_a_node_from_coordinating_writes() {
    let cluster = TestCluster::builder()
        .nodes(3)
        .node_args([
            "--gossip-interval-ms",
            "100",
            "--anti-entropy-interval-ms",
            "300",
        ])
        .start()
        .await;
    let (n1, n2) = (cluster.client(1), cluster.client(2));
    // With three nodes and N = 3 every node owns every key: each coordinates what it gets.
    let own = n1
        .put(b"own", Bytes::from("genuine"), None, None)
        .await
        .unwrap();
    let n1_actor = actor_of(&own, "n1");

    // 1. A claim about the coordinator's own actor, far beyond its counter: refused.
    let forged = claiming(own.clock(), &n1_actor, 1 << 40);
    let refused = n1
        .put(b"own", Bytes::from("forged"), Some(&forged), None)
        .await
        .unwrap_err();
    assert_eq!(
        (refused.status(), refused.kind()),
        (Some(400), Some("invalid_context")),
        "{refused}"
    );
    let read = n1.get(b"own", Some(3)).await.unwrap();
    assert_eq!(
        read.values(),
        vec![Bytes::from("genuine")],
        "nothing changed"
    );
    let delete = n1.delete(b"own", Some(&forged), None).await.unwrap_err();
    assert_eq!(delete.status(), Some(400), "a forged delete too: {delete}");

    // 2. A claim about n2's actor, with the largest counter a clock can hold but one, through
    // n1, which cannot judge it: accepted. W = 3, so n2 holds the version when it is acked.
    let n2_context = n2
        .put(b"n2-made", Bytes::from("x"), None, None)
        .await
        .unwrap();
    let n2_actor = actor_of(&n2_context, "n2");
    let planted = claiming(&VClock::new(), &n2_actor, u64::MAX - 1);
    let planted_reply = n1
        .put(b"victim", Bytes::from("planted"), Some(&planted), Some(3))
        .await
        .expect("a claim about another node's actor is not the coordinator's to judge");

    // No node is disabled: blind writes to unrelated keys through every node succeed, and so
    // do writes with the context of a read, n1's refused claim included.
    for node in 1..=3 {
        let client = cluster.client(node);
        for i in 0..5 {
            let key = format!("unrelated-{node}-{i}");
            client
                .put(key.as_bytes(), Bytes::from("v"), None, None)
                .await
                .unwrap_or_else(|e| panic!("blind put {key} through n{node}: {e}"));
            let read = client.get(key.as_bytes(), None).await.unwrap();
            client
                .put(
                    key.as_bytes(),
                    Bytes::from("v2"),
                    Some(read.context()),
                    None,
                )
                .await
                .unwrap_or_else(|e| panic!("put {key} with its context through n{node}: {e}"));
        }
    }
    let read = n1.get(b"own", None).await.unwrap();
    n1.put(b"own", Bytes::from("next"), Some(read.context()), None)
        .await
        .expect("n1 writes the key it refused the forged context for");

    // n2's own write of the victim key, after the claim reached it, must not be swallowed by
    // it: it reads back beside the planted value, as a sibling (a blind write), everywhere.
    let mine = n2
        .put(b"victim", Bytes::from("n2-after-the-claim"), None, None)
        .await
        .expect("n2 coordinates a write of the key its actor was forged on");
    assert_ne!(
        actor_of(&mine, "n2"),
        n2_actor,
        "n2 took a fresh actor epoch when the forged claim about it arrived"
    );
    let epochs = cluster.metric(2, "dynamo_actor_epochs").await;
    assert!(
        epochs.is_some_and(|e| e >= 1.0),
        "n2's actor epochs: {epochs:?}"
    );
    let holds_both = |values: Vec<Bytes>| {
        values.contains(&Bytes::from("n2-after-the-claim"))
            && values.contains(&Bytes::from("planted"))
    };
    wait_until(
        Duration::from_secs(20),
        "every node stores n2's write beside the planted value",
        || async {
            for node in 1..=3 {
                let local = cluster.client(node).local(b"victim").await;
                let values = local.map(|v| v.into_iter().filter_map(|v| v.value).collect());
                if !values.is_ok_and(holds_both) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    // ... and keeps it: replication, read repair and anti-entropy all merge, so look a while.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for node in 1..=3 {
            let read = cluster.client(node).get(b"victim", Some(3)).await.unwrap();
            assert!(
                holds_both(read.values()),
                "n{node} reads {:?}",
                read.values()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A client that writes with the context the planted write returned (it names n2's old
    // actor at u64::MAX - 1) is served by n2 too, and replaces exactly what it saw.
    let read = n2.get(b"victim", Some(3)).await.unwrap();
    n2.put(
        b"victim",
        Bytes::from("merged"),
        Some(read.context()),
        Some(3),
    )
    .await
    .expect("n2 takes the read's context, claim included");
    n2.put(
        b"victim-2",
        Bytes::from("with the planted context"),
        Some(&planted_reply),
        None,
    )
    .await
    .expect("the context n1 returned for the planted write is no forgery on n2 any more");
    for node in 1..=3 {
        let read = cluster.client(node).get(b"victim", Some(3)).await.unwrap();
        assert_eq!(read.values(), vec![Bytes::from("merged")], "n{node}");
    }
}
