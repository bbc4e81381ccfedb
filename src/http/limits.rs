//! Bounds on what clients can make the server hold, and the counters of every bound hit.
//!
//! Excess requests are answered 503 at once rather than queued, excess connections are
//! closed at once, and slow clients are cut off: a flood of bad or excess requests costs the
//! node little, so good requests keep being served.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

/// Requests served at once by default; more are answered 503 `overloaded`.
pub const DEFAULT_MAX_REQUESTS: usize = 512;
/// Connections open at once by default; more are closed as soon as they are accepted.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Time a client has by default to send a request's headers (and a TLS handshake).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has by default to send a request's body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's resource bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Requests in flight at most.
    pub max_requests: usize,
    /// Connections open at most.
    pub max_connections: usize,
    /// Time to send the request headers.
    pub header_timeout: Duration,
    /// Time to send the request body.
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_requests: DEFAULT_MAX_REQUESTS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// Which bound a request or connection hit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// requests, connections, header_timeout, body_timeout or body_size.
    pub limit: &'static str,
}

/// The server's own metrics, appended to the node's on `GET /metrics`.
pub struct HttpCounters {
    registry: Registry,
    /// Requests refused 401.
    pub unauthorized: Counter,
    /// Bounds hit, by bound.
    pub limit_hits: Family<LimitLabels, Counter>,
    /// Connections open now.
    pub connections: Gauge,
    /// Requests in flight now.
    pub requests: Gauge,
}

impl Default for HttpCounters {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dynamo");
        let counters = HttpCounters {
            unauthorized: Counter::default(),
            limit_hits: Family::default(),
            connections: Gauge::default(),
            requests: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_unauthorized",
            "HTTP requests refused for a missing or wrong token",
            counters.unauthorized.clone(),
        );
        registry.register(
            "http_limit_hits",
            "HTTP requests or connections refused or cut off by a resource bound",
            counters.limit_hits.clone(),
        );
        registry.register(
            "http_connections",
            "HTTP connections open",
            counters.connections.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being served",
            counters.requests.clone(),
        );
        HttpCounters {
            registry,
            ..counters
        }
    }
}

impl HttpCounters {
    /// Counts one hit of the bound named `limit`.
    pub fn hit(&self, limit: &'static str) {
        self.limit_hits.get_or_create(&LimitLabels { limit }).inc();
    }

    /// `node_text` (the node's exposition) followed by these metrics, as one exposition.
    pub fn append_to(&self, node_text: String) -> String {
        let mut out = match node_text.strip_suffix("# EOF\n") {
            Some(body) => body.to_owned(),
            None => node_text,
        };
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl std::fmt::Debug for HttpCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCounters").finish_non_exhaustive()
    }
}

use super::layers::{Act, Answer, Boxed, Middleware};

fn overloaded() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "error": "overloaded",
            "message": "too many requests in flight on this node; retry shortly",
        })),
    )
        .into_response()
}

/// Answers 503 `overloaded` at once to a request beyond `max_requests` in flight.
#[derive(Clone)]
pub struct LimitInFlight {
    permits: Arc<Semaphore>,
    counters: Arc<HttpCounters>,
}

impl LimitInFlight {
    /// Serves at most `max` requests at once.
    pub fn new(max: usize, counters: Arc<HttpCounters>) -> Middleware<Self> {
        Middleware(LimitInFlight {
            permits: Arc::new(Semaphore::new(max)),
            counters,
        })
    }
}

/// A request's place among those in flight, given back when its answer is ready.
struct InFlight {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl<S> Act<S> for LimitInFlight
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Future = Either<Ready<Answer>, Boxed>;

    fn act(&self, inner: &mut S, request: Request) -> Self::Future {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.counters.hit("requests");
            return Either::Left(ready(Ok(overloaded())));
        };
        self.counters.requests.inc();
        let held = InFlight {
            _permit: permit,
            gauge: self.counters.requests.clone(),
        };
        let answer = inner.call(request);
        Either::Right(Box::pin(async move {
            let answer = answer.await;
            drop(held);
            answer
        }))
    }
}

/// Reads a request's body before the route runs, within a deadline and a size limit: a
/// client that trickles its body is answered 408 and cut off, one that sends too much 413.
#[derive(Clone)]
pub struct ReadBody<F> {
    limit: usize,
    timeout: Duration,
    too_large: F,
    counters: Arc<HttpCounters>,
}

impl<F> ReadBody<F> {
    /// Bodies of at most `limit` bytes, fully received within `timeout`; `too_large` makes
    /// the 413.
    pub fn new(
        limit: usize,
        timeout: Duration,
        too_large: F,
        counters: Arc<HttpCounters>,
    ) -> Middleware<Self> {
        Middleware(ReadBody {
            limit,
            timeout,
            too_large,
            counters,
        })
    }
}

impl<S, F> Act<S> for ReadBody<F>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    F: Fn() -> Response + Clone + Send + Sync + 'static,
{
    type Future = Either<S::Future, Boxed>;

    fn act(&self, inner: &mut S, request: Request) -> Self::Future {
        if request.body().is_end_stream() {
            return Either::Left(inner.call(request));
        }
        // The clone is ready too (axum's routers always are); the ready one serves this call.
        let clone = inner.clone();
        let mut inner = std::mem::replace(inner, clone);
        let layer = self.clone();
        Either::Right(Box::pin(async move {
            let (parts, body) = request.into_parts();
            let read = Limited::new(body, layer.limit).collect();
            let bytes = match tokio::time::timeout(layer.timeout, read).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                    layer.counters.hit("body_size");
                    return Ok((layer.too_large)());
                }
                Ok(Err(e)) => return Ok(body_failure(format!("{e}"))),
                Err(_) => {
                    layer.counters.hit("body_timeout");
                    return Ok(body_timeout(layer.timeout));
                }
            };
            inner
                .call(Request::from_parts(parts, Body::from(bytes)))
                .await
        }))
    }
}

fn body_failure(reason: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": "invalid_body",
            "message": format!("request body could not be read: {reason}"),
        })),
    )
        .into_response()
}

fn body_timeout(timeout: Duration) -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        Json(json!({
            "error": "body_timeout",
            "message": format!("request body not received within {} ms", timeout.as_millis()),
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::metric_sum;

    #[test]
    fn counters_follow_the_node_text_as_one_exposition() {
        let counters = HttpCounters::default();
        counters.hit("requests");
        counters.hit("requests");
        counters.unauthorized.inc();
        let text = counters.append_to("# TYPE dynamo_keys gauge\ndynamo_keys 3\n# EOF\n".into());
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(metric_sum(&text, "dynamo_keys", |_| true), Some(3.0));
        let hits = metric_sum(&text, "dynamo_http_limit_hits_total", |l| {
            l.contains("requests")
        });
        assert_eq!(hits, Some(2.0));
        assert_eq!(
            metric_sum(&text, "dynamo_http_unauthorized_total", |_| true),
            Some(1.0)
        );
    }
}
