//! A node embedded in your own program: started as a child of your own ractor supervisor,
//! used through the Rust API, joined to other nodes.
//!
//! ```text
//! cargo build && cargo run --example embedded
//!     starts two `dynamo-node` processes (n1, n2; N = 2, W = 2, R = 1) and joins them
//! cargo run --example embedded -- --seed 127.0.0.2:7001 [--seed IP:PORT]... [--bind IP:PORT]
//!     joins nodes you started yourself (give --n/--w/--r if they do not run the defaults)
//! ```
//!
//! `RUST_LOG=dynamo_node::node=debug` also prints one `kv_request` span per request: the key's
//! hash, the coordinator, the replicas contacted, the acks or replies, the outcome.

use std::collections::BTreeMap;
use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use clap::Parser;
use dynamo_node::config::NodeConfig;
use dynamo_node::core::membership::Status;
use dynamo_node::http::HttpClient;
use dynamo_node::model::{GetResult, KvService, MemberInfo};
use dynamo_node::node::{Node, NodeClient, names};
use dynamo_node::process::{LocalCluster, LoopbackNet, pick_free_port};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::mpsc;

/// Name of the node this program embeds.
const NAME: &str = "embedded";
/// Keys written to show where replicas land.
const KEYS: usize = 6;
/// How long the nodes may take to see each other.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);
/// How long the supervisor may take to hear that its child stopped.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Gossip interval of every node here: joins in about a second instead of several.
const GOSSIP_INTERVAL_MS: u64 = 200;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "A dynamo-node embedded under your own supervisor, joined to other nodes")]
struct Args {
    /// Cluster address of a node to join (repeatable); none: start two node processes.
    #[arg(long = "seed", value_name = "IP:PORT")]
    seeds: Vec<SocketAddr>,
    /// Cluster address of the embedded node (default: a free port on a loopback address).
    #[arg(long, value_name = "IP:PORT")]
    bind: Option<SocketAddr>,
    /// Replicas per key (must match the other nodes).
    #[arg(long)]
    n: Option<usize>,
    /// Write quorum.
    #[arg(long)]
    w: Option<usize>,
    /// Read quorum.
    #[arg(long)]
    r: Option<usize>,
}

/// The user's own supervisor: it does not restart the node, it reports what happens to it.
struct AppSupervisor;

/// The supervisor takes no messages of its own; it only hears supervision events.
#[derive(RactorMessage)]
enum AppMsg {}

impl Actor for AppSupervisor {
    type Msg = AppMsg;
    type State = mpsc::UnboundedSender<String>;
    type Arguments = mpsc::UnboundedSender<String>;

    async fn pre_start(
        &self,
        _: ActorRef<AppMsg>,
        events: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(events)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<AppMsg>,
        event: SupervisionEvent,
        events: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let line = match event {
            SupervisionEvent::ActorStarted(who) => format!("{} started", name_of(&who)),
            SupervisionEvent::ActorTerminated(who, _, reason) => format!(
                "{} terminated ({})",
                name_of(&who),
                reason.as_deref().unwrap_or("stopped")
            ),
            // A node whose own supervisor gave up: an application would alert or restart here.
            SupervisionEvent::ActorFailed(who, error) => {
                format!("{} failed: {error}", name_of(&who))
            }
            _ => return Ok(()),
        };
        // The receiver is gone only when main is finishing: nothing left to tell.
        let _ = events.send(line);
        Ok(())
    }
}

fn name_of(cell: &ractor::ActorCell) -> String {
    cell.get_name().unwrap_or_else(|| cell.get_id().to_string())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    init_tracing();

    // The other nodes: given, or two processes of our own on a loopback net of their own.
    let mut cluster = None;
    let (seeds, bind_ip, n, w, r) = if args.seeds.is_empty() {
        let (n, w, r) = (
            args.n.unwrap_or(2),
            args.w.unwrap_or(2),
            args.r.unwrap_or(1),
        );
        let net = LoopbackNet::unique();
        let started = LocalCluster::builder()
            .nodes(2)
            .loopback_net(net)
            .node_args(quorum_flags(n, w, r))
            .start()
            .await?;
        let specs = started.specs().to_vec();
        for spec in &specs {
            println!(
                "started node process {} (cluster {}, HTTP {})",
                spec.name, spec.cluster_addr, spec.http_addr
            );
        }
        cluster = Some(started);
        let seeds = specs.iter().map(|s| s.cluster_addr).collect();
        // Node 3's address in that net: a firewall rule could tell it apart from the others.
        (seeds, IpAddr::V4(net.node_ip(3)), n, w, r)
    } else {
        let defaults = NodeConfig::new(NAME, SocketAddr::from(([127, 0, 0, 1], 0))).quorum;
        let ip = args
            .bind
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |b| b.ip());
        let (n, w, r) = (
            args.n.unwrap_or(defaults.n),
            args.w.unwrap_or(defaults.w),
            args.r.unwrap_or(defaults.r),
        );
        (args.seeds.clone(), ip, n, w, r)
    };
    // Peers dial the address we advertise, so it needs a real port, not 0.
    let bind = match args.bind {
        Some(bind) if bind.port() != 0 => bind,
        _ => match bind_ip {
            IpAddr::V4(ip) => SocketAddr::new(bind_ip, pick_free_port(ip)?),
            IpAddr::V6(_) => return Err("--bind needs a port when its address is IPv6".into()),
        },
    };

    // Our own supervisor, and the node as its child.
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (supervisor, supervisor_task) = Actor::spawn(None, AppSupervisor, events_tx).await?;
    let mut config = NodeConfig::new(NAME, bind);
    config.seeds = seeds.iter().map(SocketAddr::to_string).collect();
    (config.quorum.n, config.quorum.w, config.quorum.r) = (n, w, r);
    config.gossip.interval_ms = GOSSIP_INTERVAL_MS;
    let node = Node::start_linked(config, supervisor.get_cell()).await?;
    let client = node.client();
    println!(
        "embedded node {NAME} started on {bind} under the application's supervisor (N = {n}, W = {w}, R = {r})"
    );
    if let Some(event) = next_event(&mut events, Duration::from_secs(1)).await {
        println!("supervisor: {event}");
    }

    let started = Instant::now();
    let peers = wait_joined(&client, seeds.len()).await?;
    let names: Vec<&str> = peers.iter().map(|p| p.node.as_str()).collect();
    println!(
        "joined: {NAME} sees {} alive, and they see it (after {:.1} s)",
        names.join(", "),
        started.elapsed().as_secs_f64()
    );

    // Writes through the Rust API; each key's replicas land where the ring says.
    let keys: Vec<String> = (1..=KEYS).map(|i| format!("user:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        client
            .put(key.clone(), format!("profile {}", i + 1), None)
            .await?;
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut elsewhere = 0;
    for key in &keys {
        let holders = holders_of(&client, &peers, key).await?;
        if holders.len() < w {
            return Err(format!("{key} is on {holders:?}, fewer than W = {w} nodes").into());
        }
        if holders.iter().any(|h| h != NAME) {
            elsewhere += 1;
        }
        for holder in &holders {
            *per_node.entry(holder.clone()).or_default() += 1;
        }
        println!("put {key:<7} -> stored on {}", holders.join(", "));
    }
    if elsewhere == 0 {
        return Err("no write reached another node".into());
    }
    let spread: Vec<String> = per_node.iter().map(|(n, k)| format!("{n} {k}")).collect();
    println!(
        "{elsewhere} of {KEYS} keys have a replica on another node; keys per node: {}",
        spread.join(", ")
    );

    // Reads: through the Rust API, and through another node's HTTP API.
    let mut read_back = 0;
    for (i, key) in keys.iter().enumerate() {
        match client.get(key.clone()).await? {
            GetResult::Value { value, .. } if value == format!("profile {}", i + 1) => {
                read_back += 1;
            }
            other => return Err(format!("{key}: read {other:?}").into()),
        }
    }
    println!("read back {read_back} of {KEYS} keys through the Rust API");
    if let Some(peer) = peers.first() {
        let http = HttpClient::with_timeout(&peer.http_addr, Duration::from_secs(10));
        let got = http.get(keys[0].as_bytes(), None).await?;
        let values: Vec<String> = got
            .values()
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        println!(
            "read {} through {}'s HTTP API: {}",
            keys[0],
            peer.node,
            values.join(" | ")
        );
    }

    // Stop: the node (its supervisor hears it), then our supervisor, then the processes.
    let root = names::root(node.name());
    node.stop().await;
    let deadline = Instant::now() + STOP_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(&mut events, left).await {
            Some(event) => {
                println!("supervisor: {event}");
                if event.starts_with(&format!("{root} terminated")) {
                    break;
                }
            }
            None => return Err("the supervisor never heard that the node stopped".into()),
        }
    }
    supervisor.stop(None);
    supervisor_task.await?;
    if let Some(mut cluster) = cluster {
        cluster.stop_all().await?;
        println!("stopped the node processes");
    }
    println!("done");
    Ok(())
}

/// Logs to stderr, `warn` unless `RUST_LOG` says otherwise; request spans are printed when
/// they close, with every field they recorded.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .init();
}

fn quorum_flags(n: usize, w: usize, r: usize) -> Vec<String> {
    let mut flags = Vec::new();
    for (flag, value) in [("--n", n), ("--w", w), ("--r", r)] {
        flags.push(flag.to_string());
        flags.push(value.to_string());
    }
    flags.push("--gossip-interval-ms".into());
    flags.push(GOSSIP_INTERVAL_MS.to_string());
    flags
}

async fn next_event(
    events: &mut mpsc::UnboundedReceiver<String>,
    wait: Duration,
) -> Option<String> {
    tokio::time::timeout(wait, events.recv())
        .await
        .ok()
        .flatten()
}

/// Waits until this node sees at least `expected` peers alive, connected and on its ring, and
/// each of them sees this node alive and on its ring; returns those peers.
async fn wait_joined(
    client: &NodeClient,
    expected: usize,
) -> Result<Vec<MemberInfo>, Box<dyn Error>> {
    let deadline = Instant::now() + JOIN_DEADLINE;
    let mut gap = String::from("nothing heard yet");
    while Instant::now() < deadline {
        match joined(client, expected).await {
            Ok(peers) => return Ok(peers),
            Err(why) => gap = why,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the nodes did not join within {JOIN_DEADLINE:?}: {gap}").into())
}

/// The peers if the join is complete both ways, else what is still missing.
async fn joined(client: &NodeClient, expected: usize) -> Result<Vec<MemberInfo>, String> {
    let on_ring: Vec<String> = client.ring().nodes.into_iter().map(|n| n.node).collect();
    let peers: Vec<MemberInfo> = client
        .members()
        .into_iter()
        .filter(|m| m.node != NAME && m.status == Status::Alive && m.connected)
        .filter(|m| on_ring.contains(&m.node))
        .collect();
    if peers.len() < expected {
        return Err(format!(
            "{NAME} sees {} of {expected} peers alive on its ring",
            peers.len()
        ));
    }
    for peer in &peers {
        let http = HttpClient::with_timeout(&peer.http_addr, Duration::from_secs(2));
        let members = http
            .members()
            .await
            .map_err(|e| format!("{}: {e}", peer.node))?;
        let ring = http
            .ring()
            .await
            .map_err(|e| format!("{}: {e}", peer.node))?;
        let sees_us = members
            .iter()
            .any(|m| m.node == NAME && m.status == Status::Alive && m.connected);
        if !sees_us || !ring.nodes.iter().any(|n| n.node == NAME) {
            return Err(format!(
                "{} does not see {NAME} alive on its ring yet",
                peer.node
            ));
        }
    }
    Ok(peers)
}

/// The nodes that store a live version of `key`, asking each one what it holds itself:
/// this node through the Rust API, the others through `GET /admin/local/{key}`.
async fn holders_of(
    client: &NodeClient,
    peers: &[MemberInfo],
    key: &str,
) -> Result<Vec<String>, Box<dyn Error>> {
    let mut holders = Vec::new();
    if client
        .local(key.as_bytes())
        .versions()
        .iter()
        .any(|v| v.value.is_some())
    {
        holders.push(NAME.to_string());
    }
    for peer in peers {
        let http = HttpClient::with_timeout(&peer.http_addr, Duration::from_secs(10));
        let local = http.local(key.as_bytes()).await?;
        if local.iter().any(|v| !v.is_tombstone()) {
            holders.push(peer.node.clone());
        }
    }
    holders.sort();
    Ok(holders)
}
