//! Start-up, shutdown order, restart intensity and escalation through a supervision tree.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use ractor_cluster_derive::RactorMessage;
use supervisors::{
    ChildSpec, Intensity, Restart, Strategy, Supervisor, SupervisorArgs, SupervisorError,
};

/// What a plain user actor saw from the supervisor it spawned.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Failed { id: ActorId, intensity: bool },
    Terminated { id: ActorId },
}

/// A user's own actor that spawns one of our supervisors linked beneath it.
struct Parent;

#[derive(RactorMessage)]
enum ParentMsg {}

impl Actor for Parent {
    type Msg = ParentMsg;
    type State = Arc<Mutex<Vec<Seen>>>;
    type Arguments = (SupervisorArgs, Arc<Mutex<Vec<Seen>>>);

    async fn pre_start(
        &self,
        myself: ActorRef<ParentMsg>,
        (args, seen): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Supervisor::start_linked(Some("esc.sup".into()), args, myself.get_cell()).await?;
        Ok(seen)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ParentMsg>,
        evt: SupervisionEvent,
        seen: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let entry = match evt {
            SupervisionEvent::ActorFailed(cell, err) => Seen::Failed {
                id: cell.get_id(),
                intensity: matches!(
                    err.downcast_ref::<SupervisorError>(),
                    Some(SupervisorError::IntensityExceeded { child, max_restarts: 2, .. })
                        if child == "esc.w2"
                ),
            },
            SupervisionEvent::ActorTerminated(cell, _, _) => Seen::Terminated { id: cell.get_id() },
            _ => return Ok(()),
        };
        seen.lock().unwrap().push(entry);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_intensity_fails_supervisor_towards_its_parent() {
    let log = new_log();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let args = SupervisorArgs::new(Strategy::OneForOne)
        .with_intensity(Intensity::new(2, Duration::from_secs(30)))
        .child(worker("esc.w1", Restart::Permanent, &log))
        .child(worker("esc.w2", Restart::Permanent, &log));
    let (parent, _) = Actor::spawn(None, Parent, (args, seen.clone()))
        .await
        .unwrap();
    let sup_id = must_id("esc.sup");

    // Two restarts are within the limit...
    for _ in 0..2 {
        let old = must_id("esc.w2");
        send("esc.w2", WorkerMsg::Fail);
        wait_new_incarnation("esc.w2", &old).await;
    }
    assert_eq!(must_id("esc.sup"), sup_id);
    // ...the third is one too many.
    send("esc.w2", WorkerMsg::Fail);
    wait_until("parent sees the supervisor fail", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;

    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![Seen::Failed {
            id: sup_id,
            intensity: true
        }]
    );
    assert_eq!(id_of("esc.sup"), None);
    assert_eq!(
        id_of("esc.w1"),
        None,
        "children are stopped with the supervisor"
    );
    assert_eq!(id_of("esc.w2"), None);
    assert_eq!(
        logged(&log),
        vec!["esc.w1".to_owned()],
        "w1 was stopped gracefully"
    );
    parent.stop_and_wait(None, Some(DEADLINE)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_supervisor_failure_escalates_and_parent_restarts_it() {
    let log = new_log();
    let inner = SupervisorArgs::new(Strategy::OneForOne)
        .with_intensity(Intensity::new(0, Duration::from_secs(30)))
        .child(worker("nest.x", Restart::Permanent, &log))
        .child(worker("nest.y", Restart::Permanent, &log));
    let outer = SupervisorArgs::new(Strategy::OneForOne)
        .child(worker("nest.a", Restart::Permanent, &log))
        .child(ChildSpec::actor(
            "nest.inner",
            Restart::Permanent,
            Supervisor,
            inner,
        ))
        .child(worker("nest.c", Restart::Permanent, &log));
    let (sup, _) = Supervisor::start(Some("nest.outer".into()), outer)
        .await
        .unwrap();
    let (a, c) = (must_id("nest.a"), must_id("nest.c"));
    let (inner_id, x, y) = (must_id("nest.inner"), must_id("nest.x"), must_id("nest.y"));

    // Intensity 0: the inner supervisor gives up at once and the outer one restarts it.
    send("nest.x", WorkerMsg::Panic);
    wait_new_incarnation("nest.inner", &inner_id).await;
    wait_new_incarnation("nest.x", &x).await;
    wait_new_incarnation("nest.y", &y).await;

    assert_eq!(logged(&log), vec!["nest.y".to_owned()]);
    assert_eq!((must_id("nest.a"), must_id("nest.c")), (a, c));
    assert_eq!(restart_counts(&sup).await, vec![0, 1, 0]);
    assert_eq!(ping("nest.x").await, "nest.x");

    // Graceful shutdown walks the tree last-started-first, depth first.
    log.lock().unwrap().clear();
    sup.stop_and_wait(None, Some(DEADLINE)).await.unwrap();
    assert_eq!(logged(&log), vec!["nest.c", "nest.y", "nest.x", "nest.a"]);
    for name in [
        "nest.outer",
        "nest.inner",
        "nest.a",
        "nest.x",
        "nest.y",
        "nest.c",
    ] {
        assert_eq!(id_of(name), None, "{name} is gone");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_supervisor_stops_children_in_reverse_start_order() {
    let log = new_log();
    let args = SupervisorArgs::new(Strategy::OneForOne)
        .child(worker("down.a", Restart::Permanent, &log))
        .child(worker("down.b", Restart::Transient, &log))
        .child(worker("down.c", Restart::Temporary, &log));
    let (sup, _) = Supervisor::start(None, args).await.unwrap();

    sup.stop_and_wait(None, Some(DEADLINE)).await.unwrap();

    assert_eq!(logged(&log), vec!["down.c", "down.b", "down.a"]);
    for name in ["down.a", "down.b", "down.c"] {
        assert_eq!(id_of(name), None);
    }
}

fn startup_error(err: SpawnErr) -> SupervisorError {
    match err {
        SpawnErr::StartupFailed(inner) => *inner
            .downcast::<SupervisorError>()
            .expect("startup error is a SupervisorError"),
        other => panic!("unexpected spawn error {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_start_failure_fails_supervisor_start_and_unwinds() {
    let log = new_log();
    let args = SupervisorArgs::new(Strategy::OneForOne)
        .child(worker("sf.a", Restart::Permanent, &log))
        .child(worker("sf.b", Restart::Permanent, &log))
        .child(ChildSpec::actor(
            "sf.bad",
            Restart::Permanent,
            Worker { fail_start: true },
            log.clone(),
        ))
        .child(worker("sf.d", Restart::Permanent, &log));

    let err = startup_error(
        Supervisor::start(Some("sf.sup".into()), args)
            .await
            .unwrap_err(),
    );

    assert!(
        matches!(&err, SupervisorError::ChildStartFailed { child, .. } if child == "sf.bad"),
        "{err}"
    );
    assert_eq!(
        logged(&log),
        vec!["sf.b", "sf.a"],
        "started children stopped, last first"
    );
    for name in ["sf.sup", "sf.a", "sf.b", "sf.bad", "sf.d"] {
        assert_eq!(id_of(name), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_child_specs_are_rejected() {
    let log = new_log();

    let dup = SupervisorArgs::default()
        .child(worker("bad.dup", Restart::Permanent, &log))
        .child(worker("bad.dup", Restart::Permanent, &log));
    let err = startup_error(Supervisor::start(None, dup).await.unwrap_err());
    assert!(matches!(&err, SupervisorError::DuplicateChildName(n) if n == "bad.dup"));

    let l = log.clone();
    let renamed = SupervisorArgs::default().child(ChildSpec::new(
        "bad.name",
        Restart::Permanent,
        move |_name, sup| {
            let l = l.clone();
            async move {
                Actor::spawn_linked(Some("bad.other".into()), Worker::default(), l, sup)
                    .await
                    .map(|(r, _)| r.get_cell())
            }
        },
    ));
    let err = startup_error(Supervisor::start(None, renamed).await.unwrap_err());
    assert!(
        matches!(&err, SupervisorError::ChildNameMismatch { child, .. } if child == "bad.name")
    );

    let l = log.clone();
    let unlinked = SupervisorArgs::default().child(ChildSpec::new(
        "bad.unlinked",
        Restart::Permanent,
        move |name, _sup| {
            let l = l.clone();
            async move {
                Actor::spawn(Some(name), Worker::default(), l)
                    .await
                    .map(|(r, _)| r.get_cell())
            }
        },
    ));
    let err = startup_error(Supervisor::start(None, unlinked).await.unwrap_err());
    assert!(matches!(&err, SupervisorError::ChildNotLinked { child } if child == "bad.unlinked"));

    wait_until("rejected children are gone", || {
        id_of("bad.other").is_none() && id_of("bad.unlinked").is_none()
    })
    .await;
}
