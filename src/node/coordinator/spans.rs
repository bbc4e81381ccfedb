//! The request spans: what the coordination of one request records into the debug span of
//! the client's request (`kv_request`, opened by the node's client) or of a write another
//! node handed here (`kv_forwarded`).
//!
//! A request is named by its key's hash only: keys may be personal data and are unbounded in
//! size. Nothing is built for a span nobody records: every field waits on a check that debug
//! logging is on and that the current span is one of ours (a caller's own span is left
//! alone), so a node with debug logging off pays a level check per request.

use tracing::Span;
use tracing::field::Empty;

use crate::core::hash::stable_hash;
use crate::core::ids::NodeId;
use crate::core::quorum::{Shortfall, Target};
use crate::node::wire::ForwardedWrite;

/// The debug span of a write that another node forwarded here, with the fields of the client's
/// `kv_request` span that this node fills in.
pub(super) fn forwarded_span(me: &NodeId, write: &ForwardedWrite) -> Span {
    tracing::debug_span!(
        "kv_forwarded",
        op = if write.value.is_some() { "put" } else { "delete" },
        key_hash = stable_hash(&write.key),
        node = %me,
        coordinator = Empty,
        targets = Empty,
        required = Empty,
        acks = Empty,
        outcome = Empty,
    )
}

/// The request span being recorded, if any.
fn request_span() -> Option<Span> {
    if !tracing::level_enabled!(tracing::Level::DEBUG) {
        return None;
    }
    let span = Span::current();
    let ours = matches!(
        span.metadata().map(|m| m.name()),
        Some("kv_request" | "kv_forwarded")
    );
    (ours && !span.is_disabled()).then_some(span)
}

/// Records that the request was handed to `node` to coordinate.
pub(super) fn record_forward(node: &NodeId) {
    if let Some(span) = request_span() {
        span.record("coordinator", node.as_str());
    }
}

/// Records this node as the coordinator, the replicas it contacts and the quorum it needs.
pub(super) fn record_fan_out(me: &NodeId, targets: &[Target], required: usize) {
    let Some(span) = request_span() else {
        return;
    };
    let mut list = String::new();
    for (i, target) in targets.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str(target.node.as_str());
        if let Some(owner) = &target.stands_in_for {
            list.push_str("(for ");
            list.push_str(owner.as_str());
            list.push(')');
        }
    }
    span.record("coordinator", me.as_str());
    span.record("targets", list.as_str());
    span.record("required", required);
}

/// Records how many successful answers (`acks` or `replies`) the request had when it answered.
pub(super) fn record_answers<T, E>(field: &str, answer: &Result<Result<(T, usize), Shortfall>, E>) {
    let Some(span) = request_span() else {
        return;
    };
    let count = match answer {
        Ok(Ok((_, answers))) => *answers,
        Ok(Err(shortfall)) => shortfall.succeeded,
        Err(_) => 0,
    };
    span.record(field, count);
}
