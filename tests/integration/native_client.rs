//! The native client against real node processes: it joins through one seed, finds every
//! node, coordinates reads itself, sends writes straight to an owner, stays out of the nodes'
//! membership, and falls back to a node it reaches when its own view cannot serve a request.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;
use dynamo_node::model::{GetResult, KvService, ReadOptions, WriteOptions};
use dynamo_node::node::{NativeClient, NativeConfig};
use dynamo_node::process::Firewall;
use dynamo_node::testing::TestCluster;

fn value(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_client_coordinates_reads_itself_and_sends_writes_to_an_owner() {
    let _turn = crate::ractor_turn::take().await;
    let cluster = TestCluster::start(3).await;
    let native = NativeClient::connect(NativeConfig::new([cluster.cluster_addr(1)]))
        .await
        .expect("the client joins through one seed");
    let kv = native.service();
    let mut connected = kv.connected_nodes();
    connected.sort();
    assert_eq!(
        connected.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        ["n1", "n2", "n3"],
        "the client found every node from one seed"
    );

    // Written through the client, visible through any node's HTTP API.
    let ctx = kv
        .put("cart".into(), value("apple"), None, WriteOptions::default())
        .await
        .unwrap();
    let seen = cluster.client(2).get(b"cart", None).await.unwrap();
    assert_eq!(seen.values(), [value("apple")]);

    // A write with the context replaces; a blind one from elsewhere becomes a sibling.
    kv.put(
        "cart".into(),
        value("apple,pear"),
        Some(ctx),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    cluster
        .client(3)
        .put(b"cart", value("plum"), None, None)
        .await
        .unwrap();
    let got = kv.get("cart".into(), ReadOptions::default()).await.unwrap();
    let mut values = got.values().to_vec();
    values.sort();
    assert_eq!(values, [value("apple,pear"), value("plum")]);

    // Deleting with the siblings' context removes both.
    kv.delete(
        "cart".into(),
        Some(got.context().clone()),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    let gone = cluster.client(1).get(b"cart", None).await.unwrap();
    assert!(matches!(gone, GetResult::NotFound { .. }), "{gone:?}");

    // Many more requests: no node coordinated a read, no write was forwarded between nodes.
    for i in 0..30 {
        let key = format!("k{i}");
        kv.put(
            key.clone().into(),
            value("v"),
            None,
            WriteOptions::default(),
        )
        .await
        .unwrap();
        let got = kv.get(key.into(), ReadOptions::default()).await.unwrap();
        assert_eq!(got.values(), [value("v")]);
    }
    for i in 1..=3 {
        let forwarded = cluster.metric(i, "dynamo_forwarded_writes_total").await;
        assert_eq!(forwarded, Some(0.0), "n{i} forwarded writes");
        let reads = cluster
            .metric(i, "dynamo_requests_total")
            .await
            .unwrap_or(0.0);
        // Only the two HTTP gets and the blind HTTP put above went through node fronts.
        assert!(reads <= 3.0, "n{i} served {reads} requests itself");
    }

    // The client is in the mesh, not in the membership: no node lists it.
    for i in 1..=3 {
        let members = cluster.client(i).members().await.unwrap();
        assert_eq!(members.len(), 3, "n{i}: {members:?}");
        assert!(members.iter().all(|m| !m.node.starts_with("client-")));
    }
    assert_eq!(kv.members().len(), 3);
    native.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_from_two_nodes_still_reads_and_writes_through_the_third() {
    let _turn = crate::ractor_turn::take().await;
    let cluster = TestCluster::start(3).await;
    let node_ip = |i: usize| match cluster.cluster_addr(i).ip() {
        IpAddr::V4(ip) => ip,
        other => panic!("test clusters run on IPv4 loopback, got {other}"),
    };
    let [a, b, c, _] = node_ip(1).octets();
    let client_ip = Ipv4Addr::new(a, b, c, 200);
    let mut firewall = Firewall::new();
    firewall
        .cut(&[(client_ip, node_ip(2)), (client_ip, node_ip(3))])
        .expect("iptables is needed for this test (.ci/run installs it)");

    let mut config = NativeConfig::new([cluster.cluster_addr(1)]);
    config.bind_ip = Some(IpAddr::V4(client_ip));
    config.connect_timeout = Duration::from_secs(3);
    let native = NativeClient::connect(config)
        .await
        .expect("one reachable node is enough to join");
    let kv = native.service();
    assert_eq!(kv.connected_nodes(), ["n1".into()]);
    assert_eq!(kv.members().len(), 3, "n1 told the client about n2 and n3");

    // R = 2 of replicas the client cannot reach itself: n1 coordinates for it.
    cluster
        .client(2)
        .put(b"far", value("from n2"), None, None)
        .await
        .unwrap();
    let got = kv.get("far".into(), ReadOptions::default()).await.unwrap();
    assert_eq!(got.values(), [value("from n2")]);
    let ctx = kv
        .put(
            "far".into(),
            value("from the client"),
            Some(got.context().clone()),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    assert!(!ctx.is_empty());
    let seen = cluster.client(3).get(b"far", None).await.unwrap();
    assert_eq!(seen.values(), [value("from the client")]);

    firewall.remove().unwrap();
    native.stop().await;
}

#[tokio::test]
async fn a_client_without_a_reachable_seed_says_so() {
    let _turn = crate::ractor_turn::take().await;
    let mut config = NativeConfig::new(["127.0.0.1:9".parse().unwrap()]);
    config.connect_timeout = Duration::from_millis(500);
    let error = match NativeClient::connect(config).await {
        Ok(_) => panic!("joined a cluster that does not exist"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("no ring"), "{error}");
    assert!(
        NativeClient::connect(NativeConfig::new([]))
            .await
            .is_err_and(|e| e.to_string().contains("seed"))
    );
}
