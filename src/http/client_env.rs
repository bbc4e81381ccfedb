//! A client's credentials from the environment: what the shell, `bench` and every client
//! command fall back to when no flag names a file.

use std::path::PathBuf;
use std::time::Duration;

use super::access::Token;
use super::client::{ClientAuth, HttpClient};

/// Environment variable holding the API token (for `/kv`).
pub const API_TOKEN_ENV: &str = "DYNAMO_API_TOKEN";
/// Environment variable holding the admin token (for `/admin`, `/metrics`).
pub const ADMIN_TOKEN_ENV: &str = "DYNAMO_ADMIN_TOKEN";
/// Environment variable naming the PEM file of the CA an HTTPS node's certificate chains to.
pub const CA_ENV: &str = "DYNAMO_CA";

impl ClientAuth {
    /// The tokens and CA that `env` (a lookup of environment variables) names.
    pub fn from_env_with(env: impl Fn(&str) -> Option<String>) -> ClientAuth {
        ClientAuth {
            api_token: env(API_TOKEN_ENV).and_then(|text| Token::new(&text)),
            admin_token: env(ADMIN_TOKEN_ENV).and_then(|text| Token::new(&text)),
            ca: env(CA_ENV)
                .filter(|v| !v.trim().is_empty())
                .map(PathBuf::from),
        }
    }

    /// The tokens and CA of this process's environment.
    pub fn from_env() -> ClientAuth {
        Self::from_env_with(|name| std::env::var(name).ok())
    }
}

/// A client of `url` with the tokens and CA of the environment (`$DYNAMO_API_TOKEN`,
/// `$DYNAMO_ADMIN_TOKEN`, `$DYNAMO_CA`); a CA file that cannot be used is reported on stderr
/// (the user of a tool must see it) and the client then trusts no HTTPS node.
pub fn env_client(url: &str, timeout: Duration) -> HttpClient {
    match HttpClient::with_auth(url.to_owned(), timeout, ClientAuth::from_env()) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("warning: --ca: {e}");
            HttpClient::with_timeout(url, timeout)
        }
    }
}
