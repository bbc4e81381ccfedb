//! The secrets and guards of `dynamo-node start`, and protected mode: a node reachable from
//! other machines refuses to start with the default cookie, with a cookie on its command line
//! (every local user sees it in `ps`), or with an open HTTP API, and says what to add.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::CliError;
pub use crate::config::COOKIE_ENV;
use crate::config::NodeConfig;
use crate::http::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUESTS,
    HttpAccess, HttpGuard, HttpLimits, TlsFiles, Token,
};

/// The cookie of a node given none: fine on loopback, refused elsewhere.
pub const DEFAULT_COOKIE: &str = "dynamo";

/// `start` flags for secrets, HTTPS and the HTTP server's bounds.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityFlags {
    /// File holding the cluster cookie (its trailing newlines dropped); else --cookie, else
    /// $DYNAMO_COOKIE
    #[arg(long, value_name = "FILE", conflicts_with = "cookie")]
    pub cookie_file: Option<PathBuf>,
    /// File holding the bearer token that `/kv/*` requires [default: /kv open]
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// File holding the bearer token that `/admin/*` and `/metrics` require [default: open]
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve the HTTP API without tokens on a non-loopback address (protected mode refuses
    /// that otherwise)
    #[arg(long)]
    pub insecure: bool,
    /// Serve HTTPS with this PEM certificate chain (with --http-tls-key)
    #[arg(long, value_name = "FILE", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key of --http-tls-cert
    #[arg(long, value_name = "FILE", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,
    /// HTTP requests served at once; more are answered 503 overloaded at once
    #[arg(long, value_name = "COUNT", default_value_t = DEFAULT_MAX_REQUESTS)]
    pub max_http_requests: usize,
    /// HTTP connections open at once; more are closed as soon as accepted
    #[arg(long, value_name = "COUNT", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_http_connections: usize,
    /// Time a client has to send a request's headers (and TLS handshake)
    #[arg(long, value_name = "T", default_value_t = DEFAULT_HEADER_TIMEOUT.as_millis() as u64)]
    pub http_header_timeout_ms: u64,
    /// Time a client has to send a request's body (408 after it)
    #[arg(long, value_name = "T", default_value_t = DEFAULT_BODY_TIMEOUT.as_millis() as u64)]
    pub http_body_timeout_ms: u64,
}

/// Where the cookie came from: protected mode trusts a file or the environment only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieSource {
    /// None given: the default word.
    Default,
    /// `--cookie` (visible in `ps`).
    Flag,
    /// `--cookie-file`.
    File,
    /// `$DYNAMO_COOKIE`.
    Env,
}

impl SecurityFlags {
    /// Sets the cookie (from `--cookie-file`, else `cookie_flag`, else `env_cookie`) on
    /// `config`, applies protected mode, and returns the HTTP API's guard (tokens, HTTPS,
    /// bounds).
    pub fn apply(
        &self,
        config: &mut NodeConfig,
        cookie_flag: Option<&str>,
        env_cookie: Option<String>,
    ) -> Result<HttpGuard, CliError> {
        let source = if let Some(path) = &self.cookie_file {
            config.cookie = read_secret(path, "--cookie-file")?;
            CookieSource::File
        } else if let Some(cookie) = cookie_flag {
            config.cookie = cookie.to_owned();
            CookieSource::Flag
        } else if let Some(cookie) = env_cookie.filter(|c| !c.trim().is_empty()) {
            config.cookie = cookie.trim_end_matches(['\n', '\r']).to_owned();
            CookieSource::Env
        } else {
            CookieSource::Default
        };
        let guard = self.guard()?;
        protected_mode(config, &guard.access, source, self.insecure).map_err(CliError::Usage)?;
        Ok(guard)
    }

    fn guard(&self) -> Result<HttpGuard, CliError> {
        let token = |path: &Option<PathBuf>, flag: &str| {
            path.as_deref()
                .map(|p| Token::from_file(p).map_err(|e| CliError::Usage(format!("{flag}: {e}"))))
                .transpose()
        };
        let mut guard = HttpGuard::default();
        guard.access.api = token(&self.api_token_file, "--api-token-file")?;
        guard.access.admin = token(&self.admin_token_file, "--admin-token-file")?;
        for (value, flag) in [
            (self.max_http_requests as u64, "--max-http-requests"),
            (self.max_http_connections as u64, "--max-http-connections"),
            (self.http_header_timeout_ms, "--http-header-timeout-ms"),
            (self.http_body_timeout_ms, "--http-body-timeout-ms"),
        ] {
            if value == 0 {
                return Err(CliError::Usage(format!("{flag} must be at least 1")));
            }
        }
        guard.limits = HttpLimits {
            max_requests: self.max_http_requests,
            max_connections: self.max_http_connections,
            header_timeout: Duration::from_millis(self.http_header_timeout_ms),
            body_timeout: Duration::from_millis(self.http_body_timeout_ms),
        };
        if let (Some(cert), Some(key)) = (&self.http_tls_cert, &self.http_tls_key) {
            guard.tls = Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        // A certificate that cannot be used is the operator's to fix, before any port is taken.
        guard
            .serve_options()
            .map_err(|e| CliError::Usage(format!("--http-tls-cert/--http-tls-key: {e}")))?;
        Ok(guard)
    }
}

/// A secret from a file: its content minus a trailing line end; empty or unreadable is an
/// error naming `flag`.
pub fn read_secret(path: &Path, flag: &str) -> Result<String, CliError> {
    Token::from_file(path)
        .map(|t| t.expose().to_owned())
        .map_err(|e| CliError::Usage(format!("{flag}: {e}")))
}

fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Refuses a node reachable from other machines without a cluster secret of its own (kept
/// off the command line) and, for a reachable HTTP API, without both tokens or `--insecure`.
/// The message names every flag to add.
pub fn protected_mode(
    config: &NodeConfig,
    access: &HttpAccess,
    cookie: CookieSource,
    insecure: bool,
) -> Result<(), String> {
    let http_public = config.http.is_some_and(|a| !is_loopback(a));
    let exposed: Vec<String> = [
        (!is_loopback(config.bind)).then(|| format!("--bind {}", config.bind)),
        config
            .http
            .filter(|_| http_public)
            .map(|a| format!("--http {a}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if exposed.is_empty() {
        return Ok(());
    }
    let mut missing = Vec::new();
    match cookie {
        CookieSource::Default => missing.push(format!(
            "a cluster cookie other than {DEFAULT_COOKIE:?}: --cookie-file FILE or ${COOKIE_ENV}"
        )),
        CookieSource::Flag => missing.push(format!(
            "the cookie from --cookie-file FILE or ${COOKIE_ENV} instead of --cookie (a command \
             line shows in ps)"
        )),
        CookieSource::File | CookieSource::Env if config.cookie == DEFAULT_COOKIE => {
            missing.push(format!(
                "a cluster cookie other than {DEFAULT_COOKIE:?} in --cookie-file or ${COOKIE_ENV}"
            ))
        }
        CookieSource::File | CookieSource::Env => {}
    }
    if http_public && !insecure {
        if access.api.is_none() {
            missing.push("--api-token-file FILE (or --insecure)".into());
        }
        if access.admin.is_none() {
            missing.push("--admin-token-file FILE (or --insecure)".into());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "protected mode: {} is not loopback; add {}",
        exposed.join(" and "),
        missing.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bind: &str, http: &str, cookie: &str) -> NodeConfig {
        let mut c = NodeConfig::new("n1", bind.parse().unwrap());
        c.http = Some(http.parse().unwrap());
        c.cookie = cookie.into();
        c
    }

    fn tokens() -> HttpAccess {
        HttpAccess {
            api: Token::new("a"),
            admin: Token::new("b"),
        }
    }

    #[test]
    fn loopback_needs_nothing() {
        let c = config("127.0.0.1:7000", "127.0.0.1:8000", DEFAULT_COOKIE);
        assert!(protected_mode(&c, &HttpAccess::default(), CookieSource::Default, false).is_ok());
        assert!(protected_mode(&c, &HttpAccess::default(), CookieSource::Flag, false).is_ok());
        let v6 = config("[::1]:7000", "127.0.0.5:8000", "x");
        assert!(protected_mode(&v6, &HttpAccess::default(), CookieSource::Flag, false).is_ok());
    }

    #[test]
    fn a_public_cluster_address_needs_a_cookie_of_its_own_off_the_command_line() {
        let default = config("10.0.0.1:7000", "127.0.0.1:8000", DEFAULT_COOKIE);
        let err = protected_mode(
            &default,
            &HttpAccess::default(),
            CookieSource::Default,
            false,
        )
        .unwrap_err();
        assert!(err.contains("--bind 10.0.0.1:7000"), "{err}");
        assert!(err.contains("--cookie-file") && err.contains("DYNAMO_COOKIE"));
        assert!(!err.contains("token"), "HTTP is loopback: {err}");
        let flag = config("10.0.0.1:7000", "127.0.0.1:8000", "s3cret");
        let err =
            protected_mode(&flag, &HttpAccess::default(), CookieSource::Flag, false).unwrap_err();
        assert!(err.contains("instead of --cookie"), "{err}");
        let err = protected_mode(&default, &HttpAccess::default(), CookieSource::File, false)
            .unwrap_err();
        assert!(err.contains("other than"), "{err}");
        for source in [CookieSource::File, CookieSource::Env] {
            assert!(protected_mode(&flag, &HttpAccess::default(), source, false).is_ok());
        }
    }

    #[test]
    fn a_public_http_address_needs_both_tokens_or_insecure() {
        let c = config("127.0.0.1:7000", "0.0.0.0:8000", "s3cret");
        let err = protected_mode(&c, &HttpAccess::default(), CookieSource::Env, false).unwrap_err();
        assert!(err.contains("--http 0.0.0.0:8000"), "{err}");
        assert!(err.contains("--api-token-file") && err.contains("--admin-token-file"));
        assert!(protected_mode(&c, &HttpAccess::default(), CookieSource::Env, true).is_ok());
        assert!(protected_mode(&c, &tokens(), CookieSource::Env, false).is_ok());
        let one = HttpAccess {
            api: Token::new("a"),
            admin: None,
        };
        let err = protected_mode(&c, &one, CookieSource::Env, false).unwrap_err();
        assert!(!err.contains("--api-token-file") && err.contains("--admin-token-file"));
        // --insecure opens HTTP only: the cookie is still required.
        let open = config("0.0.0.0:7000", "0.0.0.0:8000", DEFAULT_COOKIE);
        let err =
            protected_mode(&open, &HttpAccess::default(), CookieSource::Default, true).unwrap_err();
        assert!(
            err.contains("--cookie-file") && !err.contains("token"),
            "{err}"
        );
    }
}
