//! HTTP requests as a client sends them, through the real router: key escapes, `?r=` and
//! `?w=`, the context header, bodies and `PUT /admin/config` updates.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use tower_service::Service;

use crate::config::{ConfigUpdate, QuorumConfig};
use crate::core::ids::{ActorId, Key};
use crate::core::store::Store;
use crate::core::version::VersionSet;
use crate::http::{CONTEXT_HEADER, encode_path, router};
use crate::model::{
    ClientError, Context, GetResult, Health, KvService, MemberInfo, ReadOptions, RingInfo,
    WriteOptions,
};

/// One request, in parts.
#[derive(Clone, Debug, Default)]
pub struct HttpInput {
    /// Picks the method.
    pub method: u8,
    /// Picks the route prefix the path goes under.
    pub route: u8,
    /// The path after the prefix, as sent (escaped or not).
    pub path: Vec<u8>,
    /// The query string.
    pub query: Vec<u8>,
    /// The `X-Dynamo-Context` header, if any.
    pub context: Option<Vec<u8>>,
    /// The body.
    pub body: Vec<u8>,
}

const METHODS: [Method; 4] = [Method::GET, Method::PUT, Method::DELETE, Method::POST];
const ROUTES: [&str; 6] = [
    "/kv/",
    "/admin/local/",
    "/admin/config",
    "/admin/remove/",
    "/admin/",
    "/",
];

/// A request from raw bytes: method and route bytes, then path, query, context header and
/// body separated by zero bytes (the body takes the rest; fewer parts leave the later ones
/// empty, and no third part means no context header).
pub fn http_bytes(data: &[u8]) {
    let (method, route, rest) = match data {
        [m, r, rest @ ..] => (*m, *r, rest),
        _ => return,
    };
    let mut parts = rest.splitn(4, |&b| b == 0);
    let mut next = || parts.next().map(<[u8]>::to_vec);
    let input = HttpInput {
        method,
        route,
        path: next().unwrap_or_default(),
        query: next().unwrap_or_default(),
        context: next(),
        body: next().unwrap_or_default(),
    };
    http_request(&input);
}

/// Sends `input` to the router of a small in-memory node and reads the whole answer.
pub fn http_request(input: &HttpInput) {
    let Some(request) = build(input) else {
        return;
    };
    let service = FuzzService::default();
    let response = RUNTIME.with(|runtime| {
        runtime.borrow().block_on(async {
            let response = match router(service).call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let (parts, body) = response.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await;
            (parts, body)
        })
    });
    let (parts, body) = response;
    assert_ne!(parts.status, StatusCode::INTERNAL_SERVER_ERROR, "{input:?}");
    assert!(body.is_ok(), "the answer's body reads");
    if let Some(token) = parts.headers.get(CONTEXT_HEADER) {
        let token = token.to_str().expect("a context header is ASCII");
        assert!(Context::decode(token).is_ok(), "{token:?}");
    }
}

thread_local! {
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the fuzzed router")
    );
}

// The request, or `None` for parts no HTTP server would hand to the router.
fn build(input: &HttpInput) -> Option<Request<Body>> {
    let method = METHODS[usize::from(input.method) % METHODS.len()].clone();
    let prefix = ROUTES[usize::from(input.route) % ROUTES.len()];
    let path = std::str::from_utf8(&input.path)
        .ok()
        .filter(|p| p.parse::<Uri>().is_ok())
        .map_or_else(|| encode_path(&input.path), str::to_owned);
    let mut uri = format!("{prefix}{path}");
    if !input.query.is_empty() {
        uri.push('?');
        uri.push_str(&String::from_utf8_lossy(&input.query));
    }
    let uri: Uri = uri.parse().ok()?;
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(context) = &input.context {
        request = request.header(CONTEXT_HEADER, HeaderValue::from_bytes(context).ok()?);
    }
    request.body(Body::from(input.body.clone())).ok()
}

/// One in-memory replica answering as a node would, with W = R = 1.
#[derive(Clone)]
struct FuzzService {
    store: Arc<Store>,
    config: Arc<Mutex<QuorumConfig>>,
}

impl Default for FuzzService {
    fn default() -> Self {
        FuzzService {
            store: Arc::new(Store::new(ActorId::new("fz-a", 1))),
            config: Arc::new(Mutex::new(QuorumConfig::default())),
        }
    }
}

impl FuzzService {
    fn write(
        &self,
        key: Key,
        value: Option<Bytes>,
        context: Option<Context>,
    ) -> Result<Context, ClientError> {
        let context = context.unwrap_or_default();
        let written = self.store.coordinate(&key, context.clock(), value, 1)?;
        Ok(Context::from_clock(written.answer))
    }
}

impl KvService for FuzzService {
    async fn get(&self, key: Key, _: ReadOptions) -> Result<GetResult, ClientError> {
        Ok(GetResult::from_set(&self.store.get(&key)))
    }

    async fn put(
        &self,
        key: Key,
        value: Bytes,
        context: Option<Context>,
        _: WriteOptions,
    ) -> Result<Context, ClientError> {
        self.write(key, Some(value), context)
    }

    async fn delete(
        &self,
        key: Key,
        context: Option<Context>,
        _: WriteOptions,
    ) -> Result<(), ClientError> {
        self.write(key, None, context).map(|_| ())
    }

    fn node_name(&self) -> String {
        "fz-a".into()
    }

    fn members(&self) -> Vec<MemberInfo> {
        Vec::new()
    }

    fn ring(&self) -> RingInfo {
        RingInfo {
            version: 1,
            n: 3,
            nodes: Vec::new(),
        }
    }

    fn local(&self, key: &[u8]) -> VersionSet {
        self.store.get(key)
    }

    fn update_config(&self, update: ConfigUpdate) -> Result<QuorumConfig, ClientError> {
        let mut config = self.config.lock().unwrap_or_else(|e| e.into_inner());
        *config = config.apply(&update)?;
        Ok(*config)
    }

    fn config(&self) -> QuorumConfig {
        *self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn metrics(&self) -> String {
        String::new()
    }

    fn health(&self) -> Health {
        Health {
            status: "ok".into(),
            reason: None,
            node: "fz-a".into(),
            alive: 1,
            members: 1,
        }
    }

    fn leave(&self) -> Result<MemberInfo, ClientError> {
        Err(ClientError::Conflict("not a member".into()))
    }

    fn remove(&self, _: &str) -> Result<MemberInfo, ClientError> {
        Err(ClientError::Conflict("not a member".into()))
    }
}
