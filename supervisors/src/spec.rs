//! Child specifications: what a supervisor starts, under which name, and when it restarts it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, SpawnErr};

/// The boxed future a child's start function returns.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

// Shared so that specs (and whole supervisor argument sets) are cheap to clone for nesting.
type StartFn = Arc<dyn Fn(String, ActorCell) -> StartFuture + Send + Sync>;

/// Default time a child gets to stop gracefully before it is killed (OTP's worker default).
pub const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(5);

/// When a child that exited is started again (OTP restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Always restarted, whatever the reason it exited.
    Permanent,
    /// Restarted only after an abnormal exit (failure or kill), not after a normal stop.
    Transient,
    /// Never restarted; also not brought back when siblings are restarted as a group.
    Temporary,
}

/// How a child ended, as far as the restart decision is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    /// Graceful `stop` (with or without a reason).
    Normal,
    /// A panic, an `Err` from a handler (`ActorFailed`), or a kill.
    Abnormal,
}

impl Restart {
    /// Whether a child of this restart type is restarted after `exit`.
    pub fn restarts_after(self, exit: ChildExit) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => exit == ChildExit::Abnormal,
            Restart::Temporary => false,
        }
    }
}

/// One child of a supervisor: its registry name, restart type, shutdown timeout and start function.
#[derive(Clone)]
pub struct ChildSpec {
    name: String,
    restart: Restart,
    shutdown: Duration,
    start: StartFn,
}

impl ChildSpec {
    /// A child started by `start(name, supervisor)`.
    ///
    /// `start` must spawn the actor **linked** to `supervisor` and registered under `name`
    /// (e.g. `Actor::spawn_linked(Some(name), actor, args, supervisor)`); the supervisor checks
    /// both and refuses a child that does not comply.
    pub fn new<F, Fut>(name: impl Into<String>, restart: Restart, start: F) -> Self
    where
        F: Fn(String, ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        Self {
            name: name.into(),
            restart,
            shutdown: DEFAULT_SHUTDOWN,
            start: Arc::new(move |name, sup| Box::pin(start(name, sup))),
        }
    }

    /// A child that runs `actor` with a fresh clone of `args` on every (re)start.
    pub fn actor<A>(name: impl Into<String>, restart: Restart, actor: A, args: A::Arguments) -> Self
    where
        A: Actor + Clone,
        A::Arguments: Clone + Sync,
    {
        Self::new(name, restart, move |name, sup| {
            let actor = actor.clone();
            let args = args.clone();
            async move {
                A::spawn_linked(Some(name), actor, args, sup)
                    .await
                    .map(|(actor_ref, _)| actor_ref.get_cell())
            }
        })
    }

    /// Sets how long the child may take to stop gracefully before it is killed.
    pub fn with_shutdown(mut self, timeout: Duration) -> Self {
        self.shutdown = timeout;
        self
    }

    /// The name the child is registered under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's restart type.
    pub fn restart(&self) -> Restart {
        self.restart
    }

    /// The child's graceful shutdown timeout.
    pub fn shutdown(&self) -> Duration {
        self.shutdown
    }

    /// Runs the start function for a new incarnation linked to `supervisor`.
    pub(crate) fn start(&self, supervisor: ActorCell) -> StartFuture {
        (self.start)(self.name.clone(), supervisor)
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_matrix_follows_otp() {
        use ChildExit::*;
        use Restart::*;
        assert!(Permanent.restarts_after(Normal));
        assert!(Permanent.restarts_after(Abnormal));
        assert!(!Transient.restarts_after(Normal));
        assert!(Transient.restarts_after(Abnormal));
        assert!(!Temporary.restarts_after(Normal));
        assert!(!Temporary.restarts_after(Abnormal));
    }
}
