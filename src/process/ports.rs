//! Loopback addresses and free ports for local nodes.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use super::ProcessError;

/// The loopback address of node `index` (1-based): `127.0.0.(index + 1)`, so that every node
/// has an address of its own and `127.0.0.1` stays free for everything else.
pub fn node_ip(index: usize) -> Ipv4Addr {
    let last = u8::try_from(index + 1).unwrap_or(u8::MAX);
    Ipv4Addr::new(127, 0, 0, last)
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

    #[test]
    fn every_node_has_its_own_loopback_address() {
        assert_eq!(node_ip(1), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(node_ip(3), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(node_ip(253), Ipv4Addr::new(127, 0, 0, 254));
    }

    #[test]
    fn picked_ports_are_distinct_and_bindable_on_the_node_ip() {
        let ip = node_ip(7);
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
