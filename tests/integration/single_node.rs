//! One node in this process, through the Rust API: the seed's walk-through, bad input, and
//! actor crashes under load.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::config::{ConfigUpdate, MAX_VALUE_BYTES, NodeConfig};
use dynamo_node::model::{ClientError, GetResult, WriteOptions};
use dynamo_node::node::{Node, NodeError, names};

use crate::ractor_turn::{self, Turn};

/// One node per process: a node starts only in this process's turn.
async fn start(name: &str) -> (Turn, Node) {
    let turn = ractor_turn::take().await;
    let mut config = NodeConfig::new(name, "127.0.0.1:0".parse().unwrap());
    config.quorum.w = 1;
    config.quorum.r = 1;
    (turn, Node::start(config).await.expect("node starts"))
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_walk_through_with_w_r_one() {
    let (_turn, node) = start("walk").await;
    let client = node.client();

    // Causal overwrite.
    let ctx1 = client.put("cart", "milk", None).await.unwrap();
    let ctx2 = client.put("cart", "milk,eggs", Some(&ctx1)).await.unwrap();
    match client.get("cart").await.unwrap() {
        GetResult::Value { value, context } => {
            assert_eq!(text(&value), "milk,eggs");
            // The read saw exactly what the second write made: equal histories have equal
            // representations.
            let events = |c: &dynamo_node::model::Context| {
                let clock = c.clock();
                let vector: Vec<_> = clock
                    .entries()
                    .map(|(a, e)| (a.clone(), e.counter))
                    .collect();
                let dots: Vec<_> = clock.exact_dots().map(|(d, _)| d.clone()).collect();
                (vector, dots)
            };
            assert_eq!(events(&context), events(&ctx2));
        }
        other => panic!("expected one value, got {other:?}"),
    }

    // Two blind writes are siblings.
    client.put("cart", "bread", None).await.unwrap();
    let read = client.get("cart").await.unwrap();
    let GetResult::Siblings { values, context } = read else {
        panic!("expected siblings, got {read:?}");
    };
    let mut values: Vec<String> = values.iter().map(text).collect();
    values.sort();
    assert_eq!(values, ["bread", "milk,eggs"]);

    // A merge write with the siblings' context leaves one clean value.
    client
        .put("cart", "bread,milk,eggs", Some(&context))
        .await
        .unwrap();
    match client.get("cart").await.unwrap() {
        GetResult::Value { value, .. } => assert_eq!(text(&value), "bread,milk,eggs"),
        other => panic!("expected one value, got {other:?}"),
    }

    // Deleting with the read context hides the value.
    let ctx = client.get("cart").await.unwrap().context().clone();
    client.delete("cart", Some(&ctx)).await.unwrap();
    assert!(matches!(
        client.get("cart").await.unwrap(),
        GetResult::NotFound { .. }
    ));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_with_default_settings_serves_refuses_to_leave_and_refuses_a_second_node() {
    let _turn = ractor_turn::take().await;
    let config = NodeConfig::new("lone", "127.0.0.1:0".parse().unwrap());
    assert_eq!((config.quorum.n, config.quorum.w), (3, 2), "the defaults");
    let node = Node::start(config).await.expect("node starts");
    let client = node.client();
    let key = String::from("cart");
    client
        .put(&key, "milk", None)
        .await
        .expect("W is capped by the one member");
    assert_eq!(
        client.get(key.as_str()).await.unwrap().values(),
        vec![Bytes::from("milk")]
    );
    // The last member cannot leave: its keys would have nowhere to go.
    match client.leave() {
        Err(ClientError::Conflict(why)) => assert!(why.contains("no other member"), "{why}"),
        other => panic!("the lone node's leave must be refused, got {other:?}"),
    }
    assert_eq!(
        client.get(key.as_str()).await.unwrap().values(),
        vec![Bytes::from("milk")],
        "and it still serves"
    );
    let second = NodeConfig::new("other", "127.0.0.1:0".parse().unwrap());
    match Node::start(second).await {
        Err(NodeError::AlreadyRunning(holder)) => assert_eq!(holder, "lone"),
        Err(other) => panic!("a second node must be refused as such, got {other}"),
        Ok(_) => panic!("a second node started in the same process"),
    }
    node.stop().await;
    let again = NodeConfig::new("again", "127.0.0.1:0".parse().unwrap());
    let node = Node::start(again)
        .await
        .expect("the place is free once the node stopped");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_typed_error_and_the_node_stays_up() {
    let (_turn, node) = start("bad-input").await;
    let client = node.client();
    assert!(matches!(
        client.put("", "v", None).await,
        Err(ClientError::InvalidKey(_))
    ));
    assert!(matches!(
        client.put(vec![b'k'; 2000], "v", None).await,
        Err(ClientError::KeyTooLong { .. })
    ));
    assert!(matches!(
        client.put("k", vec![0u8; MAX_VALUE_BYTES + 1], None).await,
        Err(ClientError::ValueTooLarge { .. })
    ));
    let w9 = WriteOptions { w: Some(9) };
    assert!(matches!(
        client.put_with("k", "v", None, w9).await,
        Err(ClientError::InvalidOption(_))
    ));
    let bad = ConfigUpdate {
        w: Some(0),
        ..Default::default()
    };
    assert!(node.update_config(&bad).is_err());
    client.put("k", "still fine", None).await.unwrap();
    assert_eq!(
        client.get("k").await.unwrap().values(),
        vec![Bytes::from("still fine")]
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_ring_and_storage_actors_restart_without_losing_anything() {
    let (_turn, node) = start("crashy").await;
    let client = node.client();
    for i in 0..50 {
        client
            .put(format!("k{i}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
    let me = node.name().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    for round in 0..3 {
        for name in [names::ring(&me), names::storage(&me)] {
            let before = ractor::registry::where_is(name.clone()).expect("actor running");
            before.kill();
            // Requests keep being served while the actor restarts.
            for i in 0..50 {
                let got = client.get(format!("k{i}")).await.unwrap();
                assert_eq!(
                    got.values(),
                    vec![Bytes::from(format!("v{i}"))],
                    "round {round}"
                );
            }
            loop {
                match ractor::registry::where_is(name.clone()) {
                    Some(after) if after.get_id() != before.get_id() => break,
                    _ if Instant::now() > deadline => panic!("{name} did not restart"),
                    _ => tokio::task::yield_now().await,
                }
            }
        }
    }
    client.put("after", "crashes", None).await.unwrap();
    assert_eq!(
        node.client().get("after").await.unwrap().values(),
        vec![Bytes::from("crashes")]
    );
    node.stop().await;
}

mod embedding {
    use std::sync::{Arc, Mutex};

    use super::*;
    use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
    use ractor_cluster::RactorMessage;

    /// A user's own supervisor: records what happens to its children.
    struct UserSupervisor;

    #[derive(RactorMessage)]
    enum UserMsg {}

    impl Actor for UserSupervisor {
        type Msg = UserMsg;
        type State = Arc<Mutex<Vec<String>>>;
        type Arguments = Arc<Mutex<Vec<String>>>;

        async fn pre_start(
            &self,
            _: ActorRef<UserMsg>,
            events: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(events)
        }

        async fn handle_supervisor_evt(
            &self,
            _: ActorRef<UserMsg>,
            event: SupervisionEvent,
            events: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let SupervisionEvent::ActorTerminated(who, _, _) = event {
                events
                    .lock()
                    .unwrap()
                    .push(who.get_name().unwrap_or_default());
            }
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_runs_as_a_child_of_the_users_supervisor() {
        let _turn = crate::ractor_turn::take().await;
        let events = Arc::new(Mutex::new(Vec::new()));
        let (user, user_task) = Actor::spawn(None, UserSupervisor, Arc::clone(&events))
            .await
            .unwrap();
        let mut config = NodeConfig::new("embedded", "127.0.0.1:0".parse().unwrap());
        config.quorum.w = 1;
        config.quorum.r = 1;
        let node = Node::start_linked(config, user.get_cell()).await.unwrap();
        node.client().put("k", "v", None).await.unwrap();
        assert_eq!(
            node.client().get("k").await.unwrap().values(),
            vec![Bytes::from("v")]
        );
        let root_name = names::root(node.name());
        node.stop().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !events.lock().unwrap().contains(&root_name) {
            assert!(
                Instant::now() < deadline,
                "the user's supervisor never saw the node stop"
            );
            tokio::task::yield_now().await;
        }
        user.stop(None);
        user_task.await.unwrap();
    }
}
