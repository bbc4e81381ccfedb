//! Network partitions between loopback addresses, made with iptables.
//!
//! Every [`Firewall`] owns one chain, `DYNAMO-<pid>-<n>`, jumped to from the top of `INPUT`.
//! Loopback packets traverse `OUTPUT` and then `INPUT`, so dropping in `INPUT` the packets
//! from A to B and from B to A is enough to make A and B silent to each other, on new and
//! established connections alike, while every other pair (and the test process itself, whose
//! connections leave from `127.0.0.1`) keeps talking. A dropped packet is silence, not a
//! refusal: peers see a partition as a real network would show it, by timeouts.
//!
//! The chain is created on first use, emptied by [`Firewall::heal`] and removed with its jump
//! rule when the firewall is dropped (also while a test unwinds from a panic). Chains left by a
//! process that died without unwinding are removed by the next process that sets up one.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use super::ProcessError;

/// The program run for every rule change.
pub const IPTABLES: &str = "iptables";
/// Prefix of the chains we own; what follows is `<pid>-<n>`.
const CHAIN_PREFIX: &str = "DYNAMO-";
/// Tries of a rule change that failed only because another process held the table.
const BUSY_ATTEMPTS: u32 = 5;

/// One set of partition rules (see the module docs). Nothing touches iptables until
/// [`Firewall::cut`] is called.
#[derive(Debug)]
pub struct Firewall {
    program: OsString,
    chain: String,
    installed: bool,
}

impl Default for Firewall {
    fn default() -> Self {
        Firewall::new()
    }
}

impl Firewall {
    /// A firewall with a chain name no other firewall of this process has.
    pub fn new() -> Firewall {
        Firewall::with_program(IPTABLES)
    }

    /// Like [`Firewall::new`], running `program` instead of `iptables` (for tests).
    pub(crate) fn with_program(program: impl Into<OsString>) -> Firewall {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Firewall {
            program: program.into(),
            chain: format!("{CHAIN_PREFIX}{}-{n}", std::process::id()),
            installed: false,
        }
    }

    /// The name of this firewall's chain.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Whether the chain exists now (created by a cut and not yet removed).
    pub fn is_installed(&self) -> bool {
        self.installed
    }

    /// Replaces the rules: afterwards no packet passes between the two addresses of any pair,
    /// in either direction, and every other packet passes. The first call checks that iptables
    /// exists and that we may change rules, and fails with what to do about it otherwise.
    pub fn cut(&mut self, pairs: &[(Ipv4Addr, Ipv4Addr)]) -> Result<(), ProcessError> {
        self.install()?;
        self.run(&["-F", &self.chain])?;
        for (a, b) in pairs {
            for (from, to) in [(a, b), (b, a)] {
                let (from, to) = (from.to_string(), to.to_string());
                self.run(&["-A", &self.chain, "-s", &from, "-d", &to, "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Removes every rule; a no-op if nothing was ever cut.
    pub fn heal(&mut self) -> Result<(), ProcessError> {
        if !self.installed {
            return Ok(());
        }
        self.run(&["-F", &self.chain])
    }

    /// Removes the jump and the chain; a no-op if it was never created.
    pub fn remove(&mut self) -> Result<(), ProcessError> {
        if !self.installed {
            return Ok(());
        }
        remove_chain(&self.program, &self.chain)?;
        self.installed = false;
        Ok(())
    }

    fn install(&mut self) -> Result<(), ProcessError> {
        if self.installed {
            return Ok(());
        }
        // The first command doubles as the check that iptables exists and that we may use it.
        let listing = run(&self.program, &["-S"])?;
        remove_stale_chains(&self.program, &listing);
        match run(&self.program, &["-N", &self.chain]) {
            Ok(_) => {}
            // Left by a dead process that had our pid: it is ours now.
            Err(ProcessError::Firewall(e)) if e.contains("exists") => {
                self.run(&["-F", &self.chain])?;
            }
            Err(e) => return Err(e),
        }
        self.installed = true;
        if run(&self.program, &["-C", "INPUT", "-j", &self.chain]).is_err() {
            self.run(&["-I", "INPUT", "1", "-j", &self.chain])?;
        }
        Ok(())
    }

    fn run(&self, args: &[&str]) -> Result<(), ProcessError> {
        run(&self.program, args).map(|_| ())
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            // Nobody can take the error from a drop; the next process's setup removes the rest.
            eprintln!("partition rules left behind: {e}");
        }
    }
}

/// Runs `program -w args`, returning its stdout; retries while another process holds the
/// table.
fn run(program: &OsString, args: &[&str]) -> Result<String, ProcessError> {
    let mut attempt = 1;
    loop {
        let output = Command::new(program).arg("-w").args(args).output();
        let output = match output {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ProcessError::Firewall(format!(
                    "partition: {} not found: install it (apt-get install iptables) or run as root",
                    program.to_string_lossy()
                )));
            }
            Err(e) => {
                return Err(ProcessError::Firewall(format!(
                    "partition: cannot run {}: {e}",
                    program.to_string_lossy()
                )));
            }
        };
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let command = format!("{} -w {}", program.to_string_lossy(), args.join(" "));
        let lowered = stderr.to_lowercase();
        if lowered.contains("permission denied") || lowered.contains("must be root") {
            return Err(ProcessError::Firewall(format!(
                "partition: not allowed to change firewall rules (run as root, or with CAP_NET_ADMIN): `{command}` said: {stderr}"
            )));
        }
        let busy = lowered.contains("temporarily unavailable") || lowered.contains("lock");
        if busy && attempt < BUSY_ATTEMPTS {
            attempt += 1;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        return Err(ProcessError::Firewall(format!(
            "partition: `{command}` failed ({}): {stderr}",
            output.status
        )));
    }
}

/// Removes the jump to `chain` from INPUT, then the chain itself.
fn remove_chain(program: &OsString, chain: &str) -> Result<(), ProcessError> {
    while run(program, &["-C", "INPUT", "-j", chain]).is_ok() {
        run(program, &["-D", "INPUT", "-j", chain])?;
    }
    run(program, &["-F", chain])?;
    run(program, &["-X", chain])?;
    Ok(())
}

/// Once per process: removes our chains whose process is gone (killed before it could
/// unwind), so that their rules cannot cut a later cluster on the same addresses.
fn remove_stale_chains(program: &OsString, listing: &str) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    for chain in stale_chains(listing, |pid| {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }) {
        // Another process may be removing it at the same time: then it is gone anyway.
        let _ = remove_chain(program, &chain);
    }
}

/// The chains of `iptables -S` output that we created from a process for which `running`
/// is false.
fn stale_chains(listing: &str, running: impl Fn(u32) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.strip_prefix("-N "))
        .filter(|chain| {
            chain
                .strip_prefix(CHAIN_PREFIX)
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
                .is_some_and(|pid| !running(pid))
        })
        .map(str::to_string)
        .collect()
}

/// The pairs of nodes (1-based indices, smaller first) that `groups` separates, checking
/// that the groups name every node of `1..=nodes` exactly once.
pub fn cut_pairs(groups: &[&[usize]], nodes: usize) -> Result<Vec<(usize, usize)>, ProcessError> {
    let bad = |why: String| Err(ProcessError::BadPartition(why));
    let mut group_of = vec![None; nodes];
    for (g, group) in groups.iter().enumerate() {
        if group.is_empty() {
            return bad(format!("group {} is empty", g + 1));
        }
        for &node in group.iter() {
            if !(1..=nodes).contains(&node) {
                return bad(format!("there is no node {node} (nodes are 1..={nodes})"));
            }
            if group_of[node - 1].replace(g).is_some() {
                return bad(format!("node {node} is in more than one group"));
            }
        }
    }
    if let Some(missing) = group_of.iter().position(Option::is_none) {
        return bad(format!(
            "node {} is in no group (every node must be listed)",
            missing + 1
        ));
    }
    let mut pairs = Vec::new();
    for a in 0..nodes {
        for b in a + 1..nodes {
            if group_of[a] != group_of[b] {
                pairs.push((a + 1, b + 1));
            }
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};

    #[test]
    fn groups_cut_exactly_the_pairs_across_them() {
        assert_eq!(
            cut_pairs(&[&[1], &[2, 3]], 3).unwrap(),
            vec![(1, 2), (1, 3)]
        );
        assert_eq!(
            cut_pairs(&[&[3, 1], &[2], &[4]], 4).unwrap(),
            vec![(1, 2), (1, 4), (2, 3), (2, 4), (3, 4)]
        );
        assert_eq!(cut_pairs(&[&[1, 2, 3]], 3).unwrap(), vec![]);
    }

    #[test]
    fn groups_must_list_every_node_once() {
        let why = |groups: &[&[usize]]| match cut_pairs(groups, 3) {
            Err(ProcessError::BadPartition(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(why(&[&[1], &[2]]).contains("node 3 is in no group"));
        assert!(why(&[&[1, 2], &[2, 3]]).contains("node 2 is in more than one group"));
        assert!(why(&[&[1, 2, 3], &[4]]).contains("there is no node 4"));
        assert!(why(&[&[0], &[1, 2, 3]]).contains("there is no node 0"));
        assert!(why(&[&[1, 2, 3], &[]]).contains("group 2 is empty"));
        assert!(why(&[]).contains("node 1 is in no group"));
    }

    #[test]
    fn only_our_chains_of_dead_processes_are_stale() {
        let listing = "-P INPUT ACCEPT\n-N DYNAMO-10-0\n-N DYNAMO-11-3\n-N DOCKER\n-N DYNAMO-x-1\n-A INPUT -j DYNAMO-10-0\n";
        assert_eq!(stale_chains(listing, |pid| pid == 11), vec!["DYNAMO-10-0"]);
        assert!(stale_chains(listing, |_| true).is_empty());
    }

    #[test]
    fn a_missing_iptables_is_a_clear_error() {
        let mut fw = Firewall::with_program("/nonexistent/iptables");
        let err = fw.cut(&[]).unwrap_err().to_string();
        assert!(
            err.contains("partition: /nonexistent/iptables not found: install it (apt-get install iptables) or run as root"),
            "{err}"
        );
        assert!(!fw.is_installed());
    }

    #[test]
    fn a_refusal_to_change_rules_is_a_clear_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::process::testutil::scratch("fw-denied");
        let fake = dir.join("iptables");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)' >&2\nexit 4\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = Firewall::with_program(&fake)
            .cut(&[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not allowed to change firewall rules"),
            "{err}"
        );
        assert!(err.contains("run as root"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn connects(from: Ipv4Addr, to: SocketAddr) -> bool {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(SocketAddr::from((from, 0)))
                .expect("bind the source address");
            let attempt = tokio::time::timeout(Duration::from_millis(300), socket.connect(to));
            matches!(attempt.await, Ok(Ok(_)))
        })
    }

    fn listing() -> String {
        run(&OsString::from(IPTABLES), &["-S"]).unwrap()
    }

    /// Needs iptables and root, as the partition tests do: fails (never skips) without them.
    #[test]
    fn a_cut_silences_exactly_the_pair_and_drop_removes_the_chain() {
        let net = crate::process::LoopbackNet::unique();
        let (a, b, c) = (net.node_ip(1), net.node_ip(2), net.node_ip(3));
        let listen_b = TcpListener::bind((b, 0)).unwrap();
        let listen_c = TcpListener::bind((c, 0)).unwrap();
        let (to_b, to_c) = (
            listen_b.local_addr().unwrap(),
            listen_c.local_addr().unwrap(),
        );
        assert!(connects(a, to_b), "no rule yet");

        let mut fw = Firewall::new();
        let chain = fw.chain().to_string();
        fw.cut(&[(a, b)]).unwrap();
        let rules = listing();
        assert!(rules.contains(&format!("-A INPUT -j {chain}")), "{rules}");
        assert!(!connects(a, to_b), "a to b is cut");
        let listen_a = TcpListener::bind((a, 0)).unwrap();
        assert!(!connects(b, listen_a.local_addr().unwrap()), "b to a too");
        assert!(connects(a, to_c), "a to c is not cut");
        assert!(connects(c, to_b), "c to b is not cut");
        // The test's own connections leave from 127.0.0.1 and are never cut.
        assert!(TcpStream::connect_timeout(&to_b, Duration::from_millis(300)).is_ok());

        fw.cut(&[(b, c)]).unwrap();
        assert!(connects(a, to_b), "a new cut replaces the old one");
        assert!(!connects(c, to_b));
        fw.heal().unwrap();
        assert!(connects(c, to_b), "healed");
        fw.cut(&[(a, c)]).unwrap();
        drop(fw);
        assert!(connects(a, to_c), "dropping the firewall heals");
        let rules = listing();
        assert!(!rules.contains(&chain), "chain and jump are gone: {rules}");
    }

    #[test]
    fn a_panicking_owner_still_removes_its_chain() {
        let chain = std::thread::spawn(|| {
            let mut fw = Firewall::new();
            let net = crate::process::LoopbackNet::unique();
            fw.cut(&[(net.node_ip(1), net.node_ip(2))]).unwrap();
            let chain = fw.chain().to_string();
            assert!(listing().contains(&chain));
            std::panic::panic_any(chain);
        })
        .join()
        .unwrap_err();
        let chain = chain.downcast::<String>().unwrap();
        assert!(!listing().contains(chain.as_str()), "{chain} left behind");
    }
}
