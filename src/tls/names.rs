//! The certificate name check: a peer's certificate must be valid for the node name it
//! announces.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_rustls::rustls::pki_types::{CertificateDer, DnsName, ServerName};

use super::TlsError;

/// Connections whose certificate waits for its session to authenticate, at most; past it the
/// oldest are forgotten (their sessions then fail the check and are closed).
const MAX_PENDING: usize = 4096;

/// The end-entity certificate a peer presented on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert(CertificateDer<'static>);

impl PeerCert {
    /// The first certificate of a finished handshake (rustls requires one on both ends).
    pub fn of(certs: Option<&[CertificateDer<'_>]>) -> std::io::Result<PeerCert> {
        match certs.and_then(|c| c.first()) {
            Some(cert) => Ok(PeerCert(cert.clone().into_owned())),
            None => Err(std::io::Error::other("the peer presented no certificate")),
        }
    }

    /// Whether the certificate names `node_name` (a DNS name) among its SANs.
    pub fn is_for(&self, node_name: &str) -> bool {
        let Ok(name) = DnsName::try_from(node_name) else {
            return false;
        };
        let Ok(cert) = webpki::EndEntityCert::try_from(&self.0) else {
            return false;
        };
        cert.verify_is_valid_for_subject_name(&ServerName::DnsName(name))
            .is_ok()
    }
}

/// The node name in a session's announced name, `"{node_name}@{host}"`.
pub fn announced_node_name(announced: &str) -> &str {
    announced
        .split_once('@')
        .map_or(announced, |(name, _)| name)
}

/// Whether a session that announced `announced` may go on: its connection's certificate
/// (`None`: no certificate was captured for it, e.g. it did not come through our TLS
/// listener or dial) must be valid for the announced node name.
pub fn check_node_name(announced: &str, cert: Option<&PeerCert>) -> bool {
    cert.is_some_and(|cert| cert.is_for(announced_node_name(announced)))
}

/// At start: the node name must be a DNS name and our own certificate must be for it, or
/// every peer would close our sessions.
pub(super) fn check_own_certificate(
    chain_head: &CertificateDer<'static>,
    node_name: &str,
    impostor: bool,
) -> Result<(), TlsError> {
    if DnsName::try_from(node_name).is_err() || node_name.contains('@') {
        return Err(TlsError::Name(format!(
            "--name {node_name:?} must be a DNS name (letters, digits, '-' and '.') to be checked against certificates"
        )));
    }
    if !impostor && !PeerCert(chain_head.clone()).is_for(node_name) {
        return Err(TlsError::Name(format!(
            "--tls-cert is not for node name {node_name:?}: its certificate needs the DNS name (SAN) {node_name}"
        )));
    }
    Ok(())
}

/// Certificates captured at the handshake, by the connection's peer address (the session's
/// `peer_addr`), until the session authenticates or ends.
#[derive(Debug, Default)]
pub struct PendingCerts(Mutex<HashMap<String, (u64, PeerCert)>>);

impl PendingCerts {
    /// Keeps `cert` for the connection known as `peer_addr`.
    pub fn insert(&self, peer_addr: String, cert: PeerCert) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_PENDING {
            let oldest = map
                .iter()
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        let seq = map.values().map(|(s, _)| *s).max().map_or(0, |s| s + 1);
        map.insert(peer_addr, (seq, cert));
    }

    /// Takes the certificate of the connection known as `peer_addr`.
    pub fn take(&self, peer_addr: &str) -> Option<PeerCert> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(peer_addr).map(|(_, cert)| cert)
    }
}
