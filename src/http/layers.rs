//! The server's middlewares as plain tower layers, and two of them: refusing bodies declared
//! too large, and a debug span per request.
//!
//! axum's `from_fn` middleware boxes a future and clones the inner service on every request,
//! even when it has nothing to do; these call the inner service directly and return its own
//! future unless they act (a 413, or a debug span when debug logging is on). Every middleware
//! is its settings `M`: [`Middleware`] makes them a layer, which wraps each service in a
//! [`Wrapped`] holding a copy of them, and what the middleware does with a request is its
//! [`Act`] impl; `Wrapped`'s one `Service` impl passes readiness through and calls it.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

pub(super) type Answer = Result<Response, Infallible>;
pub(super) type Boxed = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// A middleware's settings `M` as a tower layer.
#[derive(Clone)]
pub struct Middleware<M>(pub M);

impl<S, M: Clone> Layer<S> for Middleware<M> {
    type Service = Wrapped<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Wrapped {
            inner,
            layer: self.0.clone(),
        }
    }
}

/// A service `S` behind the middleware whose settings are `M`.
#[derive(Clone)]
pub struct Wrapped<S, M> {
    inner: S,
    layer: M,
}

/// What a middleware does with one request to the service `S` behind it.
pub trait Act<S> {
    /// The answer's future.
    type Future: Future<Output = Answer>;

    /// Answers `request` itself, or through `inner`, which is ready.
    fn act(&self, inner: &mut S, request: Request) -> Self::Future;
}

impl<S, M> Service<Request> for Wrapped<S, M>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    M: Act<S>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = M::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> M::Future {
        self.layer.act(&mut self.inner, request)
    }
}

/// Answers at once, without reading the body, a request whose declared body is over a limit.
#[derive(Clone)]
pub struct RefuseOversize<F> {
    limit: u64,
    refusal: F,
}

impl<F: Fn() -> Response + Clone> RefuseOversize<F> {
    /// Refuses bodies declared larger than `limit` bytes with what `refusal` makes.
    pub fn new(limit: usize, refusal: F) -> Middleware<Self> {
        Middleware(RefuseOversize {
            limit: limit as u64,
            refusal,
        })
    }
}

impl<S, F> Act<S> for RefuseOversize<F>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    F: Fn() -> Response,
{
    type Future = Either<Ready<Answer>, S::Future>;

    fn act(&self, inner: &mut S, request: Request) -> Self::Future {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(length) if length > self.limit => Either::Left(ready(Ok((self.refusal)()))),
            _ => Either::Right(inner.call(request)),
        }
    }
}

/// One debug span per request, named by its route (`route_of` turns a path into one, so that
/// keys are never logged); costs a level check when debug logging is off.
#[derive(Clone, Copy)]
pub struct TraceRequests {
    route_of: fn(&str) -> &str,
}

impl TraceRequests {
    /// Spans whose `route` field is `route_of(path)`.
    pub fn new(route_of: fn(&str) -> &str) -> Middleware<Self> {
        Middleware(TraceRequests { route_of })
    }
}

impl<S> Act<S> for TraceRequests
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Future = Either<S::Future, Boxed>;

    fn act(&self, inner: &mut S, request: Request) -> Self::Future {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return Either::Left(inner.call(request));
        }
        let route = (self.route_of)(request.uri().path()).to_owned();
        let span = tracing::debug_span!(
            "http",
            method = %request.method(),
            route = %route,
            status = tracing::field::Empty
        );
        let started = Instant::now();
        let answer = span.in_scope(|| inner.call(request));
        Either::Right(Box::pin(async move {
            let Ok(response) = answer.instrument(span.clone()).await;
            span.record("status", response.status().as_u16());
            tracing::debug!(
                parent: &span,
                elapsed_us = started.elapsed().as_micros() as u64,
                "answered"
            );
            Ok(response.into_response())
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::http::StatusCode;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    // The inner service: answers 204 and counts its calls.
    #[derive(Clone, Default)]
    struct Inner(Arc<Mutex<u32>>);

    impl Service<Request> for Inner {
        type Response = Response;
        type Error = Infallible;
        type Future = Ready<Answer>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request) -> Self::Future {
            *self.0.lock().unwrap() += 1;
            tracing::debug!("inner ran");
            ready(Ok(StatusCode::NO_CONTENT.into_response()))
        }
    }

    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Log {
        type Writer = Log;
        fn make_writer(&'a self) -> Log {
            self.clone()
        }
    }

    fn request(path: &str, declared: Option<&str>) -> Request {
        let mut builder = Request::builder().uri(path);
        if let Some(length) = declared {
            builder = builder.header(header::CONTENT_LENGTH, length);
        }
        builder.body(Body::empty()).unwrap()
    }

    fn run(future: impl Future<Output = Answer>) -> Response {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let Ok(response) = runtime.block_on(future);
        response
    }

    #[test]
    fn a_body_declared_too_large_is_refused_without_calling_the_route() {
        let inner = Inner::default();
        let layer = RefuseOversize::new(10, || StatusCode::PAYLOAD_TOO_LARGE.into_response());
        let mut service = layer.layer(inner.clone());
        let refused = run(service.call(request("/kv/a", Some("11"))));
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(*inner.0.lock().unwrap(), 0);
        for declared in [Some("10"), None, Some("garbage")] {
            let passed = run(service.call(request("/kv/a", declared)));
            assert_eq!(passed.status(), StatusCode::NO_CONTENT);
        }
        assert_eq!(*inner.0.lock().unwrap(), 3);
    }

    #[test]
    fn requests_get_a_debug_span_with_route_and_status_but_never_the_key() {
        let log = Log::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(log.clone())
            .with_ansi(false)
            .finish();
        let mut service = TraceRequests::new(|_| "/kv/{*key}").layer(Inner::default());
        tracing::subscriber::with_default(subscriber, || {
            let response = run(service.call(request("/kv/secret-key", None)));
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
        });
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("inner ran"), "{text}");
        assert!(text.contains("route=/kv/{*key}"), "{text}");
        assert!(text.contains("status=204"), "{text}");
        assert!(text.contains("answered"), "{text}");
        assert!(!text.contains("secret-key"), "{text}");

        // Without debug logging the route's own future is returned untouched.
        let quiet = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(quiet, || {
            assert!(matches!(
                service.call(request("/kv/a", None)),
                Either::Left(_)
            ));
        });
    }
}
