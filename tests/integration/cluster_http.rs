//! A real cluster of node processes, driven through the HTTP API.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_node::config::MAX_VALUE_BYTES;
use dynamo_node::core::ids::NodeId;
use dynamo_node::core::ring::Ring;
use dynamo_node::http::{CONTEXT_HEADER, HttpClient};
use dynamo_node::model::GetResult;
use dynamo_node::process::{ManagedProcess, locate_node_binary, pick_free_port};
use dynamo_node::testing::{TestCluster, wait_until};

fn value(get: &GetResult) -> Vec<Bytes> {
    get.values()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_answers_the_same_and_one_write_reads_as_one_value() {
    let cluster = TestCluster::start(3).await;
    let clients: Vec<HttpClient> = (1..=3).map(|i| cluster.client(i)).collect();

    // Put on A, read the same value and context from B and C.
    let ctx = clients[0]
        .put(b"cart", "milk".into(), None, None)
        .await
        .unwrap();
    for client in &clients[1..] {
        match client.get(b"cart", None).await.unwrap() {
            GetResult::Value { value, context } => {
                assert_eq!(value, Bytes::from("milk"));
                assert_eq!(context.encode(), ctx.encode(), "{}", client.base_url());
            }
            other => panic!("{}: {other:?}", client.base_url()),
        }
    }

    // Writes through every node; every node then gives the same answer for every key.
    for i in 0..30 {
        let writer = &clients[i % 3];
        writer
            .put(
                format!("k{i}").as_bytes(),
                format!("v{i}").into(),
                None,
                None,
            )
            .await
            .unwrap();
    }
    for i in 0..30 {
        let key = format!("k{i}");
        let answers: Vec<(Vec<Bytes>, String)> =
            futures::future::join_all(clients.iter().map(|c| c.get(key.as_bytes(), None)))
                .await
                .into_iter()
                .map(|g| {
                    let g = g.unwrap();
                    (value(&g), g.context().encode())
                })
                .collect();
        assert_eq!(answers[0].0, vec![Bytes::from(format!("v{i}"))]);
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "{key}: {answers:?}"
        );
    }

    // A single write read back with R = 3 is one value, not siblings (the seed gave siblings).
    clients[1]
        .put(b"single", "only".into(), None, None)
        .await
        .unwrap();
    for client in &clients {
        let got = client.get(b"single", Some(3)).await.unwrap();
        assert!(matches!(got, GetResult::Value { .. }), "{got:?}");
    }

    // Every node built the same ring.
    let rings: Vec<_> = futures::future::join_all(clients.iter().map(|c| c.ring())).await;
    let names = |r: &dynamo_node::model::RingInfo| -> Vec<(String, u32)> {
        r.nodes.iter().map(|n| (n.node.clone(), n.vnodes)).collect()
    };
    let first = names(rings[0].as_ref().unwrap());
    assert_eq!(first.len(), 3);
    for ring in &rings {
        assert_eq!(names(ring.as_ref().unwrap()), first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_node_killed_w3_is_insufficient_within_the_timeout_and_w2_succeeds() {
    let put_timeout = Duration::from_millis(2000);
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .node_args(["--put-timeout-ms", "2000"])
        .start()
        .await;
    cluster.kill(3);
    let client = cluster.client(1);
    for i in 0..10 {
        let key = format!("w3-{i}");
        let started = Instant::now();
        let err = client
            .put(key.as_bytes(), "v".into(), None, Some(3))
            .await
            .expect_err("W = 3 cannot be met with a node down");
        assert_eq!(err.kind(), Some("insufficient_acks"), "{err:?}");
        assert_eq!(err.status(), Some(503));
        // Bounded by the request's own timeout (plus scheduling slack), never a hang.
        assert!(
            started.elapsed() < put_timeout + Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        if let dynamo_node::http::HttpError::Api { body, .. } = &err {
            assert_eq!(body["required"], 3);
            assert!(body["succeeded"].as_u64().unwrap() < 3, "{body}");
        }
        client
            .put(key.as_bytes(), "v".into(), None, Some(2))
            .await
            .expect("W = 2 succeeds");
        let got = client.get(key.as_bytes(), Some(2)).await.unwrap();
        assert!(!got.values().is_empty(), "{key}: {got:?}");
    }
    // Per-request R: all three replies cannot come; two can.
    let err = client
        .get(b"w3-0", Some(3))
        .await
        .expect_err("R = 3 with a node down");
    assert_eq!(err.kind(), Some("insufficient_replies"), "{err:?}");
    assert!(client.get(b"w3-0", Some(2)).await.is_ok());
    // The node-wide default changes at runtime too.
    let update = dynamo_node::config::ConfigUpdate {
        w: Some(3),
        ..Default::default()
    };
    assert_eq!(client.update_config(&update).await.unwrap().w, 3);
    let err = client
        .put(b"default-w", "v".into(), None, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some("insufficient_acks"));
    assert!(
        client
            .put(b"default-w", "v".into(), None, Some(1))
            .await
            .is_ok(),
        "?w=1 overrides"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400_or_413_and_the_node_stays_up() {
    let cluster = TestCluster::start(3).await;
    let url = cluster.url(2);
    let http = reqwest::Client::new();
    let bad_context = http
        .put(format!("{url}/kv/key"))
        .header(CONTEXT_HEADER, "not a context!")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_context.status(), 400);
    let body: serde_json::Value = bad_context.json().await.unwrap();
    assert_eq!(body["error"], "invalid_context");

    let oversized = http
        .put(format!("{url}/kv/key"))
        .body(vec![0u8; MAX_VALUE_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 413);
    let body: serde_json::Value = oversized.json().await.unwrap();
    assert_eq!(body["error"], "value_too_large");

    let long_key = "k".repeat(5000);
    let too_long = http
        .get(format!("{url}/kv/{long_key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(too_long.status(), 413);

    let bad_w = http
        .put(format!("{url}/kv/key?w=0"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_w.status(), 400);

    // Still serving, and still part of the cluster.
    let client = cluster.client(2);
    client.put(b"key", "fine".into(), None, None).await.unwrap();
    assert_eq!(
        client.get(b"key", Some(3)).await.unwrap().values(),
        vec![Bytes::from("fine")]
    );
    assert_eq!(client.health().await.unwrap().alive, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_node_outside_the_owners_are_forwarded_to_one() {
    let cluster = TestCluster::builder().nodes(4).start().await;
    let ring = Ring::with_default_vnodes((1..=4).map(|i| NodeId::new(format!("n{i}")))).unwrap();
    // Keys whose three owners leave n1 out: n1 must forward them.
    let keys: Vec<String> = (0..200)
        .map(|i| format!("fwd{i}"))
        .filter(|k| {
            !ring
                .owners(k.as_bytes(), 3)
                .unwrap()
                .contains(&NodeId::new("n1"))
        })
        .take(5)
        .collect();
    assert_eq!(keys.len(), 5);
    let n1 = cluster.client(1);
    for key in &keys {
        n1.put(key.as_bytes(), "v".into(), None, None)
            .await
            .unwrap();
    }
    let metrics = n1.metrics().await.unwrap();
    let forwarded: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dynamo_forwarded_writes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(forwarded >= 5.0, "forwarded {forwarded}\n{metrics}");
    for key in &keys {
        assert!(
            n1.local(key.as_bytes()).await.unwrap().is_empty(),
            "n1 is no replica of {key}"
        );
        for owner in ring.owners(key.as_bytes(), 3).unwrap() {
            let i: usize = owner.as_str()[1..].parse().unwrap();
            let client = cluster.client(i);
            wait_until(
                Duration::from_secs(10),
                &format!("{owner} holds {key}"),
                || async {
                    client
                        .local(key.as_bytes())
                        .await
                        .is_ok_and(|v| v.len() == 1)
                },
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_cookie_is_refused() {
    let cluster = TestCluster::start(2).await;
    let ip = std::net::Ipv4Addr::new(127, 0, 0, 9);
    let (cluster_port, http_port) = (pick_free_port(ip).unwrap(), pick_free_port(ip).unwrap());
    let mut cmd = std::process::Command::new(locate_node_binary(None).unwrap());
    cmd.args(["start", "--name", "intruder", "--cookie", "not-the-cookie"])
        .args([
            "--bind",
            &format!("{ip}:{cluster_port}"),
            "--http",
            &format!("{ip}:{http_port}"),
        ])
        .args([
            "--seed",
            &cluster.cluster_addr(1).to_string(),
            "--gossip-interval-ms",
            "100",
        ]);
    let log = std::env::temp_dir().join(format!("intruder-{}.log", std::process::id()));
    let _intruder = ManagedProcess::spawn("intruder", cmd, &log).unwrap();
    let intruder = HttpClient::new(format!("http://{ip}:{http_port}"));
    // Let the intruder run many gossip rounds (and dial attempts) before judging.
    wait_until(
        Duration::from_secs(20),
        "the intruder runs 20 gossip rounds",
        || async {
            intruder
                .members()
                .await
                .is_ok_and(|ms| ms.iter().any(|m| m.node == "intruder" && m.heartbeat >= 20))
        },
    )
    .await;
    let seen_by_intruder = intruder.members().await.unwrap();
    assert_eq!(seen_by_intruder.len(), 1, "{seen_by_intruder:?}");
    for i in 1..=2 {
        let members = cluster.client(i).members().await.unwrap();
        assert!(members.iter().all(|m| m.node != "intruder"), "{members:?}");
        assert_eq!(members.len(), 2);
    }
    let _ = std::fs::remove_file(log);
}
