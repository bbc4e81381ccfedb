//! A durable node with less free space than its reserve (`--min-free-mb`) refuses writes with
//! 507 `insufficient_storage` and keeps serving reads.

use bytes::Bytes;
use dynamo_node::testing::{TempDir, TestCluster};

/// One node is a whole cluster.
const FLAGS: [&str; 6] = ["--n", "1", "--w", "1", "--r", "1"];

/// Free MiB of the file system holding `dir`, for an unprivileged user.
fn free_mib(dir: &std::path::Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(dir).expect("statvfs of the data directory");
    (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64) >> 20
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_reserve_writes_get_507_and_reads_go_on() {
    let root = TempDir::new("disk-full");
    let mut cluster = TestCluster::builder()
        .nodes(1)
        .data_dirs(root.path())
        .node_args(FLAGS)
        .start()
        .await;
    let keys: Vec<(String, Bytes)> = (0..20)
        .map(|i| (format!("full-{i:02}"), Bytes::from(format!("value-{i:02}"))))
        .collect();
    cluster.put_all(&keys, None).await;
    cluster.stop(1).await;

    // A reserve a tebibyte above what is free: the file system is "full" from the start.
    let reserve = free_mib(&cluster.data_dir(1)) + (1 << 20);
    cluster
        .restart_with_args(1, ["--min-free-mb", &reserve.to_string()])
        .await;
    let client = cluster.client(1);
    let refused = client
        .put(b"full-new", Bytes::from_static(b"new"), None, None)
        .await
        .expect_err("a write below the reserve");
    assert_eq!(refused.status(), Some(507), "{refused}");
    assert_eq!(refused.kind(), Some("insufficient_storage"), "{refused}");
    // A delete writes a tombstone: refused too, and the value stays.
    let (key, _) = &keys[0];
    let read = client.get(key.as_bytes(), None).await.expect("read");
    let refused = client
        .delete(key.as_bytes(), Some(read.context()), None)
        .await
        .expect_err("a delete below the reserve");
    assert_eq!(refused.status(), Some(507), "{refused}");
    assert_eq!(refused.kind(), Some("insufficient_storage"), "{refused}");
    cluster.assert_all_read(&keys, &[1], None).await;
    assert!(
        client.local(b"full-new").await.expect("local").is_empty(),
        "the refused write left nothing behind"
    );

    // Back to the default reserve: the same directory takes writes again.
    cluster.restart_with_args(1, Vec::<String>::new()).await;
    let client = cluster.client(1);
    client
        .put(b"full-new", Bytes::from_static(b"new"), None, None)
        .await
        .expect("a write with space to spare");
    cluster.assert_all_read(&keys, &[1], None).await;
}
