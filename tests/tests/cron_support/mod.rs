//! What the cron tests share: `agora cron` processes and the address they print, the
//! `agora job` CLI, plain HTTP requests to the cron API (Metronome's `/v1`), and the
//! views of a job's history the scenarios check — above all, that every instant a
//! schedule was due appears exactly once.
//!
//! A test crate including this module includes `apps_support` too (`agora dev`,
//! processes, polling).

// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agora_tests::{node_bin, read_until, within};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::apps_support::{agora, get_json, log_sink, poll};

/// The leader lease of the cron processes tests start: a restarted instance takes
/// over within it.
pub const LEASE: &str = "2s";

/// Starts `agora cron` against `masters` (comma-separated) on an OS-chosen port and
/// waits until it serves (leads); returns it and its `host:port`.
pub async fn start_cron(masters: &str) -> (Child, String) {
    let (logs, level) = log_sink();
    let mut child = Command::new(node_bin!())
        .args(["cron", "--master", masters, "--listen", "127.0.0.1:0"])
        .args(["--leader-lease", LEASE, "--log-level", level])
        .stdout(Stdio::piped())
        .stderr(logs)
        .kill_on_drop(true)
        .spawn()
        .expect("agora cron starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let address = read_until(stdout, "cron listening on").await;
    wait_serving(&address).await;
    (child, address)
}

/// Waits for the cron API at `cron` to serve (503 until an instance leads: at start,
/// and while a killed leader's lease lapses).
pub async fn wait_serving(cron: &str) {
    poll(&format!("the cron API at {cron} to serve"), || async {
        get_json(cron, "/v1/jobs").await.map(|_| ())
    })
    .await
}

/// One HTTP/1.1 request with an optional JSON body; returns the status and body.
pub async fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let body = body.unwrap_or_default();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Accept: application/json\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = within(&format!("an answer to {method} {path}"), exchange)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"));
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        agora_tests::dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

/// [`request`], asserting a 2xx answer; returns its JSON (`null` when empty).
pub async fn send_json(addr: &str, method: &str, path: &str, body: Option<&str>) -> Value {
    let (status, text) = request(addr, method, path, body).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
    if text.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
}

/// `agora job <args> --cron http://<cron>` (with `stdin`), whatever its outcome.
pub async fn job_cli_output(cron: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let url = format!("http://{cron}");
    let mut full = vec!["job"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--cron", &url]);
    agora(&full, stdin).await
}

/// `agora job <args>`, asserting it succeeds; returns stdout.
pub async fn job_cli(cron: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = job_cli_output(cron, args, stdin).await;
    assert!(
        output.status.success(),
        "agora job {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// `agora job <args>`, asserting it fails; returns stderr.
pub async fn job_cli_fails(cron: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = job_cli_output(cron, args, stdin).await;
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        !output.status.success(),
        "agora job {args:?} should fail: {}{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// A job running `cmd` with small resources, depending on `parents`.
pub fn job(id: &str, cmd: &str, parents: &[&str]) -> Value {
    let mut job = json!({"id": id, "run": {"cmd": cmd, "cpus": 0.05, "mem": 32}});
    if !parents.is_empty() {
        let dependencies: Vec<Value> = parents.iter().map(|p| json!({"id": p})).collect();
        job["dependencies"] = Value::Array(dependencies);
    }
    job
}

/// A job running `true` on the six-field cron `every` (seconds first), whose due
/// instants may start up to 60 s late (Metronome's smallest starting deadline).
pub fn ticking_job(id: &str, every: &str) -> Value {
    let mut job = job(id, "true", &[]);
    job["schedules"] = json!([{
        "id": "tick", "cron": every, "timezone": "UTC", "startingDeadlineSeconds": STARTING_DEADLINE,
    }]);
    job
}

/// The starting deadline of [`ticking_job`]'s schedule, in seconds.
pub const STARTING_DEADLINE: i64 = 60;

/// The job's `embed=history`.
pub async fn history(cron: &str, id: &str) -> Result<Value, String> {
    let job = get_json(cron, &format!("/v1/jobs/{id}?embed=history")).await?;
    job.get("history")
        .filter(|h| h.is_object())
        .cloned()
        .ok_or_else(|| format!("no history in {job}"))
}

/// The job's active runs (`/v1/jobs/{id}/runs`).
pub async fn active_runs(cron: &str, id: &str) -> Result<Vec<Value>, String> {
    let runs = get_json(cron, &format!("/v1/jobs/{id}/runs")).await?;
    runs.as_array()
        .cloned()
        .ok_or_else(|| format!("runs are not a list: {runs}"))
}

/// The finished runs of a history with their outcome, `SUCCESS` or `FAILED`.
pub fn finished_runs(history: &Value) -> Vec<(&'static str, Value)> {
    let mut runs = Vec::new();
    for (outcome, field) in [
        ("SUCCESS", "successfulFinishedRuns"),
        ("FAILED", "failedFinishedRuns"),
    ] {
        for run in history[field].as_array().into_iter().flatten() {
            runs.push((outcome, run.clone()));
        }
    }
    runs
}

/// Waits until run `run_id` of job `id` is in its history; returns its outcome and
/// JSON.
pub async fn wait_finished(cron: &str, id: &str, run_id: &str) -> (&'static str, Value) {
    poll(&format!("run {run_id} of {id} to finish"), || async {
        let history = history(cron, id).await?;
        finished_runs(&history)
            .into_iter()
            .find(|(_, run)| run["id"] == run_id)
            .ok_or_else(|| history.to_string())
    })
    .await
}

/// Waits until job `id` has no active run; returns its history then.
pub async fn wait_idle(cron: &str, id: &str) -> Value {
    poll(&format!("{id} to have no active run"), || async {
        let active = active_runs(cron, id).await?;
        if !active.is_empty() {
            return Err(format!("active: {active:?}"));
        }
        history(cron, id).await
    })
    .await
}

/// Seconds since the epoch now.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Seconds since the epoch of an RFC 3339 instant (`2024-05-01T12:00:02.000Z`,
/// `...+02:00`, or Metronome's `...+0200`), or `None` when it is not one.
pub fn seconds(instant: &str) -> Option<f64> {
    let (date, time) = instant.split_once(['T', 't', ' '])?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: i64 = date_parts.next()?.parse().ok()?;
    let day: i64 = date_parts.next()?.parse().ok()?;
    let (clock, offset) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (clock, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        // `+02:00`, or `+0200` as Metronome writes it.
        let zone = &zone[1..];
        let (hours, minutes) = zone
            .split_once(':')
            .or_else(|| (zone.len() == 4 && zone.is_char_boundary(2)).then(|| zone.split_at(2)))?;
        let offset = hours.parse::<i64>().ok()? * 3600 + minutes.parse::<i64>().ok()? * 60;
        (clock, sign * offset)
    };
    let mut clock_parts = clock.splitn(3, ':');
    let hour: i64 = clock_parts.next()?.parse().ok()?;
    let minute: i64 = clock_parts.next()?.parse().ok()?;
    let second: f64 = clock_parts.next()?.parse().ok()?;
    // Days from the civil date (proleptic Gregorian), as in H. Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3600 + minute * 60 - offset) as f64 + second)
}

/// The instant a run or missed record was due, in whole seconds.
fn due(record: &Value) -> i64 {
    let at = record["scheduledAt"]
        .as_str()
        .unwrap_or_else(|| panic!("a scheduled run names its scheduledAt: {record}"));
    let at = seconds(at).unwrap_or_else(|| panic!("{at} is not RFC 3339"));
    at.round() as i64
}

/// The instants of a history: each due instant with what became of it (`SUCCESS`,
/// `FAILED` or `MISSED`), in order; an instant twice is there twice.
pub fn instants(history: &Value) -> Vec<(i64, &'static str)> {
    let mut all: Vec<(i64, &'static str)> = finished_runs(history)
        .iter()
        .map(|(outcome, run)| (due(run), *outcome))
        .collect();
    for missed in history["missed"].as_array().into_iter().flatten() {
        all.push((due(missed), "MISSED"));
    }
    all.sort();
    all
}

/// Asserts that every `step`-second instant from the history's first to its last
/// appears exactly once: as a successful run, or as a missed record where
/// `may_miss(instant)` holds. Returns the instants.
pub fn assert_every_instant_once(
    history: &Value,
    step: i64,
    may_miss: impl Fn(i64) -> bool,
) -> Vec<i64> {
    let instants = instants(history);
    let mut seen: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for (at, what) in &instants {
        seen.entry(*at).or_default().push(what);
    }
    let (Some(first), Some(last)) = (seen.keys().next().copied(), seen.keys().last().copied())
    else {
        panic!("no scheduled instant in {history}");
    };
    let mut problems = Vec::new();
    let mut at = first;
    while at <= last {
        match seen.get(&at).map(Vec::as_slice) {
            None => problems.push(format!("{at}: skipped")),
            Some(["SUCCESS"]) => {}
            Some(["MISSED"]) if may_miss(at) => {}
            Some(["MISSED"]) => problems.push(format!("{at}: missed, though it could still run")),
            Some([other]) => problems.push(format!("{at}: {other}")),
            Some(many) => problems.push(format!("{at}: {} times ({many:?})", many.len())),
        }
        at += step;
    }
    for at in seen.keys() {
        if (at - first) % step != 0 {
            problems.push(format!("{at}: not a {step}-s instant"));
        }
    }
    assert!(
        problems.is_empty(),
        "every {step}-s instant from {first} to {last} exactly once: {problems:?}\nhistory: {history}"
    );
    seen.keys().copied().collect()
}

/// Whether an instant (seconds since the epoch) may be recorded as missed because it
/// came due during an outage that began at `outage_start`: the instants due while
/// nothing could start a run are coalesced into one catch-up run (at most one per
/// outage), so only those before the first successful run after the outage may be.
pub fn coalesced_in_outage(history: &Value, outage_start: f64) -> impl Fn(i64) -> bool {
    let caught_up = instants(history)
        .into_iter()
        .filter(|(at, what)| *what == "SUCCESS" && *at as f64 > outage_start)
        .map(|(at, _)| at)
        .min()
        .unwrap_or(i64::MIN);
    // The instant before the outage may have come due unhandled just before it.
    move |at| (at as f64) >= outage_start - 2.0 && at < caught_up
}

/// Waits until job `id`'s history holds `count` instants due after `after` (seconds
/// since the epoch).
pub async fn wait_instants_after(cron: &str, id: &str, after: f64, count: usize) {
    poll(
        &format!("{count} runs of {id} due after {after:.0}"),
        || async {
            let history = history(cron, id).await?;
            let later = instants(&history)
                .iter()
                .filter(|(at, _)| *at as f64 > after)
                .count();
            if later >= count {
                Ok(())
            } else {
                Err(format!("{later} so far: {history}"))
            }
        },
    )
    .await
}

/// Stops job `id`'s schedules (`agora job add` with `schedules: []`) and waits for
/// its last run to end; returns the history then.
pub async fn stop_ticking(cron: &str, id: &str) -> Value {
    let mut definition = job(id, "true", &[]);
    definition["schedules"] = json!([]);
    job_cli(cron, &["add", "-"], Some(&definition.to_string())).await;
    let schedules = get_json(cron, &format!("/v1/jobs/{id}/schedules"))
        .await
        .expect("the job's schedules");
    assert_eq!(schedules, json!([]), "the schedule is removed");
    wait_idle(cron, id).await
}

#[test]
fn instants_are_read_from_rfc3339() {
    assert_eq!(seconds("1970-01-01T00:00:00Z"), Some(0.0));
    assert_eq!(seconds("2024-05-01T12:00:02.000Z"), Some(1_714_564_802.0));
    assert_eq!(
        seconds("2024-05-01T14:00:02.500+02:00"),
        Some(1_714_564_802.5)
    );
    assert_eq!(seconds("2024-02-29T00:00:00-01:00"), Some(1_709_168_400.0));
    assert_eq!(
        seconds("2024-02-29T00:00:00.000-0100"),
        Some(1_709_168_400.0)
    );
    assert_eq!(seconds("yesterday"), None);
}

#[test]
fn every_instant_exactly_once() {
    let run = |at: &str| json!({"id": at, "scheduledAt": at});
    let history = json!({
        "successfulFinishedRuns": [run("1970-01-01T00:00:00Z"), run("1970-01-01T00:00:04Z")],
        "failedFinishedRuns": [],
        "missed": [{"scheduleId": "tick", "scheduledAt": "1970-01-01T00:00:02Z", "reason": "late"}],
    });
    assert_eq!(
        assert_every_instant_once(&history, 2, |at| at == 2),
        vec![0, 2, 4]
    );
    let refused = std::panic::catch_unwind(|| assert_every_instant_once(&history, 2, |_| false));
    assert!(refused.is_err(), "a miss outside the outage fails");
    let twice = json!({"successfulFinishedRuns": [run("1970-01-01T00:00:00Z"),
        run("1970-01-01T00:00:00Z"), run("1970-01-01T00:00:02Z")]});
    assert!(std::panic::catch_unwind(|| assert_every_instant_once(&twice, 2, |_| false)).is_err());
    let gap = json!({"successfulFinishedRuns": [run("1970-01-01T00:00:00Z"),
        run("1970-01-01T00:00:04Z")]});
    assert!(std::panic::catch_unwind(|| assert_every_instant_once(&gap, 2, |_| false)).is_err());
}
