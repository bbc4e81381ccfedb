//! Read repair: once every reply of a read is in, the owners that answered with a stale or
//! empty set get the reconciled one.
//!
//! What to repair is the pure [`ReadRun::repairs`]'s decision (owners only: a fallback's copy
//! is a hint on its way to its owner, and this node's own copy is repaired in place). The
//! repairs are sent as ordinary replica writes, under the write timeout, and nobody waits for
//! them (a replica put is sent once queued): the client was answered long before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::read::ReadRun;
use crate::node::shared::NodeShared;

/// Sends the reconciled set to every owner whose reply differed from it.
pub(super) fn read_repair(shared: &Arc<NodeShared>, run: &ReadRun) {
    let repairs = run.repairs(&shared.local());
    shared.metrics.read_repairs.inc_by(repairs.len() as u64);
    let deadline = Instant::now() + Duration::from_millis(shared.quorum.load().put_timeout_ms);
    for out in repairs {
        shared.replicas.send_put(&out.to, out.put, deadline);
    }
}
