//! The controller on state it loads, without a master: what a new leader makes of
//! retries still backing off, runs recorded early and dependents; and how due
//! instants are planned (one catch-up after an outage, long outages in chunks,
//! ALLOW runs recorded early).

use std::net::SocketAddr;

use super::*;
use crate::config::CronConfig;

fn job(id: &str, parents: &[&str]) -> JobSpec {
    let dependencies: Vec<serde_json::Value> = parents
        .iter()
        .map(|p| serde_json::json!({"id": p}))
        .collect();
    let body = serde_json::json!({"id": id, "run": {"cmd": "true"}, "dependencies": dependencies});
    JobSpec::from_json(body.to_string().as_bytes())
        .expect("a valid job")
        .0
}

fn run(job_id: &str, id: &str, scheduled_at: DateTime<Utc>) -> JobRun {
    Controller::new_run(job_id, id.to_string(), scheduled_at, Trigger::Manual)
}

/// A controller over `loaded`; its store points at no master (nothing is dialed
/// until a call, and these tests make none).
fn controller(loaded: LoadedState) -> Controller {
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let config = CronConfig::new(vec!["127.0.0.1:1".to_string()], listen);
    let store =
        agora_sdk::StateStore::connect(config.masters.clone(), "cron").expect("a store client");
    let (snapshot, _) = watch::channel(Arc::new(Snapshot::default()));
    Controller::new(
        config,
        agora_sdk::discard_logger(),
        CronStore::new(store),
        snapshot,
        loaded,
        "127.0.0.1:9000".to_string(),
    )
}

#[tokio::test]
async fn a_new_leader_waits_out_retries_and_early_runs_and_indexes_dependents() {
    let now = Utc::now();
    let mut backing_off = run("a", "retrying", now - chrono::TimeDelta::seconds(10));
    backing_off.attempts = 3;
    backing_off.retry_not_before = Some(rfc3339(now + chrono::TimeDelta::seconds(30)));
    let mut waited = run("a", "waited", now - chrono::TimeDelta::seconds(10));
    waited.attempts = 1;
    waited.retry_not_before = Some(rfc3339(now - chrono::TimeDelta::seconds(1)));
    let early = run("b", "early", now + chrono::TimeDelta::seconds(60));
    let due = run("b", "due", now - chrono::TimeDelta::seconds(1));
    let loaded = LoadedState {
        jobs: vec![job("a", &[]), job("b", &[]), job("c", &["a", "b"])],
        runs: vec![backing_off, waited, early, due],
        ..LoadedState::default()
    };
    let mut controller = controller(loaded);

    // Only the runs whose time has come wait for offers.
    let mut waiting = controller.waiting_runs();
    waiting.sort();
    assert_eq!(
        waiting,
        [
            ("a".to_string(), "waited".to_string()),
            ("b".to_string(), "due".to_string())
        ]
    );
    assert!(
        controller
            .retry_at
            .contains_key(&("a".into(), "retrying".into()))
    );
    assert_eq!(controller.early.len(), 1);

    // The index follows jobs as they are replaced and removed.
    assert_eq!(controller.dependents, dependents_of(&controller.jobs));
    let before = controller.jobs.get("c").cloned();
    let after = job("c", &["b"]);
    controller.jobs.insert("c".into(), Arc::new(after.clone()));
    controller.index_dependencies("c", before.as_deref(), Some(&after));
    assert_eq!(controller.dependents, dependents_of(&controller.jobs));
    assert!(!controller.dependents.contains_key("a"));
    let removed = controller.jobs.remove("c");
    controller.index_dependencies("c", removed.as_deref(), None);
    assert_eq!(controller.dependents, dependents_of(&controller.jobs));
    assert!(controller.dependents.is_empty());
}

fn schedule(cron: &str, policy: &str) -> ScheduleSpec {
    let body = serde_json::json!({
        "id": "tick", "cron": cron, "timezone": "UTC", "concurrencyPolicy": policy,
        "startingDeadlineSeconds": 60,
    });
    ScheduleSpec::from_json(body.to_string().as_bytes()).expect("a valid schedule")
}

/// A controller with job `a` on `cron` under `policy`, its cursor at `cursor`.
fn scheduled(cron: &str, policy: &str, cursor: DateTime<Utc>) -> Controller {
    controller(LoadedState {
        jobs: vec![job("a", &[])],
        schedules: vec![("a".into(), schedule(cron, policy))],
        cursors: vec![(
            "a".into(),
            "tick".into(),
            Cursor {
                last: rfc3339(cursor),
            },
        )],
        ..LoadedState::default()
    })
}

#[tokio::test]
async fn after_an_outage_one_catch_up_runs_and_the_rest_is_recorded_missed() {
    let now = Utc::now();
    let every_second = "* * * * * *";

    // Ten seconds down: the latest instant runs, the nine before it are coalesced.
    let c = scheduled(every_second, "ALLOW", now - chrono::TimeDelta::seconds(10));
    let live = &c.schedules["a"]["tick"];
    let plan = c.plan_due("a", "tick", now).unwrap().expect("a plan");
    let run = plan.new_run.expect("one catch-up run");
    assert_eq!(parse_time(&run.scheduled_at), Some(plan.cursor));
    assert_eq!(plan.missed.len(), 9, "{:?}", plan.missed);
    assert!(plan.missed.iter().all(|m| m.reason.contains("coalesced")));
    assert!(plan.cursor > live.cursor && plan.cursor <= now);

    // Two thousand seconds down: the first 900 instants hold none of the latest,
    // so they make no run and one record of the stretch.
    let c = scheduled(
        every_second,
        "ALLOW",
        now - chrono::TimeDelta::seconds(2000),
    );
    let plan = c.plan_due("a", "tick", now).unwrap().expect("a plan");
    assert!(plan.new_run.is_none());
    assert_eq!(plan.missed.len(), 1);
    assert!(
        plan.missed[0].reason.starts_with("900 instants"),
        "{:?}",
        plan.missed
    );
}

#[tokio::test]
async fn allow_runs_are_recorded_before_their_instant_and_forbid_runs_are_not() {
    let now = Utc::now();
    // Nothing due since the cursor (this whole second), and the next instant, the
    // next whole second, is less than EARLY away.
    let cursor = chrono::Timelike::with_nanosecond(&now, 0).expect("a whole second");
    let c = scheduled("* * * * * *", "ALLOW", cursor);
    let plan = c
        .plan_due("a", "tick", now)
        .unwrap()
        .expect("an early plan");
    let run = plan.new_run.expect("a run recorded early");
    assert!(run.due_later_than(now).is_some(), "{run:?}");

    let c = scheduled("* * * * * *", "FORBID", cursor);
    assert!(c.plan_due("a", "tick", now).unwrap().is_none());
}
