//! Mutual TLS between cluster members (`--tls-cert`, `--tls-key`, `--tls-ca`).
//!
//! Every member and native client holds a certificate that chains to the cluster's CA and
//! whose DNS name (SAN) is its node name. A connection needs a certificate on both ends; the
//! name in the peer's certificate is kept ([`PeerCert`]) and compared with the node name the
//! peer announces in the cluster handshake, so that one member cannot pose as another.
//!
//! The rustls stack is the one ractor_cluster brings, with the aws-lc-rs provider.

mod load;
mod names;
mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
#[cfg(test)]
use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio_rustls::rustls::{ClientConfig, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

#[cfg(feature = "http")]
pub(crate) use load::pem_certificates;
pub use names::{PeerCert, PendingCerts, announced_node_name, check_node_name};

/// How long a TLS handshake may take, in either direction.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a node's TLS material is (all three PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPaths {
    /// The node's certificate chain (`--tls-cert`).
    pub cert: PathBuf,
    /// The node's private key (`--tls-key`).
    pub key: PathBuf,
    /// The cluster's CA certificate(s) (`--tls-ca`).
    pub ca: PathBuf,
    /// Start even though the certificate is not for the node's own name (hidden
    /// `--tls-impostor`): only for tests that play a node posing as another.
    pub impostor: bool,
}

impl TlsPaths {
    /// The three paths when all are given, `None` when none is; naming the missing flag
    /// otherwise.
    pub fn from_flags(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> Result<Option<TlsPaths>, TlsError> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsPaths {
                cert,
                key,
                ca,
                impostor: false,
            })),
            (cert, key, _) => {
                let missing = if cert.is_none() {
                    "--tls-cert"
                } else if key.is_none() {
                    "--tls-key"
                } else {
                    "--tls-ca"
                };
                Err(TlsError::Incomplete(missing))
            }
        }
    }
}

/// Why the TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only some of the three flags were given.
    #[error("--tls-cert, --tls-key and --tls-ca go together: {0} is missing")]
    Incomplete(&'static str),
    /// A file could not be read or holds no usable PEM.
    #[error("{flag} {}: {reason}", path.display())]
    File {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The node name cannot be a certificate name, or the certificate is not for it.
    #[error("{0}")]
    Name(String),
    /// rustls refused the combination (e.g. a key that does not match the certificate).
    #[error("--tls-cert/--tls-key: {0}")]
    Config(String),
}

/// A node's TLS set-up: the acceptor for incoming connections and the connectors for dials.
#[derive(Clone)]
pub struct NodeTls {
    acceptor: TlsAcceptor,
    /// Checks the chain and the server's name (a dial to a member whose name is known).
    named: TlsConnector,
    /// Checks the chain only (a dial to a seed address): the name is checked once the
    /// session announces it.
    chain_only: TlsConnector,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeTls")
    }
}

impl NodeTls {
    /// Loads the PEM files and checks that the certificate is valid for `node_name`.
    pub fn load(paths: &TlsPaths, node_name: &str) -> Result<NodeTls, TlsError> {
        install_provider();
        let material = load::Material::read(paths)?;
        names::check_own_certificate(&material.chain[0], node_name, paths.impostor)?;
        let roots = Arc::new(material.roots);
        let client_verifier =
            tokio_rustls::rustls::server::WebPkiClientVerifier::builder(Arc::clone(&roots))
                .build()
                .map_err(|e| load::ca_error(paths, e))?;
        let server = ServerConfig::builder()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(material.chain.clone(), material.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let named = ClientConfig::builder()
            .with_root_certificates(Arc::clone(&roots))
            .with_client_auth_cert(material.chain.clone(), material.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let chain_only = ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(verify::ChainOnly::new(roots)?)
            .with_client_auth_cert(material.chain, material.key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(NodeTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            named: TlsConnector::from(Arc::new(named)),
            chain_only: TlsConnector::from(Arc::new(chain_only)),
        })
    }

    /// The acceptor (client certificates required).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Runs the server side of a handshake, within [`HANDSHAKE_TIMEOUT`].
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<(server::TlsStream<TcpStream>, PeerCert)> {
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp))
            .await
            .map_err(|_| timed_out())??;
        let cert = PeerCert::of(stream.get_ref().1.peer_certificates())?;
        Ok((stream, cert))
    }

    /// Runs the client side of a handshake, within [`HANDSHAKE_TIMEOUT`]: against
    /// `expected`'s name when known, else against the chain only.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        expected: Option<&str>,
    ) -> std::io::Result<(client::TlsStream<TcpStream>, PeerCert)> {
        let (connector, name) = match expected {
            Some(name) => (&self.named, ServerName::try_from(name.to_string())),
            None => (&self.chain_only, Ok(ServerName::from(addr.ip()))),
        };
        let name = name.map_err(|e| std::io::Error::other(format!("server name: {e}")))?;
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| timed_out())??;
        let cert = PeerCert::of(stream.get_ref().1.peer_certificates())?;
        Ok((stream, cert))
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
}

/// Installs aws-lc-rs (the one ractor_cluster's tokio-rustls enables) as the process's rustls
/// provider, once: rustls chooses one by itself only when exactly one is built in.
pub fn install_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err only when a provider is installed already, which is as good.
        let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests;
