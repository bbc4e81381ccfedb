//! The shopping cart of the Dynamo paper, through the Rust API: concurrent adds become
//! siblings, the application merges them, and a delete never erases an add it has not seen.
//!
//! ```text
//! cargo run --example cart
//! ```
//!
//! One embedded node with N = W = R = 1 keeps it fast and self-contained; the versions and
//! contexts behave the same on a cluster. Each step checks what it shows and the example
//! exits with an error if the store ever answers otherwise.

use std::collections::BTreeSet;
use std::error::Error;

use bytes::Bytes;
use dynamo_node::config::NodeConfig;
use dynamo_node::model::{Context, GetResult};
use dynamo_node::node::{Node, NodeClient};

/// The cart's key.
const CART: &str = "cart:alice";

/// A cart: a set of items, stored as their sorted, comma-separated names.
type Cart = BTreeSet<String>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let mut config = NodeConfig::new("cart", "127.0.0.1:0".parse()?);
    (config.quorum.n, config.quorum.w, config.quorum.r) = (1, 1, 1);
    let node = Node::start(config).await?;
    let outcome = run(&node.client()).await;
    node.stop().await;
    outcome?;
    println!("done");
    Ok(())
}

async fn run(client: &NodeClient) -> Result<(), Box<dyn Error>> {
    println!("one embedded node, N = W = R = 1, key {CART}");

    // Two shoppers start from the same read of the empty cart.
    let first = client.get(CART).await?;
    expect(first.values().is_empty(), "the cart starts empty", &first)?;
    let stale = first.context().clone();
    println!("alice and bob both read the empty cart");
    add(client, "alice", "milk", Cart::new(), &stale).await?;
    add(client, "bob", "eggs", Cart::new(), &stale).await?;

    // Neither write saw the other: both survive, as siblings.
    let read = client.get(CART).await?;
    let GetResult::Siblings { values, context } = &read else {
        return Err(format!("expected two siblings, read {read:?}").into());
    };
    let mut siblings: Vec<Cart> = values.iter().map(decode).collect();
    siblings.sort();
    println!(
        "read: {} siblings: {}",
        siblings.len(),
        siblings.iter().map(show).collect::<Vec<_>>().join(" ")
    );
    expect(siblings.len() == 2, "two siblings", &read)?;

    // The application's merge: the union of every sibling, written with the read's context.
    let merged: Cart = siblings.into_iter().flatten().collect();
    client.put(CART, encode(&merged), Some(context)).await?;
    println!(
        "the application merges them (union) and writes {} with the read's context",
        show(&merged)
    );
    let read = client.get(CART).await?;
    let cart = one_cart(&read)?;
    println!("read: one cart: {}", show(&cart));
    expect(cart == merged, "the merged cart", &read)?;

    // A delete and an add, both from the same read: the add must survive.
    let seen = read.context().clone();
    client.delete(CART, Some(&seen)).await?;
    println!("carol empties the cart (a delete with the context of her read)");
    let mut with_bread = cart.clone();
    with_bread.insert("bread".into());
    client.put(CART, encode(&with_bread), Some(&seen)).await?;
    println!(
        "dave, from the same read, concurrently adds bread: writes {}",
        show(&with_bread)
    );
    let read = client.get(CART).await?;
    let cart = one_cart(&read)?;
    println!(
        "read: one cart: {} (the add survived the concurrent delete)",
        show(&cart)
    );
    expect(cart == with_bread, "the add to survive the delete", &read)?;

    // A delete that has seen everything does empty the cart.
    client.delete(CART, Some(read.context())).await?;
    let read = client.get(CART).await?;
    expect(
        matches!(read, GetResult::NotFound { .. }),
        "no cart after a delete that saw everything",
        &read,
    )?;
    println!("a delete whose context has seen every version empties the cart: not found");
    Ok(())
}

/// A shopper adds `item` to the cart they read (with that read's context).
async fn add(
    client: &NodeClient,
    who: &str,
    item: &str,
    mut cart: Cart,
    context: &Context,
) -> Result<(), Box<dyn Error>> {
    cart.insert(item.to_string());
    client.put(CART, encode(&cart), Some(context)).await?;
    println!("{who} adds {item}: writes {}", show(&cart));
    Ok(())
}

/// The single cart of a read, or an error if the read is not one value.
fn one_cart(read: &GetResult) -> Result<Cart, Box<dyn Error>> {
    match read {
        GetResult::Value { value, .. } => Ok(decode(value)),
        other => Err(format!("expected one cart, read {other:?}").into()),
    }
}

fn expect(ok: bool, what: &str, read: &GetResult) -> Result<(), Box<dyn Error>> {
    if ok {
        Ok(())
    } else {
        Err(format!("expected {what}, read {read:?}").into())
    }
}

fn encode(cart: &Cart) -> Bytes {
    Bytes::from(cart.iter().cloned().collect::<Vec<_>>().join(","))
}

fn decode(value: &Bytes) -> Cart {
    String::from_utf8_lossy(value)
        .split(',')
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

fn show(cart: &Cart) -> String {
    format!("[{}]", cart.iter().cloned().collect::<Vec<_>>().join(", "))
}
