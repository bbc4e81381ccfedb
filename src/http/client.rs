//! A typed client of the HTTP API, for the CLI, the benchmark, the shell, the test cluster and
//! any program that talks to a node from outside its process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;

use super::access::{Scope, Token};
use super::escape::{encode_path, encode_segment};
use super::wire::{
    CONTEXT_HEADER, ContextBody, LocalBody, LocalVersionView, SiblingsBody, decode_base64,
};
use crate::config::{ConfigUpdate, QuorumConfig};
use crate::model::{Context, GetResult, Health, MemberInfo, RingInfo};

/// Time a request may take, connection included, unless [`HttpClient::with_timeout`] says
/// otherwise; above the node's own quorum timeouts so that their 503 arrives first.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call through [`HttpClient`] failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HttpError {
    /// The node answered with an error status.
    #[error("HTTP {status} {kind}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The `error` field of the JSON body (`"unknown"` if the body was not an API error).
        kind: String,
        /// The `message` field (or the start of a non-JSON body).
        message: String,
        /// The whole JSON body (`null` if it was not JSON).
        body: serde_json::Value,
    },
    /// No answer: connection refused or broken, or a timeout.
    #[error("transport: {0}")]
    Transport(String),
    /// An answer that does not have the documented shape.
    #[error("undecodable answer: {0}")]
    Decode(String),
    /// The key cannot be put in a URL (`.` and `..` are removed by URL normalization).
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

impl HttpError {
    /// The API error kind (e.g. `insufficient_acks`), if the node answered with one.
    pub fn kind(&self) -> Option<&str> {
        match self {
            HttpError::Api { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// The HTTP status, if the node answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What a client presents and trusts: the tokens of a guarded node, the CA of an HTTPS one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientAuth {
    /// Sent on `/kv/*`.
    pub api_token: Option<Token>,
    /// Sent on `/admin/*`, `/metrics` and `/health`.
    pub admin_token: Option<Token>,
    /// PEM file of the CA whose certificates an HTTPS node presents (the only CA trusted).
    pub ca: Option<PathBuf>,
}

impl ClientAuth {
    /// The token to present on `path`, if any.
    fn token_for(&self, path: &str) -> Option<&Token> {
        match Scope::of(path) {
            Scope::Data => self.api_token.as_ref(),
            Scope::Admin | Scope::Open => self.admin_token.as_ref(),
        }
    }
}

/// A client of one node's HTTP API; cheap to clone (the connection pool is shared).
#[derive(Clone, Debug)]
pub struct HttpClient {
    base: String,
    http: reqwest::Client,
    auth: Arc<ClientAuth>,
    timeout: Duration,
}

/// What one request brought back.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl HttpClient {
    /// A client of the node at `base_url` (`http://127.0.0.1:8001` or just `127.0.0.1:8001`).
    pub fn new(base_url: impl Into<String>) -> Self {
        HttpClient::with_timeout(base_url, DEFAULT_TIMEOUT)
    }

    /// Like [`HttpClient::new`] with another per-request timeout.
    pub fn with_timeout(base_url: impl Into<String>, timeout: Duration) -> Self {
        let base = normalize(base_url.into(), false);
        HttpClient {
            http: reqwest_client(timeout, None)
                // Building fails only for TLS or resolver setup, neither used here; the
                // default client is the same minus the settings.
                .unwrap_or_default(),
            base,
            auth: Arc::default(),
            timeout,
        }
    }

    /// A client presenting the tokens of `auth` and trusting its CA (a bare address then means
    /// `https://`); the error says what is wrong with the CA file.
    pub fn with_auth(
        base_url: impl Into<String>,
        timeout: Duration,
        auth: ClientAuth,
    ) -> Result<Self, String> {
        let tls = match &auth.ca {
            Some(ca) => {
                crate::tls::install_provider();
                Some(super::tls::client_config(ca)?)
            }
            None => None,
        };
        let base = normalize(base_url.into(), tls.is_some());
        let http = reqwest_client(timeout, tls).map_err(|e| e.to_string())?;
        Ok(HttpClient {
            base,
            http,
            auth: Arc::new(auth),
            timeout,
        })
    }

    /// A client of another node at `addr` (`IP:PORT`, as members list it), with the same
    /// scheme, tokens and CA and the given timeout.
    pub fn peer(&self, addr: &str, timeout: Duration) -> Result<HttpClient, String> {
        let scheme = self.base.split_once("://").map_or("http", |(s, _)| s);
        HttpClient::with_auth(
            format!("{scheme}://{addr}"),
            timeout,
            ClientAuth::clone(&self.auth),
        )
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The node's base URL, normalized (scheme, no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Reads `key`, waiting for `r` replies (the node's R if `None`).
    pub async fn get(&self, key: &[u8], r: Option<usize>) -> Result<GetResult, HttpError> {
        let url = self.key_url("/kv/", key, "r", r)?;
        let answer = self.send(self.http.get(url)).await?;
        let context = header_context(&answer.headers)?;
        match answer.status {
            200 => Ok(GetResult::Value {
                value: answer.body,
                context,
            }),
            300 => {
                let body: SiblingsBody = decode_json(&answer.body)?;
                let values = body
                    .siblings
                    .iter()
                    .map(|s| decode_base64(s).map_err(|e| HttpError::Decode(e.to_string())))
                    .collect::<Result<_, _>>()?;
                Ok(GetResult::Siblings {
                    values,
                    context: decode_context(&body.context)?,
                })
            }
            status => match api_error(status, &answer.body) {
                // A 404 from the route itself, not a miss, stays an error.
                HttpError::Api {
                    status: 404, kind, ..
                } if kind == "not_found" => Ok(GetResult::NotFound { context }),
                other => Err(other),
            },
        }
    }

    /// Writes `value` under `key` with the context of a previous read (`None`: blind),
    /// waiting for `w` acks; returns a context covering the new version.
    pub async fn put(
        &self,
        key: &[u8],
        value: Bytes,
        context: Option<&Context>,
        w: Option<usize>,
    ) -> Result<Context, HttpError> {
        let url = self.key_url("/kv/", key, "w", w)?;
        let request = with_context(self.http.put(url), context).body(value);
        let body: ContextBody = self.expect_json(request).await?;
        decode_context(&body.context)
    }

    /// Deletes what `context` covers under `key`, waiting for `w` acks.
    pub async fn delete(
        &self,
        key: &[u8],
        context: Option<&Context>,
        w: Option<usize>,
    ) -> Result<(), HttpError> {
        let url = self.key_url("/kv/", key, "w", w)?;
        let request = with_context(self.http.delete(url), context);
        self.expect_ok(request).await.map(drop)
    }

    /// The membership as the node sees it.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, HttpError> {
        self.expect_json(self.admin(Method::GET, "/admin/members"))
            .await
    }

    /// The ring as the node sees it.
    pub async fn ring(&self) -> Result<RingInfo, HttpError> {
        self.expect_json(self.admin(Method::GET, "/admin/ring"))
            .await
    }

    /// What the node itself stores for `key`, tombstones included.
    pub async fn local(&self, key: &[u8]) -> Result<Vec<LocalVersionView>, HttpError> {
        let url = self.key_url("/admin/local/", key, "", None)?;
        let body: LocalBody = self.expect_json(self.http.get(url)).await?;
        body.versions
            .into_iter()
            .map(|v| LocalVersionView::try_from(v).map_err(|e| HttpError::Decode(e.to_string())))
            .collect()
    }

    /// The quorum settings in force.
    pub async fn config(&self) -> Result<QuorumConfig, HttpError> {
        self.expect_json(self.admin(Method::GET, "/admin/config"))
            .await
    }

    /// Changes quorum settings; returns the settings now in force.
    pub async fn update_config(&self, update: &ConfigUpdate) -> Result<QuorumConfig, HttpError> {
        let request = self.admin(Method::PUT, "/admin/config").json(update);
        self.expect_json(request).await
    }

    /// Liveness summary.
    pub async fn health(&self) -> Result<Health, HttpError> {
        self.expect_json(self.admin(Method::GET, "/health")).await
    }

    /// Makes the node leave the cluster (`POST /admin/leave`); its entry as it is now.
    pub async fn leave(&self) -> Result<MemberInfo, HttpError> {
        let answer = self.send(self.admin(Method::POST, "/admin/leave")).await?;
        accepted_json(answer)
    }

    /// Declares `name` gone for good (`POST /admin/remove/{name}`); its entry as it is now.
    pub async fn remove(&self, name: &str) -> Result<MemberInfo, HttpError> {
        let path = format!("/admin/remove/{}", encode_segment(name.as_bytes()));
        let answer = self.send(self.admin(Method::POST, &path)).await?;
        accepted_json(answer)
    }

    /// Prometheus text of the node's metrics.
    pub async fn metrics(&self) -> Result<String, HttpError> {
        let answer = self.expect_ok(self.admin(Method::GET, "/metrics")).await?;
        String::from_utf8(answer.body.to_vec()).map_err(|e| HttpError::Decode(e.to_string()))
    }

    // ---- plumbing ----

    fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// `base + prefix + encoded key [+ ?name=value]`.
    fn key_url(
        &self,
        prefix: &str,
        key: &[u8],
        name: &str,
        option: Option<usize>,
    ) -> Result<String, HttpError> {
        let mut url = format!("{}{prefix}{}", self.base, key_path(key)?);
        if let Some(value) = option {
            url.push_str(&format!("?{name}={value}"));
        }
        Ok(url)
    }

    async fn send(&self, request: RequestBuilder) -> Result<Answer, HttpError> {
        let mut request = request.build().map_err(transport)?;
        if let Some(token) = self.auth.token_for(request.url().path()) {
            let value =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    HttpError::Transport("the token is not a valid header value".into())
                })?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let response = self.http.execute(request).await.map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport)?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    async fn expect_ok(&self, request: RequestBuilder) -> Result<Answer, HttpError> {
        let answer = self.send(request).await?;
        if answer.status == 200 {
            Ok(answer)
        } else {
            Err(api_error(answer.status, &answer.body))
        }
    }

    async fn expect_json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<T, HttpError> {
        let answer = self.expect_ok(request).await?;
        decode_json(&answer.body)
    }
}

/// The JSON body of a 202 answer, or the error it carries.
fn accepted_json<T: DeserializeOwned>(answer: Answer) -> Result<T, HttpError> {
    if answer.status == 202 {
        decode_json(&answer.body)
    } else {
        Err(api_error(answer.status, &answer.body))
    }
}

/// The path form of a key. Keys with a `.` or `..` segment get their `/` escaped too, since
/// URL parsing would otherwise resolve those segments away; a key that is exactly `.` or
/// `base_url` with a scheme (`https://` when `tls`, else `http://`) and no trailing slash.
fn normalize(base_url: String, tls: bool) -> String {
    let mut base = base_url.trim().to_owned();
    if !base.contains("://") {
        base.insert_str(0, if tls { "https://" } else { "http://" });
    }
    while base.ends_with('/') {
        base.pop();
    }
    base
}

fn reqwest_client(
    timeout: Duration,
    tls: Option<tokio_rustls::rustls::ClientConfig>,
) -> reqwest::Result<reqwest::Client> {
    // reqwest takes the process's rustls provider (and would panic without one).
    crate::tls::install_provider();
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        // Nodes are addressed directly: no proxy from the environment, and a 300 is an
        // answer (siblings), never something to follow.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none());
    if let Some(tls) = tls {
        builder = builder.tls_backend_preconfigured(tls);
    }
    builder.build()
}

/// `..` has no URL at all.
fn key_path(key: &[u8]) -> Result<String, HttpError> {
    let is_dot = |segment: &[u8]| segment == b"." || segment == b"..";
    if is_dot(key) {
        return Err(HttpError::InvalidKey(format!(
            "{:?} cannot be addressed in a URL path",
            String::from_utf8_lossy(key)
        )));
    }
    if key.split(|&b| b == b'/').any(is_dot) {
        Ok(encode_segment(key))
    } else {
        Ok(encode_path(key))
    }
}

fn with_context(request: RequestBuilder, context: Option<&Context>) -> RequestBuilder {
    match context {
        Some(ctx) if !ctx.is_empty() => request.header(CONTEXT_HEADER, ctx.encode()),
        _ => request,
    }
}

/// The context in the answer's header; empty when there is none.
fn header_context(headers: &HeaderMap) -> Result<Context, HttpError> {
    match headers.get(CONTEXT_HEADER) {
        None => Ok(Context::empty()),
        Some(value) => {
            let token = value
                .to_str()
                .map_err(|_| HttpError::Decode("context header is not text".into()))?;
            decode_context(token)
        }
    }
}

fn decode_context(token: &str) -> Result<Context, HttpError> {
    Context::decode(token).map_err(|e| HttpError::Decode(format!("context: {e}")))
}

fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(body).map_err(|e| HttpError::Decode(e.to_string()))
}

/// The error an error status stands for, from its JSON body when it has one.
fn api_error(status: u16, body: &[u8]) -> HttpError {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => HttpError::Api {
            status,
            kind: json["error"].as_str().unwrap_or("unknown").to_owned(),
            message: json["message"].as_str().unwrap_or_default().to_owned(),
            body: json,
        },
        Err(_) => HttpError::Api {
            status,
            kind: "unknown".to_owned(),
            message: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            body: serde_json::Value::Null,
        },
    }
}

/// A transport failure, with the causes reqwest keeps in its source chain.
fn transport(e: reqwest::Error) -> HttpError {
    let mut text = if e.is_timeout() {
        format!("timed out: {e}")
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    HttpError::Transport(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalized() {
        assert_eq!(
            HttpClient::new("127.0.0.1:8001").base_url(),
            "http://127.0.0.1:8001"
        );
        assert_eq!(
            HttpClient::new("http://localhost:9/").base_url(),
            "http://localhost:9"
        );
    }

    #[test]
    fn key_paths_survive_url_normalization() {
        assert_eq!(key_path(b"a/b c").unwrap(), "a/b%20c");
        assert_eq!(key_path(b"a/../b").unwrap(), "a%2F..%2Fb");
        assert_eq!(key_path(b"./x").unwrap(), ".%2Fx");
        assert_eq!(key_path(b"a.b/..c").unwrap(), "a.b/..c");
        assert!(matches!(key_path(b".."), Err(HttpError::InvalidKey(_))));
        assert!(matches!(key_path(b"."), Err(HttpError::InvalidKey(_))));
    }

    #[test]
    fn error_bodies_are_read_whether_json_or_not() {
        let e = api_error(
            503,
            br#"{"error":"insufficient_acks","message":"m","required":2}"#,
        );
        assert_eq!(e.kind(), Some("insufficient_acks"));
        assert_eq!(e.status(), Some(503));
        let HttpError::Api { body, message, .. } = e else {
            panic!("not an api error")
        };
        assert_eq!(body["required"], 2);
        assert_eq!(message, "m");
        let e = api_error(502, b"bad gateway");
        assert_eq!(e.kind(), Some("unknown"));
        assert!(matches!(e, HttpError::Api { message, .. } if message == "bad gateway"));
    }
}
