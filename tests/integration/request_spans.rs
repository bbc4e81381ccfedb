//! The `kv_request` span of each client request, captured from an in-process node.
//!
//! The test sets its own subscriber as the thread's default (tracing's global dispatcher is
//! shared with the other tests of this process) and runs the node on a current-thread
//! runtime: every task of the node is polled on this thread and reports to that subscriber
//! only.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use dynamo_node::config::NodeConfig;
use dynamo_node::core::hash::stable_hash;
use dynamo_node::model::GetResult;
use dynamo_node::node::Node;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span's name and the fields it recorded, as text.
#[derive(Clone, Debug, Default)]
struct Captured {
    name: String,
    fields: BTreeMap<String, String>,
}

impl Captured {
    fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }
}

impl Visit for Captured {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.fields
            .insert(field.name().into(), format!("{value:?}"));
    }
}

/// Spans open and closed, in the order they closed.
#[derive(Clone, Default)]
struct Capture {
    open: Arc<Mutex<HashMap<Id, Captured>>>,
    closed: Arc<Mutex<Vec<Captured>>>,
}

impl Capture {
    /// Takes the spans closed so far.
    fn take(&self) -> Vec<Captured> {
        std::mem::take(&mut *self.closed.lock().unwrap())
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut span = Captured {
            name: attrs.metadata().name().into(),
            ..Captured::default()
        };
        attrs.record(&mut span);
        self.open.lock().unwrap().insert(id.clone(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(span) = self.open.lock().unwrap().get_mut(id) {
            values.record(span);
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        if let Some(span) = self.open.lock().unwrap().remove(&id) {
            self.closed.lock().unwrap().push(span);
        }
    }
}

fn dispatch(capture: &Capture, level: LevelFilter) -> Dispatch {
    Dispatch::new(tracing_subscriber::registry().with(capture.clone().with_filter(level)))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The one request span closed since the last call.
fn only_request(capture: &Capture) -> Captured {
    let spans: Vec<Captured> = capture
        .take()
        .into_iter()
        .filter(|s| s.name == "kv_request")
        .collect();
    assert_eq!(spans.len(), 1, "{spans:?}");
    spans.into_iter().next().unwrap()
}

fn assert_fields(span: &Captured, expected: &[(&str, &str)]) {
    for (field, value) in expected {
        assert_eq!(span.get(field), Some(*value), "{field} in {span:?}");
    }
}

#[test]
fn every_request_has_a_debug_span_with_its_fan_out_and_outcome_but_never_its_key() {
    let _turn = crate::ractor_turn::take_blocking();
    let capture = Capture::default();
    let key = "secret-customer-key";
    let hash = stable_hash(key.as_bytes()).to_string();
    let all: Vec<Captured> =
        tracing::dispatcher::with_default(&dispatch(&capture, LevelFilter::DEBUG), || {
            runtime().block_on(async {
                let mut config = NodeConfig::new("spans", "127.0.0.1:0".parse().unwrap());
                (config.quorum.w, config.quorum.r) = (1, 1);
                config.anti_entropy.interval_ms = 0;
                let node = Node::start(config).await.unwrap();
                let client = node.client();
                let mut all = Vec::new();

                client.put(key, "a", None).await.unwrap();
                let put = only_request(&capture);
                assert_fields(
                    &put,
                    &[
                        ("op", "put"),
                        ("key_hash", &hash),
                        ("node", "spans"),
                        ("coordinator", "spans"),
                        ("targets", "spans"),
                        ("required", "1"),
                        ("acks", "1"),
                        ("outcome", "ok"),
                    ],
                );
                assert_eq!(put.get("replies"), None, "a write has acks, not replies");
                all.push(put);

                client.put(key, "b", None).await.unwrap();
                all.push(only_request(&capture));
                let read = client.get(key).await.unwrap();
                assert!(matches!(read, GetResult::Siblings { .. }));
                let get = only_request(&capture);
                assert_fields(
                    &get,
                    &[
                        ("op", "get"),
                        ("key_hash", &hash),
                        ("coordinator", "spans"),
                        ("targets", "spans"),
                        ("required", "1"),
                        ("replies", "1"),
                        ("outcome", "siblings"),
                    ],
                );
                assert_eq!(get.get("acks"), None, "a read has replies, not acks");
                all.push(get);

                // Without a context a delete reads, then writes a tombstone: one span for both.
                client.delete(key, None).await.unwrap();
                let delete = only_request(&capture);
                assert_fields(
                    &delete,
                    &[
                        ("op", "delete"),
                        ("key_hash", &hash),
                        ("acks", "1"),
                        ("outcome", "ok"),
                    ],
                );
                all.push(delete);
                client.get(key).await.unwrap();
                let missing = only_request(&capture);
                assert_fields(&missing, &[("op", "get"), ("outcome", "not_found")]);
                all.push(missing);

                // Refused before any fan-out: an outcome, and no coordinator.
                client.put("", "v", None).await.unwrap_err();
                let refused = only_request(&capture);
                assert_fields(&refused, &[("op", "put"), ("outcome", "invalid_key")]);
                assert_eq!(refused.get("coordinator"), None, "{refused:?}");
                assert_eq!(refused.get("targets"), None, "{refused:?}");
                all.push(refused);
                node.stop().await;
                all
            })
        });
    for span in &all {
        assert!(
            span.fields.values().all(|v| !v.contains(key)),
            "the key leaked into {span:?}"
        );
    }

    // At info level the requests make no span at all.
    let quiet = Capture::default();
    tracing::dispatcher::with_default(&dispatch(&quiet, LevelFilter::INFO), || {
        runtime().block_on(async {
            let mut config = NodeConfig::new("quiet", "127.0.0.1:0".parse().unwrap());
            (config.quorum.w, config.quorum.r) = (1, 1);
            config.anti_entropy.interval_ms = 0;
            let node = Node::start(config).await.unwrap();
            node.client().put(key, "a", None).await.unwrap();
            node.client().get(key).await.unwrap();
            node.stop().await;
        })
    });
    let spans = quiet.take();
    assert!(
        spans.iter().all(|s| s.name != "kv_request"),
        "debug spans at info level: {spans:?}"
    );
}
