//! Builders for the deployment tests.

use agora_sdk::proto as pb;

use crate::model::{AppDefinition, GroupDefinition, PathId, RootGroup, Timestamp};
use crate::state::{Goal, Instance};

pub fn app(id: &str, dependencies: &[&str]) -> AppDefinition {
    let mut app: AppDefinition =
        serde_json::from_value(serde_json::json!({"id": id, "cmd": "sleep 1000"})).unwrap();
    app.id = PathId::parse(id).unwrap();
    app.dependencies = dependencies.iter().map(|d| d.to_string()).collect();
    app.version = Some(Timestamp::from_millis(1_000));
    app
}

pub fn group(id: &str, dependencies: &[&str]) -> GroupDefinition {
    GroupDefinition {
        id: PathId::parse(id).unwrap(),
        dependencies: dependencies
            .iter()
            .map(|d| PathId::parse(d).unwrap())
            .collect(),
        version: Timestamp::from_millis(1_000),
    }
}

pub fn root(apps: Vec<AppDefinition>, groups: Vec<GroupDefinition>) -> RootGroup {
    RootGroup {
        apps: apps.into_iter().map(|a| (a.id.clone(), a)).collect(),
        groups: groups.into_iter().map(|g| (g.id.clone(), g)).collect(),
        version: Some(Timestamp::from_millis(1_000)),
    }
}

/// An instance of `app` at `version`, with goal Running, in `state` (None: not
/// launched), staged and started at `at` (ms) when launched.
pub fn instance(
    name: &str,
    app: &AppDefinition,
    version: Timestamp,
    state: Option<pb::TaskState>,
    at: i64,
) -> Instance {
    Instance {
        instance_id: format!("{}.instance-{name}", app.id.safe_name()),
        app_id: app.id.clone(),
        app_version: version,
        goal: Goal::Running,
        incarnation: u32::from(state.is_some()),
        agent_id: None,
        host: None,
        ports: Vec::new(),
        state: state.map(|s| s as i32),
        healthy: None,
        ready: true,
        staged_at: state.map(|_| Timestamp::from_millis(at)),
        started_at: match state {
            Some(pb::TaskState::TaskRunning) => Some(Timestamp::from_millis(at)),
            _ => None,
        },
        unreachable_since: None,
        message: String::new(),
    }
}
