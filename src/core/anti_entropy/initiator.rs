//! The initiating side of a round, as a state machine, and the choice of its peer.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use rand::Rng;

use super::{
    AeError, AeReply, AeRequest, BUCKETS, GROUPS, Replica, SEGMENTS_PER_GROUP, SETS_BUDGET, Scope,
    SegmentView, Step, approx_bytes, bucket_of,
};
use crate::core::ids::{Key, NodeId};

/// What one round did, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// Requests sent.
    pub requests: usize,
    /// The roots were equal.
    pub in_sync: bool,
    /// The peer's ring or N differed.
    pub scope_mismatch: bool,
    /// Segments found different.
    pub differing_segments: usize,
    /// Buckets found different.
    pub differing_buckets: usize,
    /// Sets sent to the peer.
    pub sets_sent: usize,
    /// Keys whose set changed here.
    pub repaired: usize,
    /// Keys purged here on the peer's word.
    pub purged: usize,
}

struct Plan {
    push: VecDeque<Key>,
    want: Vec<Key>,
    purge: Vec<(Key, u64)>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.push.is_empty() && self.want.is_empty() && self.purge.is_empty()
    }
}

enum Phase {
    Root,
    Buckets {
        asked: Vec<(u16, u64)>,
    },
    Keys {
        asked: Vec<(u16, u8)>,
    },
    Sets {
        rest: Vec<(u16, u8)>,
        plan: Plan,
        pushed: HashSet<Key>,
        wanted: Vec<Key>,
    },
    Done,
}

/// The initiating side of a round, as a state machine: feed it each reply, send what it
/// returns, until it returns `None`. Every step takes the node's current [`Replica`].
pub struct Initiator {
    from: NodeId,
    scope: Scope,
    phase: Phase,
    stats: RoundStats,
}

impl Initiator {
    /// Starts a round: the first request to send.
    pub fn start(replica: &Replica<'_>) -> (Initiator, AeRequest) {
        let mut initiator = Initiator {
            from: replica.me.clone(),
            scope: replica.scope(),
            phase: Phase::Root,
            stats: RoundStats::default(),
        };
        let request = initiator.request(Step::Root {
            root: replica.digests.root(),
        });
        (initiator, request)
    }

    /// What the round did so far.
    pub fn stats(&self) -> &RoundStats {
        &self.stats
    }

    fn request(&mut self, step: Step) -> AeRequest {
        self.stats.requests += 1;
        AeRequest {
            from: self.from.clone(),
            scope: self.scope,
            step,
        }
    }

    /// Takes the peer's reply to the last request; returns the next request, or `None` when
    /// the round is over.
    pub fn step(
        &mut self,
        replica: &Replica<'_>,
        reply: AeReply,
    ) -> Result<Option<AeRequest>, AeError> {
        if replica.scope() != self.scope {
            self.phase = Phase::Done;
            return Err(AeError::ScopeChanged);
        }
        let asked = match &self.phase {
            Phase::Root => "root",
            Phase::Buckets { .. } => "segments",
            Phase::Keys { .. } => "keys",
            Phase::Sets { .. } => "exchange",
            Phase::Done => "finished round's",
        };
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        match (phase, reply) {
            (Phase::Done, _) => Ok(None),
            (_, AeReply::ScopeMismatch) => {
                self.stats.scope_mismatch = true;
                Ok(None)
            }
            (Phase::Root, AeReply::InSync) => {
                self.stats.in_sync = true;
                Ok(None)
            }
            (Phase::Root, AeReply::Groups(theirs)) => {
                if theirs.len() != GROUPS {
                    return Err(AeError::Malformed("group count"));
                }
                let segments: Vec<(u16, u64)> = (0..GROUPS)
                    .filter(|&g| replica.digests.group(g) != theirs[g])
                    .flat_map(|g| g * SEGMENTS_PER_GROUP..(g + 1) * SEGMENTS_PER_GROUP)
                    .map(|s| (s as u16, replica.digests.segment(s)))
                    .collect();
                if segments.is_empty() {
                    return Ok(None);
                }
                self.phase = Phase::Buckets {
                    asked: segments.clone(),
                };
                Ok(Some(self.request(Step::Segments { segments })))
            }
            (Phase::Buckets { asked }, AeReply::Buckets(theirs)) => {
                let asked: HashSet<u16> = asked.iter().map(|(s, _)| *s).collect();
                let mut buckets = Vec::new();
                let mut listed_buckets = Vec::new();
                let mut listed_keys = Vec::new();
                for (segment, view) in theirs {
                    if !asked.contains(&segment) {
                        return Err(AeError::Malformed("bucket digests"));
                    }
                    self.stats.differing_segments += 1;
                    match view {
                        SegmentView::Digests(digests) if digests.len() == BUCKETS => {
                            let mine = replica.digests.buckets(replica.store, segment.into());
                            buckets.extend(
                                (0..BUCKETS)
                                    .filter(|&b| mine[b] != digests[b])
                                    .map(|b| (segment, b as u8)),
                            );
                        }
                        SegmentView::Digests(_) => {
                            return Err(AeError::Malformed("bucket digests"));
                        }
                        SegmentView::Keys(keys) => {
                            // The whole segment is listed: compare it now.
                            listed_buckets.extend((0..BUCKETS).map(|b| (segment, b as u8)));
                            listed_keys.extend(keys);
                        }
                    }
                }
                self.stats.differing_buckets += buckets.len();
                let plan = make_plan(replica, &listed_buckets, listed_keys);
                Ok(self.next_exchange(replica, buckets, plan))
            }
            (Phase::Keys { asked }, AeReply::Keys { listed, keys }) => {
                let listed = listed as usize;
                if listed == 0 || listed > asked.len() {
                    return Err(AeError::Malformed("listed count"));
                }
                let (looked_at, rest) = asked.split_at(listed);
                let plan = make_plan(replica, looked_at, keys);
                Ok(self.next_exchange(replica, rest.to_vec(), plan))
            }
            (
                Phase::Sets {
                    rest,
                    mut plan,
                    pushed,
                    wanted,
                },
                AeReply::Sets {
                    served,
                    sets,
                    purge,
                },
            ) => {
                let served = served as usize;
                if served > wanted.len() {
                    return Err(AeError::Malformed("served count"));
                }
                if served == 0 && pushed.is_empty() && !wanted.is_empty() {
                    return Err(AeError::NoProgress);
                }
                let asked: HashSet<&Key> = wanted[..served].iter().collect();
                for (key, set) in &sets {
                    if !asked.contains(key) || !replica.shares(key) {
                        continue;
                    }
                    let digest = set.digest();
                    if replica.store.digest(key) == 0 && replica.store.purged_as(key, digest) {
                        plan.purge.push((key.clone(), digest));
                        continue;
                    }
                    if let Some(purged) = replica.store.purged_tombstones_in(key, set) {
                        // Purged here, but the peer holds them beside a later write.
                        plan.purge.push((key.clone(), purged));
                    }
                    if replica.take(key, set) {
                        self.stats.repaired += 1;
                    }
                }
                for (key, digest) in &purge {
                    if pushed.contains(key)
                        && replica.store.purge_tombstones(key, *digest, replica.now_ms)
                    {
                        self.stats.purged += 1;
                    }
                }
                plan.want = wanted[served..].to_vec();
                Ok(self.next_exchange(replica, rest, plan))
            }
            (_, _) => Err(AeError::Unexpected(asked)),
        }
    }

    fn ask_keys(&mut self, buckets: Vec<(u16, u8)>) -> Option<AeRequest> {
        if buckets.is_empty() {
            return None;
        }
        self.phase = Phase::Keys {
            asked: buckets.clone(),
        };
        Some(self.request(Step::Keys { buckets }))
    }

    fn next_exchange(
        &mut self,
        replica: &Replica<'_>,
        rest: Vec<(u16, u8)>,
        mut plan: Plan,
    ) -> Option<AeRequest> {
        if plan.is_empty() {
            return self.ask_keys(rest);
        }
        let mut push = Vec::new();
        let mut pushed = HashSet::new();
        let mut bytes = 0usize;
        while bytes < SETS_BUDGET {
            let Some(key) = plan.push.pop_front() else {
                break;
            };
            let set = replica.store.get(&key);
            if set.is_empty() {
                continue;
            }
            bytes += approx_bytes(&key, &set);
            pushed.insert(key.clone());
            push.push((key, set));
        }
        self.stats.sets_sent += push.len();
        let wanted = std::mem::take(&mut plan.want);
        let purge = std::mem::take(&mut plan.purge);
        let step = Step::Exchange {
            push,
            want: wanted.clone(),
            purge,
        };
        self.phase = Phase::Sets {
            rest,
            plan,
            pushed,
            wanted,
        };
        Some(self.request(step))
    }
}

// Compares the peer's keys of the listed buckets with ours.
fn make_plan(replica: &Replica<'_>, buckets: &[(u16, u8)], keys: Vec<(Key, u64)>) -> Plan {
    let buckets: HashSet<(usize, usize)> = buckets
        .iter()
        .map(|&(s, b)| (usize::from(s), usize::from(b)))
        .collect();
    let in_listed =
        |key: &[u8]| buckets.contains(&(crate::core::segments::segment_of(key), bucket_of(key)));
    let mut theirs: BTreeMap<Key, u64> = keys
        .into_iter()
        .filter(|(k, _)| in_listed(k) && replica.shares(k))
        .collect();
    let mut plan = Plan {
        push: VecDeque::new(),
        want: Vec::new(),
        purge: Vec::new(),
    };
    let segments: BTreeSet<usize> = buckets.iter().map(|(s, _)| *s).collect();
    for segment in segments {
        for (key, mine) in replica.shared_keys(segment) {
            if !in_listed(&key) {
                continue;
            }
            match theirs.remove(&key) {
                Some(d) if d == mine => {}
                Some(_) => {
                    plan.push.push_back(key.clone());
                    plan.want.push(key);
                }
                None => plan.push.push_back(key),
            }
        }
    }
    for (key, digest) in theirs {
        if replica.store.digest(&key) != 0 {
            // Written here since our listing: compare it next round.
            continue;
        }
        if replica.store.purged_as(&key, digest) {
            plan.purge.push((key, digest));
        } else {
            plan.want.push(key);
        }
    }
    plan
}

/// A peer for the next round, at random among `candidates` (ring members this node can reach
/// now, itself excluded by the caller).
pub fn pick_peer(candidates: &[NodeId], rng: &mut impl Rng) -> Option<NodeId> {
    if candidates.is_empty() {
        return None;
    }
    Some(candidates[rng.random_range(0..candidates.len())].clone())
}
