//! What a new leader makes of the state it loads: retries still backing off, runs
//! recorded early, and the index of dependents.

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
    controller.jobs.insert("c".into(), after.clone());
    controller.index_dependencies("c", before.as_ref(), Some(&after));
    assert_eq!(controller.dependents, dependents_of(&controller.jobs));
    assert!(!controller.dependents.contains_key("a"));
    let removed = controller.jobs.remove("c");
    controller.index_dependencies("c", removed.as_ref(), None);
    assert_eq!(controller.dependents, dependents_of(&controller.jobs));
    assert!(controller.dependents.is_empty());
}
