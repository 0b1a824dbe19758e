//! Marathon's JSON for apps and tasks as the API shows them: the stored definition
//! plus what is computed from the instances and deployments (counts, tasks,
//! deployments, last failure, task statistics).
//!
//! Python's `marathon` client builds its objects with keyword arguments, so an
//! unknown key in an app, task or health-check result breaks it: only Marathon's
//! keys appear here.

use agora_sdk::proto as pb;
use serde_json::{Map, Value, json};

use crate::controller::Snapshot;
use crate::model::{AppDefinition, PathId, Timestamp};
use crate::state::Instance;

/// What to add to an app's JSON (Marathon's `embed` values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppEmbeds {
    pub tasks: bool,
    pub counts: bool,
    pub deployments: bool,
    pub readiness: bool,
    pub last_task_failure: bool,
    pub task_stats: bool,
}

impl AppEmbeds {
    /// `GET /v2/apps`: counts and deployments always, as Marathon does.
    pub fn list_default() -> Self {
        AppEmbeds {
            counts: true,
            deployments: true,
            ..AppEmbeds::default()
        }
    }

    /// `GET /v2/apps/{id}`: everything but the statistics.
    pub fn single_default() -> Self {
        AppEmbeds {
            tasks: true,
            counts: true,
            deployments: true,
            readiness: true,
            last_task_failure: true,
            task_stats: false,
        }
    }

    /// Adds the `embed` values, with or without their `apps.`, `app.` or
    /// `group.apps.` prefix (Marathon accepts all); unknown values are ignored.
    pub fn with(mut self, embeds: &[&str]) -> Self {
        for embed in embeds {
            let name = ["group.apps.", "apps.", "app."]
                .iter()
                .find_map(|prefix| embed.strip_prefix(prefix))
                .unwrap_or(embed);
            match name {
                "tasks" => {
                    self.tasks = true;
                    self.deployments = true;
                }
                "failures" => {
                    self.tasks = true;
                    self.last_task_failure = true;
                    self.deployments = true;
                }
                "counts" => self.counts = true,
                "deployments" => self.deployments = true,
                "readiness" => self.readiness = true,
                "lastTaskFailure" => self.last_task_failure = true,
                "taskStats" => self.task_stats = true,
                _ => {}
            }
        }
        self
    }
}

/// The app's JSON with the `embeds` computed from `snapshot`.
pub fn app_json(app: &AppDefinition, snapshot: &Snapshot, embeds: AppEmbeds) -> Value {
    let mut json = match serde_json::to_value(app) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let tasks: Vec<&Instance> = snapshot
        .instances
        .get(&app.id)
        .map(|instances| instances.iter().filter(|i| has_task(i)).collect())
        .unwrap_or_default();
    if embeds.counts {
        let counts = TaskCounts::of(tasks.iter().copied());
        json.insert("tasksStaged".into(), counts.staged.into());
        json.insert("tasksRunning".into(), counts.running.into());
        json.insert("tasksHealthy".into(), counts.healthy.into());
        json.insert("tasksUnhealthy".into(), counts.unhealthy.into());
    }
    if embeds.deployments {
        json.insert(
            "deployments".into(),
            deployments_of(&app.id, snapshot).into(),
        );
    }
    if embeds.readiness {
        let results: Vec<Value> = snapshot
            .deployments
            .iter()
            .flat_map(|d| &d.current_actions)
            .filter(|action| action.app == app.id)
            .flat_map(|action| action.readiness_check_results.iter().cloned())
            .collect();
        json.insert("readinessCheckResults".into(), results.into());
    }
    if embeds.tasks {
        let rendered: Vec<Value> = tasks.iter().map(|i| task_json(i, Some(app))).collect();
        json.insert("tasks".into(), rendered.into());
    }
    if embeds.last_task_failure
        && let Some(failure) = snapshot.last_task_failure.get(&app.id)
        && let Ok(failure) = serde_json::to_value(failure)
    {
        json.insert("lastTaskFailure".into(), failure);
    }
    if embeds.task_stats {
        json.insert(
            "taskStats".into(),
            task_stats(app, &tasks, Timestamp::now()),
        );
    }
    Value::Object(json)
}

/// `[{id}]` of the running deployments that touch `app`.
pub fn deployments_of(app: &PathId, snapshot: &Snapshot) -> Vec<Value> {
    snapshot
        .deployments
        .iter()
        .filter(|d| d.affected_apps.contains(app))
        .map(|d| json!({ "id": d.id }))
        .collect()
}

/// True when the instance has a task that has not ended: Marathon lists tasks,
/// and an instance waiting for its (re)launch has none.
pub fn has_task(instance: &Instance) -> bool {
    instance.incarnation > 0 && !instance.task_state().is_some_and(agora_sdk::is_terminal)
}

/// `TASK_RUNNING` and friends; a launched task without a status yet is staging.
pub fn state_name(instance: &Instance) -> &'static str {
    instance
        .task_state()
        .unwrap_or(pb::TaskState::TaskStaging)
        .as_str_name()
}

/// The app's service ports: its port definitions' ports, or its container's
/// port mappings' service ports.
fn service_ports(app: &AppDefinition) -> Vec<i64> {
    if let Some(definitions) = &app.port_definitions {
        return definitions.iter().map(|d| d.port).collect();
    }
    app.container
        .as_ref()
        .and_then(|c| c.port_mappings.as_ref())
        .map(|mappings| mappings.iter().map(|m| m.service_port).collect())
        .unwrap_or_default()
}

/// Marathon's task JSON for an instance's current task. `app` gives the service
/// ports and health checks (None when the app is gone).
pub fn task_json(instance: &Instance, app: Option<&AppDefinition>) -> Value {
    let task_id = instance.task_id();
    let health_check_results: Vec<Value> = match (app, instance.healthy) {
        (Some(app), Some(alive)) => app
            .health_checks
            .iter()
            .map(|_| {
                json!({
                    "alive": alive,
                    "consecutiveFailures": if alive { 0 } else { 1 },
                    "firstSuccess": null,
                    "lastFailure": null,
                    "lastSuccess": null,
                    "taskId": task_id,
                    "instanceId": instance.instance_id,
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    // The host is the only address the instance knows; it is the task's when
    // the agent registered with an IP.
    let ip_addresses: Vec<Value> = instance
        .host
        .as_deref()
        .and_then(|host| host.parse::<std::net::IpAddr>().ok())
        .map(|ip| {
            let protocol = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            vec![json!({ "ipAddress": ip.to_string(), "protocol": protocol })]
        })
        .unwrap_or_default();
    json!({
        "id": task_id,
        "appId": instance.app_id,
        "host": instance.host.clone().unwrap_or_default(),
        "ports": instance.ports,
        "servicePorts": app.map(service_ports).unwrap_or_default(),
        "slaveId": instance.agent_id,
        "stagedAt": instance.staged_at,
        "startedAt": instance.started_at,
        "version": instance.app_version,
        "state": state_name(instance),
        "healthCheckResults": health_check_results,
        "ipAddresses": ip_addresses,
        "localVolumes": [],
    })
}

/// `tasksStaged`, `tasksRunning`, `tasksHealthy`, `tasksUnhealthy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub staged: u64,
    pub running: u64,
    pub healthy: u64,
    pub unhealthy: u64,
}

impl TaskCounts {
    pub fn of<'a>(tasks: impl IntoIterator<Item = &'a Instance>) -> Self {
        let mut counts = TaskCounts::default();
        for task in tasks {
            match task.task_state() {
                None | Some(pb::TaskState::TaskStaging | pb::TaskState::TaskStarting) => {
                    counts.staged += 1
                }
                Some(pb::TaskState::TaskRunning) => counts.running += 1,
                Some(_) => {}
            }
            match task.healthy {
                Some(true) => counts.healthy += 1,
                Some(false) => counts.unhealthy += 1,
                None => {}
            }
        }
        counts
    }
}

/// Marathon's `taskStats`: counts and life times of all tasks and of those
/// started after the last scaling, on the latest config, on an outdated one.
/// Groups without tasks are left out, as Marathon does.
fn task_stats(app: &AppDefinition, tasks: &[&Instance], now: Timestamp) -> Value {
    let last_config_change = app
        .version_info
        .as_ref()
        .map(|v| v.last_config_change_at)
        .or(app.version);
    let last_scaling = app
        .version_info
        .as_ref()
        .map(|v| v.last_scaling_at)
        .or(app.version);
    let is_latest = |t: &&&Instance| last_config_change.is_none_or(|v| t.app_version >= v);
    let mut stats = Map::new();
    let groups: [(&str, Vec<&Instance>); 4] = [
        (
            "startedAfterLastScaling",
            tasks
                .iter()
                .filter(|t| {
                    last_scaling.is_none_or(|s| t.staged_at.is_some_and(|staged| staged >= s))
                })
                .copied()
                .collect(),
        ),
        (
            "withLatestConfig",
            tasks.iter().filter(is_latest).copied().collect(),
        ),
        (
            "withOutdatedConfig",
            tasks.iter().filter(|t| !is_latest(t)).copied().collect(),
        ),
        ("totalSummary", tasks.to_vec()),
    ];
    for (name, group) in groups {
        if group.is_empty() {
            continue;
        }
        let counts = TaskCounts::of(group.iter().copied());
        let mut lifetimes: Vec<f64> = group
            .iter()
            .filter_map(|t| t.started_at)
            .map(|started| (now.millis() - started.millis()).max(0) as f64 / 1000.0)
            .collect();
        let mut entry = json!({
            "counts": {
                "staged": counts.staged,
                "running": counts.running,
                "healthy": counts.healthy,
                "unhealthy": counts.unhealthy,
            }
        });
        if !lifetimes.is_empty() {
            lifetimes.sort_by(f64::total_cmp);
            let average = lifetimes.iter().sum::<f64>() / lifetimes.len() as f64;
            let middle = lifetimes.len() / 2;
            let median = if lifetimes.len().is_multiple_of(2) {
                (lifetimes[middle - 1] + lifetimes[middle]) / 2.0
            } else {
                lifetimes[middle]
            };
            entry["lifeTime"] = json!({ "averageSeconds": average, "medianSeconds": median });
        }
        stats.insert(name.into(), json!({ "stats": entry }));
    }
    Value::Object(stats)
}
