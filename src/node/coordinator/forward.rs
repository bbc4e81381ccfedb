//! Sending a write to the node that should coordinate it (see `forwarded` for the other end).
//!
//! The write carries what is left of the client's budget, and the sender waits a little
//! longer than that for the answer's trip back.

use std::time::{Duration, Instant};

use crate::core::ids::NodeId;
use crate::model::{ClientError, Context};
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

/// Milliseconds left until `deadline`: the budget a forwarded write carries.
pub(super) fn remaining_ms(deadline: Instant) -> u64 {
    u64::try_from(
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}
