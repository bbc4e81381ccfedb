//! A peer may speak only for itself (issue 12): a process that joins the mesh with the cookie
//! under its own name ("evil") and then claims to be n2 changes nothing.
//!
//! - It registers an actor named `dynamo.gossip@n2`: n1 keeps n2's own actor and counts the
//!   impostor (`kind="actor"`).
//! - It gossips, as n2, a digest marking n2 left and one with another N: refused, counted
//!   (`kind="gossip"`), and n2 stays valid everywhere.
//! - It sends anti-entropy and purge requests claiming n2: refused, counted, data unchanged.
//!
//! The genuine cluster converging and running anti-entropy rounds shows the session tokens
//! work between real nodes.

use std::time::Duration;

use bytes::Bytes;
use dynamo_node::core::anti_entropy::{AeReply, AeRequest, Scope, Step};
use dynamo_node::core::ids::{Key, NodeId};
use dynamo_node::core::membership::{MemberDigest, RingStatus};
use dynamo_node::model::GetResult;
use dynamo_node::node::wire::{
    AntiEntropyMsg, GossipDigest, GossipMsg, Payload, SessionToken, Vouched,
};
use dynamo_node::testing::{TestCluster, wait_until};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, pg};
use ractor_cluster::NodeServer;
use ractor_cluster::node::NodeConnectionMode;

const CALL: Duration = Duration::from_secs(5);

/// An actor that would pose as n2's Gossip actor; it never answers.
struct Impostor;

impl Actor for Impostor {
    type Msg = GossipMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<GossipMsg>,
        _: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// The remote actor of `group` named `name`, once the mesh synced it.
async fn remote_member<M: ractor::Message>(group: &str, name: &str) -> ActorRef<M> {
    let find = || {
        pg::get_members(&group.to_string())
            .into_iter()
            .find(|c| !c.get_id().is_local() && c.get_name().as_deref() == Some(name))
    };
    wait_until(
        Duration::from_secs(10),
        &format!("{name} is synced"),
        || async { find().is_some() },
    )
    .await;
    find().map(ActorRef::from).expect("found above")
}

async fn gossip(
    target: &ActorRef<GossipMsg>,
    from: &str,
    token: Option<SessionToken>,
    members: Vec<MemberDigest>,
) -> Result<Vec<MemberDigest>, String> {
    let exchange = Vouched {
        token,
        body: GossipDigest {
            from: NodeId::new(from),
            members,
        },
    };
    match target
        .call(
            |reply| GossipMsg::Exchange(Payload::ok(exchange), reply),
            Some(CALL),
        )
        .await
    {
        Ok(CallResult::Success(Payload(answer))) => answer,
        other => panic!("n1's gossip actor did not answer: {other:?}"),
    }
}

async fn anti_entropy(target: &ActorRef<AntiEntropyMsg>, step: Step) -> Result<AeReply, String> {
    let request = Vouched {
        token: Some(SessionToken::random()),
        body: AeRequest {
            from: NodeId::new("n2"),
            scope: Scope { ring: 0, n: 2 },
            step,
        },
    };
    match target
        .call(
            |reply| AntiEntropyMsg::Request(Payload::ok(request), reply),
            Some(CALL),
        )
        .await
    {
        Ok(CallResult::Success(Payload(answer))) => answer,
        other => panic!("n1's anti-entropy actor did not answer: {other:?}"),
    }
}

/// Anti-entropy rounds node `i` started and completed (in sync or repaired): each needs the
/// peer's token, so they also show the genuine sessions still work.
async fn rounds(cluster: &TestCluster, i: usize) -> f64 {
    let text = cluster.client(i).metrics().await.expect("metrics");
    dynamo_node::http::metric_sum(&text, "dynamo_anti_entropy_rounds_total", |labels| {
        labels.contains("outcome=\"in_sync\"") || labels.contains("outcome=\"repaired\"")
    })
    .unwrap_or(0.0)
}

async fn forged(cluster: &TestCluster, i: usize, kind: &str) -> f64 {
    let text = cluster.client(i).metrics().await.expect("metrics");
    dynamo_node::http::metric_sum(&text, "dynamo_forged_messages_total", |labels| {
        labels.contains(&format!("kind=\"{kind}\""))
    })
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_claims_another_nodes_name_changes_nothing() {
    let cluster = TestCluster::builder()
        .nodes(2)
        .node_args([
            "--gossip-interval-ms",
            "100",
            "--anti-entropy-interval-ms",
            "200",
            "--cookie",
            "forged-sender-test",
        ])
        .start()
        .await;
    let n1 = cluster.client(1);
    n1.put(b"k", Bytes::from("genuine"), None, Some(2))
        .await
        .expect("write");
    n1.put(b"gone", Bytes::from("x"), None, Some(2))
        .await
        .expect("write");
    let gone = match n1.get(b"gone", None).await.expect("read") {
        GetResult::Value { context, .. } => context,
        other => panic!("unexpected {other:?}"),
    };
    n1.delete(b"gone", Some(&gone), Some(2))
        .await
        .expect("delete");
    // Anti-entropy between the genuine nodes works: their session tokens were exchanged.
    wait_until(
        Duration::from_secs(10),
        "n1 finishes an anti-entropy round",
        || async {
            let text = cluster.client(1).metrics().await.unwrap_or_default();
            dynamo_node::http::metric_sum(&text, "dynamo_anti_entropy_rounds_total", |l| {
                !l.contains("failed")
            })
            .is_some_and(|rounds| rounds > 0.0)
        },
    )
    .await;

    // The impostor joins the mesh with the cookie, under its own name, and brings an actor
    // named for n2's Gossip actor (in this process's ractor turn).
    let _turn = crate::ractor_turn::take().await;
    let impostor = Actor::spawn(Some("dynamo.gossip@n2".to_string()), Impostor, ())
        .await
        .expect("spawn the impostor actor")
        .0;
    pg::join("dynamo.gossip".to_string(), vec![impostor.get_cell()]);
    let server = NodeServer::new(
        0,
        "forged-sender-test".to_string(),
        "evil".to_string(),
        "127.0.0.1".to_string(),
        None,
        Some(NodeConnectionMode::Isolated),
    );
    let (server, _) = Actor::spawn(None, server, ()).await.expect("node server");
    ractor_cluster::client_connect(&server, cluster.cluster_addr(1))
        .await
        .expect("connect to n1");
    let n1_gossip = remote_member::<GossipMsg>("dynamo.gossip", "dynamo.gossip@n1").await;
    let n1_ae =
        remote_member::<AntiEntropyMsg>("dynamo.anti_entropy", "dynamo.anti_entropy@n1").await;
    wait_until(
        Duration::from_secs(10),
        "n1 counts the impostor actor",
        || async { forged(&cluster, 1, "actor").await >= 1.0 },
    )
    .await;

    // Asking for the table needs no token; it gives the n2 entry to forge.
    let table = gossip(&n1_gossip, "evil", None, Vec::new())
        .await
        .expect("an empty digest is a question anyone may ask");
    let genuine = table
        .iter()
        .find(|m| m.node.as_str() == "n2")
        .expect("n1 knows n2")
        .clone();
    let mut left = genuine.clone();
    left.ring = RingStatus::Left;
    left.incarnation += 1;
    let mut other_n = genuine.clone();
    other_n.n = 5;
    other_n.incarnation += 1;
    for (token, forgery) in [
        (None, left.clone()),
        (Some(SessionToken::random()), left),
        (Some(SessionToken::random()), other_n),
    ] {
        let refused = gossip(&n1_gossip, "n2", token, vec![forgery]).await;
        assert!(
            refused.is_err(),
            "a forged digest was accepted: {refused:?}"
        );
    }
    assert!(forged(&cluster, 1, "gossip").await >= 3.0);

    let key = Key::from_static(b"gone");
    for step in [
        Step::Digests {
            keys: vec![key.clone()],
        },
        Step::Purge {
            keys: vec![(key.clone(), 0)],
        },
    ] {
        let refused = anti_entropy(&n1_ae, step).await;
        assert!(
            refused.is_err(),
            "a forged purge step was answered: {refused:?}"
        );
    }
    let refused = anti_entropy(
        &n1_ae,
        Step::Exchange {
            push: Vec::new(),
            want: vec![Key::from_static(b"k")],
            purge: Vec::new(),
        },
    )
    .await;
    assert!(
        refused.is_err(),
        "a forged exchange was answered: {refused:?}"
    );
    assert!(forged(&cluster, 1, "purge").await >= 2.0);
    assert!(forged(&cluster, 1, "anti_entropy").await >= 1.0);

    // Several gossip rounds later (anti-entropy runs every 200 ms, gossip every 100 ms), n2 is
    // still a valid member everywhere, and the data stands.
    let before = [rounds(&cluster, 1).await, rounds(&cluster, 2).await];
    wait_until(
        Duration::from_secs(10),
        "both nodes completed three more anti-entropy rounds",
        || async {
            rounds(&cluster, 1).await >= before[0] + 3.0
                && rounds(&cluster, 2).await >= before[1] + 3.0
        },
    )
    .await;
    for observer in [1, 2] {
        let n2 = cluster
            .member_seen_by(observer, 2)
            .await
            .expect("n2 is a member");
        assert_eq!(n2.ring, RingStatus::Valid, "as n{observer} sees it");
    }
    match n1.get(b"k", Some(2)).await.expect("read") {
        GetResult::Value { value, .. } => assert_eq!(value, Bytes::from("genuine")),
        other => panic!("unexpected {other:?}"),
    }
    let members = cluster.client(2).members().await.expect("members");
    assert!(
        members.iter().all(|m| m.node != "evil"),
        "the impostor never became a member: {members:?}"
    );
    // Nothing of the impostor's mesh stays behind for the next test of this process.
    impostor
        .stop_and_wait(None, Some(CALL))
        .await
        .expect("the impostor actor stops");
    server
        .stop_and_wait(None, Some(CALL))
        .await
        .expect("the node server stops");
    wait_until(CALL, "n1's actors left this process's groups", || async {
        pg::which_groups()
            .iter()
            .all(|group| pg::get_members(group).is_empty())
    })
    .await;
}
