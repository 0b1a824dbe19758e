//! Size and count limits on everything a peer can send, and the checks that enforce
//! them. The numbers are written next to each field in `proto/agora/v1/*.proto`; a
//! message that breaks one is refused with a [`LimitError`] that names the field.

use agora_proto as pb;

/// Largest gRPC message any Agora server decodes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_ID_LEN: usize = 255;
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_ROLE_LEN: usize = 255;
pub const MAX_RESOURCES: usize = 1024;
pub const MAX_RANGES: usize = 1024;
pub const MAX_SET_ITEMS: usize = 1024;
pub const MAX_LABELS: usize = 256;
pub const MAX_ATTRIBUTES: usize = 256;
pub const MAX_ROLES: usize = 64;
pub const MAX_ENV_VARS: usize = 1024;
pub const MAX_ARGUMENTS: usize = 1024;
pub const MAX_URIS: usize = 64;
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
pub const MAX_TASK_DATA_BYTES: usize = 1024 * 1024;
pub const MAX_STATUS_DATA_BYTES: usize = 64 * 1024;
pub const MAX_MESSAGE_DATA_BYTES: usize = 64 * 1024;
pub const MAX_STATUS_MESSAGE_BYTES: usize = 4 * 1024;
pub const MAX_OFFER_IDS: usize = 1024;
pub const MAX_OPERATIONS: usize = 1024;
pub const MAX_TASKS_PER_LAUNCH: usize = 1024;
pub const MAX_TASK_GROUP: usize = 64;
pub const MAX_RECONCILE_TASKS: usize = 100_000;
pub const MAX_ACKNOWLEDGEMENTS: usize = 1024;
pub const MAX_REREGISTER_TASKS: usize = 100_000;
pub const MAX_UUID_BYTES: usize = 16;
/// Frameworks a master keeps registered (connected or within their failover timeout).
pub const MAX_FRAMEWORKS: usize = 10_000;
/// Largest scalar resource accepted (1e12 MB is an exabyte of memory).
pub const MAX_SCALAR: f64 = 1e12;
/// Largest failover timeout: Mesos caps refuse_seconds at a year; we use the same cap.
pub const MAX_TIMEOUT_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// A message broke a limit or a validity rule. `field` is the proto path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct LimitError {
    pub field: String,
    pub reason: String,
}

impl LimitError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks a count of repeated items.
pub fn count(field: &str, len: usize, max: usize) -> Result<(), LimitError> {
    if len > max {
        return Err(LimitError::new(
            field,
            format!("{len} items exceed the limit of {max}"),
        ));
    }
    Ok(())
}

/// Checks a length in bytes.
pub fn bytes(field: &str, len: usize, max: usize) -> Result<(), LimitError> {
    if len > max {
        return Err(LimitError::new(
            field,
            format!("{len} bytes exceed the limit of {max}"),
        ));
    }
    Ok(())
}

/// Checks an id: present, not empty, bounded, printable, without path separators
/// (ids become directory names on agents).
pub fn id(field: &str, value: Option<&str>) -> Result<(), LimitError> {
    let Some(value) = value else {
        return Err(LimitError::new(field, "is required"));
    };
    if value.is_empty() {
        return Err(LimitError::new(field, "must not be empty"));
    }
    bytes(field, value.len(), MAX_ID_LEN)?;
    if value == "." || value == ".." || value.chars().any(|c| c == '/' || c.is_control()) {
        return Err(LimitError::new(
            field,
            format!("'{value}' may not contain '/' or control characters, nor be '.' or '..'"),
        ));
    }
    Ok(())
}

/// Checks a timeout in seconds: finite, not negative, at most a year.
pub fn seconds(field: &str, value: f64) -> Result<(), LimitError> {
    if !(0.0..=MAX_TIMEOUT_SECONDS).contains(&value) {
        return Err(LimitError::new(
            field,
            format!("{value} must be a number of seconds between 0 and {MAX_TIMEOUT_SECONDS}"),
        ));
    }
    Ok(())
}

fn labels(field: &str, labels: Option<&pb::Labels>) -> Result<(), LimitError> {
    if let Some(l) = labels {
        count(field, l.labels.len(), MAX_LABELS)?;
        for label in &l.labels {
            bytes(&format!("{field}.key"), label.key.len(), 255)?;
            bytes(&format!("{field}.value"), label.value.len(), 4096)?;
        }
    }
    Ok(())
}

pub fn framework_info(info: &pb::FrameworkInfo) -> Result<(), LimitError> {
    bytes("framework_info.name", info.name.len(), 255)?;
    bytes("framework_info.user", info.user.len(), 255)?;
    bytes("framework_info.hostname", info.hostname.len(), 255)?;
    bytes("framework_info.principal", info.principal.len(), 255)?;
    bytes("framework_info.webui_url", info.webui_url.len(), 1024)?;
    seconds("framework_info.failover_timeout", info.failover_timeout)?;
    count("framework_info.roles", info.roles.len(), MAX_ROLES)?;
    for role in &info.roles {
        role_name("framework_info.roles", role)?;
    }
    count("framework_info.capabilities", info.capabilities.len(), 32)?;
    labels("framework_info.labels", info.labels.as_ref())?;
    if let Some(fid) = &info.id {
        id("framework_info.id", Some(&fid.value))?;
    }
    Ok(())
}

/// Role names: `*`, or `/`-separated path components of `[A-Za-z0-9_.-]`, none `.`/`..`.
pub fn role_name(field: &str, role: &str) -> Result<(), LimitError> {
    if role == "*" {
        return Ok(());
    }
    bytes(field, role.len(), MAX_ROLE_LEN)?;
    let valid = !role.is_empty()
        && role.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        });
    if !valid {
        return Err(LimitError::new(
            field,
            format!("'{role}' is not a role: use '*' or names like 'eng/ml'"),
        ));
    }
    Ok(())
}

fn command(field: &str, cmd: &pb::CommandInfo) -> Result<(), LimitError> {
    bytes(
        &format!("{field}.value"),
        cmd.value.len(),
        MAX_COMMAND_BYTES,
    )?;
    count(
        &format!("{field}.arguments"),
        cmd.arguments.len(),
        MAX_ARGUMENTS,
    )?;
    for a in &cmd.arguments {
        bytes(&format!("{field}.arguments"), a.len(), MAX_COMMAND_BYTES)?;
    }
    count(&format!("{field}.uris"), cmd.uris.len(), MAX_URIS)?;
    if let Some(env) = &cmd.environment {
        count(
            &format!("{field}.environment"),
            env.variables.len(),
            MAX_ENV_VARS,
        )?;
        for v in &env.variables {
            bytes(&format!("{field}.environment.name"), v.name.len(), 255)?;
            bytes(
                &format!("{field}.environment.value"),
                v.value.len(),
                32 * 1024,
            )?;
        }
    }
    if !cmd.shell && cmd.value.is_empty() {
        return Err(LimitError::new(
            format!("{field}.value"),
            "a command without shell needs the program in `value`",
        ));
    }
    if cmd.shell && cmd.value.trim().is_empty() {
        return Err(LimitError::new(
            format!("{field}.value"),
            "the shell command is empty",
        ));
    }
    Ok(())
}

/// Checks a task as a framework sends it in LAUNCH (resources are checked by
/// `Resources::from_proto`).
pub fn task_info(task: &pb::TaskInfo) -> Result<(), LimitError> {
    id(
        "task_info.task_id",
        task.task_id.as_ref().map(|t| t.value.as_str()),
    )?;
    bytes("task_info.name", task.name.len(), 255)?;
    count("task_info.resources", task.resources.len(), MAX_RESOURCES)?;
    bytes("task_info.data", task.data.len(), MAX_TASK_DATA_BYTES)?;
    labels("task_info.labels", task.labels.as_ref())?;
    match (&task.command, &task.executor) {
        (Some(_), Some(_)) => {
            return Err(LimitError::new(
                "task_info",
                "set either `command` or `executor`, not both",
            ));
        }
        (None, None) => {
            return Err(LimitError::new(
                "task_info.command",
                "a task needs a command (or an executor)",
            ));
        }
        (Some(cmd), None) => command("task_info.command", cmd)?,
        (None, Some(exec)) => {
            id(
                "task_info.executor.executor_id",
                exec.executor_id.as_ref().map(|e| e.value.as_str()),
            )?;
            if let Some(cmd) = &exec.command {
                command("task_info.executor.command", cmd)?;
            }
        }
    }
    if let Some(container) = &task.container {
        count("task_info.container.volumes", container.volumes.len(), 64)?;
    }
    if let Some(kp) = &task.kill_policy
        && let Some(g) = kp.grace_period_seconds
    {
        seconds("task_info.kill_policy.grace_period_seconds", g)?;
    }
    if let Some(check) = &task.health_check {
        health_check("task_info.health_check", check)?;
    }
    Ok(())
}

/// Checks a health check's figures (0 means Mesos' default; negative, NaN or
/// infinite ones are refused) and that it names what its type needs.
pub fn health_check(field: &str, check: &pb::HealthCheck) -> Result<(), LimitError> {
    use pb::health_check::Type;
    for (name, value) in [
        ("delay_seconds", check.delay_seconds),
        ("interval_seconds", check.interval_seconds),
        ("timeout_seconds", check.timeout_seconds),
        ("grace_period_seconds", check.grace_period_seconds),
    ] {
        seconds(&format!("{field}.{name}"), value)?;
    }
    let port = |port: u32, name: &str| {
        if port == 0 || port > u32::from(u16::MAX) {
            return Err(LimitError::new(
                format!("{field}.{name}.port"),
                format!("{port} is not a TCP port"),
            ));
        }
        Ok(())
    };
    match Type::try_from(check.r#type) {
        Ok(Type::Command) => match &check.command {
            Some(cmd) => command(&format!("{field}.command"), cmd),
            None => Err(LimitError::new(
                format!("{field}.command"),
                "a COMMAND health check needs a command",
            )),
        },
        Ok(Type::Http) => match &check.http {
            Some(http) => {
                bytes(&format!("{field}.http.path"), http.path.len(), 4096)?;
                count(&format!("{field}.http.statuses"), http.statuses.len(), 100)?;
                port(http.port, "http")
            }
            None => Err(LimitError::new(
                format!("{field}.http"),
                "an HTTP health check needs `http`",
            )),
        },
        Ok(Type::Tcp) => match &check.tcp {
            Some(tcp) => port(tcp.port, "tcp"),
            None => Err(LimitError::new(
                format!("{field}.tcp"),
                "a TCP health check needs `tcp`",
            )),
        },
        Ok(Type::Unknown) | Err(_) => Err(LimitError::new(
            format!("{field}.type"),
            format!("{} is not COMMAND, HTTP or TCP", check.r#type),
        )),
    }
}

/// Checks a status an executor or agent reports.
pub fn task_status(status: &pb::TaskStatus) -> Result<(), LimitError> {
    id(
        "status.task_id",
        status.task_id.as_ref().map(|t| t.value.as_str()),
    )?;
    if pb::TaskState::try_from(status.state).is_err() {
        return Err(LimitError::new(
            "status.state",
            format!("{} is not a task state", status.state),
        ));
    }
    bytes(
        "status.message",
        status.message.len(),
        MAX_STATUS_MESSAGE_BYTES,
    )?;
    bytes("status.data", status.data.len(), MAX_STATUS_DATA_BYTES)?;
    bytes("status.uuid", status.uuid.len(), MAX_UUID_BYTES)?;
    labels("status.labels", status.labels.as_ref())?;
    Ok(())
}

pub fn agent_info(info: &pb::AgentInfo) -> Result<(), LimitError> {
    bytes("agent_info.hostname", info.hostname.len(), 255)?;
    bytes("agent_info.endpoint", info.endpoint.len(), 255)?;
    count("agent_info.resources", info.resources.len(), MAX_RESOURCES)?;
    count(
        "agent_info.attributes",
        info.attributes.len(),
        MAX_ATTRIBUTES,
    )?;
    for a in &info.attributes {
        bytes("agent_info.attributes.name", a.name.len(), 128)?;
        bytes("agent_info.attributes.text", a.text.len(), 1024)?;
    }
    if let Some(aid) = &info.id {
        id("agent_info.id", Some(&aid.value))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_safe_path_components() {
        assert!(id("x", Some("task-1.a_b")).is_ok());
        for bad in ["", "..", "a/b", "a\nb"] {
            assert!(id("x", Some(bad)).is_err(), "{bad:?}");
        }
        assert!(id("x", None).is_err());
        assert!(id("x", Some(&"a".repeat(256))).is_err());
    }

    #[test]
    fn roles() {
        for ok in ["*", "eng", "eng/ml", "a.b-c_d"] {
            assert!(role_name("r", ok).is_ok(), "{ok}");
        }
        for bad in ["", "eng/", "/eng", "eng/../x", "a b", "x*"] {
            assert!(role_name("r", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts() {
        assert!(seconds("t", 0.0).is_ok());
        assert!(seconds("t", f64::NAN).is_err());
        assert!(seconds("t", -1.0).is_err());
        assert!(seconds("t", 1e20).is_err());
    }
}

// ---------------------------------------------------------------- replicated registry records
//
// Issue 3: weights, quotas, reservations and maintenance travel through the raft log, so
// every replica refuses the same bad record with the same error. The counts bound what a
// snapshot can hold; they are far above what a cluster of this size needs.

/// Roles with a weight other than the default 1.0.
pub const MAX_WEIGHTED_ROLES: usize = 10_000;
/// Largest role weight; weights are ratios of shares, so a million to one is plenty.
pub const MAX_ROLE_WEIGHT: f64 = 1e6;
/// Roles with a quota.
pub const MAX_QUOTAS: usize = 10_000;
/// Dynamic reservations in the registry.
pub const MAX_RESERVATIONS: usize = 100_000;
/// Agents under maintenance.
pub const MAX_MAINTENANCE_RECORDS: usize = 100_000;
/// The modes a maintenance record may carry.
pub const MAINTENANCE_MODES: &[&str] = &["DRAINING", "DRAINED"];

/// Checks a role weight: finite, positive, at most [`MAX_ROLE_WEIGHT`].
pub fn role_weight(field: &str, weight: f64) -> Result<(), LimitError> {
    if !(weight.is_finite() && weight > 0.0 && weight <= MAX_ROLE_WEIGHT) {
        return Err(LimitError::new(
            field,
            format!("{weight} is not a weight: use a number above 0 and at most {MAX_ROLE_WEIGHT}"),
        ));
    }
    Ok(())
}

/// A role that resources can be set aside for: a valid role other than `*`.
fn specific_role(field: &str, role: &str) -> Result<(), LimitError> {
    role_name(field, role)?;
    if role == crate::resources::UNRESERVED_ROLE {
        return Err(LimitError::new(
            field,
            "'*' is every role; name a specific role",
        ));
    }
    Ok(())
}

fn resource_list(field: &str, resources: &[pb::Resource]) -> Result<(), LimitError> {
    count(field, resources.len(), MAX_RESOURCES)?;
    crate::resources::Resources::from_proto(resources)
        .map(|_| ())
        .map_err(|e| LimitError::new(field, e.to_string()))
}

pub fn quota_record(quota: &pb::QuotaRecord) -> Result<(), LimitError> {
    specific_role("quota.role", &quota.role)?;
    resource_list("quota.guarantee", &quota.guarantee)?;
    resource_list("quota.limit", &quota.limit)?;
    Ok(())
}

pub fn reservation_record(reservation: &pb::ReservationRecord) -> Result<(), LimitError> {
    id(
        "reservation.reservation_id",
        Some(&reservation.reservation_id),
    )?;
    id("reservation.agent_id", Some(&reservation.agent_id))?;
    specific_role("reservation.role", &reservation.role)?;
    bytes("reservation.principal", reservation.principal.len(), 255)?;
    if reservation.resources.is_empty() {
        return Err(LimitError::new(
            "reservation.resources",
            "a reservation needs resources",
        ));
    }
    resource_list("reservation.resources", &reservation.resources)?;
    labels("reservation.labels", reservation.labels.as_ref())?;
    Ok(())
}

/// Checks a maintenance record (its `since` is stamped by the registry, not checked).
pub fn maintenance_record(maintenance: &pb::MaintenanceRecord) -> Result<(), LimitError> {
    id("maintenance.agent_id", Some(&maintenance.agent_id))?;
    if !MAINTENANCE_MODES.contains(&maintenance.mode.as_str()) {
        return Err(LimitError::new(
            "maintenance.mode",
            format!(
                "'{}' is not a maintenance mode: use one of {MAINTENANCE_MODES:?}",
                maintenance.mode
            ),
        ));
    }
    if !(maintenance.deadline.is_finite() && maintenance.deadline >= 0.0) {
        return Err(LimitError::new(
            "maintenance.deadline",
            format!(
                "{} is not a time: use seconds since the epoch, or 0 for none",
                maintenance.deadline
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- the state store
//
// The numbers of proto/agora/v1/state_store.proto. A namespace is bounded so one
// framework cannot make every master's snapshot (and memory) unbounded.

/// Namespace names: 1..=128 bytes of [A-Za-z0-9._/-].
pub const MAX_STORE_NAMESPACE_LEN: usize = 128;
/// Keys: 1..=1024 bytes of UTF-8.
pub const MAX_STORE_KEY_LEN: usize = 1024;
pub const MAX_STORE_VALUE_BYTES: usize = 1024 * 1024;
/// Keys plus values of one namespace.
pub const MAX_STORE_NAMESPACE_BYTES: usize = 64 * 1024 * 1024;
pub const MAX_STORE_KEYS: usize = 100_000;
pub const MAX_STORE_LEASES: usize = 1000;
/// Entries in one page of a list (also the default page size).
pub const MAX_STORE_LIST: usize = 1000;
/// Lease names and holders: 1..=256 bytes.
pub const MAX_LEASE_NAME_LEN: usize = 256;
pub const MIN_LEASE_TTL_SECONDS: f64 = 1.0;
pub const MAX_LEASE_TTL_SECONDS: f64 = 3600.0;
/// Operations in one atomic batch write.
pub const MAX_STORE_BATCH_OPS: usize = 1000;
/// Keys plus values of one batch write: half of [`MAX_MESSAGE_BYTES`], so the
/// request and its raft entry, framing of every op included, stay under it.
pub const MAX_STORE_BATCH_BYTES: usize = 8 * 1024 * 1024;
// Generous framing per op: tags, lengths, an expected version.
const _: () = assert!(MAX_STORE_BATCH_BYTES + MAX_STORE_BATCH_OPS * 64 < MAX_MESSAGE_BYTES);

/// Checks a non-empty string of at most `max` bytes.
fn non_empty(field: &str, value: &str, max: usize) -> Result<(), LimitError> {
    if value.is_empty() {
        return Err(LimitError::new(field, "must not be empty"));
    }
    bytes(field, value.len(), max)
}

pub fn store_namespace(field: &str, namespace: &str) -> Result<(), LimitError> {
    non_empty(field, namespace, MAX_STORE_NAMESPACE_LEN)?;
    if let Some(bad) = namespace
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
    {
        return Err(LimitError::new(
            field,
            format!("{bad:?} is not allowed in a namespace: use [A-Za-z0-9._/-]"),
        ));
    }
    Ok(())
}

pub fn store_key(field: &str, key: &str) -> Result<(), LimitError> {
    non_empty(field, key, MAX_STORE_KEY_LEN)
}

pub fn store_value(field: &str, value: &[u8]) -> Result<(), LimitError> {
    bytes(field, value.len(), MAX_STORE_VALUE_BYTES)
}

/// Checks a lease name or holder.
pub fn lease_name(field: &str, name: &str) -> Result<(), LimitError> {
    non_empty(field, name, MAX_LEASE_NAME_LEN)
}

pub fn lease_ttl(field: &str, ttl_seconds: f64) -> Result<(), LimitError> {
    if !(MIN_LEASE_TTL_SECONDS..=MAX_LEASE_TTL_SECONDS).contains(&ttl_seconds) {
        return Err(LimitError::new(
            field,
            format!(
                "{ttl_seconds} must be between {MIN_LEASE_TTL_SECONDS} and {MAX_LEASE_TTL_SECONDS} seconds"
            ),
        ));
    }
    Ok(())
}

/// Bytes of keys and values in one page of a state store list: a page stops early
/// (with `more` set) rather than build a response no gRPC peer would accept. A page
/// always holds at least one entry, and one entry fits well within
/// [`MAX_MESSAGE_BYTES`].
pub const MAX_STORE_LIST_BYTES: usize = 8 * 1024 * 1024;

#[cfg(test)]
mod replicated_limit_tests {
    use super::*;

    #[test]
    fn namespaces_keys_and_leases() {
        for ok in ["apps", "cron.v2", "team/a_b-c", &"n".repeat(128)] {
            assert!(store_namespace("ns", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "é", "a:b", &"n".repeat(129)] {
            assert!(store_namespace("ns", bad).is_err(), "{bad}");
        }
        assert!(store_key("k", "x").is_ok());
        assert!(store_key("k", &"k".repeat(1024)).is_ok());
        assert!(store_key("k", "").is_err());
        assert!(store_key("k", &"k".repeat(1025)).is_err());
        assert!(store_value("v", &vec![0; MAX_STORE_VALUE_BYTES]).is_ok());
        assert!(store_value("v", &vec![0; MAX_STORE_VALUE_BYTES + 1]).is_err());
        assert!(lease_name("l", &"l".repeat(256)).is_ok());
        assert!(lease_name("l", &"l".repeat(257)).is_err());
        assert!(lease_name("l", "").is_err());
        for ok in [1.0, 30.5, 3600.0] {
            assert!(lease_ttl("t", ok).is_ok(), "{ok}");
        }
        for bad in [0.0, 0.5, 3600.5, f64::NAN, f64::INFINITY] {
            assert!(lease_ttl("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn registry_records() {
        assert!(role_weight("w", 2.5).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e6] {
            assert!(role_weight("w", bad).is_err(), "{bad}");
        }
        let cpus = pb::Resource {
            name: "cpus".into(),
            value: Some(pb::resource::Value::Scalar(2.0)),
            ..Default::default()
        };
        let quota = pb::QuotaRecord {
            role: "eng".into(),
            guarantee: vec![cpus.clone()],
            limit: vec![],
        };
        assert!(quota_record(&quota).is_ok());
        assert!(
            quota_record(&pb::QuotaRecord {
                role: "*".into(),
                ..quota.clone()
            })
            .is_err()
        );
        let reservation = pb::ReservationRecord {
            reservation_id: "r1".into(),
            agent_id: "a1".into(),
            role: "eng".into(),
            resources: vec![cpus],
            ..Default::default()
        };
        assert!(reservation_record(&reservation).is_ok());
        assert!(
            reservation_record(&pb::ReservationRecord {
                resources: vec![],
                ..reservation.clone()
            })
            .is_err()
        );
        assert!(
            reservation_record(&pb::ReservationRecord {
                agent_id: "a/b".into(),
                ..reservation
            })
            .is_err()
        );
        let maintenance = pb::MaintenanceRecord {
            agent_id: "a1".into(),
            mode: "DRAINING".into(),
            deadline: 0.0,
            since: 0.0,
        };
        assert!(maintenance_record(&maintenance).is_ok());
        assert!(
            maintenance_record(&pb::MaintenanceRecord {
                mode: "OFF".into(),
                ..maintenance.clone()
            })
            .is_err()
        );
        assert!(
            maintenance_record(&pb::MaintenanceRecord {
                deadline: f64::NAN,
                ..maintenance
            })
            .is_err()
        );
    }
}
