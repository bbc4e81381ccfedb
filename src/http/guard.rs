//! How a node's HTTP API guards itself, as configured: tokens, resource bounds, HTTPS files.

use super::access::HttpAccess;
use super::limits::HttpLimits;
use super::listen::ServeOptions;
use super::tls::{TlsFiles, acceptor};

/// The HTTP settings of a node that concern who may call it and what it holds at most.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpGuard {
    /// The tokens routes need.
    pub access: HttpAccess,
    /// The resource bounds.
    pub limits: HttpLimits,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<TlsFiles>,
}

impl HttpGuard {
    /// The server's options, with the TLS files loaded; the error names the file at fault.
    pub fn serve_options(&self) -> Result<ServeOptions, String> {
        Ok(ServeOptions {
            access: self.access.clone(),
            limits: self.limits,
            tls: self.tls.as_ref().map(acceptor).transpose()?,
        })
    }
}
