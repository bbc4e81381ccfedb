//! Writes handed between nodes: sending a write to the node that should coordinate it, and
//! coordinating one that was handed here.
//!
//! A forwarded write is coordinated where it arrives, whatever this node's view of the ring:
//! two nodes whose views differ for a moment must not bounce it between them. It carries what
//! is left of the client's budget, and the sender waits a little longer than that for the
//! answer's trip back. Each forwarded write runs in a `kv_forwarded` span of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::spans::forwarded_span;
use super::write::{admit, coordinate};
use crate::core::ids::NodeId;
use crate::model::{ClientError, Context, WriteOptions};
use crate::node::shared::NodeShared;
use crate::node::wire::ForwardedWrite;

// A forwarded write gets this much beyond its budget, for the answer's trip back.
const FORWARD_MARGIN: Duration = Duration::from_millis(250);

/// Sends a write to `node`'s coordinator; `None` when it could not be asked or did not answer.
pub(crate) async fn forward(
    shared: &NodeShared,
    node: &NodeId,
    write: ForwardedWrite,
    deadline: Instant,
) -> Option<Result<Context, ClientError>> {
    if !shared.peers.connected(node) {
        return None;
    }
    shared.metrics.forwarded.inc();
    shared
        .forwards
        .write(node, write, deadline + FORWARD_MARGIN)
        .await
        .ok()
}

/// Coordinates one write of a forwarded batch inside its own `kv_forwarded` span.
pub(super) async fn serve(
    shared: &Arc<NodeShared>,
    write: ForwardedWrite,
) -> Result<Context, ClientError> {
    let span = forwarded_span(&shared.me, &write);
    let answer = coordinate_forwarded(shared, write)
        .instrument(span.clone())
        .await;
    span.record(
        "outcome",
        match &answer {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        },
    );
    answer
}

/// Coordinates a forwarded write here, within the budget it came with.
async fn coordinate_forwarded(
    shared: &Arc<NodeShared>,
    write: ForwardedWrite,
) -> Result<Context, ClientError> {
    let opts = WriteOptions { w: write.w };
    let (_, w) = admit(shared, &write.key, write.value.as_ref(), opts)?;
    let deadline = Instant::now() + Duration::from_millis(write.budget_ms);
    coordinate(shared, write.key, write.value, &write.context, w, deadline).await
}

/// Milliseconds left until `deadline`: the budget a forwarded write carries.
pub(super) fn remaining_ms(deadline: Instant) -> u64 {
    u64::try_from(
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}
