//! `dynamo-node demo` (hidden): a walk-through of the pure core in one process: placement on
//! the ring, then the seed's cart scenario on one replica.

use crate::core::ids::{ActorId, NodeId};
use crate::core::ring::Ring;
use crate::core::store::{Store, StoreError};
use crate::core::vclock::VClock;
use bytes::Bytes;

fn show(store: &Store, key: &Bytes) -> VClock {
    let view = store.get(key).read();
    let values: Vec<String> = view
        .values
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    println!("  get {:<12} -> {:?}", String::from_utf8_lossy(key), values);
    view.context
}

/// Prints the walk-through.
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let nodes: Vec<NodeId> = ["n1", "n2", "n3", "n4", "n5"].map(NodeId::new).into();
    let ring = Ring::with_default_vnodes(nodes)?;
    println!(
        "ring of {} nodes, {} tokens",
        ring.len(),
        ring.token_count()
    );
    for key in ["cart:alice", "cart:bob", "user:42"] {
        let list: Vec<&str> = ring
            .preference_list(key.as_bytes())?
            .map(|n| n.as_str())
            .collect();
        println!(
            "  preference list of {key:<10} -> owners {:?}, fallbacks {:?}",
            &list[..3],
            &list[3..]
        );
    }

    println!("\nthe seed's walk-through on one replica (W = R = 1):");
    let replica = Store::new(ActorId::new("n1", 1));
    let cart = Bytes::from_static(b"cart:alice");
    let put = |ctx: &VClock, v: &'static str| -> Result<(), StoreError> {
        println!(
            "  put {:<12} <- {v:?}{}",
            "cart:alice",
            if ctx.is_empty() { " (blind)" } else { "" }
        );
        replica
            .coordinate(&cart, ctx, Some(Bytes::from_static(v.as_bytes())), 0)
            .map(|_| ())
    };
    put(&VClock::new(), "milk")?;
    let ctx = show(&replica, &cart);
    put(&ctx, "milk,eggs")?;
    show(&replica, &cart);
    put(&VClock::new(), "bread")?;
    let ctx = show(&replica, &cart);
    println!("  (two siblings: a blind write never erases a value it did not see)");
    put(&ctx, "milk,eggs,bread")?;
    show(&replica, &cart);
    Ok(())
}
