//! The ordered child list of one supervisor: starting, stopping and looking up incarnations.

use std::collections::HashSet;
use std::time::Duration;

use ractor::{ActorCell, ActorId, ActorStatus, RactorErr};

use crate::error::SupervisorError;
use crate::spec::{ChildSpec, Restart};

// Grace period after a kill, so a restart does not race the old incarnation for its name.
const KILL_WAIT: Duration = Duration::from_secs(1);

/// A snapshot of one child, as returned by `which_children`.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// Registry name of the child.
    pub name: String,
    /// The current incarnation, or `None` if the child is not running.
    pub cell: Option<ActorCell>,
    /// The child's restart type.
    pub restart: Restart,
    /// How many times this child has been (re)started after the initial start.
    pub restarts: u32,
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    // Distinguishes the initial start from restarts in the count.
    started_once: bool,
    restarts: u32,
}

/// Children in start order; index order is the order OTP strategies reason about.
pub(crate) struct Children {
    list: Vec<Child>,
}

impl Children {
    /// Wraps the specs; names must be unique because each is a registry key.
    pub(crate) fn new(specs: Vec<ChildSpec>) -> Result<Self, SupervisorError> {
        let mut seen = HashSet::new();
        for spec in &specs {
            if !seen.insert(spec.name().to_owned()) {
                return Err(SupervisorError::DuplicateChildName(spec.name().to_owned()));
            }
        }
        let list = specs
            .into_iter()
            .map(|spec| Child {
                spec,
                cell: None,
                started_once: false,
                restarts: 0,
            })
            .collect();
        Ok(Self { list })
    }

    /// Number of children (running or not).
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Starts every child in order; on failure stops the ones already started (last first).
    pub(crate) async fn start_all(&mut self, sup: &ActorCell) -> Result<(), SupervisorError> {
        for idx in 0..self.list.len() {
            if let Err(err) = self.start(idx, sup).await {
                self.stop_all("supervisor_start_failed").await;
                return Err(err);
            }
        }
        Ok(())
    }

    /// Index of the child whose *current* incarnation has `id`; stale incarnations match nothing.
    pub(crate) fn position(&self, id: ActorId) -> Option<usize> {
        self.list
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|cell| cell.get_id() == id))
    }

    /// Name of the child at `idx`.
    pub(crate) fn name(&self, idx: usize) -> &str {
        self.list[idx].spec.name()
    }

    /// Restart type of the child at `idx`.
    pub(crate) fn restart_type(&self, idx: usize) -> Restart {
        self.list[idx].spec.restart()
    }

    /// Marks the child at `idx` as no longer running (it exited on its own).
    pub(crate) fn forget(&mut self, idx: usize) {
        self.list[idx].cell = None;
    }

    /// Starts a new incarnation of the child at `idx` and checks it is named and linked correctly.
    pub(crate) async fn start(
        &mut self,
        idx: usize,
        sup: &ActorCell,
    ) -> Result<(), SupervisorError> {
        let child = &mut self.list[idx];
        let name = child.spec.name().to_owned();
        let cell = child.spec.start(sup.clone()).await.map_err(|source| {
            SupervisorError::ChildStartFailed {
                child: name.clone(),
                source,
            }
        })?;
        if cell.get_name().as_deref() != Some(name.as_str()) {
            let actual = cell.get_name();
            let _ = cell.kill_and_wait(Some(KILL_WAIT)).await;
            return Err(SupervisorError::ChildNameMismatch {
                child: name,
                actual,
            });
        }
        let linked = cell
            .try_get_supervisor()
            .is_some_and(|s| s.get_id() == sup.get_id());
        // A child that already died has unlinked itself; its exit event is queued for us anyway.
        if !linked && cell.get_status() < ActorStatus::Stopping {
            let _ = cell.kill_and_wait(Some(KILL_WAIT)).await;
            return Err(SupervisorError::ChildNotLinked { child: name });
        }
        if child.started_once {
            child.restarts = child.restarts.saturating_add(1);
        }
        child.started_once = true;
        child.cell = Some(cell);
        Ok(())
    }

    /// Gracefully stops the child at `idx` (kill after its shutdown timeout) and forgets it.
    pub(crate) async fn stop(&mut self, idx: usize, reason: &str) {
        let child = &mut self.list[idx];
        let Some(cell) = child.cell.take() else {
            return;
        };
        let timeout = child.spec.shutdown();
        match cell
            .stop_and_wait(Some(reason.to_owned()), Some(timeout))
            .await
        {
            Ok(()) => {}
            Err(RactorErr::Timeout) => {
                tracing::warn!(
                    child = child.spec.name(),
                    ?timeout,
                    "child ignored stop, killing it"
                );
                if cell.kill_and_wait(Some(KILL_WAIT)).await.is_err() {
                    tracing::error!(child = child.spec.name(), "child did not exit after kill");
                }
            }
            // Mailbox already closed: it is exiting on its own; wait so its name is released.
            Err(_) => {
                let _ = cell.wait(Some(timeout)).await;
            }
        }
    }

    /// Stops all running children, last started first.
    pub(crate) async fn stop_all(&mut self, reason: &str) {
        for idx in (0..self.list.len()).rev() {
            self.stop(idx, reason).await;
        }
    }

    /// A snapshot of every child in start order.
    pub(crate) fn infos(&self) -> Vec<ChildInfo> {
        self.list
            .iter()
            .map(|c| ChildInfo {
                name: c.spec.name().to_owned(),
                cell: c.cell.clone(),
                restart: c.spec.restart(),
                restarts: c.restarts,
            })
            .collect()
    }
}
