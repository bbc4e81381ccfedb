//! The JSON shapes of the API, shared by the server and the client so they cannot drift.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::core::ids::{ActorId, NodeId};
use crate::core::vclock::Dot;
use crate::core::version::Version;
use crate::model::{Context, ContextError};

/// Name of the header carrying a context token, in both directions.
pub const CONTEXT_HEADER: &str = "x-dynamo-context";

/// `{"context": token}`: the answer to a PUT.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ContextBody {
    pub context: String,
}

/// `{"siblings": [base64...], "context": token}`: the 300 answer to a GET.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SiblingsBody {
    pub siblings: Vec<String>,
    pub context: String,
}

/// `{"deleted": true}`: the answer to a DELETE.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DeletedBody {
    pub deleted: bool,
}

/// `{"versions": [...]}`: the answer to `GET /admin/local/{key}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LocalBody {
    pub versions: Vec<LocalVersionWire>,
}

/// One stored version as JSON: base64 value (null for a tombstone), flat dot, context token.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LocalVersionWire {
    pub value: Option<String>,
    pub dot: DotWire,
    pub context: String,
}

/// A dot as JSON: `{"node": name, "incarnation": n, "counter": n}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DotWire {
    pub node: String,
    pub incarnation: u64,
    pub counter: u64,
}

impl LocalVersionWire {
    /// The JSON form of a stored version.
    pub fn from_version(v: &Version) -> Self {
        LocalVersionWire {
            value: v.value.as_ref().map(|b| STANDARD.encode(b)),
            dot: DotWire {
                node: v.dot.actor.node.as_str().to_owned(),
                incarnation: v.dot.actor.incarnation,
                counter: v.dot.counter,
            },
            context: Context::from_clock(v.context.clone()).encode(),
        }
    }
}

/// One version a node stores for a key, as `GET /admin/local/{key}` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalVersionView {
    /// The value, `None` for a tombstone.
    pub value: Option<Bytes>,
    /// The version's identity.
    pub dot: Dot,
    /// What its writer had seen.
    pub context: Context,
}

impl LocalVersionView {
    /// True for a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// Why a JSON version could not be read back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A value that is not standard base64.
    #[error("value is not standard base64")]
    Base64,
    /// A context token that does not decode.
    #[error("bad context: {0}")]
    Context(#[from] ContextError),
}

impl TryFrom<LocalVersionWire> for LocalVersionView {
    type Error = WireError;

    fn try_from(w: LocalVersionWire) -> Result<Self, WireError> {
        let value = match w.value {
            Some(text) => Some(decode_base64(&text)?),
            None => None,
        };
        Ok(LocalVersionView {
            value,
            dot: Dot::new(
                ActorId::new(NodeId::new(&w.dot.node), w.dot.incarnation),
                w.dot.counter,
            ),
            context: Context::decode(&w.context)?,
        })
    }
}

/// Standard base64 of a value, as sibling lists and local views carry them.
pub(crate) fn encode_base64(value: &[u8]) -> String {
    STANDARD.encode(value)
}

/// Decodes a standard base64 value.
pub(crate) fn decode_base64(text: &str) -> Result<Bytes, WireError> {
    STANDARD
        .decode(text)
        .map(Bytes::from)
        .map_err(|_| WireError::Base64)
}
