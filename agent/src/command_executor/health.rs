//! Health checks, run by the executor next to each task that asks for one, with
//! Mesos' semantics (`src/checks/health_checker.cpp`):
//!
//! - the first check runs `delay` after the task started, then one every `interval`
//!   after the previous one ended; a check that takes longer than `timeout` failed;
//! - failures within the `grace` period after the start are ignored until the first
//!   success (a slow starter is not killed for being slow);
//! - the first success and the first counted failure after a success (or the first
//!   counted failure at all) are a change of health the framework hears of;
//! - after `consecutive_failures` counted failures in a row the task is to be killed.
//!
//! The checker is generic over its [`Probe`] so the policy can be tested with a
//! scripted probe under paused time; [`TaskProbe`] is the real one (COMMAND, HTTP,
//! TCP).

use std::future::Future;
use std::io;
use std::process::Stdio;
use std::time::Duration;

use agora_proto as pb;
use agora_proto::health_check::Type as CheckType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Mesos' defaults, used for every field left at 0 (or unset).
pub(super) const DEFAULT_DELAY: Duration = Duration::from_secs(15);
pub(super) const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
pub(super) const DEFAULT_CONSECUTIVE_FAILURES: u32 = 3;
pub(super) const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The shortest interval and timeout: a figure that rounds to (almost) nothing
/// would otherwise make the checker spin, spawning a check process after another.
pub(super) const MIN_PERIOD: Duration = Duration::from_millis(10);

/// The longest status line an HTTP check reads before giving up on the answer.
const MAX_STATUS_LINE_BYTES: usize = 1024;

/// A health check's timing and failure budget, validated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct HealthPolicy {
    /// Before the first check, from the task's start. Protobuf cannot tell 0 from
    /// unset, so a check that wants (almost) none names a tiny delay such as 0.01.
    pub delay: Duration,
    /// Between the end of one check and the start of the next; at least
    /// [`MIN_PERIOD`].
    pub interval: Duration,
    /// Longest a single check may take; at least [`MIN_PERIOD`].
    pub timeout: Duration,
    /// Counted failures in a row that kill the task; at least 1.
    pub consecutive_failures: u32,
    /// After the start, failures before the first success are not counted.
    pub grace: Duration,
}

impl HealthPolicy {
    /// Reads a task's check; 0 (unset) means Mesos' default. A negative, NaN or
    /// infinite figure is refused with a message naming the field.
    pub(super) fn from_proto(check: &pb::HealthCheck) -> Result<Self, String> {
        let seconds = |field: &str, value: f64, default: Duration| -> Result<Duration, String> {
            if !(0.0..=agora_core::limits::MAX_TIMEOUT_SECONDS).contains(&value) {
                return Err(format!(
                    "health_check.{field} is {value}; it must be a number of seconds between 0 and {}",
                    agora_core::limits::MAX_TIMEOUT_SECONDS
                ));
            }
            Ok(if value == 0.0 {
                default
            } else {
                Duration::from_secs_f64(value)
            })
        };
        Ok(Self {
            delay: seconds("delay_seconds", check.delay_seconds, DEFAULT_DELAY)?,
            interval: seconds("interval_seconds", check.interval_seconds, DEFAULT_INTERVAL)?
                .max(MIN_PERIOD),
            timeout: seconds("timeout_seconds", check.timeout_seconds, DEFAULT_TIMEOUT)?
                .max(MIN_PERIOD),
            consecutive_failures: match check.consecutive_failures {
                0 => DEFAULT_CONSECUTIVE_FAILURES,
                n => n,
            },
            grace: seconds(
                "grace_period_seconds",
                check.grace_period_seconds,
                DEFAULT_GRACE,
            )?,
        })
    }
}

/// A change of a task's health, for the executor to report.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct HealthChange {
    /// The task's health now.
    pub healthy: bool,
    /// The failure budget is spent: the task must be killed. Only with `healthy`
    /// false, and the last change the checker reports.
    pub kill: bool,
    /// Counted failures in a row (0 when healthy).
    pub consecutive_failures: u32,
    /// What the last check found, for the update's message.
    pub message: String,
}

/// One check of a task's health: `Ok` when healthy, otherwise why not.
pub(super) trait Probe: Send + 'static {
    fn probe(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Checks until the failure budget is spent (or `report` returns false: nobody
/// listens any more), calling `report` on every change of health.
pub(super) async fn run_checker<P: Probe>(
    policy: HealthPolicy,
    mut probe: P,
    mut report: impl FnMut(HealthChange) -> bool + Send,
) {
    let started = Instant::now();
    // What the framework last heard; `None` before the first report.
    let mut reported: Option<bool> = None;
    let mut failures: u32 = 0;
    let mut succeeded_once = false;
    tokio::time::sleep(policy.delay).await;
    loop {
        let outcome = match tokio::time::timeout(policy.timeout, probe.probe()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "the health check timed out after {:?}",
                policy.timeout
            )),
        };
        match outcome {
            Ok(()) => {
                succeeded_once = true;
                failures = 0;
                if reported != Some(true) {
                    reported = Some(true);
                    let change = HealthChange {
                        healthy: true,
                        kill: false,
                        consecutive_failures: 0,
                        message: "the health check passed".into(),
                    };
                    if !report(change) {
                        return;
                    }
                }
            }
            Err(_) if !succeeded_once && started.elapsed() <= policy.grace => {
                // Still starting up: not counted (Mesos' grace period).
            }
            Err(why) => {
                failures += 1;
                let kill = failures >= policy.consecutive_failures;
                if reported != Some(false) || kill {
                    reported = Some(false);
                    let message = if kill {
                        format!("{failures} consecutive health checks failed; the last: {why}")
                    } else {
                        format!("the health check failed: {why}")
                    };
                    let change = HealthChange {
                        healthy: false,
                        kill,
                        consecutive_failures: failures,
                        message,
                    };
                    if !report(change) || kill {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(policy.interval).await;
    }
}

/// Builds the process of a COMMAND check, where the task runs.
pub(super) type CheckCommand = Box<dyn Fn() -> tokio::process::Command + Send + Sync>;

/// The real probes.
pub(super) enum TaskProbe {
    /// Healthy when the command exits 0.
    Command(CheckCommand),
    /// Healthy on a 2xx/3xx answer (or one of `statuses`) to GET 127.0.0.1:port/path.
    Http {
        port: u16,
        path: String,
        statuses: Vec<u32>,
    },
    /// Healthy when 127.0.0.1:port accepts a connection.
    Tcp { port: u16 },
}

impl TaskProbe {
    /// The probe `check` describes; `check_command` builds a COMMAND check's process
    /// (given the check's own CommandInfo) where the task runs.
    pub(super) fn from_proto(
        check: &pb::HealthCheck,
        check_command: impl Fn(&pb::CommandInfo) -> tokio::process::Command + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let port = |port: u32, field: &str| -> Result<u16, String> {
            u16::try_from(port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("health_check.{field}.port {port} is not a TCP port"))
        };
        match CheckType::try_from(check.r#type) {
            Ok(CheckType::Command) => {
                let Some(command) = check.command.clone() else {
                    return Err("a COMMAND health check needs health_check.command".into());
                };
                if command.value.is_empty() {
                    return Err("health_check.command.value is empty".into());
                }
                Ok(Self::Command(Box::new(move || check_command(&command))))
            }
            Ok(CheckType::Http) => {
                let Some(http) = &check.http else {
                    return Err("an HTTP health check needs health_check.http".into());
                };
                if !(http.scheme.is_empty() || http.scheme == "http") {
                    return Err(format!(
                        "health_check.http.scheme '{}' is not supported; use http",
                        http.scheme
                    ));
                }
                let path = if http.path.is_empty() {
                    "/".to_string()
                } else if http.path.starts_with('/')
                    && !http
                        .path
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control())
                {
                    http.path.clone()
                } else {
                    return Err(format!(
                        "health_check.http.path '{}' must start with / and hold no whitespace",
                        http.path
                    ));
                };
                if let Some(bad) = http.statuses.iter().find(|s| !(100..600).contains(*s)) {
                    return Err(format!(
                        "health_check.http.statuses holds {bad}, which is no HTTP status"
                    ));
                }
                Ok(Self::Http {
                    port: port(http.port, "http")?,
                    path,
                    statuses: http.statuses.clone(),
                })
            }
            Ok(CheckType::Tcp) => {
                let Some(tcp) = &check.tcp else {
                    return Err("a TCP health check needs health_check.tcp".into());
                };
                Ok(Self::Tcp {
                    port: port(tcp.port, "tcp")?,
                })
            }
            Ok(CheckType::Unknown) | Err(_) => Err(format!(
                "health_check.type {} is not COMMAND, HTTP or TCP",
                check.r#type
            )),
        }
    }
}

impl Probe for TaskProbe {
    async fn probe(&mut self) -> Result<(), String> {
        match self {
            Self::Command(build) => command_probe(build()).await,
            Self::Http {
                port,
                path,
                statuses,
            } => http_probe(*port, path, statuses).await,
            Self::Tcp { port } => TcpStream::connect(("127.0.0.1", *port))
                .await
                .map(drop)
                .map_err(|e| format!("cannot connect to 127.0.0.1:{port}: {e}")),
        }
    }
}

/// Kills a check's whole process group unless it was reaped: a check that timed
/// out (its future dropped) must not linger, nor anything it spawned.
struct GroupGuard {
    group: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            // SAFETY: killpg only sends a signal; a gone group yields ESRCH.
            unsafe { libc::killpg(group, libc::SIGKILL) };
        }
    }
}

async fn command_probe(mut command: tokio::process::Command) -> Result<(), String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run the health check command: {e}"))?;
    let mut guard = GroupGuard {
        group: child.id().map(|pid| pid as i32),
    };
    let status = child
        .wait()
        .await
        .map_err(|e| format!("cannot wait for the health check command: {e}"))?;
    // Reaped: the group id may be reused from now on. What the check left running
    // in its group still goes.
    if let Some(group) = guard.group.take() {
        // SAFETY: as above.
        unsafe { libc::killpg(group, libc::SIGKILL) };
    }
    if status.success() {
        Ok(())
    } else {
        let (_, how) = super::task_process::describe_exit(&status);
        Err(format!("the health check command failed: {how}"))
    }
}

async fn http_probe(port: u16, path: &str, statuses: &[u32]) -> Result<(), String> {
    let status = http_status(port, path)
        .await
        .map_err(|e| format!("GET http://127.0.0.1:{port}{path} failed: {e}"))?;
    let healthy = if statuses.is_empty() {
        (200..400).contains(&status)
    } else {
        statuses.contains(&status)
    };
    if healthy {
        Ok(())
    } else {
        Err(format!(
            "GET http://127.0.0.1:{port}{path} answered {status}"
        ))
    }
}

/// The status code of a plain HTTP/1.0 GET (no dependency needed for one line).
async fn http_status(port: u16, path: &str) -> io::Result<u32> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: agora-health-check\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(128);
    let mut buffer = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && !head.contains(&b'\n') {
        if head.len() > MAX_STATUS_LINE_BYTES {
            return Err(io::Error::other("the status line is too long"));
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    parse_status_line(&head)
        .ok_or_else(|| io::Error::other("the answer does not start with an HTTP status line"))
}

fn parse_status_line(head: &[u8]) -> Option<u32> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    words
        .next()?
        .parse()
        .ok()
        .filter(|s| (100..600).contains(s))
}

/// A COMMAND check's process for a task run as a plain process: like the task's
/// command (a shell line or an argv), in the sandbox, with the task's environment
/// and then the check's own.
pub(super) fn process_check_command(
    check: &pb::CommandInfo,
    task: &pb::CommandInfo,
    task_id: &str,
    sandbox: Option<&std::path::Path>,
) -> tokio::process::Command {
    let mut process = super::task_process::host_command(check);
    process
        .env_remove(super::env::EXECUTOR_TOKEN)
        .env(super::env::TASK_ID, task_id);
    for environment in [&task.environment, &check.environment]
        .into_iter()
        .flatten()
    {
        for variable in &environment.variables {
            process.env(&variable.name, &variable.value);
        }
    }
    if let Some(sandbox) = sandbox {
        process.current_dir(sandbox);
    }
    process
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// Answers from a script (then succeeds); each answer takes `takes`.
    struct Scripted {
        answers: VecDeque<bool>,
        takes: Duration,
        /// When each check started.
        calls: Arc<Mutex<Vec<Instant>>>,
    }

    impl Probe for Scripted {
        async fn probe(&mut self) -> Result<(), String> {
            self.calls.lock().unwrap().push(Instant::now());
            tokio::time::sleep(self.takes).await;
            if self.answers.pop_front().unwrap_or(true) {
                Ok(())
            } else {
                Err("scripted failure".into())
            }
        }
    }

    fn policy(grace: u64) -> HealthPolicy {
        HealthPolicy {
            delay: Duration::from_secs(15),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(20),
            consecutive_failures: 3,
            grace: Duration::from_secs(grace),
        }
    }

    /// Runs the checker to its end (or until `limit` of virtual time passed) and
    /// returns the changes with the time since the start each came at.
    async fn run(
        policy: HealthPolicy,
        answers: &[bool],
        takes: Duration,
        limit: Duration,
    ) -> (Vec<(Duration, HealthChange)>, Vec<Duration>) {
        let start = Instant::now();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let probe = Scripted {
            answers: answers.iter().copied().collect(),
            takes,
            calls: calls.clone(),
        };
        let mut changes = Vec::new();
        let _ = tokio::time::timeout(
            limit,
            run_checker(policy, probe, |c| {
                changes.push((start.elapsed(), c));
                true
            }),
        )
        .await;
        let calls = calls.lock().unwrap().iter().map(|t| *t - start).collect();
        (changes, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_check_waits_for_the_delay_and_a_success_is_reported_once() {
        let (changes, calls) = run(
            policy(10),
            &[true, true, true],
            Duration::ZERO,
            Duration::from_secs(40),
        )
        .await;
        assert_eq!(
            calls[..3],
            [
                Duration::from_secs(15),
                Duration::from_secs(25),
                Duration::from_secs(35)
            ]
        );
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].0, Duration::from_secs(15));
        assert!(changes[0].1.healthy && !changes[0].1.kill);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_the_grace_period_before_a_success_do_not_count() {
        // Checks at 0, 1, 2, ... s; grace 2.5 s: the first three failures are ignored.
        let policy = HealthPolicy {
            delay: Duration::ZERO,
            interval: Duration::from_secs(1),
            grace: Duration::from_millis(2500),
            ..policy(0)
        };
        let (changes, _) = run(
            policy,
            &[false, false, false, false, false, false],
            Duration::ZERO,
            Duration::from_secs(60),
        )
        .await;
        let when: Vec<(u64, bool, bool)> = changes
            .iter()
            .map(|(t, c)| (t.as_secs(), c.healthy, c.kill))
            .collect();
        // Counted: the failures at 3, 4 and 5 s; the third kills.
        assert_eq!(when, [(3, false, false), (5, false, true)]);
        assert_eq!(changes[1].1.consecutive_failures, 3);
        assert!(changes[1].1.message.contains("scripted failure"));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_success_the_grace_period_is_over() {
        let policy = HealthPolicy {
            delay: Duration::ZERO,
            interval: Duration::from_secs(1),
            grace: Duration::from_secs(100),
            ..policy(0)
        };
        let (changes, _) = run(
            policy,
            &[true, false, false, true, false, false, false],
            Duration::ZERO,
            Duration::from_secs(60),
        )
        .await;
        let when: Vec<(u64, bool, bool)> = changes
            .iter()
            .map(|(t, c)| (t.as_secs(), c.healthy, c.kill))
            .collect();
        // Healthy, unhealthy (counted even in the grace period), healthy again
        // (two failures are within the budget), then killed after three.
        assert_eq!(
            when,
            [
                (0, true, false),
                (1, false, false),
                (3, true, false),
                (4, false, false),
                (6, false, true)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_slower_than_its_timeout_fails() {
        let policy = HealthPolicy {
            delay: Duration::ZERO,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            consecutive_failures: 1,
            grace: Duration::ZERO,
        };
        let (changes, _) = run(
            policy,
            &[true],
            Duration::from_secs(5),
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].0, Duration::from_secs(2));
        assert!(changes[0].1.kill);
        assert!(changes[0].1.message.contains("timed out"), "{changes:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_checker_stops_when_nobody_listens() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let probe = Scripted {
            answers: VecDeque::new(),
            takes: Duration::ZERO,
            calls: calls.clone(),
        };
        // Returns (rather than running forever) once the report is refused.
        run_checker(policy(0), probe, |_| false).await;
        assert_eq!(calls.lock().unwrap().len(), 1);
    }

    #[test]
    fn zero_means_the_mesos_default_and_bad_figures_are_refused() {
        let defaults = HealthPolicy::from_proto(&pb::HealthCheck::default()).unwrap();
        assert_eq!(
            defaults,
            HealthPolicy {
                delay: DEFAULT_DELAY,
                interval: DEFAULT_INTERVAL,
                timeout: DEFAULT_TIMEOUT,
                consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
                grace: DEFAULT_GRACE,
            }
        );
        let custom = HealthPolicy::from_proto(&pb::HealthCheck {
            interval_seconds: 0.1,
            consecutive_failures: 1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(custom.interval, Duration::from_millis(100));
        assert_eq!(custom.consecutive_failures, 1);
        let tiny = HealthPolicy::from_proto(&pb::HealthCheck {
            interval_seconds: 1e-12,
            timeout_seconds: 1e-12,
            ..Default::default()
        })
        .unwrap();
        assert_eq!((tiny.interval, tiny.timeout), (MIN_PERIOD, MIN_PERIOD));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let err = HealthPolicy::from_proto(&pb::HealthCheck {
                timeout_seconds: bad,
                ..Default::default()
            })
            .unwrap_err();
            assert!(err.contains("health_check.timeout_seconds"), "{err}");
        }
    }

    #[test]
    fn probes_are_validated() {
        let no_command = |_: &pb::CommandInfo| tokio::process::Command::new("true");
        let http = |port: u32, path: &str, scheme: &str| pb::HealthCheck {
            r#type: CheckType::Http as i32,
            http: Some(pb::health_check::Http {
                port,
                path: path.into(),
                scheme: scheme.into(),
                statuses: vec![],
            }),
            ..Default::default()
        };
        assert!(TaskProbe::from_proto(&http(8080, "/ok", ""), no_command).is_ok());
        for (check, needle) in [
            (http(0, "/", ""), "port"),
            (http(70000, "/", ""), "port"),
            (http(80, "no-slash", ""), "path"),
            (http(80, "/a b", ""), "path"),
            (http(80, "/", "https"), "scheme"),
            (pb::HealthCheck::default(), "type"),
            (
                pb::HealthCheck {
                    r#type: CheckType::Tcp as i32,
                    ..Default::default()
                },
                "tcp",
            ),
            (
                pb::HealthCheck {
                    r#type: CheckType::Command as i32,
                    ..Default::default()
                },
                "command",
            ),
        ] {
            let Err(err) = TaskProbe::from_proto(&check, no_command) else {
                panic!("{check:?} is refused");
            };
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn status_lines_are_parsed() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 503\r\n"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 99999 x\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[tokio::test]
    async fn real_probes_see_real_answers() {
        // HTTP: a server that answers 200 then 500.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for answer in ["200 OK", "500 Internal Server Error"] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await.unwrap();
                let reply = format!("HTTP/1.1 {answer}\r\nContent-Length: 0\r\n\r\n");
                socket.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let mut probe = TaskProbe::Http {
            port,
            path: "/health".into(),
            statuses: vec![],
        };
        assert_eq!(probe.probe().await, Ok(()));
        let err = probe.probe().await.unwrap_err();
        assert!(err.contains("500"), "{err}");
        server.await.unwrap();
        // A port bound but not listening refuses connections; holding it keeps
        // another test from listening there meanwhile (a port merely closed can be
        // taken again at once by anything binding port 0).
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = closed.local_addr().unwrap().port();
        assert!(TaskProbe::Tcp { port }.probe().await.is_err());
        drop(closed);

        let command = |value: &str| {
            let task = pb::CommandInfo::default();
            let check = pb::CommandInfo {
                shell: true,
                value: value.into(),
                ..Default::default()
            };
            TaskProbe::Command(Box::new(move || {
                process_check_command(&check, &task, "t", None)
            }))
        };
        assert_eq!(command("test \"$AGORA_TASK_ID\" = t").probe().await, Ok(()));
        let err = command("exit 4").probe().await.unwrap_err();
        assert!(err.contains("status 4"), "{err}");
    }
}
