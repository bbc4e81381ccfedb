//! Failure detection on a hand-driven clock, the merge rules of liveness and ring status (our
//! own entry included), leave, remove and join; and properties over random exchanges: merging
//! is idempotent and order-free, versions never go backwards, detection moves one step at a
//! time.

use super::*;
use proptest::prelude::*;

fn n(name: &str) -> NodeId {
    NodeId::new(name)
}

/// The entry of an alive, valid `node` as its own gossip carries it.
pub(crate) fn entry(node: &str, incarnation: u64, heartbeat: u64) -> MemberDigest {
    MemberDigest {
        node: n(node),
        cluster_addr: format!("{node}:7001"),
        http_addr: format!("{node}:8001"),
        vnodes: 128,
        status: Status::Alive,
        heartbeat,
        incarnation,
        ring: RingStatus::Valid,
        n: DEFAULT_N,
        handoff: HandoffProgress::default(),
    }
}

/// `n1` (incarnation 1) with default timeouts, at time 0.
fn table() -> Membership {
    table_of("n1", 1, FailureTimeouts::default())
}

/// The table of `node` at `incarnation`, at time 0, with the addresses `entry` gives it.
fn table_of(node: &str, incarnation: u64, timeouts: FailureTimeouts) -> Membership {
    Membership::new(
        n(node),
        format!("{node}:7001"),
        format!("{node}:8001"),
        128,
        incarnation,
        timeouts,
        0,
    )
    .unwrap()
}

/// The status of `node` in `m`, if `m` ever heard of it.
fn status_of(m: &Membership, node: &NodeId) -> Option<Status> {
    m.get(node).map(|member| member.status)
}

/// The nodes on `m`'s ring, in name order.
fn ring_members(m: &Membership) -> Vec<NodeId> {
    m.ring_layout().into_iter().map(|(node, _)| node).collect()
}

/// `table()` that heard `n2` (incarnation 1, heartbeat 5) at time 0.
fn table_with_n2() -> Membership {
    let mut m = table();
    m.merge(&[entry("n2", 1, 5)], 0);
    m
}

fn change(node: &str, from: Status, to: Status) -> StatusChange {
    StatusChange {
        node: n(node),
        from,
        to,
    }
}

#[test]
fn suspect_only_strictly_after_the_timeout() {
    let mut m = table_with_n2();
    assert!(m.detect(5_000).is_empty());
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Alive));
    assert_eq!(
        m.detect(5_001),
        vec![change("n2", Status::Alive, Status::Suspect)]
    );
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Suspect));
}

#[test]
fn dead_only_strictly_after_the_timeout() {
    let mut m = table_with_n2();
    m.detect(5_001);
    assert!(m.detect(30_000).is_empty());
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Suspect));
    assert_eq!(
        m.detect(30_001),
        vec![change("n2", Status::Suspect, Status::Dead)]
    );
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Dead));
    assert!(m.detect(1_000_000).is_empty());
}

#[test]
fn one_step_per_detect() {
    let mut m = table_with_n2();
    assert_eq!(
        m.detect(40_000),
        vec![change("n2", Status::Alive, Status::Suspect)]
    );
    assert_eq!(
        m.detect(40_000),
        vec![change("n2", Status::Suspect, Status::Dead)]
    );
    assert!(m.detect(40_000).is_empty());
}

#[test]
fn own_node_is_always_alive() {
    let mut m = table_with_n2();
    // Never ticked: our own silence is huge, yet we never judge ourselves.
    for now in [10_000, 50_000, 1_000_000] {
        assert!(m.detect(now).iter().all(|c| c.node != n("n1")));
    }
    assert_eq!(status_of(&m, &n("n1")), Some(Status::Alive));
    assert!(m.is_reachable(&n("n1")));
}

#[test]
fn newer_heartbeat_revives_a_suspect() {
    let mut m = table_with_n2();
    m.detect(6_000);
    let report = m.merge(&[entry("n2", 1, 6)], 6_000);
    assert_eq!(
        report.revived,
        vec![change("n2", Status::Suspect, Status::Alive)]
    );
    assert_eq!(report.updated, 1);
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Alive));
    // Heard at 6000 now.
    assert!(m.detect(11_000).is_empty());
    assert_eq!(m.detect(11_001).len(), 1);
}

#[test]
fn newer_heartbeat_revives_the_dead() {
    let mut m = table_with_n2();
    m.detect(40_000);
    m.detect(40_000);
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Dead));
    let report = m.merge(&[entry("n2", 1, 6)], 41_000);
    assert_eq!(
        report.revived,
        vec![change("n2", Status::Dead, Status::Alive)]
    );
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Alive));
    assert_eq!(m.get(&n("n2")).unwrap().last_heard_ms, 41_000);
}

#[test]
fn equal_or_older_heartbeat_neither_revives_nor_refreshes() {
    let mut m = table_with_n2();
    // Replays at 4000 must not count as hearing from n2.
    assert_eq!(
        m.merge(&[entry("n2", 1, 5), entry("n2", 1, 3)], 4_000),
        MergeReport::default()
    );
    assert_eq!(m.get(&n("n2")).unwrap().last_heard_ms, 0);
    assert_eq!(m.detect(5_001).len(), 1);

    m.merge(&[entry("n2", 1, 5)], 6_000);
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Suspect));
    assert_eq!(
        m.detect(30_001),
        vec![change("n2", Status::Suspect, Status::Dead)]
    );

    m.merge(&[entry("n2", 1, 5), entry("n2", 0, 99)], 31_000);
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Dead));
}

#[test]
fn higher_incarnation_wins_even_with_lower_heartbeat() {
    let mut m = table();
    m.merge(&[entry("n2", 1, 50)], 0);
    let mut restarted = entry("n2", 2, 3);
    restarted.cluster_addr = "10.0.0.9:7001".into();
    assert_eq!(m.merge(&[restarted], 100).updated, 1);
    let n2 = m.get(&n("n2")).unwrap();
    assert_eq!((n2.incarnation, n2.heartbeat), (2, 3));
    assert_eq!(n2.cluster_addr, "10.0.0.9:7001");
    assert_eq!(n2.last_heard_ms, 100);
    // The old life's heartbeats, however high, are stale now.
    assert_eq!(m.merge(&[entry("n2", 1, 1_000)], 200).updated, 0);
    let n2 = m.get(&n("n2")).unwrap();
    assert_eq!((n2.incarnation, n2.heartbeat), (2, 3));
    assert_eq!(n2.cluster_addr, "10.0.0.9:7001");
    // Same incarnation: higher heartbeat wins.
    assert_eq!(m.merge(&[entry("n2", 2, 4)], 300).updated, 1);
    assert_eq!(m.get(&n("n2")).unwrap().heartbeat, 4);
}

#[test]
fn unknown_nodes_are_added_alive_whatever_the_peer_says() {
    let mut m = table();
    let mut dead = entry("n3", 4, 7);
    dead.status = Status::Dead;
    let report = m.merge(&[dead], 1_234);
    assert_eq!(report.added, vec![n("n3")]);
    assert_eq!(report.updated, 0);
    let n3 = m.get(&n("n3")).unwrap();
    assert_eq!(n3.status, Status::Alive);
    assert_eq!((n3.incarnation, n3.heartbeat), (4, 7));
    assert_eq!(n3.last_heard_ms, 1_234);
    assert_eq!(n3.http_addr, "n3:8001");
}

#[test]
fn peer_reported_status_is_ignored_for_known_nodes() {
    let mut m = table_with_n2();
    let mut says_dead = entry("n2", 1, 6);
    says_dead.status = Status::Dead;
    m.merge(&[says_dead], 100);
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Alive));
    m.detect(6_000);
    let mut says_alive = entry("n2", 1, 6);
    says_alive.status = Status::Alive;
    m.merge(&[says_alive], 6_000);
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Suspect));
}

#[test]
fn own_entry_is_never_taken_from_a_peer() {
    let mut m = table();
    m.tick(10);
    let before = m.own().clone();
    let mut forged = entry("n1", 1, 1_000_000);
    forged.cluster_addr = "evil:1".into();
    forged.http_addr = "evil:2".into();
    forged.status = Status::Dead;
    let report = m.merge(&[forged], 20);
    assert!(report.refuted);
    assert_eq!(report.own_entry_contested, None);
    assert!(report.added.is_empty() && report.updated == 0);
    let own = m.own();
    assert_eq!(own.cluster_addr, before.cluster_addr);
    assert_eq!(own.http_addr, before.http_addr);
    assert_eq!(own.incarnation, 1);
    assert_eq!(own.status, Status::Alive);
    assert_eq!(own.last_heard_ms, 10);
    assert_eq!(own.heartbeat, 1_000_001);
    assert_eq!(m.members().count(), 1);
}

#[test]
fn refutation_bumps_our_heartbeat_above_the_peers() {
    let mut m = table();
    for t in 1..=3 {
        m.tick(t);
    }
    assert_eq!(m.own().heartbeat, 3);
    let report = m.merge(&[entry("n1", 1, 40)], 5);
    assert!(report.refuted);
    assert_eq!(m.own().heartbeat, 41);
    // Our next digest beats the stale view on the peer.
    let mut peer = table_of("n2", 1, FailureTimeouts::default());
    peer.merge(&[entry("n1", 1, 40)], 0);
    peer.merge(&m.digest(), 1);
    assert_eq!(peer.get(&n("n1")).unwrap().heartbeat, 41);
    // An older or equal claim is not refuted.
    assert!(!m.merge(&[entry("n1", 1, 41)], 6).refuted);
    assert_eq!(m.own().heartbeat, 41);
    // Several claims in one digest: one jump past the highest, whatever their order.
    let mut other = m.clone();
    m.merge(&[entry("n1", 1, 50), entry("n1", 1, 51)], 7);
    other.merge(&[entry("n1", 1, 51), entry("n1", 1, 50)], 7);
    assert_eq!(m.own().heartbeat, 52);
    assert_eq!(other.own().heartbeat, 52);
}

#[test]
fn a_newer_incarnation_of_us_is_reported_not_adopted() {
    let mut m = table();
    m.tick(1);
    let report = m.merge(&[entry("n1", 3, 0), entry("n1", 2, 9)], 2);
    assert_eq!(report.own_entry_contested, Some(3));
    assert!(!report.refuted);
    assert_eq!((m.own().incarnation, m.own().heartbeat), (1, 1));
    // An older incarnation of us is simply stale.
    let report = m.merge(&[entry("n1", 0, 99)], 3);
    assert_eq!(report, MergeReport::default());
}

#[test]
fn tick_advances_our_heartbeat_and_last_heard() {
    let mut m = table();
    m.tick(1_000);
    m.tick(2_000);
    assert_eq!(m.own().heartbeat, 2);
    assert_eq!(m.own().last_heard_ms, 2_000);
    assert_eq!(m.digest()[0].heartbeat, 2);
}

#[test]
fn digest_lists_everyone_in_name_order_without_local_times() {
    let mut m = table_of("n2", 7, FailureTimeouts::default());
    m.merge(&[entry("n3", 1, 1), entry("n1", 1, 2)], 50);
    m.detect(6_000);
    let digest = m.digest();
    let names: Vec<_> = digest.iter().map(|d| d.node.as_str()).collect();
    assert_eq!(names, ["n1", "n2", "n3"]);
    assert_eq!(digest[1].incarnation, 7);
    assert_eq!(digest[0].status, Status::Suspect);
    assert_eq!(digest[1].status, Status::Alive);
    // A fresh node learns the same versions from it, except its own entry: the stale
    // (1, 2) claimed for n1 is refuted.
    let mut fresh = table();
    assert!(fresh.merge(&digest, 0).refuted);
    let versions: Vec<_> = fresh
        .members()
        .map(|m| (m.node.clone(), m.incarnation, m.heartbeat))
        .collect();
    assert_eq!(
        versions,
        vec![(n("n1"), 1, 3), (n("n2"), 7, 0), (n("n3"), 1, 1)]
    );
}

#[test]
fn helpers_agree_with_statuses() {
    let mut m = table();
    m.merge(&[entry("n2", 1, 0)], 0);
    m.merge(&[entry("n3", 1, 0), entry("n4", 1, 0)], 4_000);
    m.detect(6_000); // n2 suspect
    m.merge(&[entry("n4", 1, 1)], 9_000);
    m.detect(9_500); // n3 suspect
    m.detect(31_000); // n2 dead
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Dead));
    assert_eq!(status_of(&m, &n("n3")), Some(Status::Suspect));
    assert_eq!(status_of(&m, &n("n4")), Some(Status::Suspect));
    m.merge(&[entry("n4", 1, 2)], 31_000);
    assert_eq!(status_of(&m, &n("n9")), None);

    let alive: Vec<_> = m
        .members()
        .filter(|p| p.node != n("n1") && p.is_reachable())
        .map(|p| p.node.clone())
        .collect();
    assert_eq!(alive, vec![n("n4")]);
    // Liveness never changes the ring: the dead n2 keeps its ranges.
    assert_eq!(ring_members(&m), vec![n("n1"), n("n2"), n("n3"), n("n4")]);
    assert!(m.is_reachable(&n("n4")));
    assert!(!m.is_reachable(&n("n3")));
    assert!(!m.is_reachable(&n("n2")));
    assert!(!m.is_reachable(&n("n9")));
    // A dead member still takes its hints back one day; a stranger never does.
    assert!(m.takes_hints(&n("n2")) && m.takes_hints(&n("n3")));
    assert!(!m.takes_hints(&n("n9")));
    assert_eq!(m.get(&n("n1")), Some(m.own()));
    assert!(m.get(&n("n9")).is_none());
}

#[test]
fn the_ring_follows_ring_status_never_liveness() {
    let mut m = table();
    let v0 = m.version();
    assert_eq!(ring_members(&m), vec![n("n1")]);

    m.merge(&[entry("n2", 1, 0)], 0);
    let v1 = m.version();
    assert!(v1 > v0);
    assert_eq!(ring_members(&m), vec![n("n1"), n("n2")]);

    // Alive -> Suspect -> Dead -> Alive keeps the ring as it is.
    m.detect(5_001);
    m.detect(40_000);
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Dead));
    assert_eq!(m.version(), v1);
    assert_eq!(ring_members(&m), vec![n("n1"), n("n2")]);
    m.merge(&[entry("n2", 1, 1)], 41_000);
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Alive));
    assert_eq!(m.version(), v1);

    // A joining node is known but owns nothing until it says it is valid.
    let mut joining = entry("n3", 1, 0);
    joining.ring = RingStatus::Joining;
    let report = m.merge(&[joining.clone()], 41_000);
    assert_eq!(report.added, vec![n("n3")]);
    assert_eq!(m.version(), v1);
    assert_eq!(ring_members(&m), vec![n("n1"), n("n2")]);
    joining.ring = RingStatus::Valid;
    m.merge(&[joining], 41_000);
    assert!(m.version() > v1);
    assert_eq!(ring_members(&m), vec![n("n1"), n("n2"), n("n3")]);

    // Only a later status is news: a stale "joining" changes nothing.
    let v2 = m.version();
    let mut stale = entry("n3", 1, 0);
    stale.ring = RingStatus::Joining;
    assert!(m.merge(&[stale], 42_000).ring.is_empty());
    assert_eq!(m.version(), v2);
}

#[test]
fn leave_takes_us_off_the_ring_and_left_is_final() {
    let mut m = table_with_n2();
    let changes = m.start_leaving().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(m.own().ring, RingStatus::Leaving);
    assert_eq!(ring_members(&m), vec![n("n2")]);
    assert!(
        m.start_leaving().unwrap().is_empty(),
        "leaving twice is harmless"
    );
    m.set_handoff_progress(HandoffProgress {
        handed: 7,
        remaining: 3,
    });
    assert_eq!(m.digest()[0].handoff.remaining, 3);
    assert_eq!(m.finish_leaving().len(), 1);
    assert_eq!(m.own().ring, RingStatus::Left);
    assert!(m.finish_leaving().is_empty());
    // A peer's stale "valid" for us cannot bring us back.
    let report = m.merge(&[entry("n1", 1, 0)], 1);
    assert_eq!(report.fatal, None);
    assert_eq!(m.own().ring, RingStatus::Left);

    // The peer learns it and the ring it builds is without us.
    let mut peer = table_of("n2", 5, FailureTimeouts::default());
    peer.merge(&m.digest(), 10);
    assert_eq!(peer.ring_status_of(&n("n1")), Some(RingStatus::Left));
    assert_eq!(ring_members(&peer), vec![n("n2")]);
    assert!(!peer.should_connect(&n("n1")));
}

#[test]
fn the_last_valid_member_cannot_leave() {
    let mut alone = table();
    assert_eq!(alone.start_leaving(), Err(ChangeError::LastMember));
    assert_eq!(
        alone.own().ring,
        RingStatus::Valid,
        "a refused leave changes nothing"
    );
    assert_eq!(ring_members(&alone), vec![n("n1")]);

    // Nor can a joining node that met no valid member.
    let mut joining = table().with_ring(RingStatus::Joining);
    assert_eq!(joining.start_leaving(), Err(ChangeError::LastMember));
    assert!(ring_members(&joining).is_empty());

    // The other member left: n1 is the last again.
    let mut m = table_with_n2();
    let mut left = entry("n2", 1, 9);
    left.ring = RingStatus::Left;
    m.merge(&[left], 1);
    assert_eq!(m.start_leaving(), Err(ChangeError::LastMember));
}

#[test]
fn the_last_two_members_told_to_leave_at_once_keep_their_places_until_a_node_joins() {
    let mut one = table();
    one.merge(&[entry("n2", 1, 0)], 0);
    let mut two = table_of("n2", 1, FailureTimeouts::default());
    two.merge(&[entry("n1", 1, 0)], 0);
    // Each accepts: it still sees the other valid.
    one.start_leaving().unwrap();
    two.start_leaving().unwrap();
    assert_eq!(ring_members(&one), vec![n("n2")]);
    one.merge(&two.digest(), 1);
    two.merge(&one.digest(), 1);
    for m in [&one, &two] {
        assert_eq!(m.ring_status_of(&n("n1")), Some(RingStatus::Leaving));
        assert_eq!(m.ring_status_of(&n("n2")), Some(RingStatus::Leaving));
        assert_eq!(
            ring_members(m),
            vec![n("n1"), n("n2")],
            "the ring never empties"
        );
    }
    // Their places keep their hints.
    assert!(one.takes_hints(&n("n2")) && two.takes_hints(&n("n1")));
    // A node joins and becomes valid: the leaves go on, to it.
    one.merge(&[entry("n3", 1, 0)], 2);
    assert_eq!(ring_members(&one), vec![n("n3")]);
}

#[test]
fn a_leaving_member_takes_no_hints() {
    // It owns nothing: a hint sent to it would only be pushed on, after it may have told a
    // tombstone purge that it holds nothing of the key.
    let mut m = table_with_n2();
    m.merge(&[entry("n3", 1, 0)], 0);
    assert!(m.takes_hints(&n("n2")));
    let mut leaving = entry("n2", 1, 6);
    leaving.ring = RingStatus::Leaving;
    m.merge(&[leaving], 1);
    assert!(!m.takes_hints(&n("n2")));
    assert!(m.takes_hints(&n("n3")));
}

#[test]
fn remove_is_refused_for_the_living_for_ourselves_and_for_strangers() {
    let mut m = table_with_n2();
    assert_eq!(m.remove(&n("n2")), Err(ChangeError::Alive(n("n2"))));
    assert_eq!(m.remove(&n("n1")), Err(ChangeError::IsSelf(n("n1"))));
    assert_eq!(m.remove(&n("n9")), Err(ChangeError::Unknown(n("n9"))));
    m.detect(5_001);
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Suspect));
    let v = m.version();
    assert_eq!(m.remove(&n("n2")).unwrap().len(), 1);
    assert!(m.version() > v);
    assert_eq!(ring_members(&m), vec![n("n1")]);
    assert!(
        m.remove(&n("n2")).unwrap().is_empty(),
        "removing twice is harmless"
    );
    // A removed node is never judged, dialled or picked again, and its heartbeats change
    // nothing.
    m.merge(&[entry("n2", 1, 99)], 6_000);
    assert_eq!(m.ring_status_of(&n("n2")), Some(RingStatus::Removed));
    assert!(!m.is_reachable(&n("n2")));
    assert!(!m.should_connect(&n("n2")));
    assert!(!m.takes_hints(&n("n2")));
    assert!(m.detect(1_000_000).is_empty());
    assert_eq!(m.data_holders().count(), 0);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    assert_eq!(m.pick_gossip_peer(&[n("n2")], &mut rng), None);
}

#[test]
fn a_removed_node_learns_it_and_a_name_that_left_cannot_come_back() {
    let mut m = table();
    let mut removed = entry("n1", 1, 0);
    removed.ring = RingStatus::Removed;
    let report = m.merge(&[removed.clone()], 0);
    assert_eq!(report.fatal, Some(Fatal::Removed));
    assert_eq!(m.own().ring, RingStatus::Removed);
    assert_eq!(m.merge(&[removed], 1).fatal, None, "said once");

    let mut fresh = table().with_ring(RingStatus::Joining);
    let mut left = entry("n1", 0, 50);
    left.ring = RingStatus::Left;
    assert_eq!(fresh.merge(&[left], 0).fatal, Some(Fatal::Left));
    assert!(fresh.start_leaving().is_ok());
}

#[test]
fn a_joining_node_becomes_valid_when_it_meets_the_cluster() {
    let mut m = table().with_ring(RingStatus::Joining);
    assert!(ring_members(&m).is_empty());
    // A restarted node's own past: peers still know it as valid, and it takes its place.
    let mut past = entry("n1", 0, 3);
    past.ring = RingStatus::Valid;
    let report = m.merge(&[past, entry("n2", 1, 0)], 0);
    assert_eq!(report.fatal, None);
    assert_eq!(m.own().ring, RingStatus::Valid);
    assert_eq!(ring_members(&m), vec![n("n1"), n("n2")]);

    // A previous life that was leaving goes on leaving.
    let mut m = table().with_ring(RingStatus::Joining);
    let mut past = entry("n1", 0, 3);
    past.ring = RingStatus::Leaving;
    m.merge(&[past, entry("n2", 1, 0)], 0);
    assert_eq!(m.own().ring, RingStatus::Leaving);
}

#[test]
fn joining_nodes_never_make_a_cluster_among_themselves() {
    // An in-memory restart and a new node, cut off from the cluster both were seeded with:
    // owning every range between them, they could purge tombstones its members never saw.
    let mut restarted = table().with_ring(RingStatus::Joining);
    let mut new = table_of("n3", 1, FailureTimeouts::default()).with_ring(RingStatus::Joining);
    let mut joining = entry("n3", 1, 0);
    joining.ring = RingStatus::Joining;
    restarted.merge(&[joining], 0);
    new.merge(&[restarted.own().entry.clone()], 0);
    assert_eq!(restarted.own().ring, RingStatus::Joining);
    assert_eq!(new.own().ring, RingStatus::Joining);
    assert!(ring_members(&restarted).is_empty());

    // A member of the cluster, met at last or named by a peer, lets each take its place.
    let mut valid = entry("n2", 1, 0);
    valid.ring = RingStatus::Valid;
    restarted.merge(std::slice::from_ref(&valid), 1);
    assert_eq!(restarted.own().ring, RingStatus::Valid);
    new.merge(&restarted.digest(), 1);
    assert_eq!(new.own().ring, RingStatus::Valid);

    // Members that are all leaving are still the cluster: a joining node takes their keys.
    let mut m = table().with_ring(RingStatus::Joining);
    let mut leaving = entry("n2", 1, 0);
    leaving.ring = RingStatus::Leaving;
    m.merge(&[leaving], 0);
    assert_eq!(m.own().ring, RingStatus::Valid);
}

#[test]
fn n_is_the_clusters() {
    let mut joining = table().with_ring(RingStatus::Joining).with_n(5);
    let report = joining.merge(&[entry("n2", 1, 0)], 0);
    assert_eq!(
        report.fatal,
        Some(Fatal::ReplicaMismatch {
            cluster: DEFAULT_N,
            ours: 5
        })
    );
    assert_eq!(report.ignored, vec![n("n2")]);
    assert_eq!(joining.own().ring, RingStatus::Joining);
    assert!(joining.get(&n("n2")).is_none());

    // The cluster keeps a node with another N out of its table.
    let mut m = table();
    let mut other = entry("n3", 1, 0);
    other.n = 5;
    other.ring = RingStatus::Joining;
    let report = m.merge(&[other], 0);
    assert_eq!(report.fatal, None);
    assert_eq!(report.ignored, vec![n("n3")]);
    assert!(m.get(&n("n3")).is_none());
}

#[test]
fn custom_timeouts_apply() {
    let mut m = Membership::new(
        n("n1"),
        "a".into(),
        "b".into(),
        128,
        0,
        FailureTimeouts::new(100, 300).unwrap(),
        0,
    )
    .unwrap();
    m.merge(&[entry("n2", 0, 0)], 0);
    assert!(m.detect(100).is_empty());
    assert_eq!(m.detect(101).len(), 1);
    assert!(m.detect(300).is_empty());
    assert_eq!(
        m.detect(301),
        vec![change("n2", Status::Suspect, Status::Dead)]
    );
}

#[test]
fn the_timeouts_given_are_the_ones_that_judge() {
    let mut m = table_with_n2();
    assert!(m.detect(1_000).is_empty(), "the defaults: still alive");
    let quick = FailureTimeouts::new(500, 900).unwrap();
    let mut m = table_of("n1", 1, quick);
    m.merge(&[entry("n2", 1, 5)], 0);
    assert_eq!(m.detect(1_000).len(), 1);
    assert_eq!(m.detect(1_000).len(), 1);
    assert_eq!(status_of(&m, &n("n2")), Some(Status::Dead));
}

#[test]
fn invalid_timeouts_are_rejected() {
    assert_eq!(
        FailureTimeouts::new(0, 10),
        Err(TimeoutsError::Zero {
            suspect_after_ms: 0,
            dead_after_ms: 10
        })
    );
    assert!(matches!(
        FailureTimeouts::new(10, 0),
        Err(TimeoutsError::Zero { .. })
    ));
    assert_eq!(
        FailureTimeouts::new(300, 100),
        Err(TimeoutsError::NotOrdered {
            suspect_after_ms: 300,
            dead_after_ms: 100
        })
    );
    assert!(matches!(
        FailureTimeouts::new(100, 100),
        Err(TimeoutsError::NotOrdered { .. })
    ));
    assert_eq!(FailureTimeouts::default().validate(), Ok(()));

    let bad = FailureTimeouts {
        suspect_after_ms: 30_000,
        dead_after_ms: 5_000,
    };
    assert!(Membership::new(n("n1"), "a".into(), "b".into(), 128, 0, bad, 0).is_err());
}

// ---- properties ----

const NAMES: [&str; 5] = ["n0", "n1", "n2", "n3", "n4"];
const ME: &str = "n1";

fn status_strategy() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Alive),
        Just(Status::Suspect),
        Just(Status::Dead)
    ]
}

fn ring_strategy() -> impl Strategy<Value = RingStatus> {
    prop_oneof![
        4 => Just(RingStatus::Valid),
        1 => Just(RingStatus::Joining),
        1 => Just(RingStatus::Leaving),
        1 => Just(RingStatus::Left),
        1 => Just(RingStatus::Removed),
    ]
}

fn digest_entry() -> impl Strategy<Value = MemberDigest> {
    (
        (0..NAMES.len(), 0u64..4, 0u64..30),
        status_strategy(),
        0u8..2,
        ring_strategy(),
    )
        .prop_map(
            |((i, incarnation, heartbeat), status, addr, ring)| MemberDigest {
                node: n(NAMES[i]),
                cluster_addr: format!("{}:{}", NAMES[i], 7000 + u16::from(addr)),
                http_addr: format!("{}:8000", NAMES[i]),
                vnodes: 128,
                status,
                heartbeat,
                incarnation,
                ring,
                n: DEFAULT_N,
                handoff: HandoffProgress::default(),
            },
        )
}

fn digest_strategy() -> impl Strategy<Value = Vec<MemberDigest>> {
    prop::collection::vec(digest_entry(), 0..8)
}

/// A step in a node's life, with the time elapsed before it.
#[derive(Clone, Debug)]
enum Op {
    Merge(Vec<MemberDigest>),
    Tick,
    Detect,
}

fn ops_strategy() -> impl Strategy<Value = Vec<(Op, u64)>> {
    let op = prop_oneof![
        digest_strategy().prop_map(Op::Merge),
        Just(Op::Tick),
        Just(Op::Detect),
    ];
    prop::collection::vec((op, 0u64..20_000), 0..20)
}

/// A table for `ME` at incarnation 1, driven through `ops`; returns it and the clock.
fn run(ops: &[(Op, u64)]) -> (Membership, u64) {
    run_with(ops, FailureTimeouts::default())
}

/// [`run`] with other failure-detection timeouts.
fn run_with(ops: &[(Op, u64)], timeouts: FailureTimeouts) -> (Membership, u64) {
    let mut m = Membership::new(
        n(ME),
        "me:7001".into(),
        "me:8001".into(),
        128,
        1,
        timeouts,
        0,
    )
    .unwrap();
    let mut now = 0;
    for (op, dt) in ops {
        now += dt;
        match op {
            Op::Merge(d) => {
                m.merge(d, now);
            }
            Op::Tick => m.tick(now),
            Op::Detect => {
                m.detect(now);
            }
        }
    }
    (m, now)
}

fn versions(m: &Membership) -> Vec<(NodeId, u64, u64, Status)> {
    m.members()
        .map(|e| (e.node.clone(), e.incarnation, e.heartbeat, e.status))
        .collect()
}

fn step(status: Status) -> u8 {
    match status {
        Status::Alive => 0,
        Status::Suspect => 1,
        Status::Dead => 2,
    }
}

proptest! {
    #[test]
    fn merge_is_idempotent(ops in ops_strategy(), d in digest_strategy(), later in 0u64..50_000) {
        let (mut m, now) = run(&ops);
        m.merge(&d, now);
        let once = m.clone();
        // Even later, a replay must not count as news.
        let report = m.merge(&d, now + later);
        prop_assert_eq!(report, MergeReport {
            own_entry_contested: once_contested(&d, &once),
            ..MergeReport::default()
        });
        prop_assert_eq!(m, once);
    }

    #[test]
    fn merge_order_does_not_matter(
        ops in ops_strategy(),
        a in digest_strategy(),
        b in digest_strategy(),
    ) {
        let (base, now) = run(&ops);
        let base_own = base.own().clone();
        let mut ab = base.clone();
        ab.merge(&a, now);
        ab.merge(&b, now);
        let mut ba = base;
        ba.merge(&b, now);
        ba.merge(&a, now);
        // Other nodes' entries: a last-writer-wins map, so exactly the same.
        let others = |m: &Membership| {
            versions(m).into_iter().filter(|v| v.0 != n(ME)).collect::<Vec<_>>()
        };
        prop_assert_eq!(others(&ab), others(&ba));
        prop_assert_eq!(ring_members(&ab), ring_members(&ba));
        // Our own entry: "claim + 1" refutation depends on the order (claims 17 then 16
        // give 18, 16 then 17 give 17), but both orders end at or above every claim, so
        // no peer's stale view of us can win.
        prop_assert_eq!(ab.own().incarnation, ba.own().incarnation);
        // Ring statuses are a register that only moves forward: the same in both orders,
        // ours included.
        let rings = |m: &Membership| {
            m.members().map(|e| (e.node.clone(), e.ring)).collect::<Vec<_>>()
        };
        prop_assert_eq!(rings(&ab), rings(&ba));

        let top_claim = a
            .iter()
            .chain(&b)
            .filter(|e| e.node == n(ME) && e.incarnation == base_own.incarnation)
            .map(|e| e.heartbeat)
            .max();
        for m in [&ab, &ba] {
            prop_assert!(m.own().heartbeat >= base_own.heartbeat);
            if let Some(claim) = top_claim {
                prop_assert!(m.own().heartbeat >= claim);
            }
        }
    }

    #[test]
    fn own_entry_changes_only_by_refutation_or_a_later_ring_status(
        ops in ops_strategy(),
        d in digest_strategy(),
    ) {
        let (mut m, now) = run(&ops);
        let before = m.own().clone();
        let report = m.merge(&d, now);
        let claims = d.iter().filter(|e| e.node == n(ME));
        let max_same = claims
            .clone()
            .filter(|e| e.incarnation == before.incarnation)
            .map(|e| e.heartbeat)
            .max();
        let expected_hb = match max_same {
            Some(hb) if hb > before.heartbeat => hb + 1,
            _ => before.heartbeat,
        };
        let expected_ring = claims.clone().map(|e| e.ring).max().unwrap_or(before.ring).max(before.ring);
        let contested = claims.map(|e| e.incarnation).filter(|&i| i > before.incarnation).max();
        prop_assert_eq!(
            m.own(),
            &Member {
                entry: MemberDigest { heartbeat: expected_hb, ring: expected_ring, ..before.entry.clone() },
                ..before.clone()
            }
        );
        let fatal = match expected_ring {
            r if r == before.ring => None,
            RingStatus::Removed => Some(Fatal::Removed),
            RingStatus::Left => Some(Fatal::Left),
            _ => None,
        };
        prop_assert_eq!(report.fatal, fatal);
        prop_assert_eq!(report.refuted, expected_hb != before.heartbeat);
        prop_assert_eq!(report.own_entry_contested, contested);
    }

    #[test]
    fn versions_never_go_backwards(ops in ops_strategy()) {
        let mut m = run(&[]).0;
        let mut now = 0;
        for (op, dt) in &ops {
            now += dt;
            let before: BTreeMap<NodeId, (u64, u64)> =
                m.members().map(|e| (e.node.clone(), (e.incarnation, e.heartbeat))).collect();
            match op {
                Op::Merge(d) => { m.merge(d, now); }
                Op::Tick => m.tick(now),
                Op::Detect => { m.detect(now); }
            }
            for (node, old) in &before {
                let new = m.get(node).map(|e| (e.incarnation, e.heartbeat));
                prop_assert!(new.is_some_and(|v| v >= *old), "{node}: {old:?} -> {new:?}");
                // Within one incarnation the heartbeat itself never decreases.
                if let Some((inc, hb)) = new
                    && inc == old.0
                {
                    prop_assert!(hb >= old.1);
                }
            }
        }
    }

    #[test]
    fn detect_moves_at_most_one_step_and_never_self(
        ops in ops_strategy(),
        dt in 0u64..100_000,
        suspect in 1u64..10_000,
        extra in 1u64..40_000,
    ) {
        let timeouts = FailureTimeouts::new(suspect, suspect + extra).unwrap();
        let (mut m, now) = run_with(&ops, timeouts);
        let version = m.version();
        let before: BTreeMap<NodeId, Status> =
            m.members().map(|e| (e.node.clone(), e.status)).collect();
        let gone: Vec<NodeId> =
            m.members().filter(|e| e.ring.is_final()).map(|e| e.node.clone()).collect();
        let changes = m.detect(now + dt);
        prop_assert_eq!(status_of(&m, &n(ME)), Some(Status::Alive));
        for c in &changes {
            prop_assert!(c.node != n(ME));
            prop_assert!(!gone.contains(&c.node), "members gone for good are not judged");
            prop_assert_eq!(before[&c.node], c.from);
            prop_assert_eq!(step(c.to), step(c.from) + 1);
        }
        for (node, old) in &before {
            let new = status_of(&m, node).unwrap();
            let moved = changes.iter().any(|c| &c.node == node);
            prop_assert_eq!(step(new), step(*old) + u8::from(moved));
        }
        // Liveness never moves the ring.
        prop_assert_eq!(m.version(), version);
    }
}

/// What a replayed merge of `d` must still report: a claim to a newer incarnation of us is
/// never adopted, so it is reported every time.
fn once_contested(d: &[MemberDigest], m: &Membership) -> Option<u64> {
    d.iter()
        .filter(|e| e.node == n(ME) && e.incarnation > m.own().incarnation)
        .map(|e| e.incarnation)
        .max()
}
