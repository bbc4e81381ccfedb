//! Shared test actors and wait helpers for the supervisor integration tests.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster_derive::RactorMessage;
use supervisors::{ChildInfo, ChildSpec, Restart, SupervisorMsg, which_children};

/// Names of workers in the order their `post_stop` ran.
pub type Log = Arc<Mutex<Vec<String>>>;

/// Upper bound for every wait in these tests.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// A worker that answers pings with its name and crashes or stops on request.
#[derive(Clone, Default)]
pub struct Worker {
    /// Make `pre_start` fail.
    pub fail_start: bool,
}

/// Messages for [`Worker`].
#[derive(RactorMessage)]
pub enum WorkerMsg {
    /// Reply with the worker's registered name.
    Ping(RpcReplyPort<String>),
    /// Panic inside `handle`.
    Panic,
    /// Return `Err` from `handle`.
    Fail,
    /// Stop gracefully (a normal exit).
    Stop,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = (String, Log);
    type Arguments = Log;

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        log: Log,
    ) -> Result<Self::State, ActorProcessingErr> {
        if self.fail_start {
            return Err("worker refuses to start".into());
        }
        Ok((myself.get_name().unwrap_or_default(), log))
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Ping(reply) => {
                let _ = reply.send(state.0.clone());
            }
            WorkerMsg::Panic => panic!("worker {} panics on request", state.0),
            WorkerMsg::Fail => return Err(format!("worker {} fails on request", state.0).into()),
            WorkerMsg::Stop => myself.stop(None),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WorkerMsg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.1.lock().unwrap().push(state.0.clone());
        Ok(())
    }
}

/// A fresh, empty stop log.
pub fn new_log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

/// Snapshot of a stop log.
pub fn logged(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// A worker child spec.
pub fn worker(name: &str, restart: Restart, log: &Log) -> ChildSpec {
    ChildSpec::actor(name, restart, Worker::default(), log.clone())
}

/// Current registered incarnation of `name`.
pub fn id_of(name: &str) -> Option<ActorId> {
    ractor::registry::where_is(name).map(|c| c.get_id())
}

/// Like [`id_of`] but the actor must be registered.
pub fn must_id(name: &str) -> ActorId {
    id_of(name).unwrap_or_else(|| panic!("{name} is not registered"))
}

/// Sends `msg` to the worker currently registered as `name`.
pub fn send(name: &str, msg: WorkerMsg) {
    let worker =
        ActorRef::<WorkerMsg>::where_is(name).unwrap_or_else(|| panic!("{name} is not registered"));
    worker.cast(msg).expect("cast to worker");
}

/// Pings the worker registered as `name` and returns its answer.
pub async fn ping(name: &str) -> String {
    let worker =
        ActorRef::<WorkerMsg>::where_is(name).unwrap_or_else(|| panic!("{name} is not registered"));
    ractor::call_t!(worker, WorkerMsg::Ping, 2000).expect("ping")
}

/// Polls `cond` until it holds, failing the test after [`DEADLINE`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `name` is registered with an id different from `old`, and returns it.
pub async fn wait_new_incarnation(name: &str, old: &ActorId) -> ActorId {
    wait_until(&format!("new incarnation of {name}"), || {
        id_of(name).is_some_and(|id| id != *old)
    })
    .await;
    must_id(name)
}

/// The supervisor's children, by RPC.
pub async fn children_of(sup: &ActorRef<SupervisorMsg>) -> Vec<ChildInfo> {
    which_children(sup, DEADLINE).await.expect("which_children")
}

/// Restart counts of the supervisor's children, in start order.
pub async fn restart_counts(sup: &ActorRef<SupervisorMsg>) -> Vec<u32> {
    children_of(sup).await.iter().map(|c| c.restarts).collect()
}

/// Sends `msg` to worker `name` and waits until that incarnation has fully stopped, by which
/// point its exit event is queued at the supervisor (ahead of any later user message).
pub async fn send_and_wait_exit(name: &str, msg: WorkerMsg) {
    let cell =
        ractor::registry::where_is(name).unwrap_or_else(|| panic!("{name} is not registered"));
    send(name, msg);
    cell.wait(Some(DEADLINE)).await.expect("worker exits");
}
