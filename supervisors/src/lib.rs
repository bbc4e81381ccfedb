//! OTP-style supervision strategies for [ractor] actors.
//!
//! A [`Supervisor`] is an ordinary ractor actor that owns an ordered list of children
//! ([`ChildSpec`]) and follows the semantics of Erlang/OTP's `supervisor` behaviour:
//!
//! * **Start**: children are started in order inside the supervisor's `pre_start`, so when
//!   `spawn`/[`Supervisor::start`] returns `Ok`, every child is running (OTP's `init` does the
//!   same). If a child fails to start, the children already started are stopped (last first) and
//!   the spawn fails with `SpawnErr::StartupFailed` wrapping a [`SupervisorError`]. A child must
//!   not make a blocking call to its supervisor from its own `pre_start`/`post_start` (the
//!   supervisor's mailbox is not served until all children are up).
//! * **Names**: each child is registered in ractor's registry under its spec name, so
//!   `ActorRef::where_is(name)` always finds the current incarnation; a restart reuses the name
//!   (ractor releases it when the old incarnation reaches `Stopping`) but gets a new `ActorId`.
//! * **Restart types** ([`Restart`]): `Permanent` children are always restarted; `Transient`
//!   ones only after an abnormal exit — a panic or an `Err` from a handler (`ActorFailed`), or a
//!   kill — not after a graceful `stop`; `Temporary` ones never (and are not brought back when
//!   their siblings are restarted as a group).
//! * **Strategies** ([`Strategy`]): `OneForOne` restarts the exited child only; `RestForOne`
//!   stops the children started after it (last first) and restarts it and them in start order;
//!   `OneForAll` stops all others (last first) and restarts all in start order. A group restart
//!   also starts `Transient` siblings that had earlier stopped normally, as OTP does. Exits that
//!   the supervisor causes itself, and late events from replaced incarnations, are recognised by
//!   `ActorId` and ignored.
//! * **Intensity** ([`Intensity`], default 3 restarts in 5 s): if more than `max_restarts`
//!   restarts would happen within the sliding window `within`, the supervisor stops all its
//!   children (last first) and fails with [`SupervisorError::IntensityExceeded`]; its own
//!   supervisor sees `SupervisionEvent::ActorFailed`, so failures escalate up the tree. A group
//!   restart counts once; a restart whose start function fails is retried and counts again.
//! * **Shutdown**: stopping the supervisor stops its children gracefully in reverse start order,
//!   each given its [`ChildSpec::with_shutdown`] timeout (default 5 s) before being killed
//!   (ractor's own default would kill them all at once). Killing the supervisor kills the tree.
//! * **Introspection**: [`SupervisorMsg::WhichChildren`] (or [`which_children`]) returns each
//!   child's name, current `ActorCell`, restart type and restart count.
//!
//! The supervisor is itself an actor, so it nests: use [`ChildSpec::actor`] with [`Supervisor`]
//! and a [`SupervisorArgs`] to build a tree, or [`Supervisor::start_linked`] under your own actor.
//! All message types implement `ractor::Message` explicitly, so the crate works with ractor's
//! `cluster` feature enabled.
//!
//! # Example
//!
//! ```
//! use ractor::{Actor, ActorProcessingErr, ActorRef};
//! use supervisors::{ChildSpec, Restart, Strategy, Supervisor, SupervisorArgs, which_children};
//!
//! #[derive(Clone)]
//! struct Echo;
//!
//! #[derive(ractor_cluster_derive::RactorMessage)]
//! enum EchoMsg {}
//!
//! impl Actor for Echo {
//!     type Msg = EchoMsg;
//!     type State = ();
//!     type Arguments = ();
//!     async fn pre_start(&self, _me: ActorRef<EchoMsg>, _: ()) -> Result<(), ActorProcessingErr> {
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let args = SupervisorArgs::new(Strategy::RestForOne)
//!     .child(ChildSpec::actor("doc.store", Restart::Permanent, Echo, ()))
//!     .child(ChildSpec::actor("doc.api", Restart::Transient, Echo, ()));
//! let (sup, _handle) = Supervisor::start(Some("doc.root".into()), args).await.unwrap();
//! assert!(ActorRef::<EchoMsg>::where_is("doc.api").is_some());
//! let children = which_children(&sup, std::time::Duration::from_secs(1)).await.unwrap();
//! assert_eq!(children[0].name, "doc.store");
//! sup.stop_and_wait(None, None).await.unwrap(); // stops doc.api, then doc.store
//! # }
//! ```

#![warn(missing_docs)]

mod children;
mod error;
mod intensity;
mod spec;
mod supervisor;

pub use children::ChildInfo;
pub use error::SupervisorError;
pub use intensity::{Intensity, RestartWindow};
pub use spec::{ChildExit, ChildSpec, DEFAULT_SHUTDOWN, Restart, StartFuture};
pub use supervisor::{
    Strategy, Supervisor, SupervisorArgs, SupervisorMsg, SupervisorState, which_children,
};
