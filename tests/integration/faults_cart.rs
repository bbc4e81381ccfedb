//! The shopping cart of the Dynamo paper across a partition: both sides keep adding items,
//! and after the heal no item is lost: a read shows the two carts as siblings, and a write
//! with the read's context merges them into one.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use dynamo_node::core::membership::Status;
use dynamo_node::http::HttpClient;
use dynamo_node::model::{Context, GetResult};
use dynamo_node::testing::{TestCluster, wait_until};

const VIEW_CHANGE: Duration = Duration::from_secs(20);
const CONVERGE: Duration = Duration::from_secs(60);

type Cart = BTreeSet<String>;

fn encode(cart: &Cart) -> Bytes {
    Bytes::from(cart.iter().cloned().collect::<Vec<_>>().join(","))
}

fn decode(value: &Bytes) -> Cart {
    std::str::from_utf8(value)
        .expect("carts are text")
        .split(',')
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// The union of every sibling cart, and the context that covers them all.
fn read_cart(got: &GetResult) -> (Cart, Context) {
    let cart = got.values().iter().flat_map(decode).collect();
    (cart, got.context().clone())
}

/// What a shopping client does: read (merging siblings), add the item, write back.
async fn add_item(client: &HttpClient, key: &[u8], item: &str) {
    let got = client.get(key, None).await.expect("the read meets R");
    let (mut cart, context) = read_cart(&got);
    cart.insert(item.to_string());
    client
        .put(key, encode(&cart), Some(&context), None)
        .await
        .expect("the write meets W through the sloppy quorum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carts_filled_on_both_sides_of_a_partition_merge_without_losing_an_item() {
    // Five nodes, N = 3, default W = 2 and R = 2, split {n1, n2} | {n3, n4, n5}: each side has
    // two nodes or more, so with the sloppy quorum both sides meet W = 2 and R = 2 with the
    // default settings (with three nodes split 1 | 2, the lone node could only write with
    // ?w=1). The cart's three owners are all on the larger side, so the smaller side writes
    // only through fallbacks, as hints. The other side stays suspect (dead only after a
    // minute); dead would route the same way (a dead owner keeps its ranges), which is
    // faults_dead_owners.rs's matter.
    // A node gossips with one random peer per round: with three of its four peers cut off, a
    // node of the two-node side hears its partner only by chance until the far side is
    // suspect, so suspicion waits 20 rounds, not 5, lest the pair suspect each other.
    let mut cluster = TestCluster::builder()
        .nodes(5)
        .node_args([
            "--n",
            "3",
            "--gossip-interval-ms",
            "100",
            "--suspect-after-ms",
            "2000",
            "--dead-after-ms",
            "60000",
        ])
        .start()
        .await;
    let key = cluster.key_owned_by("cart:", &[3, 4, 5]);
    let key = key.as_bytes();

    let (left, right) = (cluster.client(1), cluster.client(4));
    add_item(&left, key, "milk").await;

    cluster.partition(&[&[1, 2], &[3, 4, 5]]);
    for (observers, others) in [(&[1, 2][..], &[3, 4, 5][..]), (&[3, 4, 5][..], &[1, 2][..])] {
        for &node in others {
            cluster
                .wait_status(observers, node, Status::Suspect, VIEW_CHANGE)
                .await;
        }
    }
    // Both sides go on shopping.
    for (left_item, right_item) in [("eggs", "apples"), ("bread", "cheese")] {
        add_item(&left, key, left_item).await;
        add_item(&right, key, right_item).await;
    }
    let everything: Cart = ["milk", "eggs", "bread", "apples", "cheese"]
        .into_iter()
        .map(String::from)
        .collect();
    // Neither side sees the other's items yet.
    for (client, unseen) in [(&left, ["apples", "cheese"]), (&right, ["eggs", "bread"])] {
        let (cart, _) = read_cart(&client.get(key, None).await.unwrap());
        assert!(
            unseen.iter().all(|item| !cart.contains(*item)),
            "{}: {cart:?}",
            client.base_url()
        );
    }

    cluster.heal();
    cluster.processes().wait_converged(CONVERGE).await.unwrap();

    // Hints and read repair bring both sides' carts to the owners: siblings, together
    // holding every item.
    let reader = cluster.client(2);
    let seen = std::sync::Mutex::new(None);
    wait_until(CONVERGE, "a read with R = N shows every item", || async {
        let Ok(got) = reader.get(key, Some(3)).await else {
            return false;
        };
        let complete = read_cart(&got).0 == everything;
        *seen.lock().unwrap() = Some(got);
        complete
    })
    .await;
    let got = seen.into_inner().unwrap().unwrap();
    let GetResult::Siblings { values, context } = &got else {
        panic!("two concurrent carts are siblings: {got:?}");
    };
    let carts: Vec<Cart> = values.iter().map(decode).collect();
    assert!(carts.len() >= 2, "{carts:?}");
    assert!(
        carts.iter().any(|c| c.contains("eggs")) && carts.iter().any(|c| c.contains("apples")),
        "one sibling per side: {carts:?}"
    );

    // The client merges: one write with the read's context replaces both carts.
    let merged = encode(&everything);
    cluster
        .client(5)
        .put(key, merged.clone(), Some(context), None)
        .await
        .unwrap();
    for i in 1..=5 {
        let client = cluster.client(i);
        wait_until(
            VIEW_CHANGE,
            &format!("n{i} reads one merged cart"),
            || async {
                matches!(
                    client.get(key, Some(3)).await,
                    Ok(GetResult::Value { ref value, .. }) if *value == merged
                )
            },
        )
        .await;
    }
    for owner in [3, 4, 5] {
        let local = cluster.client(owner).local(key).await.unwrap();
        assert_eq!(local.len(), 1, "n{owner} stores one version: {local:?}");
        assert_eq!(local[0].value, Some(merged.clone()), "n{owner}");
    }
}
