//! Mutual TLS between nodes (`--tls-cert`, `--tls-key`, `--tls-ca`): a TLS cluster reads,
//! writes (also through a native client with its own certificate) and heals a partition; a node with a certificate of another CA, one whose
//! certificate is for another name, and a plaintext node never join it.
//!
//! One cluster serves every assertion (CI time). The partition needs iptables and root;
//! without them the test fails, saying so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use dynamo_node::core::membership::Status;
use dynamo_node::model::{KvService, ReadOptions, WriteOptions};
use dynamo_node::node::{NativeClient, NativeConfig};
use dynamo_node::testing::{TempDir, TestCluster, wait_until};
use dynamo_node::tls::TlsPaths;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

const VIEW_CHANGE: Duration = Duration::from_secs(20);
const REJOIN: Duration = Duration::from_secs(60);
/// How long the intruders keep trying while the members must not list them: many dials
/// (every 250 ms to 5 s) and gossip rounds (every 100 ms).
const INTRUDER_WINDOW: Duration = Duration::from_secs(3);

/// A CA that signs node certificates into files.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(common_name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// Writes `{file}.crt`, `{file}.key` and `{file}-ca.crt` for DNS name `san`; returns the
    /// three flags.
    fn issue(&self, dir: &Path, file: &str, san: &str) -> Vec<String> {
        let key = KeyPair::generate().expect("node key");
        let mut params = CertificateParams::new(vec![san.to_string()]).expect("node params");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("node certificate");
        let write = |name: String, text: &str| -> PathBuf {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write a PEM file");
            path
        };
        let cert = write(format!("{file}.crt"), &cert.pem());
        let key = write(format!("{file}.key"), &key.serialize_pem());
        let ca = write(format!("{file}-ca.crt"), &self.pem);
        let mut flags = Vec::new();
        for (flag, path) in [("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)] {
            flags.push(flag.to_string());
            flags.push(path.display().to_string());
        }
        flags
    }
}

fn member_names(members: &[dynamo_node::model::MemberInfo]) -> Vec<String> {
    let mut names: Vec<String> = members.iter().map(|m| m.node.clone()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_and_heals_and_keeps_impostors_and_plaintext_nodes_out() {
    let dir = TempDir::new("tls-cluster");
    let ca = TestCa::new("dynamo test CA");
    let mut builder = TestCluster::builder().nodes(3).fast_failure_detection();
    for i in 1..=3 {
        let name = format!("n{i}");
        builder = builder.own_node_args(i, ca.issue(dir.path(), &name, &name));
    }
    let mut cluster = builder.start().await;

    // (a) Reads and writes at R = W = 3 go over TLS sessions to every replica.
    let value = Bytes::from_static(b"over tls");
    cluster
        .client(1)
        .put(b"tls-key", value.clone(), None, Some(3))
        .await
        .expect("a write at W = 3");
    for i in 1..=3 {
        let read = cluster
            .client(i)
            .get(b"tls-key", Some(3))
            .await
            .expect("a read at R = 3");
        assert!(
            matches!(&read, dynamo_node::model::GetResult::Value { value: v, .. } if *v == value),
            "n{i}: {read:?}"
        );
    }

    // (a) The native client joins the TLS mesh with a certificate for its own name, and
    // reads back at R = 3 what it wrote at W = 3 (in this process's ractor turn).
    let turn = crate::ractor_turn::take().await;
    let client_flags = ca.issue(dir.path(), "bench-1", "bench-1");
    let mut config = NativeConfig::new([cluster.cluster_addr(1)]);
    config.name = Some("bench-1".into());
    config.tls = Some(TlsPaths {
        cert: PathBuf::from(&client_flags[1]),
        key: PathBuf::from(&client_flags[3]),
        ca: PathBuf::from(&client_flags[5]),
        impostor: false,
    });
    let native = NativeClient::connect(config)
        .await
        .expect("a native client with a certificate of the CA joins");
    let kv = native.service();
    kv.put(
        "native-tls".into(),
        value.clone(),
        None,
        WriteOptions { w: Some(3) },
    )
    .await
    .expect("a native write at W = 3");
    let read = kv
        .get("native-tls".into(), ReadOptions { r: Some(3) })
        .await
        .expect("a native read at R = 3");
    assert_eq!(read.values(), std::slice::from_ref(&value), "{read:?}");
    native.stop().await;
    drop(turn);

    // (a) A partition is detected and heals: the sessions come back through TLS.
    cluster.partition(&[&[1], &[2, 3]]);
    cluster
        .wait_status(&[2, 3], 1, Status::Suspect, VIEW_CHANGE)
        .await;
    cluster.heal();
    cluster
        .processes()
        .wait_converged(REJOIN)
        .await
        .expect("rejoin after the heal");

    // (b) A certificate of another CA, (c) a valid certificate for another node's name,
    // (d) no TLS at all: each intruder is seeded with every member and keeps dialling.
    let other_ca = TestCa::new("another CA");
    let foreign = other_ca.issue(dir.path(), "n4", "n4");
    cluster
        .processes()
        .add_node(foreign)
        .await
        .expect("n4 starts");
    let mut impostor = ca.issue(dir.path(), "n5-as-n1", "n1");
    impostor.push("--tls-impostor".into());
    cluster
        .processes()
        .add_node(impostor)
        .await
        .expect("n5 starts");
    cluster
        .processes()
        .add_node(Vec::<String>::new())
        .await
        .expect("n6 starts");

    // The impostor's sessions are refused by name once they authenticate.
    wait_until(
        VIEW_CHANGE,
        "a member refused the impostor by name",
        || async {
            let mut refused = 0.0;
            for i in 1..=3 {
                refused += cluster
                    .metric(i, "dynamo_tls_name_mismatches_total")
                    .await
                    .unwrap_or(0.0);
            }
            refused > 0.0
        },
    )
    .await;
    let honest = vec!["n1".to_string(), "n2".to_string(), "n3".to_string()];
    let started = std::time::Instant::now();
    while started.elapsed() < INTRUDER_WINDOW {
        for i in 1..=3 {
            let members = cluster.client(i).members().await.expect("members");
            assert_eq!(member_names(&members), honest, "n{i} lists an intruder");
            assert!(
                members
                    .iter()
                    .all(|m| m.status == Status::Alive && m.connected),
                "n{i}: {members:?}"
            );
        }
        for i in 4..=6 {
            let members = cluster
                .client(i)
                .members()
                .await
                .expect("intruder's members");
            let own = format!("n{i}");
            assert!(
                members.iter().all(|m| m.node == own || !m.connected),
                "intruder n{i} has a session: {members:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
