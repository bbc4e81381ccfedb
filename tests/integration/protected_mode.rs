//! `dynamo-node start` refuses each insecure start reachable from other machines (default
//! cookie, a cookie on the command line, an open HTTP API) and each unusable secret file,
//! with exit code 2 and a message naming the flag to add or fix.

use std::time::Duration;

use dynamo_node::testing::{TempDir, run_node_once};

/// A refused start exits at once; a node still running after this did not refuse.
const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn every_insecure_start_is_refused_naming_the_missing_flag() {
    let dir = TempDir::new("protected-mode");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let cookie = file("cookie", "a-cookie-of-our-own\n");
    let token = file("token", "a-token\n");
    let empty = file("empty", "");
    // Addresses on other interfaces are never bound: each start is refused before.
    let public = "0.0.0.0:1";
    let local = "127.0.0.1:1";
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "default cookie on a public cluster address",
            vec!["--bind", public, "--http", local],
            vec!["--bind 0.0.0.0:1", "--cookie-file", "DYNAMO_COOKIE"],
        ),
        (
            "cookie on the command line",
            vec!["--bind", public, "--http", local, "--cookie", "s3cret"],
            vec!["--cookie-file", "instead of --cookie"],
        ),
        (
            "open HTTP on a public address",
            vec!["--bind", local, "--http", public, "--cookie-file", &cookie],
            vec![
                "--http 0.0.0.0:1",
                "--api-token-file",
                "--admin-token-file",
                "--insecure",
            ],
        ),
        (
            "one token only",
            vec![
                "--bind",
                local,
                "--http",
                public,
                "--cookie-file",
                &cookie,
                "--api-token-file",
                &token,
            ],
            vec!["--admin-token-file"],
        ),
        (
            "empty token file",
            vec!["--bind", local, "--http", local, "--api-token-file", &empty],
            vec!["--api-token-file", "is empty"],
        ),
        (
            "unreadable cookie file",
            vec![
                "--bind",
                local,
                "--http",
                local,
                "--cookie-file",
                "/nonexistent/cookie",
            ],
            vec!["--cookie-file", "cannot read"],
        ),
        (
            "unusable HTTPS certificate",
            vec![
                "--bind",
                local,
                "--http",
                local,
                "--http-tls-cert",
                &token,
                "--http-tls-key",
                &token,
            ],
            vec!["--http-tls-cert", "no PEM certificate"],
        ),
    ];
    let runs = cases.iter().map(|(_, flags, _)| {
        let mut args = vec!["start", "--name", "n1"];
        args.extend(flags);
        run_node_once(args, DEADLINE)
    });
    let runs = futures::future::join_all(runs).await;
    for ((case, _, words), run) in cases.iter().zip(runs) {
        assert_eq!(
            run.code(),
            Some(2),
            "{case}: {:?}\n{}",
            run.exit,
            run.output
        );
        let line = run.last_line();
        assert!(line.starts_with("error: "), "{case}: {line:?}");
        for word in words {
            assert!(
                line.contains(word),
                "{case}: {word:?} missing from {line:?}"
            );
        }
    }
}
