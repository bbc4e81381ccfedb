//! The tokens and CA of client commands (`get`, `put`, `delete`, `status`, `leave`, `remove`,
//! `bench`, the shell): a flag naming a file, else an environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::CliError;
#[cfg(test)]
use crate::http::{ADMIN_TOKEN_ENV, API_TOKEN_ENV};
use crate::http::{ClientAuth, HttpClient, Token};

/// How a client command authenticates and what it trusts.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientAuthArgs {
    /// File holding the API token [default: $DYNAMO_API_TOKEN]
    #[arg(long = "api-token-file", value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// File holding the admin token [default: $DYNAMO_ADMIN_TOKEN]
    #[arg(long = "admin-token-file", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// PEM file of the CA of an HTTPS node (bare addresses then mean https) [default: $DYNAMO_CA]
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl ClientAuthArgs {
    /// The tokens and CA: from the flags, else from the environment.
    pub fn resolve(&self) -> Result<ClientAuth, CliError> {
        self.resolve_with(|name| std::env::var(name).ok())
    }

    /// [`ClientAuthArgs::resolve`] with `env` in place of the process environment.
    pub fn resolve_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ClientAuth, CliError> {
        let token = |path: &PathBuf, flag: &str| {
            Token::from_file(path).map_err(|e| CliError::Usage(format!("{flag}: {e}")))
        };
        let mut auth = ClientAuth::from_env_with(env);
        if let Some(path) = &self.api_token_file {
            auth.api_token = Some(token(path, "--api-token-file")?);
        }
        if let Some(path) = &self.admin_token_file {
            auth.admin_token = Some(token(path, "--admin-token-file")?);
        }
        if let Some(ca) = &self.ca {
            auth.ca = Some(ca.clone());
        }
        Ok(auth)
    }

    /// A client of `url` with these credentials.
    pub fn client(&self, url: String, timeout: Duration) -> Result<HttpClient, CliError> {
        let auth = self.resolve()?;
        HttpClient::with_auth(url, timeout, auth).map_err(|e| CliError::Usage(format!("--ca: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    #[test]
    fn flags_win_over_the_environment_and_bad_files_name_their_flag() {
        let dir = TempDir::new("client-auth");
        let file = dir.path().join("api");
        std::fs::write(&file, "from-file\n").unwrap();
        let env = |name: &str| match name {
            API_TOKEN_ENV => Some("from-env".to_string()),
            ADMIN_TOKEN_ENV => Some("admin-env".to_string()),
            _ => None,
        };
        let args = ClientAuthArgs {
            api_token_file: Some(file),
            ..Default::default()
        };
        let auth = args.resolve_with(env).unwrap();
        assert_eq!(auth.api_token.unwrap().expose(), "from-file");
        assert_eq!(auth.admin_token.unwrap().expose(), "admin-env");
        assert_eq!(auth.ca, None);
        let bad = ClientAuthArgs {
            admin_token_file: Some(dir.path().join("absent")),
            ..Default::default()
        };
        let err = bad.resolve_with(env).unwrap_err();
        assert!(err.to_string().contains("--admin-token-file"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}
