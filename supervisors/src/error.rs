//! Errors a supervisor reports when it fails to start or gives up.

use std::time::Duration;

use ractor::SpawnErr;

/// Why a supervisor failed; carried inside `SpawnErr::StartupFailed` or `SupervisionEvent::ActorFailed`.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Two child specs share a name, so both could not be registered.
    #[error("duplicate child name `{0}`")]
    DuplicateChildName(String),
    /// A child's start function returned an error.
    #[error("child `{child}` failed to start: {source}")]
    ChildStartFailed {
        /// Name of the child.
        child: String,
        /// The spawn error.
        #[source]
        source: SpawnErr,
    },
    /// The start function did not register the child under its spec name.
    #[error("child `{child}` was registered as {actual:?} instead of its spec name")]
    ChildNameMismatch {
        /// Name in the spec.
        child: String,
        /// Name the spawned actor actually has.
        actual: Option<String>,
    },
    /// The start function did not link the child to this supervisor, so its exits would go unseen.
    #[error("child `{child}` was not spawned linked to its supervisor")]
    ChildNotLinked {
        /// Name of the child.
        child: String,
    },
    /// More than `max_restarts` restarts were needed within `within`; the supervisor gave up.
    #[error(
        "restart intensity exceeded (more than {max_restarts} restarts within {within:?}), last exit by child `{child}`"
    )]
    IntensityExceeded {
        /// The child whose exit (or failed restart) tipped the count.
        child: String,
        /// The configured limit.
        max_restarts: u32,
        /// The configured window.
        within: Duration,
    },
}
