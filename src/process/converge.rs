//! Waiting until the running nodes of a local cluster agree on who is alive, at which
//! incarnation and ring status, so that every node routes by the same ring.

use std::time::{Duration, Instant};

use super::ProcessError;
use super::child::ProcessStatus;
use super::cluster::{LocalCluster, NodeSpec};
use crate::core::membership::{RingStatus, Status};
use crate::http::HttpClient;
use crate::model::MemberInfo;

/// Time between two rounds of polling.
const POLL: Duration = Duration::from_millis(100);
/// Per-request timeout while polling: a slow node must not stall the round.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

impl LocalCluster {
    /// Waits until every running (not paused, not exited) node answers `/health` and lists
    /// every running node as alive in `/admin/members`, at the incarnation that node reports
    /// for itself (so a restarted node counts only once its new life is known). Paused and
    /// exited nodes are neither asked nor expected, and neither is a running node that says
    /// it left the cluster or was removed from it (its `/health` answers 503 on purpose).
    pub async fn wait_converged(&mut self, timeout: Duration) -> Result<(), ProcessError> {
        let started = Instant::now();
        loop {
            let running: Vec<NodeSpec> = self
                .specs()
                .to_vec()
                .into_iter()
                .zip(self.statuses())
                .filter(|(_, status)| *status == ProcessStatus::Running)
                .map(|(spec, _)| spec)
                .collect();
            let views = futures::future::join_all(running.iter().map(view_of)).await;
            let expected: Vec<&str> = running.iter().map(|s| s.name.as_str()).collect();
            let gap = match convergence_gap(&expected, &views) {
                None => return Ok(()),
                Some(gap) => gap,
            };
            if started.elapsed() >= timeout {
                return Err(ProcessError::NotConverged {
                    waited_ms: started.elapsed().as_millis(),
                    gap,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// What one node says: its member list and its health, or why it did not answer. The health
/// of a node that left or was removed is not asked: it is 503 by design.
async fn view_of(spec: &NodeSpec) -> (String, Result<Vec<MemberInfo>, String>) {
    let client = HttpClient::with_timeout(spec.http_url(), REQUEST_TIMEOUT);
    let view = async {
        let members = client
            .members()
            .await
            .map_err(|e| format!("/admin/members: {e}"))?;
        if !departed(&spec.name, &members) {
            client.health().await.map_err(|e| format!("/health: {e}"))?;
        }
        Ok(members)
    }
    .await;
    (spec.name.clone(), view)
}

/// Whether `name` says of itself, in its own member list, that it left or was removed.
fn departed(name: &str, members: &[MemberInfo]) -> bool {
    members.iter().any(|m| m.node == name && m.ring.is_final())
}

/// The first reason why the views do not show every expected node alive everywhere, or
/// `None` when they do. Each node must list itself, past joining, and every observer must see
/// each expected node alive, connected, at no older an incarnation than the node's own, and at
/// the ring status the node reports for itself (so that every node routes by the same ring).
/// A node that says it left or was removed is no longer part of the cluster: it is neither
/// expected nor asked (an observer may still list it, as left or removed, or as dead).
pub(crate) fn convergence_gap(
    expected: &[&str],
    views: &[(String, Result<Vec<MemberInfo>, String>)],
) -> Option<String> {
    let gone = |name: &str| {
        views
            .iter()
            .any(|(n, view)| n == name && view.as_ref().is_ok_and(|m| departed(name, m)))
    };
    let expected: Vec<&str> = expected.iter().copied().filter(|n| !gone(n)).collect();
    let views: Vec<_> = views.iter().filter(|(n, _)| !gone(n)).collect();
    let mut own_incarnation = Vec::with_capacity(expected.len());
    for name in &expected {
        let Some((_, view)) = views.iter().find(|(n, _)| n == name) else {
            return Some(format!("{name} was not asked"));
        };
        let members = match view {
            Ok(members) => members,
            Err(e) => return Some(format!("{name} did not answer: {e}")),
        };
        match members.iter().find(|m| m.node == *name) {
            Some(me) if me.ring == RingStatus::Joining => {
                return Some(format!("{name} is still joining"));
            }
            Some(me) => own_incarnation.push((name, me.incarnation, me.ring)),
            None => return Some(format!("{name} does not list itself")),
        }
    }
    for (observer, view) in views {
        let Ok(members) = view else { continue };
        for (name, incarnation, ring) in &own_incarnation {
            match members.iter().find(|m| m.node == **name) {
                None => return Some(format!("{observer} does not know {name} yet")),
                Some(m) if m.incarnation < *incarnation => {
                    return Some(format!(
                        "{observer} still sees an older life of {name} (incarnation {} < {incarnation})",
                        m.incarnation
                    ));
                }
                Some(m) if m.status != Status::Alive => {
                    return Some(format!("{observer} sees {name} {:?}", m.status));
                }
                Some(m) if m.ring != *ring => {
                    return Some(format!(
                        "{observer} sees {name} {} while it says it is {ring}",
                        m.ring
                    ));
                }
                // Alive by gossip is not enough: requests only go over a session.
                Some(m) if !m.connected => {
                    return Some(format!("{observer} has no session to {name} yet"));
                }
                Some(_) => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node: &str, status: Status, incarnation: u64) -> MemberInfo {
        MemberInfo {
            node: node.into(),
            cluster_addr: String::new(),
            http_addr: String::new(),
            status,
            heartbeat: 1,
            incarnation,
            last_heard_ms_ago: 0,
            connected: true,
            ring: crate::core::membership::RingStatus::Valid,
            handoff: Default::default(),
        }
    }

    fn all_alive(names: &[&str]) -> Vec<MemberInfo> {
        names.iter().map(|n| member(n, Status::Alive, 1)).collect()
    }

    #[test]
    fn converged_when_everyone_sees_everyone_alive() {
        let names = ["n1", "n2", "n3"];
        let views: Vec<_> = names
            .iter()
            .map(|n| (n.to_string(), Ok(all_alive(&names))))
            .collect();
        assert_eq!(convergence_gap(&names, &views), None);
    }

    #[test]
    fn each_kind_of_gap_is_named() {
        let names = ["n1", "n2"];
        let ok = |n: &str| (n.to_string(), Ok(all_alive(&names)));
        let gap = |views: Vec<(String, Result<Vec<MemberInfo>, String>)>| {
            convergence_gap(&names, &views).unwrap()
        };
        assert!(gap(vec![ok("n1")]).contains("n2 was not asked"));
        assert!(
            gap(vec![ok("n1"), ("n2".into(), Err("refused".into()))])
                .contains("n2 did not answer: refused")
        );
        let alone = ("n2".to_string(), Ok(all_alive(&["n2"])));
        assert!(gap(vec![ok("n1"), alone]).contains("n2 does not know n1 yet"));
        let suspect = (
            "n1".to_string(),
            Ok(vec![
                member("n1", Status::Alive, 1),
                member("n2", Status::Suspect, 1),
            ]),
        );
        assert!(gap(vec![suspect, ok("n2")]).contains("n1 sees n2 Suspect"));
        // n2 restarted as incarnation 2; n1 still has its first life alive.
        let reborn = (
            "n2".to_string(),
            Ok(vec![
                member("n1", Status::Alive, 1),
                member("n2", Status::Alive, 2),
            ]),
        );
        assert!(gap(vec![ok("n1"), reborn]).contains("n1 still sees an older life of n2"));
        let mut unconnected = all_alive(&names);
        unconnected[1].connected = false;
        let gossip_only = ("n1".to_string(), Ok(unconnected));
        assert!(gap(vec![gossip_only, ok("n2")]).contains("n1 has no session to n2 yet"));
        let no_self = ("n2".to_string(), Ok(all_alive(&["n1"])));
        assert!(gap(vec![ok("n1"), no_self]).contains("n2 does not list itself"));
    }

    #[test]
    fn members_outside_the_expected_set_do_not_matter() {
        // n3 is paused: others may see it suspect or dead, and it is not asked.
        let names = ["n1", "n2"];
        let view = vec![
            member("n1", Status::Alive, 1),
            member("n2", Status::Alive, 1),
            member("n3", Status::Dead, 1),
        ];
        let views = vec![("n1".into(), Ok(view.clone())), ("n2".into(), Ok(view))];
        assert_eq!(convergence_gap(&names, &views), None);
    }

    #[test]
    fn a_node_that_left_or_was_removed_is_neither_expected_nor_asked() {
        let names = ["n1", "n2", "n3"];
        for departed in [RingStatus::Left, RingStatus::Removed] {
            let mut others = all_alive(&names);
            others[2].status = Status::Dead;
            others[2].ring = departed;
            let mut own = others.clone();
            own[0].status = Status::Suspect;
            own[1].connected = false;
            own[2].status = Status::Alive;
            let views = vec![
                ("n1".to_string(), Ok(others.clone())),
                ("n2".to_string(), Ok(others)),
                ("n3".to_string(), Ok(own)),
            ];
            assert_eq!(convergence_gap(&names, &views), None, "{departed}");
        }
        // Only the node's own word counts: others calling it left is not enough.
        let mut view = all_alive(&names);
        view[2].ring = RingStatus::Left;
        let views = vec![
            ("n1".to_string(), Ok(view.clone())),
            ("n2".to_string(), Ok(view)),
            ("n3".to_string(), Ok(all_alive(&names))),
        ];
        let gap = convergence_gap(&names, &views).unwrap();
        assert!(
            gap.contains("sees n3 left while it says it is valid"),
            "{gap}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fake_nodes_that_list_everyone_converge_and_a_missing_member_is_reported() {
        use crate::process::testutil::{fake_local_cluster, scratch};
        let dir = scratch("converge");
        let mut cluster = fake_local_cluster(&dir, &["n1", "n2", "n3"]).await;
        cluster
            .wait_converged(Duration::from_secs(20))
            .await
            .unwrap();
        // A paused node is neither asked nor expected.
        cluster.pause(2).unwrap();
        cluster
            .wait_converged(Duration::from_secs(20))
            .await
            .unwrap();
        drop(cluster);

        let mut partial = fake_local_cluster(&dir, &["n1", "n2"]).await;
        let err = partial
            .wait_converged(Duration::from_millis(300))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ProcessError::NotConverged { .. }), "{msg}");
        assert!(msg.contains("n3 does not list itself"), "{msg}");
        drop(partial);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
