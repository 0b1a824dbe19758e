//! `agora job add|run|list|show|history|rm` and `agora cron` through the binary,
//! against the cron instance of a real `agora dev`.

mod apps_support;
mod cron_support;

use agora_tests::kill_executor_sessions;
use apps_support::{agora, get_json, poll, start_dev, stop};
use cron_support::{active_runs, job, job_cli, job_cli_fails, wait_finished, wait_serving};
use serde_json::{Value, json};

/// The line of a table whose first column is `id`, if any.
fn row(table: &str, id: &str) -> Option<String> {
    table
        .lines()
        .find(|line| line.split_whitespace().next() == Some(id))
        .map(str::to_string)
}

/// How many RFC 3339 instants a line of a table shows.
fn instants_in(line: &str) -> usize {
    line.split_whitespace()
        .filter(|w| cron_support::seconds(w).is_some())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_job_adds_runs_lists_shows_and_removes_jobs() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dev = start_dev(dir.path(), &["--no-apps", "--agents", "1"]).await;
    let cron = dev.cron.clone().expect("the banner names the cron API");
    wait_serving(&cron).await;

    // A job with an inline schedule (yearly: it never comes due during the test).
    let mut nightly = job("cli.nightly", "echo hello", &[]);
    nightly["schedules"] =
        json!([{"id": "yearly", "cron": "0 0 1 1 *", "timezone": "Europe/Paris"}]);
    assert_eq!(
        job_cli(&cron, &["add", "-"], Some(&nightly.to_string()))
            .await
            .trim(),
        "cli.nightly"
    );
    let listing = job_cli(&cron, &["list"], None).await;
    let line = row(&listing, "cli.nightly").unwrap_or_else(|| panic!("{listing}"));
    assert!(
        line.contains("0 0 1 1 * (Europe/Paris)") && instants_in(&line) == 1,
        "schedule and next run: {line}"
    );

    // Run it now: the run id is printed, and the run shows in the history.
    let run_id = job_cli(&cron, &["run", "cli.nightly"], None).await;
    let run_id = run_id.trim();
    assert!(!run_id.is_empty());
    let (outcome, run) = wait_finished(&cron, "cli.nightly", run_id).await;
    assert_eq!(outcome, "SUCCESS", "{run}");
    let past = job_cli(&cron, &["history", "cli.nightly"], None).await;
    assert!(past.contains("1 succeeded"), "{past}");
    let task = run["tasks"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        past.lines()
            .any(|l| l.contains("SUCCESS") && (task.is_empty() || l.contains(&task))),
        "{past}"
    );
    let listing = job_cli(&cron, &["list"], None).await;
    let line = row(&listing, "cli.nightly").unwrap_or_else(|| panic!("{listing}"));
    assert_eq!(instants_in(&line), 2, "next run and last success: {line}");

    // What `show --json` printed is added again as an update, schedules included.
    let shown: Value =
        serde_json::from_str(&job_cli(&cron, &["show", "cli.nightly", "--json"], None).await)
            .expect("show --json prints JSON");
    assert_eq!(shown["run"]["cmd"], "echo hello", "{shown}");
    let mut saved = shown.clone();
    saved["run"]["cmd"] = "echo changed".into();
    saved["schedules"][0]["cron"] = "0 0 1 7 *".into();
    let file = dir.path().join("nightly.json");
    std::fs::write(&file, saved.to_string()).expect("write the definition");
    let file = file.to_string_lossy().to_string();
    let url = format!("http://{cron}");
    let update = agora(&["job", "add", &file, "--cron", &url], None).await;
    let stderr = String::from_utf8_lossy(&update.stderr);
    assert!(update.status.success(), "{stderr}");
    assert!(stderr.contains("updated job cli.nightly"), "{stderr}");
    let schedules = get_json(&cron, "/v1/jobs/cli.nightly/schedules")
        .await
        .expect("schedules");
    assert_eq!(schedules[0]["cron"], "0 0 1 7 *", "{schedules}");
    let summary = job_cli(&cron, &["show", "cli.nightly"], None).await;
    assert!(summary.contains("cmd           echo changed"), "{summary}");
    assert!(
        summary.contains("schedule      yearly: 0 0 1 7 *"),
        "{summary}"
    );

    // A PUT with `schedules` replaces the job's schedules: the ones it leaves out go.
    let mut replaced = job("cli.nightly", "echo changed", &[]);
    replaced["schedules"] = json!([{"id": "monthly", "cron": "0 0 1 * *"}]);
    cron_support::send_json(
        &cron,
        "PUT",
        "/v1/jobs/cli.nightly",
        Some(&replaced.to_string()),
    )
    .await;
    let schedules = get_json(&cron, "/v1/jobs/cli.nightly/schedules")
        .await
        .expect("schedules");
    let ids: Vec<&str> = schedules
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, ["monthly"], "{schedules}");

    // A job with a running run is removed only with --stop-runs.
    job_cli(
        &cron,
        &["add", "-"],
        Some(&job("cli.sleeper", "sleep 1000", &[]).to_string()),
    )
    .await;
    let sleeping = job_cli(&cron, &["run", "cli.sleeper"], None).await;
    poll("the sleeper to run", || async {
        let runs = active_runs(&cron, "cli.sleeper").await?;
        match runs.first() {
            Some(run) if run["status"] == "ACTIVE" => Ok(()),
            _ => Err(format!("{runs:?}")),
        }
    })
    .await;
    let shown = job_cli(&cron, &["show", "cli.sleeper"], None).await;
    assert!(
        shown.contains(sleeping.trim()) && shown.contains("TASK_RUNNING"),
        "{shown}"
    );
    let refused = job_cli_fails(&cron, &["rm", "cli.sleeper"], None).await;
    assert!(refused.contains("--stop-runs"), "{refused}");
    job_cli(&cron, &["rm", "cli.sleeper", "--stop-runs"], None).await;
    job_cli(&cron, &["rm", "cli.nightly"], None).await;
    let listing = job_cli(&cron, &["list"], None).await;
    assert!(row(&listing, "cli.nightly").is_none(), "{listing}");
    assert!(row(&listing, "cli.sleeper").is_none(), "{listing}");

    // Errors are readable.
    let missing = job_cli_fails(&cron, &["show", "cli.missing"], None).await;
    assert!(missing.contains("answered 404"), "{missing}");
    let mut invalid = job("cli.invalid", "true", &[]);
    invalid["run"]["mem"] = 1.into();
    let refused = job_cli_fails(&cron, &["add", "-"], Some(&invalid.to_string())).await;
    assert!(refused.contains("answered 422"), "{refused}");
    let unreachable = agora(&["job", "list", "--cron", "http://127.0.0.1:1"], None).await;
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        !unreachable.status.success() && stderr.contains("cannot reach the cron API"),
        "{stderr}"
    );

    // A run no agent can hold fails once its maxLaunchDelay has passed, rather
    // than waiting for ever.
    let mut huge = job("cli.huge", "true", &[]);
    huge["run"]["cpus"] = json!(1000);
    huge["run"]["maxLaunchDelay"] = json!(1);
    cron_support::send_json(&cron, "POST", "/v1/jobs", Some(&huge.to_string())).await;
    let run = cron_support::send_json(&cron, "POST", "/v1/jobs/cli.huge/runs", None).await;
    let run_id = run["id"].as_str().expect("a run id");
    let (outcome, run) = wait_finished(&cron, "cli.huge", run_id).await;
    assert_eq!(outcome, "FAILED", "{run}");
    assert_eq!(run["tasks"], json!([]), "never launched: {run}");

    stop(dev.child, "agora dev").await;
    kill_executor_sessions(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_cron_refuses_bad_flags_before_starting() {
    for (flags, expected) in [
        (&["--master", " "][..], "--master names no master"),
        (
            &["--leader-lease", "0s"][..],
            "--leader-lease must be positive",
        ),
        (
            &["--history-count", "0"][..],
            "--history-count must be positive",
        ),
    ] {
        let mut args = vec!["cron", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let output = agora(&args, None).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
}
