//! [`AppDefinition::validate`]: Marathon's checks (`AppValidation`, `AppDefinition`'s
//! validator and the RAML limits of `app.raml`), with Marathon's paths and, where it
//! has them, its messages; plus what Agora's agents cannot run.

use std::collections::BTreeSet;

use agora_sdk::MAX_TIMEOUT_SECONDS;

use super::app::{HealthCheck, PortMapping, ReadinessCheck, UnreachableStrategy};
use super::validation::Violations;
use super::{AppDefinition, PathId, ValidationErrors};
use crate::placement::Constraint;

/// Path segments Marathon reserves for its own routes (`/v2/apps/<id>/tasks`, ...).
const RESERVED_NAMES: [&str; 3] = ["restart", "tasks", "versions"];
/// Health check protocols Marathon knows.
const HEALTH_PROTOCOLS: [&str; 7] = [
    "HTTP",
    "HTTPS",
    "TCP",
    "COMMAND",
    "MESOS_HTTP",
    "MESOS_HTTPS",
    "MESOS_TCP",
];
/// Room left for the variables Agora adds (ports, labels, Marathon's task context)
/// under the protocol's 1024 variables per task.
const MAX_ENV_VARS: usize = 768;
/// The protocol's limits on one variable.
const MAX_ENV_NAME_BYTES: usize = 255;
const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
/// The protocol's limit on fetched URIs per task.
const MAX_FETCH_URIS: usize = 64;
/// Marathon's `instances` is an int32.
const MAX_INSTANCES: i64 = i32::MAX as i64;
const MAX_PORT: i64 = 65_535;

impl AppDefinition {
    /// Checks a normalised app. Every violation is reported, each under the path of
    /// the field it concerns (`/cpus`, `/healthChecks(0)/portIndex`; `/` for rules
    /// that concern several fields).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut v = Violations::default();
        self.validate_id(&mut v);
        self.validate_command(&mut v);
        self.validate_resources(&mut v);
        self.validate_strategies(&mut v);
        self.validate_ports(&mut v);
        self.validate_container(&mut v);
        for (index, check) in self.health_checks.iter().enumerate() {
            self.validate_health_check(&format!("/healthChecks({index})"), check, &mut v);
        }
        if self.health_checks.len() > 1 {
            v.add(
                "/healthChecks",
                "Agora runs an app's health check on the agent, one per task: give at most one",
            );
        }
        if self.readiness_checks.len() > 1 {
            v.add(
                "/readinessChecks",
                format!("got {}, expected 1 or less", self.readiness_checks.len()),
            );
        }
        for (index, check) in self.readiness_checks.iter().enumerate() {
            self.validate_readiness_check(&format!("/readinessChecks({index})"), check, &mut v);
        }
        for (index, fields) in self.constraints.iter().enumerate() {
            if let Err(error) = Constraint::parse(fields) {
                v.add(format!("/constraints({index})"), error);
            }
        }
        self.validate_env_and_labels(&mut v);
        for (index, dependency) in self.dependencies.iter().enumerate() {
            match PathId::parse(dependency) {
                Ok(id) if id.as_str() == dependency && !id.is_root() => {}
                Ok(_) => v.add(
                    format!("/dependencies({index})"),
                    "must be an absolute id, not the root",
                ),
                Err(error) => v.add(format!("/dependencies({index})"), error),
            }
        }
        v.into_result()
    }

    fn validate_id(&self, v: &mut Violations) {
        match PathId::parse(self.id.as_str()) {
            Err(error) => v.add("/id", error),
            Ok(id) if id != self.id => v.add("/id", "must be an absolute, normalised path"),
            Ok(id) if id.is_root() => v.add("/id", "must not be root"),
            Ok(id) if id.as_str().len() > MAX_APP_ID_LEN => v.add(
                "/id",
                format!("must be at most {MAX_APP_ID_LEN} characters long (its task ids must fit the protocol)"),
            ),
            Ok(id) => {
                if id
                    .segments()
                    .last()
                    .is_some_and(|s| RESERVED_NAMES.contains(&s))
                {
                    v.add(
                        "/id",
                        format!(
                            "must not end with any of the following reserved keywords: {}",
                            RESERVED_NAMES.join(", ")
                        ),
                    );
                }
            }
        }
    }

    fn validate_command(&self, v: &mut Violations) {
        if self.cmd.as_deref() == Some("") {
            v.add("/cmd", "must not be an empty string");
        }
        let cmd = self.cmd.as_deref().is_some_and(|c| !c.is_empty());
        let args = self.args.as_ref().is_some_and(|a| !a.is_empty());
        // Marathon also accepts an imageless MESOS container without a command; on
        // Agora it would have nothing to run.
        let image = self.container.as_ref().is_some_and(|c| c.docker.is_some());
        if !((cmd ^ args) || (!(cmd && args) && image)) {
            v.add(
                "/",
                "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.",
            );
        }
        if !(self.executor.is_empty() || self.executor == "//cmd") {
            v.add(
                "/executor",
                "Agora runs apps with its command executor: leave it empty or \"//cmd\"",
            );
        }
    }

    fn validate_resources(&self, v: &mut Violations) {
        at_least(v, "/cpus", self.cpus, 0.001);
        at_least(v, "/mem", self.mem, 0.0);
        at_least(v, "/disk", self.disk, 0.0);
        if self.gpus < 0 {
            v.add("/gpus", format!("got {}, expected 0 or more", self.gpus));
        }
        if self.gpus > 0 && self.container.as_ref().is_some_and(|c| c.kind == "DOCKER") {
            v.add("/", "GPU resources only work with the Mesos containerizer");
        }
        if !(0..=MAX_INSTANCES).contains(&self.instances) {
            v.add(
                "/instances",
                format!(
                    "got {}, expected between 0 and {MAX_INSTANCES}",
                    self.instances
                ),
            );
        }
        if let Some(roles) = &self.accepted_resource_roles
            && roles.is_empty()
        {
            v.add("/acceptedResourceRoles", "must not be empty");
        }
    }

    fn validate_strategies(&self, v: &mut Violations) {
        // Upper bounds keep every delay a representable duration (a day at most,
        // growing at most 100× per failure).
        between(
            v,
            "/backoffSeconds",
            self.backoff_seconds,
            0.0,
            MAX_DELAY_SECONDS,
        );
        between(
            v,
            "/backoffFactor",
            self.backoff_factor,
            1.0,
            MAX_BACKOFF_FACTOR,
        );
        between(
            v,
            "/maxLaunchDelaySeconds",
            self.max_launch_delay_seconds,
            0.0,
            MAX_DELAY_SECONDS,
        );
        if let Some(grace) = self.task_kill_grace_period_seconds {
            seconds_in_range(v, "/taskKillGracePeriodSeconds", grace);
        }
        let strategy = &self.upgrade_strategy;
        for (path, value) in [
            (
                "/upgradeStrategy/minimumHealthCapacity",
                strategy.minimum_health_capacity,
            ),
            (
                "/upgradeStrategy/maximumOverCapacity",
                strategy.maximum_over_capacity,
            ),
        ] {
            if !(0.0..=1.0).contains(&value) {
                v.add(path, format!("got {value}, expected between 0.0 and 1.0"));
            }
        }
        if let UnreachableStrategy::Enabled {
            inactive_after_seconds,
            expunge_after_seconds,
        } = self.unreachable_strategy
        {
            at_least(
                v,
                "/unreachableStrategy/inactiveAfterSeconds",
                inactive_after_seconds,
                0.0,
            );
            at_least(
                v,
                "/unreachableStrategy/expungeAfterSeconds",
                expunge_after_seconds,
                0.0,
            );
            if inactive_after_seconds > expunge_after_seconds {
                v.add(
                    "/unreachableStrategy/inactiveAfterSeconds",
                    format!(
                        "got {inactive_after_seconds}, expected {expunge_after_seconds} or less"
                    ),
                );
            }
        }
    }

    fn validate_ports(&self, v: &mut Violations) {
        for (index, network) in self.networks.iter().enumerate() {
            let mode = network.get("mode").and_then(|m| m.as_str());
            if !matches!(mode, Some("host" | "container" | "container/bridge")) {
                v.add(
                    format!("/networks({index})/mode"),
                    "must be one of host, container, container/bridge",
                );
            }
        }
        let Some(definitions) = &self.port_definitions else {
            return;
        };
        for (index, definition) in definitions.iter().enumerate() {
            let path = format!("/portDefinitions({index})");
            port_in_range(v, &format!("{path}/port"), definition.port);
            protocol(v, &format!("{path}/protocol"), &definition.protocol);
        }
        if !unique(definitions.iter().filter_map(|d| d.name.as_deref())) {
            v.add("/portDefinitions", "Port names must be unique.");
        }
        if !unique(definitions.iter().map(|d| d.port).filter(|p| *p != 0)) {
            v.add("/portDefinitions", "Ports must be unique.");
        }
    }

    fn validate_container(&self, v: &mut Violations) {
        let Some(container) = &self.container else {
            return;
        };
        match container.kind.as_str() {
            "MESOS" | "DOCKER" => {}
            _ => v.add("/container/type", "must be MESOS or DOCKER"),
        }
        match &container.docker {
            None if container.kind == "DOCKER" => {
                v.add("/container/docker", "must be given for a DOCKER container")
            }
            Some(docker) if docker.image.trim().is_empty() => {
                v.add("/container/docker/image", "must not be empty")
            }
            _ => {}
        }
        for (index, volume) in container.volumes.iter().enumerate() {
            let path = format!("/container/volumes({index})");
            if volume.container_path.is_empty() {
                v.add(format!("{path}/containerPath"), "must not be empty");
            }
            if volume.host_path.as_deref().is_none_or(str::is_empty) {
                v.add(
                    format!("{path}/hostPath"),
                    "must not be empty (Agora mounts host volumes only)",
                );
            }
            if !matches!(volume.mode.as_str(), "RO" | "RW") {
                v.add(format!("{path}/mode"), "must be RO or RW");
            }
        }
        if let Some(mappings) = &container.port_mappings {
            validate_port_mappings(mappings, v);
        }
    }

    fn validate_health_check(&self, path: &str, check: &HealthCheck, v: &mut Violations) {
        if !HEALTH_PROTOCOLS.contains(&check.protocol.as_str()) {
            v.add(
                format!("{path}/protocol"),
                format!("must be one of {}", HEALTH_PROTOCOLS.join(", ")),
            );
            return;
        }
        if check.protocol.ends_with("HTTPS") {
            v.add(
                format!("{path}/protocol"),
                "Agora's agents check over plain HTTP: use HTTP or MESOS_HTTP",
            );
        }
        if check.protocol == "COMMAND" {
            if check
                .command
                .as_ref()
                .is_none_or(|c| c.value.trim().is_empty())
            {
                v.add(
                    format!("{path}/command"),
                    "must be given for a COMMAND health check",
                );
            }
        } else {
            let ports = self.port_count();
            let valid = match (check.port_index, check.port) {
                (Some(index), _) => usize::try_from(index).is_ok_and(|i| i < ports),
                (None, Some(_)) => true,
                (None, None) => false,
            };
            if !valid {
                v.add(
                    path,
                    "Health check port indices must address an element of the ports array or container port mappings.",
                );
            }
            if let Some(port) = check.port
                && !(1..=MAX_PORT).contains(&port)
            {
                v.add(
                    format!("{path}/port"),
                    format!("got {port}, expected between 1 and {MAX_PORT}"),
                );
            }
            if let Some(http_path) = &check.path
                && !http_path.starts_with('/')
            {
                v.add(format!("{path}/path"), "must start with /");
            }
        }
        for (field, value) in [
            ("gracePeriodSeconds", check.grace_period_seconds),
            ("intervalSeconds", check.interval_seconds),
            ("timeoutSeconds", check.timeout_seconds),
            ("delaySeconds", check.delay_seconds),
        ] {
            seconds_in_range(v, &format!("{path}/{field}"), value);
        }
        if check.max_consecutive_failures < 0 {
            v.add(
                format!("{path}/maxConsecutiveFailures"),
                format!("got {}, expected 0 or more", check.max_consecutive_failures),
            );
        }
    }

    fn validate_readiness_check(&self, path: &str, check: &ReadinessCheck, v: &mut Violations) {
        if check.protocol != "HTTP" {
            // The framework checks readiness itself, over plain HTTP only.
            v.add(
                format!("{path}/protocol"),
                "must be HTTP (HTTPS readiness checks are not supported)",
            );
        }
        let names = self.port_names();
        if !names.iter().flatten().any(|name| *name == check.port_name) {
            v.add(
                format!("{path}/portName"),
                format!(
                    "No port definition reference for portName {}",
                    check.port_name
                ),
            );
        }
        if check.timeout_seconds >= check.interval_seconds {
            v.add(
                format!("{path}/timeoutSeconds"),
                format!(
                    "got {}, expected less than {}",
                    check.timeout_seconds, check.interval_seconds
                ),
            );
        }
        seconds_in_range(v, &format!("{path}/timeoutSeconds"), check.timeout_seconds);
        seconds_in_range(
            v,
            &format!("{path}/intervalSeconds"),
            check.interval_seconds,
        );
        if let Some(bad) = check
            .http_status_codes_for_ready
            .iter()
            .find(|code| !(100..600).contains(*code))
        {
            v.add(
                format!("{path}/httpStatusCodesForReady"),
                format!("{bad} is not an HTTP status"),
            );
        }
        if !check.path.starts_with('/') {
            v.add(format!("{path}/path"), "must start with /");
        }
    }

    fn validate_env_and_labels(&self, v: &mut Violations) {
        if self.env.len() > MAX_ENV_VARS {
            v.add(
                "/env",
                format!(
                    "got {} variables, expected {MAX_ENV_VARS} or less",
                    self.env.len()
                ),
            );
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains(['=', '\0']) {
                v.add(
                    "/env",
                    "variable names must not be empty nor hold '=' or NUL",
                );
            } else if name.len() > MAX_ENV_NAME_BYTES {
                v.add(
                    "/env",
                    format!("variable names must be at most {MAX_ENV_NAME_BYTES} bytes"),
                );
            }
            if value.len() > MAX_ENV_VALUE_BYTES {
                v.add(
                    format!("/env/{name}"),
                    format!("must be at most {MAX_ENV_VALUE_BYTES} bytes"),
                );
            }
        }
        if self.labels.keys().any(String::is_empty) {
            v.add("/labels", "label keys must not be empty");
        }
        if self.fetch.len() > MAX_FETCH_URIS {
            v.add(
                "/fetch",
                format!(
                    "got {}, expected {MAX_FETCH_URIS} or less",
                    self.fetch.len()
                ),
            );
        }
        for (index, artifact) in self.fetch.iter().enumerate() {
            if artifact.uri.trim().is_empty() {
                v.add(format!("/fetch({index})/uri"), "must not be empty");
            }
        }
    }
}

fn validate_port_mappings(mappings: &[PortMapping], v: &mut Violations) {
    for (index, mapping) in mappings.iter().enumerate() {
        let path = format!("/container/portMappings({index})");
        port_in_range(v, &format!("{path}/containerPort"), mapping.container_port);
        if let Some(host_port) = mapping.host_port {
            port_in_range(v, &format!("{path}/hostPort"), host_port);
        }
        port_in_range(v, &format!("{path}/servicePort"), mapping.service_port);
        protocol(v, &format!("{path}/protocol"), &mapping.protocol);
    }
    if !unique(mappings.iter().filter_map(|m| m.name.as_deref())) {
        v.add("/container/portMappings", "Port names must be unique.");
    }
    if !unique(
        mappings
            .iter()
            .filter_map(|m| m.host_port)
            .filter(|p| *p != 0),
    ) {
        v.add("/container/portMappings", "Host ports must be unique.");
    }
}

/// Longest backoff delay, in seconds (a day).
const MAX_DELAY_SECONDS: f64 = 86_400.0;
const MAX_BACKOFF_FACTOR: f64 = 100.0;
/// Longest app id: its task ids (`<id, dotted>.instance-<uuid>._app.<n>`) must stay
/// within the protocol's 255 bytes for an id.
const MAX_APP_ID_LEN: usize = 190;

fn between(v: &mut Violations, path: &str, value: f64, minimum: f64, maximum: f64) {
    if value.is_nan() || value < minimum || value > maximum {
        v.add(
            path,
            format!("got {value}, expected between {minimum:?} and {maximum:?}"),
        );
    }
}

fn at_least(v: &mut Violations, path: &str, value: f64, minimum: f64) {
    // NaN cannot come from JSON, but a definition built in code could hold one.
    if value.is_nan() || value < minimum {
        v.add(path, format!("got {value}, expected {minimum:?} or more"));
    }
}

/// A number of seconds the agents (health checks, kill grace) and this framework's
/// timers (readiness checks) can hold: 0 to a year.
fn seconds_in_range(v: &mut Violations, path: &str, value: f64) {
    between(v, path, value, 0.0, MAX_TIMEOUT_SECONDS);
}

fn port_in_range(v: &mut Violations, path: &str, port: i64) {
    if !(0..=MAX_PORT).contains(&port) {
        v.add(
            path,
            format!("got {port}, expected between 0 and {MAX_PORT}"),
        );
    }
}

fn protocol(v: &mut Violations, path: &str, protocol: &str) {
    if !matches!(protocol, "tcp" | "udp" | "udp,tcp" | "tcp,udp") {
        v.add(path, "must be tcp, udp or udp,tcp");
    }
}

fn unique<T: Ord>(items: impl Iterator<Item = T>) -> bool {
    let mut seen = BTreeSet::new();
    items.into_iter().all(|item| seen.insert(item))
}
