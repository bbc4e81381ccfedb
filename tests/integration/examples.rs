//! The non-interactive examples run as a user runs them, and say what they should.
//!
//! `cargo test` builds every example into `target/<profile>/examples/`, the parent of the
//! directory holding this test executable (`target/<profile>/deps/`). An example that is not
//! there, or older than its source, fails the test: it must never be skipped or run stale
//! silently. (`cargo test --test integration examples::` alone does not rebuild the
//! examples; run `cargo build --examples` first, or plain `cargo test`.)

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished example printed.
struct Run {
    stdout: String,
    stderr: String,
}

/// The built example `name`, or a panic saying where it was looked for.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "example {name} is not built at {}: `cargo test` builds the examples (or run `cargo build --examples`)",
        path.display()
    );
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.rs"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(written)) = (modified(&path), modified(&source)) {
        assert!(
            built >= written,
            "example {name} at {} is older than {}: run `cargo build --examples` (plain `cargo test` does)",
            path.display(),
            source.display()
        );
    }
    path
}

/// Runs an example to its end, killing it (and failing) after `deadline`; fails unless it
/// exits with code 0.
fn run(name: &str, deadline: Duration) -> Run {
    run_with_args(name, &[], deadline)
}

/// [`run`], with command-line arguments.
fn run_with_args(name: &str, args: &[&str], deadline: Duration) -> Run {
    let mut child = Command::new(example(name))
        .args(args)
        .env("RUST_LOG", "warn")
        // The examples that start node processes find this exact binary.
        .env("DYNAMO_NODE_BIN", env!("CARGO_BIN_EXE_dynamo-node"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting example {name}: {e}"));
    // Drained on threads of their own, so a chatty example never blocks on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the example") {
            break Some(status);
        }
        if started.elapsed() > deadline {
            // The node processes it started die with it (parent-death signal).
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    match status {
        None => panic!(
            "example {name} did not finish within {deadline:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        ),
        Some(status) if !status.success() => {
            panic!("example {name} failed: {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
        }
        Some(_) => Run { stdout, stderr },
    }
}

impl Run {
    /// The first line of stdout that starts with `prefix`, or a panic showing all output.
    fn line(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| {
                panic!(
                    "no line starting with {prefix:?}\n--- stdout\n{}\n--- stderr\n{}",
                    self.stdout, self.stderr
                )
            })
    }
}

#[test]
fn a_lone_node_with_default_settings_writes_reads_and_stops() {
    let out = run("lone_node", Duration::from_secs(60));
    assert_eq!(out.line("alice:"), "alice: milk, eggs", "{}", out.stderr);
}

#[test]
fn cart_shows_siblings_their_merge_and_an_add_surviving_a_delete() {
    let out = run("cart", Duration::from_secs(60));
    assert_eq!(
        out.line("read: 2 siblings"),
        "read: 2 siblings: [eggs] [milk]"
    );
    assert_eq!(
        out.line("the application merges"),
        "the application merges them (union) and writes [eggs, milk] with the read's context"
    );
    assert_eq!(
        out.line("read: one cart: [eggs"),
        "read: one cart: [eggs, milk]"
    );
    assert_eq!(
        out.line("read: one cart: [bread"),
        "read: one cart: [bread, eggs, milk] (the add survived the concurrent delete)"
    );
    out.line("a delete whose context has seen every version empties the cart: not found");
    assert_eq!(out.stdout.lines().last(), Some("done"));
}

#[test]
fn embedded_node_joins_two_processes_and_its_writes_land_on_them() {
    let out = run("embedded", Duration::from_secs(180));
    assert_eq!(out.stdout.matches("started node process n").count(), 2);
    out.line("embedded node embedded started on 127.");
    out.line("supervisor: dynamo.node@embedded started");
    let joined = out.line("joined: embedded sees ");
    assert!(joined.contains("n1") && joined.contains("n2"), "{joined}");
    // N = 2 of 3 nodes: every key on exactly two of them, so keys reach the processes.
    let puts: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("put user:"))
        .collect();
    assert_eq!(puts.len(), 6, "{}", out.stdout);
    for put in &puts {
        let holders = put.split("stored on ").nth(1).unwrap_or_default();
        assert_eq!(holders.split(", ").count(), 2, "{put}");
    }
    out.line("6 of 6 keys have a replica on another node; keys per node: ");
    out.line("read back 6 of 6 keys through the Rust API");
    let http_read = out.line("read user:1 through n");
    assert!(http_read.ends_with("'s HTTP API: profile 1"), "{http_read}");
    out.line("supervisor: dynamo.node@embedded terminated");
    out.line("stopped the node processes");
    assert_eq!(out.stdout.lines().last(), Some("done"));
}

#[test]
fn memory_reports_every_node_of_a_cluster_it_loads() {
    let out = run_with_args(
        "memory",
        &["--records", "300", "--concurrency", "8", "--idle-secs", "1"],
        Duration::from_secs(120),
    );
    assert!(out.stdout.contains("judged on gross"), "{}", out.stdout);
    let line = out.line("{\"memory\":");
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    let nodes = json["memory"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{line}");
    for node in nodes {
        // N = 3 on 3 nodes: every node holds every record, `user0000000042` + 100 bytes.
        assert_eq!(node["keys"], 300, "{line}");
        assert_eq!(node["raw_bytes"], 300 * 114, "{line}");
        assert!(node["rss_bytes"].as_u64().unwrap() > 0, "{line}");
        assert!(node["empty_rss_bytes"].as_u64().unwrap() > 0, "{line}");
        assert!(node["net_per_key"].is_number(), "{line}");
    }
    // The nodes it started were watched at rest: a share of one core each.
    let idle = &json["memory"]["idle_cpu"];
    assert_eq!(idle["nodes"].as_array().map(Vec::len), Some(3), "{line}");
    for node in idle["nodes"].as_array().unwrap() {
        let share = node["percent_of_core"].as_f64().unwrap();
        assert!((0.0..=100.0 * 2.0).contains(&share), "{line}");
    }
    assert!(out.stdout.contains("% of a core"), "{}", out.stdout);
}
