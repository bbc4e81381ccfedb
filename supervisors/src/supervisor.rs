//! The supervisor actor: starts its children, restarts them by strategy, and shuts them down in order.

use std::ops::Range;
use std::time::{Duration, Instant};

use ractor::concurrency::JoinHandle;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RactorErr, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use ractor_cluster_derive::RactorMessage;

use crate::children::{ChildInfo, Children};
use crate::error::SupervisorError;
use crate::intensity::{Intensity, RestartWindow};
use crate::spec::{ChildExit, ChildSpec, Restart};

/// Which children are restarted when one of them has to be restarted (OTP strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Restart only the child that exited.
    #[default]
    OneForOne,
    /// Stop the children started after it (last first), then restart it and them in start order.
    RestForOne,
    /// Stop all other children (last first), then restart all in start order.
    OneForAll,
}

impl Strategy {
    /// Indices of the children cycled when child `idx` of `len` is restarted.
    fn affected(self, idx: usize, len: usize) -> Range<usize> {
        match self {
            Strategy::OneForOne => idx..idx + 1,
            Strategy::RestForOne => idx..len,
            Strategy::OneForAll => 0..len,
        }
    }
}

/// Start arguments of a [`Supervisor`]: strategy, restart intensity and the ordered child specs.
#[derive(Debug, Clone, Default)]
pub struct SupervisorArgs {
    /// Restart strategy.
    pub strategy: Strategy,
    /// Restart intensity limit; exceeding it makes the supervisor fail.
    pub intensity: Intensity,
    /// Children in start order.
    pub children: Vec<ChildSpec>,
}

impl SupervisorArgs {
    /// Arguments with `strategy`, the default intensity and no children yet.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            ..Self::default()
        }
    }

    /// Replaces the restart intensity.
    pub fn with_intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Appends a child; children start in the order they are added.
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(spec);
        self
    }
}

/// Messages a [`Supervisor`] understands.
#[derive(RactorMessage)]
pub enum SupervisorMsg {
    /// Reply with a snapshot of every child, in start order.
    WhichChildren(RpcReplyPort<Vec<ChildInfo>>),
}

/// An OTP-style supervisor actor; spawn it with [`SupervisorArgs`], alone or linked under any actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervisor;

impl Supervisor {
    /// Spawns a supervisor with no parent.
    pub async fn start(
        name: Option<String>,
        args: SupervisorArgs,
    ) -> Result<(ActorRef<SupervisorMsg>, JoinHandle<()>), SpawnErr> {
        Actor::spawn(name, Supervisor, args).await
    }

    /// Spawns a supervisor linked under `parent`, which then sees its failures as `ActorFailed`.
    pub async fn start_linked(
        name: Option<String>,
        args: SupervisorArgs,
        parent: ActorCell,
    ) -> Result<(ActorRef<SupervisorMsg>, JoinHandle<()>), SpawnErr> {
        Actor::spawn_linked(name, Supervisor, args, parent).await
    }
}

/// Asks `sup` for its children, waiting at most `timeout`.
pub async fn which_children(
    sup: &ActorRef<SupervisorMsg>,
    timeout: Duration,
) -> Result<Vec<ChildInfo>, RactorErr<SupervisorMsg>> {
    let result = sup
        .call(SupervisorMsg::WhichChildren, Some(timeout))
        .await?;
    match result {
        ractor::rpc::CallResult::Success(infos) => Ok(infos),
        other => Err(RactorErr::from(other)),
    }
}

/// Runtime state of a [`Supervisor`] (opaque).
pub struct SupervisorState {
    strategy: Strategy,
    window: RestartWindow,
    children: Children,
}

impl SupervisorState {
    /// Handles the exit of the current incarnation of child `idx`.
    async fn on_exit(
        &mut self,
        sup: &ActorCell,
        idx: usize,
        exit: ChildExit,
        detail: &str,
    ) -> Result<(), SupervisorError> {
        self.children.forget(idx);
        let name = self.children.name(idx).to_owned();
        if !self.children.restart_type(idx).restarts_after(exit) {
            tracing::info!(child = %name, ?exit, detail, "child exited; not restarted");
            return Ok(());
        }
        tracing::warn!(child = %name, ?exit, detail, strategy = ?self.strategy, "restarting child");
        self.note_restart(&name).await?;

        let affected = self.strategy.affected(idx, self.children.len());
        for j in affected.clone().rev() {
            self.children.stop(j, "supervisor_restart").await;
        }
        let mut from = affected.start;
        // Like OTP, a failed restart is retried and counts against the intensity, which bounds the loop.
        while let Err((failed_at, err)) = self.start_range(sup, from..affected.end).await {
            tracing::warn!(error = %err, "child restart failed; retrying");
            let failed_name = self.children.name(failed_at).to_owned();
            self.note_restart(&failed_name).await?;
            from = failed_at;
        }
        Ok(())
    }

    /// Starts the non-temporary children of `range` in order, reporting the first that fails.
    async fn start_range(
        &mut self,
        sup: &ActorCell,
        range: Range<usize>,
    ) -> Result<(), (usize, SupervisorError)> {
        for j in range {
            if self.children.restart_type(j) == Restart::Temporary {
                continue;
            }
            self.children.start(j, sup).await.map_err(|e| (j, e))?;
        }
        Ok(())
    }

    /// Counts one restart; past the intensity, stops every child and returns the escalation error.
    async fn note_restart(&mut self, child: &str) -> Result<(), SupervisorError> {
        if self.window.record(Instant::now()) {
            return Ok(());
        }
        let limit = self.window.limit();
        tracing::error!(
            child,
            ?limit,
            "restart intensity exceeded; supervisor gives up"
        );
        self.children
            .stop_all("supervisor_intensity_exceeded")
            .await;
        Err(SupervisorError::IntensityExceeded {
            child: child.to_owned(),
            max_restarts: limit.max_restarts,
            within: limit.within,
        })
    }
}

/// Kills are abnormal exits in OTP; ractor reports them as terminations with these reasons.
fn classify_termination(reason: Option<&str>) -> ChildExit {
    match reason {
        Some("killed") | Some("actor_task_cancelled") => ChildExit::Abnormal,
        _ => ChildExit::Normal,
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    /// Starts all children in order before the supervisor counts as started, as OTP's `init` does.
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut children = Children::new(args.children)?;
        children.start_all(&myself.get_cell()).await?;
        Ok(SupervisorState {
            strategy: args.strategy,
            window: RestartWindow::new(args.intensity),
            children,
        })
    }

    /// Stops children last-started-first, each within its shutdown timeout, instead of ractor's kill.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.children.stop_all("supervisor_shutdown").await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::WhichChildren(reply) => {
                // The caller may have timed out; nothing to do then.
                let _ = reply.send(state.children.infos());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (id, exit, detail) = match &evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                (cell.get_id(), ChildExit::Abnormal, err.to_string())
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.get_id(),
                classify_termination(reason.as_deref()),
                reason.clone().unwrap_or_default(),
            ),
            _ => return Ok(()),
        };
        // Exits of incarnations we replaced or stopped ourselves match no current child.
        let Some(idx) = state.children.position(id) else {
            tracing::trace!(%id, "ignoring exit of a stale or unknown child");
            return Ok(());
        };
        state
            .on_exit(&myself.get_cell(), idx, exit, &detail)
            .await
            .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affected_ranges_follow_strategy() {
        assert_eq!(Strategy::OneForOne.affected(1, 4), 1..2);
        assert_eq!(Strategy::RestForOne.affected(1, 4), 1..4);
        assert_eq!(Strategy::OneForAll.affected(1, 4), 0..4);
    }

    #[test]
    fn kills_are_abnormal_stops_are_normal() {
        assert_eq!(classify_termination(Some("killed")), ChildExit::Abnormal);
        assert_eq!(
            classify_termination(Some("actor_task_cancelled")),
            ChildExit::Abnormal
        );
        assert_eq!(classify_termination(None), ChildExit::Normal);
        assert_eq!(classify_termination(Some("done")), ChildExit::Normal);
    }
}
