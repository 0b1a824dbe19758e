//! Validation of jobs and schedules: every rule names the field it is about, in
//! Metronome's 422 body `{"message": "Object is not valid", "details": [{"path":
//! "/run/cpus", "errors": ["got 0.001, expected 0.01 or more"]}]}`.
//!
//! Where this differs from Metronome, on purpose:
//! - `startingDeadlineSeconds` may be as low as 1 (Metronome's validator wants 60,
//!   its JSON schema 1): a short deadline is what tests of missed runs need, and a
//!   deadline under a minute is meaningful here because schedules are evaluated to
//!   the second.
//! - A schedule id may be a single character (`^[a-z0-9]+(-+[a-z0-9]+)*$`, one
//!   segment of a job id); Metronome's schema asks for two or more.
//! - Constraints take `IS` (Metronome's later name for `EQ`) as well as `EQ`, `LIKE`
//!   and `UNLIKE`, and every operator needs a value.
//! - `concurrencyPolicy` takes `REPLACE` (Kubernetes' meaning: stop the active run,
//!   start the new one) besides `ALLOW` and `FORBID`.

use std::collections::BTreeSet;

use crate::error::CronError;
use crate::schedule::Schedule;

use super::{JobSpec, ScheduleSpec};

/// The message of every 422 body.
pub const INVALID: &str = "Object is not valid";

pub const OPERATORS: &[&str] = &["IS", "EQ", "LIKE", "UNLIKE"];
pub const VOLUME_MODES: &[&str] = &["RO", "RW"];
pub const RESTART_POLICIES: &[&str] = &["NEVER", "ON_FAILURE"];
pub const CONCURRENCY_POLICIES: &[&str] = &["ALLOW", "FORBID", "REPLACE"];

pub const MIN_CPUS: f64 = 0.01;
pub const MIN_MEM: f64 = 32.0;
pub const MIN_STARTING_DEADLINE_SECONDS: i64 = 1;
/// Longest deadline or delay in seconds (a year, as the agents' timeouts): larger
/// numbers would overflow the controller's clock arithmetic.
pub const MAX_SECONDS: i64 = agora_sdk::MAX_TIMEOUT_SECONDS as i64;

/// Violations collected so far, the errors of one path merged (as play-json does).
#[derive(Debug, Default)]
pub(crate) struct Violations(Vec<(String, Vec<String>)>);

impl Violations {
    pub(crate) fn add(&mut self, path: impl Into<String>, error: impl Into<String>) {
        let path = path.into();
        let error = error.into();
        match self.0.iter_mut().find(|(p, _)| *p == path) {
            Some((_, errors)) => {
                if !errors.contains(&error) {
                    errors.push(error);
                }
            }
            None => self.0.push((path, vec![error])),
        }
    }

    pub(crate) fn merge(&mut self, other: Violations) {
        for (path, errors) in other.0 {
            for error in errors {
                self.add(path.clone(), error);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn into_details(self) -> Vec<(String, Vec<String>)> {
        self.0
    }

    /// `Ok` when nothing was found, else the 422.
    pub(crate) fn into_result(self) -> Result<(), CronError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CronError::Invalid {
                message: INVALID.to_string(),
                details: self.0,
            })
        }
    }
}

/// One segment of a job id, and a schedule id: lowercase letters, digits and
/// dashes, starting and ending with a letter or digit.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A job id: names joined by dots (`prod.reports.daily`).
pub fn is_valid_job_id(id: &str) -> bool {
    id.split('.').all(is_valid_name)
}

const JOB_ID_RULE: &str = "must be names joined by dots (prod.backup), each of lowercase letters, \
                           digits and dashes, starting and ending with a letter or digit";
const SCHEDULE_ID_RULE: &str = "must be lowercase letters, digits and dashes, \
                                starting and ending with a letter or digit";

fn at_least(violations: &mut Violations, path: String, value: f64, min: f64) {
    // NaN is refused too: JSON cannot carry it, but code building a job can.
    if value.is_nan() || value < min {
        violations.add(path, format!("got {value}, expected {min} or more"));
    }
}

fn one_of(violations: &mut Violations, path: String, what: &str, value: &str, allowed: &[&str]) {
    if !allowed.contains(&value) {
        violations.add(
            path,
            format!(
                "'{value}' is not a valid {what}. Allowed values: {}",
                allowed.join(", ")
            ),
        );
    }
}

fn not_empty(violations: &mut Violations, path: String, value: &str) {
    if value.trim().is_empty() {
        violations.add(path, "must not be empty");
    }
}

impl JobSpec {
    /// Every rule a job must keep; the 422 names each offending field.
    pub fn validate(&self) -> Result<(), CronError> {
        let mut violations = Violations::default();
        self.check(&mut violations);
        violations.into_result()
    }

    pub(crate) fn check(&self, violations: &mut Violations) {
        if !is_valid_job_id(&self.id) {
            violations.add("/id", JOB_ID_RULE);
        }
        let run = &self.run;
        at_least(violations, "/run/cpus".into(), run.cpus, MIN_CPUS);
        at_least(violations, "/run/mem".into(), run.mem, MIN_MEM);
        at_least(violations, "/run/disk".into(), run.disk, 0.0);
        seconds_between(
            violations,
            "/run/maxLaunchDelay".into(),
            run.max_launch_delay,
            1,
        );
        let has_args = run.args.as_ref().is_some_and(|args| !args.is_empty());
        if let Some(cmd) = &run.cmd {
            not_empty(violations, "/run/cmd".into(), cmd);
            if has_args {
                violations.add("/run/args", "cmd and args cannot both be given");
            }
        }
        if let Some(docker) = &run.docker {
            not_empty(violations, "/run/docker/image".into(), &docker.image);
        }
        if run.cmd.is_none() && !has_args && run.docker.is_none() {
            violations.add("/run", "one of cmd, args or docker.image must be given");
        }
        if let Some(user) = &run.user {
            not_empty(violations, "/run/user".into(), user);
        }
        if run.env.keys().any(|name| name.is_empty()) {
            violations.add("/run/env", "variable names must not be empty");
        }
        if let Some(placement) = &run.placement {
            for (i, constraint) in placement.constraints.iter().enumerate() {
                let path = format!("/run/placement/constraints({i})");
                not_empty(
                    violations,
                    format!("{path}/attribute"),
                    &constraint.attribute,
                );
                one_of(
                    violations,
                    format!("{path}/operator"),
                    "operator",
                    &constraint.operator,
                    OPERATORS,
                );
                match constraint.value.as_deref() {
                    None | Some("") => violations.add(
                        format!("{path}/value"),
                        format!("operator {} needs a value", constraint.operator),
                    ),
                    Some(pattern) if matches!(constraint.operator.as_str(), "LIKE" | "UNLIKE") => {
                        if let Err(error) = constraint_pattern(pattern) {
                            violations.add(
                                format!("{path}/value"),
                                format!("is not a regular expression: {error}"),
                            );
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        for (i, artifact) in run.artifacts.iter().enumerate() {
            not_empty(
                violations,
                format!("/run/artifacts({i})/uri"),
                &artifact.uri,
            );
        }
        for (i, volume) in run.volumes.iter().enumerate() {
            let path = format!("/run/volumes({i})");
            // Metronome's schema: `^/[^/].*$`.
            let container = volume.container_path.as_bytes();
            if container.len() < 2 || container[0] != b'/' || container[1] == b'/' {
                violations.add(
                    format!("{path}/containerPath"),
                    "must be an absolute path (/data)",
                );
            }
            not_empty(violations, format!("{path}/hostPath"), &volume.host_path);
            one_of(
                violations,
                format!("{path}/mode"),
                "mode",
                &volume.mode,
                VOLUME_MODES,
            );
        }
        one_of(
            violations,
            "/run/restart/policy".into(),
            "restart policy",
            &run.restart.policy,
            RESTART_POLICIES,
        );
        if let Some(deadline) = run.restart.active_deadline_seconds {
            seconds_between(
                violations,
                "/run/restart/activeDeadlineSeconds".into(),
                deadline,
                0,
            );
        }
        let mut seen = BTreeSet::new();
        for (i, dependency) in self.dependencies.iter().enumerate() {
            let path = format!("/dependencies({i})/id");
            if !is_valid_job_id(&dependency.id) {
                violations.add(path.clone(), JOB_ID_RULE);
            }
            if dependency.id == self.id {
                violations.add(path.clone(), "a job cannot depend on itself");
            }
            if !seen.insert(dependency.id.as_str()) {
                violations.add(path, format!("'{}' is listed twice", dependency.id));
            }
        }
    }
}

impl ScheduleSpec {
    /// Every rule a schedule must keep, its cron expression and time zone read by
    /// [`Schedule::parse`]; the 422 names each offending field.
    pub fn validate(&self) -> Result<(), CronError> {
        let mut violations = Violations::default();
        self.check("", &mut violations);
        violations.into_result()
    }

    /// Checks this schedule as found at `prefix` in a document (`/schedules(0)`).
    pub(crate) fn check(&self, prefix: &str, violations: &mut Violations) {
        if !is_valid_name(&self.id) {
            violations.add(format!("{prefix}/id"), SCHEDULE_ID_RULE);
        }
        // The expression is read in UTC first, so that an error is pinned on the
        // field at fault: the expression, or else the time zone.
        match Schedule::parse(&self.cron, "UTC") {
            Err(error) => violations.add(format!("{prefix}/cron"), error.to_string()),
            Ok(_) => {
                if let Err(error) = Schedule::parse(&self.cron, &self.timezone) {
                    violations.add(format!("{prefix}/timezone"), error.to_string());
                }
            }
        }
        seconds_between(
            violations,
            format!("{prefix}/startingDeadlineSeconds"),
            self.starting_deadline_seconds,
            MIN_STARTING_DEADLINE_SECONDS,
        );
        one_of(
            violations,
            format!("{prefix}/concurrencyPolicy"),
            "concurrency policy",
            &self.concurrency_policy,
            CONCURRENCY_POLICIES,
        );
    }
}

/// A whole number of seconds in `[minimum, MAX_SECONDS]`.
fn seconds_between(violations: &mut Violations, path: String, value: i64, minimum: i64) {
    if !(minimum..=MAX_SECONDS).contains(&value) {
        violations.add(
            path,
            format!("got {value}, expected between {minimum} and {MAX_SECONDS}"),
        );
    }
}

/// The regular expression a LIKE or UNLIKE constraint's value stands for: Marathon's
/// and Metronome's, matched against the whole attribute.
pub(crate) fn constraint_pattern(value: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{value})$"))
}
