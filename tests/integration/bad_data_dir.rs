//! `dynamo-node start` refuses a data directory it must not use (held by another process,
//! another node's, unusable, damaged, or someone else's files) with exit code 2 and a message
//! saying why, and never starts empty in its place.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use dynamo_node::process::pick_free_port;
use dynamo_node::testing::{NodeRun, TempDir, TestCluster, run_node_once};

/// Flags of every node here: one node is a whole cluster.
const FLAGS: [&str; 6] = ["--n", "1", "--w", "1", "--r", "1"];
const KEYS: usize = 50;
/// A refused start exits within a second; a node still running after this did not refuse.
const DEADLINE: Duration = Duration::from_secs(10);

fn keys() -> Vec<(String, Bytes)> {
    (0..KEYS)
        .map(|i| (format!("disk-{i:02}"), Bytes::from(format!("value-{i:02}"))))
        .collect()
}

/// `start` arguments of a node `name` on free ports of 127.0.0.1 with `--data-dir dir`, and
/// its HTTP address.
fn start_args(name: &str, dir: &Path) -> (Vec<OsString>, SocketAddr) {
    let ip = Ipv4Addr::LOCALHOST;
    let bind = pick_free_port(ip).expect("a free port");
    let http = loop {
        let port = pick_free_port(ip).expect("a free port");
        if port != bind {
            break port;
        }
    };
    let http = SocketAddr::from((ip, http));
    let mut args: Vec<OsString> = ["start", "--name", name, "--bind"]
        .into_iter()
        .map(OsString::from)
        .collect();
    args.push(SocketAddr::from((ip, bind)).to_string().into());
    args.push("--http".into());
    args.push(http.to_string().into());
    args.extend(FLAGS.into_iter().map(OsString::from));
    args.push("--data-dir".into());
    args.push(dir.into());
    (args, http)
}

/// Runs node `name` on `dir` alone and returns how it ended and its HTTP address.
async fn start_on(name: &str, dir: &Path) -> (NodeRun, SocketAddr) {
    let (args, http) = start_args(name, dir);
    (run_node_once(args, DEADLINE).await, http)
}

/// The run exited by itself with code 2, is gone (nothing serves its HTTP address), and its
/// error line names the node and contains every one of `words`.
fn assert_refused(case: &str, name: &str, run: &NodeRun, http: SocketAddr, words: &[&str]) {
    let Some(exit) = run.exit else {
        panic!(
            "{case}: the node was still running after {DEADLINE:?} instead of refusing the directory; output:\n{}",
            run.output
        );
    };
    assert_eq!(
        run.code(),
        Some(2),
        "{case}: {exit} after {:?}; output:\n{}",
        run.elapsed,
        run.output
    );
    assert!(
        TcpStream::connect_timeout(&http, Duration::from_millis(500)).is_err(),
        "{case}: something still serves {http}"
    );
    let line = run.last_line();
    let prefix = format!("error: node {name} cannot start: ");
    assert!(line.starts_with(&prefix), "{case}: {line:?}");
    for word in words {
        assert!(
            line.contains(word),
            "{case}: {word:?} missing from {line:?}"
        );
    }
}

/// Node `n1` alone, with its data under `root/n1`.
async fn lone_node(root: &TempDir) -> TestCluster {
    TestCluster::builder()
        .nodes(1)
        .data_dirs(root.path())
        .node_args(FLAGS)
        .start()
        .await
}

/// A node `n1` with its data under `root/n1`, given the keys, then stopped gracefully.
async fn write_and_stop(root: &TempDir) -> PathBuf {
    let mut cluster = lone_node(root).await;
    cluster.put_all(&keys(), None).await;
    cluster.stop(1).await;
    cluster.data_dir(1)
}

/// Starts `n1` on its damaged directory `root/n1` and asserts it refuses as corrupt. If it
/// starts instead, starts it once more to say how many of its keys it serves, for the report.
async fn assert_refused_as_corrupt(case: &str, root: &TempDir) {
    let dir = root.join("n1");
    let (run, http) = start_on("n1", &dir).await;
    if run.exit.is_none() {
        let cluster = lone_node(root).await;
        let missing = cluster.missing_on(1, &keys()).await.len();
        panic!(
            "{case}: the node started on the damaged directory instead of refusing it, serving {} of the {KEYS} keys it held",
            KEYS - missing
        );
    }
    let path = dir.display().to_string();
    assert_refused(case, "n1", &run, http, &[&path, "corrupt"]);
}

/// XORs `len` bytes of `file` from `at` (clamped to its end), so they surely change.
fn flip(file: &Path, at: usize, len: usize) {
    let mut bytes = std::fs::read(file).expect("read a file to damage");
    let end = (at + len).min(bytes.len());
    assert!(at < end, "{} has no byte {at} to damage", file.display());
    for b in &mut bytes[at..end] {
        *b ^= 0xA5;
    }
    std::fs::write(file, bytes).expect("write the damaged file");
}

/// Every file under `dir` whose path (relative to `dir`) satisfies `pick`.
fn files_under(dir: &Path, pick: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        for entry in std::fs::read_dir(&at).expect("list a directory").flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if pick(path.strip_prefix(dir).expect("under dir")) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_held_by_a_running_node_is_refused_and_the_holder_serves_on() {
    let mut cluster = TestCluster::builder()
        .nodes(1)
        .durable()
        .node_args(FLAGS)
        .start()
        .await;
    let keys = keys();
    cluster.put_all(&keys, None).await;
    let dir = cluster.data_dir(1);
    // The same name, so that the lock is the only thing wrong.
    let (run, http) = start_on("n1", &dir).await;
    let path = dir.display().to_string();
    assert_refused("locked", "n1", &run, http, &[&path, "in use"]);
    // The refused start took nothing from the holder.
    cluster.assert_all_read(&keys, &[1], None).await;
    cluster.stop(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_another_node_is_refused_naming_that_node() {
    let root = TempDir::new("bad-dir-foreign");
    let dir = write_and_stop(&root).await;
    let (run, http) = start_on("n7", &dir).await;
    assert_refused("foreign", "n7", &run, http, &["node n1", "n7"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_written_under_another_n_is_refused_naming_the_n() {
    let root = TempDir::new("bad-dir-other-n");
    let dir = write_and_stop(&root).await;
    let (mut args, http) = start_args("n1", &dir);
    let n = args
        .iter()
        .position(|a| a == "--n")
        .expect("the flags set --n");
    args[n + 1] = "2".into();
    let run = run_node_once(args, DEADLINE).await;
    assert_refused("another n", "n1", &run, http, &["n = 1", "--n 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_cannot_be_a_directory_is_refused() {
    // Permissions would not do: tests may run as root, who reads and writes a mode 000
    // directory. A regular file where the directory should be, or in its path, stops root too.
    let scratch = TempDir::new("bad-dir-unusable");
    let file = scratch.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    for (case, dir) in [
        ("a regular file", file.clone()),
        ("a path through a regular file", file.join("data")),
    ] {
        let (run, http) = start_on("n1", &dir).await;
        let path = dir.display().to_string();
        assert_refused(case, "n1", &run, http, &[&path, "cannot be used"]);
    }
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"not a directory",
        "the file is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_unrelated_files_is_refused_and_left_alone() {
    let scratch = TempDir::new("bad-dir-unrelated");
    let dir = scratch.join("photos");
    std::fs::create_dir_all(dir.join("2024")).unwrap();
    std::fs::write(dir.join("notes.txt"), b"my notes").unwrap();
    let (run, http) = start_on("n1", &dir).await;
    let path = dir.display().to_string();
    assert_refused(
        "unrelated files",
        "n1",
        &run,
        http,
        &[&path, "not a dynamo-node database"],
    );
    let mut entries: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["2024", "notes.txt"], "nothing was added");
}

/// The control of the damage tests below: the same directory, undamaged, starts again with
/// every key, so a refusal there is the damage's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undamaged_directory_starts_again_with_every_key() {
    let root = TempDir::new("bad-dir-control");
    write_and_stop(&root).await;
    let cluster = lone_node(&root).await;
    cluster.assert_all_read(&keys(), &[1], None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_version_file_is_refused() {
    let root = TempDir::new("bad-dir-version");
    let dir = write_and_stop(&root).await;
    let version = dir.join("version");
    assert!(version.is_file(), "fjall keeps a `version` file");
    std::fs::write(&version, b"garbage!").unwrap();
    assert_refused_as_corrupt("a damaged version file", &root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_keyspace_files_are_refused() {
    let root = TempDir::new("bad-dir-keyspaces");
    let dir = write_and_stop(&root).await;
    // fjall keeps each keyspace under `keyspaces/<id>/`: its descriptors (`current`, `v<n>`)
    // and, once flushed, its tables `tables/<n>`. Damage each in the middle.
    let files = files_under(&dir, &|p| p.starts_with("keyspaces"));
    assert!(
        !files.is_empty(),
        "no keyspace files under {}",
        dir.display()
    );
    for file in &files {
        let len = std::fs::metadata(file).unwrap().len() as usize;
        flip(file, len / 2, 64);
    }
    assert_refused_as_corrupt("damaged keyspace files", &root).await;
}

/// Cuts every journal of a stopped node's directory to nothing.
fn truncate_journals(dir: &Path) {
    for journal in journals(dir) {
        std::fs::File::options()
            .write(true)
            .open(&journal)
            .and_then(|f| f.set_len(0))
            .expect("truncate the journal");
    }
}

/// The journals of a stopped node's directory; fails if there is none.
fn journals(dir: &Path) -> Vec<PathBuf> {
    let found = files_under(dir, &|p| {
        p.extension().is_some_and(|e| e == "jnl") || p.starts_with("journals")
    });
    assert!(!found.is_empty(), "no journal under {}", dir.display());
    found
}

/// fjall replays its journal up to the first batch whose checksum fails and drops the rest
/// without an error (its only recovery mode takes that for a write torn by a crash); after a
/// clean stop the node knows what it held, and refuses to start without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_is_refused() {
    let root = TempDir::new("bad-dir-journal");
    let dir = write_and_stop(&root).await;
    for journal in journals(&dir) {
        // Journals are preallocated and zero past their records: damage a third of the way
        // into what was written, so valid records follow the damage.
        let bytes = std::fs::read(&journal).unwrap();
        let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
        flip(&journal, written / 3, 64);
    }
    assert_refused_as_corrupt("a damaged journal", &root).await;
}

/// A journal cut short loses every write that no table holds yet; the node's actor id and
/// counter lease live in its status file, out of the journal's reach, and the clean-stop
/// record tells that keys are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_journal_is_refused() {
    let root = TempDir::new("bad-dir-journal-cut");
    let dir = write_and_stop(&root).await;
    truncate_journals(&dir);
    assert_refused_as_corrupt("a truncated journal", &root).await;
}

/// A start that fails after the directory opened (its cluster port is taken) changes nothing
/// and puts back the record of the last clean stop: damage done to the directory afterwards
/// is still refused at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_keeps_the_damage_check() {
    let root = TempDir::new("bad-dir-failed-start");
    let dir = write_and_stop(&root).await;
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port to hold");
    let (mut args, _) = start_args("n1", &dir);
    let at = args
        .iter()
        .position(|a| a == "--bind")
        .expect("a --bind flag")
        + 1;
    args[at] = taken.local_addr().expect("its address").to_string().into();
    let run = run_node_once(args, DEADLINE).await;
    assert!(
        run.exit.is_some() && run.code() != Some(0),
        "the node should fail to start on a taken port; output:\n{}",
        run.output
    );
    assert!(
        run.output.contains("data directory opened"),
        "the start failed before it opened the directory; output:\n{}",
        run.output
    );
    drop(taken);
    truncate_journals(&dir);
    assert_refused_as_corrupt("a truncated journal after a failed start", &root).await;
}
