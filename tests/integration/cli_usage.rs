//! The `dynamo-node` binary as a black box: flags, usage errors and exit codes that need no
//! running node.

use std::process::{Command, Output};

fn dynamo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dynamo-node"))
        .args(args)
        .env_remove("DYNAMO_NODE")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_the_subcommands_and_exit_codes() {
    let out = dynamo(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for sub in [
        "start", "cluster", "get", "put", "delete", "status", "leave", "remove",
    ] {
        assert!(help.contains(sub), "{help}");
    }
    assert!(!help.contains("demo"), "demo is hidden: {help}");
    assert!(help.contains("3 not found"), "{help}");
}

#[test]
fn start_documents_every_flag_of_the_design() {
    let out = dynamo(&["start", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for flag in [
        "--name <NAME>",
        "--bind <IP:PORT>",
        "--http <IP:PORT>",
        "--seed <IP:PORT>",
        "--cookie <SECRET>",
        "--n <N>",
        "--w <W>",
        "--r <R>",
        "--vnodes <V>",
        "--put-timeout-ms <T>",
        "--get-timeout-ms <T>",
        "--gossip-interval-ms <T>",
        "--suspect-after-ms <T>",
        "--dead-after-ms <T>",
        "--data-dir <DIR>",
        "--max-hints <COUNT>",
        "--max-hint-bytes <BYTES>",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn start_refuses_missing_and_bad_values_with_exit_code_2() {
    let missing = dynamo(&["start", "--name", "n1", "--bind", "127.0.0.2:7000"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("--http"));

    let bad_quorum = dynamo(&[
        "start",
        "--name",
        "n1",
        "--bind",
        "127.0.0.2:7000",
        "--http",
        "127.0.0.2:8000",
        "--w",
        "4",
    ]);
    assert_eq!(bad_quorum.status.code(), Some(2));
    let err = text(&bad_quorum.stderr);
    assert!(
        err.contains("w must be between 1 and n = 3, got 4"),
        "{err}"
    );

    let bad_addr = dynamo(&["start", "--name", "n1", "--bind", "nowhere", "--http", "x"]);
    assert_eq!(bad_addr.status.code(), Some(2));
}

#[test]
fn cluster_refuses_bad_sizes_and_settings_before_starting_anything() {
    let zero = dynamo(&["cluster", "--nodes", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(text(&zero.stderr).contains("--nodes must be between 1 and 253"));
    let bad = dynamo(&["cluster", "--nodes", "3", "--n", "2", "--r", "3"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("r must be between 1 and n = 2"));
}

#[test]
fn client_usage_errors_exit_2_and_unreachable_nodes_exit_1() {
    let bad_context = dynamo(&["put", "k", "v", "--context", "!!", "--node", "127.0.0.1:1"]);
    assert_eq!(bad_context.status.code(), Some(2));
    assert!(text(&bad_context.stderr).contains("--context"));

    let empty_key = dynamo(&["get", "", "--node", "127.0.0.1:1"]);
    assert_eq!(empty_key.status.code(), Some(2));

    // Port 1 on loopback: nothing listens, the connection is refused at once.
    for args in [
        &["get", "k", "--node", "http://127.0.0.1:1"][..],
        &["put", "k", "v", "--node", "127.0.0.1:1"],
        &["delete", "k", "--node", "127.0.0.1:1"],
        &["status", "--node", "127.0.0.1:1"],
        &["leave", "--node", "127.0.0.1:1"],
        &["remove", "n2", "--node", "127.0.0.1:1"],
    ] {
        let out = dynamo(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("http://127.0.0.1:1"),
            "{args:?} names the node: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn leave_needs_an_explicit_node_and_remove_a_name() {
    // Leaving is final for a node's name: never sent to $DYNAMO_NODE or the default node.
    let out = Command::new(env!("CARGO_BIN_EXE_dynamo-node"))
        .arg("leave")
        .env("DYNAMO_NODE", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--node <URL>"),
        "{}",
        text(&out.stderr)
    );
    let help = text(&dynamo(&["leave", "--help"]).stdout);
    assert!(help.contains("then reports `left`"), "{help}");

    let missing = dynamo(&["remove", "--node", "127.0.0.1:1"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("<NAME>"),
        "{}",
        text(&missing.stderr)
    );
    // An empty name is refused before any node is asked.
    let empty = dynamo(&["remove", "", "--node", "127.0.0.1:1"]);
    assert_eq!(empty.status.code(), Some(2));
    assert!(
        text(&empty.stderr).contains("NAME must name a member"),
        "{}",
        text(&empty.stderr)
    );
}

#[test]
fn the_core_walk_through_is_still_there_as_a_hidden_demo() {
    let out = dynamo(&["demo"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("two siblings"));
}
