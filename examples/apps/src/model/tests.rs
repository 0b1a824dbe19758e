//! Tests of parsing, normalisation and validation of apps and groups.

use serde_json::{Value, json};

use super::app::{KillSelection, UnreachableStrategy};
use super::*;

fn root_id() -> PathId {
    PathId::root()
}

fn id(raw: &str) -> PathId {
    PathId::parse(raw).unwrap()
}

fn app(value: Value) -> AppDefinition {
    AppDefinition::from_value(value, &root_id()).unwrap()
}

/// The violations of an invalid app, as (path, errors).
fn invalid(value: Value) -> Vec<(String, Vec<String>)> {
    match AppDefinition::from_value(value, &root_id()) {
        Err(ModelError::Invalid(errors)) => errors
            .details
            .into_iter()
            .map(|v| (v.path, v.errors))
            .collect(),
        other => panic!("expected a 422, got {other:?}"),
    }
}

/// Asserts that `value` is invalid at `path` with an error containing `needle`.
fn assert_invalid_at(value: Value, path: &str, needle: &str) {
    let details = invalid(value);
    assert!(
        details
            .iter()
            .any(|(p, errors)| p == path && errors.iter().any(|e| e.contains(needle))),
        "no {path:?} error containing {needle:?} in {details:?}"
    );
}

#[test]
fn a_minimal_app_gets_marathons_defaults() {
    let app = app(json!({"id": "web", "cmd": "sleep 100"}));
    assert_eq!(app.id, id("/web"));
    assert_eq!(app.instances, 1);
    assert_eq!(
        (app.cpus, app.mem, app.disk, app.gpus),
        (1.0, 128.0, 0.0, 0)
    );
    assert_eq!(
        (
            app.backoff_seconds,
            app.backoff_factor,
            app.max_launch_delay_seconds
        ),
        (1.0, 1.15, 300.0)
    );
    assert_eq!(app.upgrade_strategy.minimum_health_capacity, 1.0);
    assert_eq!(app.upgrade_strategy.maximum_over_capacity, 1.0);
    assert_eq!(
        app.unreachable_strategy,
        UnreachableStrategy::Enabled {
            inactive_after_seconds: 0.0,
            expunge_after_seconds: 0.0
        }
    );
    assert_eq!(app.kill_selection, KillSelection::YoungestFirst);
    assert_eq!(app.networks, [json!({"mode": "host"})]);
    // Host networking without ports: Marathon's one default port.
    let definitions = app.port_definitions.as_ref().unwrap();
    assert_eq!(definitions.len(), 1);
    assert_eq!(definitions[0].port, 0);
    assert_eq!(definitions[0].name.as_deref(), Some("default"));
    assert_eq!(app.port_count(), 1);
    assert_eq!(app.port_names(), [Some("default".to_string())]);
    assert!(!app.is_daemon());
    let rendered = app.to_json();
    assert_eq!(rendered["id"], "/web");
    assert_eq!(rendered["portDefinitions"][0]["protocol"], "tcp");
    assert_eq!(rendered["unreachableStrategy"]["expungeAfterSeconds"], 0.0);
}

#[test]
fn ids_and_dependencies_resolve_against_the_base_group() {
    let app = AppDefinition::from_value(
        json!({"id": "api", "cmd": "x", "dependencies": ["db", "../shared/cache", "/abs"]}),
        &id("/prod"),
    )
    .unwrap();
    assert_eq!(app.id, id("/prod/api"));
    assert_eq!(app.dependencies, ["/prod/db", "/shared/cache", "/abs"]);
}

#[test]
fn version_and_version_info_are_dropped_from_requests() {
    let app = app(json!({
        "id": "/a", "cmd": "x", "version": "2015-09-28T19:47:37.681Z",
        "versionInfo": {"lastScalingAt": "2015-09-28T19:47:37.681Z",
                        "lastConfigChangeAt": "2015-09-28T19:47:37.681Z"}
    }));
    assert_eq!(app.version, None);
    assert_eq!(app.version_info, None);
}

#[test]
fn deprecated_ports_and_uris_are_translated() {
    let app = app(json!({
        "id": "/a", "cmd": "x", "ports": [0, 8080],
        "uris": ["http://x/app.tar.gz", "http://x/run.sh"]
    }));
    let ports: Vec<i64> = app
        .port_definitions
        .as_ref()
        .unwrap()
        .iter()
        .map(|d| d.port)
        .collect();
    assert_eq!(ports, [0, 8080]);
    assert_eq!(app.fetch.len(), 2);
    assert_eq!(app.fetch[0].uri, "http://x/app.tar.gz");
    assert!(app.fetch[0].extract);
    assert!(!app.fetch[1].extract);
    assert!(app.to_json().get("uris").is_none());

    assert_invalid_at(
        json!({"id": "/a", "cmd": "x", "ports": [1], "portDefinitions": [{"port": 2}]}),
        "/",
        "cannot specify both ports and port definitions",
    );
    assert_invalid_at(
        json!({"id": "/a", "cmd": "x", "uris": ["u"], "fetch": [{"uri": "v"}]}),
        "/uris",
        "fetch",
    );
}

#[test]
fn bridge_networking_keeps_port_mappings_and_defaults_host_ports() {
    let app = app(json!({
        "id": "/a",
        "container": {
            "type": "DOCKER",
            "docker": {"image": "nginx", "network": "BRIDGE",
                       "portMappings": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}
        }
    }));
    assert_eq!(app.network_mode(), NetworkMode::Bridge);
    assert_eq!(app.port_definitions, None);
    let mappings = app.port_mappings().unwrap();
    assert_eq!(mappings.len(), 2);
    assert_eq!(mappings[0].host_port, Some(0));
    assert_eq!(app.port_names(), [Some("http".to_string()), None]);
    assert!(
        app.container
            .as_ref()
            .unwrap()
            .docker
            .as_ref()
            .unwrap()
            .network
            .is_none()
    );
}

#[test]
fn host_networking_drops_port_mappings() {
    let app = app(json!({
        "id": "/a",
        "container": {"type": "DOCKER", "docker": {"image": "nginx"},
                      "portMappings": [{"containerPort": 80}]}
    }));
    assert!(app.port_mappings().is_none());
    assert_eq!(app.port_count(), 1);
}

#[test]
fn health_checks_get_port_index_zero_and_readiness_checks_their_codes() {
    let app = app(json!({
        "id": "/a", "cmd": "x",
        "portDefinitions": [{"port": 0, "name": "http-api"}],
        "healthChecks": [{"protocol": "MESOS_HTTP"}],
        "readinessChecks": [{"httpStatusCodesForReady": []}]
    }));
    assert_eq!(app.health_checks[0].port_index, Some(0));
    assert_eq!(app.health_checks[0].grace_period_seconds, 300.0);
    assert_eq!(app.health_checks[0].interval_seconds, 60.0);
    assert_eq!(app.health_checks[0].timeout_seconds, 20.0);
    assert_eq!(app.health_checks[0].max_consecutive_failures, 3);
    assert_eq!(app.readiness_checks[0].http_status_codes_for_ready, [200]);
    assert_eq!(app.readiness_checks[0].port_name, "http-api");
}

#[test]
fn not_json_is_a_400_and_the_wrong_shape_a_422_with_its_path() {
    assert!(matches!(
        AppDefinition::from_json(b"{\"id\": ", &root_id()),
        Err(ModelError::InvalidJson(_))
    ));
    let Err(ModelError::Invalid(errors)) =
        AppDefinition::from_json(br#"{"id": "/a", "cmd": "x", "cpus": "x"}"#, &root_id())
    else {
        panic!("expected a 422");
    };
    assert_eq!(errors.message, "Invalid JSON");
    assert_eq!(errors.details[0].path, "/cpus");
    assert_eq!(errors.details[0].errors, ["error.expected.jsnumber"]);
    assert_invalid_at(
        json!({"id": 123, "cmd": "x"}),
        "/id",
        "error.expected.jsstring",
    );
    assert_invalid_at(json!({"cmd": "x"}), "/id", "error.path.missing");
    assert_invalid_at(json!(["x"]), "/", "error.expected.jsobject");
    assert_invalid_at(
        json!({"id": "/a", "cmd": "x", "healthChecks": [{"portIndex": "0"}]}),
        "/healthChecks(0)/portIndex",
        "error.expected.jsnumber",
    );
}

#[test]
fn marathons_field_showcase_example_parses_up_to_its_secret() {
    // From Marathon's docs (examples/app.json, trimmed): secrets in env are not
    // supported, and it gives both cmd and args.
    let example = json!({
        "id": "/foo", "instances": 2, "cmd": "sleep 1000", "cpus": 0.1, "disk": 0, "mem": 16,
        "acceptedResourceRoles": ["mesos_role"], "args": ["sleep", "100"],
        "constraints": [["hostname", "LIKE", "srv2.*"]],
        "container": {"type": "DOCKER", "docker": {"image": "mesosphere:marathon/latest",
            "network": "BRIDGE", "parameters": [{"key": "name", "value": "kdc"}],
            "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp",
                "servicePort": 10019, "name": "http", "labels": {"vip": "192.168.0.1:80"}}],
            "privileged": false},
            "volumes": [{"containerPath": "/docker_storage",
                "hostPath": "/hdd/tools/docker/registry", "mode": "RW"}]},
        "dependencies": ["/prod/group"],
        "env": {"XPS1": "Test", "PASSWORD": {"secret": "/db/password"}},
        "healthChecks": [{"gracePeriodSeconds": 300, "intervalSeconds": 20,
            "maxConsecutiveFailures": 3, "path": "/", "portIndex": 0, "protocol": "HTTP",
            "timeoutSeconds": 20}],
        "readinessChecks": [{"name": "myReadyCheck", "protocol": "HTTP", "path": "/v1/plan",
            "portName": "http", "intervalSeconds": 10, "timeoutSeconds": 3,
            "httpStatusCodesForReady": [200], "preserveLastResponse": true}],
        "labels": {"owner": "zeus"}, "maxLaunchDelaySeconds": 3600,
        "fetch": [{"uri": "https://foo.com/setup.py"},
            {"uri": "https://foo.com/archive.zip", "executable": false, "extract": true,
             "cache": true, "destPath": "newname.zip"}],
        "user": "root", "taskKillGracePeriodSeconds": 30, "tty": true
    });
    assert_invalid_at(example.clone(), "/env/PASSWORD", "error.expected.jsstring");
    let mut fixed = example;
    fixed["env"] = json!({"XPS1": "Test"});
    assert_invalid_at(fixed.clone(), "/", "one of 'cmd' or 'args'");
    fixed.as_object_mut().unwrap().remove("args");
    let app = app(fixed);
    assert_eq!(app.network_mode(), NetworkMode::Bridge);
    assert_eq!(app.port_names(), [Some("http".to_string())]);
    assert_eq!(app.fetch[1].dest_path.as_deref(), Some("newname.zip"));
    assert_eq!(app.task_kill_grace_period_seconds, Some(30.0));
    assert_eq!(app.container.unwrap().volumes[0].mode, "RW");
}

#[test]
fn marathons_apps_create_example_parses() {
    let app = app(json!({
        "id": "/test/sleep60", "cmd": "sleep 60", "cpus": 0.3, "instances": 2, "mem": 9,
        "dependencies": ["/test/sleep120", "/other/namespace/or/app"]
    }));
    assert_eq!(app.mem, 9.0);
    assert_eq!(app.dependencies.len(), 2);
}

#[test]
fn each_rule_reports_its_path() {
    let base = || json!({"id": "/a", "cmd": "sleep 1"});
    let with = |patch: Value| {
        let mut value = base();
        for (k, v) in patch.as_object().unwrap() {
            value[k] = v.clone();
        }
        value
    };
    assert_invalid_at(with(json!({"id": "/"})), "/id", "must not be root");
    assert_invalid_at(with(json!({"id": "/A_b"})), "/id", "invalid characters");
    assert_invalid_at(with(json!({"id": "/a/tasks"})), "/id", "reserved keywords");
    assert_invalid_at(
        with(json!({"cmd": ""})),
        "/cmd",
        "must not be an empty string",
    );
    assert_invalid_at(with(json!({"args": ["x"]})), "/", "one of 'cmd' or 'args'");
    assert_invalid_at(json!({"id": "/a"}), "/", "one of 'cmd' or 'args'");
    assert_invalid_at(
        with(json!({"cpus": 0.0})),
        "/cpus",
        "expected 0.001 or more",
    );
    assert_invalid_at(with(json!({"mem": -1})), "/mem", "expected 0.0 or more");
    assert_invalid_at(with(json!({"disk": -1})), "/disk", "or more");
    assert_invalid_at(with(json!({"gpus": -1})), "/gpus", "or more");
    assert_invalid_at(
        with(json!({"instances": -1})),
        "/instances",
        "expected between",
    );
    assert_invalid_at(
        with(json!({"backoffFactor": 0.5})),
        "/backoffFactor",
        "between 1.0 and",
    );
    // Too big to be a delay: refused rather than overflowing later.
    assert_invalid_at(
        with(json!({"backoffFactor": 1e17})),
        "/backoffFactor",
        "and 100.0",
    );
    assert_invalid_at(
        with(json!({"backoffSeconds": -1})),
        "/backoffSeconds",
        "expected between",
    );
    assert_invalid_at(
        with(json!({"maxLaunchDelaySeconds": 1e19})),
        "/maxLaunchDelaySeconds",
        "and 86400.0",
    );
    assert_invalid_at(
        with(json!({"id": format!("/{}", "a".repeat(200))})),
        "/id",
        "at most 190",
    );
    assert_invalid_at(
        with(json!({"readinessChecks": [{"protocol": "HTTPS"}]})),
        "/readinessChecks(0)/protocol",
        "must be HTTP",
    );
    assert_invalid_at(
        with(json!({"taskKillGracePeriodSeconds": -1})),
        "/taskKillGracePeriodSeconds",
        "expected between 0.0 and",
    );
    assert_invalid_at(
        with(json!({"upgradeStrategy": {"minimumHealthCapacity": 1.5}})),
        "/upgradeStrategy/minimumHealthCapacity",
        "between 0.0 and 1.0",
    );
    assert_invalid_at(
        with(json!({"upgradeStrategy": {"maximumOverCapacity": -0.1}})),
        "/upgradeStrategy/maximumOverCapacity",
        "between 0.0 and 1.0",
    );
    assert_invalid_at(
        with(
            json!({"unreachableStrategy": {"inactiveAfterSeconds": 10, "expungeAfterSeconds": 5}}),
        ),
        "/unreachableStrategy/inactiveAfterSeconds",
        "5 or less",
    );
    assert_invalid_at(
        with(json!({"unreachableStrategy": "sometimes"})),
        "/unreachableStrategy",
        "must be \"disabled\" or an object",
    );
    assert_invalid_at(
        with(json!({"upgradeStrategy": [1, 1]})),
        "/upgradeStrategy",
        "error.expected.jsobject",
    );
    assert_invalid_at(
        with(json!({"executor": "/my/executor"})),
        "/executor",
        "command executor",
    );
    assert_invalid_at(
        with(json!({"healthChecks": [{"protocol": "HTTP", "portIndex": 1}]})),
        "/healthChecks(0)",
        "Health check port indices",
    );
    assert_invalid_at(
        with(json!({"healthChecks": [{"protocol": "SMTP"}]})),
        "/healthChecks(0)/protocol",
        "must be one of",
    );
    assert_invalid_at(
        with(json!({"healthChecks": [{"protocol": "HTTPS"}]})),
        "/healthChecks(0)/protocol",
        "plain HTTP",
    );
    assert_invalid_at(
        with(json!({"healthChecks": [{"protocol": "COMMAND"}]})),
        "/healthChecks(0)/command",
        "COMMAND",
    );
    assert_invalid_at(
        with(json!({"healthChecks": [{"protocol": "TCP"}, {"protocol": "TCP"}]})),
        "/healthChecks",
        "at most one",
    );
    assert_invalid_at(
        with(json!({"readinessChecks": [{"portName": "nope"}]})),
        "/readinessChecks(0)/portName",
        "No port definition reference for portName nope",
    );
    assert_invalid_at(
        with(json!({"portDefinitions": [{"name": "http-api"}],
                    "readinessChecks": [{"timeoutSeconds": 30, "intervalSeconds": 30}]})),
        "/readinessChecks(0)/timeoutSeconds",
        "expected less than 30",
    );
    // Seconds beyond a year would be refused by the agents or overflow the
    // framework's own timers: refused here, naming the field.
    assert_invalid_at(
        with(json!({"portDefinitions": [{"name": "http-api"}],
                    "readinessChecks": [{"timeoutSeconds": 1, "intervalSeconds": 1e20}]})),
        "/readinessChecks(0)/intervalSeconds",
        "expected between 0.0 and",
    );
    assert_invalid_at(
        with(json!({"healthChecks": [{"protocol": "TCP", "intervalSeconds": 1e20}]})),
        "/healthChecks(0)/intervalSeconds",
        "expected between 0.0 and",
    );
    assert_invalid_at(
        with(json!({"taskKillGracePeriodSeconds": 1e20})),
        "/taskKillGracePeriodSeconds",
        "expected between 0.0 and",
    );
    assert_invalid_at(
        with(json!({"container": {"type": "RKT"}})),
        "/container/type",
        "MESOS or DOCKER",
    );
    assert_invalid_at(
        with(json!({"container": {"type": "DOCKER"}})),
        "/container/docker",
        "DOCKER",
    );
    assert_invalid_at(
        with(json!({"container": {"type": "DOCKER", "docker": {"image": ""}}})),
        "/container/docker/image",
        "must not be empty",
    );
    assert_invalid_at(
        with(
            json!({"container": {"type": "MESOS", "docker": {"image": "x"},
                    "volumes": [{"containerPath": "/d", "hostPath": "/h", "mode": "RX"}]}}),
        ),
        "/container/volumes(0)/mode",
        "RO or RW",
    );
    assert_invalid_at(with(json!({"env": {"": "x"}})), "/env", "must not be empty");
    assert_invalid_at(
        with(json!({"fetch": [{"uri": ""}]})),
        "/fetch(0)/uri",
        "must not be empty",
    );
    assert_invalid_at(
        with(json!({"labels": {"": "x"}})),
        "/labels",
        "must not be empty",
    );
    assert_invalid_at(
        with(json!({"portDefinitions": [{"port": 80}, {"port": 80}]})),
        "/portDefinitions",
        "Ports must be unique.",
    );
    assert_invalid_at(
        with(json!({"portDefinitions": [{"name": "a"}, {"name": "a"}]})),
        "/portDefinitions",
        "Port names must be unique.",
    );
    assert_invalid_at(
        with(json!({"portDefinitions": [{"port": 70000}]})),
        "/portDefinitions(0)/port",
        "between 0 and 65535",
    );
    assert_invalid_at(
        with(json!({"dependencies": ["../../x"]})),
        "/dependencies(0)",
        "root",
    );
    assert_invalid_at(
        with(json!({"networks": [{"mode": "overlay"}]})),
        "/networks(0)/mode",
        "must be one of",
    );
    assert_invalid_at(
        with(json!({"acceptedResourceRoles": []})),
        "/acceptedResourceRoles",
        "must not be empty",
    );
}

#[test]
fn all_violations_are_reported_at_once() {
    let details = invalid(json!({"id": "/a", "cmd": "x", "cpus": -1, "mem": -1}));
    let paths: Vec<&str> = details.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["/cpus", "/mem"]);
}

#[test]
fn daemon_apps_and_image_only_apps_are_valid() {
    let daemon =
        app(json!({"id": "/d", "cmd": "x", "labels": {"AGORA_DAEMON": "true"}, "instances": 0}));
    assert!(daemon.is_daemon());
    assert_eq!(daemon.to_json()["labels"]["AGORA_DAEMON"], "true");
    let image =
        app(json!({"id": "/i", "container": {"type": "MESOS", "docker": {"image": "busybox"}}}));
    assert_eq!(image.cmd, None);
}

// ---------------------------------------------------------------- groups

fn update(value: Value) -> GroupUpdate {
    GroupUpdate::from_json(value.to_string().as_bytes()).unwrap()
}

fn t(millis: i64) -> Timestamp {
    Timestamp::from_millis(millis)
}

fn sample_root() -> RootGroup {
    RootGroup::default()
        .apply_group_update(
            &root_id(),
            update(json!({
                "id": "/",
                "groups": [{
                    "id": "/tools",
                    "apps": [
                        {"id": "/tools/oauth", "cmd": "x", "instances": 2, "ports": [1980]},
                        {"id": "datadog", "cmd": "x", "instances": 5}
                    ],
                    "groups": [
                        {"id": "/tools/log", "apps": [], "groups": [], "version": "2015-09-17T10:38:20.875Z"},
                        {"id": "docker", "apps": [{"id": "registry", "cmd": "x", "instances": 3,
                            "dependencies": ["/tools/oauth"]}],
                         "dependencies": ["../log"]}
                    ]
                }]
            })),
            t(1000),
            true,
        )
        .unwrap()
}

#[test]
fn a_nested_group_body_creates_apps_and_groups() {
    let root = sample_root();
    let apps: Vec<&str> = root.apps.keys().map(PathId::as_str).collect();
    assert_eq!(
        apps,
        ["/tools/datadog", "/tools/docker/registry", "/tools/oauth"]
    );
    assert_eq!(
        root.apps[&id("/tools/oauth")]
            .port_definitions
            .as_ref()
            .unwrap()[0]
            .port,
        1980
    );
    let groups: Vec<String> = root.group_ids().iter().map(PathId::to_string).collect();
    assert_eq!(groups, ["/", "/tools", "/tools/docker", "/tools/log"]);
    assert_eq!(
        root.groups[&id("/tools/docker")].dependencies,
        [id("/tools/log")]
    );
    assert_eq!(root.groups[&id("/tools/log")].version, t(1000));
    assert_eq!(root.version, Some(t(1000)));
    assert!(root.validate().is_ok());
}

#[test]
fn replace_removes_what_the_body_does_not_name_and_merge_keeps_it() {
    let root = sample_root();
    let body = json!({
        "apps": [{"id": "oauth", "cmd": "y"}],
        "groups": [{"id": "docker", "dependencies": []}]
    });
    let replaced = root
        .apply_group_update(&id("/tools"), update(body.clone()), t(2000), true)
        .unwrap();
    let apps: Vec<&str> = replaced.apps.keys().map(PathId::as_str).collect();
    // datadog is not named; /tools/log is not named; /tools/docker is named without apps.
    assert_eq!(apps, ["/tools/docker/registry", "/tools/oauth"]);
    assert_eq!(replaced.apps[&id("/tools/oauth")].cmd.as_deref(), Some("y"));
    assert!(!replaced.group_ids().contains(&id("/tools/log")));
    assert!(
        replaced.groups[&id("/tools/docker")]
            .dependencies
            .is_empty()
    );
    // Removing /tools/log while /tools/docker still depends on it is refused.
    let dangling = json!({"groups": [{"id": "docker"}]});
    assert!(matches!(
        root.apply_group_update(&id("/tools"), update(dangling), t(2000), true),
        Err(ModelError::Invalid(e)) if e.details[0].path == "/groups(/tools/docker)/dependencies(0)"
    ));

    let merged = sample_root()
        .apply_group_update(
            &id("/tools"),
            update(json!({"apps": [{"id": "oauth", "cmd": "y"}], "groups": [{"id": "new"}]})),
            t(2000),
            false,
        )
        .unwrap();
    assert_eq!(merged.apps.len(), 3);
    assert_eq!(merged.apps[&id("/tools/oauth")].cmd.as_deref(), Some("y"));
    assert!(merged.group_ids().contains(&id("/tools/log")));
    assert!(merged.group_ids().contains(&id("/tools/new")));
    // Not given, the docker group's dependencies stay.
    assert_eq!(
        merged.groups[&id("/tools/docker")].dependencies,
        [id("/tools/log")]
    );
}

#[test]
fn group_updates_report_invalid_apps_under_their_path() {
    let Err(ModelError::Invalid(errors)) = sample_root().apply_group_update(
        &id("/tools"),
        update(
            json!({"groups": [{"id": "docker", "apps": [{"id": "r", "cmd": "x", "cpus": -1}]}]}),
        ),
        t(2000),
        true,
    ) else {
        panic!("expected a 422");
    };
    assert_eq!(errors.details[0].path, "/groups(0)/apps(0)/cpus");

    let Err(ModelError::Invalid(errors)) = sample_root().apply_group_update(
        &id("/tools"),
        update(json!({"apps": [{"id": "/elsewhere/x", "cmd": "x"}]})),
        t(2000),
        true,
    ) else {
        panic!("expected a 422");
    };
    assert_eq!(errors.details[0].path, "/apps(0)/id");
    assert!(errors.details[0].errors[0].contains("not child of '/tools'"));

    assert!(matches!(
        GroupUpdate::from_json(br#"{"apps": {}}"#),
        Err(ModelError::Invalid(e)) if e.details[0].path == "/apps"
    ));
    assert!(matches!(
        GroupUpdate::from_json(b"nope"),
        Err(ModelError::InvalidJson(_))
    ));
}

#[test]
fn scale_by_multiplies_every_app_in_the_group_rounding_up() {
    let scaled = sample_root()
        .apply_group_update(
            &id("/tools/docker"),
            update(json!({"scaleBy": 1.5})),
            t(3000),
            false,
        )
        .unwrap();
    assert_eq!(scaled.apps[&id("/tools/docker/registry")].instances, 5); // ceil(4.5)
    assert_eq!(scaled.apps[&id("/tools/oauth")].instances, 2);
    let scaled = sample_root()
        .apply_group_update(
            &id("/tools"),
            update(json!({"scaleBy": 0.5})),
            t(3000),
            false,
        )
        .unwrap();
    let instances: Vec<i64> = scaled.apps.values().map(|a| a.instances).collect();
    assert_eq!(instances, [3, 2, 1]); // ceil(2.5), ceil(1.5), ceil(1.0)
    assert!(
        sample_root()
            .apply_group_update(
                &id("/tools"),
                update(json!({"scaleBy": -1})),
                t(3000),
                false
            )
            .is_err()
    );
    assert!(
        sample_root()
            .apply_group_update(
                &id("/tools"),
                update(json!({"scaleBy": 1e12})),
                t(3000),
                false
            )
            .is_err()
    );
}

#[test]
fn a_version_body_is_a_rollback_left_to_the_caller() {
    let body = update(json!({"version": "2015-09-17T10:38:20.875Z"}));
    assert!(body.is_rollback());
    assert!(matches!(
        sample_root().apply_group_update(&id("/tools"), body, t(1), true),
        Err(ModelError::Invalid(e)) if e.details[0].path == "/version"
    ));
    assert_eq!(
        update(json!({"id": "x"})).group_id(&id("/prod")).unwrap(),
        id("/prod/x")
    );
}

#[test]
fn removing_groups_and_apps() {
    let root = sample_root();
    let without = root.remove_group(&id("/tools/docker")).unwrap();
    assert_eq!(without.apps.len(), 2);
    assert!(!without.group_ids().contains(&id("/tools/docker")));
    assert!(root.remove_group(&id("/nope")).is_err());
    let empty = root.remove_group(&root_id()).unwrap();
    assert!(empty.apps.is_empty() && empty.groups.is_empty());

    let without = root.remove_app(&id("/tools/oauth")).unwrap();
    assert!(!without.apps.contains_key(&id("/tools/oauth")));
    assert!(root.remove_app(&id("/tools/nope")).is_none());
}

#[test]
fn groups_render_as_marathon_nests_them() {
    let root = sample_root();
    let render = |app: &AppDefinition| json!({"id": app.id});
    let tools = root
        .to_group_json(&id("/tools"), &render, true, true)
        .unwrap();
    assert_eq!(tools["id"], "/tools");
    assert_eq!(
        tools["apps"],
        json!([{"id": "/tools/datadog"}, {"id": "/tools/oauth"}])
    );
    assert_eq!(tools["groups"][0]["id"], "/tools/docker");
    assert_eq!(
        tools["groups"][0]["apps"][0]["id"],
        "/tools/docker/registry"
    );
    assert_eq!(tools["groups"][0]["dependencies"], json!(["/tools/log"]));
    assert_eq!(tools["groups"][1]["id"], "/tools/log");
    assert_eq!(tools["pods"], json!([]));
    assert_eq!(tools["version"], "1970-01-01T00:00:01.000Z");
    let bare = root
        .to_group_json(&root_id(), &render, false, false)
        .unwrap();
    assert_eq!(bare["id"], "/");
    assert!(bare.get("apps").is_none() && bare.get("groups").is_none());
    assert!(
        root.to_group_json(&id("/nope"), &render, true, true)
            .is_none()
    );
}

#[test]
fn root_validation_catches_id_clashes_and_unknown_dependencies() {
    let mut root = sample_root();
    let mut clash = root.apps[&id("/tools/oauth")].clone();
    clash.id = id("/tools/docker");
    root.apps.insert(clash.id.clone(), clash);
    let errors = root.validate().unwrap_err();
    assert!(errors.details.iter().any(|v| v.path == "/tools/docker"
        && v.errors[0] == "Groups and Applications may not have the same identifier."));

    let Err(ModelError::Invalid(errors)) = sample_root().apply_group_update(
        &id("/tools"),
        update(json!({"apps": [{"id": "x", "cmd": "x", "dependencies": ["ghost"]}]})),
        t(2000),
        false,
    ) else {
        panic!("expected a 422");
    };
    assert_eq!(errors.details[0].path, "/apps(/tools/x)/dependencies(0)");
}
