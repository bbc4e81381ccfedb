//! The shell example (`examples/shell.rs`) driven through a pipe, as a person would type into
//! it: each test starts the real executable, which starts a real 3-node cluster of its own
//! (on a loopback net of its own, so tests can partition side by side), feeds it a script, and
//! checks what it printed. The partition test needs root and iptables, as every partition test
//! does: it fails, never skips, without them.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Longest a whole session may take, cluster start and stop included.
const SESSION_LIMIT: Duration = Duration::from_secs(120);

/// `target/<profile>/examples/shell`: `cargo test` builds the examples next to the test
/// executables' `deps/` directory.
fn shell_exe() -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let exe = profile_dir.join("examples").join("shell");
    assert!(
        exe.is_file(),
        "the shell example is not built at {}: `cargo test` builds it (or `cargo build --example shell`)",
        exe.display()
    );
    exe
}

struct Transcript {
    stdout: String,
    stderr: String,
    status: ExitStatus,
}

impl Transcript {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// The index of the first line at or after `from` that starts with `prefix`.
    fn find(&self, from: usize, prefix: &str) -> usize {
        let lines = self.lines();
        (from..lines.len())
            .find(|&i| lines[i].starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} after line {from}\n{self}"))
    }
}

impl std::fmt::Display for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- stdout ---\n{}--- stderr ---\n{}--- {} ---",
            self.stdout, self.stderr, self.status
        )
    }
}

/// Runs the shell with `args` on a unique loopback net, the `script` piped in.
fn run_shell(args: &[&str], script: &str) -> Transcript {
    let mut child = Command::new(shell_exe())
        .arg("--unique-net")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the shell");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(script.as_bytes()).unwrap();
    drop(stdin);
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        rx
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    // Stdout ends when the shell exits (its nodes log to files, not to our pipes).
    let stdout = match stdout.recv_timeout(SESSION_LIMIT) {
        Ok(text) => text,
        Err(_) => {
            let _ = child.kill();
            let stderr = stderr
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_default();
            panic!("the shell did not finish within {SESSION_LIMIT:?}; stderr:\n{stderr}");
        }
    };
    let status = child.wait().unwrap();
    let stderr = stderr
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    Transcript {
        stdout,
        stderr,
        status,
    }
}

#[test]
fn the_cart_walk_through() {
    let t = run_shell(
        &[],
        "put cart:alice milk\n\
         @n2 get cart:alice\n\
         @n3 put cart:alice bread\n\
         get cart:alice\n\
         merge cart:alice milk,bread\n\
         get cart:alice\n\
         @n3 get cart:alice\n\
         delete cart:alice\n\
         get cart:alice\n\
         quit\n\
         get cart:alice\n",
    );
    assert!(t.status.success(), "{t}");
    assert!(
        t.stderr.contains("starting n1..n3 ... converged in "),
        "{t}"
    );
    assert!(
        t.stderr.contains("  n3  http://127."),
        "the nodes' addresses: {t}"
    );
    let lines = t.lines();
    // With N = 3 on 3 nodes every node coordinates what it is asked, so the version vectors
    // are known: n1 wrote milk, n3 bread (blind: a sibling), n1 the merge.
    let siblings = ["  [1] milk", "  [2] bread"];
    let swapped = ["  [1] bread", "  [2] milk"];
    assert!(
        lines[4..6] == siblings || lines[4..6] == swapped,
        "two numbered siblings: {t}"
    );
    let mut expected = vec![
        "ok  (context: n1:1)",
        "milk  (context: n1:1)",
        "ok  (context: n3:1)",
        "2 siblings  (context: n1:1 n3:1)",
    ];
    expected.extend_from_slice(&lines[4..6]);
    expected.extend([
        "ok, replaced 2 values  (context: n1:2 n3:1)",
        "milk,bread  (context: n1:2 n3:1)",
        "milk,bread  (context: n1:2 n3:1)",
        "deleted 1 value",
        "not found  (deleted; context: n1:3 n3:1)",
    ]);
    assert_eq!(lines, expected, "{t}");
    assert!(t.stderr.contains("stopping the nodes ... done"), "{t}");
}

#[test]
fn a_partition_and_its_heal() {
    let fast = [
        "--gossip-interval-ms",
        "100",
        "--suspect-after-ms",
        "1000",
        "--put-timeout-ms",
        "1500",
        "--get-timeout-ms",
        "1500",
    ];
    let t = run_shell(
        &fast,
        "put before 1\n\
         partition n1 | n2,n3\n\
         wait n1 suspect on n2 within 30\n\
         @n2 members\n\
         @n2 put during 2\n\
         @n1 put lonely 3\n\
         heal\n\
         wait n1 alive within 30\n\
         wait converged within 30\n\
         put after 4\n\
         @n1 get after\n\
         @n2 get after\n\
         @n3 get after\n\
         @n1 get during\n",
    );
    let lines = t.lines();
    assert_eq!(lines[0], "ok  (context: n1:1)", "{t}");
    assert_eq!(lines[1], "partitioned: n1 | n2 n3", "{t}");
    assert!(lines[2].starts_with("n2 sees n1 suspect (after "), "{t}");
    assert_eq!(lines[3], "members as n2 sees them:", "{t}");
    let n1 = t.find(4, "n1 ");
    assert!(lines[n1].starts_with("n1    suspect  valid  127."), "{t}");
    // The majority side takes writes; the lone node cannot get W = 2 acks.
    let during = t.find(n1, "ok  (context: n2:1)");
    assert!(
        lines[during + 1].starts_with("error: n1: HTTP 503 insufficient_acks: "),
        "a failed request shows the node, the kind and the message: {t}"
    );
    assert_eq!(lines[during + 2], "healed", "{t}");
    assert!(
        lines[during + 3].starts_with("n2, n3 see n1 alive (after "),
        "{t}"
    );
    assert!(lines[during + 4].starts_with("converged (after "), "{t}");
    // Counters are per coordinator: n1's third dot (before, the failed lonely write, after).
    let put = lines[during + 5];
    let context = put.strip_prefix("ok  (context: ").expect(put);
    let read = format!("4  (context: {context}");
    assert_eq!(
        &lines[during + 6..],
        [&read, &read, &read, "2  (context: n2:1)"],
        "the write after the heal reads back on every node, the one from the partition too: {t}"
    );
    assert_eq!(
        t.status.code(),
        Some(1),
        "a command failed: exit code 1: {t}"
    );
}

#[test]
fn processes_are_killed_paused_and_restarted_and_bad_commands_do_not_stop_the_shell() {
    let t = run_shell(
        &[],
        "frob\n\
         put k\n\
         put k v\n\
         kill n3\n\
         @n3 get k\n\
         nodes\n\
         restart 3\n\
         wait converged within 30\n\
         @n3 get k\n\
         pause n2\n\
         resume n2\n\
         use n2\n\
         get k\n\
         kill n9\n",
    );
    let lines = t.lines();
    assert_eq!(
        lines[0], "error: unknown command `frob`; `help` lists the commands",
        "{t}"
    );
    assert_eq!(
        lines[1], "error: put needs 2 arguments; usage: put KEY VALUE",
        "{t}"
    );
    assert_eq!(lines[2], "ok  (context: n1:1)", "{t}");
    assert_eq!(lines[3], "n3 killed by SIGKILL", "{t}");
    assert!(lines[4].starts_with("error: n3: transport: "), "{t}");
    assert!(
        lines[5].starts_with("NODE  HTTP ") && lines[5].ends_with(" PROCESS"),
        "{t}"
    );
    let n3 = t.find(5, "n3 ");
    assert!(lines[n3].ends_with("  killed by SIGKILL"), "{t}");
    let restarted = t.find(n3, "n3 restarted with empty memory, serving at http://127.");
    assert!(lines[restarted + 1].starts_with("converged (after "), "{t}");
    assert_eq!(
        &lines[restarted + 2..],
        [
            "v  (context: n1:1)",
            "n2 paused",
            "n2 resumed",
            lines[restarted + 5],
            "v  (context: n1:1)",
            "error: no node `n9` (nodes: n1, n2, n3)",
        ],
        "{t}"
    );
    assert!(
        lines[restarted + 5].starts_with("commands now go to n2 (http://127."),
        "{t}"
    );
    assert_eq!(t.status.code(), Some(1), "{t}");
    assert!(
        t.stderr.contains("stopping the nodes ... done"),
        "input ended: stopped: {t}"
    );
}

#[test]
fn a_leave_hands_the_keys_to_the_others_and_the_node_that_left_serves_nothing() {
    let fast = ["--gossip-interval-ms", "200"];
    let t = run_shell(
        &fast,
        "put k1 a\n\
         @n3 put k2 b\n\
         leave n3\n\
         wait n3 left within 60\n\
         members\n\
         @n3 put k3 c\n\
         @n1 get k1\n\
         @n2 get k2\n\
         @n1 get k2\n",
    );
    let lines = t.lines();
    assert_eq!(lines[0], "ok  (context: n1:1)", "{t}");
    assert_eq!(lines[1], "ok  (context: n3:1)", "{t}");
    assert!(
        lines[2].starts_with(
            "n3 is leaving: it hands its keys to the other members, then is `left` \
             (`wait n3 left`) and can be stopped"
        ),
        "{t}"
    );
    assert!(lines[3].starts_with("n1, n2 see n3 left (after "), "{t}");
    assert_eq!(lines[4], "members as n1 sees them:", "{t}");
    assert!(
        lines[5].starts_with("NODE  STATUS  RING   HTTP ADDRESS"),
        "liveness and ring status side by side: {t}"
    );
    let ring_of = |node: &str| {
        let row = lines[t.find(5, &format!("{node} "))];
        row.split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        [ring_of("n1"), ring_of("n2"), ring_of("n3")],
        ["valid", "valid", "left"],
        "{t}"
    );
    let refused = t.find(5, "error: n3: ");
    assert!(
        lines[refused].starts_with("error: n3: HTTP 503 not_a_member: "),
        "a node that left refuses writes: {t}"
    );
    assert_eq!(
        &lines[refused + 1..],
        [
            "a  (context: n1:1)",
            "b  (context: n3:1)",
            "b  (context: n3:1)"
        ],
        "what n3 coordinated is read back from the two that stay: {t}"
    );
    assert_eq!(t.status.code(), Some(1), "a command failed: {t}");
}
