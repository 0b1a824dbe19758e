//! Turning an app instance into the `TaskInfo` launched on an offer: command, the
//! environment Marathon gives its tasks (`TaskBuilder.scala`, `EnvironmentHelper`),
//! resources and host ports, container image and volumes, health check and kill
//! policy.
//!
//! Agora's tasks share their agent's network, so a port mapping's `containerPort` is
//! only what the task is told (`$PORT_<containerPort>`); it must listen on its host
//! port.

use agora_sdk::proto as pb;
use agora_sdk::{OfferError, OfferResources, TaskBuilder};

use super::AppDefinition;
use super::app::HealthCheck;

/// Marathon leaves out label variables longer than this (`EnvironmentHelper`).
const MAX_LABEL_ENV_LENGTH: usize = 512;
const LABEL_PREFIX: &str = "MARATHON_APP_LABEL_";
/// A figure the agent must not read as "unset" (protobuf cannot tell 0 from unset,
/// and 0 means Mesos' default there): Marathon's 0 seconds becomes (almost) none.
const ALMOST_NO_SECONDS: f64 = 0.001;

/// One port of the app, as its definition declares it.
#[derive(Clone, Debug, PartialEq)]
struct PortRequest {
    name: Option<String>,
    /// The container port of a mapping, or the port of a definition (0: any).
    declared: u64,
    /// The host port to take: None for none, Some(0) for any offered port.
    host: Option<u64>,
}

/// Builds the task `task_id` of `app` on `room` (taking its resources from it), on
/// agent `host`; returns it with the host ports it got, in port order.
///
/// Host ports: a port definition takes any offered port, or exactly its `port` when
/// the app has `requirePorts`; a port mapping takes its `hostPort` (0: any offered
/// port, absent: none). An offer without a required port does not fit.
pub fn build_task(
    app: &AppDefinition,
    task_id: &str,
    room: &mut OfferResources,
    host: &str,
) -> Result<(pb::TaskInfo, Vec<u64>), OfferError> {
    let invalid = |reason: String| OfferError::InvalidTask {
        task_id: task_id.to_string(),
        reason,
    };
    let requests = port_requests(app);
    let mut builder = TaskBuilder::new(task_id)
        .name(task_name(app))
        .command(command(app))
        .cpus(app.cpus)
        .mem(app.mem)
        .disk(app.disk)
        .gpus(app.gpus as f64)
        .host_ports(requests.iter().filter_map(|r| r.host).collect());
    for (key, value) in &app.labels {
        builder = builder.label(key, value);
    }
    if let Some(container) = &app.container {
        builder = builder.container_type(if container.kind == "DOCKER" {
            pb::container_info::Type::Docker
        } else {
            pb::container_info::Type::Mesos
        });
        if let Some(docker) = &container.docker {
            builder = builder.image(&docker.image);
        }
        for volume in &container.volumes {
            builder = builder.volume(pb::Volume {
                container_path: volume.container_path.clone(),
                host_path: volume.host_path.clone().unwrap_or_default(),
                mode: if volume.mode == "RO" {
                    pb::volume::Mode::Ro
                } else {
                    pb::volume::Mode::Rw
                } as i32,
            });
        }
    }
    if let Some(grace) = app.task_kill_grace_period_seconds {
        builder = builder.kill_grace_period(grace);
    }

    let assigned = room.assign_ports(&builder)?;
    let mut assigned_iter = assigned.iter().copied();
    let host_ports: Vec<Option<u64>> = requests
        .iter()
        .map(|r| r.host.and_then(|_| assigned_iter.next()))
        .collect();
    if let Some(check) = app.health_checks.first() {
        let check = health_check(check, &requests, &host_ports).map_err(invalid)?;
        builder = builder.health_check(check);
    }
    builder = builder.host_ports(assigned.clone());
    for (name, value) in environment(app, task_id, host, &requests, &host_ports) {
        builder = builder.env(name, value);
    }
    let info = room.take(&builder)?;
    Ok((info, assigned))
}

/// Marathon names tasks after the app id, reversed and dotted (`/prod/web` →
/// `web.prod`); a name too long for the protocol falls back to the task id.
fn task_name(app: &AppDefinition) -> String {
    let mut segments: Vec<&str> = app.id.segments().collect();
    segments.reverse();
    let name = segments.join(".");
    if name.len() <= 255 {
        name
    } else {
        String::new()
    }
}

fn command(app: &AppDefinition) -> pb::CommandInfo {
    let mut command = pb::CommandInfo {
        user: app.user.clone().unwrap_or_default(),
        uris: app
            .fetch
            .iter()
            .map(|artifact| pb::command_info::Uri {
                value: artifact.uri.clone(),
                executable: artifact.executable,
                extract: artifact.extract,
                cache: artifact.cache,
                output_file: artifact.dest_path.clone().unwrap_or_default(),
            })
            .collect(),
        ..Default::default()
    };
    match (&app.cmd, &app.args) {
        (Some(cmd), _) if !cmd.is_empty() => {
            command.shell = true;
            command.value = cmd.clone();
        }
        (_, Some(args)) if !args.is_empty() => {
            // Mesos' form: the program, then argv with the program as argv[0]. (An
            // image's entrypoint is not prepended: the task runs `args` as given.)
            command.value = args[0].clone();
            command.arguments = args.clone();
        }
        // An image alone: its entrypoint and command run, as Docker runs them.
        _ => {}
    }
    command
}

fn port_requests(app: &AppDefinition) -> Vec<PortRequest> {
    let port = |p: i64| u64::try_from(p).unwrap_or(0);
    match app.port_mappings() {
        Some(mappings) => mappings
            .iter()
            .map(|m| PortRequest {
                name: m.name.clone(),
                declared: port(m.container_port),
                host: m.host_port.map(port),
            })
            .collect(),
        None => app
            .port_definitions
            .iter()
            .flatten()
            .map(|d| PortRequest {
                name: d.name.clone(),
                declared: port(d.port),
                host: Some(if app.require_ports { port(d.port) } else { 0 }),
            })
            .collect(),
    }
}

/// Marathon's task environment, in order; later entries win (the app's own `env`
/// comes last and overrides everything, as in Marathon).
fn environment(
    app: &AppDefinition,
    task_id: &str,
    host: &str,
    requests: &[PortRequest],
    host_ports: &[Option<u64>],
) -> Vec<(String, String)> {
    let mut env = Environment::default();
    env.set("MESOS_TASK_ID", task_id);
    env.set("MARATHON_APP_ID", app.id.as_str());
    if let Some(version) = &app.version {
        env.set("MARATHON_APP_VERSION", version.to_string());
    }
    if let Some(container) = &app.container
        && container.kind == "DOCKER"
        && let Some(docker) = &container.docker
    {
        env.set("MARATHON_APP_DOCKER_IMAGE", &docker.image);
    }
    // Scala's Double.toString: 1.0, 0.5, 128.0.
    env.set("MARATHON_APP_RESOURCE_CPUS", format!("{:?}", app.cpus));
    env.set("MARATHON_APP_RESOURCE_MEM", format!("{:?}", app.mem));
    env.set("MARATHON_APP_RESOURCE_DISK", format!("{:?}", app.disk));
    env.set("MARATHON_APP_RESOURCE_GPUS", app.gpus.to_string());
    let labels: Vec<(String, &String)> = app
        .labels
        .iter()
        .filter(|(key, value)| {
            key.len() < MAX_LABEL_ENV_LENGTH - LABEL_PREFIX.len()
                && value.len() < MAX_LABEL_ENV_LENGTH
        })
        .map(|(key, value)| (label_env_name(key), value))
        .collect();
    env.set(
        "MARATHON_APP_LABELS",
        labels
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    );
    for (name, value) in &labels {
        env.set(format!("{LABEL_PREFIX}{name}"), value.as_str());
    }
    ports_environment(&mut env, requests, host_ports);
    env.set("HOST", host);
    for (name, value) in &app.env {
        env.set(name, value);
    }
    env.0
}

/// `EnvironmentHelper.portsEnv`: `PORT<index>`, `PORT_<declared port>`,
/// `PORT_<NAME>`, `PORT` and `PORTS`. A mapping with neither host nor container port
/// gets no variables (Marathon would invent a container port; with the host's
/// network there is none to invent).
fn ports_environment(env: &mut Environment, requests: &[PortRequest], host_ports: &[Option<u64>]) {
    if requests.is_empty() {
        return;
    }
    for (index, (request, host_port)) in requests.iter().zip(host_ports).enumerate() {
        let effective = host_port.or((request.declared != 0).then_some(request.declared));
        let Some(effective) = effective else {
            continue;
        };
        env.set(format!("PORT{index}"), effective.to_string());
        let key = if request.declared != 0 {
            request.declared
        } else {
            effective
        };
        env.set(format!("PORT_{key}"), effective.to_string());
        if let Some(name) = &request.name {
            env.set(
                format!("PORT_{}", name.to_uppercase()),
                effective.to_string(),
            );
        }
    }
    let assigned: Vec<String> = host_ports.iter().flatten().map(u64::to_string).collect();
    if let Some(first) = assigned.first() {
        env.set("PORT", first.clone());
    }
    env.set("PORTS", assigned.join(","));
}

/// `MARATHON_APP_LABEL_<NAME>`: runs of characters other than `[a-zA-Z0-9_]` become
/// one `_`, then upper case.
fn label_env_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut in_run = false;
    for c in key.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c.to_ascii_uppercase());
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    out
}

/// An ordered environment in which setting a name again replaces its value.
#[derive(Default)]
struct Environment(Vec<(String, String)>);

impl Environment {
    fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }
}

/// The agent's health check for Marathon's `check`. HTTP(S)/MESOS_HTTP → HTTP, TCP /
/// MESOS_TCP → TCP, COMMAND → a shell command; the port is `port`, or the task's
/// port at `portIndex` (0 when neither is given). Marathon-level checks (HTTP, TCP)
/// have no start delay and never kill at `maxConsecutiveFailures: 0`; Mesos-level ones
/// wait `delaySeconds` and count 0 as 1, as Mesos does.
fn health_check(
    check: &HealthCheck,
    requests: &[PortRequest],
    host_ports: &[Option<u64>],
) -> Result<pb::HealthCheck, String> {
    use pb::health_check::Type;
    let mesos_level = check.protocol.starts_with("MESOS_") || check.protocol == "COMMAND";
    let seconds = |value: f64| {
        if value > 0.0 {
            value
        } else {
            ALMOST_NO_SECONDS
        }
    };
    let failures = u32::try_from(check.max_consecutive_failures).unwrap_or(u32::MAX);
    let mut out = pb::HealthCheck {
        delay_seconds: if mesos_level {
            seconds(check.delay_seconds)
        } else {
            ALMOST_NO_SECONDS
        },
        interval_seconds: seconds(check.interval_seconds),
        timeout_seconds: seconds(check.timeout_seconds),
        consecutive_failures: match (failures, mesos_level) {
            (0, true) => 1,
            (0, false) => u32::MAX,
            (n, _) => n,
        },
        grace_period_seconds: seconds(check.grace_period_seconds),
        ..Default::default()
    };
    if check.protocol == "COMMAND" {
        let value = check
            .command
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or_default();
        out.r#type = Type::Command as i32;
        out.command = Some(pb::CommandInfo {
            shell: true,
            value,
            ..Default::default()
        });
        return Ok(out);
    }
    let port = match (check.port, check.port_index) {
        (Some(port), _) => u64::try_from(port).ok(),
        (None, index) => {
            let index = usize::try_from(index.unwrap_or(0)).unwrap_or(usize::MAX);
            match (host_ports.get(index), requests.get(index)) {
                (Some(Some(port)), _) => Some(*port),
                (_, Some(request)) if request.declared != 0 => Some(request.declared),
                _ => None,
            }
        }
    };
    let port = port
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| (1..=65_535).contains(p))
        .ok_or_else(|| "the health check's port does not name a port of the task".to_string())?;
    if check.protocol.ends_with("TCP") {
        out.r#type = Type::Tcp as i32;
        out.tcp = Some(pb::health_check::Tcp { port });
    } else {
        out.r#type = Type::Http as i32;
        out.http = Some(pb::health_check::Http {
            port,
            path: check.path.clone().unwrap_or_else(|| "/".to_string()),
            scheme: "http".to_string(),
            statuses: Vec::new(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use agora_sdk::Resources;
    use serde_json::{Value, json};

    use super::*;
    use crate::model::{PathId, Timestamp};

    fn app(value: Value) -> AppDefinition {
        let mut app = AppDefinition::from_value(value, &PathId::root()).unwrap();
        app.version = Some(Timestamp::from_millis(1_000));
        app
    }

    fn room(resources: &str) -> OfferResources {
        OfferResources::new(&pb::Offer {
            id: Some(pb::OfferId { value: "o1".into() }),
            agent_id: Some(pb::AgentId { value: "a1".into() }),
            hostname: "host1".into(),
            resources: Resources::parse(resources).unwrap().to_proto(),
            ..Default::default()
        })
        .unwrap()
    }

    fn env(info: &pb::TaskInfo) -> BTreeMap<String, String> {
        let vars = &info
            .command
            .as_ref()
            .unwrap()
            .environment
            .as_ref()
            .unwrap()
            .variables;
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        assert_eq!(map.len(), vars.len(), "no variable is set twice");
        map
    }

    #[test]
    fn marathons_task_environment_and_dynamic_ports() {
        let app = app(json!({
            "id": "/prod/web", "cmd": "serve", "cpus": 0.5, "mem": 64,
            "portDefinitions": [{"port": 0, "name": "http"}, {"port": 9000}],
            "labels": {"team": "infra", "a.b-c": "x"},
            "env": {"HOST": "overridden", "GREETING": "hi"}
        }));
        let mut room = room("cpus:2;mem:1000;ports:[31000-31010]");
        let (info, ports) =
            build_task(&app, "prod_web.instance-1._app.1", &mut room, "host1").unwrap();
        assert_eq!(ports, [31000, 31001]);
        assert_eq!(info.name, "web.prod");
        let env = env(&info);
        let expected = [
            ("MESOS_TASK_ID", "prod_web.instance-1._app.1"),
            ("MARATHON_APP_ID", "/prod/web"),
            ("MARATHON_APP_VERSION", "1970-01-01T00:00:01.000Z"),
            ("MARATHON_APP_RESOURCE_CPUS", "0.5"),
            ("MARATHON_APP_RESOURCE_MEM", "64.0"),
            ("MARATHON_APP_RESOURCE_DISK", "0.0"),
            ("MARATHON_APP_RESOURCE_GPUS", "0"),
            ("MARATHON_APP_LABELS", "A_B_C TEAM"),
            ("MARATHON_APP_LABEL_TEAM", "infra"),
            ("MARATHON_APP_LABEL_A_B_C", "x"),
            ("PORT0", "31000"),
            ("PORT1", "31001"),
            ("PORT_31000", "31000"),
            ("PORT_9000", "31001"),
            ("PORT_HTTP", "31000"),
            ("PORT", "31000"),
            ("PORTS", "31000,31001"),
            ("HOST", "overridden"),
            ("GREETING", "hi"),
        ];
        for (name, value) in expected {
            assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
        }
        assert_eq!(env.len(), expected.len());
        let used = Resources::from_proto(&info.resources).unwrap();
        assert_eq!(
            used,
            Resources::parse("cpus:0.5;mem:64;ports:[31000-31001]").unwrap()
        );
        assert_eq!(room.remaining().cpus(), 1.5);
        let command = info.command.unwrap();
        assert!(command.shell);
        assert_eq!(command.value, "serve");
        assert_eq!(info.labels.unwrap().labels.len(), 2);
    }

    #[test]
    fn require_ports_takes_exactly_the_declared_ports() {
        let app = app(json!({
            "id": "/a", "cmd": "x", "requirePorts": true,
            "portDefinitions": [{"port": 31005}, {"port": 0}]
        }));
        let mut offer = room("cpus:2;mem:1000;ports:[31000-31010]");
        let (_, ports) = build_task(&app, "t1", &mut offer, "h").unwrap();
        assert_eq!(ports, [31005, 31000]);

        let mut lacking = room("cpus:2;mem:1000;ports:[31000-31004]");
        let before = lacking.remaining().clone();
        let err = build_task(&app, "t2", &mut lacking, "h").unwrap_err();
        assert!(
            matches!(&err, OfferError::DoesNotFit { resource, .. } if resource == "port 31005"),
            "{err}"
        );
        assert_eq!(lacking.remaining(), &before);

        // Without requirePorts the declared port is only a name: any port will do.
        let loose = AppDefinition {
            require_ports: false,
            ..app
        };
        let (_, ports) = build_task(&loose, "t3", &mut lacking, "h").unwrap();
        assert_eq!(ports, [31000, 31001]);
    }

    #[test]
    fn bridge_port_mappings_export_container_ports_and_names() {
        let app = app(json!({
            "id": "/a", "networks": [{"mode": "container/bridge"}],
            "container": {"type": "DOCKER", "docker": {"image": "nginx"},
                "portMappings": [{"containerPort": 80, "name": "http"}, {"containerPort": 0, "hostPort": 31009}]},
            "args": ["nginx", "-g", "daemon off;"]
        }));
        let mut room = room("cpus:2;mem:1000;ports:[31000-31010]");
        let (info, ports) = build_task(&app, "t", &mut room, "h").unwrap();
        assert_eq!(ports, [31000, 31009]);
        let env = env(&info);
        assert_eq!(env["PORT0"], "31000");
        assert_eq!(env["PORT_80"], "31000");
        assert_eq!(env["PORT_HTTP"], "31000");
        assert_eq!(env["PORT1"], "31009");
        assert_eq!(env["PORT_31009"], "31009");
        assert_eq!(env["MARATHON_APP_DOCKER_IMAGE"], "nginx");
        let container = info.container.unwrap();
        assert_eq!(container.r#type, pb::container_info::Type::Docker as i32);
        assert_eq!(container.image.unwrap().name, "nginx");
        let command = info.command.unwrap();
        assert!(!command.shell);
        assert_eq!(command.value, "nginx");
        assert_eq!(command.arguments, ["nginx", "-g", "daemon off;"]);
    }

    #[test]
    fn health_checks_map_onto_the_agents_checks() {
        let mut room = room("cpus:8;mem:8000;ports:[31000-31010]");
        let http = app(json!({
            "id": "/a", "cmd": "x", "portDefinitions": [{}, {}],
            "healthChecks": [{"protocol": "HTTP", "portIndex": 1, "path": "/health",
                              "maxConsecutiveFailures": 0, "gracePeriodSeconds": 0}]
        }));
        let (info, ports) = build_task(&http, "t1", &mut room, "h").unwrap();
        let check = info.health_check.unwrap();
        assert_eq!(check.r#type, pb::health_check::Type::Http as i32);
        let http_check = check.http.unwrap();
        assert_eq!(u64::from(http_check.port), ports[1]);
        assert_eq!(http_check.path, "/health");
        assert_eq!(check.interval_seconds, 60.0);
        assert_eq!(check.timeout_seconds, 20.0);
        // Marathon-level: no delay, never killed at 0 failures, 0 grace is (almost) none.
        assert_eq!(check.delay_seconds, ALMOST_NO_SECONDS);
        assert_eq!(check.consecutive_failures, u32::MAX);
        assert_eq!(check.grace_period_seconds, ALMOST_NO_SECONDS);

        let tcp = app(json!({
            "id": "/a", "cmd": "x",
            "healthChecks": [{"protocol": "MESOS_TCP", "port": 8080, "maxConsecutiveFailures": 0}]
        }));
        let check = build_task(&tcp, "t2", &mut room, "h")
            .unwrap()
            .0
            .health_check
            .unwrap();
        assert_eq!(check.r#type, pb::health_check::Type::Tcp as i32);
        assert_eq!(check.tcp.unwrap().port, 8080);
        assert_eq!(check.delay_seconds, 15.0);
        assert_eq!(check.consecutive_failures, 1);
        assert_eq!(check.grace_period_seconds, 300.0);

        let command = app(json!({
            "id": "/a", "cmd": "x",
            "healthChecks": [{"protocol": "COMMAND", "command": {"value": "test -f /tmp/ok"}}]
        }));
        let check = build_task(&command, "t3", &mut room, "h")
            .unwrap()
            .0
            .health_check
            .unwrap();
        assert_eq!(check.r#type, pb::health_check::Type::Command as i32);
        let run = check.command.unwrap();
        assert!(run.shell);
        assert_eq!(run.value, "test -f /tmp/ok");
    }

    #[test]
    fn fetch_user_volumes_gpus_and_kill_policy_reach_the_task() {
        let app = app(json!({
            "id": "/a", "cmd": "./run.sh", "user": "nobody", "gpus": 1,
            "fetch": [{"uri": "http://x/run.sh", "executable": true, "extract": false,
                       "destPath": "run.sh"}],
            "container": {"type": "MESOS", "docker": {"image": "busybox"},
                "volumes": [{"containerPath": "/data", "hostPath": "/srv/data", "mode": "RO"}]},
            "taskKillGracePeriodSeconds": 30
        }));
        let mut room = room("cpus:2;mem:1000;gpus:1;ports:[31000-31000]");
        let (info, _) = build_task(&app, "t", &mut room, "h").unwrap();
        let command = info.command.as_ref().unwrap();
        assert_eq!(command.user, "nobody");
        assert_eq!(
            command.uris,
            [pb::command_info::Uri {
                value: "http://x/run.sh".into(),
                executable: true,
                extract: false,
                cache: false,
                output_file: "run.sh".into(),
            }]
        );
        let container = info.container.as_ref().unwrap();
        assert_eq!(container.r#type, pb::container_info::Type::Mesos as i32);
        assert_eq!(container.volumes[0].host_path, "/srv/data");
        assert_eq!(container.volumes[0].mode, pb::volume::Mode::Ro as i32);
        assert!(!env(&info).contains_key("MARATHON_APP_DOCKER_IMAGE"));
        assert_eq!(info.kill_policy.unwrap().grace_period_seconds, Some(30.0));
        assert_eq!(room.remaining().scalar("gpus"), 0.0);
    }

    #[test]
    fn an_app_too_big_for_the_offer_does_not_fit() {
        let app = app(json!({"id": "/a", "cmd": "x", "mem": 2048}));
        let mut room = room("cpus:2;mem:1000;ports:[31000-31000]");
        let err = build_task(&app, "t", &mut room, "h").unwrap_err();
        assert!(
            matches!(&err, OfferError::DoesNotFit { resource, .. } if resource == "mem"),
            "{err}"
        );
    }

    #[test]
    fn label_names_are_escaped_as_marathon_escapes_them() {
        assert_eq!(label_env_name("a.b--c_d"), "A_B_C_D");
        assert_eq!(label_env_name("HAPROXY_0_VHOST"), "HAPROXY_0_VHOST");
    }
}
