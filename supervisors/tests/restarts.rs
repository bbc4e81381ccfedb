//! Restart strategies and restart types.

mod common;

use common::*;
use supervisors::{Restart, Strategy, Supervisor, SupervisorArgs};

fn three(prefix: &str, strategy: Strategy, log: &Log) -> SupervisorArgs {
    SupervisorArgs::new(strategy)
        .child(worker(&format!("{prefix}.a"), Restart::Permanent, log))
        .child(worker(&format!("{prefix}.b"), Restart::Permanent, log))
        .child(worker(&format!("{prefix}.c"), Restart::Permanent, log))
}

async fn crashed_child_comes_back(prefix: &str, crash: WorkerMsg) {
    let log = new_log();
    let (sup, _) = Supervisor::start(None, three(prefix, Strategy::OneForOne, &log))
        .await
        .unwrap();
    let (a, b, c) = (
        format!("{prefix}.a"),
        format!("{prefix}.b"),
        format!("{prefix}.c"),
    );
    let (old_a, old_b, old_c) = (must_id(&a), must_id(&b), must_id(&c));

    send(&b, crash);
    wait_new_incarnation(&b, &old_b).await;

    assert_eq!(ping(&b).await, b, "restarted child serves messages");
    assert_eq!(must_id(&a), old_a, "one_for_one leaves siblings alone");
    assert_eq!(must_id(&c), old_c, "one_for_one leaves siblings alone");
    assert_eq!(restart_counts(&sup).await, vec![0, 1, 0]);
    sup.stop_and_wait(None, Some(DEADLINE)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_panicked_child_under_same_name() {
    crashed_child_comes_back("o4o_panic", WorkerMsg::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_child_that_returned_err() {
    crashed_child_comes_back("o4o_err", WorkerMsg::Fail).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_failed_and_later_children_only() {
    let log = new_log();
    let (sup, _) = Supervisor::start(None, three("r4o", Strategy::RestForOne, &log))
        .await
        .unwrap();
    let (old_a, old_b, old_c) = (must_id("r4o.a"), must_id("r4o.b"), must_id("r4o.c"));

    send("r4o.b", WorkerMsg::Fail);
    wait_new_incarnation("r4o.b", &old_b).await;
    wait_new_incarnation("r4o.c", &old_c).await;

    assert_eq!(
        must_id("r4o.a"),
        old_a,
        "earlier child keeps its incarnation"
    );
    // Only c was stopped by the supervisor (b crashed, so it has no post_stop).
    assert_eq!(logged(&log), vec!["r4o.c".to_owned()]);
    // The supervisor-caused stop of c must not count as another failure.
    assert_eq!(restart_counts(&sup).await, vec![0, 1, 1]);
    assert_eq!(ping("r4o.c").await, "r4o.c");
    sup.stop_and_wait(None, Some(DEADLINE)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_restarts_every_child() {
    let log = new_log();
    let (sup, _) = Supervisor::start(None, three("o4a", Strategy::OneForAll, &log))
        .await
        .unwrap();
    let (old_a, old_b, old_c) = (must_id("o4a.a"), must_id("o4a.b"), must_id("o4a.c"));

    send("o4a.b", WorkerMsg::Panic);
    wait_new_incarnation("o4a.a", &old_a).await;
    wait_new_incarnation("o4a.b", &old_b).await;
    wait_new_incarnation("o4a.c", &old_c).await;

    // Siblings are stopped last-started-first.
    assert_eq!(logged(&log), vec!["o4a.c".to_owned(), "o4a.a".to_owned()]);
    assert_eq!(restart_counts(&sup).await, vec![1, 1, 1]);
    assert_eq!(ping("o4a.a").await, "o4a.a");
    sup.stop_and_wait(None, Some(DEADLINE)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_child_is_restarted_only_after_abnormal_exit() {
    let log = new_log();
    let args = SupervisorArgs::new(Strategy::OneForOne)
        .child(worker("tr.fail", Restart::Transient, &log))
        .child(worker("tr.kill", Restart::Transient, &log))
        .child(worker("tr.stop", Restart::Transient, &log));
    let (sup, _) = Supervisor::start(None, args).await.unwrap();

    let old = must_id("tr.fail");
    send("tr.fail", WorkerMsg::Fail);
    wait_new_incarnation("tr.fail", &old).await;

    let old = must_id("tr.kill");
    ractor::registry::where_is("tr.kill").unwrap().kill();
    wait_new_incarnation("tr.kill", &old).await;

    send_and_wait_exit("tr.stop", WorkerMsg::Stop).await;
    let infos = children_of(&sup).await;
    assert!(
        infos[2].cell.is_none(),
        "normally stopped transient stays down"
    );
    assert_eq!(infos[2].restarts, 0);
    assert_eq!(id_of("tr.stop"), None);
    assert_eq!(restart_counts(&sup).await, vec![1, 1, 0]);
    sup.stop_and_wait(None, Some(DEADLINE)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_child_is_never_restarted() {
    let log = new_log();
    let args = SupervisorArgs::new(Strategy::OneForOne)
        .child(worker("tmp.fail", Restart::Temporary, &log))
        .child(worker("tmp.stop", Restart::Temporary, &log))
        .child(worker("tmp.keep", Restart::Permanent, &log));
    let (sup, _) = Supervisor::start(None, args).await.unwrap();
    let keep = must_id("tmp.keep");

    send_and_wait_exit("tmp.fail", WorkerMsg::Panic).await;
    send_and_wait_exit("tmp.stop", WorkerMsg::Stop).await;

    let infos = children_of(&sup).await;
    assert!(infos[0].cell.is_none() && infos[1].cell.is_none());
    assert_eq!(id_of("tmp.fail"), None);
    assert_eq!(id_of("tmp.stop"), None);
    assert_eq!(restart_counts(&sup).await, vec![0, 0, 0]);
    assert_eq!(must_id("tmp.keep"), keep);
    sup.stop_and_wait(None, Some(DEADLINE)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_restart_skips_temporary_siblings() {
    let log = new_log();
    let args = SupervisorArgs::new(Strategy::OneForAll)
        .child(worker("grp.tmp", Restart::Temporary, &log))
        .child(worker("grp.perm", Restart::Permanent, &log));
    let (sup, _) = Supervisor::start(None, args).await.unwrap();
    let old = must_id("grp.perm");

    send("grp.perm", WorkerMsg::Fail);
    wait_new_incarnation("grp.perm", &old).await;

    let infos = children_of(&sup).await;
    assert!(
        infos[0].cell.is_none(),
        "temporary sibling is stopped, not restarted"
    );
    assert_eq!(logged(&log), vec!["grp.tmp".to_owned()]);
    assert_eq!(id_of("grp.tmp"), None);
    sup.stop_and_wait(None, Some(DEADLINE)).await.unwrap();
}
