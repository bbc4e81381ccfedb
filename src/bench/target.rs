//! What the benchmark drives: a node's HTTP API or the native client, behind one trait.

use std::future::Future;

use bytes::Bytes;

use crate::core::ids::Key;
use crate::http::{HttpClient, HttpError};
use crate::model::{ClientError, Context, GetResult, KvService, ReadOptions, WriteOptions};

/// One way of reaching the store; the error is the kind the report counts it under.
pub trait BenchClient: Clone + Send + Sync + 'static {
    /// Reads `key` with the configured R.
    fn get(&self, key: Key) -> impl Future<Output = Result<GetResult, String>> + Send;

    /// Writes `value` under `key` with `context` (`None`: blind) and the configured W.
    fn put(
        &self,
        key: Key,
        value: Bytes,
        context: Option<Context>,
    ) -> impl Future<Output = Result<Context, String>> + Send;
}

impl BenchClient for HttpClient {
    async fn get(&self, key: Key) -> Result<GetResult, String> {
        HttpClient::get(self, &key, None)
            .await
            .map_err(|e| http_error_kind(&e).to_string())
    }

    async fn put(
        &self,
        key: Key,
        value: Bytes,
        context: Option<Context>,
    ) -> Result<Context, String> {
        HttpClient::put(self, &key, value, context.as_ref(), None)
            .await
            .map_err(|e| http_error_kind(&e).to_string())
    }
}

/// Adapts any [`KvService`] (an embedded node or the native client) to the benchmark.
#[derive(Clone)]
pub struct ServiceClient<S>(pub S);

impl<S: KvService> BenchClient for ServiceClient<S> {
    async fn get(&self, key: Key) -> Result<GetResult, String> {
        self.0
            .get(key, ReadOptions::default())
            .await
            .map_err(|e| service_error_kind(&e))
    }

    async fn put(
        &self,
        key: Key,
        value: Bytes,
        context: Option<Context>,
    ) -> Result<Context, String> {
        self.0
            .put(key, value, context, WriteOptions::default())
            .await
            .map_err(|e| service_error_kind(&e))
    }
}

fn service_error_kind(e: &ClientError) -> String {
    e.kind().to_string()
}

/// The kind an HTTP error is counted under: the API's kind, else what went wrong.
pub fn http_error_kind(e: &HttpError) -> &str {
    match e {
        HttpError::Api { kind, .. } => kind,
        HttpError::Transport(_) => "transport",
        HttpError::Decode(_) => "decode",
        HttpError::InvalidKey(_) => "invalid_key",
    }
}
