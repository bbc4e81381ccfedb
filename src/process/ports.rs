//! Loopback addresses and free ports for local nodes.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

use super::ProcessError;

/// A /24 of the loopback network holding one local cluster: node `i` lives on
/// `127.a.b.(i + 1)`. Linux routes all of 127.0.0.0/8 to `lo`, so any of them binds.
///
/// Clusters that may be partitioned side by side (tests running in parallel) need nets of
/// their own, or a firewall rule between two node addresses of one would cut the other too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LoopbackNet {
    a: u8,
    b: u8,
}

impl LoopbackNet {
    /// `127.0.0.0/24`: node `i` on `127.0.0.(i + 1)`, the addresses people type by hand.
    pub const DEFAULT: LoopbackNet = LoopbackNet { a: 0, b: 0 };

    /// The net `127.a.b.0/24`.
    pub const fn new(a: u8, b: u8) -> LoopbackNet {
        LoopbackNet { a, b }
    }

    /// A net no other call of this process returns (for the first 64 calls, then they
    /// repeat) and that differs from other processes' nets whose pids are within 1000 of
    /// ours; never [`LoopbackNet::DEFAULT`], which belongs to people and hand-made clusters.
    pub fn unique() -> LoopbackNet {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let counter = NEXT.fetch_add(1, Ordering::Relaxed);
        Self::for_slot(std::process::id(), counter)
    }

    /// The net of the `counter`-th cluster of process `pid`: 64 slots per pid, laid out on
    /// the 65534 nets from `127.0.1.0` to `127.255.254.0`, so that two (pid, counter) pairs
    /// meet only if their pids are more than 1000 apart.
    pub(crate) fn for_slot(pid: u32, counter: u32) -> LoopbackNet {
        const NETS: u64 = 65534;
        let slot = (u64::from(pid) * 64 + u64::from(counter % 64)) % NETS + 1;
        LoopbackNet {
            a: (slot >> 8) as u8,
            b: (slot & 0xff) as u8,
        }
    }

    /// The address of node `index` (1-based): `127.a.b.(index + 1)`, so `127.a.b.1` stays
    /// free (and `127.0.0.1`, the source of the test's own connections, is never a node's).
    pub fn node_ip(self, index: usize) -> Ipv4Addr {
        let last = u8::try_from(index + 1).unwrap_or(u8::MAX);
        Ipv4Addr::new(127, self.a, self.b, last)
    }
}

impl Default for LoopbackNet {
    fn default() -> Self {
        LoopbackNet::DEFAULT
    }
}

impl std::fmt::Display for LoopbackNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "127.{}.{}.0/24", self.a, self.b)
    }
}

/// The loopback address of node `index` (1-based) in the default net: `127.0.0.(index + 1)`,
/// so that every node has an address of its own and `127.0.0.1` stays free for everything else.
pub fn node_ip(index: usize) -> Ipv4Addr {
    LoopbackNet::DEFAULT.node_ip(index)
}

/// A TCP port that is free on `ip` right now. It is released before returning, so another
/// process may take it before the node binds it: callers retry on a bind failure.
pub fn pick_free_port(ip: Ipv4Addr) -> Result<u16, ProcessError> {
    Ok(pick_free_ports(ip, 1)?[0])
}

/// `count` distinct free ports on `ip`: all are held until every one is chosen, so they differ.
pub(crate) fn pick_free_ports(ip: Ipv4Addr, count: usize) -> Result<Vec<u16>, ProcessError> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = TcpListener::bind(SocketAddr::from((ip, 0))).map_err(|e| {
            ProcessError::io(
                format!("binding a free port on {ip} (Linux routes all of 127.0.0.0/8 to lo)"),
                e,
            )
        })?;
        held.push(listener);
    }
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| ProcessError::io(format!("reading a bound port on {ip}"), e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn every_node_has_its_own_loopback_address() {
        assert_eq!(node_ip(1), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(node_ip(3), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(node_ip(253), Ipv4Addr::new(127, 0, 0, 254));
        let net = LoopbackNet::new(7, 9);
        assert_eq!(net.node_ip(1), Ipv4Addr::new(127, 7, 9, 2));
        assert_eq!(net.to_string(), "127.7.9.0/24");
    }

    #[test]
    fn unique_nets_differ_within_a_process_and_are_never_the_default() {
        let nets: Vec<LoopbackNet> = (0..20).map(|_| LoopbackNet::unique()).collect();
        let distinct: HashSet<_> = nets.iter().collect();
        assert_eq!(distinct.len(), nets.len(), "{nets:?}");
        assert!(!nets.contains(&LoopbackNet::DEFAULT));
    }

    proptest! {
        #[test]
        fn slots_of_nearby_pids_never_meet(
            pid in 1u32..4_000_000,
            gap in 0u32..=1000,
            c1 in 0u32..64,
            c2 in 0u32..64,
        ) {
            prop_assume!(gap != 0 || c1 != c2);
            let one = LoopbackNet::for_slot(pid, c1);
            let other = LoopbackNet::for_slot(pid + gap, c2);
            prop_assert_ne!(one, other);
            prop_assert_ne!(one, LoopbackNet::DEFAULT);
            prop_assert_ne!(one, LoopbackNet::new(255, 255));
        }
    }

    #[test]
    fn picked_ports_are_distinct_and_bindable_on_the_node_ip() {
        for ip in [node_ip(7), LoopbackNet::unique().node_ip(7)] {
            let ports = pick_free_ports(ip, 4).unwrap();
            let mut sorted = ports.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 4, "{ports:?}");
            assert!(ports.iter().all(|&p| p != 0));
            for port in ports {
                let l = TcpListener::bind(SocketAddr::from((ip, port))).unwrap();
                assert_eq!(l.local_addr().unwrap().ip(), ip);
            }
            assert_ne!(pick_free_port(ip).unwrap(), 0);
        }
    }
}
