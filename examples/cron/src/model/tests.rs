//! Reading and validating jobs and schedules.

use serde_json::{Value, json};

use super::*;
use crate::error::CronError;

fn job(value: Value) -> Result<(JobSpec, Option<Vec<ScheduleSpec>>), CronError> {
    JobSpec::from_json(value.to_string().as_bytes())
}

fn schedule(value: Value) -> Result<ScheduleSpec, CronError> {
    ScheduleSpec::from_json(value.to_string().as_bytes())
}

/// The 422's details as (path, errors).
fn details(result: Result<impl std::fmt::Debug, CronError>) -> Vec<(String, Vec<String>)> {
    match result {
        Err(CronError::Invalid { message, details }) => {
            assert_eq!(message, "Object is not valid");
            details
        }
        other => panic!("expected a 422, got {other:?}"),
    }
}

/// The paths a 422 names.
fn paths(result: Result<impl std::fmt::Debug, CronError>) -> Vec<String> {
    details(result).into_iter().map(|(path, _)| path).collect()
}

fn minimal() -> Value {
    json!({"id": "prod.backup", "run": {"cmd": "echo hi"}})
}

fn with_run(run: Value) -> Value {
    let mut job = minimal();
    for (key, value) in run.as_object().unwrap() {
        job["run"][key] = value.clone();
    }
    job
}

#[test]
fn a_minimal_job_takes_metronome_defaults() {
    let (job, schedules) = job(minimal()).unwrap();
    assert_eq!(job.id, "prod.backup");
    assert_eq!(job.run.cpus, 1.0);
    assert_eq!(job.run.mem, 128.0);
    assert_eq!(job.run.disk, 0.0);
    assert_eq!(job.run.max_launch_delay, 3600);
    assert_eq!(job.run.restart.policy, "NEVER");
    assert!(job.dependencies.is_empty());
    assert_eq!(schedules, None);
}

#[test]
fn a_full_job_reads_every_field() {
    let (job, _) = job(json!({
        "id": "a.b-c.d1",
        "description": "nightly",
        "labels": {"team": "x"},
        "run": {
            "cpus": 0.5, "mem": 64, "disk": 10, "args": ["/bin/true"], "user": "nobody",
            "env": {"A": "1"},
            "placement": {"constraints": [
                {"attribute": "rack", "operator": "IS", "value": "r1"},
                {"attribute": "host", "operator": "LIKE", "value": "a.*"}
            ]},
            "artifacts": [{"uri": "http://x/y.tgz"}],
            "maxLaunchDelay": 60,
            "docker": {"image": "busybox"},
            "volumes": [{"containerPath": "/data", "hostPath": "/srv", "mode": "RO"}],
            "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 120}
        },
        "dependencies": [{"id": "a.b-c.parent"}]
    }))
    .unwrap();
    assert_eq!(job.run.args, Some(vec!["/bin/true".to_string()]));
    assert!(job.run.artifacts[0].extract);
    assert!(!job.run.artifacts[0].cache);
    assert_eq!(job.run.restart.active_deadline_seconds, Some(120));
    assert_eq!(job.dependencies[0].id, "a.b-c.parent");
}

#[test]
fn inlined_schedules_are_read_validated_and_their_next_run_dropped() {
    let mut body = minimal();
    body["schedules"] = json!([{"id": "nightly", "cron": "0 2 * * *", "nextRunAt": "x"}]);
    let (_, schedules) = job(body.clone()).unwrap();
    let schedules = schedules.unwrap();
    assert_eq!(schedules[0].id, "nightly");
    assert_eq!(schedules[0].timezone, "UTC");
    assert_eq!(schedules[0].starting_deadline_seconds, 900);
    assert_eq!(schedules[0].concurrency_policy, "ALLOW");
    assert!(schedules[0].enabled);
    assert_eq!(schedules[0].next_run_at, None);

    body["schedules"] = json!([
        {"id": "a", "cron": "nope"},
        {"id": "a", "cron": "* * * * *", "concurrencyPolicy": "SOMETIMES"}
    ]);
    assert_eq!(
        paths(job(body.clone())),
        [
            "/schedules(0)/cron",
            "/schedules(1)/concurrencyPolicy",
            "/schedules(1)/id"
        ]
    );
    body["schedules"] = json!({"id": "a"});
    assert_eq!(paths(job(body)), ["/schedules"]);
}

#[test]
fn not_json_is_a_400_and_json_of_another_shape_a_422_naming_the_path() {
    assert!(matches!(
        JobSpec::from_json(b"{not json"),
        Err(CronError::InvalidJson(_))
    ));
    assert!(matches!(
        ScheduleSpec::from_json(b""),
        Err(CronError::InvalidJson(_))
    ));
    assert_eq!(
        details(job(json!([1]))),
        [("/".to_string(), vec!["error.expected.jsobject".to_string()])]
    );
    assert_eq!(
        details(job(with_run(json!({"cpus": "lots"})))),
        [(
            "/run/cpus".to_string(),
            vec!["error.expected.jsnumber".to_string()]
        )]
    );
    assert_eq!(
        details(job(json!({"id": "x"}))),
        [("/run".to_string(), vec!["error.path.missing".to_string()])]
    );
    assert_eq!(
        paths(job(with_run(
            json!({"artifacts": [{"uri": "u"}, {"uri": 3}]})
        ))),
        ["/run/artifacts(1)/uri"]
    );
}

#[test]
fn unknown_fields_are_refused_where_they_are() {
    assert_eq!(
        paths(job(with_run(
            json!({"ucr": {}, "restart": {"policy": "NEVER", "x": 1}})
        ))),
        ["/run/ucr", "/run/restart/x"]
    );
    let mut body = minimal();
    body["schedule"] = json!("0 * * * *");
    assert_eq!(paths(job(body)), ["/schedule"]);
    assert_eq!(
        paths(schedule(
            json!({"id": "s", "cron": "* * * * *", "timeZone": "Europe/Berlin"})
        )),
        ["/timeZone"]
    );
}

#[test]
fn null_members_count_as_absent() {
    let mut body = minimal();
    body["description"] = Value::Null;
    body["labels"] = Value::Null;
    body["run"]["disk"] = Value::Null;
    let (job, _) = job(body).unwrap();
    assert_eq!(job.description, None);
    assert_eq!(job.run.disk, 0.0);
}

#[test]
fn job_ids_are_dotted_lowercase_names() {
    for good in ["a", "prod", "prod.backup", "a-b.c--d.e1", "0.1"] {
        assert!(is_valid_job_id(good), "{good}");
    }
    for bad in [
        "", "Prod", "a_b", "-a", "a-", "a..b", ".a", "a.", "a/b", "a b",
    ] {
        assert!(!is_valid_job_id(bad), "{bad}");
        let mut body = minimal();
        body["id"] = json!(bad);
        assert_eq!(paths(job(body)), ["/id"], "{bad}");
    }
}

#[test]
fn run_rules_name_their_field() {
    let cases = [
        (json!({"cpus": 0.001}), "/run/cpus"),
        (json!({"mem": 31}), "/run/mem"),
        (json!({"disk": -1}), "/run/disk"),
        (json!({"maxLaunchDelay": 0}), "/run/maxLaunchDelay"),
        // Beyond a year the controller's clock arithmetic would overflow.
        (json!({"maxLaunchDelay": i64::MAX}), "/run/maxLaunchDelay"),
        (
            json!({"placement": {"constraints": [{"attribute": "rack", "operator": "LIKE", "value": "r(1"}]}}),
            "/run/placement/constraints(0)/value",
        ),
        (json!({"cmd": " "}), "/run/cmd"),
        (json!({"args": ["x"]}), "/run/args"),
        (json!({"user": ""}), "/run/user"),
        (
            json!({"placement": {"constraints": [{"attribute": "a", "operator": "GROUP_BY", "value": "1"}]}}),
            "/run/placement/constraints(0)/operator",
        ),
        (
            json!({"placement": {"constraints": [{"attribute": "a", "operator": "EQ"}]}}),
            "/run/placement/constraints(0)/value",
        ),
        (
            json!({"placement": {"constraints": [{"attribute": "", "operator": "EQ", "value": "v"}]}}),
            "/run/placement/constraints(0)/attribute",
        ),
        (json!({"artifacts": [{"uri": ""}]}), "/run/artifacts(0)/uri"),
        (json!({"docker": {"image": ""}}), "/run/docker/image"),
        (
            json!({"volumes": [{"containerPath": "data", "hostPath": "/x", "mode": "RO"}]}),
            "/run/volumes(0)/containerPath",
        ),
        (
            json!({"volumes": [{"containerPath": "/data", "hostPath": "", "mode": "RO"}]}),
            "/run/volumes(0)/hostPath",
        ),
        (
            json!({"volumes": [{"containerPath": "/data", "hostPath": "/x", "mode": "WO"}]}),
            "/run/volumes(0)/mode",
        ),
        (
            json!({"restart": {"policy": "ALWAYS"}}),
            "/run/restart/policy",
        ),
        (
            json!({"restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": -1}}),
            "/run/restart/activeDeadlineSeconds",
        ),
        (
            json!({"restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": i64::MAX}}),
            "/run/restart/activeDeadlineSeconds",
        ),
    ];
    for (run, path) in cases {
        assert_eq!(paths(job(with_run(run.clone()))), [path], "{run}");
    }
    let errors = details(job(with_run(json!({"cpus": 0.001}))));
    assert_eq!(errors[0].1, ["got 0.001, expected 0.01 or more"]);
    let errors = details(job(with_run(json!({"restart": {"policy": "ALWAYS"}}))));
    assert_eq!(
        errors[0].1,
        ["'ALWAYS' is not a valid restart policy. Allowed values: NEVER, ON_FAILURE"]
    );
}

#[test]
fn a_job_needs_something_to_run() {
    assert_eq!(paths(job(json!({"id": "a", "run": {}}))), ["/run"]);
    assert_eq!(
        paths(job(json!({"id": "a", "run": {"args": []}}))),
        ["/run"]
    );
    assert!(job(json!({"id": "a", "run": {"args": ["x"]}})).is_ok());
    assert!(job(json!({"id": "a", "run": {"docker": {"image": "busybox"}}})).is_ok());
}

#[test]
fn every_violation_is_reported_at_once() {
    let found = paths(job(json!({
        "id": "Bad",
        "run": {"cpus": 0, "mem": 1, "cmd": "x"},
        "dependencies": [{"id": "Bad"}, {"id": "ok"}, {"id": "ok"}]
    })));
    assert_eq!(
        found,
        [
            "/id",
            "/run/cpus",
            "/run/mem",
            "/dependencies(0)/id",
            "/dependencies(2)/id"
        ]
    );
    let self_dependent = details(job(json!({
        "id": "a", "run": {"cmd": "x"}, "dependencies": [{"id": "a"}]
    })));
    assert_eq!(self_dependent[0].1, ["a job cannot depend on itself"]);
}

#[test]
fn schedule_rules_name_their_field() {
    let ok = schedule(json!({
        "id": "s1", "cron": "*/5 * * * *", "timezone": "Europe/Berlin",
        "startingDeadlineSeconds": 1, "concurrencyPolicy": "FORBID", "enabled": false
    }))
    .unwrap();
    assert_eq!(ok.starting_deadline_seconds, 1);
    assert!(!ok.enabled);
    for policy in ["ALLOW", "FORBID", "REPLACE"] {
        assert!(
            schedule(json!({"id": "s", "cron": "* * * * *", "concurrencyPolicy": policy})).is_ok()
        );
    }
    let cases = [
        (json!({"id": "S", "cron": "* * * * *"}), "/id"),
        (json!({"id": "-s", "cron": "* * * * *"}), "/id"),
        (json!({"id": "a.b", "cron": "* * * * *"}), "/id"),
        (json!({"id": "s", "cron": "every day"}), "/cron"),
        (
            json!({"id": "s", "cron": "* * * * *", "timezone": "Mars/Olympus"}),
            "/timezone",
        ),
        (
            json!({"id": "s", "cron": "* * * * *", "startingDeadlineSeconds": 0}),
            "/startingDeadlineSeconds",
        ),
        (
            json!({"id": "s", "cron": "* * * * *", "startingDeadlineSeconds": 9_223_372_036_854_775_807_i64}),
            "/startingDeadlineSeconds",
        ),
        (
            json!({"id": "s", "cron": "* * * * *", "concurrencyPolicy": "allow"}),
            "/concurrencyPolicy",
        ),
        (
            json!({"id": "s", "cron": "* * * * *", "enabled": "yes"}),
            "/enabled",
        ),
        (json!({"id": "s"}), "/cron"),
    ];
    for (body, path) in cases {
        assert_eq!(paths(schedule(body.clone())), [path], "{body}");
    }
}

#[test]
fn a_put_takes_its_id_from_the_path_and_refuses_another() {
    let body = json!({"run": {"cmd": "x"}});
    let (job, _) = JobSpec::from_json_with_id(body.to_string().as_bytes(), "prod.a").unwrap();
    assert_eq!(job.id, "prod.a");
    let body = json!({"id": "prod.b", "run": {"cmd": "x"}});
    assert_eq!(
        paths(JobSpec::from_json_with_id(
            body.to_string().as_bytes(),
            "prod.a"
        )),
        ["/id"]
    );
    let body = json!({"cron": "* * * * *"});
    let schedule = ScheduleSpec::from_json_with_id(body.to_string().as_bytes(), "s").unwrap();
    assert_eq!(schedule.id, "s");
    let body = json!({"id": "t", "cron": "* * * * *"});
    assert_eq!(
        paths(ScheduleSpec::from_json_with_id(
            body.to_string().as_bytes(),
            "s"
        )),
        ["/id"]
    );
}

#[test]
fn validate_checks_values_built_in_code() {
    let (mut job, _) = job(minimal()).unwrap();
    assert!(job.validate().is_ok());
    job.run.mem = 8.0;
    job.run.cpus = f64::NAN;
    assert_eq!(paths(job.validate()), ["/run/cpus", "/run/mem"]);
    let mut schedule = schedule(json!({"id": "s", "cron": "* * * * *"})).unwrap();
    assert!(schedule.validate().is_ok());
    schedule.timezone = "Nowhere".into();
    assert_eq!(paths(schedule.validate()), ["/timezone"]);
}
