//! Bearer tokens on the API: which token a route needs, and the layer that checks it.
//!
//! `/kv/*` needs the API token, `/admin/*` and `/metrics` the admin token, `/health` nothing.
//! The admin token does not open `/kv` (least privilege: whoever runs the cluster need not
//! read its data) unless it is also the API token. A guard without a configured token is
//! open, so a node started without token files behaves as before.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use serde_json::json;
use subtle::ConstantTimeEq;
use tower_service::Service;

use super::layers::{Act, Middleware};
use super::limits::HttpCounters;

/// A secret bearer token; never printed, compared in constant time.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    /// A token from its text; `None` when it is empty (or only whitespace).
    pub fn new(text: &str) -> Option<Token> {
        let text = text.trim_end_matches(['\n', '\r']);
        (!text.trim().is_empty()).then(|| Token(Arc::from(text)))
    }

    /// Reads a token file: its content minus one trailing newline. An unreadable or empty
    /// file is an error that says which.
    pub fn from_file(path: &Path) -> Result<Token, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Token::new(&text).ok_or_else(|| format!("{} is empty", path.display()))
    }

    /// The token's text, for an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.0.as_bytes())
    }
}

impl Eq for Token {}

/// The tokens a server requires; `None` leaves that part of the API open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpAccess {
    /// Opens `/kv/*`.
    pub api: Option<Token>,
    /// Opens `/admin/*` and `/metrics`.
    pub admin: Option<Token>,
}

/// Which token a path needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `/kv/*`: the API token.
    Data,
    /// `/admin/*`, `/metrics`: the admin token.
    Admin,
    /// `/health` and unknown routes: nothing.
    Open,
}

impl Scope {
    /// The scope of a request path.
    pub fn of(path: &str) -> Scope {
        if path == "/kv" || path.starts_with("/kv/") {
            Scope::Data
        } else if path == "/metrics" || path == "/admin" || path.starts_with("/admin/") {
            Scope::Admin
        } else {
            Scope::Open
        }
    }
}

impl HttpAccess {
    /// Whether a request for `path` with `authorization` (the header's value) may pass.
    pub fn allows(&self, path: &str, authorization: Option<&HeaderValue>) -> bool {
        let required = match Scope::of(path) {
            Scope::Data => &self.api,
            Scope::Admin => &self.admin,
            Scope::Open => return true,
        };
        let Some(token) = required else {
            return true;
        };
        bearer(authorization).is_some_and(|presented| token.matches(presented))
    }
}

/// The token of an `Authorization: Bearer ...` header value.
fn bearer(value: Option<&HeaderValue>) -> Option<&[u8]> {
    let bytes = value?.as_bytes();
    let scheme = bytes.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| bytes[7..].trim_ascii())
}

/// The 401 answer: a JSON error like every other, and the scheme to use.
pub fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({
            "error": "unauthorized",
            "message": "missing or wrong bearer token (Authorization: Bearer <token>)",
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Answers 401 to a request without the token its route needs, before its body is read.
#[derive(Clone)]
pub struct RequireTokens {
    access: Arc<HttpAccess>,
    counters: Arc<HttpCounters>,
}

impl RequireTokens {
    /// Checks requests against `access`, counting refusals in `counters`.
    pub fn new(access: HttpAccess, counters: Arc<HttpCounters>) -> Middleware<Self> {
        Middleware(RequireTokens {
            access: Arc::new(access),
            counters,
        })
    }
}

impl<S> Act<S> for RequireTokens
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn act(&self, inner: &mut S, request: Request) -> Self::Future {
        let authorization = request.headers().get(header::AUTHORIZATION);
        if self.access.allows(request.uri().path(), authorization) {
            Either::Right(inner.call(request))
        } else {
            self.counters.unauthorized.inc();
            Either::Left(ready(Ok(unauthorized())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn routes_need_the_token_of_their_scope_only() {
        let access = HttpAccess {
            api: Token::new("api-secret"),
            admin: Token::new("admin-secret"),
        };
        let api = header("Bearer api-secret");
        let admin = header("bearer admin-secret");
        let wrong = header("Bearer api-secreT");
        for path in ["/kv/a", "/kv/", "/kv"] {
            assert!(access.allows(path, Some(&api)), "{path}");
            assert!(!access.allows(path, Some(&admin)), "{path}");
            assert!(!access.allows(path, Some(&wrong)), "{path}");
            assert!(!access.allows(path, None), "{path}");
        }
        for path in ["/admin/members", "/admin/local/k", "/metrics", "/admin"] {
            assert!(access.allows(path, Some(&admin)), "{path}");
            assert!(!access.allows(path, Some(&api)), "{path}");
            assert!(!access.allows(path, None), "{path}");
        }
        assert!(access.allows("/health", None));
        // Not a bearer token at all, or an empty one.
        assert!(!access.allows("/kv/a", Some(&header("Basic api-secret"))));
        assert!(!access.allows("/kv/a", Some(&header("Bearer "))));
        assert!(!access.allows("/kv/a", Some(&header("Bearer"))));
    }

    #[test]
    fn a_guard_without_a_token_is_open_and_one_token_may_open_both() {
        let open = HttpAccess::default();
        assert!(open.allows("/kv/a", None) && open.allows("/metrics", None));
        let same = HttpAccess {
            api: Token::new("one"),
            admin: Token::new("one"),
        };
        let one = header("Bearer one");
        assert!(same.allows("/kv/a", Some(&one)) && same.allows("/admin/ring", Some(&one)));
    }

    #[test]
    fn tokens_are_trimmed_of_one_line_end_never_printed_and_never_empty() {
        assert_eq!(Token::new("s3cret\n").unwrap().expose(), "s3cret");
        assert_eq!(Token::new("s3cret\r\n").unwrap().expose(), "s3cret");
        assert!(Token::new("").is_none() && Token::new("\n").is_none());
        assert_eq!(format!("{:?}", Token::new("s3cret")), "Some(Token(***))");
        let dir = crate::testing::TempDir::new("token");
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(Token::from_file(&file).unwrap().expose(), "from-file");
        std::fs::write(&file, "").unwrap();
        assert!(Token::from_file(&file).unwrap_err().contains("is empty"));
        let missing = Token::from_file(&dir.path().join("absent")).unwrap_err();
        assert!(missing.contains("cannot read"), "{missing}");
    }
}
