//! The axum server: routes, handlers, and how service results become statuses and bodies.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};

use super::access::{HttpAccess, RequireTokens};
use super::escape::{decode, query_values};
use super::failure::Failure;
use super::layers::{RefuseOversize, TraceRequests};
use super::limits::{HttpCounters, HttpLimits, LimitInFlight, ReadBody};
use super::listen::{ServeOptions, accept_loop};
use super::wire::{
    CONTEXT_HEADER, ContextBody, DeletedBody, LocalBody, LocalVersionWire, SiblingsBody,
    encode_base64,
};
use crate::config::{ConfigUpdate, MAX_VALUE_BYTES};
use crate::model::{
    ClientError, Context, ContextError, GetResult, KvService, ReadOptions, WriteOptions,
    validate_key, validate_value,
};

/// Largest request body read at all: a little above the value limit, so that a value just
/// over it gets the precise `value_too_large` answer from validation.
pub const BODY_LIMIT: usize = MAX_VALUE_BYTES + 64 * 1024;

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

const KV_PREFIX: &str = "/kv/";
const LOCAL_PREFIX: &str = "/admin/local/";
const REMOVE_PREFIX: &str = "/admin/remove/";

/// The HTTP API of `service` as an axum router, open to all and with the default limits.
pub fn router<S: KvService>(service: S) -> Router {
    router_with(
        service,
        HttpAccess::default(),
        HttpLimits::default(),
        Arc::new(HttpCounters::default()),
    )
}

/// The HTTP API of `service`, guarded by `access` and `limits`, counting refusals in
/// `counters` (which `GET /metrics` shows after the node's own metrics).
pub fn router_with<S: KvService>(
    service: S,
    access: HttpAccess,
    limits: HttpLimits,
    counters: Arc<HttpCounters>,
) -> Router {
    let scrape = Arc::clone(&counters);
    let refusal_counters = Arc::clone(&counters);
    Router::new()
        .route(KV_PREFIX, any(empty_key))
        .route(
            "/kv/{*key}",
            get(get_key::<S>).put(put_key::<S>).delete(delete_key::<S>),
        )
        .route("/admin/members", get(members::<S>))
        .route("/admin/ring", get(ring::<S>))
        .route(LOCAL_PREFIX, get(empty_key))
        .route("/admin/local/{*key}", get(local::<S>))
        .route("/admin/config", get(config::<S>).put(update_config::<S>))
        .route("/admin/leave", post(leave::<S>))
        .route(REMOVE_PREFIX, post(empty_member))
        .route("/admin/remove/{*name}", post(remove::<S>))
        .route(
            "/metrics",
            get(move |State(svc): State<S>| metrics(svc, scrape)),
        )
        .route("/health", get(health::<S>))
        // After every route: it is attached to the routes that exist when it is called.
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(TraceRequests::new(route_of))
        .fallback(unknown_route)
        // Layers run from the last added to the first: a request is counted against the
        // in-flight bound, then its token checked, then its declared size, and only then is
        // its body read (within the body deadline).
        .layer(ReadBody::new(
            BODY_LIMIT,
            limits.body_timeout,
            || too_large().into_response(),
            Arc::clone(&counters),
        ))
        // Answers 413 at once to a body declared larger than [`BODY_LIMIT`], without reading
        // it; bodies of unknown length are cut off by `ReadBody` instead.
        .layer(RefuseOversize::new(BODY_LIMIT, move || {
            refusal_counters.hit("body_size");
            too_large().into_response()
        }))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequireTokens::new(access, Arc::clone(&counters)))
        .layer(LimitInFlight::new(limits.max_requests, counters))
        .with_state(service)
}

/// Serves the API of `service` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish. Open to all, plain HTTP, default limits.
pub async fn serve<S: KvService>(
    listener: tokio::net::TcpListener,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, service, ServeOptions::default(), shutdown).await
}

/// Like [`serve`], guarded by `options`: tokens, limits, and HTTPS when it has a TLS acceptor.
pub async fn serve_with<S: KvService>(
    listener: tokio::net::TcpListener,
    service: S,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let counters = Arc::new(HttpCounters::default());
    let app = router_with(
        service,
        options.access.clone(),
        options.limits,
        Arc::clone(&counters),
    );
    accept_loop(listener, app, &options, counters, shutdown).await;
    Ok(())
}

/// The route template of a routed path: keys are not logged, only their route.
fn route_of(path: &str) -> &str {
    if path.starts_with(KV_PREFIX) {
        "/kv/{*key}"
    } else if path.starts_with(LOCAL_PREFIX) {
        "/admin/local/{*key}"
    } else if path.starts_with(REMOVE_PREFIX) {
        "/admin/remove/{*name}"
    } else {
        path
    }
}

// ---- key-value routes ----

async fn get_key<S: KvService>(State(svc): State<S>, uri: Uri) -> Result<Response, Failure> {
    let key = key_of(&uri, KV_PREFIX)?;
    let opts = ReadOptions {
        r: quorum_option(&uri, "r")?,
    };
    opts.check(svc.config().n)?;
    let answer = match svc.get(key, opts).await? {
        GetResult::Value { value, context } => {
            let mut response =
                ([(header::CONTENT_TYPE, "application/octet-stream")], value).into_response();
            set_context(response.headers_mut(), &context);
            response
        }
        GetResult::Siblings { values, context } => {
            let body = SiblingsBody {
                siblings: values.iter().map(|v| encode_base64(v)).collect(),
                context: context.encode(),
            };
            let mut response = (StatusCode::MULTIPLE_CHOICES, Json(body)).into_response();
            set_context(response.headers_mut(), &context);
            response
        }
        GetResult::NotFound { context } => {
            let mut response = Failure::http(
                StatusCode::NOT_FOUND,
                "not_found",
                "no live value for the key",
            )
            .into_response();
            if !context.is_empty() {
                set_context(response.headers_mut(), &context);
            }
            response
        }
    };
    Ok(answer)
}

async fn put_key<S: KvService>(
    State(svc): State<S>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let key = key_of(&uri, KV_PREFIX)?;
    let value = body.map_err(body_failure)?;
    validate_value(&value)?;
    let context = context_of(&headers)?;
    let opts = WriteOptions {
        w: quorum_option(&uri, "w")?,
    };
    opts.check(svc.config().n)?;
    let written = svc.put(key, value, context, opts).await?;
    // Encoded once, for the body and the header alike.
    let context = written.encode();
    let header = HeaderValue::from_str(&context);
    let mut response = Json(ContextBody { context }).into_response();
    if let Ok(value) = header {
        response.headers_mut().insert(CONTEXT_HEADER, value);
    }
    Ok(response)
}

async fn delete_key<S: KvService>(
    State(svc): State<S>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let key = key_of(&uri, KV_PREFIX)?;
    let context = context_of(&headers)?;
    let opts = WriteOptions {
        w: quorum_option(&uri, "w")?,
    };
    opts.check(svc.config().n)?;
    svc.delete(key, context, opts).await?;
    Ok(Json(DeletedBody { deleted: true }).into_response())
}

async fn empty_key() -> Failure {
    ClientError::InvalidKey("key is empty".into()).into()
}

// ---- admin routes ----

async fn members<S: KvService>(State(svc): State<S>) -> Response {
    Json(svc.members()).into_response()
}

async fn ring<S: KvService>(State(svc): State<S>) -> Response {
    Json(svc.ring()).into_response()
}

async fn local<S: KvService>(State(svc): State<S>, uri: Uri) -> Result<Response, Failure> {
    let key = key_of(&uri, LOCAL_PREFIX)?;
    let set = svc.local(&key);
    let body = LocalBody {
        versions: set
            .versions()
            .iter()
            .map(LocalVersionWire::from_version)
            .collect(),
    };
    Ok(Json(body).into_response())
}

async fn config<S: KvService>(State(svc): State<S>) -> Response {
    Json(svc.config()).into_response()
}

async fn update_config<S: KvService>(
    State(svc): State<S>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let body = body.map_err(body_failure)?;
    // Parsed by hand rather than with `Json`, which would want a content type and answer
    // 422 for an unknown field; any undecodable update is simply a bad request here.
    let update: ConfigUpdate = serde_json::from_slice(&body).map_err(|e| {
        Failure::http(
            StatusCode::BAD_REQUEST,
            "invalid_config",
            format!("not a configuration update: {e}"),
        )
    })?;
    Ok(Json(svc.update_config(update)?).into_response())
}

async fn metrics<S: KvService>(svc: S, counters: Arc<HttpCounters>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        counters.append_to(svc.metrics()),
    )
        .into_response()
}

async fn health<S: KvService>(State(svc): State<S>) -> Response {
    let health = svc.health();
    let status = if health.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}

/// `POST /admin/leave`: this node starts draining; 202 with its entry.
async fn leave<S: KvService>(State(svc): State<S>) -> Result<Response, Failure> {
    let member = svc.leave()?;
    Ok((StatusCode::ACCEPTED, Json(member)).into_response())
}

/// `POST /admin/remove/{name}`: the named node is gone for good; 202 with its entry.
async fn remove<S: KvService>(State(svc): State<S>, uri: Uri) -> Result<Response, Failure> {
    let raw = uri.path().strip_prefix(REMOVE_PREFIX).unwrap_or_default();
    let name = String::from_utf8(decode(raw)).map_err(|_| {
        Failure::http(
            StatusCode::BAD_REQUEST,
            "invalid_member",
            "a node name is UTF-8",
        )
    })?;
    let member = svc.remove(&name)?;
    Ok((StatusCode::ACCEPTED, Json(member)).into_response())
}

async fn empty_member() -> Failure {
    Failure::http(
        StatusCode::BAD_REQUEST,
        "invalid_member",
        "name the node to remove: POST /admin/remove/{name}",
    )
}

// ---- fallbacks ----

async fn unknown_route(uri: Uri) -> Failure {
    Failure::http(
        StatusCode::NOT_FOUND,
        "unknown_route",
        format!("no route for {}", uri.path()),
    )
}

async fn method_not_allowed(request: Request) -> Failure {
    Failure::http(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

// ---- request parts ----

/// The key: the percent-decoded path after `prefix`, checked against the limits.
fn key_of(uri: &Uri, prefix: &str) -> Result<Bytes, Failure> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or_default();
    let key = decode(raw);
    validate_key(&key)?;
    Ok(Bytes::from(key))
}

/// The request's context: `None` when absent or empty (a blind write).
fn context_of(headers: &HeaderMap) -> Result<Option<Context>, Failure> {
    let mut values = headers.get_all(CONTEXT_HEADER).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Failure::http(
            StatusCode::BAD_REQUEST,
            "invalid_context",
            "several X-Dynamo-Context headers",
        ));
    }
    let token = first
        .to_str()
        .map_err(|_| ClientError::InvalidContext(ContextError::NotBase64))?;
    let context = Context::decode(token).map_err(ClientError::from)?;
    Ok((!context.is_empty()).then_some(context))
}

/// `?r=` or `?w=`: absent, or a number (whether it is within 1..=N is the options' rule:
/// [`ReadOptions::check`], [`WriteOptions::check`]).
fn quorum_option(uri: &Uri, name: &str) -> Result<Option<usize>, Failure> {
    let values = query_values(uri.query(), name);
    let text = match values.as_slice() {
        [] => return Ok(None),
        [one] => one,
        _ => return Err(Failure::option(format!("{name} given more than once"))),
    };
    let value: usize = text
        .trim()
        .parse()
        .map_err(|_| Failure::option(format!("{name} must be a positive integer, got {text:?}")))?;
    Ok(Some(value))
}

/// The answer for a body that could not be read: too large, or broken off.
fn body_failure(rejection: BytesRejection) -> Failure {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        Failure::http(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("request body could not be read: {}", rejection.body_text()),
        )
    }
}

fn too_large() -> Failure {
    Failure::http(
        StatusCode::PAYLOAD_TOO_LARGE,
        "value_too_large",
        format!("request body larger than the {MAX_VALUE_BYTES}-byte value limit"),
    )
}

fn set_context(headers: &mut HeaderMap, context: &Context) {
    // A base64url token is always a valid header value; a failure would only drop the header.
    if let Ok(value) = HeaderValue::from_str(&context.encode()) {
        headers.insert(CONTEXT_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn traced_routes_never_show_keys() {
        assert_eq!(route_of("/kv/secret/key"), "/kv/{*key}");
        assert_eq!(route_of("/admin/local/secret"), "/admin/local/{*key}");
        assert_eq!(route_of("/admin/ring"), "/admin/ring");
        assert_eq!(route_of("/admin/remove/n3"), "/admin/remove/{*name}");
        assert_eq!(route_of("/admin/leave"), "/admin/leave");
    }
}
