//! End to end: real node processes through `TestCluster`, the client subcommands against them,
//! and the `cluster` subcommand as a black box.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dynamo_node::core::membership::Status;
use dynamo_node::http::HttpClient;
use dynamo_node::testing::{TestCluster, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::{children_of, is_gone, start_cluster_command};

fn dynamo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dynamo-node"))
        .args(args)
        .env_remove("DYNAMO_NODE")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The token of the `context: ...` line.
fn context_of(out: &Output) -> String {
    stdout(out)
        .lines()
        .find_map(|l| l.strip_prefix("context: "))
        .unwrap_or_else(|| panic!("no context line in {:?}", stdout(out)))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_answer_health_and_each_lists_three_alive_members() {
    let cluster = TestCluster::start(3).await;
    assert_eq!(cluster.len(), 3);
    for i in 1..=3 {
        assert_eq!(cluster.name(i), format!("n{i}"));
        // Each node on its own loopback address, ending in i + 1.
        let ip = match cluster.http_addr(i).ip() {
            std::net::IpAddr::V4(ip) => ip,
            other => panic!("not IPv4: {other}"),
        };
        assert!(
            ip.is_loopback() && usize::from(ip.octets()[3]) == i + 1,
            "{ip}"
        );
        let health = cluster.client(i).health().await.unwrap();
        assert_eq!(health.node, cluster.name(i));
        assert_eq!((health.alive, health.members), (3, 3));
        let members = cluster.client(i).members().await.unwrap();
        let mut names: Vec<&str> = members.iter().map(|m| m.node.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["n1", "n2", "n3"]);
        assert!(
            members.iter().all(|m| m.status == Status::Alive),
            "{members:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_subcommands_put_get_delete_and_status() {
    let cluster = TestCluster::start(3).await;
    let (n1, n2) = (cluster.url(1), cluster.url(2));

    let put = dynamo(&["put", "cart", "milk", "--node", &n1]);
    assert_eq!(put.status.code(), Some(0), "{put:?}");
    let ctx = context_of(&put);

    let get = dynamo(&["get", "cart", "--node", &n2]);
    assert_eq!(get.status.code(), Some(0), "{get:?}");
    assert!(
        stdout(&get).starts_with("milk\ncontext: "),
        "{}",
        stdout(&get)
    );

    // A blind write makes a sibling; a write with the context of both replaces them.
    let blind = dynamo(&["put", "cart", "bread", "--node", &n2]);
    assert_eq!(blind.status.code(), Some(0));
    let both = dynamo(&["get", "cart", "--node", &n1]);
    let text = stdout(&both);
    assert!(text.starts_with("2 siblings:\n"), "{text}");
    assert!(
        text.contains("] milk\n") && text.contains("] bread\n"),
        "{text}"
    );
    let merged = dynamo(&[
        "put",
        "cart",
        "milk,bread",
        "--context",
        &context_of(&both),
        "--node",
        &n1,
    ]);
    assert_eq!(merged.status.code(), Some(0));
    assert!(
        stdout(&dynamo(&["get", "cart", "--node", &n2])).starts_with("milk,bread\n"),
        "the context replaced both siblings"
    );
    assert_ne!(ctx, context_of(&merged));

    let current = context_of(&dynamo(&["get", "cart", "--node", &n1]));
    let del = dynamo(&["delete", "cart", "--context", &current, "--node", &n2]);
    assert_eq!(del.status.code(), Some(0), "{del:?}");
    assert_eq!(stdout(&del), "deleted\n");
    let gone = dynamo(&["get", "cart", "--node", &n1]);
    assert_eq!(gone.status.code(), Some(3), "not found exits 3: {gone:?}");
    assert!(stdout(&gone).starts_with("not found\n"));

    let never = dynamo(&["get", "never-written", "--node", &n1]);
    assert_eq!(
        (never.status.code(), stdout(&never).as_str()),
        (Some(3), "not found\n")
    );

    // The environment names the node when --node is not given.
    let via_env = Command::new(env!("CARGO_BIN_EXE_dynamo-node"))
        .args(["put", "env-key", "x"])
        .env("DYNAMO_NODE", &n1)
        .output()
        .unwrap();
    assert_eq!(via_env.status.code(), Some(0), "{via_env:?}");

    let status = dynamo(&["status", "--node", &n1]);
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    let text = stdout(&status);
    assert!(text.starts_with("node n1 at "), "{text}");
    assert!(text.contains("3 of 3 members alive"), "{text}");
    for name in ["n1", "n2", "n3"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains("alive")),
            "{name}: {text}"
        );
    }
    assert!(text.contains("NODE  VNODES  PRIMARY  REPLICA"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarts_with_a_new_life_and_rejoins() {
    let mut cluster = TestCluster::start(3).await;
    let before = cluster.client(1).members().await.unwrap();
    let old = before.iter().find(|m| m.node == "n1").unwrap().incarnation;
    cluster.kill(1);
    assert!(!cluster.status(1).is_alive());
    // n1 comes back seeded with n2 and n3, and everyone sees its new incarnation alive.
    cluster.restart(1).await;
    for i in 1..=3 {
        let members = cluster.client(i).members().await.unwrap();
        let n1 = members.iter().find(|m| m.node == "n1").unwrap();
        assert!(n1.incarnation > old, "{i}: {n1:?}");
        assert_eq!(n1.status, Status::Alive);
    }
    let ctx = cluster
        .client(2)
        .put(b"after", "restart".into(), None, None)
        .await;
    assert!(ctx.is_ok(), "{ctx:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_becomes_suspect_and_alive_again_after_resume() {
    let mut cluster = TestCluster::builder()
        .nodes(3)
        .node_args(["--suspect-after-ms", "1000", "--dead-after-ms", "60000"])
        .start()
        .await;
    cluster.pause(3);
    let n1 = cluster.client(1);
    wait_until(
        Duration::from_secs(20),
        "n1 sees the paused n3 suspect",
        || async {
            n1.members().await.is_ok_and(|ms| {
                ms.iter()
                    .any(|m| m.node == "n3" && m.status == Status::Suspect)
            })
        },
    )
    .await;
    cluster.resume(3);
    cluster.wait_converged().await;
}

fn node_pid(cluster: u32, name: &str) -> Option<u32> {
    children_of(cluster).into_iter().find(|&p| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .is_ok_and(|c| c.contains(&format!("--name {name} ")))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_subcommand_prints_addresses_restarts_crashes_and_stops_on_sigint() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dynamo-node"));
    cmd.args(["cluster", "--nodes", "3", "--gossip-interval-ms", "200"]);
    let (mut guard, pid, lines, urls) = start_cluster_command(cmd, Duration::from_secs(90)).await;
    assert_eq!(urls.len(), 3, "{lines:?}");
    for url in &urls {
        let health = HttpClient::new(url.clone()).health().await.unwrap();
        assert_eq!((health.alive, health.members), (3, 3));
    }

    // Crash n2: the cluster restarts it on the same address and it rejoins.
    let n2 = node_pid(pid, "n2").expect("n2 runs under the cluster");
    kill(Pid::from_raw(n2 as i32), Signal::SIGKILL).unwrap();
    let n2_client = HttpClient::new(urls[1].clone());
    wait_until(
        Duration::from_secs(60),
        "the restarted n2 sees 3 alive",
        || async {
            node_pid(pid, "n2").is_some_and(|p| p != n2)
                && n2_client.health().await.is_ok_and(|h| h.alive == 3)
        },
    )
    .await;

    let nodes = children_of(pid);
    kill(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "cluster did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
    for node in nodes {
        wait_until(Duration::from_secs(5), "the nodes are gone", || async {
            is_gone(node)
        })
        .await;
    }
}
