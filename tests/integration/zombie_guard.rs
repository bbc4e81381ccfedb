//! The zombie guard: a node whose actor tree gives up (its restart intensity exceeded) must
//! say so, not serve on with a frozen ring: `Node::failed` resolves, the health turns
//! "unavailable" (HTTP 503), and the binary, which waits on `failed`, exits non-zero.

use std::time::{Duration, Instant};

use dynamo_node::config::NodeConfig;
use dynamo_node::http::{HttpClient, HttpGuard, HttpListener};
use dynamo_node::model::KvService;
use dynamo_node::node::{Node, names};
use ractor::ActorCell;

/// The running Ring actor of `node`, once it is registered.
async fn ring_actor(node: &Node, deadline: Instant) -> Option<ActorCell> {
    let name = names::ring(node.name());
    loop {
        if let Some(cell) = ractor::registry::where_is(name.clone()) {
            return Some(cell);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_that_gives_up_fails_the_node_and_its_health() {
    let _turn = crate::ractor_turn::take().await;
    let listener = HttpListener::bind("127.0.0.1:0".parse().unwrap(), &HttpGuard::default())
        .await
        .expect("a free port");
    let mut config = NodeConfig::new("zombie", "127.0.0.1:0".parse().unwrap());
    config.http = Some(listener.local_addr());
    let node = Node::start(config).await.expect("node starts");
    let server = listener.serve(node.client());
    let http = HttpClient::new(format!("http://{}", server.addr()));
    assert_eq!(http.health().await.unwrap().status, "ok");

    // The root supervisor restarts a crashed child 10 times in 10 s, then gives up.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut kills = 0;
    let reason = loop {
        tokio::select! {
            reason = node.failed() => break reason,
            cell = ring_actor(&node, deadline) => {
                let cell = cell.expect("the Ring actor is restarted until the tree gives up");
                cell.kill();
                kills += 1;
                // Wait until this one is gone, so the next kill hits its successor.
                while ractor::registry::where_is(names::ring(node.name()))
                    .is_some_and(|c| c.get_id() == cell.get_id())
                {
                    assert!(Instant::now() < deadline, "a killed actor never went away");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
        assert!(kills <= 20, "the tree never gave up after {kills} kills");
    };
    assert!(reason.contains("gave up"), "{reason}");
    assert!(kills > 10, "it gave up after only {kills} restarts");

    let health = node.client().health();
    assert_eq!(health.status, "unavailable");
    assert!(health.reason.is_some_and(|r| r.contains("gave up")));
    let answer = http
        .health()
        .await
        .expect_err("/health must not answer 200");
    assert_eq!(answer.status(), Some(503), "{answer}");
    server.stop().await;
    node.stop().await;
}
