//! This process's one turn at running ractor: its registry and process groups are global to
//! the process, so a node, a native client or a mesh member started by a test here would find
//! another test's actors under the same names and groups. Every test that starts one holds
//! the turn until it stopped it. (Node processes started through `TestCluster` need no turn.)

use tokio::sync::{Mutex, MutexGuard};

static TURN: Mutex<()> = Mutex::const_new(());

/// The turn, held until dropped.
pub type Turn = MutexGuard<'static, ()>;

/// Waits for the turn, from a test on a tokio runtime.
pub async fn take() -> Turn {
    TURN.lock().await
}

/// Waits for the turn, from a test outside any runtime.
pub fn take_blocking() -> Turn {
    TURN.blocking_lock()
}
