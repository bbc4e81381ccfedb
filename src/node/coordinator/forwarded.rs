//! Coordinating a write that another node handed here.
//!
//! A forwarded write is coordinated where it arrives, whatever this node's view of the ring:
//! two nodes whose views differ for a moment must not bounce it between them. It is
//! coordinated within the budget it came with, in a `kv_forwarded` span of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::spans::forwarded_span;
use super::write::{admit, coordinate};
use crate::model::{ClientError, Context, WriteOptions};
use crate::node::shared::NodeShared;
use crate::node::wire::ForwardedWrite;

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
    coordinate(shared, write.key, write.value, write.context, w, deadline).await
}
