//! End-to-end tests over real sockets: a fake service behind the real router, driven by
//! [`HttpClient`] and, where the raw shape matters, by plain reqwest.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;

use super::*;
use crate::config::{ConfigUpdate, MAX_KEY_BYTES, MAX_VALUE_BYTES, QuorumConfig};
use crate::core::ids::{ActorId, Key};
use crate::core::membership::{RingStatus, Status};
use crate::core::quorum::Shortfall;
use crate::core::version::VersionSet;
use crate::model::{
    ClientError, Context, GetResult, Health, KvService, MemberInfo, ReadOptions, RingInfo,
    RingNodeInfo, WriteOptions, validate_key, validate_value,
};
use crate::testing::LoneReplica;

const SHORTFALL: Shortfall = Shortfall {
    required: 2,
    succeeded: 1,
    failed: 1,
    timed_out: 1,
    targets: 3,
};

/// One in-memory replica with W = R = 1 semantics; keys named `fail-*` inject errors and
/// `slow-*` keys take a while to read.
#[derive(Clone)]
struct FakeService {
    replica: LoneReplica,
    config: Arc<Mutex<QuorumConfig>>,
    /// Why the service cannot serve, when it is to report "unavailable".
    unavailable: Arc<Mutex<Option<String>>>,
}

impl FakeService {
    fn new() -> Self {
        FakeService {
            replica: LoneReplica::new("fake"),
            config: Arc::new(Mutex::new(QuorumConfig::default())),
            unavailable: Arc::new(Mutex::new(None)),
        }
    }

    fn injected(key: &[u8]) -> Option<ClientError> {
        if key.starts_with(b"fail-acks") {
            Some(ClientError::InsufficientAcks(SHORTFALL))
        } else if key.starts_with(b"fail-replies") {
            Some(ClientError::InsufficientReplies(SHORTFALL))
        } else if key.starts_with(b"fail-unavailable") {
            Some(ClientError::Unavailable("nobody home".into()))
        } else if key.starts_with(b"fail-internal") {
            Some(ClientError::Internal("boom".into()))
        } else {
            None
        }
    }

    fn write(
        &self,
        key: Key,
        value: Option<Bytes>,
        context: Option<Context>,
        w: Option<usize>,
    ) -> Result<Context, ClientError> {
        validate_key(&key)?;
        WriteOptions { w }.check(self.config().n)?;
        if let Some(e) = Self::injected(&key) {
            return Err(e);
        }
        self.replica.write(&key, value, context)
    }
}

impl KvService for FakeService {
    async fn get(&self, key: Key, opts: ReadOptions) -> Result<GetResult, ClientError> {
        validate_key(&key)?;
        opts.check(self.config().n)?;
        if let Some(e) = Self::injected(&key) {
            return Err(e);
        }
        if key.starts_with(b"slow-") {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(self.replica.get(&key))
    }

    async fn put(
        &self,
        key: Key,
        value: Bytes,
        context: Option<Context>,
        opts: WriteOptions,
    ) -> Result<Context, ClientError> {
        validate_value(&value)?;
        self.write(key, Some(value), context, opts.w)
    }

    async fn delete(
        &self,
        key: Key,
        context: Option<Context>,
        opts: WriteOptions,
    ) -> Result<(), ClientError> {
        self.write(key, None, context, opts.w).map(drop)
    }

    fn node_name(&self) -> String {
        "fake".into()
    }

    fn members(&self) -> Vec<MemberInfo> {
        vec![MemberInfo {
            node: "fake".into(),
            cluster_addr: "127.0.0.1:7000".into(),
            http_addr: "127.0.0.1:8000".into(),
            status: Status::Alive,
            heartbeat: 4,
            incarnation: 1,
            last_heard_ms_ago: 0,
            connected: true,
            ring: crate::core::membership::RingStatus::Valid,
            handoff: Default::default(),
        }]
    }

    fn ring(&self) -> RingInfo {
        RingInfo {
            version: 2,
            n: self.config().n,
            nodes: vec![RingNodeInfo {
                node: "fake".into(),
                vnodes: 128,
                primary_share: 1.0,
                replica_share: 1.0,
                keys: Some(self.replica.len()),
            }],
        }
    }

    fn local(&self, key: &[u8]) -> VersionSet {
        self.replica.local(key)
    }

    fn update_config(&self, update: ConfigUpdate) -> Result<QuorumConfig, ClientError> {
        let mut config = self.config.lock().unwrap();
        *config = config.apply(&update)?;
        Ok(*config)
    }

    fn config(&self) -> QuorumConfig {
        *self.config.lock().unwrap()
    }

    fn metrics(&self) -> String {
        "# TYPE dynamo_keys gauge\ndynamo_keys 0\n".into()
    }

    fn health(&self) -> Health {
        let reason = self.unavailable.lock().unwrap().clone();
        Health {
            status: if reason.is_some() {
                "unavailable"
            } else {
                "ok"
            }
            .into(),
            reason,
            node: "fake".into(),
            alive: 1,
            members: 1,
        }
    }

    fn leave(&self) -> Result<MemberInfo, ClientError> {
        let mut me = self.members().remove(0);
        me.ring = crate::core::membership::RingStatus::Leaving;
        Ok(me)
    }

    fn remove(&self, node: &str) -> Result<MemberInfo, ClientError> {
        match node {
            "fake" => Err(ClientError::Conflict("fake is this node".into())),
            "alive" => Err(ClientError::MemberAlive("alive is alive".into())),
            "dead" => {
                let mut member = self.members().remove(0);
                member.node = node.into();
                member.status = Status::Dead;
                member.ring = crate::core::membership::RingStatus::Removed;
                Ok(member)
            }
            _ => Err(ClientError::UnknownMember(format!(
                "no member named {node}"
            ))),
        }
    }
}

/// A served fake: its client, its base URL, and the way to stop it.
struct Served {
    service: FakeService,
    client: HttpClient,
    base: String,
    raw: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn start() -> Served {
        Served::start_with(ServeOptions::default()).await
    }

    async fn start_with(options: ServeOptions) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = FakeService::new();
        let task = tokio::spawn(serve_with(listener, service.clone(), options, async move {
            let _ = stopped.await;
        }));
        Served {
            service,
            // A bare address, as the CLI gets it.
            client: HttpClient::new(addr.to_string()),
            base: format!("http://{addr}"),
            raw: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn raw(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.raw
            .request(method, self.url(path))
            .send()
            .await
            .unwrap()
    }

    async fn assert_alive(&self) {
        assert_eq!(self.client.health().await.unwrap().status, "ok");
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// Checks an error answer: status, JSON content type, kind, and a message; returns the body.
async fn expect_error(response: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], kind, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    body
}

/// Sends `request` as is on a fresh connection and returns the start of the answer.
async fn raw_exchange(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the JSON body has arrived (the answer is small) or the server closes.
    while !answer.ends_with(b"}") {
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("no answer in time")
            .unwrap();
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..read]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn api_kind(result: Result<impl std::fmt::Debug, HttpError>) -> (u16, String) {
    match result {
        Err(HttpError::Api { status, kind, .. }) => (status, kind),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn seed_walk_through_over_http() {
    let s = Served::start().await;
    let c = &s.client;
    let key = b"cart:alice";

    let ctx1 = c.put(key, Bytes::from("v1"), None, None).await.unwrap();
    assert!(!ctx1.is_empty());
    match c.get(key, None).await.unwrap() {
        GetResult::Value { value, context } => {
            assert_eq!(value, "v1");
            assert_eq!(
                context, ctx1,
                "the put's context covers exactly what a read sees"
            );
        }
        other => panic!("expected one value, got {other:?}"),
    }

    // The raw 200: bytes, octet-stream, and the context header.
    let raw = s.raw(reqwest::Method::GET, "/kv/cart:alice").await;
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        raw.headers()[CONTEXT_HEADER].to_str().unwrap(),
        ctx1.encode()
    );
    assert_eq!(raw.bytes().await.unwrap(), "v1");

    // A blind write makes a sibling.
    c.put(key, Bytes::from("v2"), None, None).await.unwrap();
    let raw = s.raw(reqwest::Method::GET, "/kv/cart:alice").await;
    assert_eq!(raw.status(), 300);
    let header = raw.headers()[CONTEXT_HEADER].to_str().unwrap().to_owned();
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["siblings"], serde_json::json!(["djE=", "djI="]));
    assert_eq!(body["context"], header.as_str());
    let GetResult::Siblings { values, context } = c.get(key, None).await.unwrap() else {
        panic!("expected siblings")
    };
    assert_eq!(values, [Bytes::from("v1"), Bytes::from("v2")]);
    assert_eq!(context.encode(), header);

    // A write with the read's context replaces both.
    let merged = c
        .put(key, Bytes::from("v1+v2"), Some(&context), Some(1))
        .await
        .unwrap();
    match c.get(key, Some(1)).await.unwrap() {
        GetResult::Value { value, context } => {
            assert_eq!(value, "v1+v2");
            assert_eq!(context, merged);
        }
        other => panic!("expected the merged value, got {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn put_answers_with_the_context_in_body_and_header() {
    let s = Served::start().await;
    let raw = s.raw.put(s.url("/kv/k")).body("v").send().await.unwrap();
    assert_eq!(raw.status(), 200);
    let header = raw.headers()[CONTEXT_HEADER].to_str().unwrap().to_owned();
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "context": header }));
    assert!(Context::decode(&header).is_ok_and(|c| !c.is_empty()));
    s.stop().await;
}

#[tokio::test]
async fn missing_and_deleted_keys_are_404() {
    let s = Served::start().await;
    let c = &s.client;
    assert_eq!(
        c.get(b"nothing", None).await.unwrap(),
        GetResult::NotFound {
            context: Context::empty()
        }
    );
    let raw = s.raw(reqwest::Method::GET, "/kv/nothing").await;
    assert!(
        raw.headers().get(CONTEXT_HEADER).is_none(),
        "nothing seen, no context"
    );
    expect_error(raw, 404, "not_found").await;

    let ctx = c.put(b"k", Bytes::from("v"), None, None).await.unwrap();
    let raw = s
        .raw
        .delete(s.url("/kv/k"))
        .header(CONTEXT_HEADER, ctx.encode())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert_eq!(
        raw.json::<Value>().await.unwrap(),
        serde_json::json!({ "deleted": true })
    );

    // The 404 after a delete carries the tombstone's context, and writing with it
    // supersedes the tombstone.
    let raw = s.raw(reqwest::Method::GET, "/kv/k").await;
    assert!(raw.headers().contains_key(CONTEXT_HEADER));
    expect_error(raw, 404, "not_found").await;
    let GetResult::NotFound { context } = c.get(b"k", None).await.unwrap() else {
        panic!("expected not found")
    };
    assert!(!context.is_empty());
    c.put(b"k", Bytes::from("back"), Some(&context), None)
        .await
        .unwrap();
    assert_eq!(c.local(b"k").await.unwrap().len(), 1, "tombstone replaced");
    assert_eq!(
        c.get(b"k", None).await.unwrap().values(),
        [Bytes::from("back")]
    );

    // Deleting through the client works too.
    c.delete(
        b"k",
        Some(&c.get(b"k", None).await.unwrap().context().clone()),
        None,
    )
    .await
    .unwrap();
    assert!(matches!(
        c.get(b"k", None).await.unwrap(),
        GetResult::NotFound { .. }
    ));
    s.stop().await;
}

#[tokio::test]
async fn quorum_failures_are_503_with_the_shortfall() {
    let s = Served::start().await;
    let raw = s
        .raw
        .put(s.url("/kv/fail-acks-1"))
        .body("v")
        .send()
        .await
        .unwrap();
    let body = expect_error(raw, 503, "insufficient_acks").await;
    for (field, want) in [
        ("required", 2),
        ("succeeded", 1),
        ("failed", 1),
        ("timed_out", 1),
        ("targets", 3),
    ] {
        assert_eq!(body[field], want, "{field} in {body}");
    }
    let err = s
        .client
        .put(b"fail-acks-2", Bytes::from("v"), None, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some("insufficient_acks"));
    let HttpError::Api { status, body, .. } = err else {
        panic!("not an API error")
    };
    assert_eq!((status, body["required"].as_u64()), (503, Some(2)));

    assert_eq!(
        api_kind(s.client.delete(b"fail-acks-3", None, None).await),
        (503, "insufficient_acks".into())
    );
    assert_eq!(
        api_kind(s.client.get(b"fail-replies", None).await),
        (503, "insufficient_replies".into())
    );
    assert_eq!(
        api_kind(s.client.get(b"fail-unavailable", None).await),
        (503, "unavailable".into())
    );
    assert_eq!(
        api_kind(s.client.get(b"fail-internal", None).await),
        (500, "internal".into())
    );
    s.assert_alive().await;
    s.stop().await;
}

#[tokio::test]
async fn bad_contexts_are_400() {
    let s = Served::start().await;
    for token in ["not base64!", "AAAA", &"A".repeat(20_000)] {
        let raw = s
            .raw
            .put(s.url("/kv/k"))
            .header(CONTEXT_HEADER, token)
            .body("v")
            .send()
            .await
            .unwrap();
        expect_error(raw, 400, "invalid_context").await;
        let raw = s
            .raw
            .delete(s.url("/kv/k"))
            .header(CONTEXT_HEADER, token)
            .send()
            .await
            .unwrap();
        expect_error(raw, 400, "invalid_context").await;
    }
    let raw = s
        .raw
        .put(s.url("/kv/k"))
        .header(
            CONTEXT_HEADER,
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .body("v")
        .send()
        .await
        .unwrap();
    expect_error(raw, 400, "invalid_context").await;
    // An empty header is a blind write.
    let raw = s
        .raw
        .put(s.url("/kv/k"))
        .header(CONTEXT_HEADER, "")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    s.assert_alive().await;
    s.stop().await;
}

#[tokio::test]
async fn oversized_values_and_keys_are_413() {
    let s = Served::start().await;
    let c = &s.client;
    let exact = Bytes::from(vec![7u8; MAX_VALUE_BYTES]);
    c.put(b"big", exact.clone(), None, None).await.unwrap();
    assert_eq!(c.get(b"big", None).await.unwrap().values(), [exact]);

    let over = vec![7u8; MAX_VALUE_BYTES + 1];
    let raw = s.raw.put(s.url("/kv/big")).body(over).send().await.unwrap();
    expect_error(raw, 413, "value_too_large").await;
    // Declared far past the body limit: refused before a byte of it is read, still JSON.
    // Raw TCP, so that no unread body can race the answer.
    let answer = raw_exchange(
        &s.base,
        &format!(
            "PUT /kv/big HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            2 * BODY_LIMIT
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    assert!(answer.contains(r#""error":"value_too_large""#), "{answer}");
    // Of unknown length (chunked) and past the limit: cut off by the extractor, same answer.
    let answer = raw_exchange(
        &s.base,
        &format!(
            "PUT /kv/big HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            BODY_LIMIT + 1,
            "x".repeat(BODY_LIMIT + 1)
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""error":"value_too_large""#), "{answer}");
    assert_eq!(
        c.get(b"big", None).await.unwrap().values()[0].len(),
        MAX_VALUE_BYTES
    );
    s.assert_alive().await;

    let long_key = vec![b'k'; MAX_KEY_BYTES + 1];
    assert_eq!(
        api_kind(c.put(&long_key, Bytes::from("v"), None, None).await),
        (413, "key_too_long".into())
    );
    assert_eq!(
        api_kind(c.get(&long_key, None).await),
        (413, "key_too_long".into())
    );
    assert_eq!(
        api_kind(c.local(&long_key).await),
        (413, "key_too_long".into())
    );
    let longest = vec![b'k'; MAX_KEY_BYTES];
    c.put(&longest, Bytes::from("v"), None, None).await.unwrap();
    // An empty key is a 400, on every key route.
    assert_eq!(
        api_kind(c.get(b"", None).await),
        (400, "invalid_key".into())
    );
    expect_error(
        s.raw(reqwest::Method::PUT, "/kv/").await,
        400,
        "invalid_key",
    )
    .await;
    expect_error(
        s.raw(reqwest::Method::GET, "/admin/local/").await,
        400,
        "invalid_key",
    )
    .await;
    s.assert_alive().await;
    s.stop().await;
}

#[tokio::test]
async fn bad_quorum_options_are_400() {
    let s = Served::start().await;
    for query in [
        "w=abc",
        "w=0",
        "w=4",
        "w=-1",
        "w=",
        "w=1&w=2",
        "w=99999999999999999999999",
    ] {
        let raw = s
            .raw
            .put(s.url(&format!("/kv/k?{query}")))
            .body("v")
            .send()
            .await
            .unwrap();
        expect_error(raw, 400, "invalid_option").await;
        let raw = s
            .raw(reqwest::Method::DELETE, &format!("/kv/k?{query}"))
            .await;
        expect_error(raw, 400, "invalid_option").await;
        let raw = s
            .raw(
                reqwest::Method::GET,
                &format!("/kv/k?{}", query.replace('w', "r")),
            )
            .await;
        expect_error(raw, 400, "invalid_option").await;
    }
    let c = &s.client;
    assert_eq!(
        api_kind(c.get(b"k", Some(0)).await),
        (400, "invalid_option".into())
    );
    assert_eq!(
        api_kind(c.put(b"k", Bytes::from("v"), None, Some(4)).await),
        (400, "invalid_option".into())
    );
    c.put(b"k", Bytes::from("v"), None, Some(3)).await.unwrap();
    assert_eq!(c.get(b"k", Some(3)).await.unwrap().values().len(), 1);
    // Unknown parameters are ignored; N is the cluster's and cannot change at runtime.
    let raw = s
        .raw
        .put(s.url("/kv/k?x=1"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    let refused = c
        .update_config(&ConfigUpdate {
            n: Some(5),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(400), "{refused}");
    assert!(
        refused.to_string().contains("n is the cluster's"),
        "{refused}"
    );
    assert!(c.put(b"k", Bytes::from("v"), None, Some(4)).await.is_err());
    s.assert_alive().await;
    s.stop().await;
}

#[tokio::test]
async fn awkward_keys_round_trip() {
    let s = Served::start().await;
    let c = &s.client;
    let keys: Vec<Vec<u8>> = vec![
        b"a/b/c".to_vec(),
        b"/leading".to_vec(),
        b"trailing/".to_vec(),
        b"double//slash".to_vec(),
        b"with space".to_vec(),
        "caf\u{e9}/\u{1f980}".as_bytes().to_vec(),
        b"q?x=1&y#frag".to_vec(),
        b"100%".to_vec(),
        b"%2F".to_vec(),
        b"plus+sign".to_vec(),
        b"a/../b".to_vec(),
        b"./x".to_vec(),
        b"back\\slash".to_vec(),
        vec![0, 1, 0xff, b'/', 0x80],
    ];
    for (i, key) in keys.iter().enumerate() {
        let value = Bytes::from(format!("value {i}"));
        c.put(key, value.clone(), None, None).await.unwrap();
        assert_eq!(
            c.get(key, None).await.unwrap().values(),
            [value],
            "key {:?}",
            String::from_utf8_lossy(key)
        );
        let local = c.local(key).await.unwrap();
        assert_eq!(local.len(), 1, "key {:?}", String::from_utf8_lossy(key));
    }
    // Every key landed under its own name: none collapsed into another.
    assert_eq!(c.ring().await.unwrap().nodes[0].keys, Some(keys.len()));
    // Raw requests: '/' literal or escaped name the same key.
    let raw = s.raw(reqwest::Method::GET, "/kv/a%2Fb/c").await;
    assert_eq!(raw.bytes().await.unwrap(), "value 0");
    assert!(matches!(
        c.get(b"..", None).await,
        Err(HttpError::InvalidKey(_))
    ));
    s.stop().await;
}

#[tokio::test]
async fn local_view_shows_versions_and_tombstones() {
    let s = Served::start().await;
    let c = &s.client;
    let ctx = c.put(b"k", Bytes::from("v1"), None, None).await.unwrap();
    c.delete(b"k", Some(&ctx), None).await.unwrap();
    c.put(b"k", Bytes::from("blind"), None, None).await.unwrap();

    let raw = s.raw(reqwest::Method::GET, "/admin/local/k").await;
    assert_eq!(raw.status(), 200);
    let body: Value = raw.json().await.unwrap();
    let versions = body["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{body}");
    // Sorted by dot: the tombstone (counter 2), then the blind write (counter 3).
    assert_eq!(versions[0]["value"], Value::Null);
    assert_eq!(
        versions[0]["dot"],
        serde_json::json!({ "node": "fake", "incarnation": 1, "counter": 2 })
    );
    assert_eq!(versions[0]["context"], ctx.encode().as_str());
    assert_eq!(versions[1]["value"], "YmxpbmQ=");
    assert_eq!(versions[1]["dot"]["counter"], 3);
    assert_eq!(
        versions[1]["context"],
        Context::empty().encode().as_str(),
        "a blind write's context is empty"
    );
    assert_eq!(
        versions[0].as_object().unwrap().len(),
        3,
        "exactly value, dot, context"
    );

    let views = c.local(b"k").await.unwrap();
    assert!(views[0].is_tombstone());
    assert_eq!(views[0].context, ctx);
    assert_eq!(views[0].dot.actor, ActorId::new("fake", 1));
    assert_eq!(views[1].value, Some(Bytes::from("blind")));
    assert_eq!(views[1].dot.counter, 3);
    assert!(c.local(b"absent").await.unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn config_can_be_read_and_updated() {
    let s = Served::start().await;
    let c = &s.client;
    assert_eq!(c.config().await.unwrap(), QuorumConfig::default());
    let updated = c
        .update_config(&ConfigUpdate {
            w: Some(3),
            get_timeout_ms: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (updated.n, updated.w, updated.r, updated.get_timeout_ms),
        (3, 3, 2, 100)
    );
    assert_eq!(c.config().await.unwrap(), updated);

    // Raw: a JSON body without a content type is fine; the answer is the config in force.
    let raw = s
        .raw
        .put(s.url("/admin/config"))
        .body(r#"{"r": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"n": 3, "w": 3, "r": 1, "put_timeout_ms": 5000, "get_timeout_ms": 100})
    );

    for (body, kind) in [
        (r#"{"w": 4}"#, "invalid_option"),
        (r#"{"n": 0}"#, "invalid_option"),
        (r#"{"put_timeout_ms": 0}"#, "invalid_option"),
        (r#"{"quorum": 2}"#, "invalid_config"),
        (r#"{"w": "two"}"#, "invalid_config"),
        (r#"{"w": -1}"#, "invalid_config"),
        ("not json", "invalid_config"),
        ("", "invalid_config"),
    ] {
        let raw = s
            .raw
            .put(s.url("/admin/config"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        expect_error(raw, 400, kind).await;
    }
    assert_eq!(
        api_kind(
            c.update_config(&ConfigUpdate {
                n: Some(17),
                ..Default::default()
            })
            .await
        ),
        (400, "invalid_option".into())
    );
    assert_eq!(
        c.config().await.unwrap().r,
        1,
        "refused updates change nothing"
    );
    s.stop().await;
}

#[tokio::test]
async fn admin_views_metrics_and_health() {
    let s = Served::start().await;
    let c = &s.client;
    let raw = s.raw(reqwest::Method::GET, "/metrics").await;
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.headers()["content-type"], METRICS_CONTENT_TYPE);
    assert!(raw.text().await.unwrap().contains("dynamo_keys 0"));
    assert!(c.metrics().await.unwrap().starts_with("# TYPE"));

    let health = c.health().await.unwrap();
    assert_eq!(
        (health.status.as_str(), health.node.as_str()),
        ("ok", "fake")
    );
    let raw: Value = s
        .raw(reqwest::Method::GET, "/health")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        raw,
        serde_json::json!({"status": "ok", "node": "fake", "alive": 1, "members": 1})
    );

    let members = c.members().await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].status, Status::Alive);
    let raw: Value = s
        .raw(reqwest::Method::GET, "/admin/members")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(raw[0]["status"], "alive");
    let ring = c.ring().await.unwrap();
    assert_eq!((ring.version, ring.n, ring.nodes.len()), (2, 3, 1));
    s.stop().await;
}

async fn post(s: &Served, path: &str) -> reqwest::Response {
    s.raw(reqwest::Method::POST, path).await
}

#[tokio::test]
async fn leave_is_accepted_with_the_nodes_entry() {
    let s = Served::start().await;
    let raw = post(&s, "/admin/leave").await;
    assert_eq!(raw.status(), 202);
    assert_eq!(raw.headers()["content-type"], "application/json");
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["node"], "fake", "{body}");
    assert_eq!(body["ring"], "leaving", "{body}");
    assert_eq!(
        body["status"], "alive",
        "liveness and ring status side by side: {body}"
    );
    assert_eq!(
        body["handoff"],
        serde_json::json!({"handed": 0, "remaining": 0}),
        "{body}"
    );
    let member = s.client.leave().await.unwrap();
    assert_eq!(
        (member.node.as_str(), member.ring),
        ("fake", RingStatus::Leaving)
    );
    // A body, if any, is ignored: leaving takes no parameters.
    let with_body = s
        .raw
        .post(s.url("/admin/leave"))
        .body("{\"now\": true}")
        .send()
        .await
        .unwrap();
    assert_eq!(with_body.status(), 202);
    s.stop().await;
}

#[tokio::test]
async fn remove_is_accepted_for_a_dead_member_and_refused_otherwise() {
    let s = Served::start().await;
    let raw = post(&s, "/admin/remove/dead").await;
    assert_eq!(raw.status(), 202);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(
        (&body["node"], &body["status"], &body["ring"]),
        (
            &Value::from("dead"),
            &Value::from("dead"),
            &Value::from("removed")
        ),
        "{body}"
    );
    let member = s.client.remove("dead").await.unwrap();
    assert_eq!(member.ring, RingStatus::Removed);

    let alive = expect_error(post(&s, "/admin/remove/alive").await, 409, "member_alive").await;
    assert_eq!(alive["message"], "alive is alive");
    expect_error(post(&s, "/admin/remove/fake").await, 409, "conflict").await;
    let unknown = expect_error(post(&s, "/admin/remove/ghost").await, 404, "unknown_member").await;
    assert_eq!(unknown["message"], "no member named ghost");
    // The name is percent-decoded, and the client encodes it.
    let spaced = expect_error(
        post(&s, "/admin/remove/no%20one").await,
        404,
        "unknown_member",
    )
    .await;
    assert_eq!(spaced["message"], "no member named no one");
    assert_eq!(
        api_kind(s.client.remove("a/b c").await),
        (404, "unknown_member".into())
    );
    assert_eq!(
        api_kind(s.client.remove("alive").await),
        (409, "member_alive".into())
    );
    assert_eq!(
        api_kind(s.client.remove("fake").await),
        (409, "conflict".into())
    );
    // No name, or one that is not UTF-8: a bad request.
    expect_error(post(&s, "/admin/remove/").await, 400, "invalid_member").await;
    expect_error(post(&s, "/admin/remove/%FF").await, 400, "invalid_member").await;
    assert_eq!(
        api_kind(s.client.remove("").await),
        (400, "invalid_member".into())
    );
    s.assert_alive().await;
    s.stop().await;
}

#[tokio::test]
async fn members_carry_the_ring_status_and_handoff_progress() {
    let s = Served::start().await;
    let raw: Value = s
        .raw(reqwest::Method::GET, "/admin/members")
        .await
        .json()
        .await
        .unwrap();
    let entry = &raw[0];
    assert_eq!(entry["status"], "alive", "{raw}");
    assert_eq!(entry["ring"], "valid", "{raw}");
    assert_eq!(entry["handoff"]["handed"], 0, "{raw}");
    assert_eq!(entry["handoff"]["remaining"], 0, "{raw}");
    let members = s.client.members().await.unwrap();
    assert_eq!(members[0].ring, RingStatus::Valid);
    s.stop().await;
}

#[tokio::test]
async fn health_is_503_with_the_reason_when_the_node_cannot_serve() {
    let s = Served::start().await;
    let why = "the actor tree gave up: restart intensity exceeded";
    *s.service.unavailable.lock().unwrap() = Some(why.into());
    let raw = s.raw(reqwest::Method::GET, "/health").await;
    assert_eq!(raw.status(), 503);
    assert_eq!(raw.headers()["content-type"], "application/json");
    let body: Value = raw.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "status": "unavailable",
            "reason": why,
            "node": "fake",
            "alive": 1,
            "members": 1,
        })
    );
    // The client reports the 503 with the health in the body.
    match s.client.health().await {
        Err(HttpError::Api { status, body, .. }) => {
            assert_eq!(status, 503);
            assert_eq!(body["reason"], why);
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    *s.service.unavailable.lock().unwrap() = None;
    s.assert_alive().await;
    s.stop().await;
}

#[tokio::test]
async fn config_refuses_n_and_changes_nothing() {
    let s = Served::start().await;
    for body in [r#"{"n": 3}"#, r#"{"n": 5, "w": 1}"#] {
        let raw = s
            .raw
            .put(s.url("/admin/config"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let answer = expect_error(raw, 400, "invalid_option").await;
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("n is the cluster's")),
            "{answer}"
        );
    }
    assert_eq!(
        s.client.config().await.unwrap(),
        QuorumConfig::default(),
        "w was not changed either"
    );
    s.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let s = Served::start().await;
    use reqwest::Method;
    for (method, path, status, kind) in [
        (Method::GET, "/nope", 404, "unknown_route"),
        (Method::GET, "/kv", 404, "unknown_route"),
        (Method::GET, "/admin", 404, "unknown_route"),
        (Method::POST, "/kv/k", 405, "method_not_allowed"),
        (Method::PATCH, "/kv/k", 405, "method_not_allowed"),
        (Method::DELETE, "/health", 405, "method_not_allowed"),
        (Method::POST, "/admin/config", 405, "method_not_allowed"),
        (Method::PUT, "/admin/local/k", 405, "method_not_allowed"),
        (Method::POST, "/metrics", 405, "method_not_allowed"),
        (Method::GET, "/admin/leave", 405, "method_not_allowed"),
        (
            Method::DELETE,
            "/admin/remove/dead",
            405,
            "method_not_allowed",
        ),
        (Method::GET, "/admin/remove/", 405, "method_not_allowed"),
    ] {
        let raw = s.raw(method.clone(), path).await;
        if status == 405 {
            assert!(raw.headers().contains_key("allow"), "{method} {path}");
        }
        expect_error(raw, status, kind).await;
        s.assert_alive().await;
    }
    // A client pointed at a wrong route sees an error, not a miss.
    let other = HttpClient::new(format!("{}/elsewhere", s.base));
    assert_eq!(
        api_kind(other.get(b"k", None).await),
        (404, "unknown_route".into())
    );
    s.stop().await;
}

#[tokio::test]
async fn transport_errors_and_graceful_shutdown() {
    let s = Served::start().await;
    let c = s.client.clone();
    c.put(b"slow-k", Bytes::from("v"), None, None)
        .await
        .unwrap();
    // A read in flight when shutdown starts still gets its answer.
    let in_flight = tokio::spawn(async move { c.get(b"slow-k", None).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = s.client.clone();
    s.stop().await;
    assert_eq!(
        in_flight.await.unwrap().unwrap().values(),
        [Bytes::from("v")]
    );
    match client.health().await {
        Err(HttpError::Transport(_)) => {}
        other => panic!("expected a transport error, got {other:?}"),
    }
    // A node that never answers in time is a transport error too.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = HttpClient::with_timeout(
        silent.local_addr().unwrap().to_string(),
        Duration::from_millis(200),
    );
    match slow.health().await {
        Err(HttpError::Transport(text)) => assert!(text.contains("timed out"), "{text}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

// ---- tokens and bounds ----

fn guarded() -> ServeOptions {
    ServeOptions {
        access: HttpAccess {
            api: Token::new("api-token"),
            admin: Token::new("admin-token"),
        },
        ..Default::default()
    }
}

async fn with_bearer(
    s: &Served,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = s.raw.request(method, s.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn limit_hits(text: &str, limit: &str) -> f64 {
    metric_sum(text, "dynamo_http_limit_hits_total", |l| {
        l.contains(&format!("limit=\"{limit}\""))
    })
    .unwrap_or(0.0)
}

#[tokio::test]
async fn tokens_guard_their_routes_with_401_and_the_scheme() {
    let s = Served::start_with(guarded()).await;
    use reqwest::Method;
    for (method, path) in [
        (Method::GET, "/kv/k"),
        (Method::PUT, "/kv/k"),
        (Method::GET, "/admin/members"),
        (Method::GET, "/metrics"),
        (Method::POST, "/admin/leave"),
    ] {
        for token in [None, Some("wrong"), Some("")] {
            let answer = with_bearer(&s, method.clone(), path, token).await;
            assert_eq!(answer.headers()["www-authenticate"], "Bearer", "{path}");
            expect_error(answer, 401, "unauthorized").await;
        }
    }
    // Each token opens its own routes only.
    let answer = with_bearer(&s, Method::GET, "/admin/ring", Some("api-token")).await;
    expect_error(answer, 401, "unauthorized").await;
    let answer = with_bearer(&s, Method::GET, "/kv/k", Some("admin-token")).await;
    expect_error(answer, 401, "unauthorized").await;
    let answer = with_bearer(&s, Method::GET, "/kv/k", Some("api-token")).await;
    expect_error(answer, 404, "not_found").await;
    let answer = with_bearer(&s, Method::GET, "/admin/ring", Some("admin-token")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        with_bearer(&s, Method::GET, "/health", None).await.status(),
        200
    );
    // A body sent without the token is refused before it is read.
    let answer = s.raw.put(s.url("/kv/k")).body("v").send().await.unwrap();
    expect_error(answer, 401, "unauthorized").await;
    assert!(s.service.replica.local(b"k").is_empty());

    // The typed client presents the token of each route.
    let auth = ClientAuth {
        api_token: Token::new("api-token"),
        admin_token: Token::new("admin-token"),
        ca: None,
    };
    let client = HttpClient::with_auth(s.base.clone(), DEFAULT_TIMEOUT, auth).unwrap();
    client
        .put(b"k", Bytes::from("v"), None, None)
        .await
        .unwrap();
    assert_eq!(
        client.get(b"k", None).await.unwrap().values(),
        [Bytes::from("v")]
    );
    assert!(!client.members().await.unwrap().is_empty());
    let text = client.metrics().await.unwrap();
    // 5 routes x 3 bad tokens, 2 tokens on the other scope, 1 body.
    assert_eq!(
        metric_sum(&text, "dynamo_http_unauthorized_total", |_| true),
        Some(18.0),
        "{text}"
    );
    assert_eq!(
        api_kind(s.client.get(b"k", None).await),
        (401, "unauthorized".into())
    );
    s.stop().await;
}

#[tokio::test]
async fn excess_requests_get_503_at_once_and_later_ones_are_served() {
    let mut options = ServeOptions::default();
    options.limits.max_requests = 1;
    let s = Served::start_with(options).await;
    s.client
        .put(b"slow-k", Bytes::from("v"), None, None)
        .await
        .unwrap();
    let c = s.client.clone();
    let slow = tokio::spawn(async move { c.get(b"slow-k", None).await });
    // While the slow read holds the only slot, another request is refused, not queued.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = s.raw(reqwest::Method::GET, "/kv/other").await;
        if answer.status() == 503 {
            expect_error(answer, 503, "overloaded").await;
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never refused");
    }
    assert_eq!(slow.await.unwrap().unwrap().values(), [Bytes::from("v")]);
    let text = s.client.metrics().await.unwrap();
    assert!(limit_hits(&text, "requests") >= 1.0, "{text}");
    s.stop().await;
}

#[tokio::test]
async fn excess_connections_are_closed_and_slow_clients_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut options = ServeOptions::default();
    options.limits.max_connections = 1;
    options.limits.header_timeout = Duration::from_millis(300);
    options.limits.body_timeout = Duration::from_millis(300);
    let s = Served::start_with(options).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let read_to_end = |mut tcp: tokio::net::TcpStream| async move {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the server kept the connection open");
        String::from_utf8_lossy(&answer).into_owned()
    };
    // A client that never finishes its headers holds the only connection until the deadline...
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // ...meanwhile a second connection is closed unanswered...
    let second = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert_eq!(read_to_end(second).await, "");
    // ...and then the slow one is cut off, which frees the slot.
    let _ = read_to_end(slow).await;
    // A body that trickles is answered 408 once its deadline passes.
    let mut trickle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    trickle
        .write_all(b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let answer = read_to_end(trickle).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    let text = s.client.metrics().await.unwrap();
    for limit in ["connections", "header_timeout", "body_timeout"] {
        assert!(limit_hits(&text, limit) >= 1.0, "{limit}: {text}");
    }
    assert!(s.service.replica.local(b"a").is_empty());
    s.stop().await;
}

// ---- HTTPS ----

/// A CA, and a certificate for 127.0.0.1 signed by it; PEM files in `dir`: (ca, cert, key).
fn make_certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

#[tokio::test]
async fn https_serves_clients_that_trust_its_ca_only() {
    let dir = crate::testing::TempDir::new("https");
    let (ca, cert, key) = make_certificates(dir.path());
    let guard = HttpGuard {
        tls: Some(TlsFiles { cert, key }),
        access: guarded().access,
        ..Default::default()
    };
    let s = Served::start_with(guard.serve_options().unwrap()).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let auth = ClientAuth {
        api_token: Token::new("api-token"),
        admin_token: Token::new("admin-token"),
        ca: Some(ca),
    };
    // A bare address with a CA means https.
    let client = HttpClient::with_auth(addr.clone(), DEFAULT_TIMEOUT, auth.clone()).unwrap();
    assert!(client.base_url().starts_with("https://"));
    client
        .put(b"k", Bytes::from("v"), None, None)
        .await
        .unwrap();
    assert_eq!(
        client.get(b"k", None).await.unwrap().values(),
        [Bytes::from("v")]
    );
    assert_eq!(client.health().await.unwrap().status, "ok");
    // Another CA is not trusted; plain HTTP gets no answer.
    let stranger = crate::testing::TempDir::new("https-other");
    let (other, _, _) = make_certificates(stranger.path());
    let doubtful = ClientAuth {
        ca: Some(other),
        ..auth
    };
    let client = HttpClient::with_auth(addr.clone(), DEFAULT_TIMEOUT, doubtful).unwrap();
    assert!(matches!(
        client.health().await,
        Err(HttpError::Transport(_))
    ));
    let plain = HttpClient::with_timeout(addr, Duration::from_secs(5));
    assert!(plain.health().await.is_err());
    s.stop().await;
}
