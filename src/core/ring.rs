//! The consistent-hash ring: which nodes hold a key, and in which order.
//!
//! # Positions (a cross-process contract: changing either formula moves every key)
//!
//! - A key sits at `stable_hash(key)`.
//! - Virtual node `i` (for `i` in `0..vnodes`) of node `node` sits at token
//!   `stable_hash_parts(&[b"vnode", node.as_str().as_bytes(), &(i as u32).to_le_bytes()])`.
//!
//! Both hashes are XXH3-64 (see [`crate::core::hash`]), so every process of every release
//! computes the same ring from the same membership.
//!
//! # Walk order
//!
//! Tokens are ordered by `(token, node name, vnode index)`, so two vnodes that hash to the same
//! `u64` still have one agreed order. The walk for a position starts at the first token
//! `>= position` (wrapping past the largest token to the smallest) and goes clockwise. The
//! *preference list* is every distinct physical node in walk order: the first N are the
//! key's owners, the rest are the fallbacks of the sloppy quorum.
//!
//! # Cost
//!
//! The ring is built once per membership change into a sorted token table, and for every token
//! the first `min(S, PREFIX)` distinct nodes of its walk are precomputed (build cost
//! O(V log V + V * PREFIX)). A lookup is one binary search; nodes past the prefix are found
//! lazily by continuing the walk.

use std::fmt;

use crate::core::hash::{stable_hash, stable_hash_parts};
use crate::core::ids::NodeId;

/// Virtual nodes per physical node unless configured otherwise.
pub const DEFAULT_VNODES: u32 = 128;

/// How many distinct nodes of each walk are precomputed; covers N plus typical fallbacks.
pub const PREFIX: usize = 16;

/// Most physical nodes a ring can hold, because node indexes in the table are `u16`.
pub const MAX_NODES: usize = u16::MAX as usize + 1;

/// Most tokens (total vnodes) a ring can hold, so a bad `--vnodes` is an error, not an OOM abort.
pub const MAX_TOKENS: u64 = 1 << 22;

/// Why a ring could not be built or consulted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The ring has no nodes, so no key has an owner.
    #[error("the ring has no nodes")]
    Empty,
    /// A node was given zero virtual nodes, so it could never own anything.
    #[error("node {0} has zero virtual nodes")]
    ZeroVnodes(NodeId),
    /// The same node name appeared twice in the membership.
    #[error("node {0} appears more than once")]
    DuplicateNode(NodeId),
    /// More physical nodes than [`MAX_NODES`].
    #[error("{0} nodes exceed the ring limit of {MAX_NODES}")]
    TooManyNodes(usize),
    /// More total virtual nodes than [`MAX_TOKENS`].
    #[error("{0} virtual nodes exceed the ring limit of {MAX_TOKENS}")]
    TooManyTokens(u64),
}

/// An immutable consistent-hash ring built from one membership. The default ring has no
/// nodes: every lookup on it is [`RingError::Empty`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Ring {
    /// Physical nodes sorted by name; a node's index here is its `u16` id in the tables.
    nodes: Vec<NodeId>,
    /// Virtual node count of each node, parallel to `nodes`.
    vnodes: Vec<u32>,
    /// All tokens, sorted by (token, node name, vnode index).
    tokens: Vec<u64>,
    /// Owner node index of each token, parallel to `tokens`.
    token_node: Vec<u16>,
    /// Row `i` (length `stride`) holds the first distinct nodes of the walk from token `i`.
    prefix: Vec<u16>,
    /// `min(node count, PREFIX)`.
    stride: usize,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The tables are large and unreadable; the membership and size say what matters.
        let members: Vec<(&NodeId, u32)> =
            self.nodes.iter().zip(self.vnodes.iter().copied()).collect();
        f.debug_struct("Ring")
            .field("members", &members)
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl Ring {
    /// Builds the ring from `(node, vnode count)` pairs, in any order.
    pub fn build(members: impl IntoIterator<Item = (NodeId, u32)>) -> Result<Ring, RingError> {
        Ring::build_with(members, Ring::token)
    }

    /// Builds the ring giving every node [`DEFAULT_VNODES`] virtual nodes.
    pub fn with_default_vnodes(nodes: impl IntoIterator<Item = NodeId>) -> Result<Ring, RingError> {
        Ring::build(nodes.into_iter().map(|n| (n, DEFAULT_VNODES)))
    }

    /// The ring position of a key (see the module doc).
    pub fn key_position(key: &[u8]) -> u64 {
        stable_hash(key)
    }

    /// The token of virtual node `i` of `node` (see the module doc).
    pub fn token(node: &NodeId, i: u32) -> u64 {
        stable_hash_parts(&[b"vnode", node.as_str().as_bytes(), &i.to_le_bytes()])
    }

    /// Builds the table with an arbitrary token function, so tests can force token ties.
    fn build_with(
        members: impl IntoIterator<Item = (NodeId, u32)>,
        token: impl Fn(&NodeId, u32) -> u64,
    ) -> Result<Ring, RingError> {
        let mut members: Vec<(NodeId, u32)> = members.into_iter().collect();
        members.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some((node, _)) = members.iter().find(|(_, v)| *v == 0) {
            return Err(RingError::ZeroVnodes(node.clone()));
        }
        if let Some(pair) = members.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(RingError::DuplicateNode(pair[0].0.clone()));
        }
        if members.len() > MAX_NODES {
            return Err(RingError::TooManyNodes(members.len()));
        }
        let total: u64 = members.iter().map(|(_, v)| u64::from(*v)).sum();
        if total > MAX_TOKENS {
            return Err(RingError::TooManyTokens(total));
        }

        // Sorting (token, node index, vnode index) is the documented tie-break, because node
        // indexes follow name order.
        let mut entries: Vec<(u64, u16, u32)> = Vec::with_capacity(total as usize);
        for (idx, (node, count)) in members.iter().enumerate() {
            let idx = idx as u16; // < MAX_NODES, checked above
            entries.extend((0..*count).map(|i| (token(node, i), idx, i)));
        }
        entries.sort_unstable();

        let (nodes, vnodes) = members.into_iter().unzip();
        let mut ring = Ring {
            nodes,
            vnodes,
            tokens: entries.iter().map(|e| e.0).collect(),
            token_node: entries.iter().map(|e| e.1).collect(),
            prefix: Vec::new(),
            stride: 0,
        };
        ring.fill_prefix();
        Ok(ring)
    }

    /// Precomputes every token's first `stride` distinct nodes in O(V * stride).
    fn fill_prefix(&mut self) {
        let v = self.tokens.len();
        let stride = self.nodes.len().min(PREFIX);
        if v == 0 {
            return;
        }
        // The last row is walked directly (it wraps; the walk takes its lazy path since no
        // prefix exists yet); every other row derives from its successor: the walk from i is
        // node(i), then the walk from i+1 without node(i).
        let last: Vec<u16> = Walk::new(self, v - 1).take(stride).collect();
        self.stride = stride;
        self.prefix = vec![0; v * stride];
        self.prefix[(v - 1) * stride..].copy_from_slice(&last);
        for i in (0..v - 1).rev() {
            let (head, tail) = self.prefix.split_at_mut((i + 1) * stride);
            let row = &mut head[i * stride..];
            let own = self.token_node[i];
            row[0] = own;
            let rest = tail[..stride].iter().copied().filter(|&n| n != own);
            for (slot, n) in row[1..].iter_mut().zip(rest) {
                *slot = n;
            }
        }
    }

    /// Physical nodes, sorted by name.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Number of physical nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the ring has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of tokens (total virtual nodes).
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// The distinct token values, ascending: where the owners of a ring position may change.
    pub fn token_values(&self) -> Vec<u64> {
        let mut values = self.tokens.clone();
        values.dedup();
        values
    }

    /// Whether `node` is a member of this ring.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.nodes.binary_search(node).is_ok()
    }

    /// The virtual node count of `node`, if it is a member.
    pub fn vnodes_of(&self, node: &NodeId) -> Option<u32> {
        let idx = self.nodes.binary_search(node).ok()?;
        Some(self.vnodes[idx])
    }

    /// Every node, distinct, in walk order from the key's position: owners first, then fallbacks.
    pub fn preference_list(&self, key: &[u8]) -> Result<PreferenceList<'_>, RingError> {
        self.preference_list_at(Ring::key_position(key))
    }

    /// Every node, distinct, in walk order from a ring position.
    pub fn preference_list_at(&self, position: u64) -> Result<PreferenceList<'_>, RingError> {
        if self.tokens.is_empty() {
            return Err(RingError::Empty);
        }
        let start = self.tokens.partition_point(|&t| t < position);
        let start = if start == self.tokens.len() { 0 } else { start };
        Ok(PreferenceList {
            walk: Walk::new(self, start),
        })
    }

    /// The first `min(n, len)` nodes of the key's preference list.
    pub fn owners(&self, key: &[u8], n: usize) -> Result<Vec<NodeId>, RingError> {
        Ok(self.preference_list(key)?.take(n).cloned().collect())
    }

    /// Each node's fraction of the hash space for which it is the first owner (sums to 1).
    pub fn primary_shares(&self) -> Vec<(NodeId, f64)> {
        self.replica_shares(1)
    }

    /// Each node's fraction of the hash space for which it is among the first `n` owners
    /// (sums to `min(n, len)`); this is the share of the data each node stores.
    ///
    /// Exact, from the arcs between tokens. O(V * min(n, PREFIX)) while `n <= PREFIX` or
    /// `n >= len`; O(V^2) worst case in between, as the walk past the prefix is not stored.
    pub fn replica_shares(&self, n: usize) -> Vec<(NodeId, f64)> {
        let s = self.nodes.len();
        let mut acc = vec![0u128; s];
        let v = self.tokens.len();
        if n >= s {
            // Every walk covers every node, so each node holds all of the space.
            acc.fill(1u128 << 64);
        } else {
            for i in 0..v {
                let arc = self.arc(i);
                for idx in Walk::new(self, i).take(n) {
                    acc[usize::from(idx)] += arc;
                }
            }
        }
        let space = 2f64.powi(64);
        self.nodes
            .iter()
            .cloned()
            .zip(acc.into_iter().map(|a| a as f64 / space))
            .collect()
    }

    /// Size of the arc `(tokens[i-1], tokens[i]]` (wrapping for `i == 0`), whose positions all
    /// start their walk at token `i`.
    fn arc(&self, i: usize) -> u128 {
        let t = u128::from(self.tokens[i]);
        if i == 0 {
            let last = u128::from(self.tokens[self.tokens.len() - 1]);
            (1u128 << 64) - last + t
        } else {
            t - u128::from(self.tokens[i - 1])
        }
    }
}

/// The distinct node indexes of a walk: the precomputed prefix, then a lazy continuation.
#[derive(Clone, Debug)]
struct Walk<'a> {
    ring: &'a Ring,
    /// Token index the walk starts at.
    start: usize,
    /// Nodes yielded so far.
    yielded: usize,
    /// Tokens examined so far by the lazy continuation, counted from `start`.
    cursor: usize,
    /// Nodes already yielded, allocated only once the walk outruns the prefix.
    seen: Vec<bool>,
}

impl<'a> Walk<'a> {
    fn new(ring: &'a Ring, start: usize) -> Walk<'a> {
        Walk {
            ring,
            start,
            yielded: 0,
            cursor: 0,
            seen: Vec::new(),
        }
    }

    fn remaining(&self) -> usize {
        self.ring.nodes.len() - self.yielded
    }
}

impl Iterator for Walk<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        let ring = self.ring;
        if self.yielded >= ring.nodes.len() {
            return None;
        }
        // While the prefix is being built, its rows are not ready: use the lazy path then.
        let prefix_ready = !ring.prefix.is_empty();
        if prefix_ready && self.yielded < ring.stride {
            let n = ring.prefix[self.start * ring.stride + self.yielded];
            self.yielded += 1;
            return Some(n);
        }
        if self.seen.is_empty() {
            self.seen = vec![false; ring.nodes.len()];
            if prefix_ready {
                let row = &ring.prefix[self.start * ring.stride..][..self.yielded];
                for &n in row {
                    self.seen[usize::from(n)] = true;
                }
            }
        }
        let v = ring.tokens.len();
        while self.cursor < v {
            let n = ring.token_node[(self.start + self.cursor) % v];
            self.cursor += 1;
            if !self.seen[usize::from(n)] {
                self.seen[usize::from(n)] = true;
                self.yielded += 1;
                return Some(n);
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Every node has at least one token, so a full walk yields every node exactly once.
        (self.remaining(), Some(self.remaining()))
    }
}

/// A key's preference list: every node, distinct, in clockwise walk order.
#[derive(Clone, Debug)]
pub struct PreferenceList<'a> {
    walk: Walk<'a>,
}

impl<'a> Iterator for PreferenceList<'a> {
    type Item = &'a NodeId;

    fn next(&mut self) -> Option<&'a NodeId> {
        let idx = self.walk.next()?;
        Some(&self.walk.ring.nodes[usize::from(idx)])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.walk.size_hint()
    }
}

impl ExactSizeIterator for PreferenceList<'_> {}

impl std::iter::FusedIterator for PreferenceList<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(s: usize) -> Vec<NodeId> {
        (1..=s).map(|i| NodeId::new(format!("n{i}"))).collect()
    }

    fn ring_of(s: usize) -> Ring {
        Ring::with_default_vnodes(names(s)).unwrap()
    }

    fn list(ring: &Ring, key: &[u8]) -> Vec<String> {
        ring.preference_list(key)
            .unwrap()
            .map(|n| n.as_str().to_owned())
            .collect()
    }

    /// Slow reference: sort every vnode by (token, name, index), scan for the start, walk.
    fn reference_at(
        members: &[(NodeId, u32)],
        token: &impl Fn(&NodeId, u32) -> u64,
        position: u64,
    ) -> Vec<NodeId> {
        let mut all: Vec<(u64, NodeId, u32)> = members
            .iter()
            .flat_map(|(n, v)| (0..*v).map(move |i| (token(n, i), n.clone(), i)))
            .collect();
        all.sort();
        let start = all.iter().position(|e| e.0 >= position).unwrap_or(0);
        let mut out: Vec<NodeId> = Vec::new();
        for k in 0..all.len() {
            let node = &all[(start + k) % all.len()].1;
            if !out.contains(node) {
                out.push(node.clone());
            }
        }
        out
    }

    /// Reference shares: every position in the arc ending at a distinct token value walks
    /// like that token value.
    fn reference_shares(
        members: &[(NodeId, u32)],
        token: &impl Fn(&NodeId, u32) -> u64,
        n: usize,
    ) -> Vec<(NodeId, f64)> {
        let mut values: Vec<u64> = members
            .iter()
            .flat_map(|(node, v)| (0..*v).map(move |i| token(node, i)))
            .collect();
        values.sort();
        values.dedup();
        let mut acc: std::collections::BTreeMap<NodeId, u128> =
            members.iter().map(|(node, _)| (node.clone(), 0)).collect();
        for (k, &t) in values.iter().enumerate() {
            let prev = if k == 0 {
                i128::from(values[values.len() - 1]) - (1i128 << 64)
            } else {
                i128::from(values[k - 1])
            };
            let arc = (i128::from(t) - prev) as u128;
            for node in reference_at(members, token, t).into_iter().take(n) {
                *acc.get_mut(&node).unwrap() += arc;
            }
        }
        acc.into_iter()
            .map(|(node, a)| (node, a as f64 / 2f64.powi(64)))
            .collect()
    }

    fn members_strategy(max_nodes: usize) -> impl Strategy<Value = Vec<(NodeId, u32)>> {
        prop::collection::vec(1u32..8, 1..=max_nodes).prop_map(|vs| {
            vs.into_iter()
                .enumerate()
                .map(|(i, v)| (NodeId::new(format!("node{i}")), v))
                .collect()
        })
    }

    /// Tokens squeezed into 0..16 (shifted by `seed`), so ties and wraps are common.
    fn tiny_token(seed: u64) -> impl Fn(&NodeId, u32) -> u64 {
        move |node, i| seed.wrapping_add(Ring::token(node, i) % 16)
    }

    proptest! {
        #[test]
        fn owners_are_n_distinct_nodes(s in 1usize..12, n in 1usize..5, key in any::<Vec<u8>>()) {
            let ring = ring_of(s);
            let owners = ring.owners(&key, n).unwrap();
            prop_assert_eq!(owners.len(), n.min(s));
            let mut sorted = owners.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), owners.len());
            prop_assert!(owners.iter().all(|o| ring.contains(o)));
        }

        #[test]
        fn full_list_is_a_permutation_of_the_nodes(s in 1usize..24, key in any::<Vec<u8>>()) {
            let ring = ring_of(s);
            let pl = ring.preference_list(&key).unwrap();
            prop_assert_eq!(pl.len(), s);
            let mut all: Vec<NodeId> = pl.cloned().collect();
            all.sort();
            prop_assert_eq!(&all[..], ring.nodes());
        }

        #[test]
        fn lookup_matches_reference_walk_with_ties(
            members in members_strategy(24),
            seed in prop_oneof![Just(0u64), Just(u64::MAX - 7), any::<u64>()],
            offsets in prop::collection::vec(0u64..20, 1..8),
        ) {
            let token = tiny_token(seed);
            let ring = Ring::build_with(members.clone(), &token).unwrap();
            for off in offsets {
                // Positions around the token range: before, on, between and past tokens.
                let position = seed.wrapping_add(off).wrapping_sub(2);
                let got: Vec<NodeId> =
                    ring.preference_list_at(position).unwrap().cloned().collect();
                prop_assert_eq!(got, reference_at(&members, &token, position));
            }
        }

        #[test]
        fn lookup_matches_reference_walk_with_real_tokens(
            members in members_strategy(24),
            keys in prop::collection::vec(any::<Vec<u8>>(), 1..8),
        ) {
            let ring = Ring::build(members.clone()).unwrap();
            for key in keys {
                let got: Vec<NodeId> = ring.preference_list(&key).unwrap().cloned().collect();
                let want = reference_at(&members, &Ring::token, Ring::key_position(&key));
                prop_assert_eq!(got, want);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn shares_match_reference_arcs(
            members in members_strategy(20),
            seed in any::<u64>(),
            n in 1usize..20,
        ) {
            let token = tiny_token(seed);
            let ring = Ring::build_with(members.clone(), &token).unwrap();
            let got = ring.replica_shares(n);
            let want = reference_shares(&members, &token, n);
            prop_assert_eq!(got.len(), want.len());
            for ((gn, gs), (wn, ws)) in got.iter().zip(&want) {
                prop_assert_eq!(gn, wn);
                prop_assert!((gs - ws).abs() < 1e-12, "{gn}: {gs} vs {ws}");
            }
            let sum: f64 = got.iter().map(|(_, s)| s).sum();
            prop_assert!((sum - n.min(members.len()) as f64).abs() < 1e-9);
        }
    }

    #[test]
    fn pinned_lists_never_change() {
        // The documented token formula, literally, and one pinned output of it.
        let n1 = NodeId::new("n1");
        assert_eq!(
            Ring::token(&n1, 7),
            stable_hash_parts(&[b"vnode", b"n1", &7u32.to_le_bytes()])
        );
        assert_eq!(Ring::token(&n1, 0), 0xbf27_d30a_30ad_b72e);
        let ring = ring_of(5);
        assert_eq!(list(&ring, b"cart:alice"), ["n1", "n4", "n5", "n3", "n2"]);
        assert_eq!(list(&ring, b"k1"), ["n3", "n2", "n5", "n1", "n4"]);
        assert_eq!(list(&ring, b""), ["n1", "n5", "n3", "n4", "n2"]);
        assert_eq!(list(&ring, b"user:42"), ["n3", "n2", "n1", "n4", "n5"]);
        assert_eq!(Ring::key_position(b""), 0x2d06_8005_38d3_94c2);
    }

    #[test]
    fn membership_order_does_not_matter() {
        let mut nodes = names(7);
        let a = Ring::with_default_vnodes(nodes.clone()).unwrap();
        nodes.reverse();
        let b = Ring::with_default_vnodes(nodes).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.nodes(), &names(7)[..]);
        assert_eq!(a.token_count(), 7 * 128);
        assert_eq!(a.vnodes_of(&NodeId::new("n3")), Some(DEFAULT_VNODES));
        assert_eq!(a.vnodes_of(&NodeId::new("zz")), None);
    }

    #[test]
    fn ties_break_by_node_name_then_vnode() {
        // Every vnode on one token: the walk is the nodes in name order from any position.
        let members: Vec<(NodeId, u32)> = ["c", "a", "b"]
            .into_iter()
            .map(|n| (NodeId::new(n), 3))
            .collect();
        let ring = Ring::build_with(members, |_, _| 42).unwrap();
        for position in [0, 42, 43, u64::MAX] {
            let got: Vec<&str> = ring
                .preference_list_at(position)
                .unwrap()
                .map(|n| n.as_str())
                .collect();
            assert_eq!(got, ["a", "b", "c"]);
        }
        let shares = ring.primary_shares();
        assert_eq!(shares[0], (NodeId::new("a"), 1.0));
        assert_eq!(shares[1].1, 0.0);
    }

    #[test]
    fn many_nodes_use_the_lazy_continuation() {
        let members: Vec<(NodeId, u32)> = (0..40)
            .map(|i| (NodeId::new(format!("m{i:02}")), 1 + (i % 5) * 30))
            .collect();
        let ring = Ring::build(members.clone()).unwrap();
        for k in 0..50 {
            let key = format!("key-{k}");
            let got: Vec<NodeId> = ring
                .preference_list(key.as_bytes())
                .unwrap()
                .cloned()
                .collect();
            let want = reference_at(&members, &Ring::token, Ring::key_position(key.as_bytes()));
            assert_eq!(got, want);
        }
        let replicas = ring.replica_shares(20);
        let sum: f64 = replicas.iter().map(|(_, s)| s).sum();
        assert!((sum - 20.0).abs() < 1e-9);
    }

    #[test]
    fn adding_a_node_moves_keys_only_onto_it() {
        const KEYS: usize = 20_000;
        for s in [3usize, 5, 8] {
            let old = ring_of(s);
            let new_node = NodeId::new(format!("n{}", s + 1));
            let grown = ring_of(s + 1);
            let mut moved = 0usize;
            for k in 0..KEYS {
                let key = format!("key:{k}");
                let before: Vec<NodeId> = old
                    .preference_list(key.as_bytes())
                    .unwrap()
                    .cloned()
                    .collect();
                let after: Vec<NodeId> = grown
                    .preference_list(key.as_bytes())
                    .unwrap()
                    .cloned()
                    .collect();
                let without: Vec<NodeId> =
                    after.iter().filter(|n| **n != new_node).cloned().collect();
                assert_eq!(
                    without, before,
                    "relative order of old nodes changed for {key}"
                );
                if after[0] != before[0] {
                    assert_eq!(after[0], new_node);
                    moved += 1;
                }
            }
            let expected = 1.0 / (s + 1) as f64;
            let fraction = moved as f64 / KEYS as f64;
            assert!(
                (0.6 * expected..=1.4 * expected).contains(&fraction),
                "S={s}: moved {fraction}, expected about {expected}"
            );
            let share = grown
                .primary_shares()
                .into_iter()
                .find(|(n, _)| *n == new_node)
                .unwrap()
                .1;
            assert!(
                (0.6 * expected..=1.4 * expected).contains(&share),
                "S={s}: new node share {share}, expected about {expected}"
            );
            // Removing the node restores the old ring exactly.
            let shrunk = Ring::with_default_vnodes(
                grown.nodes().iter().filter(|n| **n != new_node).cloned(),
            )
            .unwrap();
            assert_eq!(shrunk, old);
            assert_eq!(list(&shrunk, b"cart:alice"), list(&old, b"cart:alice"));
        }
    }

    fn worst_deviation(shares: &[(NodeId, f64)]) -> f64 {
        let mean = shares.iter().map(|(_, s)| s).sum::<f64>() / shares.len() as f64;
        shares
            .iter()
            .map(|(_, s)| (s - mean).abs() / mean)
            .fold(0.0, f64::max)
    }

    #[test]
    fn balance_with_default_vnodes() {
        for s in 3..=10 {
            let ring = ring_of(s);
            let primary = worst_deviation(&ring.primary_shares());
            let replica = worst_deviation(&ring.replica_shares(3));
            println!(
                "S={s:2}: worst deviation from mean share: primary {:5.1}%, replica(N=3) {:5.1}%",
                primary * 100.0,
                replica * 100.0
            );
            assert!(replica <= 0.15, "S={s}: replica share deviation {replica}");
        }
    }

    #[test]
    fn empty_ring_and_bad_memberships_are_errors() {
        let empty = Ring::default();
        assert!(empty.is_empty());
        assert_eq!(empty.preference_list(b"k").err(), Some(RingError::Empty));
        assert_eq!(empty.owners(b"k", 3), Err(RingError::Empty));
        assert!(empty.primary_shares().is_empty());
        assert_eq!(Ring::build([]), Ok(Ring::default()));

        let zero = Ring::build([(NodeId::new("a"), 4), (NodeId::new("b"), 0)]);
        assert_eq!(zero, Err(RingError::ZeroVnodes(NodeId::new("b"))));
        let dup = Ring::with_default_vnodes(names(3).into_iter().chain([NodeId::new("n2")]));
        assert_eq!(dup, Err(RingError::DuplicateNode(NodeId::new("n2"))));
        let huge = Ring::build([(NodeId::new("a"), u32::MAX)]);
        assert_eq!(huge, Err(RingError::TooManyTokens(u64::from(u32::MAX))));
    }

    #[test]
    fn single_node_owns_everything() {
        let ring = Ring::build([(NodeId::new("solo"), 1)]).unwrap();
        assert_eq!(ring.owners(b"x", 3).unwrap(), vec![NodeId::new("solo")]);
        assert_eq!(ring.primary_shares(), vec![(NodeId::new("solo"), 1.0)]);
        assert_eq!(ring.replica_shares(3), vec![(NodeId::new("solo"), 1.0)]);
    }
}
