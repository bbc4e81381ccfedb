//! Reading the PEM files named by the TLS flags.

use std::path::Path;

use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{TlsError, TlsPaths};

/// The contents of the three files.
pub(super) struct Material {
    /// The node's certificate first, then any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub roots: RootCertStore,
}

impl Material {
    /// Reads and parses the three files; each error names its flag.
    pub fn read(paths: &TlsPaths) -> Result<Material, TlsError> {
        let chain = certificates("--tls-cert", &paths.cert)?;
        let key_pem = read("--tls-key", &paths.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::File {
            flag: "--tls-key",
            path: paths.key.clone(),
            reason: format!("no PEM private key ({e})"),
        })?;
        let mut roots = RootCertStore::empty();
        for cert in certificates("--tls-ca", &paths.ca)? {
            roots.add(cert).map_err(|e| TlsError::File {
                flag: "--tls-ca",
                path: paths.ca.clone(),
                reason: format!("not a usable CA certificate ({e})"),
            })?;
        }
        Ok(Material { chain, key, roots })
    }
}

/// The CA file as the cause of a verifier that could not be built.
pub(super) fn ca_error(paths: &TlsPaths, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        flag: "--tls-ca",
        path: paths.ca.clone(),
        reason: e.to_string(),
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        flag,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Every certificate of a PEM file; at least one.
fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(flag, path)?;
    pem_certificates(&pem).map_err(|reason| TlsError::File {
        flag,
        path: path.to_path_buf(),
        reason,
    })
}

/// Every certificate in PEM text; at least one (the node's TLS flags and HTTPS both read
/// theirs through this).
pub(crate) fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM ({e})"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}
