//! Cron across process boundaries: `agora cron` as a process of its own beside
//! `agora dev --no-cron` (or a group of `agora master` processes and `agora agent`s),
//! so that the cron process, or the leading master, can be SIGKILLed mid-schedule.
//!
//! The promise checked: a job due every 2 s has every instant between its first and
//! its last run exactly once in its history — run, or recorded as missed when it
//! came due during the outage and was coalesced into the one catch-up run after it —
//! never skipped silently, never run twice. And dependencies: a child runs only after its parents succeeded.

mod apps_support;
mod cron_support;

use agora_tests::{MasterGroup, kill_executor_sessions, node_bin};
use apps_support::{kill, poll, start_agent, start_dev, stop};
use cron_support::{
    STARTING_DEADLINE, assert_every_instant_once, coalesced_in_outage, finished_runs, history, job,
    job_cli, job_cli_fails, now, seconds, start_cron, stop_ticking, ticking_job, wait_finished,
    wait_instants_after,
};
use serde_json::Value;

/// Every 2 s (six fields: seconds first).
const EVERY_2S: &str = "*/2 * * * * *";
/// Every second.
const EVERY_1S: &str = "* * * * * *";
/// Instants checked on each side of an outage.
const INSTANTS: usize = 3;

/// The instant (seconds since the epoch) a field of a run holds; `completedAt` is
/// `finishedAt` in Metronome's history.
fn at(run: &Value, field: &str) -> f64 {
    let value = match (&run[field], field) {
        (Value::Null, "completedAt") => &run["finishedAt"],
        (value, _) => value,
    };
    value
        .as_str()
        .and_then(seconds)
        .unwrap_or_else(|| panic!("{field} of {run}"))
}

/// The only successful run of a job's history.
fn only_success(history: &Value) -> Value {
    let runs = finished_runs(history);
    assert_eq!(runs.len(), 1, "exactly one run: {history}");
    let (outcome, run) = runs.into_iter().next().expect("one run");
    assert_eq!(outcome, "SUCCESS", "{history}");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cron_process_neither_skips_nor_repeats_an_instant() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dev = start_dev(dir.path(), &["--no-apps", "--no-cron", "--agents", "2"]).await;
    let (first, cron) = start_cron(&dev.master).await;
    let definition = ticking_job("tick", EVERY_2S).to_string();
    assert_eq!(
        job_cli(&cron, &["add", "-"], Some(&definition))
            .await
            .trim(),
        "tick"
    );
    wait_instants_after(&cron, "tick", 0.0, INSTANTS).await;

    kill(first, "the cron process").await;
    let killed_at = now();
    let (second, cron) = start_cron(&dev.master).await;
    let serving_at = now();
    println!("the cron API was down for {:.1} s", serving_at - killed_at);
    wait_instants_after(&cron, "tick", serving_at, INSTANTS).await;
    let history = stop_ticking(&cron, "tick").await;
    // Within the 60 s starting deadline, the instants due while no cron process led
    // are caught up by one run: only those before it may be recorded as missed.
    assert!(serving_at - killed_at < STARTING_DEADLINE as f64);
    let instants = assert_every_instant_once(&history, 2, coalesced_in_outage(&history, killed_at));
    assert!(
        instants.iter().any(|at| (*at as f64) < killed_at)
            && instants.iter().any(|at| (*at as f64) > serving_at),
        "instants on both sides of the outage: {instants:?}"
    );

    stop(second, "agora cron").await;
    stop(dev.child, "agora dev").await;
    kill_executor_sessions(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leading_master_neither_skips_nor_repeats_an_instant() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut group = MasterGroup::start(node_bin!()).await;
    let masters = group.masters_flag();
    let agents: Vec<_> = ["host-a", "host-b"]
        .into_iter()
        .enumerate()
        .map(|(i, host)| {
            let first = 31000 + 200 * i;
            let ports = format!("{first}-{}", first + 199);
            start_agent(&masters, host, &dir.path().join(host), &ports)
        })
        .collect();
    let (cron_process, cron) = start_cron(&masters).await;
    let definition = ticking_job("tick", EVERY_2S).to_string();
    job_cli(&cron, &["add", "-"], Some(&definition)).await;
    wait_instants_after(&cron, "tick", 0.0, INSTANTS).await;

    let killed = group.kill_leader().await;
    let killed_at = now();
    let elected = group.wait_for_leader().await;
    assert_ne!(killed, elected);
    println!(
        "master {killed} killed; master {elected} leads {:.1} s later",
        now() - killed_at
    );
    // The runs due while no master led start late, not never; and those after.
    wait_instants_after(&cron, "tick", now(), INSTANTS).await;
    let history = stop_ticking(&cron, "tick").await;
    // No run could be recorded while no master led: those instants are caught up
    // by one run, and only those before it may be recorded as missed.
    let instants = assert_every_instant_once(&history, 2, coalesced_in_outage(&history, killed_at));
    assert!(
        instants.iter().any(|at| (*at as f64) < killed_at)
            && instants.iter().any(|at| (*at as f64) > killed_at + 2.0),
        "instants on both sides of the failover: {instants:?}"
    );

    stop(cron_process, "agora cron").await;
    for agent in agents {
        stop(agent, "agora agent").await;
    }
    group.kill_all();
    kill_executor_sessions(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_runs_only_after_its_parents_succeeded() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dev = start_dev(dir.path(), &["--no-apps", "--no-cron", "--agents", "2"]).await;
    let (cron_process, cron) = start_cron(&dev.master).await;

    // a -> b -> c: c runs after b, which runs after a.
    for (id, parents) in [
        ("chain-a", &[][..]),
        ("chain-b", &["chain-a"][..]),
        ("chain-c", &["chain-b"][..]),
    ] {
        let definition = job(id, "true", parents).to_string();
        job_cli(&cron, &["add", "-"], Some(&definition)).await;
    }
    let listing = job_cli(&cron, &["list"], None).await;
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("chain-c ") && l.contains("after chain-b")),
        "{listing}"
    );
    // A cycle is refused: a depending on c closes a -> b -> c -> a.
    let cycle = job("chain-a", "true", &["chain-c"]).to_string();
    let refused = job_cli_fails(&cron, &["add", "-"], Some(&cycle)).await;
    assert!(refused.contains("answered 422"), "{refused}");
    let kept = apps_support::get_json(&cron, "/v1/jobs/chain-a")
        .await
        .expect("chain-a");
    assert!(kept.get("dependencies").is_none(), "unchanged: {kept}");

    let run_a = job_cli(&cron, &["run", "chain-a"], None).await;
    let (outcome, a) = wait_finished(&cron, "chain-a", run_a.trim()).await;
    assert_eq!(outcome, "SUCCESS", "{a}");
    let c_history = poll("chain-c to succeed", || async {
        let history = history(&cron, "chain-c").await?;
        match history["successCount"].as_u64() {
            Some(1) => Ok(history),
            _ => Err(history.to_string()),
        }
    })
    .await;
    let b = only_success(&history(&cron, "chain-b").await.expect("b's history"));
    let c = only_success(&c_history);
    assert!(
        at(&b, "createdAt") >= at(&a, "completedAt"),
        "b after a: {a} {b}"
    );
    assert!(
        at(&c, "createdAt") >= at(&b, "completedAt"),
        "c after b: {b} {c}"
    );
    let shown = job_cli(&cron, &["show", "chain-c"], None).await;
    assert!(
        shown.contains("depends on    chain-b: succeeded at"),
        "{shown}"
    );
    assert!(!shown.contains("waiting for"), "{shown}");

    // A failed parent blocks its child, and says so.
    job_cli(
        &cron,
        &["add", "-"],
        Some(&job("flaky", "exit 3", &[]).to_string()),
    )
    .await;
    job_cli(
        &cron,
        &["add", "-"],
        Some(&job("after-flaky", "true", &["flaky"]).to_string()),
    )
    .await;
    let run = job_cli(&cron, &["run", "flaky"], None).await;
    let (outcome, failed) = wait_finished(&cron, "flaky", run.trim()).await;
    assert_eq!(outcome, "FAILED", "{failed}");
    let exit_codes: Vec<&Value> = failed["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("exitCode"))
        .collect();
    assert!(
        exit_codes.iter().all(|code| **code == 3),
        "exit 3: {failed}"
    );
    let child = history(&cron, "after-flaky").await.expect("a history");
    assert!(finished_runs(&child).is_empty(), "{child}");
    let active = cron_support::active_runs(&cron, "after-flaky")
        .await
        .expect("runs");
    assert!(active.is_empty(), "the child does not run: {active:?}");
    let shown = job_cli(&cron, &["show", "after-flaky"], None).await;
    assert!(
        shown.contains("depends on    flaky: FAILED at") && shown.contains("waiting for   flaky"),
        "{shown}"
    );
    let past = job_cli(&cron, &["history", "flaky"], None).await;
    assert!(
        past.contains("0 succeeded") && past.contains("1 failed") && past.contains("FAILED"),
        "{past}"
    );
    // Once the parent succeeds, the child runs: once.
    job_cli(
        &cron,
        &["add", "-"],
        Some(&job("flaky", "true", &[]).to_string()),
    )
    .await;
    let run = job_cli(&cron, &["run", "flaky"], None).await;
    assert_eq!(wait_finished(&cron, "flaky", run.trim()).await.0, "SUCCESS");
    let child = poll("after-flaky to run", || async {
        let history = history(&cron, "after-flaky").await?;
        if finished_runs(&history).is_empty() {
            Err(history.to_string())
        } else {
            Ok(history)
        }
    })
    .await;
    only_success(&child);

    stop(cron_process, "agora cron").await;
    stop(dev.child, "agora dev").await;
    kill_executor_sessions(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_instants_replace_stops_runs_and_a_disabled_schedule_never_fires() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dev = start_dev(dir.path(), &["--no-apps", "--no-cron", "--agents", "1"]).await;
    let (cron_process, cron) = start_cron(&dev.master).await;
    let with_schedule = |mut job: Value, every: &str, policy: &str, enabled: bool| {
        job["schedules"] = serde_json::json!([{
            "id": "tick", "cron": every, "timezone": "UTC", "concurrencyPolicy": policy,
            "enabled": enabled, "startingDeadlineSeconds": STARTING_DEADLINE,
        }]);
        job
    };
    // Runs of 3 s due every second: FORBID lets none start while one is active.
    let forbid = with_schedule(job("forbid", "sleep 3", &[]), EVERY_1S, "FORBID", true);
    // Runs that never end on their own, due every 2 s: REPLACE stops each for the next.
    let replace = with_schedule(job("replace", "sleep 1000", &[]), EVERY_2S, "REPLACE", true);
    let off = with_schedule(job("off", "true", &[]), EVERY_1S, "ALLOW", false);
    for definition in [&forbid, &replace, &off] {
        job_cli(&cron, &["add", "-"], Some(&definition.to_string())).await;
    }

    let forbidden = poll(
        "FORBID to skip instants while its runs are active",
        || async {
            let history = history(&cron, "forbid").await?;
            let skipped = history["missed"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["reason"].as_str().is_some_and(|r| r.contains("FORBID")))
                .count();
            let succeeded = history["successfulFinishedRuns"]
                .as_array()
                .map_or(0, Vec::len);
            if skipped >= 2 && succeeded >= 2 {
                Ok(history)
            } else {
                Err(history.to_string())
            }
        },
    )
    .await;
    // Never two at once: each run was created after the one before it finished.
    let mut spans: Vec<(f64, f64)> = finished_runs(&forbidden)
        .iter()
        .map(|(_, run)| (at(run, "createdAt"), at(run, "completedAt")))
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlapping runs: {forbidden}");
    }

    poll("REPLACE to stop runs for newer ones", || async {
        let history = history(&cron, "replace").await?;
        let replaced = history["failedFinishedRuns"].as_array().map_or(0, Vec::len);
        if replaced >= 2 {
            Ok(())
        } else {
            Err(history.to_string())
        }
    })
    .await;

    // Seconds of due instants later, the disabled schedule has neither run nor
    // recorded anything.
    let off = history(&cron, "off").await.expect("a history");
    assert!(
        finished_runs(&off).is_empty() && off["missed"] == serde_json::json!([]),
        "{off}"
    );
    let active = cron_support::active_runs(&cron, "off")
        .await
        .expect("active runs");
    assert!(active.is_empty(), "{active:?}");

    stop(cron_process, "agora cron").await;
    stop(dev.child, "agora dev").await;
    kill_executor_sessions(dir.path());
}
