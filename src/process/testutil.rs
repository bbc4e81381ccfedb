//! Test helpers: a fake node (this test binary re-run as a [`crate::testing::FakeNode`]) that
//! serves the real HTTP API over a fake service, so process management is tested without the
//! node runtime; fake binaries and local clusters of them, scratch directories.

use std::path::{Path, PathBuf};

/// Environment of a re-run of this test binary that plays a node: its `start` arguments.
const FAKE_ARGS_ENV: &str = "DYNAMO_FAKE_NODE_ARGS";
/// Names the fake node lists as alive members, space separated.
const FAKE_MEMBERS_ENV: &str = "DYNAMO_FAKE_NODE_MEMBERS";
/// If set, a fake node exits with code 3 unless this file exists, which it then creates.
pub(crate) const FAKE_FLAKY_ENV: &str = "DYNAMO_FAKE_NODE_FLAKY";
/// If set, a fake node exits at once with code 4.
pub(crate) const FAKE_FAIL_ENV: &str = "DYNAMO_FAKE_NODE_FAIL";

/// A no-op in a normal run; as a fake node, prints its arguments and environment, then serves
/// the HTTP API on its `--http` address until killed.
#[test]
fn fake_node() {
    let Ok(args) = std::env::var(FAKE_ARGS_ENV) else {
        return;
    };
    println!("fake node args: {args}");
    println!(
        "fake node RUST_LOG={}",
        std::env::var("RUST_LOG").unwrap_or_default()
    );
    if std::env::var_os(FAKE_FAIL_ENV).is_some() {
        eprintln!("refusing to start");
        std::process::exit(4);
    }
    if let Some(marker) = std::env::var_os(FAKE_FLAKY_ENV)
        && std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_ok()
    {
        eprintln!("address in use (first attempt)");
        std::process::exit(3);
    }
    let members = std::env::var(FAKE_MEMBERS_ENV)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    crate::testing::FakeNode::serve_from_args(&args, members);
}

/// A script that runs this test binary as a fake node listing `members` as alive.
pub(crate) fn fake_binary(dir: &Path, members: &[&str]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().unwrap();
    let script = dir.join("fake-dynamo-node");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{FAKE_MEMBERS_ENV}='{}' {FAKE_ARGS_ENV}=\"$*\" exec '{}' process::testutil::fake_node --exact --nocapture --test-threads 1\n",
            members.join(" "),
            exe.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// `fake_binary` wrapped in a script that sets `var=value` first.
pub(crate) fn fake_binary_with(dir: &Path, members: &[&str], var: &str, value: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let inner = fake_binary(dir, members);
    let script = dir.join(format!("fake-dynamo-node-{}", var.to_lowercase()));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{var}='{value}' exec '{}' \"$@\"\n",
            inner.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// A fresh scratch directory for one test.
pub(crate) fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dynamo-lc-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether a process with this pid exists (zombies included).
pub(crate) fn exists(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// Three fake nodes listing `members` as alive, logging under `dir`.
pub(crate) async fn fake_local_cluster(dir: &Path, members: &[&str]) -> super::LocalCluster {
    super::LocalCluster::builder()
        .nodes(3)
        .binary(fake_binary(dir, members))
        .log_dir(dir.join("logs"))
        .start()
        .await
        .expect("fake nodes start")
}
