//! Mutual TLS with certificates made on the spot (rcgen): the flags and files refused with
//! the flag named, the certificate-name rules, and real handshakes in both directions.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::testing::TempDir;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// Writes a certificate for `san` signed by `ca` under `dir/{file}.*`.
fn issue(ca: &Ca, dir: &Path, file: &str, san: &str) -> TlsPaths {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![san.to_string()]).unwrap();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let write = |name: String, text: &str| -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    TlsPaths {
        cert: write(format!("{file}.crt"), &cert.pem()),
        key: write(format!("{file}.key"), &key.serialize_pem()),
        ca: write(format!("{file}-ca.crt"), &ca.pem),
        impostor: false,
    }
}

fn load_error(paths: &TlsPaths, name: &str) -> String {
    match NodeTls::load(paths, name) {
        Ok(_) => panic!("{paths:?} loaded for {name}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_three_flags_go_together_and_the_missing_one_is_named() {
    let p = || Some(PathBuf::from("x.pem"));
    assert_eq!(TlsPaths::from_flags(None, None, None).unwrap(), None);
    assert!(TlsPaths::from_flags(p(), p(), p()).unwrap().is_some());
    for (cert, key, ca, missing) in [
        (None, p(), p(), "--tls-cert"),
        (p(), None, p(), "--tls-key"),
        (p(), p(), None, "--tls-ca"),
        (None, None, p(), "--tls-cert"),
    ] {
        let err = TlsPaths::from_flags(cert, key, ca).unwrap_err().to_string();
        assert!(err.contains(&format!("{missing} is missing")), "{err}");
    }
}

#[test]
fn bad_files_are_refused_naming_their_flag() {
    let dir = TempDir::new("tls-files");
    let good = issue(&ca(), dir.path(), "n1", "n1");
    assert!(NodeTls::load(&good, "n1").is_ok());

    let absent = TlsPaths {
        key: dir.join("absent.key"),
        ..good.clone()
    };
    assert!(load_error(&absent, "n1").starts_with("--tls-key"));
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    for (paths, flag) in [
        (
            TlsPaths {
                cert: junk.clone(),
                ..good.clone()
            },
            "--tls-cert",
        ),
        (
            TlsPaths {
                key: junk.clone(),
                ..good.clone()
            },
            "--tls-key",
        ),
        (
            TlsPaths {
                ca: junk.clone(),
                ..good.clone()
            },
            "--tls-ca",
        ),
    ] {
        let err = load_error(&paths, "n1");
        assert!(err.starts_with(flag), "{flag}: {err}");
    }
    // A key of another certificate.
    let other = issue(&ca(), dir.path(), "other", "n1");
    let mismatched = TlsPaths {
        key: other.key,
        ..good.clone()
    };
    assert!(load_error(&mismatched, "n1").contains("--tls-key"));
}

#[test]
fn the_certificate_must_be_for_the_node_name_which_must_be_a_dns_name() {
    let dir = TempDir::new("tls-names");
    let paths = issue(&ca(), dir.path(), "n1", "n1");
    let err = load_error(&paths, "n2");
    assert!(
        err.contains("--tls-cert is not for node name \"n2\""),
        "{err}"
    );
    for bad in ["n1@host", "has space", "127.0.0.1"] {
        assert!(load_error(&paths, bad).contains("--name"), "{bad}");
    }
    let impostor = TlsPaths {
        impostor: true,
        ..paths
    };
    assert!(NodeTls::load(&impostor, "n2").is_ok());
}

#[test]
fn the_announced_node_name_must_be_a_name_of_the_certificate() {
    let dir = TempDir::new("tls-check");
    let paths = issue(&ca(), dir.path(), "n1", "n1.dynamo.svc");
    let pem = std::fs::read(&paths.cert).unwrap();
    let der = CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap();
    let cert = PeerCert::of(Some(&[der])).unwrap();
    assert_eq!(
        announced_node_name("n1.dynamo.svc@10.0.0.1"),
        "n1.dynamo.svc"
    );
    assert!(check_node_name("n1.dynamo.svc@10.0.0.1", Some(&cert)));
    assert!(check_node_name("n1.dynamo.svc", Some(&cert)));
    assert!(!check_node_name("n2@10.0.0.1", Some(&cert)));
    assert!(!check_node_name("n1@10.0.0.1", Some(&cert)));
    assert!(!check_node_name("", Some(&cert)));
    assert!(!check_node_name("n1.dynamo.svc@10.0.0.1", None));

    let pending = PendingCerts::default();
    pending.insert("127.0.0.2:4000".into(), cert.clone());
    assert_eq!(pending.take("127.0.0.2:4001"), None);
    assert_eq!(pending.take("127.0.0.2:4000"), Some(cert));
    assert_eq!(pending.take("127.0.0.2:4000"), None, "taken once");
}

/// One handshake over loopback; the client side's result.
async fn handshake(
    server: &NodeTls,
    client: &NodeTls,
    expected: Option<&str>,
) -> Result<String, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = server.clone();
    let accepted = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await.map(|_| ())
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let dialled = client.connect(tcp, addr, expected).await;
    let accepted = accepted.await.unwrap();
    match (dialled, accepted) {
        (Ok((_, cert)), Ok(())) => Ok(format!("{:?}", cert.is_for("n1"))),
        (Err(e), _) => Err(format!("client: {e}")),
        (_, Err(e)) => Err(format!("server: {e}")),
    }
}

#[tokio::test]
async fn handshakes_need_both_certificates_from_the_ca_and_a_named_dial_checks_the_name() {
    let dir = TempDir::new("tls-handshake");
    let cluster_ca = ca();
    let n1 = NodeTls::load(&issue(&cluster_ca, dir.path(), "n1", "n1"), "n1").unwrap();
    let n2 = NodeTls::load(&issue(&cluster_ca, dir.path(), "n2", "n2"), "n2").unwrap();
    let stranger = NodeTls::load(&issue(&ca(), dir.path(), "x", "n1"), "n1").unwrap();

    // A dial to a seed checks the chain only; the certificate is kept for the name check.
    assert_eq!(handshake(&n1, &n2, None).await, Ok("true".into()));
    assert_eq!(handshake(&n1, &n2, Some("n1")).await, Ok("true".into()));
    // A dial to a known member refuses a certificate for another name.
    assert!(handshake(&n1, &n2, Some("n3")).await.is_err());
    // Another CA's certificate is refused on either side.
    assert!(handshake(&n1, &stranger, None).await.is_err());
    assert!(handshake(&stranger, &n2, None).await.is_err());
}
