//! A node embedded in an application, alone, with the default settings: write, read, stop.
//!
//! ```text
//! cargo run --example lone_node
//! ```

use dynamo_node::{GetResult, Node, NodeConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::start(NodeConfig::new("n1", "127.0.0.1:0".parse()?)).await?;
    let client = node.client();
    let user = String::from("alice");
    let context = client.put(&user, "milk", None).await?;
    client.put(&user, "milk, eggs", Some(&context)).await?;
    match client.get(user.as_str()).await? {
        GetResult::Value { value, .. } => println!("alice: {}", String::from_utf8_lossy(&value)),
        other => println!("alice: unexpected {other:?}"),
    }
    node.stop().await;
    Ok(())
}
