//! Sessions against stand-in nodes: the real HTTP router over a one-replica store shared by
//! every stand-in, so that reads, writes and contexts behave as in a cluster with R = W = 1.

use bytes::Bytes;
use std::sync::{Arc, Mutex};

use super::*;
use crate::config::{ConfigUpdate, QuorumConfig};
use crate::core::ids::Key;
use crate::core::membership::{HandoffProgress, RingStatus, Status};
use crate::core::quorum::Shortfall;
use crate::core::version::VersionSet;
use crate::model::{
    ClientError, Context, GetResult, Health, KvService, MemberInfo, ReadOptions, RingInfo,
    RingNodeInfo, WriteOptions,
};
use crate::testing::LoneReplica;

/// What every stand-in shares: the data, the member list, and a log of the writes.
#[derive(Default)]
struct World {
    members: Vec<MemberInfo>,
    /// (node, op, key, context token sent) of every write.
    writes: Vec<(String, &'static str, String, String)>,
    configs: Vec<(String, ConfigUpdate)>,
    /// Member lists left to serve before n1 turns suspect, if it is to.
    suspect_in: Option<usize>,
    /// Member lists left to serve before the leaving members have left.
    left_in: usize,
    /// The stand-ins asked to leave, in order.
    leaves: Vec<String>,
    /// Whether the stand-ins answer /health with 503 (as a node that left does).
    unavailable: bool,
}

#[derive(Clone)]
struct StandIn {
    name: String,
    replica: LoneReplica,
    world: Arc<Mutex<World>>,
}

impl StandIn {
    fn write(
        &self,
        op: &'static str,
        key: Key,
        value: Option<Bytes>,
        context: Option<Context>,
    ) -> Result<Context, ClientError> {
        if key.as_ref() == b"fail" {
            return Err(ClientError::InsufficientAcks(Shortfall {
                required: 2,
                succeeded: 1,
                failed: 0,
                timed_out: 1,
                targets: 3,
            }));
        }
        self.world.lock().unwrap().writes.push((
            self.name.clone(),
            op,
            String::from_utf8_lossy(&key).into(),
            context.clone().unwrap_or_default().encode(),
        ));
        self.replica.write(&key, value, context)
    }
}

impl KvService for StandIn {
    async fn get(&self, key: Key, _: ReadOptions) -> Result<GetResult, ClientError> {
        Ok(self.replica.get(&key))
    }

    async fn put(
        &self,
        key: Key,
        value: Bytes,
        context: Option<Context>,
        _: WriteOptions,
    ) -> Result<Context, ClientError> {
        self.write("put", key, Some(value), context)
    }

    async fn delete(
        &self,
        key: Key,
        context: Option<Context>,
        _: WriteOptions,
    ) -> Result<(), ClientError> {
        self.write("delete", key, None, context).map(drop)
    }

    fn node_name(&self) -> String {
        self.name.clone()
    }

    fn members(&self) -> Vec<MemberInfo> {
        let mut world = self.world.lock().unwrap();
        match world.suspect_in {
            Some(0) => world.members[0].status = Status::Suspect,
            Some(n) => world.suspect_in = Some(n - 1),
            None => {}
        }
        // A leaving member hands a key per member list, and has left once the count is down.
        if world.left_in == 0 {
            for m in &mut world.members {
                if m.ring == RingStatus::Leaving {
                    m.ring = RingStatus::Left;
                }
            }
        } else {
            world.left_in -= 1;
            for m in &mut world.members {
                if m.ring == RingStatus::Leaving {
                    m.handoff.handed += 1;
                    m.handoff.remaining = m.handoff.remaining.saturating_sub(1);
                }
            }
        }
        world.members.clone()
    }

    fn ring(&self) -> RingInfo {
        let members = self.members();
        RingInfo {
            version: 1,
            n: 3,
            nodes: members
                .iter()
                .map(|m| RingNodeInfo {
                    node: m.node.clone(),
                    vnodes: 8,
                    primary_share: 1.0 / members.len() as f64,
                    replica_share: 1.0,
                    // Each stand-in knows only its own count, as a real node does.
                    keys: (m.node == self.name).then_some(self.name.len()),
                })
                .collect(),
        }
    }

    fn local(&self, _: &[u8]) -> VersionSet {
        VersionSet::default()
    }

    fn update_config(&self, update: ConfigUpdate) -> Result<QuorumConfig, ClientError> {
        self.world
            .lock()
            .unwrap()
            .configs
            .push((self.name.clone(), update.clone()));
        Ok(QuorumConfig::default().apply(&update)?)
    }

    fn config(&self) -> QuorumConfig {
        QuorumConfig::default()
    }

    fn metrics(&self) -> String {
        String::new()
    }

    fn health(&self) -> Health {
        let unavailable = self.world.lock().unwrap().unavailable;
        Health {
            status: if unavailable { "unavailable" } else { "ok" }.into(),
            reason: unavailable.then(|| "this node is left".to_string()),
            node: self.name.clone(),
            alive: 3,
            members: 3,
        }
    }

    fn leave(&self) -> Result<MemberInfo, ClientError> {
        let mut world = self.world.lock().unwrap();
        world.leaves.push(self.name.clone());
        let remaining = world.left_in as u64;
        let me = world
            .members
            .iter_mut()
            .find(|m| m.node == self.name)
            .expect("every stand-in is a member");
        if me.ring < RingStatus::Leaving {
            me.ring = RingStatus::Leaving;
            me.handoff = HandoffProgress {
                handed: 0,
                remaining,
            };
        }
        Ok(me.clone())
    }

    fn remove(&self, node: &str) -> Result<MemberInfo, ClientError> {
        if node == self.name {
            return Err(ClientError::Conflict(format!(
                "{node} is this node: a node leaves, it does not remove itself"
            )));
        }
        let mut world = self.world.lock().unwrap();
        match world.members.iter_mut().find(|m| m.node == node) {
            None => Err(ClientError::UnknownMember(format!(
                "no member named {node} is known"
            ))),
            Some(m) if m.status == Status::Alive => {
                Err(ClientError::MemberAlive(format!("{node} is alive")))
            }
            Some(m) => {
                m.ring = RingStatus::Removed;
                Ok(m.clone())
            }
        }
    }
}

/// Three stand-ins n1..n3 on 127.0.0.1, and an attached session on them.
async fn three() -> (Session, Arc<Mutex<World>>) {
    stand_ins(3, 3).await
}

/// `members` stand-ins n1.. on 127.0.0.1, every one a member, and a session attached to the
/// first `attached` of them.
async fn stand_ins(members: usize, attached: usize) -> (Session, Arc<Mutex<World>>) {
    let replica = LoneReplica::new("n1");
    let world = Arc::new(Mutex::new(World::default()));
    let mut nodes = Vec::new();
    for i in 1..=members {
        let name = format!("n{i}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = StandIn {
            name: name.clone(),
            replica: replica.clone(),
            world: world.clone(),
        };
        tokio::spawn(crate::http::serve(
            listener,
            service,
            std::future::pending(),
        ));
        world.lock().unwrap().members.push(MemberInfo {
            node: name.clone(),
            cluster_addr: String::new(),
            http_addr: addr.to_string(),
            status: Status::Alive,
            heartbeat: 1,
            incarnation: 1,
            last_heard_ms_ago: 100,
            connected: true,
            ring: RingStatus::Valid,
            handoff: Default::default(),
        });
        nodes.push((name, format!("http://{addr}")));
    }
    nodes.truncate(attached);
    (Session::attached(nodes).unwrap(), world)
}

async fn ok(session: &mut Session, line: &str) -> String {
    match session.execute(line).await {
        Ok(Reply::Text(text)) => text,
        other => panic!("{line}: {other:?}"),
    }
}

async fn fails(session: &mut Session, line: &str) -> String {
    match session.execute(line).await {
        Err(e) => e.to_string(),
        other => panic!("{line} should fail: {other:?}"),
    }
}

#[tokio::test]
async fn the_cart_walk_through_merges_with_the_full_context_of_the_last_read() {
    let (mut s, world) = three().await;
    assert!(
        ok(&mut s, "put cart milk")
            .await
            .starts_with("ok  (context: ")
    );
    assert!(
        ok(&mut s, "@n2 get cart")
            .await
            .starts_with("milk  (context: ")
    );
    ok(&mut s, "@n3 put cart bread").await;
    let siblings = ok(&mut s, "get cart").await;
    assert!(siblings.starts_with("2 siblings  (context: "), "{siblings}");
    assert!(siblings.contains("  [1] milk\n") || siblings.contains("  [2] milk\n"));
    assert!(siblings.contains("] bread\n"), "{siblings}");
    let full = match client(&world, 0).get(b"cart", None).await.unwrap() {
        GetResult::Siblings { context, .. } => context.encode(),
        other => panic!("{other:?}"),
    };
    let merged = ok(&mut s, "merge cart milk,bread").await;
    assert!(
        merged.starts_with("ok, replaced 2 values  (context: "),
        "{merged}"
    );
    let merge = last_write(&world);
    assert_eq!((merge.0.as_str(), merge.1), ("n1", "put"));
    assert_eq!(
        merge.3, full,
        "merge sends the whole context, not the short one"
    );
    assert!(
        ok(&mut s, "get cart")
            .await
            .starts_with("milk,bread  (context: ")
    );
    assert_eq!(ok(&mut s, "delete cart").await, "deleted 1 value\n");
    assert!(
        !last_write(&world).3.is_empty(),
        "delete carries the read's context"
    );
    assert!(
        ok(&mut s, "get cart")
            .await
            .starts_with("not found  (deleted; context: ")
    );
    assert_eq!(
        ok(&mut s, "delete cart").await,
        "not found: nothing to delete\n"
    );
}

fn client(world: &Arc<Mutex<World>>, i: usize) -> crate::http::HttpClient {
    crate::http::HttpClient::new(world.lock().unwrap().members[i].http_addr.clone())
}

fn last_write(world: &Arc<Mutex<World>>) -> (String, &'static str, String, String) {
    world.lock().unwrap().writes.last().cloned().unwrap()
}

#[tokio::test]
async fn a_delete_without_a_read_reads_first_and_a_merge_without_one_refuses() {
    let (mut s, world) = three().await;
    ok(&mut s, "put k v").await;
    assert_eq!(
        fails(&mut s, "merge k w").await,
        "merge writes with the context of your last read of the key: `get k` first"
    );
    assert_eq!(ok(&mut s, "@n3 delete k").await, "deleted 1 value\n");
    let delete = last_write(&world);
    assert_eq!((delete.0.as_str(), delete.1), ("n3", "delete"));
    assert!(!delete.3.is_empty(), "the delete covers what it read");
    let read = ok(&mut s, "get k").await;
    assert!(read.starts_with("not found  (deleted; context: "), "{read}");
}

#[tokio::test]
async fn targets_switch_by_prefix_or_use_and_unknown_nodes_are_named() {
    let (mut s, world) = three().await;
    assert_eq!(s.current(), "n1");
    ok(&mut s, "@2 put a 1").await;
    assert_eq!(last_write(&world).0, "n2", "nodes can be numbered");
    let used = ok(&mut s, "use n3").await;
    assert!(
        used.starts_with("commands now go to n3 (http://127.0.0.1:"),
        "{used}"
    );
    ok(&mut s, "put b 2").await;
    assert_eq!(last_write(&world).0, "n3");
    assert_eq!(s.current(), "n3");
    assert!(s.nodes_table().contains("n3 *"));
    assert_eq!(
        fails(&mut s, "@n9 get a").await,
        "no node `n9` (nodes: n1, n2, n3)"
    );
    assert_eq!(
        fails(&mut s, "use x").await,
        "no node `x` (nodes: n1, n2, n3)"
    );
}

#[tokio::test]
async fn a_failed_request_shows_the_node_the_kind_and_the_message() {
    let (mut s, _) = three().await;
    let e = fails(&mut s, "@n2 put fail x").await;
    assert!(
        e.starts_with("n2: HTTP 503 insufficient_acks: insufficient acks"),
        "{e}"
    );
    // The session goes on.
    ok(&mut s, "put fine x").await;
}

#[tokio::test]
async fn config_goes_to_every_node_unless_one_is_named() {
    let (mut s, world) = three().await;
    let shown = ok(&mut s, "config").await;
    assert_eq!(shown.lines().count(), 3);
    assert!(shown.starts_with("n1: n=3 w=2 r=2"), "{shown}");
    let set = ok(&mut s, "config w=1 r=1").await;
    assert!(set.contains("n2: n=3 w=1 r=1"), "{set}");
    assert_eq!(world.lock().unwrap().configs.len(), 3);
    ok(&mut s, "@n3 config w=3").await;
    let configs = world.lock().unwrap().configs.clone();
    assert_eq!(configs.len(), 4);
    assert_eq!(configs[3].0, "n3");
    assert!(
        fails(&mut s, "config n=5")
            .await
            .contains("n is the cluster's"),
        "refused before any node is asked"
    );
    assert_eq!(world.lock().unwrap().configs.len(), 4);
    let e = fails(&mut s, "config w=9").await;
    assert_eq!(e.lines().count(), 3, "one line per node: {e}");
    assert!(e.starts_with("n1: error: HTTP 400 invalid_option"), "{e}");
}

#[tokio::test]
async fn views_list_members_and_the_ring_with_each_nodes_own_key_count() {
    let (mut s, _) = three().await;
    let members = ok(&mut s, "@n2 members").await;
    assert!(
        members.starts_with("members as n2 sees them:\n"),
        "{members}"
    );
    assert!(
        members.contains("\nn2    alive   valid  127.0.0.1:"),
        "{members}"
    );
    assert!(
        !members.contains("HANDOFF"),
        "nobody hands anything off: {members}"
    );
    assert!(members.contains("(self)"), "{members}");
    let ring = ok(&mut s, "ring").await;
    let rows: Vec<&str> = ring.lines().skip(2).collect();
    assert_eq!(rows.len(), 3, "{ring}");
    // Each stand-in counts name.len() = 2 keys of its own; the others' counts come from them.
    assert!(rows.iter().all(|r| r.ends_with("  2")), "{ring}");
}

#[tokio::test]
async fn leave_drains_the_current_or_a_named_node_and_wait_sees_it_left() {
    let (mut s, world) = three().await;
    world.lock().unwrap().left_in = 3;
    assert_eq!(
        ok(&mut s, "leave").await,
        "n1 is leaving: it hands its keys to the other members, then is `left` (`wait n1 left`) \
         and can be stopped  (handoff: 0 handed, 3 left)\n"
    );
    assert_eq!(world.lock().unwrap().leaves, ["n1"]);
    // While it hands its keys, the members table shows the ring status and the progress.
    let members = ok(&mut s, "@n2 members").await;
    assert!(
        members.contains("\nNODE  STATUS  RING     HTTP ADDRESS"),
        "{members}"
    );
    assert!(members.contains("  CONNECTED  HANDOFF\n"), "{members}");
    let n1 = members.lines().find(|l| l.starts_with("n1 ")).unwrap();
    assert!(
        n1.starts_with("n1    alive   leaving  127.0.0.1:"),
        "{members}"
    );
    assert!(n1.ends_with("  1 handed, 2 left"), "{members}");
    let n2 = members.lines().find(|l| l.starts_with("n2 ")).unwrap();
    assert!(n2.ends_with("  -"), "no handoff for n2: {members}");
    let e = fails(&mut s, "wait n1 left on n2 within 0").await;
    assert!(e.ends_with("n2 sees n1 leaving"), "{e}");
    let left = ok(&mut s, "wait n1 left within 20").await;
    assert!(left.starts_with("n2, n3 see n1 left (after "), "{left}");
    // Leaving again is no change: the node says it has left.
    assert!(
        ok(&mut s, "leave n1")
            .await
            .starts_with("n1 has left: its keys are with the other members"),
    );
    // By number, from any node: the request goes to the node that leaves.
    assert!(ok(&mut s, "@n3 leave 2").await.starts_with("n2 "));
    assert_eq!(world.lock().unwrap().leaves, ["n1", "n1", "n2"]);
}

#[tokio::test]
async fn leave_reaches_a_member_the_shell_does_not_know_through_its_http_address() {
    let (mut s, world) = stand_ins(4, 3).await;
    assert_eq!(s.node_names(), ["n1", "n2", "n3"]);
    assert!(ok(&mut s, "leave n4").await.starts_with("n4 is leaving: "));
    assert_eq!(world.lock().unwrap().leaves, ["n4"], "n4 itself was asked");
    assert_eq!(
        fails(&mut s, "@n2 leave n9").await,
        "no node `n9`: neither this shell nor n2 knows it (members: n1, n2, n3, n4)"
    );
    world.lock().unwrap().members[3].http_addr.clear();
    assert_eq!(
        fails(&mut s, "leave n4").await,
        "n1 knows no HTTP address of n4"
    );
    assert_eq!(world.lock().unwrap().leaves.len(), 1);
}

#[tokio::test]
async fn remove_is_refused_for_a_live_node_itself_or_a_stranger_and_done_for_a_dead_one() {
    let (mut s, world) = three().await;
    let alive = fails(&mut s, "remove n3").await;
    assert!(
        alive.starts_with(
            "n1 sees n3 alive, and a live node cannot be removed: drain it with `leave n3`"
        ),
        "{alive}"
    );
    assert!(alive.ends_with("(n3 is alive)"), "{alive}");
    let itself = fails(&mut s, "remove n1").await;
    assert!(itself.starts_with("n1: HTTP 409 conflict: "), "{itself}");
    let stranger = fails(&mut s, "@n2 remove ghost").await;
    assert_eq!(
        stranger,
        "n2: HTTP 404 unknown_member: no member named ghost is known"
    );
    assert!(
        world
            .lock()
            .unwrap()
            .members
            .iter()
            .all(|m| m.ring == RingStatus::Valid),
        "refusals change nothing"
    );
    world.lock().unwrap().members[2].status = Status::Dead;
    let e = fails(&mut s, "wait converged within 0").await;
    assert!(e.ends_with("sees n3 dead"), "{e}");
    assert_eq!(
        ok(&mut s, "remove 3").await,
        "n3 removed: it owns nothing now; the others take its ranges and rebuild its replicas\n"
    );
    assert_eq!(world.lock().unwrap().members[2].ring, RingStatus::Removed);
    let members = ok(&mut s, "members").await;
    let n3 = members.lines().find(|l| l.starts_with("n3 ")).unwrap();
    assert!(n3.starts_with("n3    dead    removed  "), "{members}");
    assert!(
        ok(&mut s, "wait n3 removed within 5")
            .await
            .starts_with("n1, n2 see n3 removed")
    );
    // A removed node is no longer expected to be alive: the rest has converged.
    assert!(
        ok(&mut s, "wait converged within 5")
            .await
            .starts_with("converged (after ")
    );
}

#[tokio::test]
async fn process_commands_need_the_local_cluster() {
    let (mut s, _) = three().await;
    for line in [
        "kill n1",
        "restart n1",
        "pause n1",
        "resume n1",
        "partition n1",
        "heal",
    ] {
        let e = fails(&mut s, line).await;
        assert!(
            e.contains("works on the local cluster the shell started"),
            "{line}: {e}"
        );
    }
    assert!(ok(&mut s, "help").await.contains("(local cluster only)"));
}

#[tokio::test]
async fn wait_polls_until_the_status_holds_or_names_the_gap_at_the_deadline() {
    let (mut s, world) = three().await;
    let seen = ok(&mut s, "wait n1 alive").await;
    assert!(seen.starts_with("n2, n3 see n1 alive (after "), "{seen}");
    let e = fails(&mut s, "wait n1 suspect on n2 within 300ms").await;
    assert!(e.starts_with("not within 0."), "{e}");
    assert!(e.ends_with("n2 sees n1 alive"), "{e}");
    // The status changes while the wait polls: after a few member lists.
    world.lock().unwrap().suspect_in = Some(3);
    let seen = ok(&mut s, "wait n1 suspect on 2 within 20").await;
    assert!(seen.starts_with("n2 sees n1 suspect (after "), "{seen}");
    let e = fails(&mut s, "wait converged within 0").await;
    assert!(e.ends_with("sees n1 suspect"), "{e}");
    {
        let mut w = world.lock().unwrap();
        (w.suspect_in, w.members[0].status) = (None, Status::Alive);
    }
    assert!(
        ok(&mut s, "wait converged")
            .await
            .starts_with("converged (after ")
    );
}

#[tokio::test]
async fn connect_attaches_to_every_member_with_the_entry_node_current() {
    let (_s, world) = three().await;
    let n2 = client(&world, 1).base_url().to_string();
    let attached = Session::connect(&n2).await.unwrap();
    assert_eq!(attached.node_names(), ["n1", "n2", "n3"]);
    assert_eq!(attached.current(), "n2");
    assert!(!attached.is_local());
    // A node that cannot serve (503 on /health) still names itself and lists the members.
    world.lock().unwrap().unavailable = true;
    let n3 = client(&world, 2).base_url().to_string();
    let through_left = Session::connect(&n3).await.unwrap();
    assert_eq!(through_left.current(), "n3");
    assert_eq!(through_left.node_names(), ["n1", "n2", "n3"]);
    let e = Session::connect("http://127.0.0.1:1").await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot attach to http://127.0.0.1:1: transport"),
        "{e}"
    );
}

#[tokio::test]
async fn blank_lines_print_nothing_and_quit_says_so() {
    let (mut s, _) = three().await;
    assert_eq!(s.execute("").await.unwrap(), Reply::Text(String::new()));
    assert_eq!(
        s.execute("# a comment").await.unwrap(),
        Reply::Text(String::new())
    );
    assert_eq!(s.execute("exit").await.unwrap(), Reply::Quit);
    assert!(
        fails(&mut s, "help frob")
            .await
            .contains("unknown command `frob`")
    );
    s.close().await.unwrap();
}
